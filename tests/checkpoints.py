"""Small random BERT checkpoints written by transformers itself, for parity tests.

Each checkpoint is what a user downloads from the hub: config.json, model.safetensors,
vocab.txt (the real bert-base-uncased vocab from ../shared) and tokenizer_config.json.
Weights are drawn with a fixed seed and every parameter, biases and LayerNorm included, is
perturbed so that a wrong bias, a missed LayerNorm or a transposed matrix shows up in the
logits.
"""
import json
import os
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED_VOCAB = REPO.parent / "shared" / "vocab" / "bert-base-uncased"


def build_dir():
    return Path(os.environ.get("BERT_BUILD_DIR", REPO / "build"))


def copy_tokenizer_files(dst, lowercase=True):
    shutil.copy(SHARED_VOCAB / "vocab.txt", dst / "vocab.txt")
    cfg = json.loads((SHARED_VOCAB / "tokenizer_config.json").read_text())
    cfg["do_lower_case"] = lowercase
    (dst / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2))


def perturb_(model, seed, scale):
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g) * scale
            if "LayerNorm.weight" in name:
                p.copy_(1.0 + noise)
            else:
                p.add_(noise)


def make_checkpoint(dst, *, seed=0, arch="pretraining", dtype="float32", scale=0.05, **cfg_kw):
    """Writes a checkpoint to dst with save_pretrained and returns dst.

    arch: "pretraining" (BertForPreTraining), "masked_lm" (BertForMaskedLM: no NSP head),
    "base" (BertModel: no heads, no "bert." prefix).
    """
    import torch
    from transformers import BertConfig, BertForMaskedLM, BertForPreTraining, BertModel

    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    kw = dict(vocab_size=30522, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
              intermediate_size=128, max_position_embeddings=128)
    kw.update(cfg_kw)
    config = BertConfig(**kw)
    cls = {"pretraining": BertForPreTraining, "masked_lm": BertForMaskedLM, "base": BertModel}[arch]
    model = cls(config).eval()
    perturb_(model, seed + 1, scale)
    if dtype != "float32":
        model = model.to(getattr(torch, dtype))
    model.save_pretrained(dst, safe_serialization=True)
    copy_tokenizer_files(dst)
    return dst
