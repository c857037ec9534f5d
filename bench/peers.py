#!/usr/bin/env python3
"""The peers of bert-serve, timed in-process on the same requests: transformers'
pipeline("fill-mask"), BertForPreTraining on PyTorch, and ONNX Runtime on an export of it.

Run by bench.py as a subprocess per peer (so one peer's thread pools cannot spin while another
system is measured):  peers.py {torch|onnx} --model DIR --work FILE.json [--onnx-dir DIR]
--work is what bench.py wants timed (request texts, iteration counts, throughput batch);
one JSON object with the timings goes to stdout.

Everything is set up to favour the peers: no HTTP, no JSON, the model already loaded, all cores
and each framework's thread count (all cores or one) picked by a short calibration just
before timing, whichever answered the throughput request faster; and besides the stock forward a variant that runs the heads
only on the rows the answer needs (the [MASK] rows for fill-mask, the pooler for NSP), which is
what bert-serve does.
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

TOP_K = 5  # bert-serve's limits.default_top_k, and the pipeline's default


def percentile(xs, q):
    """Nearest-rank percentile of a list of numbers."""
    s = sorted(xs)
    k = max(0, min(len(s) - 1, int(np.ceil(q / 100.0 * len(s))) - 1))
    return s[k]


def time_calls(fn, iters, cap_s, warmup=2):
    """Milliseconds of iters calls of fn (fewer if cap_s runs out; at least 5)."""
    for _ in range(warmup):
        fn()
    ms = []
    start = time.perf_counter()
    while len(ms) < iters and (len(ms) < 5 or time.perf_counter() - start < cap_s):
        t0 = time.perf_counter()
        fn()
        ms.append((time.perf_counter() - t0) * 1e3)
    return {"n": len(ms), "p50_ms": percentile(ms, 50), "p99_ms": percentile(ms, 99),
            "mean_ms": float(np.mean(ms)), "min_ms": min(ms)}


def calibrate(options, make_call, reps=3):
    """Median ms of reps calls (after one warm-up) for each option; returns the fastest option
    and all medians. On a shared CPU one thread can beat a spinning two-thread pool."""
    med = {}
    for opt in options:
        call = make_call(opt)
        call()
        ms = []
        for _ in range(reps):
            t0 = time.perf_counter()
            call()
            ms.append((time.perf_counter() - t0) * 1e3)
        med[opt] = float(np.median(ms))
    return min(med, key=med.get), med


def softmax_topk(logits, k):
    """logits (M,V) numpy -> ids (M,k), probabilities (M,k), as the pipeline ranks them."""
    z = logits - logits.max(axis=-1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=-1, keepdims=True)
    part = np.argpartition(-p, k - 1, axis=-1)[:, :k]  # O(V), not a full sort of V
    order = np.argsort(-np.take_along_axis(p, part, axis=-1), axis=-1)
    ids = np.take_along_axis(part, order, axis=-1)
    return ids, np.take_along_axis(p, ids, axis=-1)


class Rows:
    """Tokenization and [MASK] rows of one request, shared by every peer."""

    def __init__(self, tok, req):
        if req["kind"] == "fill-mask":
            self.enc = tok(req["text"], return_tensors="np")
        else:
            self.enc = tok(req["text"], req["text_pair"], return_tensors="np")
        ids = self.enc["input_ids"][0]
        self.mask_pos = np.nonzero(ids == tok.mask_token_id)[0].astype(np.int64)


def fill_answer(tok, ids_k, probs_k):
    return [[{"token_str": tok.convert_ids_to_tokens(int(i)), "score": float(p)}
             for i, p in zip(r_ids, r_p)] for r_ids, r_p in zip(ids_k, probs_k)]


def nsp_answer(logits):
    z = logits - logits.max(axis=-1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=-1, keepdims=True)


# ---------------------------------------------------------------- PyTorch ----

def run_torch(args, work):
    import torch
    from transformers import BertForPreTraining, BertTokenizerFast, pipeline

    tok = BertTokenizerFast.from_pretrained(args.model)
    model = BertForPreTraining.from_pretrained(args.model).eval()
    fill = pipeline("fill-mask", model=args.model, tokenizer=args.model, device="cpu")
    fill.model.eval()
    out = {"system": "torch", "torch": torch.__version__,
           "pipeline": [], "stock": [], "rows": [], "batch": []}

    def stock_call(req):
        def call():
            r = Rows(tok, req)
            with torch.inference_mode():
                o = model(**{k: torch.from_numpy(v) for k, v in r.enc.items()})
            if req["kind"] == "fill-mask":
                lg = o.prediction_logits[0, torch.from_numpy(r.mask_pos)].float().numpy()
                return fill_answer(tok, *softmax_topk(lg, TOP_K))
            return nsp_answer(o.seq_relationship_logits.float().numpy())
        return call

    def rows_forward(enc, mask_pos, kind):
        """Encoder, then the heads only where the answer needs them. enc tensors (B,T)."""
        h = model.bert(**enc)
        if kind == "fill-mask":
            seq = h.last_hidden_state  # (B,T,C)
            return model.cls.predictions(seq.reshape(-1, seq.shape[-1])[mask_pos])
        return model.cls.seq_relationship(h.pooler_output)

    def rows_call(req):
        def call():
            r = Rows(tok, req)
            with torch.inference_mode():
                lg = rows_forward({k: torch.from_numpy(v) for k, v in r.enc.items()},
                                  torch.from_numpy(r.mask_pos), req["kind"]).float().numpy()
            if req["kind"] == "fill-mask":
                return fill_answer(tok, *softmax_topk(lg, TOP_K))
            return nsp_answer(lg)
        return call

    def threads_call(n):
        torch.set_num_threads(n)
        return rows_call(work["throughput_request"])
    best, med = calibrate(sorted({os.cpu_count(), 1}, reverse=True), threads_call)
    torch.set_num_threads(best)
    out["threads"], out["calibration_ms"] = best, med

    for req in work["requests"]:
        tokens = int(Rows(tok, req).enc["input_ids"].shape[1])
        if tokens != req["tokens"]:
            raise SystemExit(f"tokenizer gives {tokens} tokens for a {req['tokens']}-token request")
        base = {"kind": req["kind"], "tokens": tokens}
        if req["kind"] == "fill-mask":
            def pipe_call(text=req["text"]):
                return fill(text, top_k=TOP_K)
            out["pipeline"].append({**base, **time_calls(pipe_call, req["iters"], work["cap_s"])})
        out["stock"].append({**base, **time_calls(stock_call(req), req["iters"], work["cap_s"])})
        out["rows"].append({**base, **time_calls(rows_call(req), req["iters"], work["cap_s"])})

    # Throughput without a server: B copies of the throughput request in one forward.
    treq = work["throughput_request"]
    B = work["peer_batch"]
    r = Rows(tok, treq)
    enc = {k: torch.from_numpy(np.repeat(v, B, axis=0)) for k, v in r.enc.items()}
    T = enc["input_ids"].shape[1]
    flat_pos = torch.from_numpy(np.concatenate([r.mask_pos + b * T for b in range(B)]))

    def batch_call():
        with torch.inference_mode():
            lg = rows_forward(enc, flat_pos, "fill-mask").float().numpy()
        return softmax_topk(lg, TOP_K)
    t = time_calls(batch_call, max(3, work["batch_iters"]), work["cap_s"])
    out["batch"].append({"variant": "rows", "batch": B, "tokens": int(T), **t,
                         "requests_per_s": B / (t["p50_ms"] / 1e3)})
    return out


# ----------------------------------------------------------- ONNX Runtime ----

class RowsWrapper:
    """BertForPreTraining with the MLM head gathered to mask_pos (M,) rows of the flattened
    (B*T) sequence output, and NSP from the pooler; M may be 0 (an NSP request)."""

    @staticmethod
    def build(model):
        import torch

        class Wrapped(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, input_ids, token_type_ids, attention_mask, mask_pos):
                h = self.m.bert(input_ids=input_ids, token_type_ids=token_type_ids,
                                attention_mask=attention_mask)
                seq = h.last_hidden_state
                rows = seq.reshape(-1, seq.shape[-1]).index_select(0, mask_pos)
                return self.m.cls.predictions(rows), self.m.cls.seq_relationship(h.pooler_output)

        return Wrapped(model).eval()


def export_onnx(model_dir, onnx_path, log):
    """Exports RowsWrapper with dynamic batch, length and row count. Tries the dynamo
    exporter first (torch's default), then the legacy TorchScript one. Returns the method."""
    import torch
    from transformers import BertForPreTraining

    # float32 whatever the checkpoint stores (models/default is float16 on disk): the export
    # is the float32 model that quantize_dynamic starts from
    model = BertForPreTraining.from_pretrained(model_dir, dtype=torch.float32).eval()
    w = RowsWrapper.build(model)
    B, T = 2, 16
    ex = (torch.randint(1000, 2000, (B, T)), torch.zeros(B, T, dtype=torch.long),
          torch.ones(B, T, dtype=torch.long), torch.tensor([3, 20], dtype=torch.long))
    names_in = ["input_ids", "token_type_ids", "attention_mask", "mask_pos"]
    names_out = ["mlm_logits", "nsp_logits"]
    errors = []
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        from torch.export import Dim

        b, t, m = Dim("batch", min=1, max=1024), Dim("seq", min=2, max=4096), Dim("rows", max=65536)
        shapes = {"input_ids": {0: b, 1: t}, "token_type_ids": {0: b, 1: t},
                  "attention_mask": {0: b, 1: t}, "mask_pos": {0: m}}
        torch.onnx.export(w, ex, str(onnx_path), dynamo=True, input_names=names_in,
                          output_names=names_out, dynamic_shapes=shapes, optimize=True,
                          external_data=False)
        return "torch.onnx.export(dynamo=True)", errors
    except Exception as e:  # noqa: BLE001 - any exporter failure sends us to the fallback
        errors.append(f"dynamo export failed: {type(e).__name__}: {str(e)[:500]}")
        log(errors[-1])
    axes = {"input_ids": {0: "batch", 1: "seq"}, "token_type_ids": {0: "batch", 1: "seq"},
            "attention_mask": {0: "batch", 1: "seq"}, "mask_pos": {0: "rows"},
            "mlm_logits": {0: "rows"}, "nsp_logits": {0: "batch"}}
    torch.onnx.export(w, ex, str(onnx_path), dynamo=False, input_names=names_in,
                      output_names=names_out, dynamic_axes=axes, opset_version=17)
    return "torch.onnx.export(dynamo=False)", errors


def quantize_onnx(onnx_path, q_path):
    """ONNX Runtime's own dynamic quantization of the exported model: int8 weights (QInt8,
    per tensor, as quantize_dynamic defaults), activations quantized per batch at run time."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(onnx_path), str(q_path), weight_type=QuantType.QInt8)


def run_onnx(args, work):
    import onnxruntime as ort
    from transformers import BertTokenizerFast

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    onnx_path = Path(args.onnx_dir) / "model.onnx"
    stamp = Path(args.onnx_dir) / "stamp.json"
    want = {"model": str(Path(args.model).resolve()),
            "mtime": os.path.getmtime(Path(args.model) / "model.safetensors")}
    t0 = time.perf_counter()
    if onnx_path.exists() and stamp.exists() and json.loads(stamp.read_text()).get("src") == want:
        meta = json.loads(stamp.read_text())
        exported = False
    else:
        method, errors = export_onnx(args.model, onnx_path, log)
        meta = {"src": want, "method": method, "errors": errors}
        stamp.write_text(json.dumps(meta))
        exported = True
    export_s = time.perf_counter() - t0
    if args.peer == "onnx-int8":
        q_path = onnx_path.with_name("model.int8.onnx")
        if exported or not q_path.exists():
            quantize_onnx(onnx_path, q_path)
        onnx_path = q_path

    def session(threads):
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        return ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])

    tok = BertTokenizerFast.from_pretrained(args.model)
    out = {"system": "onnxruntime" if args.peer == "onnx" else "onnxruntime int8",
           "onnxruntime": ort.__version__,
           "export": {"method": meta["method"], "errors": meta["errors"], "exported_now": exported,
                      "seconds": export_s},
           "rows": [], "batch": []}

    def feed(r, B=1):
        f = {k: np.repeat(r.enc[k].astype(np.int64), B, axis=0)
             for k in ("input_ids", "token_type_ids", "attention_mask")}
        T = f["input_ids"].shape[1]
        f["mask_pos"] = np.concatenate([r.mask_pos + b * T for b in range(B)]).astype(np.int64)
        return f

    sessions = {}

    def threads_call(n):
        sessions[n] = session(n)
        f = feed(Rows(tok, work["throughput_request"]))
        return lambda: softmax_topk(sessions[n].run(None, f)[0], TOP_K)
    best, med = calibrate(sorted({os.cpu_count(), 1}, reverse=True), threads_call)
    sess = sessions[best]
    sessions.clear()
    out["threads"], out["calibration_ms"] = best, med

    # The export must compute what transformers computes: compare once against PyTorch (the
    # int8 model only approximately: its difference is reported, not checked).
    out["max_abs_diff_vs_torch"] = check_against_torch(args.model, tok, sess, feed, work)

    def call_for(req):
        def call():
            r = Rows(tok, req)
            f = feed(r)
            if req["kind"] != "fill-mask":
                f["mask_pos"] = np.zeros(0, np.int64)
            mlm, nsp = sess.run(None, f)
            if req["kind"] == "fill-mask":
                return fill_answer(tok, *softmax_topk(mlm, TOP_K))
            return nsp_answer(nsp)
        return call

    for req in work["requests"]:
        tokens = int(Rows(tok, req).enc["input_ids"].shape[1])
        base = {"kind": req["kind"], "tokens": tokens}
        out["rows"].append({**base, **time_calls(call_for(req), req["iters"], work["cap_s"])})

    B = work["peer_batch"]
    f = feed(Rows(tok, work["throughput_request"]), B)
    def batch_call():
        return softmax_topk(sess.run(None, f)[0], TOP_K)
    t = time_calls(batch_call, max(3, work["batch_iters"]), work["cap_s"])
    out["batch"].append({"variant": "rows", "batch": B, "tokens": int(f["input_ids"].shape[1]),
                         **t, "requests_per_s": B / (t["p50_ms"] / 1e3)})
    return out


def check_against_torch(model_dir, tok, sess, feed, work):
    import torch
    from transformers import BertForPreTraining

    model = BertForPreTraining.from_pretrained(model_dir).eval()
    worst = 0.0
    for req in work["requests"][:2]:
        r = Rows(tok, req)
        with torch.inference_mode():
            o = model(**{k: torch.from_numpy(v) for k, v in r.enc.items()})
        f = feed(r)
        if len(f["mask_pos"]) == 0:
            f["mask_pos"] = np.zeros(1, np.int64)
        mlm, nsp = sess.run(None, f)
        ref = o.prediction_logits[0].numpy()[f["mask_pos"]]
        worst = max(worst, float(np.abs(mlm - ref).max()),
                    float(np.abs(nsp - o.seq_relationship_logits.numpy()).max()))
    return worst


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("peer", choices=["torch", "onnx", "onnx-int8"])
    ap.add_argument("--model", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--onnx-dir")
    args = ap.parse_args()
    work = json.loads(Path(args.work).read_text())
    res = run_torch(args, work) if args.peer == "torch" else run_onnx(args, work)
    json.dump(res, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
