"""Training widget: trains in a worker while the GUI stays responsive; Stop keeps the best model; preview works."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

pytestmark = pytest.mark.gui


def _viewer_with_sample(make_napari_viewer):
    from napari_microseg._sample_data import dsb2018_nuclei

    viewer = make_napari_viewer(show=True)
    for data, kwargs, kind in dsb2018_nuclei():
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    return viewer


def _small_config(widget, tmp_path, epochs=2):
    widget.image_layer.value = ["DSB2018 nuclei"]
    widget.labels_layer.value = ["DSB2018 nuclei labels"]
    widget.patch.value = 64
    widget.epochs.value = epochs
    widget.patches_per_epoch.value = 16
    widget.batch_size.value = 4
    widget.out_path.value = str(tmp_path / "model.pt")


def test_training_keeps_gui_responsive_and_writes_model(make_napari_viewer, qtbot, tmp_path, artifacts, wait_worker):
    from qtpy.QtCore import QTimer

    from napari_microseg.widgets.training import TrainingWidget

    viewer = _viewer_with_sample(make_napari_viewer)
    widget = TrainingWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Training")
    _small_config(widget, tmp_path, epochs=3)

    gaps: list[float] = []
    last = [time.perf_counter()]
    running = [False]  # measure while the run is in progress: from its first progress event

    def beat():
        now = time.perf_counter()
        if running[0]:
            gaps.append(now - last[0])
        last[0] = now

    timer = QTimer()
    timer.setInterval(20)
    timer.timeout.connect(beat)
    timer.start()
    assert not widget.plot.isVisible()  # before the first run the controls have the room
    worker = widget.train()
    assert worker is not None, widget.status.text()
    worker.yielded.connect(lambda _: running.__setitem__(0, True))
    with qtbot.waitSignal(worker.finished, timeout=180000):
        pass
    timer.stop()
    qtbot.wait(50)
    assert (tmp_path / "model.pt").is_file(), widget.status.text()
    assert widget.result is not None and widget.result.epochs_run == 3
    assert len(widget.plot.epochs) == 3 and len(widget.plot.steps) > 3
    history = (tmp_path / "model.history.csv").read_text().splitlines()  # as `microseg train` writes it
    assert history[0] == "epoch,train_loss,val_loss,val_dice,lr,seconds" and len(history) == 4
    p99 = float(np.percentile(gaps, 99))
    assert len(gaps) > 20
    assert p99 < 0.2, f"GUI event loop stalled: 99th percentile heartbeat gap {p99 * 1000:.0f} ms"

    # preview on the current frame adds a new labels layer
    wait_worker(widget.preview())  # through the thread pool: one frame can finish before a signal wait connects
    assert any(layer.name.startswith("preview model") for layer in viewer.layers)
    viewer.window._qt_window.resize(1400, 1000)
    qtbot.wait(100)
    # the loss plot stays in view, pinned above the progress bar, however long the controls are
    top = widget.plot.mapTo(widget, widget.plot.rect().topLeft()).y()
    assert widget.plot.isVisible() and widget.plot.height() >= 160 and top + widget.plot.height() <= widget.height()
    from skimage.io import imsave

    imsave(artifacts / "training_widget.png", viewer.screenshot(canvas_only=False, flash=False), check_contrast=False)


def test_stop_keeps_best_model(make_napari_viewer, qtbot, tmp_path, wait_worker):
    from napari_microseg.io.models import load_model
    from napari_microseg.widgets.training import TrainingWidget

    viewer = _viewer_with_sample(make_napari_viewer)
    widget = TrainingWidget(viewer)
    _small_config(widget, tmp_path, epochs=200)
    widget.distance_head.value = True  # the model stopped early still has its distance head
    widget.image_sampling.value = "objects"
    worker = widget.train()
    qtbot.waitUntil(lambda: len(widget.plot.epochs) >= 1, timeout=120000)
    widget.stop()
    wait_worker(worker, timeout=60000)  # the last step can end before a signal wait would connect
    assert widget.result.stop_reason == "stopped"
    assert widget.result.epochs_run < 200
    loaded = load_model(tmp_path / "model.pt")
    assert loaded.config["distance_head"] is True and loaded.config["model"]["n_classes"] == 4
    assert loaded.config["training"]["config"]["image_sampling"] == "objects"
    # the option only applies to three_class output
    widget.output_mode.value = "binary"
    assert widget.config()["distance_head"] is False


def test_closing_the_viewer_mid_run_winds_the_training_down(make_napari_viewer, qtbot, tmp_path, capfd):
    """napari quits workers when its window closes; the trainer is then closed in its thread as after
    Stop: the best model is kept with its stop reason, torch's thread count restored, no tracebacks."""
    import torch

    from napari_microseg.io.models import load_model
    from napari_microseg.widgets.training import TrainingWidget

    threads_before = torch.get_num_threads()
    viewer = _viewer_with_sample(make_napari_viewer)
    widget = TrainingWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Training")
    _small_config(widget, tmp_path, epochs=200)
    worker = widget.train()
    qtbot.waitUntil(lambda: len(widget.plot.epochs) >= 1, timeout=120000)
    viewer.close()
    qtbot.waitUntil(lambda: not worker.is_running, timeout=60000)
    qtbot.wait(100)
    training = load_model(tmp_path / "model.pt").config["training"]
    assert training["stop_reason"] == "stopped" and 1 <= training["epochs_run"] < 200
    assert torch.get_num_threads() == threads_before
    assert "has been deleted" not in capfd.readouterr().err


