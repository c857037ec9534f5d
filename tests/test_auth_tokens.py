"""Several bearer tokens from server.auth_token_file, rotated with SIGHUP without a restart,
and opt-in CORS (issue 14 item 7). Through the real bert-server over real HTTP."""
import signal

import pytest
import requests

from http_helpers import Server, default_config, error_of, shared_checkpoint, wait_until


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return shared_checkpoint(tmp_path_factory)


BODY = {"inputs": "x"}


def status_with(srv, token):
    h = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return srv.post("/v1/tokenize", BODY, headers=h).status_code


def records(srv, msg):
    return [r for r in srv.log_records() if r.get("msg") == msg]


def hup_and_wait(srv, msg, before):
    """SIGHUP, then the log line that says the reload was handled (the server writes it
    once the new set is in place or refused)."""
    srv.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: len(records(srv, msg)) > before, timeout=30)
    return records(srv, msg)[-1]


def test_tokens_from_file_rotated_on_sighup(tmp_path, model_dir):
    tokens = tmp_path / "tokens"
    tokens.write_text("# production keys\n  key-one  \n\nkey-two\r\n# key-retired\n")
    cfg = default_config(model_dir, server={"auth_token_file": str(tokens),
                                            "auth_token": "ignored-inline-token"})
    with Server(tmp_path, model_dir, config=cfg) as srv:
        assert status_with(srv, "key-one") == 200
        assert status_with(srv, "key-two") == 200
        for bad in (None, "key-retired", "ignored-inline-token", "key-on", "key-one2"):
            assert status_with(srv, bad) == 401, bad
        assert any(r.get("msg") == "server.auth_token is ignored: server.auth_token_file is set"
                   for r in srv.log_records())

        # rotate: key-two stays, key-one goes, key-three comes
        tokens.write_text("key-two\nkey-three\n")
        rec = hup_and_wait(srv, "auth tokens reloaded", 0)
        assert rec["tokens"] == 2 and rec["tokens_before"] == 2
        assert status_with(srv, "key-one") == 401
        assert status_with(srv, "key-two") == 200
        assert status_with(srv, "key-three") == 200

        # a broken file keeps the set in use, and the log says why
        tokens.write_text("key four has spaces\n")
        rec = hup_and_wait(srv, "auth tokens not reloaded: keeping the old ones", 0)
        assert f"{tokens}:1" in rec["reason"] and rec["tokens"] == 2
        assert status_with(srv, "key-three") == 200
        tokens.write_text("# all commented out\n")
        rec = hup_and_wait(srv, "auth tokens not reloaded: keeping the old ones", 1)
        assert "holds no token" in rec["reason"]
        tokens.unlink()
        rec = hup_and_wait(srv, "auth tokens not reloaded: keeping the old ones", 2)
        assert str(tokens) in rec["reason"]
        assert status_with(srv, "key-two") == 200 and status_with(srv, "nope") == 401

        # and a good file again works
        tokens.write_text("key-five\n")
        hup_and_wait(srv, "auth tokens reloaded", 1)
        assert status_with(srv, "key-five") == 200 and status_with(srv, "key-two") == 401
        assert srv.get("/healthz").status_code == 200
        assert srv.stop() == 0


def test_sighup_without_a_token_file_changes_nothing(tmp_path, model_dir):
    cfg = default_config(model_dir, server={"auth_token": "inline"})
    with Server(tmp_path, model_dir, config=cfg) as srv:
        rec = hup_and_wait(srv, "SIGHUP: nothing to reload", 0)
        assert "auth_token_file" in rec["reason"]
        assert status_with(srv, "inline") == 200 and status_with(srv, None) == 401
        assert srv.stop() == 0


@pytest.mark.parametrize("text,why", [
    ("", "holds no token"),
    ("# c\n\n", "holds no token"),
    ("ok\nbad\x01token\n", ":2: a token may hold only visible ASCII"),
    ("x" * 300 + "\n", ":1: a token may be at most 255 bytes"),
])
def test_bad_token_file_stops_start_up(tmp_path, model_dir, text, why):
    tokens = tmp_path / "tokens"
    tokens.write_text(text)
    srv = Server(tmp_path, model_dir, args=["--server.auth_token_file", str(tokens)])
    srv.start(wait=False)
    assert srv.proc.wait(60) == 2
    srv.exited.wait(10)
    assert "--server.auth_token_file: key 'server.auth_token_file'" in srv.stderr()
    assert why in srv.stderr()


# ---- CORS ----


def test_cors_off_by_default(tmp_path, model_dir):
    with Server(tmp_path, model_dir) as srv:
        r = srv.post("/v1/tokenize", BODY, headers={"Origin": "https://app.example.com"})
        assert r.status_code == 200 and "Access-Control-Allow-Origin" not in r.headers
        assert "Access-Control-Expose-Headers" not in r.headers
        r = requests.options(srv.url + "/v1/tokenize", timeout=10)
        assert r.status_code == 405 and error_of(r) == "method_not_allowed"
        assert srv.stop() == 0


def test_cors_opt_in(tmp_path, model_dir):
    origin = "https://app.example.com"
    cfg = default_config(model_dir, server={"cors_allow_origin": origin, "auth_token": "t0k"})
    with Server(tmp_path, model_dir, config=cfg) as srv:
        # a browser's preflight carries no credentials and is answered without them
        r = requests.options(srv.url + "/v1/fill-mask", timeout=10, headers={
            "Origin": origin, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type"})
        assert r.status_code == 204, r.text
        assert r.content == b""
        assert r.headers["Access-Control-Allow-Origin"] == origin
        assert "POST" in r.headers["Access-Control-Allow-Methods"]
        allowed = {h.strip().lower() for h in r.headers["Access-Control-Allow-Headers"].split(",")}
        assert {"authorization", "content-type"} <= allowed
        assert int(r.headers["Access-Control-Max-Age"]) > 0
        # answers carry the origin, errors included
        ok = srv.post("/v1/tokenize", BODY, headers={"Origin": origin,
                                                      "Authorization": "Bearer t0k"})
        assert ok.status_code == 200 and ok.headers["Access-Control-Allow-Origin"] == origin
        assert "X-Request-Id" in ok.headers["Access-Control-Expose-Headers"]
        denied = srv.post("/v1/tokenize", BODY, headers={"Origin": origin})
        assert denied.status_code == 401
        assert denied.headers["Access-Control-Allow-Origin"] == origin
        # preflight is only for the API
        r = requests.options(srv.url + "/healthz", timeout=10)
        assert r.status_code == 405
        r = requests.options(srv.url + "/v1/nope", timeout=10)
        assert r.status_code == 404
        assert srv.stop() == 0
