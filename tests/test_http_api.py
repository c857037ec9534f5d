"""Every route of the real bert-server, answers checked against transformers.

The oracle is transformers itself: pipeline("fill-mask") for /v1/fill-mask, BertForPreTraining
for next-sentence probabilities and both losses, BertTokenizerFast for /v1/tokenize.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from http_helpers import Server, default_config, shared_checkpoint

TOL = 1e-4

SENTENCES = [
    "Paris is the [MASK] of France.",
    "The quick brown fox jumps over the lazy [MASK].",
    "[MASK] is a programming language used for data science.",
    "Ünïcödé wörds and emoji 🙂 sit beside the [MASK], don't they?",
    "She said: \"the [MASK] was great\" — and left.",
]
MULTI = [
    "The [MASK] sat on the [MASK].",
    "[MASK] [MASK] [MASK] in Paris.",
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return shared_checkpoint(tmp_path_factory)


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("api"), model_dir, default_config(model_dir))
    srv.start()
    yield srv
    assert srv.stop() == 0, srv.stderr()


@pytest.fixture(scope="module")
def pipe(model_dir):
    from transformers import pipeline

    return pipeline("fill-mask", model=str(model_dir), tokenizer=str(model_dir), device="cpu")


@pytest.fixture(scope="module")
def hf(model_dir):
    from transformers import AutoTokenizer, BertForPreTraining

    model = BertForPreTraining.from_pretrained(model_dir, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    return model, tok


def assert_predictions_match(ours, ref):
    """ours/ref: one mask's candidate list."""
    assert [p["token"] for p in ours] == [p["token"] for p in ref], (ours, ref)
    for o, r in zip(ours, ref):
        assert set(o) == {"score", "token", "token_str", "sequence"}
        assert o["token_str"] == r["token_str"]
        assert o["sequence"] == r["sequence"]
        assert abs(o["score"] - r["score"]) <= TOL, (o, r)


def assert_fill_matches(ours, ref):
    """ours/ref: one input's answer (single mask: list of dicts; several: list of lists)."""
    assert len(ours) == len(ref)
    if ref and isinstance(ref[0], list):
        for o, r in zip(ours, ref):
            assert_predictions_match(o, r)
    else:
        assert_predictions_match(ours, ref)


# ---- health, readiness, models, metrics ----


def test_healthz(server):
    r = server.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}
    assert r.headers["Content-Type"] == "application/json"
    assert r.headers["X-Request-Id"]


def test_readyz(server):
    r = server.get("/readyz")
    assert r.status_code == 200 and r.json() == {"status": "ready"}


def test_models(server, model_dir):
    import json

    cfg = json.loads((model_dir / "config.json").read_text())
    r = server.get("/v1/models")
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "list" and len(body["data"]) == 1
    m = body["data"][0]
    assert m["id"] == model_dir.name
    assert m["heads"] == {"masked_lm": True, "next_sentence": True}
    assert m["dtype"] == "F32"
    assert m["max_sequence_length"] == min(512, cfg["max_position_embeddings"])
    for k in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
              "intermediate_size", "max_position_embeddings", "type_vocab_size"):
        assert m[k] == cfg[k], k
    from transformers import BertForPreTraining

    n_params = sum(p.numel() for p in BertForPreTraining.from_pretrained(model_dir).parameters())
    # transformers ties the decoder to the embeddings: parameters() counts it once.
    assert m["parameters"] >= n_params - cfg["vocab_size"] * cfg["hidden_size"]


def test_metrics(server):
    server.post("/v1/fill-mask", {"inputs": SENTENCES[0]})
    server.post("/v1/fill-mask", {"inputs": "no mask here"})
    r = server.get("/metrics")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/plain")
    text = r.text
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    assert samples['bert_requests_total{route="/v1/fill-mask",status="200"}'] >= 1
    assert samples['bert_requests_total{route="/v1/fill-mask",status="422"}'] >= 1
    assert samples['bert_request_duration_seconds_count{route="/v1/fill-mask"}'] >= 2
    assert 'bert_request_duration_seconds_bucket{route="/v1/fill-mask",le="+Inf"}' in samples
    assert samples["bert_queue_depth"] == 0
    assert samples["bert_batch_size_count"] >= 1
    assert samples["bert_tokens_processed_total"] >= 9
    info = [k for k in samples if k.startswith("bert_model_info{")]
    assert len(info) == 1 and samples[info[0]] == 1
    assert 'mlm_head="true"' in info[0] and 'nsp_head="true"' in info[0]
    assert 'dtype="F32"' in info[0]


# ---- fill-mask parity ----


@pytest.mark.parametrize("text", SENTENCES)
def test_fill_mask_single(server, pipe, text):
    r = server.post("/v1/fill-mask", {"inputs": text})
    assert r.status_code == 200, r.text
    assert_fill_matches(r.json(), pipe(text))


