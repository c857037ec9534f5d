"""Differential check of the tokenizer fuzz corpus against Hugging Face.

The tokenizer harness only checks invariants; this replays the inputs it found (its seed
corpus and the corpus a run grew in out/corpus/tokenizer) through `bert-cli tokenize` and
through transformers' BertTokenizerFast for the same vocab, and prints every input whose
ids, token types or (byte) offsets differ. Inputs are decoded as the harness decodes them
(control byte, split byte, text); those that are not valid UTF-8 are skipped (JSON cannot
carry them, and HF refuses them too).

usage: python3 fuzz/tokenizer_diff.py [--cli build/bert-cli] [--truncation] [DIR...]
Exit status 1 when anything differs.
"""
import argparse
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "vocab" / "bert-base-uncased"
LIMITS = [0, 1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 48, 64]  # as fuzz_tokenizer.c
TRUNC = ["none", "longest_first", "only_first", "only_second"]


def decode_input(raw):
    """(text, pair or None, max_len, truncation, side) as fuzz_tokenizer.c reads raw."""
    ctrl = split = 0
    if len(raw) >= 2:
        ctrl, split, raw = raw[0], raw[1], raw[2:]
    pair = ctrl & 1
    alen = len(raw) * split // 255 if pair else len(raw)
    a, b = raw[:alen], (raw[alen:] if pair else None)
    return a, b, LIMITS[ctrl >> 4], TRUNC[(ctrl >> 1) & 3], "left" if (ctrl >> 3) & 1 else "right"


def byte_offsets(text, offsets):
    # HF offsets index Python characters; ours index UTF-8 bytes.
    pos = [0]
    for ch in text:
        pos.append(pos[-1] + len(ch.encode()))
    return [[pos[s], pos[e]] for s, e in offsets]


def run_cli(cli, records, extra):
    lines = "".join(json.dumps(r) + "\n" for r in records)
    proc = subprocess.run([cli, "tokenize", "--vocab", str(SHARED / "vocab.txt")] + extra,
                          input=lines, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        sys.exit(f"bert-cli tokenize failed: {proc.stderr}")
    return [json.loads(x) for x in proc.stdout.splitlines()]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cli", default=str(HERE.parent / "build" / "bert-cli"))
    ap.add_argument("--truncation", action="store_true",
                    help="also apply each input's max_len/truncation/side")
    ap.add_argument("dirs", nargs="*",
                    default=[HERE / "corpus" / "tokenizer", HERE / "out" / "corpus" / "tokenizer"])
    args = ap.parse_args()
    from transformers import BertTokenizerFast

    hf = BertTokenizerFast.from_pretrained(str(SHARED))
    groups = defaultdict(list)
    skipped = 0
    for d in map(Path, args.dirs):
        for f in sorted(d.glob("*")) if d.is_dir() else []:
            a, b, max_len, trunc, side = decode_input(f.read_bytes())
            try:
                a, b = a.decode(), (b.decode() if b is not None else None)
            except UnicodeDecodeError:
                skipped += 1
                continue
            if not args.truncation or max_len == 0 or trunc == "none":
                max_len, trunc, side = 0, "none", "right"
            groups[(max_len, trunc, side)].append((f, a, b))
    bad = total = 0
    for (max_len, trunc, side), items in sorted(groups.items()):
        extra = ["--side", side]
        if max_len:
            extra += ["--max-len", str(max_len), "--truncate", trunc]
        records = [{"text": a, **({"text_pair": b} if b is not None else {})} for _, a, b in items]
        ours = run_cli(args.cli, records, extra)
        hf.truncation_side = side
        for (f, a, b), got in zip(items, ours):
            total += 1
            kw = dict(return_offsets_mapping=True)
            if max_len:
                kw.update(truncation=trunc, max_length=max_len)
            try:
                # Batched form: a single call drops an empty text_pair (a Python-side
                # `if text_pair`), the batched call and the Rust tokenizer keep it.
                ref = {k: v[0] for k, v in hf([a], [b] if b is not None else None, **kw).items()}
            except Exception as e:  # HF refuses: ours must refuse too
                if "error" not in got:
                    bad += 1
                    print(f"DIFF {f.name} {max_len}/{trunc}/{side}: HF raises {e!r}, ours {got}")
                continue
            if "error" in got:
                bad += 1
                print(f"DIFF {f.name} {max_len}/{trunc}/{side}: ours refuses ({got['error']}), "
                      f"HF gives {ref['input_ids']}")
                continue
            offs = [o for o in ref["offset_mapping"]]
            # Offsets of the pair's tokens index text_pair.
            types = ref["token_type_ids"]
            ref_offs = [byte_offsets(b if t == 1 and b is not None else a, [o])[0]
                        for o, t in zip(offs, types)]
            if (got["ids"] != ref["input_ids"] or got["type_ids"] != types
                    or got["offsets"] != ref_offs):
                bad += 1
                print(f"DIFF {f.name} {max_len}/{trunc}/{side}: text={a!r} pair={b!r}\n"
                      f"  ours ids={got['ids']} offs={got['offsets']}\n"
                      f"  HF   ids={ref['input_ids']} offs={ref_offs}")
    print(f"{total} inputs compared, {bad} differ, {skipped} skipped as invalid UTF-8")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
