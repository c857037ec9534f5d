"""Opt-in HTTPS through libmicrohttpd's GnuTLS support (issue 14 item 7): a self-signed
certificate made here with openssl, the real server, curl --cacert as the client."""
import json
import subprocess

import pytest
import requests

from http_helpers import Server, default_config, shared_checkpoint


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return shared_checkpoint(tmp_path_factory)


def make_cert(d, name="server"):
    cert, key = d / f"{name}.crt", d / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


class TlsServer(Server):
    """Server whose own readiness polls trust the test's certificate."""

    def __init__(self, *a, cacert, **kw):
        super().__init__(*a, **kw)
        self.cacert = str(cacert)

    def get(self, path, **kw):
        kw.setdefault("verify", self.cacert)
        return super().get(path, **kw)

    def post(self, path, body=None, raw=None, headers=None, **kw):
        kw.setdefault("verify", self.cacert)
        return super().post(path, body, raw, headers, **kw)


def curl(*args):
    return subprocess.run(["curl", "-sS", "--max-time", "30", *args], capture_output=True,
                          text=True)


def test_https_with_curl_and_a_self_signed_certificate(tmp_path, model_dir):
    cert, key = make_cert(tmp_path)
    cfg = default_config(model_dir, server={"tls_cert_file": str(cert),
                                            "tls_key_file": str(key), "auth_token": "tt"})
    with TlsServer(tmp_path, model_dir, config=cfg, cacert=cert) as srv:
        assert srv.url.startswith("https://127.0.0.1:")
        p = curl("--cacert", str(cert), "-H", "Content-Type: application/json",
                 "-H", "Authorization: Bearer tt", "-d", '{"inputs":"the [MASK] sat."}',
                 "-w", "\n%{http_code} %{scheme}", srv.url + "/v1/fill-mask")
        assert p.returncode == 0, p.stderr
        body, _, tail = p.stdout.rpartition("\n")
        assert tail == "200 HTTPS", p.stdout
        preds = json.loads(body)
        assert len(preds) == 5 and all("token_str" in x for x in preds)
        p = curl("--cacert", str(cert), "-w", "%{http_code}", "-o", "/dev/null",
                 srv.url + "/v1/models")
        assert p.stdout == "401"
        # without the CA the client refuses the certificate: the server really speaks TLS
        p = curl(srv.url + "/healthz")
        assert p.returncode == 60, (p.returncode, p.stderr)  # CURLE_PEER_FAILED_VERIFICATION
        # plain HTTP on the HTTPS port gets no HTTP answer
        p = curl("-o", "/dev/null", "-w", "%{http_code}", srv.url.replace("https", "http") +
                 "/healthz")
        assert p.stdout in ("000", "400"), (p.stdout, p.stderr)
        assert srv.get("/healthz").status_code == 200  # the server survived it
        # metrics and the drain work as over plain HTTP
        assert "bert_requests_total" in srv.get("/metrics").text
        assert srv.stop() == 0


@pytest.mark.parametrize("case", ["only_cert", "not_pem", "missing"])
def test_bad_tls_settings_stop_start_up(tmp_path, model_dir, case):
    cert, key = make_cert(tmp_path)
    server = {"tls_cert_file": str(cert), "tls_key_file": str(key)}
    want = {"only_cert": "needs both server.tls_cert_file and server.tls_key_file",
            "not_pem": "is not a PEM file", "missing": "nope.key"}[case]
    if case == "only_cert":
        del server["tls_key_file"]
    elif case == "not_pem":
        (tmp_path / "junk.crt").write_text("hello\n")
        server["tls_cert_file"] = str(tmp_path / "junk.crt")
    else:
        server["tls_key_file"] = str(tmp_path / "nope.key")
    srv = Server(tmp_path, model_dir, config=default_config(model_dir, server=server))
    srv.start(wait=False)
    assert srv.proc.wait(60) == 2
    srv.exited.wait(10)
    assert want in srv.stderr(), srv.stderr()


def test_mismatched_key_is_refused_at_start(tmp_path, model_dir):
    cert, _ = make_cert(tmp_path, "a")
    _, other_key = make_cert(tmp_path, "b")
    cfg = default_config(model_dir, server={"tls_cert_file": str(cert),
                                            "tls_key_file": str(other_key)})
    srv = Server(tmp_path, model_dir, config=cfg)
    srv.start(wait=False)
    assert srv.proc.wait(60) == 1
    srv.exited.wait(10)
    assert "libmicrohttpd refused server.tls_cert_file / server.tls_key_file" in srv.stderr()
