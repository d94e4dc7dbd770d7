"""Fixes from session 36's hunts: each test failed on the code before its fix."""

from __future__ import annotations

import io
import threading
import time

import numpy as np
import pytest


def _nuclei(seed: int = 3, size: int = 160, n: int = 12):
    from napari_microseg.simulate.nuclei import simulate_nuclei_image

    image, labels = simulate_nuclei_image(shape=(size, size), n_nuclei=n, seed=seed)[:2]
    return image, labels


def _small_training_dock(make_napari_viewer, tmp_path, name: str = "run.pt", epochs: int = 3):
    from napari_microseg.widgets.training import TrainingWidget

    viewer = make_napari_viewer()
    image, labels = _nuclei()
    viewer.add_image(image, name="img")
    viewer.add_labels(labels.astype(np.uint16), name="lab")
    dock = TrainingWidget(viewer)
    viewer.window.add_dock_widget(dock, name="Training")
    dock.image_layer.value = ["img"]
    dock.labels_layer.value = ["lab"]
    dock.patch.value = 64
    dock.epochs.value = epochs
    dock.patches_per_epoch.value = 16
    dock.batch_size.value = 4
    dock.out_path.value = str(tmp_path / name)
    return viewer, dock


@pytest.mark.gui
def test_a_training_that_fails_after_an_epoch_says_and_offers_the_model_it_kept(make_napari_viewer, tmp_path,
                                                                             wait_worker, monkeypatch):
    """A run that diverged in epoch 2 kept epoch 1's model and its .last.pt, but the dock said only the error:
    no history beside it, not offered to the Segmentation dock, nothing about resuming it."""
    from napari_microseg.training import data as training_data
    from napari_microseg.widgets import segmentation

    original = training_data.PatchSampler.sample
    calls = [0]

    def sample(self, *args, **kwargs):  # epoch 2's third batch: a step whose loss is not finite
        calls[0] += 1
        x, y = original(self, *args, **kwargs)
        if calls[0] == 7:
            x = np.full_like(x, np.inf)
        return x, y

    monkeypatch.setattr(training_data.PatchSampler, "sample", sample)
    _, dock = _small_training_dock(make_napari_viewer, tmp_path)
    wait_worker(dock.train())
    text = dock.status.text()
    model = tmp_path / "run.pt"
    assert "diverged" in text and model.is_file()
    assert f"best epoch so far (1) is kept: {model}" in text and "tick 'resume'" in text, text
    assert (tmp_path / "run.history.csv").is_file() and "run.history.csv" in text
    assert str(model) in map(str, segmentation.RECENT_MODELS) and dock.model_path == str(model)


def test_training_says_it_prepares_the_data_and_stop_acts_before_the_first_step(tmp_path):
    """The data's preparation (20 s on a painted 20 x 1024^2 movie) said nothing and Stop waited for the first step."""
    import torch

    from napari_microseg.training.trainer import train

    image, labels = _nuclei()
    stop = threading.Event()
    cfg = {"preset": "small", "output_mode": "three_class", "patch_size": 64, "patches_per_epoch": 8, "batch_size": 4,
           "epochs": 1, "seed": 0, "num_threads": 1}
    threads = torch.get_num_threads()
    gen = train(cfg, ([image] * 2, [labels] * 2), out_path=tmp_path / "m.pt", stop_event=stop)
    first = next(gen)
    assert first.kind == "prepare" and first.total == 0 and "preparing" in first.message
    stop.set()
    kinds = []
    with pytest.raises(StopIteration) as ended:
        while True:
            kinds.append(next(gen).kind)
    result = ended.value.value
    assert set(kinds) <= {"prepare"}  # no training step was taken
    assert result.model_path is None and result.stop_reason == "stopped" and not list(tmp_path.iterdir())
    assert torch.get_num_threads() == threads


def test_object_sizes_are_measured_as_before_and_fast():
    """foreground_diameter took 0.6 s a 1024^2 frame in ndi.maximum (it sorts every pixel); same figures now."""
    from scipy import ndimage as ndi
    from skimage.data import binary_blobs

    from napari_microseg.inference.scale import foreground_diameter, object_size_of

    mask = binary_blobs(512, blob_size_fraction=0.03, volume_fraction=0.3, rng=1)
    comps, n = ndi.label(mask)
    dist = ndi.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    radius = np.asarray(ndi.maximum(dist, comps, np.arange(1, n + 1)))
    assert radius.max() * 2 + 0.5 >= foreground_diameter(mask) >= radius.min() * 2 + 0.5
    assert object_size_of([float("nan")]) is None
    size = object_size_of([10.0, 20.0, float("nan"), 30.0])
    assert size["diameter"] == 20.0 and size["measured_on"] == "3 training image(s)"


def test_text_progress_estimates_from_the_steps_not_the_preparation():
    """The first estimates counted the time before the first step (reading, preparing): eta 320 s for 16 s left."""
    from napari_microseg.progress import Progress, run_with_text_progress

    def work():
        yield Progress(0, 0, "preparing")
        time.sleep(0.6)  # preparation
        for done in range(1, 11):
            time.sleep(0.01)
            yield Progress(done, 10, "step")
        return "ok"

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    stream = Terminal()
    assert run_with_text_progress(work(), stream=stream, label="train") == "ok"
    lines = [line.strip() for line in stream.getvalue().split("\r") if " 2/10" in line]
    eta = float(lines[0].split("eta")[1].split("s")[0])
    assert eta < 0.4, lines[0]  # 8 steps of 0.01 s left, not 8 x 0.3 s
    assert "] 0/0" not in stream.getvalue()  # a message before the count has no empty bar


@pytest.mark.gui
def test_dock_progress_estimates_from_the_steps_not_the_preparation(make_napari_viewer, wait_worker):
    from napari_microseg.progress import Progress
    from napari_microseg.widgets.training import TrainingWidget

    dock = TrainingWidget(make_napari_viewer())
    formats = []

    def work():
        yield Progress(0, 1, "reading")
        time.sleep(0.6)
        yield Progress(1, 1, "read")
        for done in range(1, 11):
            time.sleep(0.01)
            yield Progress(done, 10, "step")

    wait_worker(dock.start(work, lambda _: None, on_event=lambda _: formats.append(dock.progress.format())))
    eta = next(float(f.split("eta")[1].strip().rstrip("s")) for f in formats[2:] if "eta" in f)
    assert eta < 0.4, formats


def test_annotated_frames_leave_out_frames_marked_not_annotated_and_a_background_like_one_nucleus_is_said(tmp_path):
    from napari_microseg.progress import drain
    from napari_microseg.widgets.training import read_training_pairs

    image, labels = _nuclei()
    labels = labels.astype(np.int32)
    notes: list[str] = []
    # sparse: napari numbered the first nucleus painted 1, the default background id
    drain(read_training_pairs([image], [labels], ["lab"], True, background_value=1, notes=notes))
    assert any("background id 1 covers" in note for note in notes), notes
    painted = labels.copy()
    painted[:20] = 1  # a background stroke as large as a few nuclei
    painted[painted == 2] = 0
    notes.clear()
    drain(read_training_pairs([image], [np.where(labels == 1, 0, painted)], ["lab"], True, background_value=1,
                              notes=notes))
    assert not notes, notes
