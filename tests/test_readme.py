"""The README's commands, run as written (only the port moves), so the docs cannot rot."""
import json
import os
import re
import signal
import socket
import subprocess

import pytest
import requests

from http_helpers import REPO, Server, default_config, wait_until

README = (REPO / "README.md").read_text()
DEFAULT_MODEL = REPO / "models" / "default"


def curl_commands():
    """Every `curl` command in the README's shell blocks, continuation lines joined."""
    cmds = []
    for block in re.findall(r"```sh\n(.*?)```", README, re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        cmds += [line.split("  #")[0].strip() for line in joined.splitlines()
                 if line.strip().startswith("curl ")]
    return cmds


def test_readme_opens_with_the_two_commands():
    first_block = re.search(r"```sh\n(.*?)```", README, re.S).group(1)
    lines = [l.split("#")[0].strip() for l in first_block.strip().splitlines()]
    assert lines == ["make run", "make test"]


@pytest.fixture(scope="module")
def default_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("readme")
    with Server(tmp, DEFAULT_MODEL, config=default_config(DEFAULT_MODEL)) as srv:
        yield srv


def test_every_curl_example_answers(default_server):
    cmds = curl_commands()
    assert len(cmds) >= 5
    answers = {}
    for cmd in cmds:
        live = cmd.replace("localhost:8080", f"127.0.0.1:{default_server.port}")
        proc = subprocess.run(["bash", "-c", live + " --fail-with-body"], capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 0, (cmd, proc.stdout, proc.stderr)
        route = re.search(r"localhost:8080(/\S*)", cmd).group(1)
        answers[route] = json.loads(proc.stdout)
    fills = answers["/v1/fill-mask"]
    assert len(fills) == 3 and all({"score", "token", "token_str", "sequence"} <= f.keys()
                                   for f in fills)
    assert fills[0]["score"] >= fills[1]["score"] >= fills[2]["score"]
    nsp = answers["/v1/next-sentence"]
    assert 0.0 <= nsp["is_next_probability"] <= 1.0
    assert answers["/v1/tokenize"]["tokens"] == ["[CLS]", "hello", ",", "world", "!", "[SEP]"]
    assert answers["/v1/decode"] == "hello, world!"
    natural, shuffled = answers["/v1/score"]
    assert [t["token"] for t in natural["tokens"]] == ["the", "cat", "sat", "on", "the", "mat", "."]
    assert natural["score"] > shuffled["score"]
    assert answers["/v1/models"]["data"][0]["heads"] == {"masked_lm": True,
                                                         "next_sentence": True}
    assert answers["/readyz"]["status"] == "ready"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_make_run_serves_the_default_model_on_the_given_port():
    """`make run PORT=...` as the README says (packages already present, so no install)."""
    port = free_port()
    proc = subprocess.Popen(["make", "--no-print-directory", "run", f"PORT={port}"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True,
                            env=dict(os.environ, BUILD=os.environ.get("BERT_BUILD_DIR",
                                                                      str(REPO / "build"))))
    try:
        def ready():
            try:
                return requests.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
            except requests.ConnectionError:
                assert proc.poll() is None, proc.stdout.read()
                return False

        wait_until(ready, timeout=120)
        info = requests.get(f"http://127.0.0.1:{port}/v1/models", timeout=10).json()
        assert info["data"][0]["id"] == "default"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
