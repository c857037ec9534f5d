"""Deterministic tokenizer test corpus: hand-written tricky lines plus seeded
generated ones, covering the scripts, symbols, whitespace and control
characters that BERT's normalizer and pre-tokenizer treat specially.

corpus()        -> list[str], at least 20,000 lines, same every run
pairs(lines)    -> list[(str, str)] drawn from the corpus
sweep_lines()   -> every Unicode scalar value, 256 per line, each as "x<c>y"
"""
import random

SEED = 20240517

WORDS = """the of and to in is was for that on as with by he it at from his an were are which
this be or has had not but first one their its new after who they have her she two been other
when there all during into school time may years more most only over city some world would
where later up such used many can state about national out known university united then made
unaffable tokenization transformers embeddings preprocessing hyperparameter bidirectional
antidisestablishmentarianism electroencephalography supercalifragilisticexpialidocious
Hello World Paris London Tokyo Beijing Berlin McDonald O'Brien iPhone eBay YouTube GPT BERT
don't won't can't it's I'm you're we've they'll she'd y'all rock'n'roll ma'am o'clock
re-enter co-operate state-of-the-art well-known e-mail U.S.A. e.g. i.e. etc. vs. Mr. Dr.""".split()

PUNCT = list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~") + [
    "...", "!!", "?!", "--", "—", "–", "…", "«", "»", "„", "“", "”", "‘", "’", "¿", "¡", "、", "。",
    "「", "」", "·", "§", "¶", "†", "‡", "‰", "′", "″", "‹", "›", "※", "⁂", "‽", "⸘", "⸮", "〽",
    "؟", "،", "।", "॥", "׳", "״", "־", "჻", "፧", "᠂", "꛳", "\U00011047", "\U0001E95E",
    "⸺", "⹂", "⹃", "⹏", "⹒", "\u2e5d", "\u061d", "\u166d", "\U000111c9", "¦", "©", "®", "°",
    "±", "×", "÷", "€", "£", "¥", "₹", "₿", "¢", "¤", "^^", "~~", "`", "''", "\"\""]

NUMBERS = ["0", "7", "42", "1,000", "3.14159", "-12", "+49 30 1234567", "2024-05-17", "12:30",
           "50%", "$19.99", "€5", "1e-9", "0x1F", "١٢٣", "४२", "๓๔", "①", "½", "¼", "Ⅻ",
           "²", "₃", "𝟘𝟙", "１２３"]

URLS = ["https://www.example.com/path/to/page?q=1&x=y#frag", "http://localhost:8080/api/v1",
        "ftp://files.example.org/pub/README.txt", "www.wikipedia.org/wiki/BERT_(language_model)",
        "user.name+tag@example.co.uk", "admin@localhost", "mailto:someone@example.com",
        "https://例子.测试/路径", "C:\\Program Files\\App\\app.exe", "/usr/local/bin/python3",
        "#hashtag", "@mention", "<html><body>Hi</body></html>", "{\"key\": [1, 2]}"]

LATIN = ["café", "naïve", "résumé", "Ångström", "Øre", "Łódź", "Ćwierć", "Şişli", "İstanbul",
         "ıi", "Straße", "STRASSE", "ẞ", "Æsir", "œuvre", "ﬁnance", "ﬃ", "Ǆemal", "ǅ", "ǈ", "Ǳ",
         "Ĳssel", "ŉ", "Ω", "Å", "K", "ℌ", "ⓐⓑ", "Ａｂｃ", "ｶﾀｶﾅ", "crème brûlée", "façade",
         "jalapeño", "Zürich", "São Paulo", "Việt Nam", "Nguyễn", "Ɐ", "ꞵ", "ǰ", "ẖ", "ﬆ",
         "e\u0301", "a\u0308\u0301", "o\u0323\u0302", "o\u0302\u0323", "u\u031b\u0301",
         "n\u0303", "A\u030a", "I\u0307", "i\u0307\u0301", "ǖ", "ǘ", "Ḱ", "ṩ", "ḉ"]

