"""How closely `model.compute: int8` (and int8-checked) answers what the float32 path answers.

Both servers run the same checkpoint; both are asked the same held-out questions over HTTP,
exactly as a client would ask them:

  fill-mask      held-out sentences (train/heldout/docs.jsonl.gz, documents never trained on)
                 with one word that is a single word piece replaced by [MASK], top_k=5:
                 top-1 agreement, mean top-5 overlap (shared tokens / 5), and the largest
                 difference of the probability either path gives the fp32 top-1 token;
  next-sentence  held-out sentence pairs, half consecutive and half drawn from another
                 document: label agreement and the largest is-next probability difference;
  hidden states  (encoder-only checkpoints too) `bert-cli forward` with "hidden": true: the
                 cosine similarity of every token's last hidden state, fp32 vs int8 (min, mean).

The float32 path itself matches transformers to 1e-4 (tests/test_parity*.py); so these figures
are the int8 path's distance from transformers too, up to that.
"""
import gzip
import json
import os
import random
import subprocess
import time
from pathlib import Path

import numpy as np
import requests

REPO = Path(__file__).resolve().parent.parent
HELDOUT = REPO / "train" / "heldout" / "docs.jsonl.gz"


def heldout_docs():
    with gzip.open(HELDOUT, "rt") as f:
        return [json.loads(line)["sentences"] for line in f]


def fill_inputs(tok, n, seed=7):
    """n held-out sentences of 8-40 words with one single-word-piece word masked."""
    rng = random.Random(seed)
    sents = [s for d in heldout_docs() for s in d if 8 <= len(s.split()) <= 40]
    rng.shuffle(sents)
    out = []
    for s in sents:
        words = s.split()
        cand = [i for i, w in enumerate(words)
                if w.isalpha() and len(tok.tokenize(w)) == 1]
        if not cand:
            continue
        i = rng.choice(cand)
        words[i] = "[MASK]"
        out.append(" ".join(words))
        if len(out) == n:
            break
    return out


def nsp_inputs(n, seed=11):
    """n held-out pairs: even indices consecutive sentences, odd ones a random other doc."""
    rng = random.Random(seed)
    docs = [d for d in heldout_docs() if len(d) >= 2]
    out = []
    while len(out) < n:
        d = rng.choice(docs)
        i = rng.randrange(len(d) - 1)
        if len(out) % 2 == 0:
            b = d[i + 1]
        else:
            other = rng.choice(docs)
            b = rng.choice(other)
        out.append({"text": " ".join(d[i].split()[:50]), "text_pair": " ".join(b.split()[:50])})
    return out


def _post(session, url, route, body):
    r = session.post(f"{url}/v1/{route}", json=body, timeout=600)
    if r.status_code != 200:
        raise RuntimeError(f"{route}: HTTP {r.status_code} {r.text[:300]}")
    return r.json()


def _batched(xs, n):
    for i in range(0, len(xs), n):
        yield xs[i:i + n]


def fill_answers(url, texts):
    with requests.Session() as s:
        res = []
        for chunk in _batched(texts, 16):
            ans = _post(s, url, "fill-mask", {"inputs": chunk,
                                              "parameters": {"top_k": 5, "truncate": True}})
            res += ans
        return res


def nsp_answers(url, pairs):
    with requests.Session() as s:
        res = []
        for chunk in _batched(pairs, 16):
            # truncate: models/default has 128 positions, some held-out pairs are longer
            res += _post(s, url, "next-sentence", {"inputs": chunk,
                                                   "parameters": {"truncate": True}})
        return res


def rechecked_inputs(url):
    """int8-checked's counter of inputs answered again in float32 (0 on other servers)."""
    for line in requests.get(f"{url}/metrics", timeout=30).text.splitlines():
        name, _, v = line.partition(" ")
        if name == "bert_rechecked_inputs_total":
            return int(v)
    raise RuntimeError("no bert_rechecked_inputs_total in /metrics")


def timed_answers(url, texts, pairs):
    """(fill answers, NSP answers) and, for each set, the wall time on one connection (16
    inputs a request) and how many inputs int8-checked answered again in float32."""
    stats = {}
    answers = []
    for name, fn, xs in (("fill_mask", fill_answers, texts), ("next_sentence", nsp_answers, pairs)):
        before = rechecked_inputs(url)
        t0 = time.perf_counter()
        answers.append(fn(url, xs))
        stats[name] = {"seconds": time.perf_counter() - t0, "inputs": len(xs),
                       "rechecked": rechecked_inputs(url) - before}
    return tuple(answers), stats


