"""Shared fixtures: paths to the project's real data and a folder for test artefacts (screenshots)."""

from __future__ import annotations

import os
import sys
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


@pytest.fixture(scope="session")
def tiny_nuclei_model(tmp_path_factory):
    """A small three-class U-Net trained for a few seconds on simulated nuclei (weak on purpose)."""
    from napari_microseg.progress import run_with_text_progress
    from napari_microseg.simulate.nuclei import simulate_nuclei_image
    from napari_microseg.training.trainer import train

    pairs = [simulate_nuclei_image(shape=(128, 128), n_nuclei=15, seed=s) for s in range(4)]
    out = tmp_path_factory.mktemp("tiny_model") / "tiny.pt"
    cfg = {"preset": "small", "output_mode": "three_class", "patch_size": 64, "patches_per_epoch": 16, "batch_size": 4,
           "epochs": 2, "lr": 3e-3, "seed": 0, "num_threads": 2, "val_fraction": 0.25}
    run_with_text_progress(train(cfg, ([p[0] for p in pairs], [p[1] for p in pairs]), out_path=out), label="tiny model")
    return out


@pytest.fixture
def wait_worker(qtbot):
    """Wait until a widget's worker has finished (and its result was handed to the GUI thread)."""

    def wait(worker, timeout: int = 180000) -> None:
        # Waiting for worker.finished would miss a worker that ends (say, fails at once) before
        # the wait connects to the signal; an idle thread pool cannot be missed. superqt starts
        # workers on the global pool, and a queued worker implies busy threads.
        from qtpy.QtCore import QThreadPool

        assert worker is not None, "the widget refused to start the work"
        pool = QThreadPool.globalInstance()
        qtbot.waitUntil(lambda: pool.activeThreadCount() == 0 and not worker.is_running, timeout=timeout)
        qtbot.wait(50)  # the finished/returned handlers, queued to the GUI thread

    return wait


@pytest.fixture(autouse=True)
def _every_progress_message_shown(monkeypatch):
    """Docks show progress at most every 0.1 s (``PROGRESS_INTERVAL_S``: the latest event, the others held back);
    tests that read a run's messages see each one. The test of the interval itself sets it back."""
    import importlib

    monkeypatch.setattr(importlib.import_module("napari_microseg.widgets._base"), "PROGRESS_INTERVAL_S", 0.0)
    yield


@pytest.fixture(autouse=True)
def _forget_models_trained_by_other_tests():
    """Models a test trained in a Training dock are offered first (and chosen) by later Segmentation
    docks of the same process, as in one napari session; each test starts as a fresh session."""
    yield
    segmentation = sys.modules.get("napari_microseg.widgets.segmentation")
    if segmentation is not None:
        segmentation.RECENT_MODELS.clear()