GREEK = ["Καλημέρα κόσμε", "ΟΔΥΣΣΕΥΣ", "ὈΔΥΣΣΕΎΣ", "ς σ Σ", "ΐ ΰ ά έ", "ᾯ ᾨ ᾳ ῼ", "Ϊ́",
         "λόγος", "ἀρχῇ", "µ μ", "ϐ ϑ ϕ ϖ ϰ ϱ ϵ", ";·"]
CYRILLIC = ["Привет, мир!", "Ёлка", "ЙОД", "й", "ё", "Ї Є Ґ", "Ѝ ѝ", "сыр-бор", "ОЧЕНЬ"]
ARABIC = ["مرحبا بالعالم", "مَرْحَبًا", "الـــعربية", "٠١٢٣", "كتاب؟", "ﻻ", "ﷺ", "ﷲ",
          "\u0890\u0891", "\u08e2", "\u0600\u0601", "\u061c", "پارسی", "اُردو"]
HEBREW = ["שָׁלוֹם עוֹלָם", "עִבְרִית", "ת״א", "בְּרֵאשִׁית", "ﬠ", "יִשְׂרָאֵל־"]
INDIC = ["नमस्ते दुनिया", "हिन्दी", "क़", "ऩ", "বাংলা", "ਪੰਜਾਬੀ", "ગુજરાતી", "ଓଡ଼ିଆ", "தமிழ்", "తెలుగు",
         "ಕನ್ನಡ", "മലയാളം", "සිංහල", "\u0d81", "\u0c3c", "ঀ", "\u09fe", "\u0afa"]
THAI = ["สวัสดีชาวโลก", "ภาษาไทย", "ก่อน", "ฯลฯ", "๏", "ລາວ", "ພາສາລາວ", "\u0ece", "ខ្មែរ", "မြန်မာ"]
CJK = ["中文字符测试", "日本語のテキスト", "漢字かなカナ", "㐀㐁㐂", "𠀀𠀁𠮷", "𪜀𪜁", "𫝀𫝁", "𫠠𫠡",
       "\U0002b820\U0002b8ff\U0002b91f", "\U0002b920", "𬺰𬺱", "\U00030000\U00031350", "豈更車",
       "丽丸乁", "⼀⼁", "〇〆々", "ㄅㄆ", "ｱｲｳ", "｡｢｣､", "（全角）", "ＡＢＣ！？", "中a文b字",
       "\u3000全角空白\u3000", "㍻", "㈱", "〜", "ー", "\u9fff\u9ffc", "\u4dbf\u4db5"]
HANGUL = ["안녕하세요 세계", "한국어", "각", "ㄱㅏㄱ", "뷁", "ힰ", "ꥠ"]
EMOJI = ["😀", "😂", "❤️", "❤", "👍", "👍🏽", "👍🏿", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🏴‍☠️", "🇺🇸", "🇯🇵🇰🇷",
         "1️⃣", "#️⃣", "🏴󠁧󠁢󠁳󠁣󠁴󠁿", "🥲", "🫠", "🫶", "🪿", "🫎", "🩷", "🫨", "🧑‍💻", "🧑🏻‍❤️‍💋‍🧑🏼",
         "☺", "✔", "©️", "🀄", "🂡", "🉐", "🆗", "\U0001fae8", "\U0001fa89", "\U0001fadc", "\U0001f6dc",
         "\U0001fabe", "\U0001fac6", "\U0001fa7c"]
