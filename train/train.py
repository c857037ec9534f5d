#!/usr/bin/env python3
"""Pretrain the project's default BERT (MLM + NSP) on one CPU core.

The model is transformers' BertForPreTraining; the loop only runs the MLM
head over masked positions (the vocabulary projection at every position
would cost more than the encoder), which leaves the loss unchanged because
unmasked positions carry label -100. Examples are sampled on the fly
(dynamic masking) from train/work/data/tokens.npz with a seeded generator.

Writes: <work>/train_log.csv, <work>/ckpt.pt (resumable, every
--ckpt-minutes), and the exported float16 checkpoint in --out.
"""
import argparse
import copy
import csv
import json
import math
import os
import shutil
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pairs  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def parse_args():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.path.join(HERE, "work", "data", "tokens.npz"))
    ap.add_argument("--vocab", default=os.path.join(ROOT, "..", "shared", "vocab",
                                                    "bert-base-uncased"))
    ap.add_argument("--work", default=os.path.join(HERE, "work"))
    ap.add_argument("--out", default=os.path.join(ROOT, "models", "default"))
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--intermediate", type=int, default=1024)
    ap.add_argument("--max-pos", type=int, default=128)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=float, default=0.05, help="fraction of steps")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--bf16", action="store_true", help="bfloat16 autocast for matmuls")
    ap.add_argument("--device", default="cpu", help="cpu, or cuda on a GPU machine")
    ap.add_argument("--max-minutes", type=float, default=70.0,
                    help="hard wall budget: stop and export even if steps remain")
    ap.add_argument("--session-minutes", type=float, default=0.0,
                    help="stop this invocation (checkpoint + export) after this long, "
                         "e.g. to --resume with a longer --seq; 0: no limit")
    ap.add_argument("--time-schedule", action="store_true",
                    help="decay the learning rate over the wall budget when it ends first")
    ap.add_argument("--log-every", type=int, default=20)
    ap.add_argument("--eval-every", type=int, default=200)
    ap.add_argument("--ckpt-minutes", type=float, default=10.0)
    ap.add_argument("--bench", type=int, default=0, help="time N steps, print, exit")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--init-from", default="",
                    help="warm start: a BertModel or BertForPreTraining directory; its shape "
                         "and every weight it has are used, missing heads start fresh")
    ap.add_argument("--head-lr-mult", type=float, default=1.0,
                    help="learning-rate factor for weights --init-from did not provide")
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--export-max-pos", type=int, default=0,
                    help="export only this many position embeddings (0: all)")
    return ap.parse_args()


def build_model(args):
    """-> (model, names of parameters that start fresh)."""
    from transformers import BertConfig, BertForPreTraining
    if args.init_from:
        return warm_start(args)
    cfg = BertConfig(vocab_size=30522, hidden_size=args.hidden, num_hidden_layers=args.layers,
                     num_attention_heads=args.heads, intermediate_size=args.intermediate,
                     max_position_embeddings=args.max_pos, type_vocab_size=2,
                     hidden_act="gelu", hidden_dropout_prob=args.dropout,
                     attention_probs_dropout_prob=args.dropout, layer_norm_eps=1e-12,
                     pad_token_id=0, tie_word_embeddings=True)
    cfg.architectures = ["BertForPreTraining"]
    model = BertForPreTraining(cfg)
    return model, {n for n, _ in model.named_parameters()}


