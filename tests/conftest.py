"""Shared fixtures: paths to the project's real data and a folder for test artefacts (screenshots)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MICROSEG_SHARED_DATA", ROOT.parent / "shared" / "data"))
ARTIFACTS = Path(os.environ.get("MICROSEG_TEST_ARTIFACTS", ROOT / "test-artifacts"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only real data folder (``../shared/data``); the suite needs it (CI has it beside the clone)."""
    assert SHARED_DATA.is_dir(), f"real data folder missing: {SHARED_DATA} (set MICROSEG_SHARED_DATA)"
    return SHARED_DATA


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Folder where tests write screenshots and other artefacts to look at."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
