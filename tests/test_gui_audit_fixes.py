"""GUI behaviour found broken by the GUI audit: stacks in training, renamed layers, default model,
stale per-run results, scrolling docks, early stop, the fine-tuning set."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gui


def _simulate_nuclei_stack(viewer, qtbot, n_frames=3, size=96, n_nuclei=8):
    """Add a simulated (T, Y, X) nuclei time-lapse through the Simulation widget."""
    from napari_microseg.widgets.simulation import SimulationWidget

    sim = SimulationWidget(viewer)
    sim.domain.value = "nuclei time-lapse [N]"
    form = sim.forms["nuclei time-lapse [N]"]
    form["n_frames"].value, form["size"].value, form["n_nuclei"].value = n_frames, size, n_nuclei
    worker = sim.generate()
    assert worker is not None
    with qtbot.waitSignal(worker.finished, timeout=180000):
        pass
    qtbot.wait(50)
    assert viewer.layers["sim nuclei labels"].data.shape == (n_frames, size, size)
    return sim


def test_training_on_a_stack_uses_every_frame(make_napari_viewer, qtbot, tmp_path, wait_worker):
    """A (T, Y, X) image with (T, Y, X) labels trains on T frame pairs (it used to fail on shapes)."""
    from napari_microseg.io.models import load_model
    from napari_microseg.widgets.training import TrainingWidget

    viewer = make_napari_viewer(show=False)
    _simulate_nuclei_stack(viewer, qtbot, n_frames=3)
    widget = TrainingWidget(viewer)
    widget.image_layer.value = ["sim nuclei (fluorescence)"]
    widget.labels_layer.value = ["sim nuclei labels"]
    widget.patch.value, widget.epochs.value = 64, 1
    widget.patches_per_epoch.value, widget.batch_size.value = 8, 4
    widget.out_path.value = str(tmp_path / "stack.pt")
    worker = widget.train()
    wait_worker(worker)
    assert widget.result is not None, widget.status.text()
    assert widget.result.epochs_run == 1 and widget.result.stop_reason == "completed"
    trained_on = load_model(tmp_path / "stack.pt").config["training"]
    assert trained_on["data"] == "napari layers: sim nuclei (fluorescence) + sim nuclei labels (3 annotated frame(s))"
