"""The error matrix of the real bert-server: every status, its code and its headers."""
import json
import socket
import threading

import pytest
import requests

from http_helpers import Server, default_config, error_of, shared_checkpoint, small_checkpoint

OK_BODY = {"inputs": "Paris is the [MASK] of France."}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return shared_checkpoint(tmp_path_factory)


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    cfg = default_config(model_dir, limits={"max_masks_per_input": 3, "max_inputs_per_request": 4},
                         server={"max_body_bytes": 65536})
    srv = Server(tmp_path_factory.mktemp("errors"), model_dir, cfg)
    srv.start()
    yield srv
    assert srv.stop() == 0, srv.stderr()


def raw_request(port, data, timeout=30):
    """Sends bytes on a fresh socket and returns (status, headers, body) of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        while True:
            try:
                b = s.recv(65536)
            except ConnectionResetError:
                break
            if not b:
                break
            chunks.append(b)
            head, _, rest = b"".join(chunks).partition(b"\r\n\r\n")
            if rest or _:
                hdrs = dict(l.split(": ", 1) for l in head.decode().split("\r\n")[1:] if ": " in l)
                n = int(hdrs.get("Content-Length", "-1"))
                if n >= 0 and len(rest) >= n:
                    break
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    hdrs = {k.lower(): v for k, v in (l.split(": ", 1) for l in lines[1:] if ": " in l)}
    return status, hdrs, body


# ---- 400 ----


@pytest.mark.parametrize("raw,code", [
    (b'{"inputs": "Paris is the [MASK]"', "invalid_json"),
    (b"", "invalid_json"),
    (b"[MASK]", "invalid_json"),
    (b'{"inputs": "a [MASK]", "inputs": "b [MASK]"}', "invalid_json"),
    (b'{"inputs": "caf\xe9 [MASK]"}', "invalid_utf8"),
    (b'{"inputs": "\xff\xfe [MASK]"}', "invalid_utf8"),
    (b'{"inputs": "\xed\xa0\x80 [MASK]"}', "invalid_utf8"),  # UTF-16 surrogate as UTF-8
])
def test_400_malformed(server, raw, code):
    r = server.post("/v1/fill-mask", raw=raw)
    assert r.status_code == 400, r.text
    assert error_of(r) == code


@pytest.mark.parametrize("path,body", [
    ("/v1/fill-mask", [1, 2]),
    ("/v1/fill-mask", {}),
    ("/v1/fill-mask", {"inputs": 5}),
    ("/v1/fill-mask", {"inputs": ["a [MASK]", 5]}),
    ("/v1/fill-mask", {"inputs": "a [MASK]", "parameters": {"top_k": "5"}}),
    ("/v1/fill-mask", {"inputs": "a [MASK]", "parameters": {"top_k": 2.5}}),
    ("/v1/fill-mask", {"inputs": "a [MASK]", "parameters": {"targets": [1]}}),
    ("/v1/fill-mask", {"inputs": "a [MASK]", "parameters": {"topk": 5}}),
    ("/v1/fill-mask", {"inputs": "a [MASK]", "parameters": {"truncate": "yes"}}),
    ("/v1/fill-mask", {"inputs": "a [MASK]", "parameters": {"truncation_direction": "up"}}),
    ("/v1/fill-mask", {"inputs": "a [MASK]", "parameters": []}),
    ("/v1/fill-mask", {"inputs": "a [MASK]", "extra": 1}),
    ("/v1/fill-mask", {"inputs": "a [MASK]", "labels": "x"}),
    ("/v1/fill-mask", {"inputs": "a [MASK]", "labels": [-100, 1.5, -100, -100]}),
    ("/v1/fill-mask", {"inputs": ["a [MASK]"], "labels": [-100, -100, -100, -100]}),
    ("/v1/next-sentence", {"inputs": "just a string"}),
    ("/v1/next-sentence", {"inputs": {"text": "a"}}),
    ("/v1/next-sentence", {"inputs": {"text": "a", "text_pair": 3}}),
    ("/v1/next-sentence", {"inputs": {"text": "a", "text_pair": "b", "extra": 1}}),
    ("/v1/next-sentence", {"inputs": [{"text": "a", "text_pair": "b"}, "c"]}),
    ("/v1/tokenize", {"inputs": 3}),
    ("/v1/tokenize", {"inputs": {"text_pair": "b"}}),
    ("/v1/tokenize", {}),
])
def test_400_wrong_shape(server, path, body):
    r = server.post(path, body)
    assert r.status_code == 400, r.text
    assert error_of(r) == "invalid_request"
    assert "/" not in r.json()["error"]["message"].replace("/v1/tokenize", "")


# ---- 401 ----


@pytest.fixture(scope="module")
def auth_server(model_dir, tmp_path_factory):
    cfg = default_config(model_dir, server={"auth_token": "s3cret-token"})
    srv = Server(tmp_path_factory.mktemp("auth"), model_dir, cfg)
    srv.start()
    yield srv
    assert srv.stop() == 0, srv.stderr()


@pytest.mark.parametrize("headers", [
    {}, {"Authorization": "Bearer wrong"}, {"Authorization": "Bearer s3cret-toke"},
    {"Authorization": "Bearer s3cret-token-longer"}, {"Authorization": "Basic s3cret-token"},
    {"Authorization": "s3cret-token"},
])
def test_401(auth_server, headers):
    for method, path in (("post", "/v1/fill-mask"), ("post", "/v1/next-sentence"),
                         ("post", "/v1/tokenize"), ("get", "/v1/models")):
        r = getattr(auth_server, method)(path, **({"body": OK_BODY} if method == "post" else {}),
                                         headers=headers)
        assert r.status_code == 401, (path, r.text)
        assert error_of(r) == "unauthorized"
        assert r.headers["WWW-Authenticate"].startswith("Bearer")


def test_auth_accepts_token_and_leaves_ops_routes_open(auth_server):
    r = auth_server.post("/v1/fill-mask", OK_BODY, headers={"Authorization": "Bearer s3cret-token"})
    assert r.status_code == 200, r.text
    r = auth_server.get("/v1/models", headers={"Authorization": "bearer s3cret-token"})
    assert r.status_code == 200
    for path in ("/healthz", "/readyz", "/metrics"):
        assert auth_server.get(path).status_code == 200, path


def test_auth_token_from_file_and_env(model_dir, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("from-file-token\n")
    with Server(tmp_path, model_dir, args=["--auth-token-file", str(token_file)],
                env={"BERT_AUTH_TOKEN": "from-env-token"}, name="f") as srv:
        # the flag wins over the environment
        assert srv.post("/v1/tokenize", {"inputs": "x"},
                        headers={"Authorization": "Bearer from-env-token"}).status_code == 401
        assert srv.post("/v1/tokenize", {"inputs": "x"},
                        headers={"Authorization": "Bearer from-file-token"}).status_code == 200
        assert srv.stop() == 0
    with Server(tmp_path, model_dir, env={"BERT_AUTH_TOKEN": "from-env-token"}, name="e") as srv:
        assert srv.post("/v1/tokenize", {"inputs": "x"}).status_code == 401
        assert srv.post("/v1/tokenize", {"inputs": "x"},
                        headers={"Authorization": "Bearer from-env-token"}).status_code == 200
        assert srv.stop() == 0


# ---- 404 / 405 ----


@pytest.mark.parametrize("method,path", [
    ("GET", "/index.html"), ("GET", "/nope"), ("GET", "/docs/"), ("POST", "/v1/fill"), ("GET", "/v1/models/"),
    ("POST", "/v1/fill-mask/extra"), ("DELETE", "/whatever"), ("GET", "/HEALTHZ"),
])
def test_404(server, method, path):
    r = requests.request(method, server.url + path, timeout=10)
    assert r.status_code == 404
    assert error_of(r) == "not_found"
    assert "/v1/fill-mask" in r.json()["error"]["message"]  # tells the caller what exists


def test_query_string_is_not_part_of_the_route(server):
    assert server.get("/healthz?verbose=1").status_code == 200
    r = server.post("/v1/fill-mask?x=1", OK_BODY)
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("method,path,allow", [
    ("GET", "/v1/fill-mask", "POST"), ("PUT", "/v1/next-sentence", "POST"),
    ("DELETE", "/v1/tokenize", "POST"), ("POST", "/healthz", "GET, HEAD"),
    ("POST", "/readyz", "GET, HEAD"), ("PUT", "/metrics", "GET, HEAD"),
    ("POST", "/v1/models", "GET, HEAD"),
])
def test_405(server, method, path, allow):
    r = requests.request(method, server.url + path, timeout=10, json={})
    assert r.status_code == 405
    assert r.headers["Allow"] == allow
    assert error_of(r) == "method_not_allowed"


def test_head_on_get_routes(server):
    r = requests.head(server.url + "/healthz", timeout=10)
    assert r.status_code == 200 and r.text == ""


# ---- 413 ----


def test_413_by_content_length_before_reading(server):
    # Headers only: the server must answer from Content-Length without waiting for a body.
    req = (b"POST /v1/fill-mask HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           b"Content-Length: 10000000\r\n\r\n")
    status, hdrs, body = raw_request(server.port, req)
    assert status == 413
    assert json.loads(body)["error"]["code"] == "payload_too_large"
    assert hdrs["x-request-id"]


def test_413_expect_continue(server):
    req = (b"POST /v1/fill-mask HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           b"Expect: 100-continue\r\nContent-Length: 70000\r\n\r\n")
    status, _, body = raw_request(server.port, req)
    assert status == 413 and json.loads(body)["error"]["code"] == "payload_too_large"


def test_413_while_streaming(server):
    # Chunked upload has no Content-Length: the limit is enforced while reading.
    def gen():
        piece = b'{"inputs": "' + b"x" * 8190
        yield piece
        for _ in range(20):
            yield b"y" * 8192
        yield b' [MASK]"}'

    r = requests.post(server.url + "/v1/fill-mask", data=gen(),
                      headers={"Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 413
    assert error_of(r) == "payload_too_large"


def test_body_just_under_limit_is_read(server):
    text = "a [MASK] " + "b " * 100
    body = json.dumps({"inputs": text, "parameters": {"truncate": True}})
    body = body + " " * (65536 - len(body))
    assert len(body) == 65536
    r = server.post("/v1/fill-mask", raw=body)
    assert r.status_code == 200, r.text


def test_huge_body_from_requests(server):
    """A plain client pushing 2 MB: the server answers 413 from Content-Length and closes
    without reading the rest, so the client sees either that answer or, when the close
    lands while it is still sending, a reset (the answer itself is checked byte-exact by the
    raw-socket tests above). Either way nothing is read, and the server carries on."""
    big = json.dumps({"inputs": "[MASK] " + "z" * 2_000_000})
    try:
        outcome = server.post("/v1/fill-mask", raw=big).status_code
    except requests.ConnectionError:
        outcome = "reset"
    assert outcome in (413, "reset")
    assert server.post("/v1/fill-mask", OK_BODY).status_code == 200
    tokens = [l for l in server.get("/metrics").text.splitlines()
              if l.startswith('bert_requests_total{route="/v1/fill-mask",status="413"}')]
    assert tokens and float(tokens[0].split()[-1]) >= 1


# ---- 415 ----


@pytest.mark.parametrize("ctype", [None, "text/plain", "application/x-www-form-urlencoded",
                                   "application/jsonx", "multipart/form-data; boundary=x"])
def test_415(server, ctype):
    headers = {} if ctype is None else {"Content-Type": ctype}
    r = requests.post(server.url + "/v1/fill-mask", data=json.dumps(OK_BODY).encode(),
                      headers=headers, timeout=10)
    assert r.status_code == 415
    assert error_of(r) == "unsupported_media_type"


@pytest.mark.parametrize("ctype", ["application/json; charset=utf-8", "Application/JSON",
                                   "application/json ;charset=UTF-8"])
def test_json_content_type_variants_accepted(server, ctype):
    r = requests.post(server.url + "/v1/fill-mask", data=json.dumps(OK_BODY).encode(),
                      headers={"Content-Type": ctype}, timeout=10)
    assert r.status_code == 200, r.text


# ---- 422 ----


@pytest.mark.parametrize("path,body,code", [
    ("/v1/fill-mask", {"inputs": "no mask in here"}, "no_mask"),
    ("/v1/fill-mask", {"inputs": ["a [MASK]", "none"]}, "no_mask"),
    ("/v1/fill-mask", {"inputs": ""}, "no_mask"),
    ("/v1/fill-mask", {"inputs": "[MASK] [MASK] [MASK] [MASK]"}, "too_many_masks"),
    ("/v1/fill-mask", {"inputs": "[MASK] " + "word " * 200}, "input_too_long"),
    ("/v1/fill-mask", {"inputs": ["[MASK]"] * 5}, "too_many_inputs"),
    ("/v1/fill-mask", {"inputs": []}, "no_inputs"),
    ("/v1/fill-mask", {"inputs": "a [MASK]", "parameters": {"top_k": 0}}, "invalid_top_k"),
    ("/v1/fill-mask", {"inputs": "a [MASK]", "parameters": {"top_k": 101}}, "invalid_top_k"),
    ("/v1/fill-mask", {"inputs": "a [MASK]", "parameters": {"top_k": -3}}, "invalid_top_k"),
    ("/v1/fill-mask", {"inputs": "a [MASK]", "parameters": {"targets": [""]}}, "unknown_target"),
    ("/v1/fill-mask", {"inputs": "a [MASK]", "parameters": {"targets": "   "}}, "unknown_target"),
    ("/v1/fill-mask", {"inputs": "a [MASK]", "parameters": {"targets": []}}, "unknown_target"),
    ("/v1/fill-mask", {"inputs": "a [MASK]", "labels": [-100, 5]}, "invalid_labels"),
    ("/v1/fill-mask", {"inputs": "a [MASK]", "labels": [-100, 5, 30522, -100]}, "invalid_labels"),
    ("/v1/fill-mask", {"inputs": "a [MASK]", "labels": [-100, 5, -7, -100]}, "invalid_labels"),
    ("/v1/next-sentence", {"inputs": {"text": "a " * 100, "text_pair": "b " * 100}},
     "input_too_long"),
    ("/v1/next-sentence", {"inputs": {"text": "a", "text_pair": "b", "label": 2}},
     "invalid_labels"),
    ("/v1/next-sentence", {"inputs": [{"text": "a", "text_pair": "b"}] * 5}, "too_many_inputs"),
    ("/v1/tokenize", {"inputs": ["x"] * 5}, "too_many_inputs"),
])
def test_422(server, path, body, code):
    r = server.post(path, body)
    assert r.status_code == 422, r.text
    assert error_of(r) == code
    msg = r.json()["error"]["message"]
    assert len(msg) > 10 and "/tmp" not in msg and "/work" not in msg


def test_422_head_unavailable(tmp_path_factory):
    root = tmp_path_factory.mktemp("heads")
    mlm_only = small_checkpoint(root / "mlm_only", arch="masked_lm")
    with Server(root, mlm_only, name="mlm") as srv:
        r = srv.post("/v1/next-sentence", {"inputs": {"text": "a", "text_pair": "b"}})
        assert r.status_code == 422 and error_of(r) == "head_unavailable"
        assert srv.post("/v1/fill-mask", OK_BODY).status_code == 200
        assert srv.get("/v1/models").json()["data"][0]["heads"] == {
            "masked_lm": True, "next_sentence": False}
        assert srv.stop() == 0
    base = small_checkpoint(root / "base", arch="base")
    with Server(root, base, name="base") as srv:
        r = srv.post("/v1/fill-mask", OK_BODY)
        assert r.status_code == 422 and error_of(r) == "head_unavailable"
        r = srv.post("/v1/next-sentence", {"inputs": {"text": "a", "text_pair": "b"}})
        assert r.status_code == 422 and error_of(r) == "head_unavailable"
        assert srv.post("/v1/tokenize", {"inputs": "still works"}).status_code == 200
        assert srv.stop() == 0


# ---- 503 overloaded, 504 timeout ----

HEAVY = {"inputs": ["[MASK] " + "token " * 120] * 4, "parameters": {"top_k": 100}}


def fire(srv, n, body):
    results = [None] * n
    barrier = threading.Barrier(n)

    def one(i):
        barrier.wait()
        try:
            r = srv.post("/v1/fill-mask", body)
            results[i] = (r.status_code, r.headers.get("Retry-After"), r.json())
        except requests.RequestException as e:
            results[i] = (None, None, str(e))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_503_queue_full(model_dir, tmp_path):
    cfg = default_config(model_dir, workers={"count": 1, "queue_depth": 1, "batch_max_tokens": 64})
    with Server(tmp_path, model_dir, cfg) as srv:
        results = fire(srv, 24, HEAVY)
        statuses = [s for s, _, _ in results]
        assert set(statuses) <= {200, 503}, results
        assert statuses.count(503) >= 1 and statuses.count(200) >= 1, statuses
        for s, retry, body in results:
            if s == 503:
                assert retry == "1" and body["error"]["code"] == "overloaded"
        assert srv.get("/readyz").status_code == 200  # overload is not unreadiness
        assert srv.stop() == 0


def test_504_deadline_passed_before_work(model_dir, tmp_path):
    cfg = default_config(model_dir, workers={"count": 1, "queue_depth": 64,
                                             "request_timeout_ms": 1, "batch_max_tokens": 64})
    with Server(tmp_path, model_dir, cfg) as srv:
        results = fire(srv, 12, HEAVY)
        statuses = [s for s, _, _ in results]
        assert set(statuses) <= {200, 504}, results
        assert statuses.count(504) >= 1, statuses
        for s, _, body in results:
            if s == 504:
                assert body["error"]["code"] == "timeout"
        assert srv.stop() == 0
