"""Every input the fuzzers ever crashed on, replayed: none may crash again.

fuzz/regressions/<harness>/ holds the minimised crashing inputs found by fuzz/ (one
folder per harness, see fuzz/README.md). Each is replayed through the harness's replay
binary (fuzz/out/replay_<harness>: the harness with its invariant checks, built with
ASan+UBSan, no libFuzzer), together with the harness's seed corpus so every harness is
exercised even before it has regressions. The safetensors, config.json and vocab.txt
regressions are also fed to the real bert-cli inside an otherwise good checkpoint: it must
refuse or accept them, never crash.
"""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from checkpoints import build_dir, make_checkpoint

REPO = Path(__file__).resolve().parent.parent
FUZZ = REPO / "fuzz"
OUT = FUZZ / "out"
HARNESSES = ["safetensors", "model_config", "tokenizer", "vocab", "yaml_config", "request_json",
             "checkpoint", "tokenizer_config", "torch_zip",
             "tokenizer_json", "http_head"]
SAN_ENV = {
    "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=1:allocator_may_return_null=1",
    "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
}
SAN_MARKERS = ("Sanitizer", "runtime error", "FUZZ_CHECK", "LeakSanitizer")


def inputs(kind, harness):
    d = FUZZ / kind / harness
    return sorted(p for p in d.iterdir() if p.is_file() and not p.name.startswith(".")) \
        if d.is_dir() else []


@pytest.fixture(scope="session")
def replay_bins():
    """Builds fuzz/out/replay_* with fuzz/Makefile (incremental: fast when up to date)."""
    proc = subprocess.run(["make", "-C", str(FUZZ), "-j2", "replay"], capture_output=True,
                          text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return {h: OUT / f"replay_{h}" for h in HARNESSES}


def test_regression_folders_name_harnesses():
    # A folder under a misspelt name would never be replayed.
    reg = FUZZ / "regressions"
    names = {p.name for p in reg.iterdir() if p.is_dir()} if reg.is_dir() else set()
    assert names <= set(HARNESSES), names - set(HARNESSES)
    for h in HARNESSES:
        assert (FUZZ / f"fuzz_{h}.c").is_file(), h
        assert inputs("corpus", h), f"no seed corpus for {h}"


@pytest.mark.parametrize("harness", HARNESSES)
def test_replay_regressions_and_seeds(replay_bins, harness):
    files = inputs("regressions", harness) + inputs("corpus", harness)
    env = dict(os.environ, **SAN_ENV)
    proc = subprocess.run([str(replay_bins[harness])] + [str(f) for f in files],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-6000:]
    for marker in SAN_MARKERS:
        assert marker not in proc.stderr, proc.stderr[-6000:]
    # The replayer names each input before running it: all of them ran.
    assert f"replay: {len(files)} input(s) ran" in proc.stderr
    for f in files:
        assert f"replay: {f} (" in proc.stderr


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("fuzzgood") / "ckpt", seed=3, hidden_size=16,
                           num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                           max_position_embeddings=64)


REAL_FILE = {"safetensors": "model.safetensors", "checkpoint": "model.safetensors",
             "model_config": "config.json",
             "vocab": "vocab.txt"}


@pytest.mark.parametrize("harness", sorted(REAL_FILE))
def test_regressions_through_bert_cli(good_checkpoint, tmp_path, harness):
    files = inputs("regressions", harness) + inputs("corpus", harness)
    cli = build_dir() / "bert-cli"
    assert cli.is_file(), f"{cli} not built"
    env = dict(os.environ, **SAN_ENV)
    for i, f in enumerate(files):
        d = tmp_path / f"c{i}"
        shutil.copytree(good_checkpoint, d)
        shutil.copy(f, d / REAL_FILE[harness])
        proc = subprocess.run([str(cli), "check", "--model", str(d)], capture_output=True,
                              text=True, errors="replace", timeout=120, env=env)
        # 0: the file happened to be acceptable; 1: refused with a message. Anything else
        # (a signal, a sanitizer exit) is a crash on outside input.
        assert proc.returncode in (0, 1), (f, proc.returncode, proc.stderr[-4000:])
        if proc.returncode == 1:
            assert proc.stderr.strip(), (f, "refused without a message")
        for marker in SAN_MARKERS:
            assert marker not in proc.stderr, (f, proc.stderr[-4000:])
