"""core/tokenizer against transformers' BertTokenizerFast (tokenizers' Rust code).

The whole corpus of tests/tokenizer_corpus.py goes through one `bert-cli tokenize`
process per setting and through the fast tokenizer; ids, token type ids and offsets
(the fast tokenizer's character offsets converted to byte offsets) must agree on every
line. A sweep of every Unicode scalar value checks each character's class (dropped,
space, punctuation, mark, ideograph, letter) the same way.
"""
import json
import os
import random
import subprocess
import time
from pathlib import Path

import pytest

import tokenizer_corpus

REPO = Path(__file__).resolve().parent.parent
VOCAB_DIR = REPO.parent / "shared" / "vocab" / "bert-base-uncased"
VOCAB = VOCAB_DIR / "vocab.txt"
SANITIZED = os.environ.get("BERT_SANITIZED") == "1"


@pytest.fixture(scope="session")
def cli(build_dir):
    path = build_dir / "bert-cli"
    assert path.is_file(), f"{path} missing: run make first"
    return path


@pytest.fixture(scope="session")
def lines():
    return tokenizer_corpus.corpus()


def hf(**kw):
    import transformers

    transformers.logging.set_verbosity_error()
    return transformers.BertTokenizerFast(vocab=str(VOCAB), **kw)


def run_cli(cli, args, requests, raw=False, timeout=600):
    """Feeds requests (dicts, or bytes lines with raw=True) to one bert-cli
    tokenize process; returns (parsed output lines, seconds)."""
    if raw:
        data = b"".join(r + b"\n" for r in requests)
    else:
        data = "".join(json.dumps(r) + "\n" for r in requests).encode()
    t0 = time.monotonic()
    proc = subprocess.run([str(cli), "tokenize", *args], input=data, capture_output=True,
                          timeout=timeout)
    secs = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    out = [json.loads(x) for x in proc.stdout.split(b"\n")[:-1]]
    assert len(out) == len(requests)
    return out, secs


def byte_positions(text):
    pos = [0]
    for ch in text:
        pos.append(pos[-1] + len(ch.encode("utf-8")))
    return pos


def expected(ids, types, offsets, seq_ids, a, b):
    """The fast tokenizer's answer with character offsets turned into byte offsets."""
    pa, pb = byte_positions(a), byte_positions(b) if b is not None else None
    offs = []
    for (s, e), sid in zip(offsets, seq_ids):
        if sid is None:
            offs.append([0, 0])
        else:
            p = pa if sid == 0 else pb
            offs.append([p[s], p[e]])
    return {"ids": list(ids), "type_ids": list(types), "offsets": offs}


def hf_batch(tk, texts, pairs=None, **kw):
    enc = tk(texts, pairs, return_offsets_mapping=True, **kw)
    out = []
    for i, a in enumerate(texts):
        out.append(expected(enc["input_ids"][i], enc["token_type_ids"][i],
                            enc["offset_mapping"][i], enc.sequence_ids(i), a,
                            pairs[i] if pairs is not None else None))
    return out


def diff(got, want, texts):
    bad = []
    for i, (g, w) in enumerate(zip(got, want)):
        g = {k: g.get(k) for k in ("ids", "type_ids", "offsets")} if "error" not in g else g
        if g != w:
            bad.append(i)
    detail = "".join(f"\n  {texts[i]!r}\n    ours {got[i]}\n    hf   {want[i]}" for i in bad[:5])
    return bad, detail


SETTINGS = {
    # name: (bert-cli options, BertTokenizerFast kwargs)
    "uncased": ([], {}),
    "cased": (["--no-lower"], {"do_lower_case": False}),
    "uncased_keep_accents": (["--strip-accents", "0"], {"strip_accents": False}),
    "cased_strip_accents": (["--no-lower", "--strip-accents", "1"],
                            {"do_lower_case": False, "strip_accents": True}),
    "uncased_no_chinese": (["--no-chinese"], {"tokenize_chinese_chars": False}),
}


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_corpus_parity(cli, lines, setting):
    args, kw = SETTINGS[setting]
    got, secs = run_cli(cli, ["--vocab", str(VOCAB), *args], [{"text": t} for t in lines])
    want = hf_batch(hf(**kw), lines)
    bad, detail = diff(got, want, lines)
    n_tokens = sum(len(g["ids"]) for g in got)
    msg = (f"[{setting}] corpus {len(lines)} lines, {n_tokens} tokens, {len(bad)} mismatches; "
           f"bert-cli {secs:.2f}s")
    print(msg)
    assert not bad, msg + detail
    assert len(lines) >= 20000


