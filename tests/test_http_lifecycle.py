"""Start-up and shutdown of the real bert-server: settings errors, model errors, precedence
of file / environment / flags, and the SIGTERM drain."""
import json
import os
import signal
import subprocess
import threading
from pathlib import Path

import pytest
import requests
import yaml

from http_helpers import (Server, default_config, error_of, metric, server_bin,
                          shared_checkpoint, wait_until)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return shared_checkpoint(tmp_path_factory)


def run_server(args, env=None, timeout=60):
    import os

    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([str(server_bin()), *args], capture_output=True, text=True,
                          timeout=timeout, env=e)


# ---- settings ----


def write_yaml(path, text):
    path.write_text(text)
    return str(path)


BASE = """server:
  listen: 127.0.0.1
  port: 0
workers:
  count: 2
model:
  dir: {model}
"""


@pytest.mark.parametrize("snippet,line,key,why", [
    ("workers:\n  count: 2\n  bogus: 1\n", 3, "workers.bogus", "unknown key"),
    ("workers:\n  count: two\n", 2, "workers.count", "integer"),
    ("workers:\n  count: \"2\"\n", 2, "workers.count", "integer"),
    ("workers:\n  count: 0\n", 2, "workers.count", "[1, 256]"),
    ("workers:\n  threads: many\n", 2, "workers.threads", "must be auto or an integer in [1, 1024]"),
    ("workers:\n  threads: 0\n", 2, "workers.threads", "[1, 1024]"),
    ("workers:\n  threads: \"auto\"\n", 2, "workers.threads", "auto or an integer"),
    ("server:\n  port: 70000\n", 2, "server.port", "[0, 65535]"),
    ("server:\n  listen: example.com\n", 2, "server.listen", "IP"),
    ("logging:\n  level: loud\n", 2, "logging.level", "debug, info, warn, error"),
    ("limits:\n  max_top_k: [1, 2]\n", 2, "limits.max_top_k", "single value"),
    ("\n\nmodel:\n  dir: x\n  max_sequence_length: 1\n", 5, "model.max_sequence_length", "[2,"),
    ("nonsense_section:\n  a: 1\n", 1, "nonsense_section", "unknown section"),
])
def test_config_errors_name_file_line_key(tmp_path, snippet, line, key, why):
    path = write_yaml(tmp_path / "bad.yaml", snippet)
    p = run_server(["--config", path])
    assert p.returncode == 2, p.stderr
    first = p.stderr.strip().splitlines()[0]
    assert first.startswith(f"{path}:{line}: key '{key}':"), first
    assert why in first, first


def test_config_yaml_syntax_error(tmp_path):
    path = write_yaml(tmp_path / "bad.yaml", "server:\n  port: [1,\n")
    p = run_server(["--config", path])
    assert p.returncode == 2
    assert p.stderr.startswith(f"{path}:") and "YAML syntax error" in p.stderr


def test_config_missing_file(tmp_path):
    p = run_server(["--config", str(tmp_path / "absent.yaml")])
    assert p.returncode == 2 and "absent.yaml" in p.stderr


@pytest.mark.parametrize("env,args,text", [
    ({"BERT_WORKERS": "0"}, [], "BERT_WORKERS: key 'workers.count'"),
    ({"BERT_PORT": "http"}, [], "BERT_PORT: key 'server.port'"),
    ({"BERT_MAX_BODY_BYTES": "-5"}, [], "BERT_MAX_BODY_BYTES: key 'server.max_body_bytes'"),
    ({"BERT_LOG_LEVEL": "chatty"}, [], "BERT_LOG_LEVEL: key 'logging.level'"),
    ({}, ["--workers", "many"], "--workers: key 'workers.count'"),
    ({"BERT_THREADS": "0"}, [], "BERT_THREADS: key 'workers.threads'"),
    ({}, ["--threads", "all"], "--threads: key 'workers.threads'"),
    ({}, ["--port"], "--port: needs a value"),
    ({}, ["--frobnicate"], "--frobnicate: unknown argument"),
    ({}, ["--auth-token-file", "/nonexistent/token"], "--auth-token-file"),
])
def test_env_and_flag_errors(tmp_path, model_dir, env, args, text):
    path = write_yaml(tmp_path / "ok.yaml", BASE.format(model=model_dir))
    p = run_server(["--config", path, *args], env=env)
    assert p.returncode == 2, p.stderr
    assert text in p.stderr


def test_help_and_version():
    p = run_server(["--help"])
    assert p.returncode == 0 and "--config FILE" in p.stdout and "BERT_MODEL_DIR" in p.stdout
    p = run_server(["--version"])
    assert p.returncode == 0 and p.stdout.startswith("bert-server ")