CONTROLS = ["\x00", "\x01", "\x07", "\x08", "\x1b[31m", "\x7f", "\x80", "\x85", "\x9f", "\u200e",
            "\u200f", "\u202a", "\u202e", "\u2066", "\u2069", "\ufeff", "\u00ad", "\ufffd", "\ue000",
            "\uf8ff", "\U000f0000", "\U0010fffd", "\ufdd0", "\uffff", "\ufffe", "\u0378", "\U000e0001",
            "\U000e0041", "\U000e007f", "\U000e0100", "\u180e", "\u2062", "\u206f", "\U0001d173",
            "\U000110bd", "\U000110cd", "\U00013430", "\U0001bca0", "\u0605", "\u06dd", "\u070f",
            "\u17b4", "\ufff9", "\U0001f000", "\U0010ffff"]
ZERO_WIDTH = ["\u200d", "\u200c", "\u200b", "\u2060", "\ufeff", "\u034f", "\u180b", "\ufe0f",
              "\ufe0e", "\U000e0101"]
SPACES = [" ", "  ", "\t", "\n", "\r", "\r\n", "\x0b", "\x0c", "\u00a0", "\u1680", "\u2000",
          "\u2003", "\u2007", "\u2009", "\u200a", "\u2028", "\u2029", "\u202f", "\u205f",
          "\u3000", "\x1c", "\x1d", "\x1e", "\x1f", "\x85"]
SPECIALS = ["[MASK]", "[SEP]", "[CLS]", "[PAD]", "[UNK]", "[mask]", "[Mask]", "[MASK", "MASK]",
            "[ MASK ]", "[[MASK]]", "[MASK][MASK]", "a[MASK]b", "x[SEP]y", "［MASK］", "[MASK]'s",
            "[MAS K]", "[SEP][CLS]", "[", "]", "[]", "##", "##ing", "[MASK]\u0301"]
MARKS = [chr(c) for c in list(range(0x300, 0x370)) + [0x483, 0x591, 0x5bf, 0x610, 0x64b, 0x670,
         0x901, 0x93c, 0x94d, 0xe31, 0xe48, 0x1ab0, 0x1dc0, 0x1df6, 0x1df9, 0x1dfa, 0x1dfb, 0x20d0,
         0x20e3, 0x302a, 0x302e, 0x3099, 0xfe20, 0x101fd, 0x1d165, 0x1d16d, 0x1d17b, 0x1e944,
         0x1e94a, 0x11938, 0x1734, 0x1885, 0xa9bd, 0x07fd, 0x0898, 0x1715, 0x16ff0]]
# Characters whose treatment differs between Unicode 8/9 (the fast tokenizer's
# tables) and utf8proc's Unicode 15: newer Cf/P*/Mn, category changes, newer
# decompositions and combining classes.
SKEW = ["\u061d", "\u07fd", "\u0890", "\u08d3", "\u08e2", "\u09fd", "\u0a76", "\u0c77", "\u0c84",
        "\u1b7d", "\u2e43", "\u2e4f", "\u2e52", "\u2e5d", "\ua8c5", "\U00010d24", "\U00010f55",
        "\U000110cd", "\U00011241", "\U0001145a", "\U00011660", "\U00011938", "\U0001193e",
        "\U000119e2", "\U00011a3f", "\U00011c41", "\U00011ef7", "\U00011fff", "\U00012ff1",
        "\U00013430", "\U00013439", "\U00016fe2", "\U0001e000", "\U0001e95e",
        "\U000111c9", "\u166d", "\u1734", "\u1885", "\u1886", "\ua9bd", "\u1c89", "\ua7cb",
        "\ua7dc", "\U00010d50", "\U00016ea0", "\u0130", "\u1e9e", "\u2126", "\u212a", "\u212b",
        "\u0344", "\u0f73", "\u1fef", "\u037e", "\u0387", "\U0001d15e", "\U0001d1bb"]

