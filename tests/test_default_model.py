"""models/default: the checkpoint the project ships.

transformers is the oracle: it must load the directory as a normal
BertForPreTraining + BertTokenizerFast checkpoint, and bert-cli must give the
same MLM logits (at the masked positions) and NSP logits as transformers on
held-out text the model never trained on. The held-out evaluation script is
re-run in its fast mode and must beat the trivial baselines and the model this
one replaced, on held-out text and on the everyday probe sentences
(train/probes.json), deterministically.
"""
import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
MODEL = REPO / "models" / "default"
HELDOUT = REPO / "train" / "heldout" / "docs.jsonl.gz"
N_PAIRS = 20
ATOL = 1e-4

# `evaluate.py --fast` figures of the model shipped before this one (4 layers,
# hidden 256, trained from scratch for 68 min): the current model must beat them
PREVIOUS_FAST = {"mlm_top1": 0.161, "mlm_top5": 0.298, "nsp_accuracy": 0.820,
                 "probe_top1": 0.0, "probe_top5": 0.0}


def bert_cli():
    return Path(os.environ.get("BERT_BUILD_DIR", REPO / "build")) / "bert-cli"


@pytest.fixture(scope="module")
def hf():
    import torch
    from transformers import BertForPreTraining, BertTokenizerFast

    torch.set_num_threads(1)
    model = BertForPreTraining.from_pretrained(MODEL, dtype=torch.float32).eval()
    tok = BertTokenizerFast.from_pretrained(MODEL)
    return model, tok


