"""Runs the real build/bert-server for HTTP tests.

A server is started on 127.0.0.1 with port 0 (the kernel picks a free port; the server's
"ready" log line names the URL), from a YAML config written into the test's tmp dir. Its
stderr (JSON log lines) is collected by a reader thread; start-up is awaited on events and
on /readyz polled against a deadline, never on fixed sleeps.
"""
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import requests
import yaml

from checkpoints import REPO, build_dir, make_checkpoint

SERVER_BIN = "bert-server"


def server_bin():
    return build_dir() / SERVER_BIN


def plain_server_bin():
    """The uninstrumented server, even while the suite runs against the ASan build
    (make test-san sets BERT_PLAIN_BUILD_DIR): memory figures, valgrind and strace
    measure the binary users run, and ASan's quarantine, shadow memory and LeakSanitizer
    (which refuses to run under ptrace) would measure something else."""
    return Path(os.environ.get("BERT_PLAIN_BUILD_DIR", build_dir())) / SERVER_BIN


def default_config(model_dir, **overrides):
    """The shipped config/default.yaml with test-friendly values, then overrides given
    as {"section": {"key": value}}."""
    cfg = yaml.safe_load((REPO / "config" / "default.yaml").read_text())
    cfg["server"]["port"] = 0
    cfg["model"]["dir"] = str(model_dir)
    cfg["shutdown"]["grace_period_s"] = 20
    for section, values in overrides.items():
        cfg.setdefault(section, {}).update(values)
    return cfg


class Server:
    def __init__(self, tmp_path, model_dir, config=None, args=(), env=None, name="server",
                 cwd=None, binary=None):
        self.tmp_path = Path(tmp_path)
        self.config_path = self.tmp_path / f"{name}.yaml"
        cfg = config if config is not None else default_config(model_dir)
        self.config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        self.args = [str(binary or server_bin()), "--config", str(self.config_path), *args]
        self.env = dict(os.environ)
        self.env.update(env or {})
        self.lines = []  # raw stderr lines
        self.ready = threading.Event()
        self.exited = threading.Event()
        self.url = None
        self.proc = None
        self.cwd = cwd
        self._lock = threading.Lock()

    # ---- process ----
    def start(self, wait=True, timeout=60):
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=self.env, text=True, errors="replace", cwd=self.cwd)
        threading.Thread(target=self._read_stderr, daemon=True).start()
        if wait:
            self.wait_ready(timeout)
        return self

    def _read_stderr(self):
        for line in self.proc.stderr:
            with self._lock:
                self.lines.append(line.rstrip("\n"))
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and rec.get("msg") == "ready":
                self.url = rec["url"]
                self.ready.set()
        self.exited.set()

    def wait_ready(self, timeout=60):
        deadline = time.monotonic() + timeout
        while not self.ready.wait(0.05):
            if self.proc.poll() is not None:
                self.exited.wait(5)
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.stderr()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not ready after {timeout}s:\n{self.stderr()}")
        wait_until(lambda: self.get("/readyz").status_code == 200, timeout=deadline - time.monotonic())
        return self

    def stop(self, sig=signal.SIGTERM, timeout=60):
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def stderr(self):
        with self._lock:
            return "\n".join(self.lines)

    def log_records(self):
        out = []
        with self._lock:
            lines = list(self.lines)
        for line in lines:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict):
                out.append(rec)
        return out

    def rss_kib(self):
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    # ---- HTTP ----
    @property
    def port(self):
        return int(self.url.rsplit(":", 1)[1])

    def get(self, path, **kw):
        kw.setdefault("timeout", 30)
        return requests.get(self.url + path, **kw)

    def post(self, path, body=None, raw=None, headers=None, **kw):
        kw.setdefault("timeout", 60)
        h = {"Content-Type": "application/json"}
        h.update(headers or {})
        data = raw if raw is not None else json.dumps(body)
        return requests.post(self.url + path, data=data, headers=h, **kw)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def metric(srv, name):
    """The value of an unlabelled /metrics series."""
    for line in srv.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise KeyError(name)


def wait_until(pred, timeout=30, interval=0.02):
    """Polls pred() until it is truthy or the deadline passes (then raises)."""
    deadline = time.monotonic() + max(timeout, 0.1)
    last_exc = None
    while time.monotonic() < deadline:
        try:
            if pred():
                return True
        except requests.RequestException as e:  # not listening yet
            last_exc = e
        time.sleep(interval)  # polling interval, not synchronisation
    raise AssertionError(f"condition not met within {timeout:.1f}s (last error: {last_exc})")


def small_checkpoint(root, **kw):
    """The HTTP tests' model: 2 layers, hidden 64, the real bert-base-uncased vocab."""
    return make_checkpoint(root, seed=kw.pop("seed", 7), **kw)


def error_of(resp):
    body = resp.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message"}, body
    return body["error"]["code"]


def shared_checkpoint(tmp_path_factory, name="http_model", **kw):
    """One checkpoint per pytest session and name, shared by the HTTP test modules."""
    root = tmp_path_factory.getbasetemp() / name
    if not (root / "model.safetensors").exists():
        small_checkpoint(root, **kw)
    return root
