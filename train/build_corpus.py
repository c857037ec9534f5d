#!/usr/bin/env python3
"""Build the pretraining corpus from Debian-packaged English text.

Every source is split into documents and each document into sentences; the
held-out split is by document (a hash of the document id, so it does not move
when another source is added). Output: train/work/data/corpus.jsonl (one document
per line) and train/work/data/tokens.npz (the same sentences as bert-base-uncased
word-piece ids, ready for pair sampling).

Sources (Debian package: licence):
  bible-kjv-text   King James Bible, via the `bible` reader (public domain)
  wordnet-base     WordNet 3.0 glosses and examples (WordNet 3.0 licence, BSD-like)
  fortunes[-min]   fortune cookie files (BSD-4-clause package; quotations)
  jargon-text      The Jargon File 4.4.x (public domain)
  debian-reference-en  Debian Reference, text edition (GPL-2+)
  man pages of a fixed package list rendered with `man -P cat` (each package's licence)
"""
import argparse
import gzip
import hashlib
import json
import os
import re
import subprocess
import sys

import numpy as np

MAN_PACKAGES = ["coreutils", "bash", "findutils", "grep", "sed", "tar", "gzip", "util-linux",
                "procps", "man-db", "apt", "dpkg", "diffutils", "less", "openssh-client",
                "git", "make", "gcc-12", "curl", "wget", "jq", "valgrind", "python3.11"]

SENT_SPLIT = re.compile(r"(?<=[.!?])[\"')\]]?\s+(?=[\"'(\[]?[A-Z0-9])")
BOX = re.compile(r"[│├┼┤┌┐└┘─═|+]{2,}|[│├┼┤┌┐└┘]")


def clean_sentence(s):
    # the Jargon File marks cross-references as {term}
    s = re.sub(r"\s+", " ", s.replace("{", "").replace("}", "")).strip()
    if len(s.split()) < 3:
        return None
    letters = sum(c.isalpha() for c in s)
    if letters < 0.6 * len(s.replace(" ", "")):
        return None
    return s


def split_sentences(text):
    out = []
    for s in SENT_SPLIT.split(text):
        c = clean_sentence(s)
        if c:
            out.append(c)
    return out


def paragraphs(lines):
    """Join wrapped lines into paragraphs; blank lines and table rows separate them."""
    para = []
    for line in lines:
        if not line.strip() or BOX.search(line):
            if para:
                yield " ".join(para)
            para = []
            continue
        para.append(line.strip())
    if para:
        yield " ".join(para)


def doc_sentences(lines):
    sents = []
    for p in paragraphs(lines):
        sents.extend(split_sentences(p))
    return sents


def src_kjv():
    out = subprocess.run(["bible", "-l100000", "gen1:1-rev22:21"], capture_output=True,
                         text=True, check=True).stdout
    doc, name = [], None
    for line in out.splitlines():
        m = re.match(r"^(\S.*\S) (\d+)$", line)
        if m and not line.startswith(" "):
            if doc:
                yield name, doc
            doc, name = [], line.strip()
            continue
        m = re.match(r"^\s+\d+ (.*)$", line)
        if m:
            # verses are already sentence-like units; split long ones further
            doc.extend(split_sentences(m.group(1)))
    if doc:
        yield name, doc


def src_wordnet(chunk=25):
    for pos in ["noun", "verb", "adj", "adv"]:
        path = f"/usr/share/wordnet/data.{pos}"
        groups = {}
        with open(path, encoding="latin-1") as f:
            for line in f:
                if line.startswith("  "):
                    continue
                head, _, gloss = line.partition("| ")
                fields = head.split()
                lexfile = fields[1]
                word = fields[4].replace("_", " ")
                parts = [p.strip().strip('"').strip() for p in gloss.split(";")]
                sents = []
                if parts and parts[0]:
                    d = clean_sentence(f"{word}: {parts[0]}.")
                    if d:
                        sents.append(d)
                for ex in parts[1:]:
                    c = clean_sentence(ex)
                    if c:
                        sents.append(c)
                groups.setdefault(lexfile, []).append(sents)
        for lexfile, syns in sorted(groups.items()):
            for i in range(0, len(syns), chunk):
                sents = [s for g in syns[i:i + chunk] for s in g]
                if sents:
                    yield f"{pos}.{lexfile}.{i // chunk}", sents


