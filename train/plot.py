#!/usr/bin/env python3
"""Plot train.py's CSV log: losses and accuracies against steps (two panels)."""
import argparse
import csv
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def col(rows, key):
    xs, ys = [], []
    for r in rows:
        if r[key] != "":
            xs.append(int(r["step"]))
            ys.append(float(r[key]))
    return xs, ys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--log", default=os.path.join(HERE, "work", "train_log.csv"))
    ap.add_argument("--out", default=os.path.join(ROOT, "models", "default",
                                                  "training_curves.png"))
    args = ap.parse_args()
    with open(args.log) as f:
        rows = list(csv.DictReader(f))

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.5))
    a1.plot(*col(rows, "mlm_loss"), label="MLM loss (train, per log interval)")
    a1.plot(*col(rows, "nsp_loss"), label="NSP loss (train)")
    a1.plot(*col(rows, "heldout_mlm_loss"), "o-", label="MLM loss (held-out probe)")
    a1.set_xlabel("step")
    a1.set_ylabel("cross-entropy")
    a1.set_title("Losses")
    a1.grid(alpha=0.3)
    a1.legend()

    a2.plot(*col(rows, "mlm_acc"), label="MLM top-1 (train)")
    a2.plot(*col(rows, "nsp_acc"), label="NSP accuracy (train)", alpha=0.6)
    a2.plot(*col(rows, "heldout_mlm_acc"), "o-", label="MLM top-1 (held-out probe)")
    a2.plot(*col(rows, "heldout_nsp_acc"), "s-", label="NSP accuracy (held-out probe)")
    a2.set_xlabel("step")
    a2.set_ylabel("accuracy")
    a2.set_ylim(0, 1)
    a2.set_title("Accuracies")
    a2.grid(alpha=0.3)
    a2.legend(loc="lower right")

    last = rows[-1]
    fig.suptitle(f"models/default pretraining: {last['step']} steps, "
                 f"{int(last['tokens']) / 1e6:.1f}M tokens, "
                 f"{float(last['elapsed_s']) / 60:.0f} min of shared CPU")
    fig.tight_layout()
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    fig.savefig(args.out, dpi=90)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