def test_bad_inputs_give_messages(make_napari_viewer, wait_worker, tmp_path):
    from napari_microseg.widgets.training import TrainingWidget

    viewer = make_napari_viewer(show=False)
    widget = TrainingWidget(viewer)
    widget.out_path.value = str(tmp_path / "model.pt")
    assert widget.train() is None
    assert "Choose an image layer" in widget.status.text()
    viewer.add_image(np.random.rand(64, 64).astype(np.float32), name="img")
    viewer.add_labels(np.zeros((64, 64), np.uint16), name="empty")
    viewer.add_labels(np.ones((32, 32), np.uint16), name="small")
    widget.image_layer.value = ["img"]
    widget.labels_layer.value = ["empty"]
    wait_worker(widget.train())  # layer contents are checked in the worker: the message comes from there
    assert "empty (on img): the labels layer is empty" in widget.status.text()
    assert not (tmp_path / "model.pt").exists() and widget.result is None
    nan_image = np.random.rand(64, 64).astype(np.float32)
    nan_image[5, 5] = np.nan
    viewer.add_image(nan_image, name="nan")
    viewer.add_labels(np.ones((64, 64), np.uint16), name="full")
    widget.image_layer.value, widget.labels_layer.value = ["nan"], ["full"]
    wait_worker(widget.train())
    assert "full (on nan): the image contains NaN" in widget.status.text()  # the pair named: the image is at fault
    assert not (tmp_path / "model.pt").exists() and widget.result is None
    # a blank image, and object ids given to the multiclass (class map) output: said, nothing trained
    viewer.add_image(np.zeros((64, 64), np.float32), name="blank")
    widget.image_layer.value, widget.labels_layer.value = ["blank"], ["full"]
    wait_worker(widget.train())
    assert "the image is blank" in widget.status.text() and not (tmp_path / "model.pt").exists()
    ids = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) // 64  # 64 objects
    viewer.add_labels(ids, name="ids")
    widget.image_layer.value, widget.labels_layer.value = ["img"], ["ids"]
    widget.output_mode.value = "multiclass"
    wait_worker(widget.train())
    assert "look like object ids" in widget.status.text() and not (tmp_path / "model.pt").exists()
    widget.output_mode.value = "three_class"
    widget.image_layer.value = ["img"]
    widget.labels_layer.value = ["small"]
    assert widget.train() is None
    assert "does not match" in widget.status.text()
    widget.labels_layer.value = ["small", "empty"]
    assert widget.train() is None
    assert "one labels layer per image" in widget.status.text()