def src_fortunes():
    base = "/usr/share/games/fortunes"
    for name in sorted(os.listdir(base)):
        path = os.path.join(base, name)
        if not os.path.isfile(path) or "." in name:
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
        for i, fortune in enumerate(text.split("\n%\n")):
            lines = [ln for ln in fortune.splitlines() if not ln.strip().startswith("--")]
            # a fortune is a short text: treat it as one paragraph
            sents = split_sentences(" ".join(ln.strip() for ln in lines))
            if sents:
                yield f"{name}.{i}", sents


def src_jargon():
    with gzip.open("/usr/share/doc/jargon-text/jargon.txt.gz", "rt", encoding="utf-8",
                   errors="replace") as f:
        lines = f.read().splitlines()
    doc, name = [], "front"
    for line in lines:
        m = re.match(r"^\s*:([^:]{1,60}):", line)
        if m:
            if doc:
                sents = doc_sentences(doc)
                if sents:
                    yield name, sents
            doc, name = [line[m.end():]], m.group(1)
            continue
        doc.append(line)
    sents = doc_sentences(doc)
    if sents:
        yield name, sents


def src_debref():
    with gzip.open("/usr/share/debian-reference/debian-reference.en.txt.gz", "rt",
                   encoding="utf-8", errors="replace") as f:
        lines = f.read().splitlines()
    doc, name = [], "front"
    for line in lines:
        m = re.match(r"^(?:Chapter )?(\d+(?:\.\d+)*)\.\s\S", line)
        if m:
            sents = doc_sentences(doc)
            if sents:
                yield name, sents
            doc, name = [], m.group(1)
            continue
        doc.append(line)
    sents = doc_sentences(doc)
    if sents:
        yield name, sents


def src_man():
    env = dict(os.environ, MANWIDTH="1000", LC_ALL="C.UTF-8")
    for pkg in MAN_PACKAGES:
        try:
            files = subprocess.run(["dpkg", "-L", pkg], capture_output=True, text=True,
                                   check=True).stdout.split()
        except subprocess.CalledProcessError:
            print(f"man: package {pkg} not installed, skipped", file=sys.stderr)
            continue
        pages = sorted(p for p in files if re.match(r"^/usr/share/man/man\d/[^/]+\.gz$", p))
        for page in pages:
            try:
                out = subprocess.run(["man", "-P", "cat", "-l", page], capture_output=True,
                                     text=True, env=env, timeout=20).stdout
            except subprocess.TimeoutExpired:
                continue
            # section headings (NAME, SYNOPSIS...) are all-caps lines: drop them
            lines = [ln for ln in out.splitlines()
                     if not re.match(r"^[A-Z][A-Z ]+$", ln.strip())]
            sents = doc_sentences(lines)
            if sents:
                yield f"{pkg}:{os.path.basename(page)}", sents


SOURCES = {
    "kjv": src_kjv,
    "wordnet": src_wordnet,
    "fortunes": src_fortunes,
    "jargon": src_jargon,
    "debref": src_debref,
    "man": src_man,
}


def is_heldout(doc_id, frac):
    h = int(hashlib.sha1(doc_id.encode()).hexdigest()[:8], 16)
    return h < frac * 0x100000000