def test_default_config_file_is_valid(tmp_path, model_dir):
    """config/default.yaml as shipped, with the model and port overridden by flags."""
    from checkpoints import REPO

    srv = Server(tmp_path, model_dir, name="d")
    srv.args = [str(server_bin()), "--config", str(REPO / "config" / "default.yaml"),
                "--port", "0", "--model", str(model_dir)]
    with srv:
        assert srv.get("/readyz").status_code == 200
        assert srv.stop() == 0


def _ready_record(srv):
    return next(r for r in srv.log_records() if r.get("msg") == "ready")


@pytest.mark.parametrize("cpus", [[0], [0, 1]])
def test_threads_auto_follow_the_cpus_the_process_may_use(tmp_path, model_dir, cpus):
    """workers.threads auto (the default) = CPUs in the affinity mask (capped by a cgroup quota)
    / workers, with OpenBLAS single-threaded under them; an explicit value or BERT_THREADS wins."""
    if not set(cpus) <= os.sched_getaffinity(0):
        pytest.skip(f"this machine has no CPUs {cpus}")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    srv = Server(tmp_path, model_dir, name=f"auto{len(cpus)}")
    srv.env = env
    srv.args = ["taskset", "-c", ",".join(map(str, cpus)), *srv.args]
    with srv:
        rec = _ready_record(srv)
        assert (rec["workers"], rec["threads"], rec["cpus"], rec["blas_threads"]) == \
            (1, len(cpus), len(cpus), 1), rec
        assert srv.post("/v1/fill-mask", {"inputs": "a [MASK] b"}).status_code == 200
        assert srv.stop() == 0
    srv = Server(tmp_path, model_dir, name=f"explicit{len(cpus)}", env={"BERT_THREADS": "3"})
    srv.env.pop("OPENBLAS_NUM_THREADS", None)
    with srv:
        assert _ready_record(srv)["threads"] == 3
        assert srv.post("/v1/fill-mask", {"inputs": "a [MASK] b"}).status_code == 200
        assert srv.stop() == 0


def test_precedence_file_env_flags(tmp_path, model_dir):
    cfg = default_config(model_dir, workers={"count": 5}, logging={"level": "info"},
                         server={"max_body_bytes": 100000})
    # env beats the file, the flag beats env
    srv = Server(tmp_path, model_dir, cfg, args=["--workers", "3"],
                 env={"BERT_WORKERS": "4", "BERT_MAX_BODY_BYTES": "200", "BERT_LOG_LEVEL": "warn"})
    with srv:
        metrics = srv.get("/metrics").text
        assert "\nbert_workers 3\n" in metrics
        r = srv.post("/v1/fill-mask", {"inputs": "a [MASK] " + "b " * 100})
        assert r.status_code == 413  # BERT_MAX_BODY_BYTES=200
        assert srv.stop() == 0
    # BERT_LOG_LEVEL=warn: no per-request lines (the ready line is always written)
    assert not [r for r in srv.log_records() if r.get("msg") == "request"]


def test_log_level_flag_beats_env(tmp_path, model_dir):
    srv = Server(tmp_path, model_dir, args=["--log-level", "debug"], env={"BERT_LOG_LEVEL": "error"})
    with srv:
        srv.post("/v1/fill-mask", {"inputs": ["a [MASK]", "b [MASK]"]})
        wait_until(lambda: any(r.get("msg") == "request" and r.get("path") == "/v1/fill-mask"
                               for r in srv.log_records()), timeout=10)
        assert any(r["level"] == "debug" for r in srv.log_records())
        assert srv.stop() == 0


def test_model_dir_from_env(tmp_path, model_dir):
    cfg = default_config("does/not/exist")
    srv = Server(tmp_path, model_dir, cfg, env={"BERT_MODEL_DIR": str(model_dir)})
    with srv:
        assert srv.get("/v1/models").json()["data"][0]["id"] == model_dir.name
        assert srv.stop() == 0


def test_relative_model_dir_resolves_against_cwd(tmp_path, model_dir):
    import os

    rel = os.path.relpath(model_dir, tmp_path)
    assert not os.path.isabs(rel)
    srv = Server(tmp_path, model_dir, default_config(rel), cwd=tmp_path)
    with srv:
        assert srv.get("/v1/models").json()["data"][0]["id"] == model_dir.name
        assert srv.stop() == 0


# ---- model load failures ----


def test_model_missing_dir(tmp_path):
    path = write_yaml(tmp_path / "c.yaml", BASE.format(model=tmp_path / "nope"))
    p = run_server(["--config", path])
    assert p.returncode == 1
    assert "config.json" in p.stderr, p.stderr