def test_codepoint_sweep(cli):
    """Every scalar value between two letters, lowercased and cased."""
    texts = tokenizer_corpus.sweep_lines()
    for args, kw in (SETTINGS["uncased"], SETTINGS["cased"]):
        got, _ = run_cli(cli, ["--vocab", str(VOCAB), *args], [{"text": t} for t in texts])
        want = hf_batch(hf(**kw), texts)
        bad, detail = diff(got, want, texts)
        print(f"[sweep {args}] {len(texts)} lines of 256 code points, {len(bad)} mismatches")
        assert not bad, f"{len(bad)} of {len(texts)} sweep lines differ" + detail


@pytest.mark.parametrize("setting", ["uncased", "cased", "uncased_keep_accents",
                                     "cased_strip_accents"])
def test_normalizer_parity(cli, lines, setting):
    """The normalized text itself, string for string, over every code point
    and the corpus: catches differences WordPiece would hide behind [UNK]
    (a lowercase mapping or a decomposition of a character not in the vocab)."""
    args, kw = SETTINGS[setting]
    texts = tokenizer_corpus.sweep_lines() + lines
    got, _ = run_cli(cli, ["--vocab", str(VOCAB), "--normalize", *args],
                     [{"text": t} for t in texts])
    norm = hf(**kw).backend_tokenizer.normalizer
    bad = [i for i, (g, t) in enumerate(zip(got, texts)) if g.get("normalized") !=
           norm.normalize_str(t)]
    detail = "".join(f"\n  {texts[i][:60]!r}\n    ours {got[i]!r:.300}\n    hf   "
                     f"{norm.normalize_str(texts[i])!r:.300}" for i in bad[:3])
    print(f"[normalizer {setting}] {len(texts)} texts, {len(bad)} mismatches")
    assert not bad, f"{len(bad)} of {len(texts)} normalize differently" + detail


@pytest.mark.parametrize("setting", ["uncased", "cased"])
def test_pair_parity(cli, lines, setting):
    args, kw = SETTINGS[setting]
    pairs = tokenizer_corpus.pairs(lines)
    got, _ = run_cli(cli, ["--vocab", str(VOCAB), *args],
                     [{"text": a, "text_pair": b} for a, b in pairs])
    a, b = [p[0] for p in pairs], [p[1] for p in pairs]
    want = hf_batch(hf(**kw), a, b)
    bad, detail = diff(got, want, pairs)
    print(f"[pairs {setting}] {len(pairs)} pairs, {len(bad)} mismatches")
    assert not bad, f"{len(bad)} of {len(pairs)} pairs differ" + detail


def test_model_dir_parity(cli, lines):
    """--model reads tokenizer_config.json the way AutoTokenizer does."""
    import transformers

    sample = lines[::10]
    got, _ = run_cli(cli, ["--model", str(VOCAB_DIR)], [{"text": t} for t in sample])
    tk = transformers.AutoTokenizer.from_pretrained(str(VOCAB_DIR))
    bad, detail = diff(got, hf_batch(tk, sample), sample)
    assert not bad, f"{len(bad)} of {len(sample)} differ" + detail


TRUNCATIONS = [(m, s, side) for m in (5, 12, 30)
               for s in ("longest_first", "only_first", "only_second")
               for side in ("right", "left")]