def compare_fill(a, b):
    top1 = overlap = 0
    max_dp = 0.0
    for fa, fb in zip(a, b):
        ta = [x["token"] for x in fa]
        tb = [x["token"] for x in fb]
        top1 += ta[0] == tb[0]
        overlap += len(set(ta) & set(tb)) / 5.0
        pb = {x["token"]: x["score"] for x in fb}
        # the fp32 top-1 token's probability on both paths (absent from int8's top 5: its
        # probability there is at most int8's 5th, which bounds the difference from below)
        p_int8 = pb.get(ta[0], fb[-1]["score"])
        max_dp = max(max_dp, abs(fa[0]["score"] - p_int8))
    n = len(a)
    return {"inputs": n, "top1_agreement": top1 / n, "top5_overlap": overlap / n,
            "max_top1_probability_diff": max_dp}


def compare_nsp(a, b):
    agree = sum(x["label"] == y["label"] for x, y in zip(a, b))
    dp = max(abs(x["is_next_probability"] - y["is_next_probability"]) for x, y in zip(a, b))
    return {"pairs": len(a), "label_agreement": agree / len(a), "max_probability_diff": dp}


def hidden_states(build, model, texts, compute, tok):
    """Last hidden states of each text through bert-cli forward (BERT_COMPUTE=compute)."""
    lines = []
    for t in texts:
        enc = tok(t, truncation=True, max_length=128)
        lines.append(json.dumps({"inputs": [{"ids": enc["input_ids"],
                                             "type_ids": enc["token_type_ids"]}],
                                 "hidden": True}))
    env = dict(os.environ, BERT_COMPUTE=compute, OPENBLAS_NUM_THREADS="1")
    p = subprocess.run([str(build / "bert-cli"), "forward", "--model", str(model)],
                       input="\n".join(lines) + "\n", capture_output=True, text=True, env=env,
                       check=True)
    out = []
    for line in p.stdout.splitlines():
        r = json.loads(line)
        if "error" in r:
            raise RuntimeError(f"bert-cli forward: {r['error']}")
        out.append(np.array(r["hidden_states"][0], dtype=np.float64))
    return out


def compare_hidden(build, model, texts, tok):
    a = hidden_states(build, model, texts, "fp32", tok)
    b = hidden_states(build, model, texts, "int8", tok)
    cos = np.concatenate([(x * y).sum(1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1))
                          for x, y in zip(a, b)])
    return {"texts": len(texts), "tokens": int(cos.size), "cosine_min": float(cos.min()),
            "cosine_mean": float(cos.mean())}


def onnx_int8_answers(model_dir, onnx_dir, texts, pairs):
    """The same questions put to ONNX Runtime's quantize_dynamic of the same checkpoint (the
    method the issue names as the reference), answers shaped as the server's, so that
    compare_fill/compare_nsp measure it against the fp32 server exactly as they measure ours.
    Truncation to the model's positions as the server's truncate: true."""
    import onnxruntime as ort
    from transformers import BertTokenizerFast

    import peers

    onnx_dir = Path(onnx_dir)
    fp32, q, stamp = onnx_dir / "model.onnx", onnx_dir / "model.int8.onnx", onnx_dir / "stamp.json"
    # the stamp run_onnx writes and reads: an export of this checkpoint file, made earlier
    want = {"model": str(Path(model_dir).resolve()),
            "mtime": os.path.getmtime(Path(model_dir) / "model.safetensors")}
    if not (q.exists() and stamp.exists() and json.loads(stamp.read_text()).get("src") == want):
        method, errors = peers.export_onnx(str(model_dir), fp32, lambda msg: None)
        peers.quantize_onnx(fp32, q)
        stamp.write_text(json.dumps({"src": want, "method": method, "errors": errors}))
    so = ort.SessionOptions()
    so.intra_op_num_threads = os.cpu_count() or 1
    sess = ort.InferenceSession(str(q), so, providers=["CPUExecutionProvider"])
    tok = BertTokenizerFast.from_pretrained(str(model_dir))
    cap = json.loads((Path(model_dir) / "config.json").read_text())["max_position_embeddings"]

    def run(enc, mask_pos):
        f = {k: enc[k].astype(np.int64) for k in ("input_ids", "token_type_ids", "attention_mask")}
        f["mask_pos"] = np.asarray(mask_pos, np.int64)
        return sess.run(None, f)

    fills = []
    for t in texts:
        enc = tok(t, return_tensors="np", truncation=True, max_length=cap)
        pos = np.nonzero(enc["input_ids"][0] == tok.mask_token_id)[0]
        mlm, _ = run(enc, pos[:1])
        ids, probs = peers.softmax_topk(mlm, 5)
        fills.append([{"token": int(i), "score": float(p)} for i, p in zip(ids[0], probs[0])])
    nsps = []
    for p in pairs:
        enc = tok(p["text"], p["text_pair"], return_tensors="np", truncation=True, max_length=cap)
        _, nsp = run(enc, [0])
        prob = peers.nsp_answer(nsp)[0]
        nsps.append({"label": "is_next" if prob[0] >= prob[1] else "not_next",
                     "is_next_probability": float(prob[0])})
    return fills, nsps
