#!/usr/bin/env python3
"""Held-out evaluation of a BertForPreTraining checkpoint (default: models/default).

Examples come from the held-out documents only (train/heldout/docs.jsonl.gz,
split by document and written by build_corpus.py), tokenised with the
checkpoint's own tokenizer and built by the same rules as training (pairs.py)
from a fixed seed, so two runs give identical numbers.

Reports, over every position selected for MLM (80% [MASK], 10% random,
10% unchanged, as in training):
  mlm_top1 / mlm_top5     the model's accuracy
  baseline_top1 / _top5   always answering the training split's most frequent
                          token (top-5: its five most frequent tokens)
and NSP accuracy against the majority-class baseline (about 50%).

The everyday probe set (train/probes.json: cloze sentences written for this
project, each with the single words accepted at its [MASK]) gives
  probe_top1 / probe_top5   share of sentences whose first / any of the first
                            five predictions is accepted
  probe_baseline_top1/_top5 the same for the frequent-token answers above

  python3 train/evaluate.py            full run (2000 pairs)
  python3 train/evaluate.py --fast     fixed 128-pair subset, for tests
"""
import argparse
import gzip
import json
import os
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import pairs  # noqa: E402

ROOT = os.path.dirname(HERE)


def probe_eval(model, tok, path, frequent, show):
    """Top-1/top-5 hit rates on the everyday cloze probes (see the docstring)."""
    with open(path) as f:
        items = json.load(f)["items"]
    hit1 = hit5 = base1 = base5 = 0
    with torch.no_grad():
        for it in items:
            enc = tok(it["text"], return_tensors="pt")
            pos = int((enc["input_ids"][0] == tok.mask_token_id).nonzero()[0, 0])
            out = model.bert(**enc)
            logits = model.cls.predictions(out[0][0, pos])
            top5 = logits.topk(5).indices.tolist()
            ok = set()
            for a in it["answers"]:
                ids = tok(a, add_special_tokens=False)["input_ids"]
                if len(ids) != 1:
                    sys.exit(f"{path}: answer {a!r} is not one word piece")
                ok.add(ids[0])
            hit1 += top5[0] in ok
            hit5 += any(t in ok for t in top5)
            base1 += int(frequent[0]) in ok
            base5 += any(int(t) in ok for t in frequent)
            if show:
                mark = "1" if top5[0] in ok else ("5" if any(t in ok for t in top5) else "-")
                print(f"[{mark}] {it['text']} -> {' '.join(tok.convert_ids_to_tokens(top5))}",
                      file=sys.stderr)
    n = len(items)
    return {"probe_items": n, "probe_top1": hit1 / n, "probe_top5": hit5 / n,
            "probe_baseline_top1": base1 / n, "probe_baseline_top5": base5 / n}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "default"))
    ap.add_argument("--heldout", default=os.path.join(HERE, "heldout"))
    ap.add_argument("--pairs", type=int, default=2000)
    ap.add_argument("--fast", action="store_true", help="128 pairs")
    ap.add_argument("--seed", type=int, default=20241126)
    ap.add_argument("--seq", type=int, default=0, help="default: the model's max positions")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--json", default="", help="also write the result here")
    ap.add_argument("--probes", default=os.path.join(HERE, "probes.json"))
    ap.add_argument("--show-probes", action="store_true",
                    help="print each probe sentence with the model's top 5 (stderr)")
    args = ap.parse_args()
    if args.fast:
        args.pairs = 128
    torch.set_num_threads(1)
    t0 = time.time()

    from transformers import BertForPreTraining, BertTokenizerFast
    model = BertForPreTraining.from_pretrained(args.model, dtype=torch.float32).eval()
    V = model.config.vocab_size
    seq = args.seq or min(128, model.config.max_position_embeddings)

    with open(os.path.join(args.heldout, "train_freq.json")) as f:
        top5_frequent = np.array([t for t, _ in json.load(f)["most_frequent"][:5]])
    with gzip.open(os.path.join(args.heldout, "docs.jsonl.gz"), "rt") as f:
        docs = [json.loads(line)["sentences"] for line in f]
    tok = BertTokenizerFast.from_pretrained(args.model)
    flat = tok([s for d in docs for s in d], add_special_tokens=False)["input_ids"]
    tok_docs, k = [], 0
    for d in docs:
        # same 254-id cap per sentence as build_corpus.py
        tok_docs.append([ids[:254] for ids in flat[k:k + len(d)]])
        k += len(d)
    held = pairs.Corpus.from_docs(tok_docs)
    rng = np.random.default_rng(args.seed)
    n_top1 = n_top5 = n_mlm = n_base1 = n_base5 = 0
    n_nsp = n_nsp_ok = n_isnext = 0
    done = 0
    with torch.no_grad():
        while done < args.pairs:
            bs = min(args.batch, args.pairs - done)
            b = {k: torch.from_numpy(v)
                 for k, v in pairs.make_batch(held, rng, bs, seq, V).items()}
            out = model.bert(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                             token_type_ids=b["token_type_ids"])
            sel = b["labels"] != pairs.IGNORE
            y = b["labels"][sel]
            logits = model.cls.predictions(out[0][sel])
            top5 = logits.topk(5, dim=-1).indices
            n_top1 += int((top5[:, 0] == y).sum())
            n_top5 += int((top5 == y[:, None]).any(-1).sum())
            n_mlm += int(y.numel())
            yn = y.numpy()
            n_base1 += int((yn == top5_frequent[0]).sum())
            n_base5 += int(np.isin(yn, top5_frequent).sum())
            nsp = model.cls.seq_relationship(out[1]).argmax(-1)
            lab = b["next_sentence_label"]
            n_nsp_ok += int((nsp == lab).sum())
            n_isnext += int((lab == 0).sum())
            n_nsp += bs
            done += bs

    probe = probe_eval(model, tok, args.probes, top5_frequent, args.show_probes)

    res = {
        "model": os.path.relpath(os.path.abspath(args.model), ROOT),
        "pairs": n_nsp, "seed": args.seed, "seq": seq,
        "heldout_documents": len(docs),
        "mlm_positions": n_mlm,
        "mlm_top1": n_top1 / n_mlm, "mlm_top5": n_top5 / n_mlm,
        "baseline_top1": n_base1 / n_mlm, "baseline_top5": n_base5 / n_mlm,
        "baseline_tokens": [int(t) for t in top5_frequent],
        "nsp_accuracy": n_nsp_ok / n_nsp,
        "nsp_baseline": max(n_isnext, n_nsp - n_isnext) / n_nsp,
        **probe,
        "seconds": round(time.time() - t0, 1),
    }
    text = json.dumps(res, indent=1)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
