"""Writes the seed corpora fuzz/corpus/<harness>/ and dictionaries fuzz/dict/<harness>.dict
(run from anywhere; idempotent).

Valid seeds come from the real writers (the safetensors package, transformers' BertConfig,
the bert-base-uncased vocab in ../shared); broken variants are derived from them by hand so
that each refusal path in our parsers has an input that reaches it.
"""
import json
import struct
from pathlib import Path

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
VOCAB = HERE.parent.parent / "shared" / "vocab" / "bert-base-uncased" / "vocab.txt"


def put(harness, name, data):
    d = CORPUS / harness
    d.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    (d / name).write_bytes(data)


def st_raw(header, payload=b""):
    h = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack("<Q", len(h)) + h + payload


def safetensors_seeds():
    import numpy as np
    import torch
    from safetensors.numpy import save as np_save
    from safetensors.torch import save as torch_save

    rng = np.random.default_rng(0)
    put("safetensors", "valid_f32.st", np_save({"w": rng.standard_normal((3, 4)).astype(np.float32),
                                                "b": np.arange(4, dtype=np.float32)}))
    put("safetensors", "valid_f16.st", np_save({"x": rng.standard_normal((2, 3)).astype(np.float16)}))
    put("safetensors", "valid_bf16.st",
        torch_save({"y": torch.randn(5, generator=torch.Generator().manual_seed(1)).bfloat16()}))
    put("safetensors", "valid_mixed.st", np_save({
        "ids": np.arange(6, dtype=np.int64).reshape(2, 3),
        "mask": np.array([True, False, True]),
        "i8": np.array([-1, 2], dtype=np.int8),
        "u16": np.array([7], dtype=np.uint16),
        "f64": np.array([1.5], dtype=np.float64),
        "scalar": np.array(3.0, dtype=np.float32),
        "empty": np.zeros((0, 4), dtype=np.float32),
    }, metadata={"format": "pt"}))
    put("safetensors", "valid_f16_special.st",
        np_save({"s": np.array([0.0, -0.0, 6e-8, 1e-5, 65504, np.inf, -np.inf, np.nan],
                               dtype=np.float16)}))
    put("safetensors", "valid_empty.st", st_raw({}))
    put("safetensors", "valid_metadata_only.st", st_raw({"__metadata__": {"a": "b"}}))

    good = np_save({"w": np.ones((2, 2), dtype=np.float32)})
    put("safetensors", "broken_truncated.st", good[:-3])
    put("safetensors", "broken_short.st", good[:5])
    put("safetensors", "broken_hlen_huge.st", struct.pack("<Q", 1 << 40) + good[8:])
    put("safetensors", "broken_hlen_past_end.st", struct.pack("<Q", len(good)) + good[8:])
    put("safetensors", "broken_not_json.st", st_raw({}).replace(b"{}", b"{x"))
    put("safetensors", "broken_array_header.st",
        struct.pack("<Q", 2) + b"[]")
    four = b"\0" * 16
    put("safetensors", "broken_offsets_past_end.st",
        st_raw({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 32]}}, four))
    put("safetensors", "broken_shape_mismatch.st",
        st_raw({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 16]}}, four))
    put("safetensors", "broken_overlap.st",
        st_raw({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, four))
    put("safetensors", "broken_reversed_offsets.st",
        st_raw({"w": {"dtype": "F16", "shape": [2], "data_offsets": [8, 4]}}, four))
    put("safetensors", "broken_negative_dim.st",
        st_raw({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, four))
    put("safetensors", "broken_unknown_dtype.st",
        st_raw({"w": {"dtype": "F128", "shape": [1], "data_offsets": [0, 16]}}, four))
    put("safetensors", "broken_huge_shape.st",
        st_raw({"w": {"dtype": "F32", "shape": [1 << 40, 1 << 40], "data_offsets": [0, 16]}},
               four))
    put("safetensors", "broken_zero_dim_huge.st",
        st_raw({"w": {"dtype": "F64", "shape": [0, 1 << 62], "data_offsets": [0, 0]}}, four))
    put("safetensors", "broken_too_many_dims.st",
        st_raw({"w": {"dtype": "U8", "shape": [1] * 9, "data_offsets": [0, 1]}}, four))
    put("safetensors", "broken_entry_not_object.st", st_raw({"w": [1, 2]}, four))
    dup = (b'{"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},'
           b'"w":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}')
    put("safetensors", "broken_duplicate_key.st", struct.pack("<Q", len(dup)) + dup + four)


def model_config_seeds():
    from transformers import BertConfig

    put("model_config", "bert_default.json", BertConfig().to_json_string())
    put("model_config", "bert_tiny.json",
        BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                   intermediate_size=37, hidden_act="gelu_new", tie_word_embeddings=False)
        .to_json_string())
    put("model_config", "bert_large_relu.json",
        BertConfig(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                   intermediate_size=4096, hidden_act="relu", layer_norm_eps=1e-5)
        .to_json_string())
    base = json.loads(BertConfig(hidden_size=64, num_attention_heads=4).to_json_string())
    variants = {
        "bad_heads.json": {"num_attention_heads": 5},
        "bad_act.json": {"hidden_act": "tanh"},
        "act_not_string.json": {"hidden_act": 3},
        "bad_model_type.json": {"model_type": "roberta"},
        "relative_pos.json": {"position_embedding_type": "relative_key"},
        "eps_negative.json": {"layer_norm_eps": -1.0},
        "eps_huge.json": {"layer_norm_eps": 1e300},
        "vocab_zero.json": {"vocab_size": 0},
        "vocab_float.json": {"vocab_size": 30522.5},
        "hidden_huge.json": {"hidden_size": 1 << 40},
        "tie_string.json": {"tie_word_embeddings": "yes"},
        "pad_huge.json": {"pad_token_id": 1 << 62},
        "quick_gelu.json": {"hidden_act": "quick_gelu", "tie_word_embeddings": None},
    }
    for name, change in variants.items():
        put("model_config", name, json.dumps({**base, **change}))
    missing = dict(base)
    del missing["hidden_size"]
    put("model_config", "missing_hidden.json", json.dumps(missing))
    put("model_config", "not_object.json", "[1, 2, 3]")
    put("model_config", "truncated.json", json.dumps(base)[:-20])
    put("model_config", "nul_inside.json", json.dumps(base).replace(",", ",\u0000", 1))


def text_seeds(harness):
    lines = {
        "english.txt": "The quick brown fox jumps over the lazy dog.",
        "mask.txt": "Paris is the [MASK] of France. [SEP] [CLS][PAD][UNK]",
        "accents.txt": "Naïve café résumé ÀÉÎÕÜ ß ﬁ Ǆ İstanbul",
        "cjk.txt": "北京是中国的首都。東京は日本の首都です。서울은 한국의 수도입니다.",
        "mixed_scripts.txt": "Привет мир! مرحبا بالعالم שלום עולם नमस्ते ดวงอาทิตย์",
        "emoji.txt": "I ❤️ 🤗 transformers 👩‍👩‍👧‍👦 🇫🇷 \U0001F600\U0001F3FD",
        "controls.txt": "tab\there\x00nul\x01ctrl\u200bzw\u00adshy\r\nline\u2028sep\ufeff",
        "punct.txt": "don't \"quote\" (paren) a--b ... ¿¡ «» 1,000.50 $5 #tag @me",
        "long_word.txt": "a" * 150 + " supercalifragilisticexpialidocious" * 4,
        "combining.txt": "e\u0301 a\u0308 n\u0303 \u0915\u093f \u1100\u1161",
        "whitespace.txt": "   \u3000\u00a0 spaced \t\n  out  ",
        "empty.txt": "",
    }
    for name, text in lines.items():
        put(harness, name, text)


def tokenizer_seeds():
    text_seeds("tokenizer")
    # The harness reads a control byte first, then the text; see fuzz_tokenizer.c.
    put("tokenizer", "pair_trunc.bin", b"\x37\x40" + "first sentence [MASK] here. second one".encode())
    put("tokenizer", "pair_left.bin", b"\x5f\x80" + "中文 text a | b ##piece".encode())
    put("tokenizer", "invalid_utf8_lone.bin", b"\x01\x10abc\x80def")
    put("tokenizer", "invalid_utf8_overlong.bin", b"\x00\x00\xc0\xafxx")
    put("tokenizer", "invalid_utf8_surrogate.bin", b"\x03\x00\xed\xa0\x80")
    put("tokenizer", "invalid_utf8_truncated.bin", b"\x00\x00caf\xc3")
    put("tokenizer", "invalid_utf8_above_max.bin", b"\x00\x00\xf4\x90\x80\x80")


def vocab_seeds():
    full = VOCAB.read_bytes()
    put("vocab", "bert_base_head.txt", b"".join(full.splitlines(keepends=True)[:2000]))
    put("vocab", "minimal.txt", "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nhello\n##lo\nworld\n!\n")
    put("vocab", "crlf.txt", "[PAD]\r\n[UNK]\r\n[CLS]\r\n[SEP]\r\n[MASK]\r\nthe\r\n")
    put("vocab", "no_specials.txt", "a\nb\n##c\n")
    put("vocab", "duplicates.txt", "[UNK]\n[UNK]\na\na\n[MASK]\n")
    put("vocab", "no_final_newline.txt", "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nend")
    put("vocab", "empty_lines.txt", "\n\n[UNK]\n\n\n[MASK]\n")
    put("vocab", "unicode.txt", "[UNK]\n[CLS]\n[SEP]\n[MASK]\n中\n##文\né\n🤗\n")
    put("vocab", "invalid_utf8.txt", b"[UNK]\n\xff\xfe\n[MASK]\n")
    put("vocab", "empty.txt", "")
    put("vocab", "nul.txt", b"[UNK]\n\x00\n[MASK]\n")


def yaml_seeds():
    repo = HERE.parent
    default = repo / "config" / "default.yaml"
    if default.exists():
        put("yaml_config", "default.yaml", default.read_bytes())
    put("yaml_config", "full.yaml", """\
server:
  listen: 0.0.0.0
  port: 8080
  max_body_bytes: 1048576
  max_connections: 512
  connection_timeout_s: 30
  http_threads: 2
  auth_token: "s3cret"
workers:
  count: 2
  queue_depth: 64
  request_timeout_ms: 30000
  batch_max_tokens: 8192
  batch_wait_us: 0
model:
  dir: models/default
  max_sequence_length: 512
limits:
  max_inputs_per_request: 32
  default_top_k: 5
  max_top_k: 100
  max_masks_per_input: 32
shutdown:
  grace_period_s: 20
logging:
  level: info
""")
    put("yaml_config", "empty.yaml", "")
    put("yaml_config", "null_sections.yaml", "server:\nworkers: ~\n")
    put("yaml_config", "flow.yaml", "{server: {port: 0, listen: '::1'}, logging: {level: debug}}\n")
    put("yaml_config", "unknown_key.yaml", "server:\n  prot: 80\n")
    put("yaml_config", "out_of_range.yaml", "workers:\n  count: 100000\n")
    put("yaml_config", "wrong_type.yaml", "server:\n  port: [1, 2]\n")
    put("yaml_config", "hex_octal.yaml", "server:\n  port: 0x1F90\nworkers:\n  count: 0o7\n")
    put("yaml_config", "anchors.yaml", "server: &s\n  port: 1\nworkers: *s\n")
    put("yaml_config", "merge.yaml", "x: &a {port: 2}\nserver:\n  <<: *a\n")
    put("yaml_config", "multi_doc.yaml", "server:\n  port: 1\n---\nserver:\n  port: 2\n")
    put("yaml_config", "syntax_error.yaml", "server:\n  port: : :\n\t- x\n")
    put("yaml_config", "long_string.yaml", "server:\n  auth_token: " + "x" * 400 + "\n")
    put("yaml_config", "long_path.yaml", "model:\n  dir: /" + "d/" * 2100 + "\n")
    put("yaml_config", "tags.yaml", "server:\n  port: !!str 80\n  listen: !!binary aGVsbG8=\n")
    put("yaml_config", "top_list.yaml", "- server\n- workers\n")
    put("yaml_config", "bad_level.yaml", "logging:\n  level: loud\n")
    put("yaml_config", "negative.yaml", "server:\n  port: -1\n  max_body_bytes: -99999999999999999999\n")


def request_seeds():
    # First byte selects the route (see fuzz_request_json.c): 'f' fill-mask,
    # 'n' next-sentence, 't' tokenize.
    reqs = [
        ("f", "fill_single.json", {"inputs": "Paris is the [MASK] of France."}),
        ("f", "fill_batch.json", {"inputs": ["a [MASK] b", "[MASK] [MASK] c"],
                                  "parameters": {"top_k": 3}}),
        ("f", "fill_targets.json", {"inputs": "the [MASK] sat", "parameters": {
            "targets": ["cat", "dog", "zzyzx", "Cat"], "top_k": 2}}),
        ("f", "fill_labels.json", {"inputs": "a [MASK] b", "labels": [-100, 1037, 103, -100, -100]}),
        ("f", "fill_labels_batch.json", {"inputs": ["x [MASK]"], "labels": [[-100, 1, 2, -100]]}),
        ("f", "fill_truncate.json", {"inputs": "word " * 100 + "[MASK]",
                                     "parameters": {"truncate": True,
                                                    "truncation_direction": "left"}}),
        ("f", "fill_no_mask.json", {"inputs": "no mask here"}),
        ("f", "fill_bad_topk.json", {"inputs": "[MASK]", "parameters": {"top_k": 0}}),
        ("f", "fill_unknown_field.json", {"inputs": "[MASK]", "extra": 1}),
        ("n", "nsp_single.json", {"inputs": {"text": "I went out.", "text_pair": "It rained."}}),
        ("n", "nsp_batch.json", {"inputs": [{"text": "a", "text_pair": "b", "label": 0},
                                            {"text": "c", "text_pair": "d", "label": 1}]}),
        ("n", "nsp_truncate.json", {"inputs": {"text": "long " * 80, "text_pair": "short"},
                                    "parameters": {"truncate": True}}),
        ("n", "nsp_bad_label.json", {"inputs": {"text": "a", "text_pair": "b", "label": 2}}),
        ("t", "tok_single.json", {"inputs": "Hello, world! 🤗"}),
        ("t", "tok_pair.json", {"inputs": [{"text": "a", "text_pair": "b"}, "c", {"text": "d"}]}),
        ("t", "tok_truncate.json", {"inputs": "x " * 200, "parameters": {"truncate": True}}),
    ]
    for route, name, body in reqs:
        put("request_json", name, route + json.dumps(body, ensure_ascii=False))
    put("request_json", "fill_not_json.json", 'f{"inputs": "[MASK]"')
    put("request_json", "fill_dup_key.json", 'f{"inputs": "[MASK]", "inputs": "x"}')
    put("request_json", "tok_bad_utf8_escape.json", 't{"inputs": "\\ud800 lone surrogate"}')
    put("request_json", "nsp_list_empty.json", 'n{"inputs": []}')


def tokcfg_input(cfg, tj):
    """fuzz_tokenizer_config.c's layout: presence bits, split byte, cfg bytes + tj bytes."""
    a = b"" if cfg is None else (cfg if isinstance(cfg, bytes) else json.dumps(cfg).encode())
    b = b"" if tj is None else (tj if isinstance(tj, bytes) else json.dumps(tj).encode())
    ctrl = (1 if cfg is not None else 0) | (2 if tj is not None else 0)
    while True:  # leading spaces in b move the split until one byte value lands on len(a)
        size = len(a) + len(b)
        for sb in range(256):
            if size * sb // 255 == len(a):
                return bytes([ctrl, sb]) + a + b
        b = b" " + b


def tokenizer_config_seeds():
    real = json.loads((VOCAB.parent / "tokenizer_config.json").read_text())
    tj = json.loads((VOCAB.parent / "tokenizer.json").read_text())
    tj["model"]["vocab"] = {k: v for k, v in list(tj["model"]["vocab"].items())[:20]}
    tj.pop("added_tokens", None)
    raw_real = (VOCAB.parent / "tokenizer_config.json").read_bytes()  # has model_max_length 1e30
    put("tokenizer_config", "hub_config_only.bin", tokcfg_input(raw_real, None))
    put("tokenizer_config", "hub_both.bin", tokcfg_input(raw_real, tj))
    put("tokenizer_config", "tokenizer_json_only.bin", tokcfg_input(None, tj))
    put("tokenizer_config", "neither.bin", tokcfg_input(None, None))
    bare = {k: v for k, v in real.items()
            if k not in ("do_lower_case", "strip_accents", "tokenize_chinese_chars")}
    put("tokenizer_config", "fallback_to_normalizer.bin", tokcfg_input(bare, tj))
    variants = {
        "cased.bin": {"do_lower_case": False},
        "strip_null.bin": {"strip_accents": None},
        "strip_true.bin": {"strip_accents": True, "tokenize_chinese_chars": False},
        "lower_string.bin": {"do_lower_case": "yes"},
        "strip_int.bin": {"strip_accents": 1},
        "cleanup_true.bin": {"clean_up_tokenization_spaces": True},
        "cleanup_string.bin": {"clean_up_tokenization_spaces": "no"},
        "cleanup_null.bin": {"clean_up_tokenization_spaces": None},
    }
    for name, change in variants.items():
        put("tokenizer_config", name, tokcfg_input({**bare, **change}, None))
    norm = dict(tj)
    norm["normalizer"] = {"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": 0,
                          "strip_accents": "x", "lowercase": None}
    put("tokenizer_config", "normalizer_bad_types.bin", tokcfg_input(bare, norm))
    put("tokenizer_config", "config_not_object.bin", tokcfg_input(b"[true]", None))
    put("tokenizer_config", "config_truncated.bin", tokcfg_input(raw_real[:40], None))
    put("tokenizer_config", "tokenizer_json_array.bin", tokcfg_input(bare, b"[1,2]"))
    put("tokenizer_config", "normalizer_not_object.bin",
        tokcfg_input(bare, {"normalizer": "BertNormalizer"}))


def tokjson_input(tj, stm=None, cfg=None):
    """fuzz_tokenizer_json.c's layout: presence bits, two split bytes, then tokenizer.json,
    special_tokens_map.json, tokenizer_config.json."""
    enc = lambda x: b"" if x is None else (x if isinstance(x, bytes) else json.dumps(x).encode())
    parts = [enc(tj), enc(stm), enc(cfg)]
    ctrl = (1 if stm is not None else 0) | (2 if cfg is not None else 0)
    while True:  # pad the JSON with leading spaces until split bytes land exactly
        size = sum(map(len, parts))
        s1 = next((v for v in range(256) if size * v // 255 == len(parts[0])), None)
        if s1 is not None:
            rest = size - len(parts[0])
            s2 = next((v for v in range(256) if rest * v // 255 == len(parts[1])), None)
            if s2 is not None:
                return bytes([ctrl, s1, s2]) + b"".join(parts)
            parts[2] = b" " + parts[2]
        else:
            parts[1 if stm is not None else 2] = b" " + parts[1 if stm is not None else 2]


def tokenizer_json_seeds():
    """Small tokenizer.json files written by the tokenizers library itself."""
    import tempfile

    from tokenizers import BertWordPieceTokenizer

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "##lo", "wor", "##ld", "!",
             "\u00e9", "\u4e2d", "cafe", "x"]
    with tempfile.TemporaryDirectory() as d:
        vocab = Path(d) / "vocab.txt"
        vocab.write_text("\n".join(words) + "\n")
        for name, kw in [("uncased", {}), ("cased", {"lowercase": False}),
                         ("no_chinese", {"handle_chinese_chars": False, "strip_accents": True})]:
            tk = BertWordPieceTokenizer(str(vocab), **kw)
            tk.add_special_tokens(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
            if name == "cased":
                tk.add_special_tokens(["[ENT]"])  # numbered past the vocab
            tj = json.loads(tk.to_str())
            put("tokenizer_json", f"{name}.bin", tokjson_input(tj))
            if name == "uncased":
                base = tj
    renamed = json.loads(json.dumps(base))
    renamed["model"]["vocab"]["<mask>"] = renamed["model"]["vocab"].pop("[MASK]")
    for a in renamed["added_tokens"]:
        if a["content"] == "[MASK]":
            a["content"] = "<mask>"
    put("tokenizer_json", "renamed_mask.bin",
        tokjson_input(renamed, {"mask_token": {"content": "<mask>", "lstrip": False}},
                      {"mask_token": "<mask>", "do_lower_case": True}))
    put("tokenizer_json", "stm_missing_token.bin", tokjson_input(base, {"cls_token": "<s>"}))
    put("tokenizer_json", "cfg_wrong_type.bin", tokjson_input(base, None, {"sep_token": 3}))
    gap = json.loads(json.dumps(base))
    gap["model"]["vocab"]["cafe"] = 99
    put("tokenizer_json", "vocab_gap.bin", tokjson_input(gap))
    bpe = json.loads(json.dumps(base))
    bpe["model"]["type"] = "BPE"
    put("tokenizer_json", "model_bpe.bin", tokjson_input(bpe))
    strip = json.loads(json.dumps(base))
    strip["added_tokens"][0]["lstrip"] = True
    put("tokenizer_json", "added_lstrip.bin", tokjson_input(strip))
    put("tokenizer_json", "truncated.bin", tokjson_input(json.dumps(base).encode()[:200]))


# Must match CONFIG in fuzz_checkpoint.c.
CKPT_CONFIG = dict(vocab_size=8, hidden_size=4, num_hidden_layers=1, num_attention_heads=2,
                   intermediate_size=8, max_position_embeddings=8, type_vocab_size=2,
                   hidden_act="gelu")


def checkpoint_seeds():
    import tempfile

    import torch
    from safetensors.torch import load_file, save
    from transformers import BertConfig, BertForMaskedLM, BertForPreTraining, BertModel

    torch.manual_seed(0)

    def weights(cls, dtype=torch.float32, **kw):
        model = cls(BertConfig(**{**CKPT_CONFIG, **kw})).eval().to(dtype)
        with tempfile.TemporaryDirectory() as d:
            model.save_pretrained(d, safe_serialization=True)
            return (Path(d) / "model.safetensors").read_bytes(), load_file(
                str(Path(d) / "model.safetensors"))

    raw, tensors = weights(BertForPreTraining)
    put("checkpoint", "pretraining_f32.st", raw)
    put("checkpoint", "masked_lm.st", weights(BertForMaskedLM)[0])
    put("checkpoint", "base_no_prefix.st", weights(BertModel)[0])
    put("checkpoint", "pretraining_f16.st", weights(BertForPreTraining, torch.float16)[0])
    put("checkpoint", "pretraining_bf16.st", weights(BertForPreTraining, torch.bfloat16)[0])
    put("checkpoint", "untied.st", weights(BertForPreTraining, tie_word_embeddings=False)[0])
    # TensorFlow-converted checkpoints name LayerNorm parameters gamma/beta.
    tf = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias",
                                                                    "LayerNorm.beta"): v
          for k, v in tensors.items()}
    put("checkpoint", "tf_gamma_beta.st", save(tf))
    # No NSP head, and NaN/Inf weights.
    put("checkpoint", "no_nsp.st", save({k: v for k, v in tensors.items()
                                         if "seq_relationship" not in k}))
    bad = dict(tensors)
    k = "bert.embeddings.LayerNorm.weight"
    bad[k] = torch.tensor([float("nan"), float("inf"), -float("inf"), 1e38])
    put("checkpoint", "nan_inf.st", save(bad))
    # Unaligned F32: a 1-byte tensor first shifts every other tensor off 4-byte alignment.
    header, payload, off = {"pad": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}, [b"\0"], 1
    for name, t in sorted(tensors.items()):
        b = t.contiguous().numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        payload.append(b)
        off += len(b)
    put("checkpoint", "unaligned_f32.st", st_raw(header, b"".join(payload)))
    put("checkpoint", "wrong_shape.st", save({**tensors, "bert.pooler.dense.bias": torch.zeros(5)}))
    put("checkpoint", "wrong_dtype.st", save({**tensors, "cls.predictions.bias":
                                               torch.zeros(8, dtype=torch.float64)}))


def torch_zip_seeds():
    """Real torch.save files (what pytorch_model.bin is), then refusals derived from them."""
    import io
    import os
    import zipfile
    from collections import OrderedDict

    import torch

    def saved(obj, **kw):
        buf = io.BytesIO()
        torch.save(obj, buf, **kw)
        return buf.getvalue()

    g = torch.Generator().manual_seed(0)
    lin = torch.nn.Linear(3, 2)
    put("torch_zip", "state_dict_linear.bin", saved(lin.state_dict()))  # OrderedDict + _metadata
    put("torch_zip", "f16_bf16.bin", saved({"h": torch.randn(4, generator=g).half(),
                                            "b": torch.randn(2, 3, generator=g).bfloat16()}))
    base = torch.randn(4, 3, generator=g)
    put("torch_zip", "shared_storage_views.bin",  # tied weights, offsets into one storage
        saved({"all": base, "row1": base[1], "tail": base[2:], "tied": base}))
    put("torch_zip", "scalar_empty_int.bin", saved({"s": torch.tensor(2.5),
                                                   "e": torch.zeros(0, 5),
                                                   "i": torch.arange(3),
                                                   "m": torch.tensor([True, False])}))
    put("torch_zip", "parameter.bin", saved({"p": torch.nn.Parameter(torch.ones(2))}))
    p = torch.nn.Parameter(torch.ones(3))
    p._is_hf_initialized = True  # attributes: torch._utils._rebuild_parameter_with_state
    put("torch_zip", "parameter_with_state.bin", saved({"p": p}))
    put("torch_zip", "size1_dims.bin", saved({"x": torch.ones(1, 3, 1)}))
    put("torch_zip", "broken_non_contiguous.bin", saved({"t": torch.randn(3, 4, generator=g).t()}))
    put("torch_zip", "broken_legacy.bin", saved({"w": torch.ones(2)},
                                                _use_new_zipfile_serialization=False))
    put("torch_zip", "broken_protocol4.bin", saved({"w": torch.ones(2)}, pickle_protocol=4))
    put("torch_zip", "broken_not_state_dict.bin", saved({"model": {"w": torch.ones(2)}, "n": 3}))
    put("torch_zip", "broken_global.bin", saved({"w": OrderedDict, "f": os.getcwd}))
    good = saved({"w": torch.ones(2, 2), "b": torch.zeros(2)})
    put("torch_zip", "broken_truncated.bin", good[:-40])
    put("torch_zip", "broken_short.bin", good[:30])
    src = zipfile.ZipFile(io.BytesIO(good))
    for method, name in [(zipfile.ZIP_DEFLATED, "broken_deflated.bin"),
                         (zipfile.ZIP_STORED, "rezipped_python.bin")]:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", method) as z:
            for info in src.infolist():
                z.writestr(info.filename, src.read(info.filename))
        put("torch_zip", name, buf.getvalue())
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:  # storage entry missing
        for info in src.infolist():
            if not info.filename.endswith("/data/0"):
                z.writestr(info.filename, src.read(info.filename))
    put("torch_zip", "broken_missing_storage.bin", buf.getvalue())


def put_dict(harness, tokens):
    """libFuzzer dictionary dict/<harness>.dict; tokens are str (UTF-8) or bytes."""
    lines = [f"# libFuzzer dictionary for fuzz_{harness}: tokens of the format it parses."]
    for t in tokens:
        b = t.encode() if isinstance(t, str) else t
        esc = "".join(chr(x) if 32 <= x < 127 and chr(x) not in '\\"' else
                      "\\" + chr(x) if chr(x) in '\\"' else f"\\x{x:02X}" for x in b)
        lines.append(f'"{esc}"')
    d = HERE / "dict"
    d.mkdir(exist_ok=True)
    (d / f"{harness}.dict").write_text("\n".join(lines) + "\n")


def dicts():
    json_common = ["{", "}", "[", "]", ":", ",", '"', "true", "false", "null", "-", "1e308", "-0",
                   "0.5", "9223372036854775807", "-9223372036854775808", "18446744073709551616",
                   "\\u0000", "\\ud800", '\\"']
    dtypes = "BOOL U8 I8 I16 U16 F16 BF16 I32 U32 F32 F64 I64 U64 F8_E4M3 F8_E5M2".split()
    put_dict("safetensors", json_common + ['"dtype"', '"shape"', '"data_offsets"', '"__metadata__"']
             + [f'"{d}"' for d in dtypes]
             + ["4611686018427387904", "2305843009213693952", "4294967296", "2147483648"])
    keys = ("vocab_size hidden_size num_hidden_layers num_attention_heads intermediate_size "
            "max_position_embeddings type_vocab_size pad_token_id layer_norm_eps hidden_act "
            "tie_word_embeddings model_type position_embedding_type bert absolute gelu gelu_new "
            "gelu_python gelu_pytorch_tanh gelu_fast relu silu swish quick_gelu").split()
    put_dict("model_config", json_common + [f'"{k}"' for k in keys]
             + ["1048576", "4194304", "1024", "2147483647", "1e-12"])
    keys = ("inputs parameters labels options top_k targets truncate truncation_direction text "
            "text_pair label left right Left Right").split()
    put_dict("request_json", json_common + [f'"{k}"' for k in keys]
             + ["[MASK]", "[SEP]", "[CLS]", "[UNK]", "[PAD]", "##", "-100", "30521", "30522"])
    keys = ("server workers model limits shutdown logging listen port max_body_bytes "
            "max_connections connection_timeout_s http_threads auth_token count queue_depth "
            "request_timeout_ms batch_max_tokens batch_wait_us dir max_sequence_length "
            "max_inputs_per_request default_top_k max_top_k max_masks_per_input grace_period_s "
            "level debug info warn error localhost 0.0.0.0 ::1").split()
    put_dict("yaml_config", [": ", "\n", "\n  ", "- ", "---", "...", "~", "null", "&a", "*a", "<<",
                             "!!str", "!!int", "!!binary", "{", "}", "[", "]", "'", '"', "#",
                             "|", ">", "0x", "0o", "-1", "2147483648", "9223372036854775808"]
             + keys)
    put_dict("checkpoint", dtypes + ["bert.", "embeddings.", "encoder.layer.0.", "LayerNorm",
                                     ".gamma", ".beta", ".weight", ".bias", "cls.predictions.",
                                     "cls.seq_relationship.", "pooler.dense.", "decoder."])
    put_dict("torch_zip", [b"PK\x03\x04", b"PK\x01\x02", b"PK\x05\x06", b"PK\x06\x06",
                           b"PK\x06\x07", b"\xff\xff\xff\xff", b"\x80\x02",
                           b"ccollections\nOrderedDict\n", b"ctorch._utils\n_rebuild_tensor_v2\n",
                           b"ctorch._utils\n_rebuild_parameter\n", b"ctorch\nFloatStorage\n",
                           b"ctorch\nHalfStorage\n", b"ctorch\nBFloat16Storage\n",
                           b"ctorch\nLongStorage\n", b"cos\nsystem\n", b"Xstorage", b"X\x03\x00\x00\x00cpu",
                           "archive/data.pkl", "archive/data/0", "archive/byteorder", "little",
                           b"(", b"t", b"R", b"Q", b"q", b"h", b"u", b"s", b"b", b"}", b")", b".",
                           b"\x85", b"\x86", b"\x87", b"\x88", b"\x89", b"\x8a\x08", b"J", b"K", b"M"])
    put_dict("tokenizer_json", json_common + [f'"{k}"' for k in (
        "model type WordPiece vocab unk_token continuing_subword_prefix max_input_chars_per_word "
        "added_tokens id content special lstrip rstrip single_word normalized normalizer "
        "BertNormalizer lowercase strip_accents handle_chinese_chars pad_token cls_token "
        "sep_token mask_token do_lower_case added_tokens_decoder ## [MASK] [CLS] [SEP] <mask>"
    ).split()])
    put_dict("tokenizer_config", json_common + [f'"{k}"' for k in (
        "do_lower_case strip_accents tokenize_chinese_chars clean_up_tokenization_spaces "
        "normalizer type BertNormalizer lowercase handle_chinese_chars model_max_length").split()])
    put_dict("tokenizer", ["[MASK]", "[SEP]", "[CLS]", "[UNK]", "[PAD]", "##", " ", "é", "e\u0301",
                           "中", "🤗", "\u200b", "\u00a0", "\u0000", "\ufeff", "'", ".", "!",
                           b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x80"])
    put_dict("vocab", ["\n", "\r\n", "[PAD]\n", "[UNK]\n", "[CLS]\n", "[SEP]\n", "[MASK]\n", "##",
                       "##a\n", "hello\n", "中\n", " ", "\u0000", b"\xff"])


def main():
    safetensors_seeds()
    model_config_seeds()
    tokenizer_seeds()
    vocab_seeds()
    yaml_seeds()
    request_seeds()
    checkpoint_seeds()
    tokenizer_config_seeds()
    torch_zip_seeds()
    tokenizer_json_seeds()
    dicts()


if __name__ == "__main__":
    main()