def write_heldout(docs, ids, sent_off, doc_off, heldout, out_dir):
    """Commit-sized copy of the held-out side, so evaluate.py and the tests run
    from a fresh checkout without rebuilding the corpus: the held-out documents
    as text, and the training split's most frequent ids (the MLM baseline)."""
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "docs.jsonl.gz")
    # mtime=0 keeps the archive byte-identical across rebuilds
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        for d in docs:
            if d["heldout"]:
                rec = {"id": d["id"], "source": d["source"], "sentences": d["sentences"]}
                gz.write((json.dumps(rec) + "\n").encode())
    in_train = np.zeros(len(ids), dtype=bool)
    for i in np.nonzero(~heldout)[0]:
        in_train[sent_off[doc_off[i]]:sent_off[doc_off[i + 1]]] = True
    freq = np.bincount(ids[in_train])
    top = np.argsort(-freq, kind="stable")[:20]
    with open(os.path.join(out_dir, "train_freq.json"), "w") as f:
        json.dump({"train_tokens": int(in_train.sum()),
                   "most_frequent": [[int(t), int(freq[t])] for t in top]}, f, indent=1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "work", "data"))
    ap.add_argument("--vocab", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                                     "shared", "vocab", "bert-base-uncased"))
    ap.add_argument("--heldout", type=float, default=0.03)
    ap.add_argument("--heldout-dir", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                           "heldout"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    docs = []
    for src, fn in SOURCES.items():
        n0 = len(docs)
        for name, sents in fn():
            docs.append({"id": f"{src}/{name}", "source": src, "sentences": sents})
        print(f"{src}: {len(docs) - n0} documents", file=sys.stderr)
    # duplicated ids (e.g. the same man page in two sections) get an index suffix
    seen = {}
    for d in docs:
        k = seen.get(d["id"], 0)
        seen[d["id"]] = k + 1
        if k:
            d["id"] += f"#{k}"
        d["heldout"] = is_heldout(d["id"], args.heldout)

    with open(os.path.join(args.out, "corpus.jsonl"), "w") as f:
        for d in docs:
            f.write(json.dumps(d) + "\n")

    from transformers import BertTokenizerFast
    tok = BertTokenizerFast.from_pretrained(args.vocab)
    flat = [s for d in docs for s in d["sentences"]]
    enc = tok(flat, add_special_tokens=False)["input_ids"]
    sent_len = np.array([min(len(e), 254) for e in enc], dtype=np.int32)
    ids = np.concatenate([np.array(e[:254], dtype=np.int32) for e in enc])
    sent_off = np.zeros(len(enc) + 1, dtype=np.int64)
    np.cumsum(sent_len, out=sent_off[1:])
    doc_nsent = np.array([len(d["sentences"]) for d in docs], dtype=np.int64)
    doc_off = np.zeros(len(docs) + 1, dtype=np.int64)
    np.cumsum(doc_nsent, out=doc_off[1:])
    heldout = np.array([d["heldout"] for d in docs], dtype=bool)
    src_names = list(SOURCES)
    doc_src = np.array([src_names.index(d["source"]) for d in docs], dtype=np.int32)
    np.savez(os.path.join(args.out, "tokens.npz"), ids=ids, sent_off=sent_off,
             doc_off=doc_off, heldout=heldout, doc_src=doc_src)

    write_heldout(docs, ids, sent_off, doc_off, heldout, args.heldout_dir)

    stats = {"sources": {}, "total": {}}
    for si, s in enumerate(src_names):
        sel = doc_src == si
        ns = int(doc_nsent[sel].sum())
        toks = int(sum(sent_len[doc_off[i]:doc_off[i + 1]].sum() for i in np.nonzero(sel)[0]))
        stats["sources"][s] = {"documents": int(sel.sum()), "sentences": ns, "tokens": toks,
                               "heldout_documents": int((sel & heldout).sum())}
    stats["total"] = {"documents": len(docs), "sentences": len(flat), "tokens": int(len(ids)),
                      "heldout_documents": int(heldout.sum()),
                      "heldout_sentences": int(doc_nsent[heldout].sum()),
                      "heldout_tokens": int(sum(sent_len[doc_off[i]:doc_off[i + 1]].sum()
                                                for i in np.nonzero(heldout)[0]))}
    with open(os.path.join(args.out, "stats.json"), "w") as f:
        json.dump(stats, f, indent=1)
    print(json.dumps(stats["total"]), file=sys.stderr)


if __name__ == "__main__":
    main()
