"""Every checkpoint layout a user downloads from the hub loads and answers as transformers does.

Layouts: model.safetensors; pytorch_model.bin (torch.save's zip format, F32/F16/BF16, tied
and untied heads); sharded model.safetensors.index.json (save_pretrained's max_shard_size) and
pytorch_model.bin.index.json (the shards and index transformers 4 wrote: huggingface_hub's
split_torch_state_dict_into_shards + torch.save, since transformers 5 writes only
safetensors); a directory with both (safetensors wins, as in transformers). Each is compared
with BertForPreTraining.from_pretrained on the same directory through `bert-cli forward`
(1e-4). Then every way such a file can be bad: `bert-cli check` must exit 1 naming the file
and the tensor or key, and a pickle that asks for any other global is refused, never run.
"""
import json
import os
import shutil
import subprocess
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from checkpoints import build_dir, make_checkpoint

TOL = 1e-4
SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
             max_position_embeddings=64)


def cli(*args, stdin=None):
    return subprocess.run([str(build_dir() / "bert-cli"), *args], input=stdin,
                          capture_output=True, text=True, timeout=300)


def check(d):
    return cli("check", "--model", str(d))


def expect_refusal(d, *needles):
    proc = check(d)
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    for needle in needles:
        assert needle in proc.stderr, (needle, proc.stderr)
    assert "Sanitizer" not in proc.stderr and "runtime error" not in proc.stderr
    return proc.stderr