def warm_start(args):
    """BertForPreTraining from a pretrained checkpoint: a sentence encoder
    (BertModel, no heads) gives the embeddings, encoder and pooler; the MLM
    transform, the decoder bias and the NSP classifier start fresh, and the
    decoder stays tied to the word embeddings as in BERT."""
    from safetensors.torch import load_file
    from transformers import BertConfig, BertForPreTraining
    cfg = BertConfig.from_pretrained(args.init_from)
    cfg.architectures = ["BertForPreTraining"]
    cfg.tie_word_embeddings = True
    cfg.hidden_dropout_prob = cfg.attention_probs_dropout_prob = args.dropout
    torch.manual_seed(args.seed)
    model = BertForPreTraining(cfg)
    src = load_file(os.path.join(args.init_from, "model.safetensors"))
    # a BertModel checkpoint names its weights without the "bert." prefix
    if not any(k.startswith("bert.") for k in src):
        src = {"bert." + k: v for k, v in src.items()}
    src = {k: v.float() for k, v in src.items() if not k.endswith("position_ids")}
    missing, unexpected = model.load_state_dict(src, strict=False)
    if unexpected:
        sys.exit(f"--init-from: unexpected weights {unexpected}")
    fresh = {n for n, _ in model.named_parameters() if n in missing}
    print(f"warm start from {args.init_from}: fresh {sorted(fresh)}", flush=True)
    return model, fresh


def pretrain_loss(model, batch):
    """-> (total loss, mlm loss, nsp loss, mlm correct, mlm count, nsp correct)."""
    out = model.bert(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                     token_type_ids=batch["token_type_ids"])
    seq, pooled = out[0], out[1]
    labels = batch["labels"]
    sel = labels != pairs.IGNORE
    h = seq[sel]                                     # (n_masked, hidden)
    mlm_logits = model.cls.predictions(h)            # (n_masked, vocab)
    nsp_logits = model.cls.seq_relationship(pooled)  # (batch, 2)
    y = labels[sel]
    mlm = F.cross_entropy(mlm_logits.float(), y)
    nsp = F.cross_entropy(nsp_logits.float(), batch["next_sentence_label"])
    with torch.no_grad():
        mc = (mlm_logits.argmax(-1) == y).sum().item()
        nc = (nsp_logits.argmax(-1) == batch["next_sentence_label"]).sum().item()
    return mlm + nsp, mlm.item(), nsp.item(), mc, int(y.numel()), nc


DEVICE = torch.device("cpu")


def to_torch(b):
    return {k: torch.from_numpy(v).to(DEVICE) for k, v in b.items()}


