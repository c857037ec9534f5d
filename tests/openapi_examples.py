#!/usr/bin/env python3
"""Live examples for openapi.yaml: every documented answer, produced by the real server.

    python3 tests/openapi_examples.py --write [--model models/default]   regenerate examples
    python3 tests/openapi_examples.py --check [--model models/default]   validate, change nothing

Both start build/bert-server (BERT_BUILD_DIR) on the checkpoint, send every case below
(errors included: overload, timeout and draining are provoked for real), validate each answer
against the schema openapi.yaml declares for it, and with --write store the answers as the
examples of openapi.yaml (request bodies too). info.x-examples-model records which
checkpoint produced them and info.x-examples-provisional whether that checkpoint was still
being trained (its training_meta.json says "partial"); tests/test_http_openapi.py holds the
file to both.
"""
import argparse
import json
import shutil
import signal
import socket
import sys
import tempfile
import threading
from pathlib import Path

import requests
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from checkpoints import REPO  # noqa: E402
from http_helpers import Server, default_config, metric, wait_until  # noqa: E402

SPEC = REPO / "openapi.yaml"
TOKEN = "example-token"

FM, NS, TK = "/v1/fill-mask", "/v1/next-sentence", "/v1/tokenize"
DC, SC = "/v1/decode", "/v1/score"


def case(name, path, status, body=None, method="post", server="default", raw=None,
         headers=None, summary=""):
    return dict(name=name, path=path, status=status, body=body, method=method, server=server,
                raw=raw, headers=headers or {}, summary=summary)


HEAVY = {"inputs": ["[MASK] " + "word " * 120] * 16, "parameters": {"top_k": 100}}