def heldout_pairs():
    """N_PAIRS sentence pairs from held-out documents: even i true next (label 0),
    odd i the first sentence of another held-out document (label 1)."""
    with gzip.open(HELDOUT, "rt") as f:
        docs = [json.loads(line)["sentences"] for line in f]
    docs = [d for d in docs if len(d) >= 2]
    out = []
    for i in range(N_PAIRS):
        d = docs[(i * 37) % len(docs)]
        if i % 2 == 0:
            out.append((d[0], d[1], 0))
        else:
            other = docs[(i * 37 + len(docs) // 2) % len(docs)]
            out.append((d[0], other[0], 1))
    return out


def masked_inputs(tok):
    """Tokenised pairs with about 15% of the non-special positions masked."""
    rng = np.random.default_rng(0)
    items = []
    for a, b, label in heldout_pairs():
        enc = tok(a, b, truncation=True, max_length=128)
        ids = list(enc["input_ids"])
        special = {tok.cls_token_id, tok.sep_token_id}
        cand = [i for i, t in enumerate(ids) if t not in special]
        k = max(1, round(0.15 * len(cand)))
        pos = sorted(int(p) for p in rng.choice(cand, size=k, replace=False))
        labels = [-100] * len(ids)
        for p in pos:
            labels[p] = ids[p]
            ids[p] = tok.mask_token_id
        items.append({"ids": ids, "type_ids": list(enc["token_type_ids"]),
                      "mlm_positions": pos, "labels": labels, "nsp_label": label})
    return items


def run_cli_forward(request):
    exe = bert_cli()
    assert exe.exists(), f"{exe} not built (make)"
    proc = subprocess.run([str(exe), "forward", "--model", str(MODEL)],
                          input=json.dumps(request) + "\n", capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout[:2000]
    out = json.loads(lines[0])
    assert "error" not in out, out
    return out


def hf_forward(model, items):
    import torch

    T = max(len(it["ids"]) for it in items)
    ids = torch.zeros((len(items), T), dtype=torch.long)
    types = torch.zeros_like(ids)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for b, it in enumerate(items):
        n = len(it["ids"])
        ids[b, :n] = torch.tensor(it["ids"])
        types[b, :n] = torch.tensor(it["type_ids"])
        mask[b, :n] = 1
        labels[b, :n] = torch.tensor(it["labels"])
    nsp_labels = torch.tensor([it["nsp_label"] for it in items])
    with torch.no_grad():
        out = model(input_ids=ids, token_type_ids=types, attention_mask=mask, labels=labels,
                    next_sentence_label=nsp_labels)
    mlm = np.concatenate([out.prediction_logits[b, it["mlm_positions"]].numpy()
                          for b, it in enumerate(items)])
    return mlm, out.seq_relationship_logits.numpy(), float(out.loss)


def test_checkpoint_is_a_normal_bert_for_pretraining():
    cfg = json.loads((MODEL / "config.json").read_text())
    assert cfg["architectures"] == ["BertForPreTraining"]
    assert cfg["model_type"] == "bert"
    for name in ["config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json",
                 "MODEL_CARD.md", "training_curves.png"]:
        assert (MODEL / name).is_file(), name
    total = sum(p.stat().st_size for p in MODEL.rglob("*") if p.is_file())
    assert total < 50 * 1024 * 1024, total
    vocab = (MODEL / "vocab.txt").read_text().splitlines()
    assert len(vocab) == cfg["vocab_size"] == 30522


def test_bert_cli_loads_the_default_model():
    proc = subprocess.run([str(bert_cli()), "check", "--model", str(MODEL)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_cli_logits_match_transformers_on_heldout_text(hf):
    model, tok = hf
    items = masked_inputs(tok)
    assert len(items) == N_PAIRS
    ref_mlm, ref_nsp, _ = hf_forward(model, items)
    req = {"inputs": [{k: it[k] for k in ("ids", "type_ids", "mlm_positions")} for it in items],
           "nsp": True}
    got = run_cli_forward(req)
    mlm = np.asarray(got["mlm_logits"], dtype=np.float64)
    nsp = np.asarray(got["nsp_logits"], dtype=np.float64)
    assert mlm.shape == ref_mlm.shape == (sum(len(it["mlm_positions"]) for it in items), 30522)
    assert nsp.shape == ref_nsp.shape == (N_PAIRS, 2)
    assert np.max(np.abs(mlm - ref_mlm)) <= ATOL
    assert np.max(np.abs(nsp - ref_nsp)) <= ATOL
    # the trained model must prefer "is next" for most of the true pairs and
    # "random" for most of the others (a weak check that the weights are not noise)
    labels = np.array([it["nsp_label"] for it in items])
    assert np.mean(ref_nsp.argmax(-1) == labels) >= 0.6


def test_cli_losses_match_transformers(hf):
    model, tok = hf
    items = masked_inputs(tok)
    _, _, ref_loss = hf_forward(model, items)
    req = {"inputs": [{k: it[k] for k in ("ids", "type_ids", "labels")}
                      | {"next_sentence_label": it["nsp_label"]} for it in items]}
    got = run_cli_forward(req)
    assert abs(got["loss"] - ref_loss) <= ATOL
    assert abs(got["mlm_loss"] + got["nsp_loss"] - ref_loss) <= ATOL


def run_eval(tmp_path, name):
    out = tmp_path / name
    proc = subprocess.run([sys.executable, str(REPO / "train" / "evaluate.py"), "--fast",
                           "--model", str(MODEL), "--json", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def fast_eval(tmp_path_factory):
    return run_eval(tmp_path_factory.mktemp("eval"), "a.json")


def test_heldout_evaluation_beats_baselines_deterministically(fast_eval, tmp_path):
    r1 = dict(fast_eval)
    assert r1["pairs"] == 128 and r1["mlm_positions"] > 1000
    # the baselines are what "always answer the most frequent token(s)" scores
    assert 0.0 < r1["baseline_top1"] < 0.1
    assert r1["mlm_top1"] > r1["baseline_top1"] + 0.15
    assert r1["mlm_top5"] > r1["baseline_top5"] + 0.15
    assert r1["mlm_top5"] >= r1["mlm_top1"]
    assert 0.4 <= r1["nsp_baseline"] <= 0.6
    assert r1["nsp_accuracy"] > r1["nsp_baseline"] + 0.2
    # the everyday probes: frequent tokens answer none of them
    assert r1["probe_items"] >= 60
    assert r1["probe_baseline_top5"] == 0.0
    assert r1["probe_top5"] >= r1["probe_top1"] > r1["probe_baseline_top1"]
    r2 = run_eval(tmp_path, "b.json")
    for r in (r1, r2):
        r.pop("seconds")
    assert r1 == r2


def test_beats_the_model_it_replaced(fast_eval):
    r = fast_eval
    for key in ("mlm_top1", "mlm_top5", "probe_top1", "probe_top5"):
        assert r[key] > PREVIOUS_FAST[key] + 0.05, (key, r[key])
