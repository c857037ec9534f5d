#!/usr/bin/env python3
"""Side-by-side latency and throughput of two bert-server builds/configs and transformers'
fill-mask pipeline, interleaved round by round so that a change in the machine's other load hits
every system alike (bench.py runs its sections one after another).

    python3 bench/ab_http.py --model DIR --a-bin OLD/bert-server --a-config OLD.yaml \
        [--b-bin build/bert-server] [--b-config config/default.yaml] [--rounds 3] [--wrk]

Each config gets its port and model.dir replaced; nothing else. Prints one JSON line per cell
and a summary table (p50 over all rounds, with the 1-minute load average seen during them).
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench  # noqa: E402  (make_requests, free_port, wrk parsing)


def load1():
    return float(Path("/proc/loadavg").read_text().split()[0])


class Srv:
    def __init__(self, binary, config, model, tmp, name, env):
        cfg = yaml.safe_load(Path(config).read_text())
        self.port = bench.free_port()
        cfg["server"]["port"] = self.port
        cfg["model"]["dir"] = str(Path(model).resolve())
        cfg.setdefault("logging", {})["level"] = "warn"
        self.cfg_path = Path(tmp) / f"{name}.yaml"
        self.cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        self.log = open(Path(tmp) / f"{name}.log", "w")
        self.proc = subprocess.Popen([binary, "--config", str(self.cfg_path)], stdout=self.log,
                                     stderr=self.log, env=env)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 120
        while True:  # readiness poll
            try:
                if requests.get(self.url + "/readyz", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{name} did not start: {self.log.name}")
            time.sleep(0.01)
        self.session = requests.Session()

    def ask(self, req):
        t = time.perf_counter()
        r = self.session.post(f"{self.url}/v1/{req['kind']}", json=req["body"], timeout=300)
        dt = time.perf_counter() - t
        assert r.status_code == 200, r.text
        return dt

    def stop(self):
        self.proc.terminate()
        self.proc.wait(60)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--a-bin", required=True)
    ap.add_argument("--a-config", required=True)
    ap.add_argument("--a-name", default="A")
    ap.add_argument("--b-bin", default=str(HERE.parent / "build" / "bert-server"))
    ap.add_argument("--b-config", default=str(HERE.parent / "config" / "default.yaml"))
    ap.add_argument("--b-name", default="B")
    ap.add_argument("--tokens", type=int, nargs="+", default=[16, 128])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--per-round", type=int, default=8)
    ap.add_argument("--no-pipeline", action="store_true")
    ap.add_argument("--torch-threads", type=int, default=2)
    ap.add_argument("--wrk", type=int, nargs="*", default=[], help="connection counts")
    ap.add_argument("--wrk-s", type=int, default=10)
    args = ap.parse_args()

    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(args.model)
    prof = {"fill_tokens": args.tokens, "iters": {t: args.per_round for t in args.tokens},
            "nsp_tokens": args.tokens[-1]}
    reqs = [r for r in bench.make_requests(tok, prof) if r["kind"] == "fill-mask"]
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE",)}
    tmp = tempfile.mkdtemp(prefix="ab_http_")
    systems = {args.a_name: Srv(args.a_bin, args.a_config, args.model, tmp, "a", env)}
    try:
        systems[args.b_name] = Srv(args.b_bin, args.b_config, args.model, tmp, "b", env)
        run(args, reqs, systems)
    finally:
        for s in systems.values():
            s.stop()


def run(args, reqs, systems):
    pipe = None
    if not args.no_pipeline:
        import torch
        from transformers import pipeline
        torch.set_num_threads(args.torch_threads)
        pipe = pipeline("fill-mask", model=args.model, tokenizer=args.model, top_k=5,
                        device="cpu")
    names = list(systems) + ([f"pipeline ({args.torch_threads} threads)"] if pipe else [])
    times = {(n, r["tokens"]): [] for n in names for r in reqs}
    loads = []
    for s in systems.values():  # warm-up: pages the weights in, grows the scratch
        for r in reqs:
            s.ask(r)
    if pipe:
        for r in reqs:
            pipe(r["text"])
    for rnd in range(args.rounds):
        for r in reqs:
            for n in names:
                loads.append(load1())
                for _ in range(args.per_round):
                    if n in systems:
                        dt = systems[n].ask(r)
                    else:
                        t = time.perf_counter()
                        pipe(r["text"])
                        dt = time.perf_counter() - t
                    times[(n, r["tokens"])].append(dt * 1e3)
                cell = times[(n, r["tokens"])][-args.per_round:]
                print(json.dumps({"round": rnd, "system": n, "tokens": r["tokens"],
                                  "p50_ms": round(statistics.median(cell), 1),
                                  "load1": loads[-1]}), flush=True)
    wrk_rows = []
    if args.wrk:
        lua = next(iter(systems.values())).cfg_path.parent / "post.lua"
        body = json.dumps(reqs[-1]["body"])
        lua.write_text('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                       f"wrk.body = {json.dumps(body)}\n")
        for c in args.wrk:
            for n, s in systems.items():
                ld = load1()
                out = subprocess.run(["wrk", "-t1", f"-c{c}", f"-d{args.wrk_s}s", "--timeout",
                                      "120s", "--latency", "-s", str(lua), s.url + "/v1/fill-mask"],
                                     capture_output=True, text=True).stdout
                rps = float(out.split("Requests/sec:")[1].split()[0])
                pct = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M))
                p50 = bench.wrk_ms(pct["50"]) if "50" in pct else None
                p99 = bench.wrk_ms(pct["99"]) if "99" in pct else None
                bad = "Non-2xx" in out or "Socket errors" in out
                wrk_rows.append((n, c, rps, p50, p99, bad, ld))
                print(json.dumps({"wrk": n, "connections": c, "req_s": rps, "p50_ms": p50,
                                  "p99_ms": p99, "errors": bad, "load1": ld}), flush=True)
    print(f"\nload average (1 min) during the latency rounds: {min(loads):.2f}-{max(loads):.2f}")
    print("| system | " + " | ".join(f"p50 {r['tokens']} tok (ms)" for r in reqs) + " |")
    print("|---|" + "---|" * len(reqs))
    for n in names:
        print(f"| {n} | " + " | ".join(f"{statistics.median(times[(n, r['tokens'])]):.1f}"
                                       for r in reqs) + " |")
    if wrk_rows:
        print(f"\n| system | connections | req/s | p50 ms | p99 ms | errors | load1 |")
        print("|---|---|---|---|---|---|---|")
        for n, c, rps, p50, p99, bad, ld in wrk_rows:
            print(f"| {n} | {c} | {rps:.2f} | {p50} | {p99} | {'yes' if bad else 0} | {ld:.2f} |")


if __name__ == "__main__":
    main()