def export(model, out_dir, vocab_dir, meta, max_pos=0):
    """Save a normal BertForPreTraining checkpoint in float16 plus the tokenizer files.
    max_pos > 0 keeps only the first max_pos position embeddings (the lengths training
    used), so the exported model admits inputs as long as it was trained on."""
    os.makedirs(out_dir, exist_ok=True)
    if max_pos and max_pos < model.config.max_position_embeddings:
        from transformers import BertForPreTraining
        cfg = copy.deepcopy(model.config)
        cfg.max_position_embeddings = max_pos
        m = BertForPreTraining(cfg)
        sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        key = "bert.embeddings.position_embeddings.weight"
        sd[key] = sd[key][:max_pos]
        sd = {k: v for k, v in sd.items() if not k.endswith(("position_ids", "token_type_ids"))}
        missing, unexpected = m.load_state_dict(sd, strict=False)
        if missing or unexpected:
            sys.exit(f"export: missing {missing}, unexpected {unexpected}")
        m = m.to(torch.float16).eval()
    else:
        m = copy.deepcopy(model).to("cpu", torch.float16).eval()
    m.save_pretrained(out_dir)
    # save_pretrained creates the weights 0600; the server may run as another user
    os.chmod(os.path.join(out_dir, "model.safetensors"), 0o644)
    for f in ["vocab.txt", "tokenizer_config.json"]:
        shutil.copyfile(os.path.join(vocab_dir, f), os.path.join(out_dir, f))
    with open(os.path.join(out_dir, "training_meta.json"), "w") as f:
        json.dump(meta, f, indent=1)


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    os.makedirs(args.work, exist_ok=True)

    train = pairs.Corpus.from_npz(args.data, heldout=False)
    held = pairs.Corpus.from_npz(args.data, heldout=True)
    V = 30522
    global DEVICE
    DEVICE = torch.device(args.device)
    model, fresh = build_model(args)
    model.to(DEVICE)
    seq_cap = model.config.max_position_embeddings
    if args.seq > seq_cap:
        sys.exit(f"--seq {args.seq} exceeds max_position_embeddings {seq_cap}")
    n_params = sum(p.numel() for p in model.parameters())
    init_info = None
    if args.init_from:
        # which weights the run started from, independent of where pip put them
        import hashlib
        with open(os.path.join(args.init_from, "model.safetensors"), "rb") as f:
            init_info = {"path": args.init_from,
                         "sha256": hashlib.file_digest(f, "sha256").hexdigest()}
    print(f"params {n_params} train docs {train.n_docs()} heldout docs {held.n_docs()}",
          flush=True)

    # parameter groups: weight decay on matrices only; weights that start fresh
    # in a warm start may learn faster than the pretrained ones (--head-lr-mult)
    groups = {}
    for n, p in model.named_parameters():
        key = (p.ndim >= 2, n in fresh)
        groups.setdefault(key, []).append(p)
    opt = torch.optim.AdamW([{"params": ps, "weight_decay": 0.01 if mat else 0.0,
                              "lr_mult": args.head_lr_mult if new else 1.0}
                             for (mat, new), ps in sorted(groups.items())],
                            lr=args.lr, betas=(0.9, 0.98), eps=1e-6)
    warm = max(1, int(args.warmup * args.steps))
    budget_s = args.max_minutes * 60

    def progress(step):
        # the CPU is shared, so steps per minute vary: the schedule runs on
        # whichever of steps or wall time is further along, so the learning
        # rate reaches zero when the run stops for either reason
        p = step / args.steps
        if args.time_schedule:
            p = max(p, (elapsed_before + time.time() - t0) / budget_s)
        return min(1.0, p)

    def lr_at(step):
        if step < warm:
            return args.lr * (step + 1) / warm
        p0 = warm / args.steps
        return args.lr * max(0.0, (1.0 - progress(step)) / (1.0 - p0))

    # a fixed held-out probe set, so the curve's held-out points are comparable
    prng = np.random.default_rng(args.seed + 1)
    # (at 128 tokens whatever --seq is, so the curve stays comparable across a
    # --resume with another sequence length)
    probe = [to_torch(pairs.make_batch(held, prng, 64, min(128, seq_cap), V))
             for _ in range(4)]

    step, tokens_seen, elapsed_before = 0, 0, 0.0
    # sequence-length phases of this run ([{seq, first_step}]), kept across --resume
    phases = [{"seq": args.seq, "first_step": 1}]
    ckpt_path = os.path.join(args.work, "ckpt.pt")
    log_path = os.path.join(args.work, "train_log.csv")
    if args.resume and os.path.exists(ckpt_path):
        ck = torch.load(ckpt_path, weights_only=False, map_location=DEVICE)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        rng.bit_generator.state = ck["rng"]
        torch.set_rng_state(ck["torch_rng"].cpu())
        step, tokens_seen, elapsed_before = ck["step"], ck["tokens"], ck["elapsed"]
        phases = ck.get("phases") or [{"seq": ck["args"]["seq"], "first_step": 1}]
        print(f"resumed at step {step}", flush=True)
        if phases[-1]["seq"] != args.seq:
            phases.append({"seq": args.seq, "first_step": step + 1})
    elif not args.bench:
        with open(log_path, "w", newline="") as f:
            csv.writer(f).writerow(["step", "elapsed_s", "lr", "tokens", "loss", "mlm_loss",
                                    "nsp_loss", "mlm_acc", "nsp_acc", "heldout_mlm_loss",
                                    "heldout_mlm_acc", "heldout_nsp_acc"])

    def probe_eval():
        model.eval()
        ml, mc, mn, nc, nn_ = 0.0, 0, 0, 0, 0
        with torch.no_grad(), torch.autocast(DEVICE.type, dtype=torch.bfloat16, enabled=args.bf16):
            for b in probe:
                _, l, _, c, n, k = pretrain_loss(model, b)
                ml += l * n
                mc += c
                mn += n
                nc += k
                nn_ += len(b["next_sentence_label"])
        model.train()
        return ml / mn, mc / mn, nc / nn_

    def meta():
        return {"step": step, "steps_planned": args.steps, "tokens_seen": tokens_seen,
                "wall_seconds": round(elapsed_before + time.time() - t0, 1),
                "batch": args.batch, "seq": args.seq, "lr": args.lr, "seed": args.seed,
                "threads": args.threads, "bf16_autocast": args.bf16, "params": n_params,
                "init_from": init_info,
                "head_lr_mult": args.head_lr_mult, "dropout": args.dropout,
                "warmup": args.warmup, "max_minutes": args.max_minutes, "phases": phases}

    def save_ckpt():
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(),
                    "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
                    "step": step, "tokens": tokens_seen,
                    "elapsed": elapsed_before + time.time() - t0, "args": vars(args),
                    "phases": phases}, ckpt_path)

    model.train()
    t0 = time.time()
    lr_now = 0.0
    last_ckpt = t0
    acc = dict(loss=0.0, mlm=0.0, nsp=0.0, mc=0, mn=0, nc=0, nn=0, k=0)
    end = args.bench if args.bench else args.steps
    stopped_by = "steps"
    while step < end:
        if elapsed_before + time.time() - t0 > budget_s:
            print(f"wall budget reached at step {step}", flush=True)
            stopped_by = "wall budget"
            break
        if args.session_minutes and time.time() - t0 > args.session_minutes * 60:
            print(f"session limit reached at step {step}", flush=True)
            stopped_by = "session limit"
            break
        b = to_torch(pairs.make_batch(train, rng, args.batch, args.seq, V))
        lr_now = lr_at(step)
        for g in opt.param_groups:
            g["lr"] = lr_now * g["lr_mult"]
        with torch.autocast(DEVICE.type, dtype=torch.bfloat16, enabled=args.bf16):
            loss, ml, nl, mc, mn, nc = pretrain_loss(model, b)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        tokens_seen += int(b["attention_mask"].sum())
        acc["loss"] += loss.item()
        acc["mlm"] += ml
        acc["nsp"] += nl
        acc["mc"] += mc
        acc["mn"] += mn
        acc["nc"] += nc
        acc["nn"] += args.batch
        acc["k"] += 1
        if args.bench:
            if step == 2:
                tb = time.time()
            continue
        last = step == args.steps or elapsed_before + time.time() - t0 > budget_s
        if step % args.log_every == 0 or last:
            row = [step, round(elapsed_before + time.time() - t0, 1), f"{lr_now:.3e}",
                   tokens_seen, acc["loss"] / acc["k"], acc["mlm"] / acc["k"],
                   acc["nsp"] / acc["k"], acc["mc"] / acc["mn"], acc["nc"] / acc["nn"]]
            if step % args.eval_every == 0 or last:
                row += list(probe_eval())
            else:
                row += ["", "", ""]
            with open(log_path, "a", newline="") as f:
                csv.writer(f).writerow([f"{x:.4f}" if isinstance(x, float) else x for x in row])
            print(" ".join(str(x) for x in row), flush=True)
            acc = dict(loss=0.0, mlm=0.0, nsp=0.0, mc=0, mn=0, nc=0, nn=0, k=0)
        if time.time() - last_ckpt > args.ckpt_minutes * 60:
            save_ckpt()
            export(model, args.out, args.vocab, dict(meta(), partial=True),
                   args.export_max_pos)
            last_ckpt = time.time()
    if args.bench:
        dt = (time.time() - tb) / max(1, args.bench - 2)
        print(f"bench: {dt:.3f} s/step, batch {args.batch} seq {args.seq} "
              f"({args.batch * args.seq / dt:.0f} tok/s), mlm {acc['mlm'] / acc['k']:.3f}",
              flush=True)
        return
    save_ckpt()
    export(model, args.out, args.vocab, dict(meta(), partial=stopped_by == "session limit",
                                             stopped_by=stopped_by), args.export_max_pos)
    print(f"done: {step} steps, {tokens_seen} tokens, "
          f"{elapsed_before + time.time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