HAND = [
    "", " ", "   ", "\n", "\t\t", "\u3000", "\u00a0\u00a0", "\x00", "\x00\x00 \x00", "\ufffd",
    "Hello, World!", "hello world", "HELLO WORLD", "Hello   World", " leading and trailing ",
    "The quick brown fox jumps over the lazy dog.", "I can't believe it's not butter!",
    "a[MASK]b", "[MASK]", "[mask]", "[MASK][MASK]x", "Paris is the [MASK] of France.",
    "The man went to the [MASK] . He bought a gallon [MASK] milk .", "[CLS] a [SEP] b [SEP]",
    "[PAD][PAD][PAD]", "[UNK]nown", "x[SEP]y", "[[MASK]]", "[MASK", "[ MASK ]", "［MASK］",
    "İstanbul", "İ", "i̇", "Iİıi", "ǅungla", "ẞ STRASSE straße", "ΟΔΥΣΣΕΥΣ", "ﬁ ﬂ ﬃ ﬄ ﬅ ﬆ",
    "Ω Ω Å Å K K", "e\u0301 é", "a\u0308\u0301", "\u0301\u0301\u0301", "x\u0301", "\u0301x",
    "o\u0302\u0323 o\u0323\u0302", "x\u302e\U0001d165", "x\U0001e944\U0001e94a", "x\u1df6\u1df9",
    "x\u0301\u1dfa", "x\u1734y", "a\u1885b", "a\ua9bdb", "a\U000111c9b", "a\u166db", "a\u061db",
    "a\u2e43b", "a\u0890b", "a\U00011938b", "\U00011935\U00011930", "a\u0d81b", "Ᲊ ᲊ",
    "a\u1fefb", "a\u037eb", "한국어 안녕", "뷁뷁뷁", "中文", "中a文", "a中b", "𠮷野家", "\U0002b820x",
    "豈 更", "丽", "⼀", "日本語", "ｶﾀｶﾅ", "\u200b\u200c\u200d\ufeff", "a\u200bb", "a\u200db",
    "👨‍👩‍👧‍👦", "👍🏽", "🇺🇸", "🏴󠁧󠁢󠁳󠁣󠁴󠁿", "🫠🫶🪿", "❤️", "a" * 100, "a" * 101, "b" * 200,
    "é" * 100, "é" * 101, "e\u0301" * 60, "e\u0301" * 50 + "e", "中" * 150, "ab" * 60 + " x",
    "x" + "\u0301" * 100, "İ" * 60, "İ" * 100, "ß" * 101, "ﬃ" * 40, "!" * 150, "a-" * 80,
    "x\u200by" * 40, "\U0001f600" * 120, "\u00a0".join(["word"] * 20), "url: https://x.y/z?a=b",
    "e-mail: first.last@example.com", "tab\tseparated\tvalues", "line1\nline2\r\nline3\rline4",
    "vertical\x0btab\x0cform", "\x1b[31mred\x1b[0m", "null\x00byte", "del\x7fchar",
    "nel\x85line", "soft\u00adhyphen", "rtl\u202eoverride", "bom\ufeffinside", "pua\ue000char",
    "noncharacter\ufdd0", "unassigned\u0378", "tag\U000e0041char", "\U000f0000\U0010fffd",
    "don't won't isn't", "they're we've I'm it's", "quote ' spaced ' quote", "... ?! ,,, !!!",
    "3.14 1,000,000 -42 +7 50% $9.99 €5", "(parenthesized) [bracketed] {braced} <angled>",
    "¿Qué? ¡Olé!", "«guillemets»", "„German“", "日本語、中国語。", "١٢٣ ٤٥٦", "hello\u3000world",
    "hello\u2028world\u2029end", "a\u1680b\u2000c\u200ad\u202fe\u205ff", "a\u180eb", "a\x1cb\x1fc",
    "the unaffable tokenization of embeddings", "##ing ##s", "##", "# ## ###", "[SEP]",
    "\ud7a3\ud7b0\ud7fb", "\u1100\u1161\u11a8", "\u3131\u314f", "ꥠꥡ", "\U0001e900\U0001e922",
    "Ǆ ǅ ǆ Ǉ ǈ ǉ", "ﬀ ﬁ", "ŉ ǰ ẖ", "ΐ ΰ", "ᾳ ᾼ ῳ", "Ⅻ ⅻ", "Ⓐ ⓐ", "𝐀𝐁𝐂 𝒜", "𐐀 𐐨", "𞤀 𞤢",
    "\U00016e40\U00016e60", "\U00010400\U00010428", "\U0001e900", "\u0587", "\ufb13",
]


