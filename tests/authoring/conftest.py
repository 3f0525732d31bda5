"""Fixtures of the authoring tests: built distributions and fresh environments (see ``tests/freshenv.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from freshenv import REPO, FreshEnv, build


@pytest.fixture(scope="session")
def core_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The core's wheel, built once per session."""
    (wheel,) = build(REPO, tmp_path_factory.mktemp("core-dist"), "--wheel")
    return wheel


@pytest.fixture
def fresh_env(tmp_path: Path) -> FreshEnv:
    """A fresh environment with the core's dependencies and nothing of this repository."""
    return FreshEnv(tmp_path / "env")
