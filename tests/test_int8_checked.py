"""model.compute: int8-checked: int8 answers, and near-ties answered again in float32.

The server holds models/default twice (int8 and float32). Each fill-mask or next-sentence input
is run through int8 first; when its two best int8 logits (the top two tokens of a [MASK], or
is-next against random) are closer than model.recheck_logit_gap, it is run again through the
float32 model, whose numbers replace int8's. So every answer must be one of the two: exactly the
int8 server's (gap not below the threshold) or the fp32 server's, which is transformers' within
1e-4 (gap below it). The oracles are transformers itself and the two plain servers, all asked
the same held-out questions over HTTP.
"""
import concurrent.futures
import math
import sys

import pytest
import requests
import torch

from checkpoints import REPO
from http_helpers import Server, default_config, metric

sys.path.insert(0, str(REPO / "bench"))
import int8_accuracy  # noqa: E402  (held-out inputs: train/heldout, never trained on)

MODEL = REPO / "models" / "default"
GAP = 0.25
TOL = 1e-4


def server_for(tmp_path_factory, name, compute, gap=GAP):
    cfg = default_config(MODEL, model={"compute": compute, "recheck_logit_gap": gap})
    return Server(tmp_path_factory.mktemp(name), MODEL, config=cfg, name=name)


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    s = {name: server_for(tmp_path_factory, name.replace("-", "_"), name)
         for name in ("fp32", "int8", "int8-checked")}
    for srv in s.values():
        srv.start()
    yield s
    for srv in s.values():
        assert srv.stop() == 0, srv.stderr()


@pytest.fixture(scope="module")
def held_out():
    from transformers import BertTokenizerFast

    tok = BertTokenizerFast.from_pretrained(str(MODEL))
    return int8_accuracy.fill_inputs(tok, 48), int8_accuracy.nsp_inputs(48)


def close(a, b, tol=1e-5):
    """Same answer: equal tokens, strings and labels, numbers within tol (a batch's row count
    may change the products' last bits)."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k], tol) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(close(x, y, tol) for x, y in zip(a, b))
    if isinstance(a, float):
        return abs(a - b) <= tol
    return a == b


def fill_gap(answer):
    """The int8 answer's closeness: its top-two logit gap, log(p1 / p2) of one softmax."""
    return math.log(answer[0]["score"] / answer[1]["score"])


def nsp_gap(answer):
    return abs(answer["logits"][0] - answer["logits"][1])


def ask(srv, route, inputs):
    r = srv.post(f"/v1/{route}", {"inputs": inputs, "parameters": {"truncate": True}})
    assert r.status_code == 200, r.text
    return r


def counters(srv):
    return (metric(srv, "bert_checked_inputs_total"),
            metric(srv, "bert_rechecked_inputs_total"))


def expected(route, plain_fp32, plain_int8):
    """The answers int8-checked may give for each input, and the range of how many it
    rechecks. An input whose gap (read back from rounded probabilities) lies within 1e-3 of
    the threshold could fall either side, so it may get either answer; the others must get
    exactly one (with the plain build none of the held-out inputs is that close; with the
    sanitizer build's different rounding one is)."""
    gap = fill_gap if route == "fill-mask" else nsp_gap
    want, low, high = [], 0, 0
    for f, i in zip(plain_fp32, plain_int8):
        g = gap(i)
        if abs(g - GAP) <= 1e-3:
            want.append((f, i))
            high += 1
        else:
            want.append((f,) if g < GAP else (i,))
            low += g < GAP
            high += g < GAP
    return want, low, high


def one_of(got, answers):
    return any(close(got, a) for a in answers)


@pytest.mark.parametrize("route", ["fill-mask", "next-sentence"])
def test_every_answer_is_int8s_or_on_a_near_tie_fp32s(servers, held_out, route):
    """48 held-out inputs in three requests of 16: each input's answer is the int8 server's
    unless int8's top-two gap is below the threshold, then the fp32 server's. The
    X-Rechecked-Inputs header and the /metrics counters count exactly the near-ties."""
    inputs = held_out[0] if route == "fill-mask" else held_out[1]
    chunks = [inputs[i:i + 16] for i in range(0, len(inputs), 16)]
    answers = {name: [] for name in servers}
    headers = []
    before = counters(servers["int8-checked"])
    for chunk in chunks:
        for name, srv in servers.items():
            r = ask(srv, route, chunk)
            answers[name] += r.json()
            if name == "int8-checked":
                headers.append(int(r.headers["X-Rechecked-Inputs"]))
            else:
                assert "X-Rechecked-Inputs" not in r.headers
    want, low, high = expected(route, answers["fp32"], answers["int8"])
    # the held-out set has both kinds, or this test would not test the recheck
    assert 0 < low and high < len(inputs), (low, high)
    for got, w in zip(answers["int8-checked"], want):
        assert one_of(got, w), (got, w)
    assert low <= sum(headers) <= high
    after = counters(servers["int8-checked"])
    assert after[0] == before[0] + len(inputs), (before, after)
    assert after[1] - before[1] == sum(headers), (before, after, headers)