def test_one_small_image_without_validation_and_the_ccd_normalisation(make_napari_viewer, wait_worker, tmp_path):
    """A 60 x 60 image cannot spare a validation strip: share 0 trains on it all. Multiclass (the CCD
    task) defaults to raw-ADC normalisation, stored in the model."""
    from napari_microseg.io.models import load_model
    from napari_microseg.simulate.nuclei import simulate_nuclei_image
    from napari_microseg.training.normalize import CCD_NORMALIZATION
    from napari_microseg.widgets.training import PER_IMAGE, RAW_CCD, TrainingWidget

    image, labels = simulate_nuclei_image((60, 60), 4, seed=1)
    viewer = make_napari_viewer(show=False)
    viewer.add_image(image, name="small")
    viewer.add_labels(labels, name="nuclei")
    widget = TrainingWidget(viewer)
    widget.image_layer.value, widget.labels_layer.value = ["small"], ["nuclei"]
    widget.patch.value, widget.epochs.value, widget.patches_per_epoch.value, widget.batch_size.value = 32, 1, 4, 4
    widget.out_path.value = str(tmp_path / "small.pt")
    wait_worker(widget.train())
    assert "validation" in widget.status.text() and not (tmp_path / "small.pt").exists()
    widget.val_fraction.value = 0.0
    wait_worker(widget.train())
    assert load_model(tmp_path / "small.pt").config["normalization"]["kind"] == "percentile", widget.status.text()
    assert "(training loss " in widget.status.text()  # no validation: the best epoch is by training loss
    # resuming keeps the model's own normalisation whatever the form shows
    widget.resume.value, widget.epochs.value, widget.normalization.value = True, 2, RAW_CCD
    wait_worker(widget.train())
    resumed = load_model(tmp_path / "small.pt").config
    assert resumed["training"]["epochs_run"] == 2 and resumed["normalization"]["kind"] == "percentile", \
        widget.status.text()
    # the plot shows the whole run: epoch 1 (its mean loss, from the checkpoint's history), then epoch 2's steps
    assert [e for e, *_ in widget.plot.epochs] == [1, 2]
    first_x, first_loss = widget.plot.steps[0]
    assert first_x == 0.5 and abs(first_loss - resumed["training"]["history"][0]["train_loss"]) < 1e-9
    assert all(x > 1 for x, _ in widget.plot.steps[1:])
    widget.resume.value = False
    widget.output_mode.value = "multiclass"
    assert widget.normalization.value == RAW_CCD and widget.config()["normalization"] == CCD_NORMALIZATION
    widget.output_mode.value = "three_class"
    assert widget.normalization.value == PER_IMAGE
    # 'background id' can be set with sparse labels only
    assert not widget.background_id.enabled
    widget.sparse.value = True
    assert widget.background_id.enabled


def test_free_names_go_on_numbering(tmp_path):
    """A taken result name gets _2, _3 ...; a numbered copy given back (the Training dock shows the name
    it used) goes on with the numbers instead of piling up suffixes (model_2_2.pt)."""
    from napari_microseg.widgets._base import free_name

    (tmp_path / "model.pt").touch()
    assert free_name(tmp_path / "model.pt").name == "model_2.pt"
    (tmp_path / "model_2.pt").touch()
    assert free_name(tmp_path / "model_2.pt").name == "model_3.pt"
    (tmp_path / "run_7.pt").touch()  # a name of the user's own that ends in a number: kept as the stem
    assert free_name(tmp_path / "run_7.pt").name == "run_7_2.pt"
    assert free_name(tmp_path / "new.pt").name == "new.pt"


