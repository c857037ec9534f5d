"""Concurrency of the real bert-server: many clients at once get exactly the answers they
get one at a time (with cross-request batching on), and workers share one copy of the
weights."""
import json
import random
import threading

import pytest
import requests

from http_helpers import Server, default_config, shared_checkpoint, wait_until

CLIENTS = 16
PER_CLIENT = 200


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return shared_checkpoint(tmp_path_factory)


def request_mix():
    """(path, body) pairs covering every inference route and answer shape."""
    fm = "/v1/fill-mask"
    ns = "/v1/next-sentence"
    mix = [
        (fm, {"inputs": "Paris is the [MASK] of France."}),
        (fm, {"inputs": "The [MASK] sat on the [MASK].", "parameters": {"top_k": 3}}),
        (fm, {"inputs": "I like [MASK] and tea.", "parameters": {"targets": ["coffee", "milk",
                                                                            "cake"]}}),
        (fm, {"inputs": ["A [MASK] day.", "Two [MASK] [MASK] here.", "[MASK]"],
              "parameters": {"top_k": 7}}),
        (fm, {"inputs": "Long " + "words and more words " * 20 + "then [MASK].",
              "parameters": {"top_k": 20}}),
        (fm, {"inputs": "Paris is the [MASK] of France.",
              "labels": [-100, 3000, -100, -100, 3007, -100, 2605, -100, -100]}),
        (fm, {"inputs": "no mask"}),  # a 422 is an answer too
        (ns, {"inputs": {"text": "The cat sat on the mat.", "text_pair": "It was happy."}}),
        (ns, {"inputs": [{"text": "I went home.", "text_pair": "Penguins swim.", "label": 1},
                         {"text": "Hello there.", "text_pair": "General Kenobi!", "label": 0}]}),
        (ns, {"inputs": {"text": "x " * 80, "text_pair": "y " * 80},
              "parameters": {"truncate": True}}),
        ("/v1/tokenize", {"inputs": {"text": "How are you?", "text_pair": "Fine, thanks."}}),
        ("/v1/tokenize", {"inputs": ["one", "two three", "Ünïcödé 🙂"]}),
    ]
    for i in range(8):  # distinct lengths so batches mix shapes
        mix.append((fm, {"inputs": " ".join(["word"] * (3 + 9 * i)) + " [MASK] end."}))
    return mix