def test_near_ties_among_concurrent_requests(servers, held_out):
    """The same 48 fill-mask inputs as 48 concurrent single-input requests, which the worker
    batches: a near-tie waits for its float32 pass while the others of its batch are answered,
    and every answer is still what it is alone."""
    texts = held_out[0]
    alone_fp32 = [ask(servers["fp32"], "fill-mask", t).json() for t in texts]
    alone_int8 = [ask(servers["int8"], "fill-mask", t).json() for t in texts]
    want, low, high = expected("fill-mask", alone_fp32, alone_int8)
    checked = servers["int8-checked"]

    def one(t):
        r = requests.post(checked.url + "/v1/fill-mask", json={"inputs": t}, timeout=120)
        assert r.status_code == 200, r.text
        return r.json(), int(r.headers["X-Rechecked-Inputs"])
    with concurrent.futures.ThreadPoolExecutor(16) as ex:
        got = list(ex.map(one, texts))
    for (g, n), w, t in zip(got, want, texts):
        assert one_of(g, w), (t, g, w)
    assert low <= sum(n for _, n in got) <= high
    assert metric(checked, "bert_batch_size_count") > 0


def test_a_gap_above_every_decision_answers_what_transformers_answers(tmp_path_factory,
                                                                      held_out):
    """With a threshold no decision reaches, every input is rechecked: the answers are
    transformers' (pipeline("fill-mask") and BertForPreTraining) within 1e-4."""
    from transformers import BertForMaskedLM, BertForPreTraining, BertTokenizerFast, pipeline

    texts, pairs = held_out[0][:12], held_out[1][:12]
    # float32 explicitly: the checkpoint is stored in float16, which from_pretrained keeps
    model = BertForPreTraining.from_pretrained(str(MODEL), dtype=torch.float32).eval()
    tok = BertTokenizerFast.from_pretrained(str(MODEL))
    mlm = BertForMaskedLM.from_pretrained(str(MODEL), dtype=torch.float32).eval()
    pipe = pipeline("fill-mask", model=mlm, tokenizer=tok, device="cpu", top_k=5)
    srv = server_for(tmp_path_factory, "always", "int8-checked", gap=1000).start()
    try:
        r = ask(srv, "fill-mask", texts)
        assert int(r.headers["X-Rechecked-Inputs"]) == len(texts)
        for ours, ref in zip(r.json(), pipe(texts)):
            assert [p["token"] for p in ours] == [p["token"] for p in ref]
            assert max(abs(o["score"] - p["score"]) for o, p in zip(ours, ref)) <= TOL
        r = ask(srv, "next-sentence", pairs)
        assert int(r.headers["X-Rechecked-Inputs"]) == len(pairs)
        enc = tok([p["text"] for p in pairs], [p["text_pair"] for p in pairs],
                  return_tensors="pt", padding=True, truncation=True, max_length=128)
        with torch.no_grad():
            probs = model(**enc).seq_relationship_logits.softmax(-1)
        for ours, p in zip(r.json(), probs):
            assert abs(ours["is_next_probability"] - float(p[0])) <= TOL, (ours, p)
    finally:
        assert srv.stop() == 0, srv.stderr()


def test_a_zero_gap_answers_what_int8_answers(servers, tmp_path_factory, held_out):
    """recheck_logit_gap 0 never rechecks: the int8 server's answers, in the same batches."""
    texts = held_out[0][:16]
    plain = ask(servers["int8"], "fill-mask", texts).json()
    srv = server_for(tmp_path_factory, "never", "int8-checked", gap=0).start()
    try:
        r = ask(srv, "fill-mask", texts)
        assert r.headers["X-Rechecked-Inputs"] == "0"
        assert r.json() == plain
    finally:
        assert srv.stop() == 0, srv.stderr()


def test_reports_both_models(servers):
    """/v1/models and the ready line say int8-checked, name both kernels, and count both
    weight sets."""
    info = {n: s.get("/v1/models").json()["data"][0] for n, s in servers.items()}
    c = info["int8-checked"]
    assert c["compute"] == "int8-checked" and c["recheck_logit_gap"] == GAP
    assert c["weight_bytes"] == info["int8"]["weight_bytes"] + info["fp32"]["weight_bytes"]
    assert c["kernel"] == f'{info["int8"]["kernel"]}; rechecks: {info["fp32"]["kernel"]}'
    assert "recheck_logit_gap" not in info["int8"]
    ready = next(r for r in servers["int8-checked"].log_records() if r.get("msg") == "ready")
    assert ready["compute"] == "int8-checked" and ready["kernel"] == c["kernel"]
    assert 'compute="int8-checked"' in servers["int8-checked"].get("/metrics").text


@pytest.mark.parametrize("value", [-0.5, "abc", "nan", 1e9, "0.25"])
def test_bad_recheck_gap_stops_start_up(tmp_path, value):
    """In the YAML file (where "0.25" is a quoted string, not a number) and as a flag."""
    cfg = default_config(MODEL, model={"compute": "int8-checked", "recheck_logit_gap": value})
    for args in ([], ["--model.recheck_logit_gap", str(value)]):
        config = cfg if not args else default_config(MODEL, model={"compute": "int8-checked"})
        if args and value == "0.25":
            continue  # a valid number on the command line
        srv = Server(tmp_path, MODEL, config=config, args=args).start(wait=False)
        assert srv.proc.wait(60) == 2
        assert srv.exited.wait(10)
        err = srv.stderr()
        assert "model.recheck_logit_gap" in err and "must be a number in [0, 1000]" in err, err