def test_lazy_layers_are_read_in_the_worker_not_on_the_gui_thread(make_napari_viewer, wait_worker, tmp_path):
    """A lazy (dask) image and labels layer, e.g. a big TIFF opened lazily: the Train button only looks
    at names and shapes; every chunk is read in the worker (synchronous dask scheduler: a chunk is
    computed in the thread that asks for it), and the model is trained on the data read."""
    import threading

    import dask
    import dask.array as da

    from napari_microseg.io.models import load_model
    from napari_microseg.simulate.nuclei import simulate_nuclei_image
    from napari_microseg.widgets.training import TrainingWidget

    image, labels = simulate_nuclei_image((96, 96), 6, seed=2)
    read_on_gui_thread = []

    def lazy(array):
        def record(block):
            read_on_gui_thread.append(threading.current_thread() is threading.main_thread())
            return block

        return da.from_array(array, chunks=48).map_blocks(record, dtype=array.dtype)

    viewer = make_napari_viewer(show=False)
    with dask.config.set(scheduler="synchronous"):
        viewer.add_image(lazy(image), name="lazy image", contrast_limits=(0, 1))
        viewer.add_labels(lazy(labels), name="lazy labels")
        widget = TrainingWidget(viewer)
        widget.image_layer.value, widget.labels_layer.value = ["lazy image"], ["lazy labels"]
        widget.patch.value, widget.epochs.value, widget.patches_per_epoch.value, widget.batch_size.value = 32, 1, 4, 4
        widget.val_fraction.value = 0.0
        widget.out_path.value = str(tmp_path / "lazy.pt")
        read_on_gui_thread.clear()  # napari reads the visible slice to draw it: not the widget's doing
        worker = widget.train()  # (napari cannot draw during this call: it holds the GUI thread)
        # (the worker may already be reading, on its own thread: False entries)
        assert True not in read_on_gui_thread, "the Train button read the lazy layers on the GUI thread"
        wait_worker(worker)
    # every chunk of both layers was read by the worker (napari may redraw meanwhile, on the GUI thread)
    assert read_on_gui_thread.count(False) >= 2 * 4, read_on_gui_thread
    assert load_model(tmp_path / "lazy.pt").config["training"]["epochs_run"] == 1, widget.status.text()
    assert "1 annotated frame(s)" in load_model(tmp_path / "lazy.pt").config["training"]["config"]["data_description"]


def test_stop_while_the_layers_are_read_trains_nothing(make_napari_viewer, wait_worker, tmp_path):
    """Stop pressed while lazy layers are read (simulated: the first chunk read sets the run's stop
    event, as the Stop button does): the next pair is not read, no training starts, nothing is written."""
    import dask
    import dask.array as da

    from napari_microseg.simulate.nuclei import simulate_nuclei_image
    from napari_microseg.widgets.training import TrainingWidget, read_training_pairs

    image, labels = simulate_nuclei_image((64, 64), 4, seed=3)
    viewer = make_napari_viewer(show=False)
    widget = TrainingWidget(viewer)
    reads = []

    def stop_on_read(block):
        stop_event = getattr(widget, "_cooperative_stop", None)  # set once a run has started
        if stop_event is not None and threading.current_thread() is not threading.main_thread():  # (napari draws)
            reads.append(block.shape)
            stop_event.set()  # what TrainingWidget.stop() does for a training run
        return block

    with dask.config.set(scheduler="synchronous"):
        for i in range(2):
            viewer.add_image(da.from_array(image).map_blocks(stop_on_read, dtype=image.dtype), name=f"image {i}",
                             contrast_limits=(0, 1))
            viewer.add_labels(labels.copy(), name=f"labels {i}")
        widget.image_layer.value, widget.labels_layer.value = ["image 0", "image 1"], ["labels 0", "labels 1"]
        widget.out_path.value = str(tmp_path / "stopped.pt")
        wait_worker(widget.train())
    assert len(reads) == 1, "the second image was read after Stop"
    assert "stopped before training started; nothing was written" in widget.status.text()
    assert widget.result is None and not list(tmp_path.iterdir())
    assert widget.progress.format() == "stopped"
    # the reader itself: a stop event set before a pair means that pair is not read
    stop = threading.Event()
    stop.set()
    gen = read_training_pairs([image], [labels], ["labels"], False, stop)
    with pytest.raises(StopIteration) as done:
        next(gen)
    assert done.value.value is None


def test_loss_plot_legend_sits_above_the_curves_not_on_them(qtbot):
    """The legend hid the newest validation points (mid-right, where a falling loss ends): it now lies on
    one row above the view box, over none of the curves, and lists all three curves side by side."""
    from napari_microseg.widgets._plot import LossPlot

    plot = LossPlot()
    qtbot.addWidget(plot)
    plot.resize(380, 220)
    plot.add_step(0.5, 0.7)
    plot.add_epoch(1, 0.6, 0.5)
    plot.refresh()
    plot.show()
    qtbot.wait(50)
    view = plot.getPlotItem().vb.sceneBoundingRect()
    legend = plot.getPlotItem().legend.sceneBoundingRect()
    assert legend.bottom() <= view.top() + 2  # above the curves' box
    assert legend.top() >= 0 and legend.height() < 0.2 * plot.height()  # one row, inside the widget
    assert legend.left() >= 0 and legend.right() <= plot.width()


