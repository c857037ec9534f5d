"""Every setting from every place (issue 14 item 4): each YAML key section.key is also
BERT_SECTION_KEY and --section.key (getopt_long), the older short names stay as aliases,
--print-config shows each effective value and its origin, --check-config validates and
exits 0/2. All through the real bert-server binary."""
import os
import subprocess

import pytest
import yaml

from checkpoints import REPO
from http_helpers import Server, default_config, error_of, server_bin, shared_checkpoint


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return shared_checkpoint(tmp_path_factory)


def run(args, env=None, cwd=None):
    e = {k: v for k, v in os.environ.items() if not k.startswith("BERT_")}
    e.update(env or {})
    return subprocess.run([str(server_bin()), *args], capture_output=True, text=True,
                          timeout=60, env=e, cwd=cwd)


def printed(args, env=None):
    """--print-config as {section.key: (value, origin)}."""
    p = run([*args, "--print-config"], env=env)
    assert p.returncode == 0, p.stderr
    doc = yaml.safe_load(p.stdout)
    origins = {}
    section = None
    for line in p.stdout.splitlines():
        if not line.startswith(" "):
            section = line.rstrip(":")
            continue
        key, _, rest = line.strip().partition(":")
        origins[f"{section}.{key}"] = rest.rsplit("# ", 1)[1]
    return {f"{s}.{k}": (v, origins[f"{s}.{k}"]) for s, kv in doc.items() for k, v in kv.items()}


# A value other than the default for every key; the test below fails when a key is
# added without one, so every new setting gets its env/flag coverage.
NON_DEFAULT = {
    "server.listen": "0.0.0.0",
    "server.port": 9123,
    "server.max_body_bytes": 4096,
    "server.max_inflight_body_bytes": 1 << 20,
    "server.max_connections": 77,
    "server.connection_timeout_s": 12,
    "server.http_threads": 3,
    "server.auth_token": "<redacted>",
    "server.auth_token_file": None,  # needs a real file: set per test
    "server.cors_allow_origin": "https://app.example.com",
    "server.tls_cert_file": None,  # real files: set per test
    "server.tls_key_file": None,
    "workers.count": 2,
    "workers.threads": 3,
    "workers.queue_depth": 9,
    "workers.request_timeout_ms": 1234,
    "workers.batch_max_tokens": 333,
    "workers.batch_wait_us": 44,
    "model.dir": "some/where",
    "model.max_sequence_length": 128,
    "model.compute": "int8",
    "model.recheck_logit_gap": 0.5,
    "limits.max_inputs_per_request": 7,
    "limits.default_top_k": 3,
    "limits.max_top_k": 50,
    "limits.max_masks_per_input": 6,
    "limits.max_predictions_per_request": 999,
    "limits.max_answer_bytes": 65536,
    "limits.max_tokenize_tokens": 555,
    "limits.max_decode_ids": 777,
    "limits.max_score_tokens": 64,
    "shutdown.grace_period_s": 9,
    "logging.level": "warn",
}


def values_for(tmp_path):
    token_file = tmp_path / "tokens"
    token_file.write_text("# rotated 2026-12\nabc\n")
    vals = dict(NON_DEFAULT)
    vals["server.auth_token_file"] = str(token_file)
    # the settings check reads both files and wants PEM; the handshake is test_tls.py's
    for key, name in (("server.tls_cert_file", "c.crt"), ("server.tls_key_file", "c.key")):
        (tmp_path / name).write_text("-----BEGIN X-----\n-----END X-----\n")
        vals[key] = str(tmp_path / name)
    return vals


def as_text(key, v):
    return "s3cret" if key == "server.auth_token" else str(v)


def test_every_key_is_documented_and_covered():
    shown = printed([])
    assert set(shown) == set(NON_DEFAULT)
    assert all(origin == "default" for _, origin in shown.values())
    shipped = yaml.safe_load((REPO / "config" / "default.yaml").read_text())
    assert {f"{s}.{k}" for s, kv in shipped.items() for k in kv} == set(NON_DEFAULT)


def test_every_key_from_its_environment_variable(tmp_path):
    vals = values_for(tmp_path)
    env = {"BERT_" + k.replace(".", "_").upper(): as_text(k, v) for k, v in vals.items()}
    shown = printed([], env=env)
    for key, v in vals.items():
        name = "BERT_" + key.replace(".", "_").upper()
        assert shown[key] == (v, f"env {name}"), key


def test_every_key_from_its_flag(tmp_path):
    vals = values_for(tmp_path)
    args = []
    for i, (k, v) in enumerate(vals.items()):
        # both spellings getopt_long takes
        args += [f"--{k}={as_text(k, v)}"] if i % 2 else [f"--{k}", as_text(k, v)]
    shown = printed(args)
    for key, v in vals.items():
        assert shown[key] == (v, f"flag --{key}"), key


