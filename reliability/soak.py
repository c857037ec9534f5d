#!/usr/bin/env python3
"""Load + soak: drives a real bert-server at saturation on loopback and watches its memory.

    python3 reliability/soak.py [--duration 300] [--connections 64] [--model models/default]

Starts build/bert-server (config/default.yaml, port 0, 127.0.0.1) and runs wrk with
reliability/mix.lua against it: a fixed rotation of single and batched fill-mask,
next-sentence and tokenize requests over keep-alive connections. VmRSS is read from /proc once a
second. When wrk ends the server gets SIGTERM and must exit 0.

It prints one JSON object (and writes it with --out) and exits 1 if any of these fail:
  * every answer is 200, or 503 (the documented backpressure when the queue is full);
  * no socket errors (connect/read/write/timeout) and every 200 has a JSON body;
  * RSS growth from the reference sample (60 s in, or half the run if shorter) to the
    last sample is under --max-rss-growth (5 %);
  * the server exits 0 after SIGTERM.
tests/test_reliability.py runs a 20-second version of this; docs/RELIABILITY.md quotes a 5-minute
run.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from http_helpers import Server, default_config, plain_server_bin  # noqa: E402

MIX = Path(__file__).resolve().parent / "mix.lua"


def rss_kib(pid):
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmRSS:\s+(\d+) kB", text, re.M).group(1))


def run_soak(duration=300, connections=64, threads=2, model=None, overrides=None, tmp=None,
             max_rss_growth=0.05, log=print):
    """Runs one soak and returns the result dict; result["problems"] lists every failed check."""
    model = Path(model or REPO / "models" / "default").resolve()
    tmp = Path(tmp or tempfile.mkdtemp(prefix="soak-"))
    cfg = default_config(model, **(overrides or {}))
    wrk = shutil.which("wrk")
    if not wrk:
        raise SystemExit("wrk is not installed (make deps-test-system)")
    srv = Server(tmp, model, config=cfg, name="soak", binary=plain_server_bin()).start()
    samples = []  # (seconds since load began, VmRSS KiB)
    try:
        idle_rss = rss_kib(srv.proc.pid)
        env = dict(os.environ, SOAK_TOKEN=cfg["server"].get("auth_token") or "")
        cmd = [wrk, f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--timeout", "10s",
               "-s", str(MIX), srv.url]
        log(f"soak: {' '.join(cmd)}")
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=env)
        next_sample = t0 + 1.0
        while proc.poll() is None:
            now = time.monotonic()
            if now >= next_sample:
                samples.append((round(now - t0, 2), rss_kib(srv.proc.pid)))
                next_sample += 1.0
            try:
                proc.wait(timeout=max(0.0, next_sample - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        out = proc.stdout.read()
        alive_after = srv.proc.poll() is None
        stop_t0 = time.monotonic()
        rc = srv.stop(timeout=cfg["shutdown"]["grace_period_s"] + 10)
        stop_s = time.monotonic() - stop_t0
    finally:
        if srv.proc.poll() is None:
            srv.proc.kill()
            srv.proc.wait()
    m = re.search(r"^SOAK_RESULT (\{.*\})$", out, re.M)
    if not m:
        raise RuntimeError(f"wrk gave no result (rc {proc.returncode}):\n{out}")
    res = json.loads(m.group(1))
    secs = res["duration_us"] / 1e6
    ref_at = min(60.0, duration / 2)  # after warm-up: worker scratch grows to its largest batch
    ref = next((kib for t, kib in samples if t >= ref_at), None)
    last = samples[-1][1] if samples else None
    growth = (last - ref) / ref if ref and last else None
    res.update({
        "duration_s": round(secs, 1),
        "connections": connections,
        "throughput_rps": round(res["requests"] / secs, 1),
        "rss_kib": {"idle": idle_rss, "ref_at_s": ref_at, "ref": ref, "last": last,
                    "max": max((k for _, k in samples), default=None), "samples": len(samples),
                    "per_second": [k for _, k in samples]},
        "rss_growth": None if growth is None else round(growth, 4),
        "server_exit": rc,
        "server_stop_s": round(stop_s, 2),
        "model": str(model),
        "wrk_output": out,
    })
    problems = []
    other = {k: v for k, v in res["statuses"].items() if k not in ("200", "503")}
    if other:
        problems.append(f"statuses besides 200/503: {other}")
    errs = {k: v for k, v in res["errors"].items() if k != "status" and v}
    if errs:
        problems.append(f"socket errors: {errs}")
    if res["bad_body"]:
        problems.append(f"{res['bad_body']} answers with status 200 lacked a JSON body")
    if res["statuses"].get("200", 0) == 0:
        problems.append("no successful answer")
    if growth is None or growth >= max_rss_growth:
        problems.append(f"RSS growth {growth} from {ref_at:.0f}s to the end "
                        f"(limit {max_rss_growth})")
    if not alive_after:
        problems.append("the server died during the run")
    if rc != 0:
        problems.append(f"server exit status {rc} after SIGTERM")
    errors_logged = [r for r in srv.log_records() if r.get("level") == "error"]
    if errors_logged:
        problems.append(f"server logged errors: {errors_logged[:3]}")
    res["problems"] = problems
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=int, default=300, help="seconds of load (default 300)")
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2, help="wrk threads")
    ap.add_argument("--model", default=str(REPO / "models" / "default"))
    ap.add_argument("--max-rss-growth", type=float, default=0.05)
    ap.add_argument("--out", help="also write the result JSON here")
    a = ap.parse_args()
    res = run_soak(a.duration, a.connections, a.threads, a.model, max_rss_growth=a.max_rss_growth,
                   log=lambda s: print(s, file=sys.stderr))
    text = json.dumps({k: v for k, v in res.items() if k != "wrk_output"}, indent=1)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")
    for p in res["problems"]:
        print("FAIL", p, file=sys.stderr)
    sys.exit(1 if res["problems"] else 0)


if __name__ == "__main__":
    main()