@pytest.mark.parametrize("max_len,strategy,side", TRUNCATIONS)
def test_truncation_parity(cli, lines, max_len, strategy, side):
    rng = random.Random(max_len)
    pairs = [(rng.choice(lines), rng.choice(lines)) for _ in range(300)]
    singles = [rng.choice(lines) for _ in range(100)]
    reqs = [{"text": a, "text_pair": b} for a, b in pairs] + [{"text": t} for t in singles]
    got, _ = run_cli(cli, ["--vocab", str(VOCAB), "--max-len", str(max_len), "--truncate",
                           strategy, "--side", side], reqs)
    tk = hf()
    tk.truncation_side = side
    want = []
    for r in reqs:
        # One at a time: the fast tokenizer fails a whole batch when one item
        # cannot be truncated (only_first/only_second running out of tokens).
        try:
            enc = tk(r["text"], r.get("text_pair"), return_offsets_mapping=True,
                     truncation=strategy, max_length=max_len)
            want.append(expected(enc["input_ids"], enc["token_type_ids"], enc["offset_mapping"],
                                 enc.sequence_ids(), r["text"], r.get("text_pair")))
        except Exception as e:  # the fast tokenizer's truncation error
            want.append({"error": str(e)})
    bad = []
    n_err = 0
    for i, (g, w) in enumerate(zip(got, want)):
        if "error" in w:
            n_err += 1
            if "error" not in g:
                bad.append(i)
        elif "error" in g or {k: g[k] for k in w} != w:
            bad.append(i)
    detail = "".join(f"\n  {reqs[i]!r}\n    ours {got[i]}\n    hf   {want[i]}" for i in bad[:3])
    print(f"[truncate {strategy} {side} max_len={max_len}] {len(reqs)} inputs "
          f"({n_err} refused by both), {len(bad)} mismatches")
    assert not bad, f"{len(bad)} of {len(reqs)} differ" + detail
    # Without truncation the same inputs are refused when too long.
    got_none, _ = run_cli(cli, ["--vocab", str(VOCAB), "--max-len", str(max_len)], reqs[:50])
    for g, r in zip(got_none, reqs[:50]):
        n = len(hf_batch(tk, [r["text"]], [r["text_pair"]] if "text_pair" in r else None)[0]["ids"])
        assert ("error" in g) == (n > max_len), (r, g)
        if "error" in g:
            assert "over the limit" in g["error"]


def test_truncation_limits(cli):
    """A max_len that cannot hold the special tokens, and only_second on a
    single text, are refused with a reason (the fast tokenizer silently
    returns the untruncated input for the first and fails the second)."""
    reqs = [{"text": "a b c d", "text_pair": "e f"}, {"text": "a b c d"}]
    got, _ = run_cli(cli, ["--vocab", str(VOCAB), "--max-len", "2", "--truncate",
                           "longest_first"], reqs)
    assert "no room for the 3 special tokens" in got[0]["error"], got
    assert got[1]["ids"] == [101, 102], got  # [CLS] [SEP] fit in 2
    got, _ = run_cli(cli, ["--vocab", str(VOCAB), "--max-len", "4", "--truncate",
                           "only_second"], reqs[1:])
    assert "no text pair" in got[0]["error"], got


def test_huge_inputs_linear(cli):
    """Pathological but valid inputs stay fast and exact: a long run of
    combining marks (canonical reordering), a 200k-character word, 100k
    ideographs, 50k written [MASK]s."""
    rng = random.Random(3)
    marks = [chr(c) for c in (0x301, 0x316, 0x334, 0x345, 0x302e, 0x1d165, 0x1df6, 0x1e94a, 0x5b0)]
    texts = ["x" + "".join(rng.choice(marks) for _ in range(200_000)) + " y",
             "ab" * 100_000, "中文" * 50_000, "a[MASK]" * 50_000,
             " ".join(rng.choice(tokenizer_corpus.WORDS) for _ in range(100_000))]
    for args, kw in (SETTINGS["uncased"], SETTINGS["cased"]):
        got, secs = run_cli(cli, ["--vocab", str(VOCAB), *args], [{"text": t} for t in texts])
        bad, detail = diff(got, hf_batch(hf(**kw), texts), [t[:80] for t in texts])
        assert not bad, detail[:2000]
        assert secs < (60 if SANITIZED else 5), f"{secs:.1f}s"


def test_decode_parity(cli, lines):
    tk = hf()
    rng = random.Random(7)
    n_vocab = tk.backend_tokenizer.get_vocab_size()
    seqs = [tk(t)["input_ids"] for t in rng.sample(lines, 1500)]
    # Arbitrary id soup too: "##" pieces first, specials, punctuation tokens.
    seqs += [[rng.randrange(n_vocab) for _ in range(rng.randrange(0, 30))] for _ in range(500)]
    seqs += [[rng.choice([0, 100, 101, 102, 103, 1005, 1012, 1029, 999, 1010, 1050, 1056, 1049,
                          2094, 2310, 2128, 1521, 2015, 1055, 1040, 26113])
              for _ in range(rng.randrange(1, 15))] for _ in range(500)]
    reqs, want = [], []
    for ids in seqs:
        for skip in (False, True):
            for cleanup in (False, True):
                reqs.append({"ids": ids, "skip_special": skip, "cleanup": cleanup})
                want.append(tk.decode(ids, skip_special_tokens=skip,
                                      clean_up_tokenization_spaces=cleanup))
    got, _ = run_cli(cli, ["--vocab", str(VOCAB), "--decode"], reqs)
    bad = [i for i, (g, w) in enumerate(zip(got, want)) if g.get("text") != w]
    detail = "".join(f"\n  {reqs[i]}\n    ours {got[i]}\n    hf   {want[i]!r}" for i in bad[:5])
    print(f"[decode] {len(reqs)} decodes, {len(bad)} mismatches")
    assert not bad, f"{len(bad)} of {len(reqs)} decodes differ" + detail