def random_batch(seed, n=6, max_len=40):
    rng = np.random.default_rng(seed)
    items = []
    for _ in range(n):
        length = int(rng.integers(4, max_len))
        ids = [101] + rng.integers(1000, 30000, size=length - 2).tolist() + [102]
        pos = sorted(rng.choice(np.arange(1, length - 1), size=2, replace=False).tolist())
        types = [0] * (length // 2) + [1] * (length - length // 2)
        items.append(dict(ids=ids, type_ids=types, mlm_positions=pos))
    return items


def ours(d, batch):
    proc = cli("forward", "--model", str(d),
               stdin=json.dumps({"inputs": batch, "nsp": True}) + "\n")
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert "error" not in got, got
    return np.asarray(got["mlm_logits"]), np.asarray(got["nsp_logits"])


def theirs(d, batch):
    from transformers import BertForPreTraining

    model = BertForPreTraining.from_pretrained(d, dtype=torch.float32).eval()
    mlm, nsp = [], []
    with torch.no_grad():
        for x in batch:  # one at a time: no padding question
            out = model(input_ids=torch.tensor([x["ids"]]),
                        token_type_ids=torch.tensor([x["type_ids"]]))
            mlm.append(out.prediction_logits[0, x["mlm_positions"]].numpy())
            nsp.append(out.seq_relationship_logits[0].numpy())
    return np.concatenate(mlm), np.stack(nsp)


def max_diff(d, ref_dir=None, seed=0, max_len=40):
    batch = random_batch(seed, max_len=max_len)
    a_mlm, a_nsp = ours(d, batch)
    b_mlm, b_nsp = theirs(ref_dir or d, batch)
    return max(float(np.max(np.abs(a_mlm - b_mlm))), float(np.max(np.abs(a_nsp - b_nsp))))


def to_bin(d, *, shard_size=None, keep_safetensors=False):
    """Rewrites d's weights as transformers 4's save_pretrained(safe_serialization=False) did:
    torch.save of the state dict (tied tensors included, sharing their storage), sharded with
    huggingface_hub's split_torch_state_dict_into_shards and an index when shard_size is set."""
    from huggingface_hub import split_torch_state_dict_into_shards
    from transformers import BertForPreTraining

    d = os.fspath(d)
    model = BertForPreTraining.from_pretrained(d)
    sd = model.state_dict()
    if shard_size is None:
        torch.save(sd, os.path.join(d, "pytorch_model.bin"))
    else:
        split = split_torch_state_dict_into_shards(
            sd, filename_pattern="pytorch_model{suffix}.bin", max_shard_size=shard_size)
        assert split.is_sharded
        for fname, names in split.filename_to_tensors.items():
            torch.save({n: sd[n] for n in names}, os.path.join(d, fname))
        with open(os.path.join(d, "pytorch_model.bin.index.json"), "w") as f:
            json.dump({"metadata": split.metadata, "weight_map": split.tensor_to_filename}, f)
    if not keep_safetensors:
        os.unlink(os.path.join(d, "model.safetensors"))
    return d


def sharded_safetensors(d, shard_size):
    from transformers import BertForPreTraining

    model = BertForPreTraining.from_pretrained(d)
    os.unlink(os.path.join(d, "model.safetensors"))
    model.save_pretrained(d, max_shard_size=shard_size)
    assert os.path.exists(os.path.join(d, "model.safetensors.index.json"))
    assert not os.path.exists(os.path.join(d, "model.safetensors"))
    return d


def build_layout(root, name):
    d = root / name
    if name == "safetensors":
        make_checkpoint(d, seed=21, **SMALL)
    elif name == "bin":
        to_bin(make_checkpoint(d, seed=22, **SMALL))
    elif name == "bin_f16":
        to_bin(make_checkpoint(d, seed=23, dtype="float16", **SMALL))
    elif name == "bin_bf16":
        to_bin(make_checkpoint(d, seed=24, dtype="bfloat16", **SMALL))
    elif name == "bin_untied":
        to_bin(make_checkpoint(d, seed=25, tie_word_embeddings=False, **SMALL))
    elif name == "sharded_safetensors":
        sharded_safetensors(make_checkpoint(d, seed=26, **SMALL), "400KB")
    elif name == "sharded_bin":
        to_bin(make_checkpoint(d, seed=27, **SMALL), shard_size="400KB")
    elif name == "sharded_bin_f16":
        to_bin(make_checkpoint(d, seed=28, dtype="float16", **SMALL), shard_size="300KB")
    return d


LAYOUTS = ["safetensors", "bin", "bin_f16", "bin_bf16", "bin_untied", "sharded_safetensors",
           "sharded_bin", "sharded_bin_f16"]


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    root = tmp_path_factory.mktemp("layouts")
    return {name: build_layout(root, name) for name in LAYOUTS}


@pytest.mark.parametrize("name", LAYOUTS)
def test_layout_matches_transformers(layouts, name):
    d = layouts[name]
    files = sorted(p.name for p in d.iterdir())
    if "sharded" in name:
        assert sum(1 for f in files if "-of-" in f) >= 2, files
    diff = max_diff(d, seed=LAYOUTS.index(name))
    print(f"\n{name}: {files} max abs diff vs transformers {diff:.3g}")
    assert diff <= TOL, f"{name}: differs by {diff:.3g}"
    info = json.loads(check(d).stdout)
    assert info["mlm"] is True and info["nsp"] is True
    assert info["dtype"] == {"bin_f16": "F16", "bin_bf16": "BF16",
                             "sharded_bin_f16": "F16"}.get(name, "F32")
    assert info["weights_format"] == ("safetensors" if "safetensors" in name else "pytorch")
    assert info["weight_files"] == (2 if "sharded" in name else 1)
    assert info["weights"].endswith({"safetensors": "model.safetensors",
                                     "sharded_safetensors": "model.safetensors.index.json",
                                     "sharded_bin": "pytorch_model.bin.index.json",
                                     "sharded_bin_f16": "pytorch_model.bin.index.json"
                                     }.get(name, "pytorch_model.bin"))


def test_safetensors_preferred_over_bin(tmp_path):
    """Both layouts in one directory, with different weights: transformers reads
    model.safetensors (then model.safetensors.index.json) before pytorch_model.bin; so do we."""
    other = to_bin(make_checkpoint(tmp_path / "other", seed=31, **SMALL))
    d = make_checkpoint(tmp_path / "both", seed=32, **SMALL)
    shutil.copy(os.path.join(other, "pytorch_model.bin"), d / "pytorch_model.bin")
    assert max_diff(d) <= TOL  # transformers on the same directory
    assert max_diff(d, ref_dir=other) > 1e-2  # and not the .bin's weights
    assert json.loads(check(d).stdout)["weights"].endswith("/model.safetensors")

    # A sharded safetensors index also beats a single pytorch_model.bin.
    sharded_safetensors(d, "400KB")
    assert (d / "pytorch_model.bin").exists()
    assert max_diff(d) <= TOL
    assert max_diff(d, ref_dir=other) > 1e-2
    assert json.loads(check(d).stdout)["weights"].endswith("/model.safetensors.index.json")


# ---- pytorch_model.bin that must be refused -------------------------------------------


@pytest.fixture(scope="module")
def small_sd(tmp_path_factory):
    from transformers import BertForPreTraining

    d = make_checkpoint(tmp_path_factory.mktemp("sd") / "ckpt", seed=41, hidden_size=16,
                        num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                        max_position_embeddings=32)
    return d, BertForPreTraining.from_pretrained(d).state_dict()


def bin_dir(small_sd, tmp_path, name, obj, **save_kw):
    src, _ = small_sd
    d = tmp_path / name
    shutil.copytree(src, d)
    os.unlink(d / "model.safetensors")
    torch.save(obj, d / "pytorch_model.bin", **save_kw)
    return d


class _Exploit:
    """What a malicious checkpoint carries: unpickling it calls os.system."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_bin_with_arbitrary_global_is_refused_not_run(small_sd, tmp_path):
    _, sd = small_sd
    marker = tmp_path / "pwned"
    evil = dict(sd)
    evil["bert.embeddings.word_embeddings.weight"] = _Exploit(marker)
    d = bin_dir(small_sd, tmp_path, "evil", evil)
    err = expect_refusal(d, "pytorch_model.bin", "refusing the global", "system",
                         "nothing in the file is ever executed")
    assert not marker.exists(), err
    # The same file would run the command under plain pickle: the test input is real.
    with pytest.raises(Exception):
        torch.load(d / "pytorch_model.bin", weights_only=True)


def test_bin_with_other_object_is_refused(small_sd, tmp_path):
    _, sd = small_sd
    d = bin_dir(small_sd, tmp_path, "nested", {"model": sd, "epoch": 3})
    expect_refusal(d, "pytorch_model.bin", "'model'", "not a tensor")


def test_legacy_bin_is_refused_with_a_way_out(small_sd, tmp_path):
    _, sd = small_sd
    d = bin_dir(small_sd, tmp_path, "legacy", sd, _use_new_zipfile_serialization=False)
    expect_refusal(d, "pytorch_model.bin", "legacy", "torch>=1.6", "safetensors")


def test_bin_non_contiguous_tensor_is_refused(small_sd, tmp_path):
    _, sd = small_sd
    bad = dict(sd)
    w = sd["bert.encoder.layer.0.intermediate.dense.weight"]
    bad["bert.encoder.layer.0.intermediate.dense.weight"] = w.t().contiguous().t()
    d = bin_dir(small_sd, tmp_path, "strided", bad)
    expect_refusal(d, "pytorch_model.bin", "bert.encoder.layer.0.intermediate.dense.weight",
                   "not contiguous")


def test_bin_int_dtype_is_refused(small_sd, tmp_path):
    _, sd = small_sd
    bad = dict(sd)
    bad["bert.embeddings.LayerNorm.bias"] = torch.zeros(16, dtype=torch.int64)
    d = bin_dir(small_sd, tmp_path, "int", bad)
    expect_refusal(d, "pytorch_model.bin", "bert.embeddings.LayerNorm.bias", "I64",
                   "F32, F16 or BF16")


def test_bin_shape_disagrees_with_config(small_sd, tmp_path):
    _, sd = small_sd
    d = bin_dir(small_sd, tmp_path, "shape", sd)
    cfg = json.loads((d / "config.json").read_text())
    cfg["intermediate_size"] = 33
    (d / "config.json").write_text(json.dumps(cfg))
    expect_refusal(d, "pytorch_model.bin", "bert.encoder.layer.0.intermediate.dense.weight",
                   "[32, 16]", "[33, 16]")


def test_bin_missing_tensor(small_sd, tmp_path):
    _, sd = small_sd
    bad = {k: v for k, v in sd.items() if "layer.0.output.dense.bias" not in k}
    d = bin_dir(small_sd, tmp_path, "missing", bad)
    expect_refusal(d, "pytorch_model.bin", "missing tensor",
                   "bert.encoder.layer.0.output.dense.bias")


@pytest.mark.parametrize("cut", [100, 5000, -30])
def test_bin_truncated(small_sd, tmp_path, cut):
    _, sd = small_sd
    d = bin_dir(small_sd, tmp_path, "trunc", sd)
    raw = (d / "pytorch_model.bin").read_bytes()
    (d / "pytorch_model.bin").write_bytes(raw[:cut])
    expect_refusal(d, "pytorch_model.bin")


def test_bin_compressed_is_refused(small_sd, tmp_path):
    _, sd = small_sd
    d = bin_dir(small_sd, tmp_path, "deflate", sd)
    src = zipfile.ZipFile(d / "pytorch_model.bin")
    entries = [(i.filename, src.read(i.filename)) for i in src.infolist()]
    src.close()
    with zipfile.ZipFile(d / "pytorch_model.bin", "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in entries:
            z.writestr(name, data)
    expect_refusal(d, "pytorch_model.bin", "compressed")


def test_bin_storage_entry_missing(small_sd, tmp_path):
    _, sd = small_sd
    d = bin_dir(small_sd, tmp_path, "nostorage", sd)
    src = zipfile.ZipFile(d / "pytorch_model.bin")
    entries = [(i.filename, src.read(i.filename)) for i in src.infolist()
               if not i.filename.endswith("/data/0")]
    src.close()
    with zipfile.ZipFile(d / "pytorch_model.bin", "w", zipfile.ZIP_STORED) as z:
        for name, data in entries:
            z.writestr(name, data)
    expect_refusal(d, "pytorch_model.bin", "bert.embeddings.word_embeddings.weight",
                   "pytorch_model/data/0")


def test_not_a_zip(small_sd, tmp_path):
    _, sd = small_sd
    d = bin_dir(small_sd, tmp_path, "garbage", sd)
    (d / "pytorch_model.bin").write_bytes(b"<html>404 Not Found</html>")
    expect_refusal(d, "pytorch_model.bin", "not a PyTorch checkpoint")


# ---- sharded checkpoints that must be refused -----------------------------------------


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    root = tmp_path_factory.mktemp("sharded")
    st = sharded_safetensors(make_checkpoint(root / "st", seed=51, **SMALL), "400KB")
    pt = to_bin(make_checkpoint(root / "pt", seed=52, **SMALL), shard_size="400KB")
    return {"st": st, "pt": pt}


def copy_of(sharded, kind, tmp_path):
    d = tmp_path / kind
    shutil.copytree(sharded[kind], d)
    index = "model.safetensors.index.json" if kind == "st" else "pytorch_model.bin.index.json"
    return d, d / index, json.loads((d / index).read_text())


@pytest.mark.parametrize("kind", ["st", "pt"])
def test_shard_missing(sharded, tmp_path, kind):
    d, index, idx = copy_of(sharded, kind, tmp_path)
    shard = sorted(set(idx["weight_map"].values()))[1]
    os.unlink(d / shard)
    expect_refusal(d, shard, "cannot open")


@pytest.mark.parametrize("kind", ["st", "pt"])
def test_index_names_wrong_shard(sharded, tmp_path, kind):
    d, index, idx = copy_of(sharded, kind, tmp_path)
    shards = sorted(set(idx["weight_map"].values()))
    name = next(k for k, v in idx["weight_map"].items() if v == shards[0])
    idx["weight_map"][name] = shards[1]
    index.write_text(json.dumps(idx))
    expect_refusal(d, index.name, name, shards[1], "no such tensor")


@pytest.mark.parametrize("kind", ["st", "pt"])
def test_index_lacks_tensor(sharded, tmp_path, kind):
    d, index, idx = copy_of(sharded, kind, tmp_path)
    del idx["weight_map"]["bert.encoder.layer.1.attention.self.key.bias"]
    index.write_text(json.dumps(idx))
    expect_refusal(d, index.name, "missing tensor", "bert.encoder.layer.1.attention.self.key.bias")


@pytest.mark.parametrize("shard", ["../model.safetensors", "/etc/passwd", "", 7])
def test_index_shard_outside_directory(sharded, tmp_path, shard):
    d, index, idx = copy_of(sharded, "st", tmp_path)
    idx["weight_map"]["bert.pooler.dense.bias"] = shard
    index.write_text(json.dumps(idx))
    expect_refusal(d, index.name, "bert.pooler.dense.bias", "file name in the same directory")


@pytest.mark.parametrize("text", ['{"weight_map": [1]}', '{"metadata": {}}', '{"weight_map": {}}',
                                  '{"weight_map": {"a": "b"', "[]"])
def test_index_malformed(sharded, tmp_path, text):
    d, index, _ = copy_of(sharded, "pt", tmp_path)
    index.write_text(text)
    expect_refusal(d, index.name)


def test_truncated_shard(sharded, tmp_path):
    d, index, idx = copy_of(sharded, "st", tmp_path)
    shard = sorted(set(idx["weight_map"].values()))[0]
    raw = (d / shard).read_bytes()
    (d / shard).write_bytes(raw[:-100])
    expect_refusal(d, shard, "truncated")


# ---- no weights, or not a BERT --------------------------------------------------------


def test_no_weights_names_what_is_read(small_sd, tmp_path):
    src, _ = small_sd
    d = tmp_path / "tf"
    shutil.copytree(src, d)
    os.unlink(d / "model.safetensors")
    (d / "tf_model.h5").write_bytes(b"\x89HDF\r\n\x1a\n")
    expect_refusal(d, "model.safetensors", "pytorch_model.bin", "pytorch_model.bin.index.json",
                   "tf_model.h5", "not read")


@pytest.mark.parametrize("edit,needles", [
    ({"model_type": "roberta"}, ["'model_type'", "roberta", "only 'bert'"]),
    ({"model_type": "distilbert"}, ["'model_type'", "distilbert", "only 'bert'"]),
    ({"architectures": ["RobertaForMaskedLM"]}, ["'architectures'", "RobertaForMaskedLM",
                                                  "Bert"]),
    ({"architectures": "BertForPreTraining"}, ["'architectures'"]),
])
def test_other_model_types_refused(small_sd, tmp_path, edit, needles):
    src, _ = small_sd
    d = tmp_path / "other"
    shutil.copytree(src, d)
    cfg = json.loads((d / "config.json").read_text())
    cfg.update(edit)
    (d / "config.json").write_text(json.dumps(cfg))
    expect_refusal(d, "config.json", *needles)


@pytest.mark.parametrize("arch", ["BertForMaskedLM", "BertModel", "BertForSequenceClassification"])
def test_bert_architectures_accepted(small_sd, tmp_path, arch):
    src, _ = small_sd
    d = tmp_path / "arch"
    shutil.copytree(src, d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["architectures"] = [arch]
    (d / "config.json").write_text(json.dumps(cfg))
    assert check(d).returncode == 0


# ---- a tokenizer given only as tokenizer.json -----------------------------------------

def _shared_tokenizer_json():
    from checkpoints import SHARED_VOCAB

    return json.loads((SHARED_VOCAB / "tokenizer.json").read_text())


def tok_variant(d, edit=None, files=None):
    """A directory with tokenizer.json (bert-base-uncased's, then edited) and nothing else
    unless files gives more (name -> JSON)."""
    d.mkdir(parents=True, exist_ok=True)
    tj = _shared_tokenizer_json()
    if edit:
        edit(tj)
    (d / "tokenizer.json").write_text(json.dumps(tj))
    for name, obj in (files or {}).items():
        (d / name).write_text(json.dumps(obj))
    return d


def _normalizer(**kw):
    def edit(tj):
        tj["normalizer"].update(kw)
    return edit


def _rename_specials(tj):
    """<s>/</s>/<mask> instead of [CLS]/[SEP]/[MASK], at the same ids, everywhere
    tokenizer.json names them."""
    names = {"[CLS]": "<s>", "[SEP]": "</s>", "[MASK]": "<mask>"}
    vocab = tj["model"]["vocab"]
    for old, new in names.items():
        vocab[new] = vocab.pop(old)
    for a in tj["added_tokens"]:
        a["content"] = names.get(a["content"], a["content"])
    text = json.dumps(tj["post_processor"])
    for old, new in names.items():
        text = text.replace(json.dumps(old), json.dumps(new))
    tj["post_processor"] = json.loads(text)


def _more_added(tj):
    """Added special tokens: one already in the vocab, two numbered on past its end."""
    n = len(tj["model"]["vocab"])
    for i, content in enumerate(["[ENT]", "<sep2>"]):
        tj["added_tokens"].append({"id": n + i, "content": content, "single_word": False,
                                   "lstrip": False, "rstrip": False, "normalized": False,
                                   "special": True})
    tj["added_tokens"].append({"id": tj["model"]["vocab"]["[unused5]"], "content": "[unused5]",
                               "single_word": False, "lstrip": False, "rstrip": False,
                               "normalized": False, "special": True})


SPECIAL_FILES = {"special_tokens_map.json": {"cls_token": "<s>", "sep_token": "</s>",
                                             "mask_token": {"content": "<mask>", "lstrip": False,
                                                            "normalized": False, "rstrip": False,
                                                            "single_word": False}},
                 "tokenizer_config.json": {"cls_token": "<s>", "sep_token": "</s>",
                                           "mask_token": "<mask>", "unk_token": "[UNK]",
                                           "pad_token": "[PAD]"}}

def _config(**kw):
    return {"tokenizer_config.json": kw}


# transformers (4 and 5) rebuilds the normalizer from tokenizer_config.json's do_lower_case /
# strip_accents / tokenize_chinese_chars (defaults: uncased) rather than reading tokenizer.json's,
# so a cased hub checkpoint says so in both files; the variants do the same.
TOK_VARIANTS = {
    "uncased": (None, None),
    "cased": (_normalizer(lowercase=False, strip_accents=None),
              _config(do_lower_case=False, strip_accents=None)),
    "cased_strip_accents": (_normalizer(lowercase=False, strip_accents=True),
                            _config(do_lower_case=False, strip_accents=True)),
    "uncased_keep_accents": (_normalizer(strip_accents=False), _config(strip_accents=False)),
    "no_chinese": (_normalizer(handle_chinese_chars=False), _config(tokenize_chinese_chars=False)),
    "renamed_specials": (_rename_specials, SPECIAL_FILES),
    "added_tokens": (_more_added, None),
}

EXTRA_TEXTS = ["fill <mask> and [MASK] here", "<s> a </s> b", "x[ENT]y <sep2> [unused5]z",
               "[ENT][ENT]<sep2>[MASK]", "Ünïcödé Straße 中文字 ﬁ", "[UNK] [PAD] [CLS] [SEP]"]


@pytest.fixture(scope="module")
def tok_lines():
    import tokenizer_corpus

    lines = tokenizer_corpus.corpus()
    return lines[:4000] + EXTRA_TEXTS


@pytest.mark.parametrize("variant", list(TOK_VARIANTS))
def test_tokenizer_json_only_matches_fast_tokenizer(tmp_path, tok_lines, variant):
    import transformers
    from test_tokenizer import diff, hf_batch, run_cli

    transformers.logging.set_verbosity_error()
    edit, files = TOK_VARIANTS[variant]
    d = tok_variant(tmp_path / variant, edit, files)
    assert not (d / "vocab.txt").exists()
    tk = transformers.BertTokenizerFast.from_pretrained(d)
    cli_path = build_dir() / "bert-cli"
    got, _ = run_cli(cli_path, ["--model", str(d)], [{"text": t} for t in tok_lines])
    want = hf_batch(tk, tok_lines)
    bad, detail = diff(got, want, tok_lines)
    pairs = tok_lines[1:] + tok_lines[:1]
    got_p, _ = run_cli(cli_path, ["--model", str(d)],
                       [{"text": a, "text_pair": b} for a, b in zip(tok_lines, pairs)])
    bad_p, detail_p = diff(got_p, hf_batch(tk, tok_lines, pairs), tok_lines)
    print(f"\n{variant}: {len(tok_lines)} texts and pairs, {len(bad)} + {len(bad_p)} mismatches")
    assert not bad, detail
    assert not bad_p, detail_p
    if variant == "renamed_specials":
        assert got[-6]["tokens"][2] == "<mask>" and got[-6]["ids"][2] == 103
    # Decoding with skip_special drops exactly what the fast tokenizer drops.
    for ids in (want[-4]["ids"], want[-3]["ids"], want[-1]["ids"]):
        dec, _ = run_cli(cli_path, ["--model", str(d), "--decode"],
                         [{"ids": ids, "skip_special": True, "cleanup": True}])
        assert dec[0]["text"] == tk.decode(ids, skip_special_tokens=True), ids


def test_checkpoint_with_tokenizer_json_only_serves(tmp_path):
    d = make_checkpoint(tmp_path / "ckpt", seed=61, **SMALL)
    os.unlink(d / "vocab.txt")
    os.unlink(d / "tokenizer_config.json")
    shutil.copy(Path(__file__).resolve().parent.parent.parent / "shared" / "vocab" /
                "bert-base-uncased" / "tokenizer.json", d / "tokenizer.json")
    proc = check(d)
    assert proc.returncode == 0, proc.stderr
    proc = cli("fill", "--model", str(d), "--top-k", "2", stdin="the [MASK] sat down.\n")
    assert proc.returncode == 0 and "error" not in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.parametrize("edit,files,needles", [
    (lambda tj: tj["model"].update(type="BPE"), None, ["tokenizer.json", "WordPiece"]),
    (lambda tj: tj.pop("model"), None, ["tokenizer.json", 'no "model"', "vocab.txt"]),
    (lambda tj: tj["model"]["vocab"].update({"hello": 40000}), None,
     ["tokenizer.json", "'hello'", "dense"]),
    (lambda tj: tj["model"]["vocab"].update({"hello": 7}), None,
     ["tokenizer.json", "share id 7"]),
    (lambda tj: tj["model"].update(continuing_subword_prefix="@@"), None,
     ["tokenizer.json", "continuing_subword_prefix"]),
    (lambda tj: tj["normalizer"].update(type="Lowercase"), None,
     ["tokenizer.json", "BertNormalizer"]),
    (lambda tj: tj["added_tokens"].append({"id": 30600, "content": "[GAP]", "special": True,
                                           "normalized": False}), None,
     ["tokenizer.json", "[GAP]", "30600", "without gaps"]),
    (lambda tj: tj["added_tokens"].append({"id": 5, "content": "[X]", "special": True,
                                           "normalized": False}), None,
     ["tokenizer.json", "[X]", "another token"]),
    (lambda tj: tj["added_tokens"][4].update(lstrip=True), None,
     ["tokenizer.json", "[MASK]", "lstrip"]),
    (lambda tj: tj["added_tokens"].append({"id": 30522, "content": "newword"}), None,
     ["tokenizer.json", "newword", "normalized"]),
    (None, {"special_tokens_map.json": {"mask_token": "<mask>"}},
     ["special_tokens_map.json", "<mask>", "mask_token", "not in the vocab"]),
    (None, {"tokenizer_config.json": {"cls_token": 5}}, ["tokenizer_config.json", "cls_token"]),
    (None, {"special_tokens_map.json": []}, ["special_tokens_map.json", "not a JSON object"]),
])
def test_bad_tokenizer_json_refused(tmp_path, edit, files, needles):
    d = tok_variant(tmp_path / "bad", edit, files)
    proc = cli("tokenize", "--model", str(d), stdin='{"text": "hi"}\n')
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    for n in needles:
        assert n in proc.stderr, (n, proc.stderr)


def test_tokenizer_json_not_json(tmp_path):
    d = tmp_path / "tjbad"
    d.mkdir()
    (d / "tokenizer.json").write_text('{"model": {')
    proc = cli("tokenize", "--model", str(d), stdin='{"text": "hi"}\n')
    assert proc.returncode == 1 and "tokenizer.json" in proc.stderr, proc.stderr


# ---- the server on the new layouts -----------------------------------------------------


def test_server_serves_sharded_bin_with_tokenizer_json_only(tmp_path):
    """The whole service on a sharded pytorch_model.bin and a tokenizer.json without
    vocab.txt: /v1/fill-mask answers as pipeline("fill-mask") does, /v1/next-sentence as
    BertForPreTraining does."""
    from transformers import AutoTokenizer, BertForPreTraining, pipeline

    from http_helpers import Server

    d = to_bin(make_checkpoint(tmp_path / "ckpt", seed=71, **SMALL), shard_size="400KB")
    os.unlink(os.path.join(d, "vocab.txt"))
    from checkpoints import SHARED_VOCAB

    shutil.copy(SHARED_VOCAB / "tokenizer.json", os.path.join(d, "tokenizer.json"))
    pipe = pipeline("fill-mask", model=d, tokenizer=d, device="cpu")
    texts = ["The capital of France is [MASK].", "A [MASK] sat on the [MASK] today."]
    worst = 0.0
    with Server(tmp_path, d) as server:
        for text in texts:
            r = server.post("/v1/fill-mask", {"inputs": text, "parameters": {"top_k": 5}})
            assert r.status_code == 200, r.text
            ours, ref = r.json(), pipe(text, top_k=5)
            if not isinstance(ref[0], list):
                ours, ref = [ours], [ref]
            for o_mask, r_mask in zip(ours, ref):
                assert [p["token"] for p in o_mask] == [p["token"] for p in r_mask]
                assert [p["token_str"] for p in o_mask] == [p["token_str"] for p in r_mask]
                worst = max(worst, max(abs(a["score"] - b["score"])
                                       for a, b in zip(o_mask, r_mask)))
        pair = {"text": "He went to the store.", "text_pair": "He bought milk."}
        r = server.post("/v1/next-sentence", {"inputs": pair})
        assert r.status_code == 200, r.text
        got = r.json()
        got = got[0] if isinstance(got, list) else got
    model = BertForPreTraining.from_pretrained(d, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(d)
    with torch.no_grad():
        logits = model(**tok(pair["text"], pair["text_pair"], return_tensors="pt")
                       ).seq_relationship_logits[0].numpy()
    nsp = float(np.max(np.abs(np.asarray(got["logits"]) - logits)))
    print(f"\nserver, sharded .bin + tokenizer.json: fill-mask score diff {worst:.3g}, "
          f"nsp logits diff {nsp:.3g}")
    assert worst <= TOL and nsp <= TOL


# ---- zip variants torch does not write but zip readers must handle, and refusals ------


def _rezip(path, edit=None, **zip_kw):
    """Rewrites a torch.save archive entry by entry with Python's zipfile (stored), editing
    entries through edit(name, data) -> data."""
    src = zipfile.ZipFile(path)
    entries = [(i.filename, src.read(i.filename)) for i in src.infolist()]
    src.close()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for name, data in entries:
            data = edit(name, data) if edit else data
            with z.open(name, "w", **zip_kw) as f:
                f.write(data)


def _write_zip64(path, entries):
    """A stored zip in which every size and offset lives in zip64 records, as torch (miniz)
    writes archives past 4 GiB: 0xFFFFFFFF in the headers, zip64 extra fields, a zip64 end
    record and locator. Data is not aligned (as Python's zipfile writes it)."""
    out, cd = bytearray(), bytearray()
    for name, data in entries:
        nb, off, crc = name.encode(), len(out), zlib.crc32(data)
        extra = struct.pack("<HHQQ", 1, 16, len(data), len(data))
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 45, 0, 0, 0, 0, crc, 0xFFFFFFFF,
                           0xFFFFFFFF, len(nb), len(extra)) + nb + extra + data
        cextra = struct.pack("<HHQQQ", 1, 24, len(data), len(data), off)
        cd += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 45, 45, 0, 0, 0, 0, crc,
                          0xFFFFFFFF, 0xFFFFFFFF, len(nb), len(cextra), 0, 0, 0, 0,
                          0xFFFFFFFF) + nb + cextra
    cd_off = len(out)
    out += cd
    e64 = len(out)
    out += struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, len(entries), len(entries),
                       len(cd), cd_off)
    out += struct.pack("<IIQI", 0x07064B50, 0, e64, 1)
    out += struct.pack("<IHHHHIIH", 0x06054B50, 0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF, 0xFFFFFFFF,
                       0xFFFFFFFF, 0)
    path.write_bytes(bytes(out))