def test_loss_plot_legend_lists_only_curves_it_draws(qtbot):
    """A run without validation lists no validation curves; they enter with their first point and leave on reset."""
    from napari_microseg.widgets._plot import LossPlot

    plot = LossPlot()
    qtbot.addWidget(plot)

    def listed():
        return [label.text for _, label in plot.legend.items]

    plot.add_step(0.5, 0.7)
    plot.add_epoch(1, None, None)  # no validation images
    plot.refresh()
    assert listed() == ["train loss"]
    plot.add_epoch(2, 0.4, 0.8)
    plot.refresh()
    assert listed() == ["train loss", "val loss", "val Dice"]
    plot.reset()
    assert listed() == ["train loss"]


def test_choosing_an_output_keeps_a_chosen_intensity(make_napari_viewer):
    """Only the other output's default intensity is swapped: raw CCD chosen for a binary task stays."""
    from napari_microseg.widgets.training import PER_IMAGE, RAW_CCD, TrainingWidget

    widget = TrainingWidget(make_napari_viewer())
    widget.normalization.value = RAW_CCD
    widget.output_mode.value = "binary"
    assert widget.normalization.value == RAW_CCD
    widget.normalization.value = PER_IMAGE
    widget.output_mode.value = "multiclass"  # the CCD task: raw ADC by default
    assert widget.normalization.value == RAW_CCD
    widget.output_mode.value = "binary"  # back: the per-image default again
    assert widget.normalization.value == PER_IMAGE


def test_object_ids_note():
    """Six or more values each painted as one region per frame read as object ids; class maps (a few values,
    many regions each) and sparse ignore values pass without a note."""
    from napari_microseg.training.data import object_ids_note

    ids = np.zeros((64, 64), np.int32)
    for i in range(8):  # 8 separate nuclei, ids 1..8
        ids[4 + 7 * i: 8 + 7 * i, 10:16] = i + 1
    assert "8 label values" in object_ids_note(ids)
    assert "object ids" in object_ids_note(np.stack([ids, ids]))  # a tracked movie: each id once per frame
    classes = ids.copy()
    classes[classes > 0] = (classes[classes > 0] - 1) % 3 + 1  # 3 classes of 8 objects
    assert object_ids_note(classes) is None
    few = ids.copy()
    few[few > 5] = 0  # five objects: could be five classes
    assert object_ids_note(few) is None
    touching = ids.copy()
    touching[:, 30:40] = 1  # class 1 painted twice: a class, not an object
    touching[0, 30:40] = -1
    assert object_ids_note(touching) is None


def test_multiclass_on_a_few_object_ids_is_trained_and_noted(make_napari_viewer, wait_worker, tmp_path):
    """Multiclass on nine painted nuclei (under the 32-value refusal): trained, and the end message says
    the labels look like object ids."""
    from napari_microseg.widgets.training import TrainingWidget

    viewer = make_napari_viewer(show=False)
    widget = TrainingWidget(viewer)
    rng = np.random.default_rng(0)
    image = rng.random((64, 64)).astype(np.float32)
    ids = np.zeros((64, 64), np.uint16)
    for i in range(9):
        ids[2 + 7 * i: 6 + 7 * i, 20:26] = i + 1
        image[2 + 7 * i: 6 + 7 * i, 20:26] += 2
    viewer.add_image(image, name="img")
    viewer.add_labels(ids, name="nuclei")
    widget.image_layer.value, widget.labels_layer.value = ["img"], ["nuclei"]
    widget.output_mode.value = "multiclass"
    widget.patch.value, widget.epochs.value, widget.patches_per_epoch.value, widget.batch_size.value = 64, 1, 4, 4
    widget.out_path.value = str(tmp_path / "model.pt")
    wait_worker(widget.train())
    assert (tmp_path / "model.pt").exists(), widget.status.text()
    assert "Note: nuclei (on img): each of the 9 label values is one object" in widget.status.text()
