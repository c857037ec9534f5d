"""Checkpoint loading: heads that may be absent, and every way a file can be bad.

Bad checkpoints are derived from a good one written by transformers, then broken in one
precise way; `bert-cli check` must refuse each with exit status 1 and a message naming the
file and the tensor or key at fault (never a crash, never a read past the file).
"""
import json
import shutil
import struct
import subprocess

import numpy as np
import pytest
import torch

from checkpoints import build_dir, make_checkpoint


def check(model_dir):
    return subprocess.run([str(build_dir() / "bert-cli"), "check", "--model", str(model_dir)],
                          capture_output=True, text=True, timeout=120)


def forward(model_dir, request):
    proc = subprocess.run([str(build_dir() / "bert-cli"), "forward", "--model", str(model_dir)],
                          input=json.dumps(request) + "\n", capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("good") / "ckpt", seed=11, hidden_size=32,
                           num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)


def read_safetensors(path):
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def write_safetensors(path, header, data, header_bytes=None):
    hb = header_bytes if header_bytes is not None else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(hb)) + hb + data)


def variant(good, tmp_path, name):
    dst = tmp_path / name
    shutil.copytree(good, dst)
    return dst


# ---- heads that may be missing -------------------------------------------------------


def test_bert_model_without_heads_loads_and_refuses_heads(tmp_path):
    d = make_checkpoint(tmp_path / "base", arch="base", seed=12, hidden_size=32,
                        num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    proc = check(d)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["mlm"] is False and info["nsp"] is False
    got = forward(d, {"inputs": [{"ids": [101, 103, 102], "mlm_positions": [1]}]})
    assert "masked language modelling is not available in this model" in got["error"]
    got = forward(d, {"inputs": [{"ids": [101, 2000, 102]}], "nsp": True})
    assert "next-sentence prediction is not available in this model" in got["error"]


def test_masked_lm_checkpoint_has_mlm_only_and_matches(tmp_path):
    from transformers import BertForMaskedLM

    d = make_checkpoint(tmp_path / "mlm", arch="masked_lm", seed=13, hidden_size=32,
                        num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    info = json.loads(check(d).stdout)
    assert info["mlm"] is True and info["nsp"] is False
    ids = [101, 7592, 103, 2088, 103, 102]
    got = forward(d, {"inputs": [{"ids": ids, "mlm_positions": [2, 4]}]})
    model = BertForMaskedLM.from_pretrained(d).eval()
    with torch.no_grad():
        ref = model(input_ids=torch.tensor([ids])).logits[0, [2, 4]].numpy()
    assert np.max(np.abs(np.asarray(got["mlm_logits"]) - ref)) <= 1e-4
    got = forward(d, {"inputs": [{"ids": ids}], "nsp": True})
    assert "not available in this model" in got["error"]


def test_tensorflow_style_layernorm_names_load(good, tmp_path):
    """Checkpoints converted from TF name LayerNorm params gamma/beta; transformers accepts them."""
    d = variant(good, tmp_path, "gamma")
    header, data = read_safetensors(d / "model.safetensors")
    renamed = {}
    for k, v in header.items():
        k = k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias",
                                                                     "LayerNorm.beta")
        renamed[k] = v
    write_safetensors(d / "model.safetensors", renamed, data)
    before = forward(good, {"inputs": [{"ids": [101, 103, 102], "mlm_positions": [1]}]})
    after = forward(d, {"inputs": [{"ids": [101, 103, 102], "mlm_positions": [1]}]})
    assert before == after


# ---- bad files ------------------------------------------------------------------------


def expect_refusal(d, *needles):
    proc = check(d)
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    for needle in needles:
        assert needle in proc.stderr, (needle, proc.stderr)
    assert "Sanitizer" not in proc.stderr and "runtime error" not in proc.stderr


def test_missing_config(good, tmp_path):
    d = variant(good, tmp_path, "noconfig")
    (d / "config.json").unlink()
    expect_refusal(d, "config.json", "cannot open")


def test_missing_weights(good, tmp_path):
    d = variant(good, tmp_path, "noweights")
    (d / "model.safetensors").unlink()
    expect_refusal(d, "model.safetensors", "cannot open")


def test_missing_vocab(good, tmp_path):
    d = variant(good, tmp_path, "novocab")
    (d / "vocab.txt").unlink()
    expect_refusal(d, "vocab.txt")


@pytest.mark.parametrize("edit,needles", [
    (lambda c: c.pop("hidden_size"), ["config.json", "'hidden_size'"]),
    (lambda c: c.update(hidden_size="32"), ["config.json", "'hidden_size'", "integer"]),
    (lambda c: c.update(num_hidden_layers=-1), ["config.json", "'num_hidden_layers'"]),
    (lambda c: c.update(num_attention_heads=3), ["config.json", "'num_attention_heads'"]),
    (lambda c: c.update(hidden_act="mish"), ["config.json", "'hidden_act'", "mish"]),
    (lambda c: c.update(layer_norm_eps="tiny"), ["config.json", "'layer_norm_eps'"]),
    (lambda c: c.update(model_type="roberta"), ["config.json", "'model_type'"]),
    (lambda c: c.update(position_embedding_type="relative_key"),
     ["config.json", "'position_embedding_type'"]),
    (lambda c: c.update(tie_word_embeddings="yes"), ["config.json", "'tie_word_embeddings'"]),
])
def test_bad_config_values(good, tmp_path, edit, needles):
    d = variant(good, tmp_path, "cfg")
    cfg = json.loads((d / "config.json").read_text())
    edit(cfg)
    (d / "config.json").write_text(json.dumps(cfg))
    expect_refusal(d, *needles)


def test_config_not_json(good, tmp_path):
    d = variant(good, tmp_path, "cfgjson")
    (d / "config.json").write_text('{"hidden_size": 32,')
    expect_refusal(d, "config.json", "invalid JSON")


def test_config_disagrees_with_tensor_shapes(good, tmp_path):
    d = variant(good, tmp_path, "shape")
    cfg = json.loads((d / "config.json").read_text())
    cfg["intermediate_size"] = 65
    (d / "config.json").write_text(json.dumps(cfg))
    expect_refusal(d, "model.safetensors", "bert.encoder.layer.0.intermediate.dense.weight",
                   "[64, 32]", "[65, 32]")


def test_truncated_file(good, tmp_path):
    d = variant(good, tmp_path, "trunc")
    raw = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(raw[: len(raw) - 1000])
    expect_refusal(d, "model.safetensors", "run past the end", "truncated")


@pytest.mark.parametrize("size", [0, 5])
def test_tiny_file(good, tmp_path, size):
    d = variant(good, tmp_path, "tiny")
    (d / "model.safetensors").write_bytes(b"\x01" * size)
    expect_refusal(d, "model.safetensors", "too short")


def test_absurd_header_length(good, tmp_path):
    d = variant(good, tmp_path, "hdr")
    raw = bytearray((d / "model.safetensors").read_bytes())
    raw[:8] = struct.pack("<Q", 2**63 + 12345)
    (d / "model.safetensors").write_bytes(bytes(raw))
    expect_refusal(d, "model.safetensors", "header length")


def test_header_not_json(good, tmp_path):
    d = variant(good, tmp_path, "hdrjson")
    _, data = read_safetensors(d / "model.safetensors")
    write_safetensors(d / "model.safetensors", None, data, header_bytes=b'{"a": [1, 2')
    expect_refusal(d, "model.safetensors", "header is not a JSON object")


def _edit_tensor(d, name, fn):
    header, data = read_safetensors(d / "model.safetensors")
    fn(header[name])
    write_safetensors(d / "model.safetensors", header, data)


def test_offsets_out_of_range(good, tmp_path):
    d = variant(good, tmp_path, "offs")
    name = "bert.pooler.dense.bias"
    _edit_tensor(d, name, lambda t: t.update(data_offsets=[10**12, 10**12 + 128]))
    expect_refusal(d, "model.safetensors", name, "data_offsets")


def test_offsets_overlapping(good, tmp_path):
    d = variant(good, tmp_path, "overlap")
    header, data = read_safetensors(d / "model.safetensors")
    a, b = "bert.pooler.dense.bias", "cls.seq_relationship.bias"
    # b claims the first bytes of a, keeping its own length consistent with its shape
    start = header[a]["data_offsets"][0]
    header[b]["data_offsets"] = [start, start + 8]
    write_safetensors(d / "model.safetensors", header, data)
    expect_refusal(d, "model.safetensors", "overlaps")


def test_offsets_disagree_with_shape(good, tmp_path):
    d = variant(good, tmp_path, "lenshape")
    name = "bert.embeddings.LayerNorm.weight"
    _edit_tensor(d, name, lambda t: t.update(shape=[33]))
    expect_refusal(d, "model.safetensors", name, "needs")


def test_unknown_dtype(good, tmp_path):
    d = variant(good, tmp_path, "dtype")
    name = "bert.embeddings.LayerNorm.bias"
    _edit_tensor(d, name, lambda t: t.update(dtype="F17"))
    expect_refusal(d, "model.safetensors", name, "unknown dtype 'F17'")


def test_integer_weights_refused(good, tmp_path):
    d = variant(good, tmp_path, "intw")
    name = "bert.embeddings.LayerNorm.bias"
    _edit_tensor(d, name, lambda t: t.update(dtype="I32"))
    expect_refusal(d, "model.safetensors", name, "dtype I32")


def test_missing_tensor(good, tmp_path):
    d = variant(good, tmp_path, "missing")
    header, data = read_safetensors(d / "model.safetensors")
    del header["bert.encoder.layer.0.attention.self.key.bias"]
    write_safetensors(d / "model.safetensors", header, data)
    expect_refusal(d, "model.safetensors", "missing tensor",
                   "bert.encoder.layer.0.attention.self.key.bias")


def test_negative_shape(good, tmp_path):
    d = variant(good, tmp_path, "negshape")
    name = "bert.pooler.dense.bias"
    _edit_tensor(d, name, lambda t: t.update(shape=[-32]))
    expect_refusal(d, "model.safetensors", name, "shape[0]")


def test_vocab_larger_than_config(good, tmp_path):
    d = variant(good, tmp_path, "bigvocab")
    with open(d / "vocab.txt", "a") as f:
        f.write("extra_token_a\nextra_token_b\n")
    expect_refusal(d, "vocab.txt", "vocab_size")