def test_fill_mask_top_k(server, pipe):
    for k in (1, 10, 100):
        r = server.post("/v1/fill-mask", {"inputs": SENTENCES[1], "parameters": {"top_k": k}})
        assert r.status_code == 200, r.text
        assert len(r.json()) == k
        assert_fill_matches(r.json(), pipe(SENTENCES[1], top_k=k))


@pytest.mark.parametrize("text", MULTI)
def test_fill_mask_multiple_masks(server, pipe, text):
    r = server.post("/v1/fill-mask", {"inputs": text, "parameters": {"top_k": 3}})
    assert r.status_code == 200, r.text
    ours, ref = r.json(), pipe(text, top_k=3)
    assert isinstance(ours[0], list) and len(ours) == text.count("[MASK]")
    assert "[MASK]" in ours[0][0]["sequence"]  # other masks kept visible, as the pipeline does
    assert_fill_matches(ours, ref)


def test_fill_mask_targets(server, pipe):
    targets = ["capital", "city", "Paris", "##s", "xyzzyplugh", "capital", "CITY"]
    r = server.post("/v1/fill-mask", {"inputs": SENTENCES[0], "parameters": {"targets": targets}})
    assert r.status_code == 200, r.text
    ref = pipe(SENTENCES[0], targets=targets)
    ours = r.json()
    # duplicates ("capital", "CITY" lowercased to "city") removed, top_k capped by targets
    assert len(ours) == len(ref) == 5
    assert_fill_matches(ours, ref)
    r = server.post("/v1/fill-mask",
                    {"inputs": SENTENCES[0], "parameters": {"targets": "city", "top_k": 3}})
    assert r.status_code == 200
    assert_fill_matches(r.json(), pipe(SENTENCES[0], targets="city", top_k=3))


def test_fill_mask_targets_multi_mask(server, pipe):
    targets = ["cat", "dog", "mat", "floor"]
    r = server.post("/v1/fill-mask",
                    {"inputs": MULTI[0], "parameters": {"targets": targets, "top_k": 2}})
    assert r.status_code == 200, r.text
    assert_fill_matches(r.json(), pipe(MULTI[0], targets=targets, top_k=2))


def test_fill_mask_batch(server, pipe):
    batch = SENTENCES[:3] + MULTI[:1]
    r = server.post("/v1/fill-mask", {"inputs": batch, "parameters": {"top_k": 4}})
    assert r.status_code == 200, r.text
    ours = r.json()
    assert len(ours) == len(batch)
    for o, text in zip(ours, batch):
        assert_fill_matches(o, pipe(text, top_k=4))
    # a list of one is still a batch: one entry per input
    r = server.post("/v1/fill-mask", {"inputs": [SENTENCES[0]]})
    assert r.status_code == 200
    assert len(r.json()) == 1
    assert_fill_matches(r.json()[0], pipe(SENTENCES[0]))


def test_fill_mask_pad_and_special_tokens_in_text(server, pipe):
    text = "[CLS] hello [PAD] world [SEP] the [MASK] is blue"
    r = server.post("/v1/fill-mask", {"inputs": text})
    assert r.status_code == 200, r.text
    assert_fill_matches(r.json(), pipe(text))


def long_text(n_words, mask_at):
    words = [f"word{i % 7}" if i % 3 else "alpha" for i in range(n_words)]
    words[mask_at] = "[MASK]"
    return " ".join(words)


def test_fill_mask_truncation(server, pipe):
    text = long_text(400, 5)
    r = server.post("/v1/fill-mask", {"inputs": text})
    assert r.status_code == 422 and r.json()["error"]["code"] == "input_too_long"
    r = server.post("/v1/fill-mask", {"inputs": text, "parameters": {"truncate": True}})
    assert r.status_code == 200, r.text
    assert_fill_matches(r.json(), pipe(text, tokenizer_kwargs={"truncation": True,
                                                               "max_length": 128}))
    # left truncation keeps the end: the mask must be near the end then
    text = long_text(400, 395)
    r = server.post("/v1/fill-mask", {"inputs": text, "parameters": {
        "truncate": True, "truncation_direction": "left"}})
    assert r.status_code == 200, r.text
    pipe.tokenizer.truncation_side = "left"
    try:
        ref = pipe(text, tokenizer_kwargs={"truncation": True, "max_length": 128})
    finally:
        pipe.tokenizer.truncation_side = "right"
    assert_fill_matches(r.json(), ref)
    # right truncation cuts that mask away
    r = server.post("/v1/fill-mask", {"inputs": text, "parameters": {"truncate": True}})
    assert r.status_code == 422 and r.json()["error"]["code"] == "no_mask"