def test_speed(cli, lines):
    """One process, the whole corpus three times: the per-request cost must
    stay small. Timed without parsing the answers in Python."""
    data = "".join(json.dumps({"text": t}) + "\n" for t in lines * 3).encode()
    t0 = time.monotonic()
    proc = subprocess.run([str(cli), "tokenize", "--vocab", str(VOCAB)], input=data,
                          capture_output=True, timeout=600)
    secs = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    out = proc.stdout.split(b"\n")[:-1]
    assert len(out) == 3 * len(lines) and not any(line.startswith(b'{"error"') for line in out)
    n_bytes = sum(len(t.encode()) for t in lines) * 3
    print(f"[speed] {3 * len(lines)} lines, {n_bytes / 1e6:.1f} MB of text in {secs:.2f}s "
          f"({3 * len(lines) / secs:.0f} lines/s, JSON in and out included)")
    assert secs < (120 if SANITIZED else 15), f"{secs:.1f}s for {3 * len(lines)} lines"


# ---- loader and input errors ----

def cli_fails(cli, args, *needles, stdin=b""):
    proc = subprocess.run([str(cli), "tokenize", *args], input=stdin, capture_output=True,
                          timeout=60)
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == 1, (proc.returncode, err)
    for n in needles:
        assert n in err, (n, err)
    return err


def write_model_dir(d, vocab_bytes=None, config=None, tokenizer_json=None):
    d.mkdir(parents=True, exist_ok=True)
    if vocab_bytes is None:
        vocab_bytes = VOCAB.read_bytes()
    (d / "vocab.txt").write_bytes(vocab_bytes)
    if config is not None:
        (d / "tokenizer_config.json").write_text(
            config if isinstance(config, str) else json.dumps(config))
    if tokenizer_json is not None:
        (d / "tokenizer.json").write_text(json.dumps(tokenizer_json))
    return d