def _codepoint(rng):
    """A random Unicode scalar value, weighted towards interesting planes."""
    r = rng.random()
    if r < 0.5:
        c = rng.randrange(0x80, 0x3000)
    elif r < 0.7:
        c = rng.randrange(0x3000, 0x10000)
    elif r < 0.9:
        c = rng.randrange(0x10000, 0x30000)
    else:
        c = rng.randrange(0x30000, 0x110000)
    if 0xD800 <= c <= 0xDFFF:
        c = 0xFFFD
    return chr(c)


def _word(rng):
    w = rng.choice(WORDS)
    r = rng.random()
    if r < 0.1:
        w = w.upper()
    elif r < 0.2:
        w = w.capitalize()
    return w


def _zalgo(rng):
    return rng.choice("aeiouxyzAEIOU") + "".join(rng.choice(MARKS)
                                                 for _ in range(rng.randrange(1, 6)))


def _fragment(rng):
    kind = rng.random()
    pools = [(0.30, None), (0.36, PUNCT), (0.40, NUMBERS), (0.43, URLS), (0.50, LATIN),
             (0.53, GREEK), (0.56, CYRILLIC), (0.59, ARABIC), (0.61, HEBREW), (0.64, INDIC),
             (0.66, THAI), (0.71, CJK), (0.73, HANGUL), (0.78, EMOJI), (0.81, CONTROLS),
             (0.83, ZERO_WIDTH), (0.86, SPECIALS), (0.90, SKEW), (0.94, "zalgo"), (0.97, "cp"),
             (1.01, "long")]
    for limit, pool in pools:
        if kind < limit:
            break
    if pool is None:
        return _word(rng)
    if pool == "zalgo":
        return _zalgo(rng)
    if pool == "cp":
        return "".join(_codepoint(rng) for _ in range(rng.randrange(1, 5)))
    if pool == "long":
        n = rng.choice([99, 100, 101, 102, 150])
        return "".join(rng.choice("abcdeéiİ中") for _ in range(n))
    return rng.choice(pool)


def _separator(rng):
    r = rng.random()
    if r < 0.75:
        return " "
    if r < 0.85:
        return ""
    return rng.choice(SPACES + ZERO_WIDTH[:3])


def corpus(n_generated=20000):
    rng = random.Random(SEED)
    lines = list(HAND)
    for pool in (LATIN, GREEK, CYRILLIC, ARABIC, HEBREW, INDIC, THAI, CJK, HANGUL, EMOJI,
                 CONTROLS, ZERO_WIDTH, SPECIALS, SKEW, PUNCT, NUMBERS, URLS):
        lines.extend(pool)
        lines.append(" ".join(pool))
    for _ in range(n_generated):
        k = rng.randrange(1, 25)
        parts = []
        for _ in range(k):
            parts.append(_fragment(rng))
            parts.append(_separator(rng))
        lines.append("".join(parts))
    return lines


def pairs(lines, n=4000, seed=SEED + 1):
    rng = random.Random(seed)
    return [(rng.choice(lines), rng.choice(lines)) for _ in range(n)]


def sweep_lines(per_line=256):
    """Every scalar value once, as x<c>y, so each one's own class shows:
    dropped, whitespace, punctuation, mark, ideograph or letter."""
    cps = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    return [" ".join("x" + chr(c) + "y" for c in cps[i:i + per_line])
            for i in range(0, len(cps), per_line)]