def same_answer(a, b, rel=1e-5, abs_=1e-7):
    """Equal structure, strings, ints and token order; floats equal to float32 rounding.

    bert_forward runs a batch as one set of GEMMs over all its tokens, and OpenBLAS picks
    kernels by matrix shape, so a sequence's logits can differ in the last bits of float32
    depending on what it was batched with. Anything beyond that is a real difference.
    """
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None:
            return a is b
        return abs(a - b) <= abs_ + rel * max(abs(a), abs(b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(
            same_answer(a[k], b[k], rel, abs_) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(
            same_answer(x, y, rel, abs_) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def run_clients(srv, mix, n_clients, per_client, seed=1234):
    results = [[] for _ in range(n_clients)]
    errors = []
    barrier = threading.Barrier(n_clients)

    def client(c):
        rng = random.Random(seed + c)
        sess = requests.Session()
        barrier.wait()
        try:
            for _ in range(per_client):
                k = rng.randrange(len(mix))
                path, body = mix[k]
                r = sess.post(srv.url + path, data=json.dumps(body),
                              headers={"Content-Type": "application/json"}, timeout=120)
                results[c].append((k, r.status_code, r.text))
        except Exception as e:  # reported below; a thread must not die silently
            errors.append(repr(e))

    threads = [threading.Thread(target=client, args=(c,)) for c in range(n_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return results


@pytest.mark.parametrize("batch_wait_us,batch_max_tokens", [(0, 1), (0, 8192), (2000, 8192)])
def test_concurrent_answers_equal_sequential(tmp_path, model_dir, batch_wait_us,
                                             batch_max_tokens):
    """batch_max_tokens=1 turns cross-request batching off: then every answer must be
    bit-identical, whatever the concurrency. With batching, floats may differ in the last
    float32 bits (see same_answer), nothing else."""
    cfg = default_config(model_dir, workers={"count": 2, "queue_depth": 64,
                                             "batch_wait_us": batch_wait_us,
                                             "batch_max_tokens": batch_max_tokens})
    mix = request_mix()
    with Server(tmp_path, model_dir, cfg) as srv:
        # one at a time first: the reference answers
        expected = []
        for path, body in mix:
            r = srv.post(path, body)
            expected.append((r.status_code, r.json()))
        assert [s for s, _ in expected].count(200) == len(mix) - 1
        results = run_clients(srv, mix, CLIENTS, PER_CLIENT)
        n = exact = 0
        for per_client in results:
            assert len(per_client) == PER_CLIENT
            for k, status, text in per_client:
                assert status == expected[k][0], (mix[k], status, text[:300])
                got = json.loads(text)
                assert same_answer(got, expected[k][1]), (mix[k], text[:300])
                exact += got == expected[k][1]
                n += 1
        assert n == CLIENTS * PER_CLIENT
        if batch_max_tokens == 1:
            assert exact == n
        print(f"\nbatch_wait_us={batch_wait_us} batch_max_tokens={batch_max_tokens}: {n} answers, {exact} bit-identical to the "
              f"sequential ones, the rest equal within float32 rounding")
        metrics = srv.get("/metrics").text
        batches = {}
        for line in metrics.splitlines():
            if line.startswith("bert_batch_size_"):
                name, value = line.rsplit(" ", 1)
                batches[name] = float(value)
        assert batches["bert_batch_size_count"] > 0
        if batch_max_tokens == 1:
            # no cross-request batching: one forward pass per inference request
            def n_seqs(k):
                inputs = mix[k][1]["inputs"]
                return len(inputs) if isinstance(inputs, list) else 1

            ran = [k for k, (st, _) in enumerate(expected)] + [
                k for per_client in results for k, _, _ in per_client]
            ran = [k for k in ran if expected[k][0] == 200 and mix[k][0] != "/v1/tokenize"]
            assert batches["bert_batch_size_count"] == len(ran)
            assert batches["bert_batch_size_sum"] == sum(n_seqs(k) for k in ran)
        if batch_wait_us:
            # with a wait window, concurrent requests were really run together
            assert batches["bert_batch_size_sum"] > batches["bert_batch_size_count"] * 1.5
        assert srv.stop() == 0, srv.stderr()


def batch_metrics(srv):
    """(sum, count) of bert_batch_size: sequences and forward passes so far."""
    values = {}
    for line in srv.get("/metrics").text.splitlines():
        if line.startswith("bert_batch_size_sum ") or line.startswith("bert_batch_size_count "):
            name, value = line.split()
            values[name] = float(value)
    return values["bert_batch_size_sum"], values["bert_batch_size_count"]


def post_while_first_waits(srv, first, second):
    """Posts first, then second once first is accepted; both answers. With one worker and a
    long batch_wait_us, the worker holds first and waits for company, so second is queued
    when the worker next looks at the queue."""
    got = {}
    t = threading.Thread(target=lambda: got.setdefault("first",
                                                       srv.post("/v1/fill-mask", first)))
    t.start()
    wait_until(lambda: "\nbert_requests_in_flight 1\n" in srv.get("/metrics").text,
               timeout=30)
    second_answer = srv.post("/v1/fill-mask", second)
    t.join()
    return got["first"], second_answer


def test_request_after_a_refused_one_in_the_same_batch_gets_its_own_answer(tmp_path,
                                                                          model_dir):
    """A fill-mask request whose answer passes limits.max_answer_bytes stops at its first
    input. The worker used to skip only that input's MLM rows, not the rest of the request's,
    so the next request of the same forward pass read the rows of the refused one's second
    input and answered with its predictions."""
    cfg = default_config(model_dir, workers={"count": 1, "batch_wait_us": 3000000,
                                             "batch_max_tokens": 8192},
                         limits={"max_answer_bytes": 4096})
    refused = {"inputs": ["the " + "long sentence goes on and on " * 8 + "with a [MASK].",
                          "the capital of france is [MASK]."], "parameters": {"top_k": 30}}
    other = {"inputs": "i like [MASK] and tea.", "parameters": {"top_k": 5}}
    with Server(tmp_path, model_dir, cfg) as srv:
        alone = srv.post("/v1/fill-mask", other)
        assert alone.status_code == 200, alone.text

        sum0, count0 = batch_metrics(srv)
        # the refused request is accepted (its small body follows in the same write); the
        # worker holds it and waits batch_wait_us for company
        refused_answer, batched = post_while_first_waits(srv, refused, other)
        # one forward pass held all three sequences: the two requests were batched
        assert batch_metrics(srv) == (sum0 + 3, count0 + 1)
        assert refused_answer.status_code == 413, refused_answer.text
        assert refused_answer.json()["error"]["code"] == "answer_too_large"
        assert batched.status_code == 200, batched.text
        assert same_answer(batched.json(), alone.json()), (batched.text, alone.text)


def test_batch_fills_by_actual_tokens_not_the_byte_bound(tmp_path, model_dir):
    """The server queues a request knowing only a byte bound of its tokens (the workers
    tokenize). A batch used to stop at that bound, so requests with much text per token (or
    padding) ran alone however much room the batch had. Now the worker tokenizes what it
    took and tops the batch up while the actual tokens fit: a request whose bound alone
    exceeds the budget joins when its tokens fit, and one whose tokens do not fit goes back
    to the front of the queue and runs next, alone, with its own answer."""
    short = {"inputs": "paris is the [MASK] of france."}
    with Server(tmp_path, model_dir, default_config(model_dir), name="probe") as srv:
        t = len(srv.post("/v1/tokenize", {"inputs": short["inputs"]}).json()["ids"])
    budget = 4 * t
    # bytes + [CLS]/[SEP] bound the tokens: short's bound plus padded's passes the budget
    padded = {"inputs": short["inputs"] + " " * (budget + 10)}
    long = {"inputs": "word " * (budget - t + 5) + "[MASK] end."}
    assert len(short["inputs"]) + 3 <= budget < len(short["inputs"]) + len(padded["inputs"])
    cfg = default_config(model_dir, workers={"count": 1, "batch_wait_us": 3000000,
                                             "batch_max_tokens": budget})
    with Server(tmp_path, model_dir, cfg) as srv:
        alone = {k: srv.post("/v1/fill-mask", body).json()
                 for k, body in (("short", short), ("padded", padded), ("long", long))}
        assert alone["padded"] == alone["short"]

        sum0, count0 = batch_metrics(srv)
        a, b = post_while_first_waits(srv, short, padded)
        assert a.status_code == b.status_code == 200, (a.text, b.text)
        assert batch_metrics(srv) == (sum0 + 2, count0 + 1)  # one forward held both
        assert same_answer(a.json(), alone["short"]) and same_answer(b.json(), alone["short"])

        sum0, count0 = batch_metrics(srv)
        a, b = post_while_first_waits(srv, short, long)
        assert a.status_code == b.status_code == 200, (a.text, b.text)
        assert batch_metrics(srv) == (sum0 + 2, count0 + 2)  # the long one ran on its own
        assert same_answer(a.json(), alone["short"]), a.text
        assert same_answer(b.json(), alone["long"]), b.text
        assert srv.stop() == 0, srv.stderr()


def rss_after_warmup(tmp_path, model_dir, workers, name):
    cfg = default_config(model_dir, workers={"count": workers})
    with Server(tmp_path, model_dir, cfg, name=name) as srv:
        # give every worker a chance to build its workspace for the same small request
        run_clients(srv, [("/v1/fill-mask", {"inputs": "Paris is the [MASK] of France."})],
                    n_clients=8, per_client=10)
        wait_until(lambda: "\nbert_workers_busy 0\n" in srv.get("/metrics").text, timeout=10)
        rss = srv.rss_kib()
        weight_bytes = srv.get("/v1/models").json()["data"][0]["weight_bytes"]
        assert srv.stop() == 0
        return rss, weight_bytes


def test_workers_share_one_model_copy(tmp_path, tmp_path_factory):
    model_dir = shared_checkpoint(tmp_path_factory, name="http_rss_model", hidden_size=256,
                                  num_hidden_layers=4, intermediate_size=1024,
                                  max_position_embeddings=512)
    rss1, wb = rss_after_warmup(tmp_path, model_dir, 1, "w1")
    rss8, _ = rss_after_warmup(tmp_path, model_dir, 8, "w8")
    model_kib = wb / 1024
    print(f"\nVmRSS 1 worker {rss1} KiB, 8 workers {rss8} KiB, weights {model_kib:.0f} KiB")
    assert model_kib > 30000  # the comparison needs a model big enough to notice a copy
    assert rss8 - rss1 < 0.25 * model_kib, (rss1, rss8, model_kib)
