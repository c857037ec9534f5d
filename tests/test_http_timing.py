"""Where a request's time goes (issue 14, item 5): every answer a worker produced carries
X-Queue-Time, X-Tokenization-Time, X-Inference-Time, X-Serialization-Time, X-Compute-Time and
X-Total-Time (milliseconds, as text-embeddings-inference names them), and /metrics has the same
split as bert_request_stage_seconds{stage}. What is asserted is structure, not speed: the parts
are non-negative, compute is their sum, and nothing exceeds the total the client saw."""
import re
import time

import pytest
import requests

from http_helpers import Server, default_config, shared_checkpoint

STAGES = ("queue", "tokenization", "inference", "serialization")
HEADERS = ("X-Queue-Time", "X-Tokenization-Time", "X-Inference-Time", "X-Serialization-Time",
           "X-Compute-Time", "X-Total-Time")


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    model_dir = shared_checkpoint(tmp_path_factory)
    with Server(tmp_path_factory.mktemp("timing"), model_dir, default_config(model_dir)) as s:
        yield s


def stage_counts(srv):
    text = requests.get(srv.url + "/metrics", timeout=10).text
    out = {}
    for st in STAGES:
        m = re.search(rf'^bert_request_stage_seconds_count{{stage="{st}"}} (\d+)$', text, re.M)
        assert m, st
        out[st] = int(m.group(1))
    return out


@pytest.mark.parametrize("path,body", [
    ("/v1/fill-mask", {"inputs": "The capital of France is [MASK]."}),
    ("/v1/next-sentence", {"inputs": {"text": "It rained.", "text_pair": "The road was wet."}}),
    ("/v1/tokenize", {"inputs": "Hello, world!"}),
    ("/v1/score", {"inputs": "The cat sat on the mat."}),
    ("/v1/decode", {"ids": [101, 7592, 102]}),
])
def test_worker_answers_carry_their_timing(srv, path, body):
    before = stage_counts(srv)
    t0 = time.monotonic()
    r = requests.post(srv.url + path, json=body, timeout=30)
    wall_ms = (time.monotonic() - t0) * 1000
    assert r.status_code == 200, r.text
    v = {h: float(r.headers[h]) for h in HEADERS}
    assert all(x >= 0 for x in v.values()), v
    parts = v["X-Tokenization-Time"] + v["X-Inference-Time"] + v["X-Serialization-Time"]
    assert v["X-Compute-Time"] == pytest.approx(parts, abs=0.002), v
    assert v["X-Queue-Time"] + v["X-Compute-Time"] <= v["X-Total-Time"] + 0.002, v
    assert v["X-Total-Time"] <= wall_ms, (v, wall_ms)
    after = stage_counts(srv)
    assert all(after[st] == before[st] + 1 for st in STAGES), (before, after)


def test_refusals_before_a_worker_carry_no_timing(srv):
    r = requests.post(srv.url + "/v1/fill-mask", data=b"{not json",
                      headers={"Content-Type": "application/json"}, timeout=10)
    assert r.status_code == 400
    assert not any(h in r.headers for h in HEADERS), dict(r.headers)


def test_a_worker_refusal_carries_its_timing(srv):
    r = requests.post(srv.url + "/v1/fill-mask", json={"inputs": "no mask here"}, timeout=10)
    assert r.status_code == 422
    assert float(r.headers["X-Queue-Time"]) >= 0
    assert float(r.headers["X-Inference-Time"]) == 0
