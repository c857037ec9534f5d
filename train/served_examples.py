#!/usr/bin/env python3
"""Ask this project's bert-server (serving models/default) a few fill-mask and
next-sentence questions and print the answers as Markdown for MODEL_CARD.md.

  python3 train/served_examples.py [--build build] [--model models/default]
"""
import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

FILL = [
    # the README's example and two everyday sentences (written for this project,
    # not from the corpus; all three are items of train/probes.json)
    "The capital of France is [MASK].",
    "I drink a cup of [MASK] every morning.",
    "The ship sailed across the [MASK].",
    "In the beginning God created the heaven and the [MASK].",
    "And God said, Let there be [MASK]: and there was light.",
    "The [MASK] command lists the files in a directory.",
    "dog: a member of the genus canis that has been domesticated by [MASK].",
    "A bird in the hand is worth two in the [MASK].",
]
NSP = [
    ("He went to the store.", "He bought a gallon of milk."),
    ("And God said, Let there be light: and there was light.",
     "And God saw the light, that it was good: and God divided the light from the darkness."),
    ("And God said, Let there be light: and there was light.",
     "Use the --force option to overwrite existing files."),
    ("The tar command creates archives.", "It can also extract files from them."),
    ("The tar command creates archives.", "Blessed are the meek: for they shall inherit the earth."),
]


def post(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.environ.get("BERT_BUILD_DIR",
                                                      os.path.join(ROOT, "build")))
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "default"))
    args = ap.parse_args()
    proc = subprocess.Popen([os.path.join(args.build, "bert-server"), "--port", "0",
                             "--model", args.model, "--workers", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = None
        deadline = time.time() + 60
        while url is None and time.time() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            msg = json.loads(line)
            if msg.get("msg") == "ready":
                url = msg["url"]
        if url is None:
            sys.exit("bert-server did not become ready")
        print("#### Fill-mask (`POST /v1/fill-mask`, top_k 3)\n")
        print("| input | top 3 (score) |\n|---|---|")
        for text in FILL:
            ans = post(url + "/v1/fill-mask", {"inputs": text, "parameters": {"top_k": 3}})
            cands = ", ".join(f"`{c['token_str']}` ({c['score']:.3f})" for c in ans)
            print(f"| {text} | {cands} |")
        print("\n#### Next sentence (`POST /v1/next-sentence`)\n")
        print("| text | text_pair | answer | P(is_next) |\n|---|---|---|---|")
        ans = post(url + "/v1/next-sentence",
                   {"inputs": [{"text": a, "text_pair": b} for a, b in NSP]})
        for (a, b), r in zip(NSP, ans):
            print(f"| {a} | {b} | {r['label']} | {r['is_next_probability']:.3f} |")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()
