"""POST /v1/decode and POST /v1/score through the real binary, with transformers as the oracle.

/v1/decode must give what BertTokenizerFast.decode gives (skip_special_tokens and the
checkpoint's clean_up_tokenization_spaces); /v1/score the pseudo-log-likelihood of
Salazar et al. (2020) computed with BertForPreTraining: each word piece masked in turn,
log_softmax of prediction_logits there, the original id's entry, summed.
"""
import json
import socket
import time

import pytest
import torch

from http_helpers import Server, default_config, error_of, shared_checkpoint, small_checkpoint

TOL = 1e-4

SENTENCES = [
    "The capital of France is Paris.",
    "Unbelievably, the transformer tokenizes antidisestablishmentarianism!",
    "colorless green ideas sleep furiously",
    "Hello, world: it's 3.14 (roughly) -- isn't it?",
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return shared_checkpoint(tmp_path_factory)


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    # A small sub-batch budget so one sentence's masked copies span several forward passes.
    cfg = default_config(model_dir, workers={"batch_max_tokens": 64},
                         limits={"max_score_tokens": 24, "max_decode_ids": 64})
    srv = Server(tmp_path_factory.mktemp("score"), model_dir, cfg)
    srv.start()
    yield srv
    assert srv.stop() == 0, srv.stderr()


@pytest.fixture(scope="module")
def hf(model_dir):
    from transformers import AutoTokenizer, BertForPreTraining

    model = BertForPreTraining.from_pretrained(model_dir, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    return model, tok


def reference_pll(model, tok, text):
    """Per word piece (token, id, logprob) and their sum, as transformers computes them."""
    ids = tok(text, return_tensors="pt")["input_ids"][0]
    positions = list(range(1, len(ids) - 1))  # not [CLS]/[SEP]
    copies = ids.repeat(len(positions), 1)
    for row, p in enumerate(positions):
        copies[row, p] = tok.mask_token_id
    with torch.no_grad():
        logits = model(input_ids=copies, attention_mask=torch.ones_like(copies)).prediction_logits
    logp = torch.log_softmax(logits.double(), dim=-1)
    pieces = [(tok.convert_ids_to_tokens(int(ids[p])), int(ids[p]),
               float(logp[row, p, ids[p]])) for row, p in enumerate(positions)]
    return pieces, sum(lp for _, _, lp in pieces)


def assert_score_matches(ours, ref):
    pieces, total = ref
    assert set(ours) == {"score", "tokens", "mean_logprob"}
    assert [(t["token"], t["id"]) for t in ours["tokens"]] == [(t, i) for t, i, _ in pieces]
    worst = max(abs(t["logprob"] - lp) for t, (_, _, lp) in zip(ours["tokens"], pieces))
    assert worst <= TOL, (worst, ours, pieces)
    assert abs(ours["score"] - total) <= TOL, (ours["score"], total)
    assert abs(ours["mean_logprob"] - total / len(pieces)) <= TOL


# ---- /v1/score ----

@pytest.mark.parametrize("text", SENTENCES)
def test_score_single_matches_transformers(server, hf, text):
    r = server.post("/v1/score", {"inputs": text})
    assert r.status_code == 200, r.text
    assert_score_matches(r.json(), reference_pll(*hf, text))


def test_score_list_matches_transformers(server, hf):
    r = server.post("/v1/score", {"inputs": SENTENCES[:3]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert isinstance(body, list) and len(body) == 3
    for ours, text in zip(body, SENTENCES[:3]):
        assert_score_matches(ours, reference_pll(*hf, text))
    # A list of one is still a list; the natural sentence scores above its shuffle.
    natural, shuffled = server.post(
        "/v1/score", {"inputs": ["the cat sat on the mat.", "mat the on sat cat the."]}).json()
    assert isinstance(natural, dict) and isinstance(shuffled, dict)
    assert isinstance(server.post("/v1/score", {"inputs": ["a b"]}).json(), list)


def test_score_bounds(server):
    r = server.post("/v1/score", {"inputs": "word " * 25})  # 25 word pieces > 24
    assert r.status_code == 422 and error_of(r) == "input_too_long", r.text
    msg = r.json()["error"]["message"]
    assert "limits.max_score_tokens" in msg and "25 word pieces" in msg
    assert server.post("/v1/score", {"inputs": "word " * 24}).status_code == 200
    r = server.post("/v1/score", {"inputs": ["ok"] * 33})  # max_inputs_per_request 32
    assert r.status_code == 422 and error_of(r) == "too_many_inputs"
    r = server.post("/v1/score", {"inputs": "   "})
    assert r.status_code == 422 and error_of(r) == "invalid_input"
    for body in ({"inputs": 3}, {"inputs": ["a", 1]}, {"text": "a"},
                 {"inputs": "a", "parameters": {"top_k": 2}}):
        r = server.post("/v1/score", body)
        assert r.status_code == 400 and error_of(r) == "invalid_request", (body, r.text)


def test_score_longer_than_the_model(model_dir, tmp_path_factory):
    """Within limits.max_score_tokens but past max_position_embeddings (128): refused, never
    truncated, and the message does not suggest parameters.truncate, which /v1/score lacks."""
    cfg = default_config(model_dir, limits={"max_score_tokens": 200})
    with Server(tmp_path_factory.mktemp("score_long"), model_dir, cfg, name="long") as srv:
        r = srv.post("/v1/score", {"inputs": "word " * 130})
        assert r.status_code == 422 and error_of(r) == "input_too_long", r.text
        msg = r.json()["error"]["message"]
        assert "at most 128" in msg and "truncate" not in msg
        assert srv.stop() == 0


def test_score_head_unavailable(tmp_path_factory):
    root = tmp_path_factory.mktemp("score_heads")
    base = small_checkpoint(root / "base", arch="base")
    with Server(root, base, name="base") as srv:
        r = srv.post("/v1/score", {"inputs": "a sentence"})
        assert r.status_code == 422 and error_of(r) == "head_unavailable", r.text
        assert srv.post("/v1/decode", {"ids": [7592]}).status_code == 200
        assert srv.stop() == 0


# ---- /v1/decode ----

DECODE_TEXTS = [
    "Hello, world! It's a [MASK] day.",
    "Unbelievably antidisestablishmentarianism tokenizes (badly) -- doesn't it?",
    "price: $3.50 ; e-mail me @ home ... ok ?",
]


def decode_cases(tok):
    cases = [tok(t)["input_ids"] for t in DECODE_TEXTS]
    cases.append([tok.cls_token_id, tok.pad_token_id, tok.unk_token_id, tok.sep_token_id])
    cases.append([])
    cases.append(tok.convert_tokens_to_ids(["##ing", "the", "##s", ".", "'", "s", "!", "?"]))
    return cases


@pytest.mark.parametrize("skip", [True, False])
def test_decode_matches_transformers(server, hf, skip):
    _, tok = hf
    for ids in decode_cases(tok):
        r = server.post("/v1/decode", {"ids": ids, "skip_special_tokens": skip})
        assert r.status_code == 200, r.text
        assert r.json() == tok.decode(ids, skip_special_tokens=skip), ids


def test_decode_default_skips_specials_and_lists(server, hf):
    _, tok = hf
    cases = [c for c in decode_cases(tok) if c]
    r = server.post("/v1/decode", {"ids": cases[:3]})
    assert r.status_code == 200, r.text
    assert r.json() == [tok.decode(c, skip_special_tokens=True) for c in cases[:3]]
    assert server.post("/v1/decode", {"ids": [[101, 7592, 102]]}).json() == ["hello"]


def test_decode_bounds(server, hf):
    _, tok = hf
    for bad in (-1, len(tok.vocab), 1 << 40):
        r = server.post("/v1/decode", {"ids": [7592, bad]})
        assert r.status_code == 422 and error_of(r) == "invalid_input", r.text
        assert "ids[1]" in r.json()["error"]["message"]
    # An integer past 64 bits is a valid JSON integer (openapi.yaml: integer, minimum 0).
    r = server.post("/v1/decode", raw='{"ids": [7592, 875145035686852048191488]}')
    assert r.status_code == 422 and error_of(r) == "invalid_input", r.text
    r = server.post("/v1/decode", {"ids": [[7592], [7592, 99999]]})
    assert r.status_code == 422 and "ids[1][1]" in r.json()["error"]["message"]
    r = server.post("/v1/decode", {"ids": [[7592] * 40, [7592] * 30]})  # 70 > 64
    assert r.status_code == 422 and error_of(r) == "too_many_tokens"
    assert "limits.max_decode_ids" in r.json()["error"]["message"]
    r = server.post("/v1/decode", {"ids": [[1]] * 33})
    assert r.status_code == 422 and error_of(r) == "too_many_inputs"
    for body in ({"ids": "hello"}, {"ids": [1.5]}, {"ids": [[1], 2]}, {},
                 {"ids": [1], "skip_special_tokens": "yes"}, {"ids": [1], "extra": 1}):
        r = server.post("/v1/decode", body)
        assert r.status_code == 400 and error_of(r) == "invalid_request", (body, r.text)


def test_score_stops_when_its_client_has_gone(model_dir, tmp_path):
    """A long /v1/score request (32 inputs x 120 word pieces: 3,840 masked copies) on the only
    worker; the client hangs up while it runs and the worker stops at the next layer instead
    of scoring the rest, then answers the next request."""
    cfg = default_config(model_dir, workers={"count": 1})
    body = json.dumps({"inputs": ["word " * 120] * 32}).encode()
    with Server(tmp_path, model_dir, cfg) as srv:
        s = socket.create_connection(("127.0.0.1", srv.port))
        s.sendall(b"POST /v1/score HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body) + body)

        def busy():
            for line in srv.get("/metrics").text.splitlines():
                if line.startswith("bert_workers_busy "):
                    return float(line.split()[1]) >= 1
            return False

        deadline = time.monotonic() + 30
        while not busy():  # scoring has begun
            assert time.monotonic() < deadline
        s.close()
        deadline = time.monotonic() + 120
        while True:
            recs = srv.log_records()
            done = [x for x in recs if x.get("msg") == "request" and x.get("path") == "/v1/score"]
            if done:
                break
            assert time.monotonic() < deadline
        cancelled = [x for x in recs if x.get("msg") == "batch cancelled"]
        assert cancelled and cancelled[0]["reason"] == "every client has gone", recs[-5:]
        assert cancelled[0]["word_pieces"] < 32 * 120, cancelled
        assert (done[0]["status"], done[0].get("error")) == (499, "client_closed"), done
        r = srv.post("/v1/score", {"inputs": "the worker is free again."})
        assert r.status_code == 200 and len(r.json()["tokens"]) == 6
        assert srv.stop() == 0