def test_model_bad_config_key(tmp_path, model_dir):
    import shutil

    bad = tmp_path / "bad_model"
    shutil.copytree(model_dir, bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["hidden_size"] = "sixty-four"
    (bad / "config.json").write_text(json.dumps(cfg))
    path = write_yaml(tmp_path / "c.yaml", BASE.format(model=bad))
    p = run_server(["--config", path])
    assert p.returncode == 1
    assert "config.json" in p.stderr and "hidden_size" in p.stderr, p.stderr


def test_model_truncated_safetensors(tmp_path, model_dir):
    import shutil

    bad = tmp_path / "bad_model"
    shutil.copytree(model_dir, bad)
    data = (bad / "model.safetensors").read_bytes()
    (bad / "model.safetensors").write_bytes(data[: len(data) // 2])
    path = write_yaml(tmp_path / "c.yaml", BASE.format(model=bad))
    p = run_server(["--config", path])
    assert p.returncode == 1
    assert "model.safetensors" in p.stderr, p.stderr


def test_port_in_use(tmp_path, model_dir):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        path = write_yaml(tmp_path / "c.yaml", BASE.format(model=model_dir))
        p = run_server(["--config", path, "--port", str(port)])
    assert p.returncode == 1
    assert f"port {port}" in p.stderr


# ---- SIGTERM drain ----

# About a second of work per request on the wider model below, so that requests are
# still queued or running when the signal arrives (observed through the in-flight gauge).
SLOW = {"inputs": ["[MASK] " + "token " * 500] * 8, "parameters": {"top_k": 100}}


@pytest.fixture(scope="module")
def slow_model_dir(tmp_path_factory):
    return shared_checkpoint(tmp_path_factory, name="http_slow_model", hidden_size=256,
                             num_hidden_layers=4, intermediate_size=1024,
                             max_position_embeddings=512)


# int8-checked with a gap no decision reaches: every input also takes the float32 pass, whose
# jobs are held past the batch's first forward
CHECKED_ALWAYS = {"compute": "int8-checked", "recheck_logit_gap": 1000}


@pytest.mark.parametrize("sig,model", [(signal.SIGTERM, {}), (signal.SIGINT, {}),
                                       (signal.SIGTERM, CHECKED_ALWAYS)],
                         ids=["SIGTERM", "SIGINT", "SIGTERM-int8-checked"])
def test_drain_on_signal(tmp_path, slow_model_dir, sig, model):
    cfg = default_config(slow_model_dir, workers={"count": 1, "batch_max_tokens": 128},
                         shutdown={"grace_period_s": 120}, model=model)
    srv = Server(tmp_path, slow_model_dir, cfg)
    with srv:
        n = 4
        results = [None] * n

        def one(i):
            try:
                r = srv.post("/v1/fill-mask", SLOW, timeout=120)
                results[i] = (r.status_code, r.json())
            except requests.RequestException as e:
                results[i] = (None, str(e))

        threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        # all six accepted (queued or running) before the signal
        wait_until(lambda: metric(srv, "bert_requests_in_flight") == n, timeout=30)
        srv.proc.send_signal(sig)
        wait_until(lambda: srv.get("/readyz").status_code == 503 or srv.proc.poll() is not None,
                   timeout=30)
        # new work is refused while the accepted requests finish
        try:
            r = srv.post("/v1/fill-mask", {"inputs": "a [MASK]"}, timeout=10)
            assert r.status_code == 503 and error_of(r) == "draining"
            assert srv.get("/readyz").json() == {"status": "draining"}
            assert srv.get("/healthz").status_code == 200
        except requests.ConnectionError:
            pass  # already stopped listening: also a refusal
        for t in threads:
            t.join()
        rc = srv.proc.wait(60)
        assert rc == 0, srv.stderr()
        assert [s for s, _ in results] == [200] * n, results
        for _, body in results:
            assert len(body) == 8 and len(body[0]) == 100
        msgs = [r.get("msg") for r in srv.log_records()]
        assert "draining" in msgs and "stopped" in msgs
        stopped = [r for r in srv.log_records() if r.get("msg") == "stopped"][0]
        assert stopped["unanswered"] == 0


def test_grace_period_expiry_exits_at_once(tmp_path, slow_model_dir):
    """grace_period_s 0: the process exits at the signal with status 3 and reports the work it
    abandoned; clients get their answer, a 503, or a closed connection, never a hang."""
    cfg = default_config(slow_model_dir, workers={"count": 1, "batch_max_tokens": 128},
                         shutdown={"grace_period_s": 0})
    srv = Server(tmp_path, slow_model_dir, cfg)
    with srv:
        n = 4
        results = [None] * n

        def one(i):
            try:
                r = srv.post("/v1/fill-mask", SLOW, timeout=120)
                results[i] = r.status_code
            except requests.RequestException:
                results[i] = None

        threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        wait_until(lambda: metric(srv, "bert_requests_in_flight") == n, timeout=30)
        srv.proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join()
        assert srv.proc.wait(60) == 3, srv.stderr()
        # nobody is left hanging: each got its answer, a 503 or a closed connection
        assert set(results) <= {200, 503, None}, results
        stopped = [r for r in srv.log_records() if r.get("msg") == "stopped"][0]
        assert stopped["unanswered"] == results.count(None), (stopped, results)
        assert stopped["abandoned"] > 0


def test_readyz_503_while_loading(tmp_path, model_dir):
    """The server listens before the model loads. strace holds the loader's open of
    config.json (a FIFO, which did this before, is now refused at once: core/file_io.c),
    so loading waits, deterministically, until the test ends strace; the kernel then
    detaches the server, which finishes loading."""
    import os
    import shutil
    import signal

    strace = shutil.which("strace")
    assert strace, "strace is in the Makefile's TEST_PACKAGES"
    srv = Server(tmp_path, model_dir, default_config(model_dir))
    srv.args = [strace, "-f", "-qq", "-o", "/dev/null", "-e", "trace=openat",
                "-P", f"{model_dir}/config.json", "-e", "inject=openat:delay_enter=600s",
                *srv.args]
    srv.start(wait=False)
    server_pid = None
    try:
        def loading_line():
            return [r for r in srv.log_records() if r.get("msg") == "loading model"]

        wait_until(loading_line, timeout=30)
        children = Path(f"/proc/{srv.proc.pid}/task/{srv.proc.pid}/children").read_text()
        server_pid = int(children.split()[0])
        srv.url = f"http://127.0.0.1:{loading_line()[0]['port']}"
        r = srv.get("/readyz")
        assert r.status_code == 503 and r.json() == {"status": "loading"}
        assert srv.get("/healthz").status_code == 200
        r = srv.post("/v1/fill-mask", {"inputs": "a [MASK]"})
        assert r.status_code == 503 and error_of(r) == "loading"
        assert r.headers["Retry-After"] == "1"
        assert srv.get("/v1/models").status_code == 503
        assert "\nbert_ready 0\n" in srv.get("/metrics").text
    finally:
        srv.proc.kill()  # strace: the held open of config.json goes ahead
        srv.proc.wait(30)
    try:
        wait_until(lambda: srv.get("/readyz").status_code == 200, timeout=60)
        assert srv.post("/v1/fill-mask", {"inputs": "a [MASK]"}).status_code == 200
    finally:
        os.kill(server_pid, signal.SIGTERM)
        wait_until(lambda: _gone_or_zombie(server_pid), timeout=60)


def _gone_or_zombie(pid):
    """Once strace is gone the server is no child of ours: it may stay a zombie here."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.parametrize("model", [{}, CHECKED_ALWAYS], ids=["fp32", "int8-checked"])
def test_clients_vanishing_mid_request(tmp_path, slow_model_dir, model):
    """Clients that hang up while their request is queued or running, or halfway through
    sending a body, cost the server nothing but the work: it keeps answering, and shuts
    down cleanly."""
    import socket

    cfg = default_config(slow_model_dir, workers={"count": 1, "batch_max_tokens": 128},
                         model=model)
    srv = Server(tmp_path, slow_model_dir, cfg)
    with srv:
        body = json.dumps(SLOW).encode()
        head = (f"POST /v1/fill-mask HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        socks = []
        for _ in range(4):  # complete requests, abandoned before the answer
            s = socket.create_connection(("127.0.0.1", srv.port))
            s.sendall(head + body)
            socks.append(s)
        half = socket.create_connection(("127.0.0.1", srv.port))
        half.sendall(head + body[: len(body) // 2])  # body cut short
        wait_until(lambda: metric(srv, "bert_requests_in_flight") >= 4, timeout=30)
        for s in socks:
            s.close()
        half.close()
        # the abandoned work drains; the server stays healthy and correct
        wait_until(lambda: metric(srv, "bert_requests_in_flight") == 0, timeout=120)
        r = srv.post("/v1/fill-mask", {"inputs": "Paris is the [MASK] of France."})
        assert r.status_code == 200 and len(r.json()) == 5
        assert srv.stop() == 0, srv.stderr()