def test_bin_zip64_and_unaligned_entries_load(small_sd, tmp_path):
    """Zip64 records (what torch writes past 4 GiB) and storages at unaligned offsets still
    load, and give transformers' answers."""
    src, sd = small_sd
    d = bin_dir(small_sd, tmp_path, "zip64", sd)
    z = zipfile.ZipFile(d / "pytorch_model.bin")
    entries = [(i.filename, z.read(i.filename)) for i in z.infolist()]
    z.close()
    _write_zip64(d / "pytorch_model.bin", entries)
    z = zipfile.ZipFile(d / "pytorch_model.bin")  # a zip reader agrees it is well formed
    assert [(i.filename, z.read(i.filename)) for i in z.infolist()] == entries
    assert z.testzip() is None
    z.close()
    assert check(d).returncode == 0, check(d).stderr
    assert max_diff(d, ref_dir=src, max_len=32) <= TOL


def test_bin_big_endian_refused(small_sd, tmp_path):
    _, sd = small_sd
    d = bin_dir(small_sd, tmp_path, "bigendian", sd)
    _rezip(d / "pytorch_model.bin",
           lambda name, data: b"big" if name.endswith("/byteorder") else data)
    expect_refusal(d, "pytorch_model.bin", "byteorder", "little")


def test_bin_of_parameters_loads(small_sd, tmp_path):
    """torch.save of nn.Parameters (torch._utils._rebuild_parameter around each tensor), as
    some training scripts write pytorch_model.bin, loads and matches."""
    from transformers import BertForPreTraining

    src, _ = small_sd
    params = dict(BertForPreTraining.from_pretrained(src).named_parameters())
    d = bin_dir(small_sd, tmp_path, "params", params)
    raw = zipfile.ZipFile(d / "pytorch_model.bin").read("pytorch_model/data.pkl")
    assert b"_rebuild_parameter" in raw
    assert check(d).returncode == 0, check(d).stderr
    assert max_diff(d, ref_dir=src, max_len=32) <= TOL


def test_bin_other_pickle_protocol_refused(small_sd, tmp_path):
    _, sd = small_sd
    d = bin_dir(small_sd, tmp_path, "proto4", sd, pickle_protocol=4)
    expect_refusal(d, "pytorch_model.bin", "pickle protocol 4", "protocol 2")
