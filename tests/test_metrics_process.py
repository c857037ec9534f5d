"""Observability (issue 14 item 5): bert_build_info, the standard process_* metrics, the
per-request token histogram, all read from the real server's /metrics and checked against
what the kernel says about the same process."""
import os
import subprocess
import time

import pytest
import requests

from http_helpers import Server, default_config, server_bin, shared_checkpoint


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return shared_checkpoint(tmp_path_factory)


def samples(srv):
    r = srv.get("/metrics")
    assert r.status_code == 200
    out = {}
    for line in r.text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out, r.text


def test_build_info(tmp_path, model_dir):
    version = subprocess.run([str(server_bin()), "--version"], capture_output=True,
                             text=True).stdout.split()[1]
    with Server(tmp_path, model_dir) as srv:
        s, text = samples(srv)
        info = [k for k in s if k.startswith("bert_build_info{")]
        assert len(info) == 1 and s[info[0]] == 1
        assert f'version="{version}"' in info[0]
        for label in ("compiler=", "libmicrohttpd=", "openblas="):
            assert label in info[0]
        assert 'compiler=""' not in info[0] and 'libmicrohttpd=""' not in info[0]
        assert "# TYPE bert_build_info gauge" in text
        assert srv.stop() == 0


def test_process_metrics_match_the_kernel(tmp_path, model_dir):
    t_before = time.time()
    with Server(tmp_path, model_dir) as srv:
        pid = srv.proc.pid
        s, text = samples(srv)
        for name, kind in [("process_cpu_seconds_total", "counter"),
                           ("process_resident_memory_bytes", "gauge"),
                           ("process_virtual_memory_bytes", "gauge"),
                           ("process_open_fds", "gauge"), ("process_max_fds", "gauge"),
                           ("process_start_time_seconds", "gauge"),
                           ("process_threads", "gauge")]:
            assert f"# TYPE {name} {kind}" in text, name
        rss = srv.rss_kib() * 1024
        assert 0.8 * rss <= s["process_resident_memory_bytes"] <= 1.25 * rss
        assert s["process_virtual_memory_bytes"] >= s["process_resident_memory_bytes"]
        # the server is idle between requests: its fds and threads hold still
        assert abs(s["process_open_fds"] - len(os.listdir(f"/proc/{pid}/fd"))) <= 2
        assert s["process_threads"] == len(os.listdir(f"/proc/{pid}/task"))
        soft = int(open(f"/proc/{pid}/limits").read().split("Max open files")[1].split()[0])
        assert s["process_max_fds"] == soft
        assert t_before - 2 <= s["process_start_time_seconds"] <= time.time()
        cpu0 = s["process_cpu_seconds_total"]
        for _ in range(20):
            assert srv.post("/v1/fill-mask", {"inputs": "the [MASK] sat on the mat."}).ok
        s2, _ = samples(srv)
        assert s2["process_cpu_seconds_total"] >= cpu0
        assert srv.stop() == 0


def test_request_tokens_histogram(tmp_path, model_dir):
    cfg = default_config(model_dir, server={"cors_allow_origin": "*"})
    with Server(tmp_path, model_dir, config=cfg) as srv:
        before, _ = samples(srv)
        r = srv.post("/v1/tokenize", {"inputs": ["hello world", "a b c d e"]})
        assert r.status_code == 200
        n = sum(len(x["tokens"]) for x in r.json())
        assert srv.post("/v1/tokenize", {"inputs": 5}).status_code == 400  # not counted
        after, text = samples(srv)
        key = 'bert_request_tokens_{}{{route="/v1/tokenize"}}'
        assert after[key.format("count")] - before[key.format("count")] == 1
        assert after[key.format("sum")] - before[key.format("sum")] == n
        # the request with n tokens falls in the first bucket whose bound is >= n
        le = [4, 8, 16, 32]
        first = next(b for b in le if b >= n)
        b = 'bert_request_tokens_bucket{{route="/v1/tokenize",le="{}"}}'
        assert after[b.format(first)] - before[b.format(first)] == 1
        smaller = [x for x in le if x < n]
        for x in smaller:
            assert after[b.format(x)] == before[b.format(x)]
        assert "# TYPE bert_request_tokens histogram" in text
        # a CORS preflight is counted under its own status
        assert requests.options(srv.url + "/v1/tokenize", timeout=10).status_code == 204
        after, _ = samples(srv)
        assert after['bert_requests_total{route="/v1/tokenize",status="204"}'] == 1
        assert srv.stop() == 0
