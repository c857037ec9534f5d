"""Shared pytest fixtures: where the repository and the built binaries are."""
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def repo():
    return REPO


@pytest.fixture(scope="session")
def build_dir():
    return Path(os.environ.get("BERT_BUILD_DIR", REPO / "build"))