CASES = [
    # fill-mask answers
    case("single_mask", FM, 200, {"inputs": "The capital of France is [MASK].",
                                  "parameters": {"top_k": 3}}, summary="one mask"),
    case("two_masks", FM, 200, {"inputs": "The [MASK] sat on the [MASK].",
                                "parameters": {"top_k": 2}}, summary="one list per mask"),
    case("targets", FM, 200, {"inputs": "The capital of France is [MASK].",
                              "parameters": {"targets": ["paris", "london", "Rome"]}},
         summary="candidates restricted to targets"),
    case("batch", FM, 200, {"inputs": ["Paris is the [MASK] of France.",
                                       "I like [MASK] music."], "parameters": {"top_k": 2}},
         summary="a list of inputs"),
    case("labels", FM, 200, {"inputs": "Paris is the [MASK] of France.",
                             "labels": [-100, -100, -100, -100, 3007, -100, -100, -100, -100],
                             "parameters": {"top_k": 2}},
         summary="with labels: the MLM loss"),
    case("truncate_left", FM, 200, {"inputs": "word " * 600 + "the end is [MASK].",
                                    "parameters": {"top_k": 2, "truncate": True,
                                                   "truncation_direction": "left"}},
         summary="an over-long input truncated from the left"),
    # fill-mask errors
    case("invalid_json", FM, 400, raw=b'{"inputs": "a [MASK]"', summary="malformed JSON"),
    case("invalid_utf8", FM, 400, raw=b'{"inputs": "caf\xe9 [MASK]"}',
         summary="Latin-1 bytes, not UTF-8"),
    case("invalid_request", FM, 400, {"inputs": "a [MASK]", "parameters": {"top_k": "5"}},
         summary="top_k is a string"),
    case("unauthorized", FM, 401, {"inputs": "a [MASK]"}, server="auth",
         summary="auth configured, no token"),
    case("payload_too_large", FM, 413, raw="content-length", summary="Content-Length over "
         "server.max_body_bytes"),
    case("unsupported_media_type", FM, 415, raw=b'{"inputs": "a [MASK]"}',
         headers={"Content-Type": "text/plain"}, summary="not application/json"),
    case("no_mask", FM, 422, {"inputs": "There is nothing to fill here."}),
    case("too_many_masks", FM, 422, {"inputs": "[MASK] " * 33}),
    case("input_too_long", FM, 422, {"inputs": "[MASK] " + "word " * 1000}),
    case("too_many_inputs", FM, 422, {"inputs": ["a [MASK]"] * 33}),
    case("invalid_top_k", FM, 422, {"inputs": "a [MASK]", "parameters": {"top_k": 0}}),
    case("unknown_target", FM, 422, {"inputs": "a [MASK]", "parameters": {"targets": [" "]}}),
    case("invalid_labels", FM, 422, {"inputs": "a [MASK]", "labels": [-100, 5]}),
    case("head_unavailable", NS, 422, {"inputs": {"text": "a", "text_pair": "b"}},
         server="mlm_only", summary="a checkpoint without the NSP head"),
    case("overloaded", FM, 503, HEAVY, server="overload", summary="queue full"),
    case("draining", FM, 503, {"inputs": "a [MASK]"}, server="drain",
         summary="after SIGTERM"),
    case("timeout", FM, 504, HEAVY, server="timeout",
         summary="queued longer than request_timeout_ms"),
    # next sentence
    case("pair", NS, 200, {"inputs": {"text": "He went to the store.",
                                      "text_pair": "He bought a gallon of milk."}}),
    case("pairs_with_labels", NS, 200, {"inputs": [
        {"text": "He went to the store.", "text_pair": "He bought a gallon of milk.",
         "label": 0},
        {"text": "He went to the store.", "text_pair": "Penguins are flightless birds.",
         "label": 1}]}, summary="labels add the NSP loss"),
    case("ns_invalid_request", NS, 400, {"inputs": {"text": "only one text"}}),
    case("ns_invalid_labels", NS, 422, {"inputs": {"text": "a", "text_pair": "b",
                                                   "label": 2}}),
    # tokenize
    case("text", TK, 200, {"inputs": "Hello, world!"}),
    case("text_pair", TK, 200, {"inputs": {"text": "How are you?", "text_pair": "Très bien."}}),
    case("tk_batch", TK, 200, {"inputs": ["one", "two words"]}),
    case("tk_invalid_request", TK, 400, {"inputs": 42}),
    # decode
    case("ids", DC, 200, {"ids": [101, 7592, 1010, 2088, 999, 2009, 1005, 1055, 102]},
         summary="special tokens skipped, punctuation cleaned up"),
    case("keep_special", DC, 200, {"ids": [101, 7592, 103, 102], "skip_special_tokens": False}),
    case("dc_batch", DC, 200, {"ids": [[101, 2028, 102], [2048, 2616, 1012]]},
         summary="a list of lists"),
    case("dc_invalid_input", DC, 422, {"ids": [7592, 40000]}, summary="an id outside the vocabulary"),
    case("dc_too_many_tokens", DC, 422, {"ids": [1996] * 16385},
         summary="more than limits.max_decode_ids ids"),
    # score
    case("sentence", SC, 200, {"inputs": "The cat sat on the mat."}),
    case("sc_batch", SC, 200, {"inputs": ["I like music.", "Music like I."]},
         summary="a list of inputs"),
    case("sc_input_too_long", SC, 422, {"inputs": "word " * 129},
         summary="more than limits.max_score_tokens word pieces"),
    case("sc_head_unavailable", SC, 422, {"inputs": "a sentence"}, server="base",
         summary="a checkpoint without the masked-LM head"),
    # GET routes
    case("model", "/v1/models", 200, method="get"),
    case("models_unauthorized", "/v1/models", 401, method="get", server="auth"),
    case("healthy", "/healthz", 200, method="get"),
    case("ready", "/readyz", 200, method="get"),
    case("draining", "/readyz", 503, method="get", server="drain"),
    case("not_found", "/v2/fill-mask", 404, method="get", summary="unknown path"),
    case("method_not_allowed", FM, 405, method="get", summary="GET on a POST route"),
]


# ---- spec helpers ----


def load_spec(path=SPEC):
    return yaml.safe_load(Path(path).read_text())


