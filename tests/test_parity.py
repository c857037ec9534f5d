"""Numerical parity of the C forward pass with transformers' BertForPreTraining.

Several checkpoints of different shapes are created by transformers itself; random inputs
(single sequences, pairs, padded batches of mixed lengths) go through both, and MLM logits
at the requested positions, NSP logits and both losses must agree within 1e-4.
"""
import json
import os
import subprocess

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from checkpoints import build_dir, make_checkpoint

TOL = 1e-4

CONFIGS = {
    # name: (make_checkpoint kwargs, number of inputs)
    "h64_l2_a4_gelu": (dict(seed=1), 60),
    "h96_l3_a6_gelu_new": (dict(seed=2, hidden_size=96, num_hidden_layers=3,
                                num_attention_heads=6, intermediate_size=200,
                                hidden_act="gelu_new"), 50),
    "h128_l1_a2_relu_untied": (dict(seed=3, hidden_size=128, num_hidden_layers=1,
                                    num_attention_heads=2, intermediate_size=256,
                                    hidden_act="relu", tie_word_embeddings=False), 40),
    "h48_l4_a12_fp16": (dict(seed=4, hidden_size=48, num_hidden_layers=4,
                             num_attention_heads=12, intermediate_size=96,
                             dtype="float16"), 40),
    "h64_l2_a8_bf16_long": (dict(seed=5, num_attention_heads=8, dtype="bfloat16",
                                 max_position_embeddings=512), 20),
}


def random_inputs(rng, n, max_len, min_len=3, vocab=30522):
    """n inputs: ids with [CLS]/[SEP] structure, pair type ids, MLM labels, NSP labels."""
    out = []
    for i in range(n):
        length = int(rng.integers(min_len, max_len + 1))
        ids = rng.integers(999, vocab, size=length).tolist()
        ids[0] = 101
        ids[-1] = 102
        types = [0] * length
        if i % 2 and length >= 5:  # a pair: [CLS] a [SEP] b [SEP]
            cut = int(rng.integers(2, length - 2))
            ids[cut] = 102
            types = [0] * (cut + 1) + [1] * (length - cut - 1)
        labels = [-100] * length
        n_mask = int(rng.integers(1, max(2, length // 5) + 1))
        for p in rng.choice(np.arange(1, length - 1), size=min(n_mask, length - 2), replace=False):
            labels[int(p)] = ids[int(p)]
            ids[int(p)] = 103
        out.append(dict(ids=ids, type_ids=types, labels=labels,
                        next_sentence_label=int(rng.integers(0, 2))))
    return out


def batches(items, rng):
    i = 0
    while i < len(items):
        size = int(rng.integers(1, 9))
        yield items[i:i + size]
        i += size


def hf_forward(model, batch):
    """Pads the batch as transformers users do and returns logits and losses."""
    T = max(len(x["ids"]) for x in batch)
    ids = torch.zeros((len(batch), T), dtype=torch.long)
    types = torch.zeros_like(ids)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for b, x in enumerate(batch):
        n = len(x["ids"])
        ids[b, :n] = torch.tensor(x["ids"])
        types[b, :n] = torch.tensor(x["type_ids"])
        mask[b, :n] = 1
        labels[b, :n] = torch.tensor(x["labels"])
    nsp_labels = torch.tensor([x["next_sentence_label"] for x in batch])
    with torch.no_grad():
        out = model(input_ids=ids, token_type_ids=types, attention_mask=mask, labels=labels,
                    next_sentence_label=nsp_labels)
    pl = out.prediction_logits.float()
    sl = out.seq_relationship_logits.float()
    mlm_loss = F.cross_entropy(pl.view(-1, pl.shape[-1]), labels.view(-1), ignore_index=-100)
    nsp_loss = F.cross_entropy(sl, nsp_labels)
    rows = torch.cat([pl[b, labels[b] != -100] for b in range(len(batch))])
    return dict(mlm_logits=rows.numpy(), nsp_logits=sl.numpy(), mlm_loss=float(mlm_loss),
                nsp_loss=float(nsp_loss), loss=float(out.loss))


# Where the encoder's products run: oneDNN's brgemm kernels where the CPU has AVX-512 (the
# default there), OpenBLAS elsewhere. DNNL_MAX_CPU_ISA=AVX2 makes oneDNN decline float32 as on
# such a CPU, so both paths are checked on this machine.
KERNEL_ENV = {"default": {}, "openblas": {"DNNL_MAX_CPU_ISA": "AVX2"}}


def run_cli(model_dir, lines, threads=1, kernels="default"):
    """threads: BERT_THREADS, the forward pass split across that many threads (products by
    output columns, attention by head, layer norms by rows), as the server's workers.threads."""
    env = {**os.environ, "BERT_THREADS": str(threads), **KERNEL_ENV[kernels]}
    proc = subprocess.run([str(build_dir() / "bert-cli"), "forward", "--model", str(model_dir)],
                          input="".join(json.dumps(l) + "\n" for l in lines), text=True,
                          capture_output=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(l) for l in proc.stdout.splitlines()]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("parity")
    return {name: make_checkpoint(root / name, **kw) for name, (kw, _) in CONFIGS.items()}


# 3 threads: slices of uneven width and more threads than some batches have heads' work.
@pytest.mark.parametrize("threads,kernels", [(1, "default"), (3, "default"), (3, "openblas")])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_forward_parity(checkpoints, name, threads, kernels):
    from transformers import BertForPreTraining

    kw, n_inputs = CONFIGS[name]
    model = BertForPreTraining.from_pretrained(checkpoints[name], dtype=torch.float32).eval()
    rng = np.random.default_rng(kw["seed"])
    max_len = model.config.max_position_embeddings
    items = random_inputs(rng, n_inputs, min(max_len, 200 if max_len > 128 else max_len))
    if max_len == 512:  # sequences at the model's full length
        items += random_inputs(rng, 2, 512, min_len=510)
    groups = list(batches(items, rng))
    ours = run_cli(checkpoints[name], [{"inputs": g, "nsp": True} for g in groups], threads,
                   kernels)
    worst = dict(mlm_logits=0.0, nsp_logits=0.0, mlm_loss=0.0, nsp_loss=0.0, loss=0.0)
    for g, got in zip(groups, ours):
        assert "error" not in got, got
        ref = hf_forward(model, g)
        for key in worst:
            diff = float(np.max(np.abs(np.asarray(got[key], dtype=np.float64) - ref[key])))
            worst[key] = max(worst[key], diff)
    print(f"\n{name}, {threads} threads, {kernels} kernels: {len(items)} inputs in {len(groups)} batches, max abs diff {worst}")
    for key, diff in worst.items():
        assert diff <= TOL, f"{name}: {key} differs by {diff:.3g} (> {TOL})"