def test_precedence_file_env_flag_and_aliases(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("server:\n  port: 1001\n  http_threads: 4\nworkers:\n  count: 5\n"
                   "  queue_depth: 11\n")
    shown = printed(["--config", str(cfg), "--workers.count", "7", "--port", "1003"],
                    env={"BERT_SERVER_PORT": "1002", "BERT_WORKERS_COUNT": "6",
                         "BERT_QUEUE_DEPTH": "12", "BERT_WORKERS_QUEUE_DEPTH": "13"})
    assert shown["server.port"] == (1003, "flag --port")
    assert shown["server.http_threads"] == (4, f"file {cfg}:3")
    assert shown["workers.count"] == (7, "flag --workers.count")
    # the full name wins over the older alias when both are set
    assert shown["workers.queue_depth"] == (13, "env BERT_WORKERS_QUEUE_DEPTH")
    shown = printed(["--config", str(cfg)], env={"BERT_QUEUE_DEPTH": "12"})
    assert shown["workers.queue_depth"] == (12, "env BERT_QUEUE_DEPTH")
    # a later flag wins over an earlier one, whichever spelling
    shown = printed(["--workers", "2", "--workers.count=3", "--threads", "auto"])
    assert shown["workers.count"] == (3, "flag --workers.count")
    assert shown["workers.threads"] == ("auto", "flag --threads")


def test_printed_config_loads_back(tmp_path):
    vals = values_for(tmp_path)
    vals.pop("server.auth_token")  # printed redacted, by design
    env = {"BERT_" + k.replace(".", "_").upper(): str(v) for k, v in vals.items()}
    p = run(["--print-config"], env=env)
    assert p.returncode == 0, p.stderr
    out = tmp_path / "printed.yaml"
    out.write_text(p.stdout)
    shown = printed(["--config", str(out)])
    for key, v in vals.items():
        assert shown[key][0] == v, key
        assert shown[key][1].startswith(f"file {out}:"), key


def test_auth_token_is_never_printed():
    p = run(["--print-config"], env={"BERT_AUTH_TOKEN": "very-secret-value"})
    assert p.returncode == 0 and "very-secret-value" not in p.stdout + p.stderr
    assert 'auth_token: "<redacted>"  # env BERT_AUTH_TOKEN' in p.stdout


@pytest.mark.parametrize("args,env,text", [
    (["--server.port", "70000"], {}, "--server.port: key 'server.port': must be an integer"),
    ([], {"BERT_LIMITS_MAX_TOP_K": "x"}, "BERT_LIMITS_MAX_TOP_K: key 'limits.max_top_k'"),
    (["--workers.count"], {}, "--workers.count: needs a value"),
    # getopt_long would take an abbreviation; a typo must not set a neighbouring key
    (["--server.por=1"], {}, "--server.por: unknown argument"),
    (["--log-lev", "debug"], {}, "--log-lev: unknown argument"),
    (["--server.cors_allow_origin", "a b"], {}, "key 'server.cors_allow_origin'"),
    (["stray"], {}, "stray: unknown argument"),
])
def test_bad_values_name_their_source(args, env, text):
    p = run(args, env=env)
    assert p.returncode == 2, p.stdout + p.stderr
    assert text in p.stderr, p.stderr


def test_check_config(tmp_path, model_dir):
    p = run(["--check-config", "--model.dir", str(model_dir)])
    assert p.returncode == 0, p.stderr
    assert "configuration OK" in p.stdout
    p = run(["--check-config", "--model", str(tmp_path / "absent")])
    assert p.returncode == 2 and "key 'model.dir'" in p.stderr and "absent" in p.stderr
    (tmp_path / "empty").mkdir()
    p = run(["--check-config", "--model", str(tmp_path / "empty")])
    assert p.returncode == 2 and "config.json" in p.stderr
    bad = tmp_path / "tokens"
    bad.write_text("# only a comment\n\n")
    p = run(["--check-config", "--model", str(model_dir), "--server.auth_token_file", str(bad)])
    assert p.returncode == 2 and "holds no token" in p.stderr, p.stderr
    p = run(["--check-config", "--model", str(model_dir), "--limits.default_top_k", "200"])
    assert p.returncode == 2 and "limits.default_top_k" in p.stderr


def test_settings_from_env_and_flags_reach_the_running_server(tmp_path, model_dir):
    """A key no short alias covers, set by its full env name and by its flag, takes effect
    over real HTTP."""
    env = {"BERT_LIMITS_MAX_INPUTS_PER_REQUEST": "1"}
    with Server(tmp_path, model_dir, env=env, args=["--limits.max_top_k=2",
                                                    "--limits.default_top_k", "2"]) as srv:
        ok = srv.post("/v1/fill-mask", {"inputs": "the [MASK] sat."})
        assert ok.status_code == 200, ok.text
        assert len(ok.json()) == 2  # default_top_k from the flag
        r = srv.post("/v1/fill-mask", {"inputs": ["a [MASK].", "b [MASK]."]})
        assert r.status_code == 422 and error_of(r), r.text
        r = srv.post("/v1/fill-mask", {"inputs": "the [MASK] sat.", "parameters": {"top_k": 3}})
        assert r.status_code == 422, r.text
        assert srv.stop() == 0