# ---- MLM loss with labels ----


def hf_mlm_loss(hf, texts, labels):
    model, tok = hf
    enc = tok(texts, return_tensors="pt", padding=True)
    lab = torch.full(enc["input_ids"].shape, -100, dtype=torch.long)
    for i, l in enumerate(labels):
        lab[i, :len(l)] = torch.tensor(l)
    with torch.no_grad():
        out = model(**enc)
    logits = out.prediction_logits
    total = F.cross_entropy(logits.view(-1, logits.shape[-1]), lab.view(-1), ignore_index=-100)
    each = [F.cross_entropy(logits[i], lab[i], ignore_index=-100) for i in range(len(texts))]
    return float(total), [float(x) for x in each]


def make_labels(tok, text, positions_to_targets):
    ids = tok(text)["input_ids"]
    labels = [-100] * len(ids)
    for pos, word in positions_to_targets.items():
        labels[pos] = tok.convert_tokens_to_ids(word)
    return labels


def test_fill_mask_labels_single(server, hf, pipe):
    _, tok = hf
    text = "Paris is the [MASK] of [MASK]."
    # positions 4 and 6 are the masks; 1 is an unmasked labelled token ("paris"), as the
    # 10% "keep" case of BERT masking produces.
    labels = make_labels(tok, text, {4: "capital", 6: "france", 1: "paris"})
    r = server.post("/v1/fill-mask", {"inputs": text, "labels": labels})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"predictions", "loss", "losses", "labelled_tokens"}
    total, each = hf_mlm_loss(hf, [text], [labels])
    assert abs(body["loss"] - total) <= TOL, (body["loss"], total)
    assert abs(body["losses"][0] - each[0]) <= TOL
    assert body["labelled_tokens"] == 3
    assert_fill_matches(body["predictions"], pipe(text))


def test_fill_mask_labels_batch(server, hf):
    _, tok = hf
    texts = ["The [MASK] sat on the mat.", "A [MASK] day in [MASK] town.", "[MASK] here."]
    labels = [make_labels(tok, texts[0], {2: "cat"}),
              make_labels(tok, texts[1], {2: "sunny", 5: "the", 1: "a"}),
              [-100] * len(tok(texts[2])["input_ids"])]
    r = server.post("/v1/fill-mask", {"inputs": texts, "labels": labels})
    assert r.status_code == 200, r.text
    body = r.json()
    total, each = hf_mlm_loss(hf, texts, labels)
    assert abs(body["loss"] - total) <= TOL
    assert abs(body["losses"][0] - each[0]) <= TOL
    assert abs(body["losses"][1] - each[1]) <= TOL
    assert math.isnan(each[2]) and body["losses"][2] is None  # nothing labelled: NaN -> null
    assert body["labelled_tokens"] == 4
    assert len(body["predictions"]) == 3


# ---- next sentence ----

PAIRS = [
    ("The cat sat on the mat.", "It was very comfortable."),
    ("I went to the store.", "Penguins live in Antarctica."),
    ("Ünïcödé is fun.", "Emoji 🙂 too!"),
]


