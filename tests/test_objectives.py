"""The MLM masking rule (15% selected; of those 80% [MASK], 10% random, 10% kept), seeded."""
import json
import subprocess

import numpy as np

from checkpoints import build_dir

VOCAB, MASK = 30522, 103


def run_mask(lines, seed):
    proc = subprocess.run([str(build_dir() / "bert-cli"), "mask", "--seed", str(seed),
                           "--vocab-size", str(VOCAB), "--mask-id", str(MASK)],
                          input="".join(json.dumps(l) + "\n" for l in lines), text=True,
                          capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(l) for l in proc.stdout.splitlines()]


def make_lines(n_lines=400, length=512):
    rng = np.random.default_rng(0)
    lines = []
    for _ in range(n_lines):
        ids = rng.integers(1000, VOCAB, size=length).tolist()
        ids[0], ids[-1] = 101, 102
        special = [1] + [0] * (length - 2) + [1]
        lines.append({"ids": ids, "special": special})
    return lines


def test_masking_rates_follow_bert():
    lines = make_lines()
    out = run_mask(lines, seed=1234)
    selected = masked = random_tok = kept = eligible = 0
    for inp, res in zip(lines, out):
        for orig, new, label, special in zip(inp["ids"], res["ids"], res["labels"],
                                             inp["special"]):
            if special:
                assert label == -100 and new == orig, "special tokens are never selected"
                continue
            eligible += 1
            if label == -100:
                assert new == orig
                continue
            assert label == orig
            selected += 1
            if new == MASK:
                masked += 1
            elif new == orig:
                kept += 1
            else:
                random_tok += 1
    # ~204,000 eligible tokens: binomial standard errors are ~0.1% here, bounds are 5 sigma
    rate = selected / eligible
    print(f"\nselected {rate:.4f}, [MASK] {masked / selected:.4f}, "
          f"random {random_tok / selected:.4f}, kept {kept / selected:.4f}")
    assert abs(rate - 0.15) < 0.004
    assert abs(masked / selected - 0.80) < 0.01
    assert abs(random_tok / selected - 0.10) < 0.008
    assert abs(kept / selected - 0.10) < 0.008


def test_masking_is_reproducible_by_seed():
    lines = make_lines(n_lines=5, length=64)
    assert run_mask(lines, seed=7) == run_mask(lines, seed=7)
    assert run_mask(lines, seed=7) != run_mask(lines, seed=8)