def test_missing_vocab(cli, tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    cli_fails(cli, ["--model", str(d)], str(d / "vocab.txt"), "No such file")
    cli_fails(cli, ["--vocab", str(tmp_path / "nope.txt")], "nope.txt")


def test_empty_vocab(cli, tmp_path):
    d = write_model_dir(tmp_path / "m", b"")
    cli_fails(cli, ["--model", str(d)], "vocab.txt", "empty")


def test_vocab_not_utf8(cli, tmp_path):
    data = VOCAB.read_bytes().split(b"\n")
    data[1234] = b"caf\xe9"
    d = write_model_dir(tmp_path / "m", b"\n".join(data))
    cli_fails(cli, ["--model", str(d)], "vocab.txt", "line 1235", "UTF-8")


def test_vocab_missing_special(cli, tmp_path):
    d = write_model_dir(tmp_path / "m", VOCAB.read_bytes().replace(b"[MASK]\n", b"[MASQ]\n"))
    cli_fails(cli, ["--model", str(d)], "vocab.txt", "[MASK]")


@pytest.mark.parametrize("key,value", [("do_lower_case", "yes"), ("do_lower_case", 1),
                                       ("strip_accents", "no"), ("tokenize_chinese_chars", None),
                                       ("tokenize_chinese_chars", [True])])
def test_config_wrong_type(cli, tmp_path, key, value):
    d = write_model_dir(tmp_path / "m", config={key: value})
    cli_fails(cli, ["--model", str(d)], "tokenizer_config.json", f'"{key}"')


def test_config_not_json(cli, tmp_path):
    d = write_model_dir(tmp_path / "m", config='{"do_lower_case": true,')
    cli_fails(cli, ["--model", str(d)], "tokenizer_config.json", "line 1")


def test_config_sources(cli, tmp_path, lines):
    """No tokenizer_config.json: defaults (uncased). A config without
    do_lower_case: tokenizer.json's normalizer decides. The config wins over
    tokenizer.json when both say."""
    sample = [t for t in lines[:3000] if any(c.isupper() for c in t)][:300]
    reqs = [{"text": t} for t in sample]
    uncased, cased = hf_batch(hf(), sample), hf_batch(hf(do_lower_case=False), sample)
    assert uncased != cased
    norm = {"normalizer": {"type": "BertNormalizer", "clean_text": True,
                           "handle_chinese_chars": True, "strip_accents": None,
                           "lowercase": False}}
    cases = [
        (write_model_dir(tmp_path / "none"), uncased),
        (write_model_dir(tmp_path / "tj", config={"model_max_length": 512},
                         tokenizer_json=norm), cased),
        (write_model_dir(tmp_path / "tj_only", tokenizer_json=norm), cased),
        (write_model_dir(tmp_path / "both", config={"do_lower_case": True},
                         tokenizer_json=norm), uncased),
        (write_model_dir(tmp_path / "cfg", config={"do_lower_case": False}), cased),
    ]
    for d, want in cases:
        got, _ = run_cli(cli, ["--model", str(d)], reqs)
        bad, detail = diff(got, want, sample)
        assert not bad, f"{d.name}: {len(bad)} differ" + detail
    bad_tj = dict(norm)
    bad_tj["normalizer"] = dict(norm["normalizer"], lowercase="false")
    d = write_model_dir(tmp_path / "badtj", tokenizer_json=bad_tj)
    cli_fails(cli, ["--model", str(d)], "tokenizer.json", '"lowercase"')


def test_vocab_duplicates_crlf_and_trailing_space(cli, tmp_path, lines):
    """tokenizers reads vocab lines with trailing whitespace trimmed, CRLF
    accepted, and a duplicate line taking the token over (the earlier id then
    decodes to nothing). Match all of it."""
    base = VOCAB.read_text(encoding="utf-8").split("\n")[:30522]
    base[2000] = "hello"          # duplicate of a later line (7592)
    base[2001] = "world \t"       # trailing whitespace; "world" itself is 2088
    base[2002] = "the\u3000"
    text = "\r\n".join(base) + "\r\n"
    path = tmp_path / "vocab.txt"
    path.write_bytes(text.encode())
    import transformers

    transformers.logging.set_verbosity_error()
    tk = transformers.BertTokenizerFast(vocab=str(path))
    sample = ["hello world, the world said hello", "Hello the World"] + lines[:500]
    got, _ = run_cli(cli, ["--vocab", str(path)], [{"text": t} for t in sample])
    bad, detail = diff(got, hf_batch(tk, sample), sample)
    assert not bad, f"{len(bad)} differ" + detail
    ids = [2000, 2001, 2002, 7592, 2088, 1996, 101, 102]
    for skip in (False, True):
        got, _ = run_cli(cli, ["--vocab", str(path), "--decode"],
                         [{"ids": ids, "skip_special": skip, "cleanup": True}])
        assert got[0]["text"] == tk.decode(ids, skip_special_tokens=skip), got


INVALID_UTF8 = [
    (b"abc\xffdef", 3),            # byte that never occurs in UTF-8
    (b"\x80", 0),                  # lone continuation byte
    (b"ok \xc3", 3),               # truncated two-byte sequence at the end
    (b"\xe2\x82 x", 0),            # truncated three-byte sequence
    (b"caf\xc3\xa9 \xc0\xaf", 6),  # overlong '/'
    (b"\xed\xa0\x80", 0),          # UTF-16 surrogate
    (b"\xf4\x90\x80\x80", 0),      # above U+10FFFF
    (b"\xe4\xb8\xad\xe6\x96\x87\xf0\x9f\x98", 6),  # truncated emoji after two ideographs
]


def test_invalid_utf8(cli):
    got, _ = run_cli(cli, ["--vocab", str(VOCAB), "--raw"],
                     [raw for raw, _ in INVALID_UTF8] + [b"caf\xc3\xa9 [MASK]"], raw=True)
    for (raw, offset), g in zip(INVALID_UTF8, got):
        assert "error" in g, (raw, g)
        assert g["error"] == f"text is not valid UTF-8 at byte {offset}", (raw, g)
    assert got[-1]["tokens"] == ["[CLS]", "cafe", "[MASK]", "[SEP]"]
    assert got[-1]["offsets"] == [[0, 0], [0, 5], [6, 12], [0, 0]]


def test_bad_request_lines(cli):
    got, _ = run_cli(cli, ["--vocab", str(VOCAB)], [{"text": 3}, {"txt": "a"},
                                                     {"text": "a", "text_pair": 5}])
    assert all("error" in g for g in got), got
