"""Resource bounds under hostile use (issue 12): every request, answer and file the server
reads has a bound, and work nobody waits for is not done.

- fill-mask: inputs x masks x top_k is capped (limits.max_predictions_per_request, 422) and
  so is the answer (limits.max_answer_bytes, 413): a 22 KB request no longer buys an 80 MB
  answer.
- a client that disconnects has its queued work dropped and its running batch stopped
  between layers: the next client is served at once.
- /v1/tokenize has a token bound (limits.max_tokenize_tokens, 422) and runs on the worker
  pool, so /healthz and /readyz keep answering while tokenize floods run.
- the loader opens regular files only (a FIFO, /dev/zero or a directory is refused by name,
  never waited on or read forever) and caps each file by what config.json implies.
"""
import json
import os
import resource
import shutil
import socket
import subprocess
import threading
import time

import pytest
import requests

from checkpoints import build_dir, make_checkpoint
from http_helpers import Server, default_config, error_of, shared_checkpoint


# ---- the loader: regular files only, each under a cap ---------------------------------


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("bounds_good") / "ckpt", seed=11,
                           hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=64)


def _limit_memory():
    # Before the fix /dev/zero as vocab.txt was read until memory ran out: keep that to
    # 4 GiB of address space so a regression fails the test instead of the machine.
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))


def check(model_dir):
    """bert-cli check; a hang (the FIFO case before the fix) fails via the timeout."""
    return subprocess.run([str(build_dir() / "bert-cli"), "check", "--model", str(model_dir)],
                          capture_output=True, text=True, timeout=60, preexec_fn=_limit_memory)


def expect_refusal(d, *needles):
    proc = check(d)
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    for needle in needles:
        assert needle in proc.stderr, (needle, proc.stderr)
    assert "Sanitizer" not in proc.stderr and "runtime error" not in proc.stderr


def variant(good, tmp_path, name):
    dst = tmp_path / name
    shutil.copytree(good, dst)
    return dst


@pytest.mark.parametrize("name", ["vocab.txt", "config.json", "model.safetensors",
                                  "tokenizer_config.json"])
def test_fifo_in_model_dir_is_refused_not_waited_on(good, tmp_path, name):
    d = variant(good, tmp_path, "fifo")
    (d / name).unlink()
    os.mkfifo(d / name)
    expect_refusal(d, name, "not a regular file (a FIFO)")


@pytest.mark.parametrize("name", ["vocab.txt", "config.json", "tokenizer_config.json"])
def test_dev_zero_symlink_is_refused_not_read_forever(good, tmp_path, name):
    d = variant(good, tmp_path, "zero")
    (d / name).unlink()
    os.symlink("/dev/zero", d / name)
    expect_refusal(d, name, "not a regular file (a character device)")


def test_directory_as_vocab_is_refused(good, tmp_path):
    d = variant(good, tmp_path, "dirvocab")
    (d / "vocab.txt").unlink()
    (d / "vocab.txt").mkdir()
    expect_refusal(d, "vocab.txt", "not a regular file (a directory)")


def test_vocab_larger_than_vocab_size_implies_is_refused_unread(good, tmp_path):
    # 30522 real lines, then one 4 MiB line: the line count fits config.json's
    # vocab_size, the bytes do not (vocab_size x 64 + 1 MiB = 2.9 MiB).
    d = variant(good, tmp_path, "hugevocab")
    with open(d / "vocab.txt", "rb+") as f:
        lines = f.read().split(b"\n")
        lines = [l for l in lines if l][:-1] + [b"x" * (4 << 20)]
        f.seek(0)
        f.write(b"\n".join(lines) + b"\n")
        f.truncate()
    expect_refusal(d, "vocab.txt", "at most", "vocab_size")


def test_tokenizer_config_over_cap_is_refused(good, tmp_path):
    d = variant(good, tmp_path, "hugetokcfg")
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    text = json.dumps(cfg)
    (d / "tokenizer_config.json").write_text(text[:-1] + " " * (5 << 20) + "}")
    expect_refusal(d, "tokenizer_config.json", "at most")


def test_tokenizer_json_fifo_is_refused(good, tmp_path):
    # tokenizer.json is read (for its normalizer) when tokenizer_config.json leaves a
    # setting out; a FIFO there hung the load.
    d = variant(good, tmp_path, "fifotokjson")
    (d / "tokenizer_config.json").write_text("{}")
    os.mkfifo(d / "tokenizer.json")
    expect_refusal(d, "tokenizer.json", "not a regular file (a FIFO)")


def test_server_exits_naming_a_fifo_in_the_model_dir(good, tmp_path):
    d = variant(good, tmp_path, "fifoserver")
    (d / "vocab.txt").unlink()
    os.mkfifo(d / "vocab.txt")
    srv = Server(tmp_path, d).start(wait=False)
    try:
        rc = srv.proc.wait(60)
    finally:
        if srv.proc.poll() is None:
            srv.proc.kill()
            srv.proc.wait()
    srv.exited.wait(10)
    assert rc == 1, srv.stderr()
    assert "vocab.txt" in srv.stderr() and "not a regular file (a FIFO)" in srv.stderr()