def hf_nsp(hf, pairs, labels=None):
    model, tok = hf
    enc = tok([a for a, _ in pairs], [b for _, b in pairs], return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = model(**enc).seq_relationship_logits
    probs = logits.softmax(-1)
    losses = None
    if labels is not None:
        losses = [float(F.cross_entropy(logits[i:i + 1], torch.tensor([labels[i]])))
                  for i in range(len(pairs))]
    return logits, probs, losses


def check_nsp(entry, logits, probs, loss=None):
    keys = {"is_next_probability", "not_next_probability", "logits", "label", "label_id"}
    assert set(entry) == keys | ({"loss"} if loss is not None else set())
    assert abs(entry["is_next_probability"] - float(probs[0])) <= TOL
    assert abs(entry["not_next_probability"] - float(probs[1])) <= TOL
    assert abs(entry["logits"][0] - float(logits[0])) <= TOL
    assert abs(entry["logits"][1] - float(logits[1])) <= TOL
    label_id = int(torch.argmax(logits))
    assert entry["label_id"] == label_id
    assert entry["label"] == ("is_next" if label_id == 0 else "not_next")
    if loss is not None:
        assert abs(entry["loss"] - loss) <= TOL


def test_next_sentence_single(server, hf):
    a, b = PAIRS[0]
    r = server.post("/v1/next-sentence", {"inputs": {"text": a, "text_pair": b}})
    assert r.status_code == 200, r.text
    logits, probs, _ = hf_nsp(hf, [PAIRS[0]])
    check_nsp(r.json(), logits[0], probs[0])


def test_next_sentence_batch_with_labels(server, hf):
    labels = [0, 1, 1]
    inputs = [{"text": a, "text_pair": b, "label": l} for (a, b), l in zip(PAIRS, labels)]
    r = server.post("/v1/next-sentence", {"inputs": inputs})
    assert r.status_code == 200, r.text
    logits, probs, losses = hf_nsp(hf, PAIRS, labels)
    assert len(r.json()) == 3
    for i, entry in enumerate(r.json()):
        check_nsp(entry, logits[i], probs[i], losses[i])


def test_next_sentence_truncation(server, hf):
    a, b = long_text(150, 3), long_text(100, 3)
    r = server.post("/v1/next-sentence", {"inputs": {"text": a, "text_pair": b}})
    assert r.status_code == 422 and r.json()["error"]["code"] == "input_too_long"
    r = server.post("/v1/next-sentence",
                    {"inputs": {"text": a, "text_pair": b}, "parameters": {"truncate": True}})
    assert r.status_code == 200, r.text
    model, tok = hf
    enc = tok(a, b, truncation="longest_first", max_length=128, return_tensors="pt")
    with torch.no_grad():
        logits = model(**enc).seq_relationship_logits[0]
    check_nsp(r.json(), logits, logits.softmax(-1))


# ---- tokenize ----


def byte_offsets(text, offsets):
    """HF offsets are in characters; ours are bytes into the UTF-8 text."""
    out = []
    for s, e in offsets:
        out.append([len(text[:s].encode()), len(text[:e].encode())])
    return out


def test_tokenize_text(server, hf):
    _, tok = hf
    text = "Héllo, wörld! 🙂 [MASK] tokenization's fun."
    r = server.post("/v1/tokenize", {"inputs": text})
    assert r.status_code == 200, r.text
    body = r.json()
    enc = tok(text, return_offsets_mapping=True)
    assert body["ids"] == enc["input_ids"]
    assert body["token_type_ids"] == enc["token_type_ids"]
    assert body["tokens"] == tok.convert_ids_to_tokens(enc["input_ids"])
    assert body["offsets"] == byte_offsets(text, enc["offset_mapping"])
    assert body["sequence_ids"] == enc.sequence_ids()


def test_tokenize_pair_and_batch(server, hf):
    _, tok = hf
    items = [{"text": "How are you?", "text_pair": "Très bien, merci."}, "just one"]
    r = server.post("/v1/tokenize", {"inputs": items})
    assert r.status_code == 200, r.text
    got = r.json()
    assert len(got) == 2
    enc = tok("How are you?", "Très bien, merci.", return_offsets_mapping=True)
    assert got[0]["ids"] == enc["input_ids"]
    assert got[0]["token_type_ids"] == enc["token_type_ids"]
    assert got[0]["sequence_ids"] == enc.sequence_ids()
    texts = ["How are you?", "Très bien, merci."]
    want = [[0, 0] if sid is None else byte_offsets(texts[sid], [off])[0]
            for sid, off in zip(enc.sequence_ids(), enc["offset_mapping"])]
    assert got[0]["offsets"] == want
    assert got[1]["ids"] == tok("just one")["input_ids"]


def test_tokenize_reports_long_inputs(server):
    text = long_text(300, 1)
    r = server.post("/v1/tokenize", {"inputs": text})
    assert r.status_code == 200 and len(r.json()["ids"]) > 128
    r = server.post("/v1/tokenize", {"inputs": text, "parameters": {"truncate": True}})
    assert r.status_code == 200 and len(r.json()["ids"]) == 128


# ---- request ids and logs ----


def test_request_id_echo_and_log_line(server):
    r = server.post("/v1/fill-mask", {"inputs": SENTENCES[0]},
                    headers={"X-Request-Id": "test-req-42"})
    assert r.headers["X-Request-Id"] == "test-req-42"
    # an unsafe incoming id is replaced by a generated one
    r2 = server.get("/healthz", headers={"X-Request-Id": "bad id\twith spaces"})
    assert r2.headers["X-Request-Id"] != "bad id\twith spaces"
    assert len(r2.headers["X-Request-Id"]) >= 16
    ids = {server.get("/healthz").headers["X-Request-Id"] for _ in range(5)}
    assert len(ids) == 5

    def logged():
        return [x for x in server.log_records() if x.get("request_id") == "test-req-42"]

    from http_helpers import wait_until

    wait_until(lambda: logged(), timeout=10)
    rec = logged()[0]
    for key in ("ts", "request_id", "method", "path", "status", "latency_ms", "tokens"):
        assert key in rec, rec
    assert rec["method"] == "POST" and rec["path"] == "/v1/fill-mask"
    assert rec["status"] == 200 and rec["tokens"] == 9 and rec["latency_ms"] > 0