def resolve(spec, node):
    while isinstance(node, dict) and "$ref" in node and len(node) == 1:
        parts = node["$ref"].lstrip("#/").split("/")
        node = spec
        for p in parts:
            node = node[p]
    return node


def response_slot(spec, c):
    """The response object (components' for shared ones) documenting case c."""
    if c["status"] == 404:
        return spec["components"]["responses"]["NotFound"]
    if c["status"] == 405:
        return spec["components"]["responses"]["MethodNotAllowed"]
    op = spec["paths"][c["path"]][c["method"]]
    return resolve(spec, op["responses"][str(c["status"])])


def validator(spec, schema):
    from jsonschema import Draft202012Validator

    root = dict(schema)
    root["components"] = spec["components"]
    return Draft202012Validator(root)


def schema_errors(spec, c, body):
    slot = response_slot(spec, c)
    schema = slot["content"]["application/json"]["schema"]
    return [e.message for e in validator(spec, schema).iter_errors(body)]


# ---- running the cases ----


def mlm_only_copy(model_dir, dst):
    """The checkpoint without its next-sentence head."""
    from safetensors.numpy import load_file, save_file

    dst.mkdir(parents=True, exist_ok=True)
    for f in Path(model_dir).iterdir():
        if f.is_file() and f.name != "model.safetensors":
            shutil.copy(f, dst / f.name)
    tensors = load_file(str(Path(model_dir) / "model.safetensors"))
    kept = {k: v for k, v in tensors.items() if "seq_relationship" not in k}
    assert len(kept) < len(tensors), "no NSP head found to drop"
    save_file(kept, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst


def no_mlm_copy(model_dir, dst):
    """The checkpoint without its masked-LM head (cls.predictions)."""
    from safetensors.numpy import load_file, save_file

    dst.mkdir(parents=True, exist_ok=True)
    for f in Path(model_dir).iterdir():
        if f.is_file() and f.name != "model.safetensors":
            shutil.copy(f, dst / f.name)
    tensors = load_file(str(Path(model_dir) / "model.safetensors"))
    kept = {k: v for k, v in tensors.items() if "cls.predictions" not in k}
    assert len(kept) < len(tensors), "no MLM head found to drop"
    save_file(kept, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst


def send(srv, c):
    if c["raw"] == "content-length":
        req = (f"POST {c['path']} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               f"Content-Length: 100000000\r\n\r\n").encode()
        with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as s:
            s.sendall(req)
            data = b""
            while b"\r\n\r\n" not in data or not data.endswith(b"}"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        return int(head.split()[1]), json.loads(body)
    if c["method"] == "get":
        r = srv.get(c["path"])
    elif c["raw"] is not None:
        h = {"Content-Type": "application/json"}
        h.update(c["headers"])
        r = requests.post(srv.url + c["path"], data=c["raw"], headers=h, timeout=60)
    else:
        r = srv.post(c["path"], c["body"], headers=c["headers"])
    return r.status_code, r.json()


def burst(srv, c, n=24):
    """n identical requests at once; returns the first answer with c's status."""
    out = []
    barrier = threading.Barrier(n)

    def one():
        barrier.wait()
        try:
            r = srv.post(c["path"], c["body"], timeout=120)
            out.append((r.status_code, r.json()))
        except requests.RequestException:
            pass

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for status, body in out:
        if status == c["status"]:
            return status, body
    raise RuntimeError(f"{c['name']}: no {c['status']} among {[s for s, _ in out]}")


def drain_cases(model_dir, tmp, cases):
    cfg = default_config(model_dir, workers={"count": 1, "batch_max_tokens": 256},
                         shutdown={"grace_period_s": 120})
    srv = Server(tmp, model_dir, cfg, name="drain")
    got = {}
    with srv:
        threads = [threading.Thread(target=lambda: srv.post(FM, HEAVY, timeout=300))
                   for _ in range(3)]
        for t in threads:
            t.start()
        wait_until(lambda: metric(srv, "bert_requests_in_flight") == 3, timeout=60)
        srv.proc.send_signal(signal.SIGTERM)
        wait_until(lambda: srv.get("/readyz").status_code == 503, timeout=30)
        for c in cases:
            got[id(c)] = send(srv, c)
        for t in threads:
            t.join()
        assert srv.proc.wait(120) == 0
    return got


def collect(model_dir, tmp):
    """Runs every case against the checkpoint; returns [(case, status, body)]."""
    tmp = Path(tmp)
    model_dir = Path(model_dir).resolve()
    groups = {}
    for c in CASES:
        groups.setdefault(c["server"], []).append(c)
    got = {}
    configs = {
        "default": default_config(model_dir),
        "auth": default_config(model_dir, server={"auth_token": TOKEN}),
        "overload": default_config(model_dir, workers={"count": 1, "queue_depth": 1,
                                                       "batch_max_tokens": 256}),
        "timeout": default_config(model_dir, workers={"count": 1, "request_timeout_ms": 1,
                                                      "batch_max_tokens": 256}),
    }
    for name, cases in groups.items():
        if name == "drain":
            got.update(drain_cases(model_dir, tmp, cases))
            continue
        mdir = model_dir
        if name == "mlm_only":
            mdir = mlm_only_copy(model_dir, tmp / "mlm_only_model")
        if name == "base":
            mdir = no_mlm_copy(model_dir, tmp / "no_mlm_model")
        cfg = configs.get(name) or default_config(mdir)
        with Server(tmp, mdir, cfg, name=name) as srv:
            for c in cases:
                got[id(c)] = burst(srv, c) if name in ("overload", "timeout") else send(srv, c)
            assert srv.stop() == 0
    return [(c, *got[id(c)]) for c in CASES]


class _Dumper(yaml.SafeDumper):
    """Multi-line descriptions as literal blocks, so the file stays readable."""


def _str(dumper, s):
    style = "|" if "\n" in s else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", s, style=style)


_Dumper.add_representer(str, _str)


def dump_spec(spec):
    return yaml.dump(spec, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)


def training_state(model_dir):
    """(provisional, step): a checkpoint still being trained says so in training_meta.json."""
    meta = Path(model_dir) / "training_meta.json"
    if not meta.exists():
        return False, None
    m = json.loads(meta.read_text())
    return bool(m.get("partial", False)), m.get("step")


def write_examples(spec, results, model_dir):
    model_name = Path(model_dir).resolve().name
    provisional, step = training_state(model_dir)
    spec["info"]["x-examples-model"] = model_name
    spec["info"]["x-examples-provisional"] = provisional
    source = model_name
    if provisional:
        source += f", PROVISIONAL: partially trained checkpoint (step {step}); regenerate"
    for c, status, body in results:
        slot = response_slot(spec, c)
        ex = slot["content"]["application/json"].setdefault("examples", {})
        what = c["summary"] or c["name"].replace("_", " ")
        ex[c["name"]] = {"summary": f"{what} (live answer of {source})", "value": body}
        if c["method"] == "post" and c["body"] is not None and status == 200:
            op = spec["paths"][c["path"]]["post"]
            rex = op["requestBody"]["content"]["application/json"].setdefault("examples", {})
            rex[c["name"]] = {"summary": what, "value": c["body"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--model", default=str(REPO / "models" / "default"))
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--write", action="store_true")
    g.add_argument("--check", action="store_true")
    args = ap.parse_args()
    spec = load_spec()
    with tempfile.TemporaryDirectory() as tmp:
        results = collect(args.model, tmp)
    bad = 0
    for c, status, body in results:
        errs = schema_errors(spec, c, body)
        if status != c["status"] or errs:
            bad += 1
            print(f"{c['name']}: status {status} (want {c['status']}) {errs}", file=sys.stderr)
    if bad:
        sys.exit(f"{bad} answers do not match openapi.yaml")
    if args.write:
        write_examples(spec, results, args.model)
        SPEC.write_text(dump_spec(spec))
        print(f"wrote {len(results)} examples from {args.model} into {SPEC}")
    else:
        print(f"{len(results)} live answers match openapi.yaml's schemas")


if __name__ == "__main__":
    main()
