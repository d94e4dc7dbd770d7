"""Behaviour found broken in session 27 (bug hunts and the known-gaps list); each test fails without its fix."""

from __future__ import annotations

import numpy as np
import pytest


def test_prominent_peaks_in_windows_agree_with_h_maxima_of_the_whole_image():
    """Auto-label's seed test made window by window (h-maxima of a whole frame took ~110 bytes
    per pixel, the peak of auto-label) keeps exactly the peaks that h-maxima of the whole image
    keeps on nuclei images, with blocks small enough that the objects fall into many windows; where a
    bright background ridge leads out of a window it keeps more, never fewer."""
    from scipy import ndimage as ndi
    from skimage.feature import peak_local_max
    from skimage.morphology import h_maxima

    from napari_microseg.autolabel.fluorescence import prominent_peaks
    from napari_microseg.simulate.nuclei import simulate_nuclei_image

    img, _ = simulate_nuclei_image((384, 384), n_nuclei=120, seed=5, cluster_fraction=0.5)
    height = ndi.gaussian_filter(img / img.max(), 2.0).astype(np.float32)
    objects, n = ndi.label(height > 0.25)
    assert n > 20
    peaks = peak_local_max(height, min_distance=3, labels=objects, exclude_border=False)
    for prominence in (0.02, 0.05, 0.15):
        whole = ndi.binary_dilation(h_maxima(height, prominence).astype(bool), iterations=1)[tuple(peaks.T)]
        windows = prominent_peaks(height, peaks, objects, prominence, margin=12, block=64)
        assert 0 < whole.sum() < len(peaks)  # the test can tell kept from dropped
        np.testing.assert_array_equal(windows, whole)
    assert prominent_peaks(height, peaks[:0], objects, 0.05).shape == (0,)
    ridge = np.zeros((200, 300), np.float32)  # two peaks of one object, each on a ridge to a brighter point far off
    ridge[90:111, 10:45] = 0.40
    ridge[100, 18], ridge[100, 36] = 0.50, 0.49
    ridge[0:100, 18] = ridge[0, 18:290] = ridge[101:200, 36] = ridge[199, 36:290] = ridge[:, 289] = 0.47
    ridge[100, 289] = 0.9
    two = np.zeros(ridge.shape, np.int32)
    two[90:111, 10:45], two[95:106, 284:295] = 1, 2
    on_ridge = np.array([[100, 18], [100, 36], [100, 289]])
    whole = ndi.binary_dilation(h_maxima(ridge, 0.05).astype(bool), iterations=1)[tuple(on_ridge.T)]
    windows = prominent_peaks(ridge, on_ridge, two, 0.05)
    assert (windows >= whole).all() and windows.sum() > whole.sum()


def test_z_step_is_read_from_ome_imagej_and_ome_zarr(tmp_path):
    """The Z step of OME-TIFF (PhysicalSizeZ), ImageJ hyperstacks (spacing) and OME-Zarr (the z scale)
    becomes the layer's Z scale in micrometres (it opened at 1 pixel, the stack squashed ~7x in 3-D)."""
    import tifffile
    import zarr

    from napari_microseg._reader import read_layers

    planes = np.random.default_rng(0).integers(0, 200, (5, 32, 40)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "z.ome.tif", planes, metadata={"axes": "ZYX", "PhysicalSizeX": 0.2,
                                                                "PhysicalSizeY": 0.2, "PhysicalSizeZ": 1.5})
    movie = np.random.default_rng(1).integers(0, 200, (3, 4, 32, 40)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "ij.tif", movie, imagej=True, resolution=(1 / 0.65, 1 / 0.65),
                     metadata={"axes": "TZYX", "spacing": 2.0, "unit": "um", "finterval": 30, "tunit": "sec"})
    group = zarr.open_group(str(tmp_path / "z.zarr"), mode="w")
    group.create_array("0", data=planes)
    group.attrs["multiscales"] = [{"version": "0.4", "axes": [{"name": n, "type": "space", "unit": "micrometer"} for n in "zyx"],
                                   "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [2.5, 0.5, 0.5]}]}]}]
    (_, ome, _), = read_layers(str(tmp_path / "z.ome.tif"))
    assert ome["scale"] == pytest.approx((1.5, 0.2, 0.2)) and ome["units"] == ("micrometer",) * 3
    (_, ij, _), = read_layers(str(tmp_path / "ij.tif"))
    assert ij["scale"] == pytest.approx((0.5, 2.0, 0.65, 0.65))
    assert ij["units"] == ("minute", "micrometer", "micrometer", "micrometer")
    (_, oz, _), = read_layers(str(tmp_path / "z.zarr"))
    assert oz["scale"] == pytest.approx((2.5, 0.5, 0.5))


@pytest.mark.parametrize("shape, scale, units", [
    ((5, 24, 32), (1.5, 0.2, 0.2), ("micrometer",) * 3),
    ((3, 4, 24, 32), (2.0, 1.5, 0.2, 0.2), ("minute", "micrometer", "micrometer", "micrometer")),
    ((3, 4, 24, 32), (1.0, 1.0, 1.0, 1.0), ("pixel",) * 4),
])
def test_z_stack_and_4d_labels_round_trip_as_labels_with_their_scale(tmp_path, shape, scale, units):
    """A (Z, Y, X) Labels layer in micrometres saves as ZYX with its Z step (it became TYX, Z dropped), and a
    (T, Z, Y, X) layer of 3 or 4 planes as grey TZYX (tifffile wrote planar RGB: it reopened as an Image)."""
    import tifffile

    from napari_microseg._reader import read_layers
    from napari_microseg._writer import write_labels_tiff

    labels = np.zeros(shape, np.uint16)
    labels[..., 4:10, 5:12] = 7
    written, = write_labels_tiff(str(tmp_path / "painted.tif"), labels, {"scale": scale, "units": units})
    with tifffile.TiffFile(written) as tif:
        assert tif.series[0].axes == {3: "ZYX", 4: "TZYX"}[len(shape)]
        assert tif.pages[0].photometric == tifffile.PHOTOMETRIC.MINISBLACK
    (data, kwargs, kind), = read_layers(written)
    assert kind == "labels"
    np.testing.assert_array_equal(data, labels)
    if units[0] != "pixel":
        assert kwargs["scale"] == pytest.approx(scale) and kwargs["units"] == units


def _ome_zarr_movie(path, movie, scale):
    import zarr

    group = zarr.open_group(str(path), mode="w")
    group.create_array("0", data=movie, chunks=(1,) + movie.shape[1:])
    group.attrs["multiscales"] = [{"version": "0.4", "axes": [{"name": "t", "type": "time", "unit": "second"}]
                                   + [{"name": n, "type": "space", "unit": "micrometer"} for n in "yx"],
                                   "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]}]}]


def test_zarr_labels_keep_the_movies_calibration(tmp_path, tiny_nuclei_model):
    """Labels written as Zarr (segment of a Zarr movie; batch segment and autolabel per frame) carry the
    movie's pixel size and frame interval: they opened at 1 pixel per unit, over half the image, and
    `microseg track` on them recorded no units."""
    import json

    from napari_microseg._reader import read_layers
    from napari_microseg.cli import main
    from napari_microseg.simulate.nuclei import simulate_nuclei_timelapse

    fluorescence = simulate_nuclei_timelapse(n_frames=3, shape=(96, 96), n_nuclei=6, seed=2).fluorescence
    movie = (fluorescence / fluorescence.max() * 250).astype(np.uint8)
    _ome_zarr_movie(tmp_path / "movie.ome.zarr", movie, [30.0, 0.5, 0.5])
    (_, image_kwargs, _), = read_layers(str(tmp_path / "movie.ome.zarr"))
    assert image_kwargs["scale"] == pytest.approx((0.5, 0.5, 0.5))
    common = ["--model", str(tiny_nuclei_model), "--input", str(tmp_path / "movie.ome.zarr"), "--quiet"]
    assert main(["segment", *common, "--out", str(tmp_path / "seg")]) == 0
    assert main(["batch", "segment", *common, "--out", str(tmp_path / "batch"), "--workers", "0"]) == 0
    for store in (tmp_path / "seg" / "labels" / "movie.zarr", tmp_path / "batch" / "labels" / "movie.zarr"):
        (_, kwargs, _), = read_layers(str(store))
        assert kwargs["scale"] == pytest.approx(image_kwargs["scale"]), store
        assert kwargs["units"] == ("minute", "micrometer", "micrometer")
    assert main(["track", "--labels", str(tmp_path / "seg" / "labels" / "movie.zarr"),
                 "--out", str(tmp_path / "tracks")]) == 0
    units = json.loads((tmp_path / "tracks" / "track_config.json").read_text())["units"]
    assert units["pixel_size_um"] == pytest.approx(0.5) and units["frame_interval_min"] == pytest.approx(0.5)


def test_fits_with_size_one_leading_axes_is_one_frame_and_other_tiff_series_are_warned(tmp_path):
    """NAXIS3 = NAXIS4 = 1 (radio and some CCD pipelines) is one frame, not a 4-D refusal; a TIFF of
    several series (OME positions) says that it reads the first (the others were dropped without a word)."""
    import tifffile
    from astropy.io import fits

    from napari_microseg.errors import MicrosegWarning
    from napari_microseg.io.images import read_image

    frame = np.arange(20 * 30, dtype=np.float32).reshape(20, 30)
    fits.PrimaryHDU(frame[None, None]).writeto(tmp_path / "deg.fits")
    np.testing.assert_array_equal(read_image(tmp_path / "deg.fits").data, frame)
    with tifffile.TiffWriter(tmp_path / "positions.ome.tif", ome=True) as writer:
        for position in range(3):
            writer.write(np.full((2, 16, 16), position, np.uint8), metadata={"axes": "TYX", "Name": f"Pos{position}"})
    with pytest.warns(MicrosegWarning, match=r"3 image series.*Pos1.*Pos2"):
        first = read_image(tmp_path / "positions.ome.tif").data
    assert first.shape == (2, 16, 16) and first.max() == 0


def test_track_measures_one_channel_of_a_multichannel_movie_and_notes_a_z_stack(tmp_path, capsys):
    """`track --image` of an OME movie of two channels was refused with advice to use --channel, which
    track did not take; a Z stack is linked plane by plane with a note, as `segment` says."""
    import pandas as pd
    import tifffile

    from napari_microseg.cli import main
    from napari_microseg.simulate.nuclei import simulate_nuclei_timelapse

    sim = simulate_nuclei_timelapse(n_frames=4, shape=(64, 64), n_nuclei=4, seed=1)
    tifffile.imwrite(tmp_path / "labels.tif", sim.labels)
    stain = (sim.fluorescence / sim.fluorescence.max() * 1000).astype(np.uint16)
    tifffile.imwrite(tmp_path / "movie.ome.tif", np.stack([stain, 3000 - stain], axis=1), metadata={"axes": "TCYX"})
    common = ["track", "--labels", str(tmp_path / "labels.tif"), "--image", str(tmp_path / "movie.ome.tif")]
    assert main([*common, "--out", str(tmp_path / "o1")]) == 2
    assert "--channel" in capsys.readouterr().err
    assert main([*common, "--channel", "1", "--out", str(tmp_path / "o2")]) == 0
    tracks = pd.read_csv(tmp_path / "o2" / "tracks.csv")
    assert tracks.mean_intensity.min() > 2000  # channel 1 (3000 - stain), not the stain
    assert main(["track", "--labels", str(tmp_path / "labels.tif"), "--channel", "0", "--out", str(tmp_path / "o3")]) == 2
    tifffile.imwrite(tmp_path / "planes.ome.tif", sim.labels, metadata={"axes": "ZYX"})
    assert main(["track", "--labels", str(tmp_path / "planes.ome.tif"), "--out", str(tmp_path / "o4")]) == 0
    assert "Z stack" in capsys.readouterr().err


def _training_dock(viewer, tmp_path, epochs=200):
    from napari_microseg.simulate.nuclei import simulate_nuclei_image
    from napari_microseg.widgets.training import TrainingWidget

    image, labels = simulate_nuclei_image((128, 128), n_nuclei=15, seed=1)
    if "img" not in viewer.layers:
        viewer.add_image(image, name="img")
        viewer.add_labels(labels, name="lab")
    widget = TrainingWidget(viewer)
    widget.imports.join()
    widget.image_layer.value, widget.labels_layer.value = ["img"], ["lab"]
    widget.patch.value, widget.patches_per_epoch.value, widget.batch_size.value = 64, 16, 4
    widget.epochs.value, widget.val_fraction.value = epochs, 0.0
    widget.out_path.value = str(tmp_path / "model.pt")
    return widget


def test_a_second_training_never_writes_the_file_a_running_one_will_write(make_napari_viewer, wait_worker, qtbot,
                                                                          tmp_path):
    """Two Training docks (one closed mid-run and opened again) both wrote model.pt and its .last.pt:
    the name was free because the first run had not saved yet. A closed dock's run now stops, too."""
    viewer = make_napari_viewer(show=False)
    first = _training_dock(viewer, tmp_path)
    dock = viewer.window.add_dock_widget(first, name="Training 1")
    first_worker = first.train()
    second = _training_dock(viewer, tmp_path, epochs=1)
    second_worker = second.train()
    assert str(second.out_path.value) == str(tmp_path / "model_2.pt")
    qtbot.waitUntil(lambda: len(first.plot.epochs) >= 1, timeout=120000)
    viewer.window.remove_dock_widget(dock)  # the dock's close button: its run winds down as after Stop
    wait_worker(first_worker, timeout=120000)
    wait_worker(second_worker, timeout=120000)
    assert first.result.stop_reason == "stopped" and first.result.epochs_run < 200
    assert (tmp_path / "model.pt").is_file() and (tmp_path / "model_2.pt").is_file()
    from napari_microseg.io.models import load_model

    assert load_model(tmp_path / "model_2.pt").config["training"]["epochs_run"] == 1


def test_a_dock_no_longer_keeps_deleted_layers_alive(make_napari_viewer, wait_worker):
    """gc.freeze() when a dock opened put every object alive then out of the collector's reach for good:
    a layer deleted later (layers sit in reference cycles) was never freed. Runs hold it only while they go."""
    import gc
    import weakref

    from napari_microseg.widgets.autolabel import AutolabelWidget
    from napari_microseg.widgets.tracking import TrackingWidget

    viewer = make_napari_viewer(show=False)
    layer = viewer.add_image(np.zeros((64, 64), np.float32), name="big")
    data_ref = weakref.ref(layer.data)
    docks = [AutolabelWidget(viewer), TrackingWidget(viewer)]
    viewer.layers.remove("big")
    del layer
    gc.collect()
    assert data_ref() is None
    assert gc.get_freeze_count() == 0 and len(docks) == 2


def test_a_run_failing_with_a_runtime_error_ends_and_gives_back_what_it_held(make_napari_viewer, wait_worker, tmp_path):
    """superqt takes a RuntimeError (torch's out-of-memory errors are RuntimeErrors) for its worker having been
    deleted and ends the run without a word: the dock stayed busy for good, the objects frozen for the run were
    never given back and its model file stayed reserved. During a run they are held; after it, given back."""
    import gc

    from napari_microseg.progress import Progress
    from napari_microseg.widgets._base import MicrosegDock, being_written

    dock = MicrosegDock(make_napari_viewer(show=False))
    model = tmp_path / "model.pt"
    held = {}

    def failing():
        held["frozen"], held["reserved"] = gc.get_freeze_count(), being_written(model)
        yield Progress(0, 1, "allocating")
        raise RuntimeError("DefaultCPUAllocator: not enough memory")

    wait_worker(dock.start(failing, on_done=lambda _: None, writes=(model,)))
    assert held["frozen"] > 0 and held["reserved"]
    assert not dock.busy and "not enough memory" in dock.status.text()
    assert gc.get_freeze_count() == 0 and not being_written(model)


def test_tracking_edits_keep_what_the_user_painted_in_the_by_track_layer(make_napari_viewer, wait_worker):
    """A curation edit (or Undo) replaced the "by track" layer's data, painted corrections and all."""
    from napari_microseg.simulate.nuclei import simulate_nuclei_timelapse
    from napari_microseg.widgets.tracking import TrackingWidget

    sim = simulate_nuclei_timelapse(n_frames=6, shape=(96, 96), n_nuclei=5, seed=4)
    viewer = make_napari_viewer(show=False)
    viewer.add_labels(sim.labels, name="nuclei")
    widget = TrackingWidget(viewer)
    widget.labels_layer.value = "nuclei"
    wait_worker(widget.track())
    by_track = widget.relabelled_layer
    by_track.paint((0, 2, 2), 999, refresh=False)  # a brush stroke: napari paints into the layer's array
    widget.table.selectRow(0)
    wait_worker(widget.delete_selected())
    assert by_track in viewer.layers and by_track.name.endswith("(edited)")
    assert (by_track.data == 999).any()
    assert widget.relabelled_layer is not by_track and not (widget.relabelled_layer.data == 999).any()
    assert "kept in" in widget.status.text()
    n_layers = len(viewer.layers)
    assert widget.undo()  # nothing painted since: the dock's own layer is updated in place
    assert len(viewer.layers) == n_layers and "kept in" not in widget.status.text()
    current = widget.relabelled_layer
    assert current.data is not by_track.data and not (current.data == 999).any()  # no array shared
    current.paint((0, 2, 2), 777, refresh=False)
    assert not (by_track.data == 777).any() and not (widget.result.relabelled == 777).any()
    widget._by_track_edited = False
    by_track.paint((1, 2, 2), 555, refresh=False)  # the kept layer is not the dock's: painting it marks nothing
    assert not widget._by_track_edited


def test_classifier_training_stops_while_it_simulates_and_adding_4d_frames_is_refused(make_napari_viewer, wait_worker,
                                                                                      qtbot, tmp_path):
    """Stop was ignored while "Train on simulated data" simulated (up to minutes for 200,000 profiles), and
    quitting napari then hung; "Add to training set" took a (T, Z, Y, X) layer as one frame."""
    import time

    from napari_microseg.widgets.classification import ClassificationWidget
    from napari_microseg.widgets.segmentation import SegmentationWidget

    viewer = make_napari_viewer(show=False)
    widget = ClassificationWidget(viewer)
    widget.task.value = "profiles [P]"
    widget.train_n.value, widget.train_out.value = 200000, str(tmp_path / "profiles.pt")
    worker = widget.train()
    qtbot.waitUntil(lambda: widget.progress.maximum() > 1, timeout=60000)  # simulating: its progress is shown
    started = time.perf_counter()
    widget.stop()
    wait_worker(worker, timeout=60000)
    assert time.perf_counter() - started < 10
    assert "stopped while simulating" in widget.status.text()
    assert not (tmp_path / "profiles.pt").exists()

    viewer.add_image(np.random.default_rng(0).random((2, 3, 32, 32)).astype(np.float32), name="movie")
    viewer.add_labels(np.ones((2, 3, 32, 32), np.uint16), name="fixed")
    seg = SegmentationWidget(viewer)
    seg.image_layer.value, seg.labels_for_training.value = "movie", "fixed"
    assert seg.add_to_training_set() == 0
    assert "(T, Y, X)" in seg.status.text()


def _tiny_train(out, data, **settings):
    from napari_microseg.progress import drain
    from napari_microseg.training.trainer import train

    cfg = {"preset": "small", "patch_size": 32, "patches_per_epoch": 8, "batch_size": 4, "epochs": 1, "lr": 1e-3,
           "seed": 0, "num_threads": 1, "val_fraction": 0.0, **settings}
    init_model, resume = cfg.pop("init_model", None), cfg.pop("resume", None)
    return drain(train(cfg, data, out_path=out, init_model=init_model, resume=resume))


def test_fine_tunes_and_resumes_keep_what_belongs_to_the_model_and_refuse_what_cannot_work(tmp_path):
    """A binary fine-tune of a distance-head model kept the head (segment then took the distance map for the
    foreground); --init-model with --resume used the checkpoint and recorded the init model; a resumed fine-tune
    lost its base model's name; a resume dropped the post-processing tuned into the model file; a frozen
    random encoder; a model of one channel trained on two gave a torch traceback."""
    from napari_microseg.errors import InputError
    from napari_microseg.inference.tune import store_postprocess
    from napari_microseg.io.models import read_model_config
    from napari_microseg.simulate.nuclei import simulate_nuclei_image

    pairs = [simulate_nuclei_image((64, 64), n_nuclei=6, seed=s) for s in range(2)]
    data = ([p[0] for p in pairs], [p[1] for p in pairs])
    base = tmp_path / "base.pt"
    _tiny_train(base, data, output_mode="three_class", distance_head=True)
    assert read_model_config(base)["distance_head"] is True
    _tiny_train(tmp_path / "binary.pt", data, output_mode="binary", init_model=str(base))
    binary = read_model_config(tmp_path / "binary.pt")
    assert binary["distance_head"] is False and binary["model"]["n_classes"] == 1

    tuned = tmp_path / "tuned.pt"
    _tiny_train(tuned, data, output_mode="three_class", init_model=str(base))
    store_postprocess(tuned, {"threshold": 0.7})
    _tiny_train(tuned, data, output_mode="three_class", epochs=2, resume=str(tuned))
    resumed = read_model_config(tuned)
    assert resumed["postprocess"]["threshold"] == 0.7
    assert resumed["training"]["init_model"] == str(base)

    with pytest.raises(InputError, match="not both"):
        _tiny_train(tmp_path / "x.pt", data, output_mode="three_class", init_model=str(base), resume=str(tuned))
    with pytest.raises(InputError, match="encoder"):
        _tiny_train(tmp_path / "y.pt", data, freeze_encoder=True)
    two_channels = ([np.stack([im, im]) for im in data[0]], data[1])
    with pytest.raises(InputError, match="channel"):
        _tiny_train(tmp_path / "z.pt", two_channels, output_mode="three_class", init_model=str(base))


def test_classes_added_to_a_ccd_model_keep_the_names_it_had(tmp_path):
    """Fine-tuning the CCD class model with a fifth class named all five "class i": its "cluster" class, which
    drives clusters.csv and the shape rules, was lost."""
    from napari_microseg.io.models import read_model_config
    from napari_microseg.simulate.ccd import simulate_ccd_frame
    from napari_microseg.training.normalize import CCD_NORMALIZATION

    frames = [simulate_ccd_frame(shape=(64, 64), seed=s) for s in range(2)]
    classes = [f.classes.astype(np.uint8) for f in frames]
    classes[0][:6, :6] = 4
    shipped = read_model_config_path("ccd_classes")
    _tiny_train(tmp_path / "five.pt", ([f.image for f in frames], classes), output_mode="multiclass", n_classes=5,
                init_model=shipped, normalization=CCD_NORMALIZATION)
    names = read_model_config(tmp_path / "five.pt")["class_names"]
    assert names[:4] == read_model_config(shipped)["class_names"] and names[4] == "class 4"


def read_model_config_path(name):
    from napari_microseg.pretrained import resolve_model

    return str(resolve_model(name))


def test_label_files_the_commands_write_reopen_in_napari_as_labels(tmp_path):
    """simulate's and autolabel's labels.tif, autolabel ccd's classes.tif and a CTC mask opened as Image layers
    (their names do not say "labels" the way the reader looks for it): they could not be painted or trained on."""
    from napari_microseg._reader import read_layers
    from napari_microseg.cli import main

    assert main(["simulate", "nuclei", "--out", str(tmp_path / "sim"), "--frames", "3", "--shape", "64", "64",
                 "--nuclei", "4"]) == 0
    assert main(["autolabel", "fluorescence", "--stain", str(tmp_path / "sim" / "fluorescence.tif"),
                 "--out", str(tmp_path / "auto"), "--quiet"]) == 0
    assert main(["track", "--labels", str(tmp_path / "sim" / "labels.tif"), "--out", str(tmp_path / "trk"), "--ctc"]) == 0
    assert main(["simulate", "ccd", "--out", str(tmp_path / "ccd"), "--n", "1", "--shape", "64", "64"]) == 0
    frame = next((tmp_path / "ccd" / "frames").iterdir())
    assert main(["autolabel", "ccd", "--input", str(frame), "--out", str(tmp_path / "ccd_auto")]) == 0
    masks = sorted((tmp_path / "trk" / "ctc_RES").glob("mask*.tif"))
    for path in (tmp_path / "sim" / "labels.tif", tmp_path / "auto" / "labels.tif", tmp_path / "ccd_auto" / "classes.tif",
                 masks[0]):
        (_, _, kind), = read_layers(str(path))
        assert kind == "labels", path
    (_, _, kind), = read_layers(str(tmp_path / "sim" / "fluorescence.tif"))
    assert kind == "image"


def test_demo_refuses_a_model_that_does_not_segment_nuclei_before_writing_anything(tmp_path, capsys):
    """`demo --model ccd_classes` failed mid-run with "labels hold class 18 but n_classes is 4"; a classifier
    failed after the movie was written."""
    from napari_microseg.cli import main

    for model in ("ccd_classes", "response_good_bad"):
        assert main(["demo", "--quick", "--model", model, "--out", str(tmp_path / "demo")]) == 2
        assert "nuclei segmentation model" in capsys.readouterr().err
        assert not (tmp_path / "demo").exists()


def test_batch_segment_says_when_an_image_is_not_on_the_models_intensity_scale(tmp_path, capsys):
    """`segment` warned that a frame far dimmer than the model's training data may come out empty; `batch segment`,
    the path of 20,000-image runs, dropped the warning: it now lists such inputs in notes.csv and says so."""
    import pandas as pd

    from napari_microseg.cli import main
    from napari_microseg.io.images import write_fits
    from napari_microseg.simulate.ccd import simulate_ccd_frame

    (tmp_path / "in").mkdir()
    frame = simulate_ccd_frame(shape=(128, 128), seed=3).image
    write_fits(tmp_path / "in" / "dim.fits", (frame / 10).astype(np.float32))
    write_fits(tmp_path / "in" / "fine.fits", frame.astype(np.float32))
    args = ["batch", "segment", "--model", "ccd_classes", "--input", str(tmp_path / "in"), "--workers", "0", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "out")]) == 0
    assert "notes.csv" in capsys.readouterr().err
    notes = pd.read_csv(tmp_path / "out" / "notes.csv")
    assert [name.rsplit("/", 1)[-1] for name in notes.image] == ["dim.fits"]
    assert notes.note.str.contains("intensity scale").all()
    (tmp_path / "in" / "dim.fits").unlink()
    assert main([*args, "--out", str(tmp_path / "out2")]) == 0
    assert not (tmp_path / "out2" / "notes.csv").exists()


def test_ccd_training_levels_the_readout_taps_as_segmentation_does():
    """Segmentation levels a CCD frame's readout taps before the model's normalisation; training did not, so a
    model learned on frames whose second tap sat 400 ADC (2 units) higher than any frame it would be given."""
    from napari_microseg.simulate.ccd import simulate_ccd_frame
    from napari_microseg.training.data import prepare_training_data
    from napari_microseg.training.normalize import CCD_NORMALIZATION

    sim = simulate_ccd_frame(shape=(128, 128), seed=2)
    two_taps = sim.image.astype(np.float32).copy()
    two_taps[:, 64:] += 400
    data = prepare_training_data([two_taps], [sim.classes], output_mode="multiclass", n_classes=4,
                                 normalization=CCD_NORMALIZATION)
    image = data.items[0].image[0]
    assert abs(float(np.median(image[:, 64:]) - np.median(image[:, :64]))) < 0.2


def test_train_resume_keeps_the_runs_own_settings_unless_given_again(tmp_path):
    """--resume without --seed, --patch, --patches-per-epoch, --batch-size ... went back to the defaults: the
    validation tiles changed size mid-run (the best epoch compared losses on other tiles) and the record
    said seed 0 for a run of seed 7."""
    import tifffile

    from napari_microseg.cli import main
    from napari_microseg.io.models import read_model_config
    from napari_microseg.simulate.nuclei import simulate_nuclei_image

    for folder in ("images", "labels"):
        (tmp_path / folder).mkdir()
    for s in range(3):
        image, labels = simulate_nuclei_image((64, 64), n_nuclei=6, seed=s)
        tifffile.imwrite(tmp_path / "images" / f"{s}.tif", (image / image.max() * 200).astype(np.uint8))
        tifffile.imwrite(tmp_path / "labels" / f"{s}.tif", labels)
    data = ["--images", str(tmp_path / "images"), "--labels", str(tmp_path / "labels"), "--quiet",
            "--base-filters", "4", "--out", str(tmp_path / "m.pt")]
    assert main(["train", *data, "--epochs", "1", "--seed", "7", "--patch", "32", "--patches-per-epoch", "8",
                 "--batch-size", "2", "--lr-schedule", "cosine", "--patience", "0", "--optimizer", "adamw",
                 "--no-augment"]) == 0
    assert main(["train", *data, "--epochs", "2", "--resume", str(tmp_path / "m.pt")]) == 0
    config = read_model_config(tmp_path / "m.pt")["training"]["config"]
    assert (config["seed"], config["patch_size"], config["patches_per_epoch"], config["batch_size"]) == (7, 32, 8, 2)
    assert config["lr_schedule"] == "cosine" and config["early_stopping_patience"] is None
    assert config["optimizer"] == "adamw" and config["augment"] is False
    assert main(["train", *data, "--epochs", "3", "--resume", str(tmp_path / "m.pt"), "--batch-size", "4"]) == 0
    assert read_model_config(tmp_path / "m.pt")["training"]["config"]["batch_size"] == 4  # given again: used


def test_segment_names_the_axes_it_refuses_and_notes_planes_it_guesses(tmp_path, tiny_nuclei_model, capsys):
    """A (T, Z, Y, X) movie was refused with its shape only; three planes without axes metadata (tifffile tags
    them as colour samples, Fiji shows RGB) were segmented as frames without a word."""
    import tifffile

    from napari_microseg.cli import main

    rng = np.random.default_rng(0)
    tifffile.imwrite(tmp_path / "movie.ome.tif", rng.integers(0, 200, (2, 3, 32, 32)).astype(np.uint8),
                     metadata={"axes": "TZYX"})
    common = ["segment", "--model", str(tiny_nuclei_model), "--tile", "32"]
    assert main([*common, "--input", str(tmp_path / "movie.ome.tif"), "--out", str(tmp_path / "o1")]) == 2
    assert "axes TZYX" in capsys.readouterr().err
    tifffile.imwrite(tmp_path / "three.tif", rng.integers(0, 200, (3, 32, 32)).astype(np.uint8))
    assert main([*common, "--input", str(tmp_path / "three.tif"), "--out", str(tmp_path / "o2")]) == 0
    assert "taken as time frames" in capsys.readouterr().err


def test_info_shows_what_a_model_file_holds(capsys):
    """`microseg info` took no model: a model's normalisation, classes and tuned post-processing could not be
    seen from the command line."""
    import json

    from napari_microseg.cli import main

    assert main(["info", "--model", "ccd_classes", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["kind"] == "multiclass segmentation" and "cluster" in shown["classes"]
    assert shown["normalization"]["kind"] == "pedestal" and shown["training"]["epochs_run"] >= 1
    assert main(["info", "--model", "response_good_bad"]) == 0
    assert "images classifier" in capsys.readouterr().out
    assert main(["info", "--model", "no_such_model"]) == 2


def test_a_time_lapse_stating_a_z_step_stays_a_time_lapse_and_a_colour_movie_stays_colour(tmp_path):
    """Review of the Z-step change: an OME time-lapse whose software wrote PhysicalSizeZ (one plane) and an
    ImageJ plain stack calibrated by Set Scale (spacing = pixel width) had their labels written as Z stacks;
    a (T, Y, X, RGB) layer saved as a grey TZYX movie of 3 px wide planes."""
    import tifffile

    from napari_microseg._reader import read_layers
    from napari_microseg._writer import write_image_tiff
    from napari_microseg.io.images import read_image, write_tiff

    movie = np.random.default_rng(0).integers(0, 200, (4, 24, 24)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "movie.ome.tif", movie, metadata={"axes": "TYX", "PhysicalSizeX": 0.5,
                                                                  "PhysicalSizeY": 0.5, "PhysicalSizeZ": 2.0})
    tifffile.imwrite(tmp_path / "plain.tif", movie, imagej=True, resolution=(1 / 0.65, 1 / 0.65),
                     metadata={"axes": "ZYX", "spacing": 0.65, "unit": "um", "hyperstack": False})  # a plain stack
    for name in ("movie.ome.tif", "plain.tif"):
        image = read_image(tmp_path / name)
        assert "z_step_um" not in image.metadata["calibration"], name
        write_tiff(tmp_path / f"labels_{name}", movie, calibration=image.metadata["calibration"])
        with tifffile.TiffFile(tmp_path / f"labels_{name}") as tif:
            assert tif.series[0].axes == "TYX", name
    colour = np.random.default_rng(1).integers(0, 255, (5, 16, 16, 3)).astype(np.uint8)
    written, = write_image_tiff(str(tmp_path / "colour.tif"), colour, {"rgb": True, "scale": (1.0, 1.0, 1.0)})
    (data, kwargs, _), = read_layers(written)
    assert kwargs.get("rgb") is True and data.shape == colour.shape
    np.testing.assert_array_equal(data, colour)


def test_batch_notes_a_noted_zarr_stack_once(tmp_path):
    """Each frame of a dim Zarr stack noted its own figures: notes.csv held one row per frame."""
    import pandas as pd
    import zarr

    from napari_microseg.cli import main
    from napari_microseg.simulate.ccd import simulate_ccd_frame

    frames = np.stack([simulate_ccd_frame(shape=(64, 64), seed=s).image / 10 for s in range(3)]).astype(np.float32)
    store = zarr.open_array(str(tmp_path / "dim.zarr"), mode="w", shape=frames.shape, chunks=(1, 64, 64), dtype="float32")
    store[:] = frames
    assert main(["batch", "segment", "--model", "ccd_classes", "--input", str(tmp_path / "dim.zarr"),
                 "--out", str(tmp_path / "out"), "--workers", "0", "--quiet"]) == 0
    assert len(pd.read_csv(tmp_path / "out" / "notes.csv")) == 1


def test_command_line_inputs_found_by_the_cli_hunt(tmp_path, capsys):
    """One line (exit 2) instead of a traceback, a hang or a silent wrong answer: complex images trained on
    (imaginary part dropped), --p-low/--p-high dropped without --normalization, a corrupt Zarr chunk, an empty
    tracks.csv, a JSON list as tracking config, seeds out of range, taps of no pixels, a memory limit too small
    to start a worker (it waited for ever) or not a size; a repeated IoU threshold doubled the pooled counts;
    simulate --overwrite deleted a user's file named like a sample."""
    import json

    import tifffile
    import zarr

    from napari_microseg.cli import main
    from napari_microseg.cli.evaluate import parse_thresholds
    from napari_microseg.io.models import read_model_config

    def refused(argv, words):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert words in err.strip().splitlines()[-1] and "Traceback" not in err and sum(line.startswith("microseg ") for line in err.splitlines()) == 1, err

    image = (np.random.default_rng(0).random((64, 64)) * 1000).astype(np.uint16)
    labels = np.zeros((64, 64), np.uint16)
    labels[10:20, 10:20], labels[30:40, 30:50] = 1, 2
    tifffile.imwrite(tmp_path / "img.tif", image)
    tifffile.imwrite(tmp_path / "complex.tif", image.astype(np.complex64))
    tifffile.imwrite(tmp_path / "lab.tif", labels)
    train = ["train", "--labels", str(tmp_path / "lab.tif"), "--epochs", "1", "--patch", "32", "--patches-per-epoch",
             "4", "--base-filters", "4", "--quiet"]
    refused([*train, "--images", str(tmp_path / "complex.tif"), "--out", str(tmp_path / "c.pt")], "real-valued")
    assert main([*train, "--images", str(tmp_path / "img.tif"), "--p-low", "20", "--p-high", "80",
                 "--out", str(tmp_path / "p.pt")]) == 0
    assert read_model_config(tmp_path / "p.pt")["normalization"] == {"kind": "percentile", "p_low": 20.0, "p_high": 80.0}
    refused([*train, "--images", str(tmp_path / "img.tif"), "--normalization", "minmax", "--p-low", "5",
             "--out", str(tmp_path / "q.pt")], "percentile")

    store = zarr.create_array(str(tmp_path / "bad.zarr"), shape=(2, 64, 64), dtype="u2", chunks=(1, 64, 64))
    store[...] = np.stack([labels, labels])
    chunk = next(p for p in (tmp_path / "bad.zarr").rglob("*") if p.is_file() and p.parts[-4:-1] == ("c", "1", "0"))
    chunk.write_bytes(b"xx")
    refused(["track", "--labels", str(tmp_path / "bad.zarr"), "--out", str(tmp_path / "t")], "damaged")
    (tmp_path / "trk").mkdir()
    (tmp_path / "trk" / "tracks.csv").write_text("")
    tifffile.imwrite(tmp_path / "trk" / "labels.tif", np.stack([labels, labels]))
    refused(["evaluate", "tracks", "--gt", str(tmp_path / "trk"), "--pred", str(tmp_path / "trk"),
             "--out", str(tmp_path / "e.csv")], "empty")
    (tmp_path / "list.json").write_text(json.dumps([1, 2]))
    refused(["track", "--labels", str(tmp_path / "trk" / "labels.tif"), "--out", str(tmp_path / "t2"),
             "--config", str(tmp_path / "list.json")], "JSON list")
    refused(["demo", "--seed", "-1", "--out", str(tmp_path / "d")], "--seed")
    refused(["track", "--labels", str(tmp_path / "trk" / "labels.tif"), "--out", str(tmp_path / "t3"),
             "--seed", str(2**32)], "--seed")
    from napari_microseg.io.images import write_fits

    write_fits(tmp_path / "frame.fits", image.astype(np.float32) + 8800)
    refused(["autolabel", "ccd", "--input", str(tmp_path / "frame.fits"), "--taps", "100x100",
             "--out", str(tmp_path / "a")], "at least")
    batch = ["batch", "segment", "--model", "nuclei_fluorescence_fast", "--input", str(tmp_path / "img.tif"),
             "--workers", "1"]
    refused([*batch, "--out", str(tmp_path / "b1"), "--memory-limit", "100MB"], "at least")
    refused([*batch, "--out", str(tmp_path / "b2"), "--memory-limit", "bogus"], "not a size")
    assert parse_thresholds("0.5,0.5,0.9") == [0.5, 0.9]

    sim = tmp_path / "sim"
    assert main(["simulate", "ccd", "--n", "2", "--shape", "32", "32", "--out", str(sim)]) == 0
    mine = sim / "frames" / "ccd_00005.fits"
    mine.write_bytes((sim / "frames" / "ccd_00000.fits").read_bytes())  # a user's file, named like a sample
    assert main(["simulate", "ccd", "--n", "1", "--shape", "32", "32", "--out", str(sim), "--overwrite"]) == 0
    assert mine.is_file() and not (sim / "frames" / "ccd_00001.fits").exists()


def test_evaluate_refuses_an_intensity_image_and_segment_an_overlap_it_would_clip(tmp_path, capsys):
    """An intensity image given as ground truth was scored as ~1000 "objects" with AP 0 and no word; --overlap
    600 with the default 512 px tile was clipped to 256 unsaid, while --tile 512 --overlap 600 was refused."""
    import tifffile

    from napari_microseg.cli import main
    from napari_microseg.simulate.nuclei import simulate_nuclei_image

    image, labels = simulate_nuclei_image((96, 96), n_nuclei=8, seed=1)
    tifffile.imwrite(tmp_path / "image.tif", (image / image.max() * 250).astype(np.uint8))
    tifffile.imwrite(tmp_path / "labels.tif", labels)
    assert main(["evaluate", "seg", "--gt", str(tmp_path / "image.tif"), "--pred", str(tmp_path / "labels.tif"),
                 "--out", str(tmp_path / "e.csv")]) == 2
    assert "intensity image" in capsys.readouterr().err
    assert main(["evaluate", "seg", "--gt", str(tmp_path / "labels.tif"), "--pred", str(tmp_path / "labels.tif"),
                 "--out", str(tmp_path / "e2.csv")]) == 0
    assert main(["segment", "--model", "nuclei_fluorescence_fast", "--input", str(tmp_path / "image.tif"),
                 "--overlap", "600", "--out", str(tmp_path / "s")]) == 2
    assert "at most half the tile" in capsys.readouterr().err


def test_options_that_would_change_nothing_are_said_or_refused(tmp_path, capsys):
    """--keep-dropped without --qc, --correct-shift without --target: ignored without a word; a negative demo
    stage shift and a painted-background id equal to the not-annotated id: accepted."""
    import tifffile

    from napari_microseg.cli import main
    from napari_microseg.simulate.nuclei import simulate_nuclei_image

    image, labels = simulate_nuclei_image((64, 64), n_nuclei=5, seed=2)
    tifffile.imwrite(tmp_path / "stain.tif", (image / image.max() * 250).astype(np.uint8))
    tifffile.imwrite(tmp_path / "labels.tif", labels)
    assert main(["autolabel", "fluorescence", "--stain", str(tmp_path / "stain.tif"), "--keep-dropped",
                 "--correct-shift", "--out", str(tmp_path / "a"), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "--keep-dropped works with --qc" in err and "--correct-shift works with --target" in err
    assert main(["demo", "--stage-shift", "-1", "--out", str(tmp_path / "d")]) == 2
    assert main(["train", "--images", str(tmp_path / "stain.tif"), "--labels", str(tmp_path / "labels.tif"),
                 "--unlabelled-is-ignored", "--background-value", "-1", "--out", str(tmp_path / "m.pt")]) == 2
    assert "told apart" in capsys.readouterr().err


def test_scores_found_wrong_by_the_metrics_hunt(tmp_path):
    """Pixel accuracy counted "not annotated" (-1) pixels as true negatives; the pooled PQ of thresholds given
    high to low was at another threshold than the per-image one; huge ids made the area count allocate TiB."""
    import pandas as pd
    import tifffile

    from napari_microseg.cli import main
    from napari_microseg.evaluation.metrics import evaluate_dataset
    from napari_microseg.measure.counts import mean_object_area

    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    gt = np.zeros((10, 10), np.int32)
    gt[1:5, 1:5] = 1
    gt[6:10, 6:10] = -1  # 16 px not annotated
    pred = np.zeros((10, 10), np.uint16)
    pred[1:5, 1:4] = 1
    tifffile.imwrite(tmp_path / "gt" / "a.tif", gt)
    tifffile.imwrite(tmp_path / "pred" / "a.tif", pred)
    assert main(["evaluate", "seg", "--gt", str(tmp_path / "gt"), "--pred", str(tmp_path / "pred"),
                 "--out", str(tmp_path / "m.csv"), "--thresholds", "0.5"]) == 0
    row = pd.read_csv(tmp_path / "m.csv").iloc[0]
    assert row["pixel_tn"] == 100 - 16 - 16 and row["pixel_accuracy"] == pytest.approx((12 + 68) / 84)

    truth = np.zeros((20, 20), np.uint16)
    truth[2:7, 2:7], truth[10:15, 10:15] = 1, 2
    guess = np.zeros((20, 20), np.uint16)
    guess[2:7, 3:7], guess[10:15, 11:15] = 1, 2  # IoU 0.8 each: a hit at 0.5 and 0.75, a miss at 0.9
    for order in ([0.9, 0.5], [0.5, 0.9]):
        per_image, pooled = evaluate_dataset([("x", truth, guess)], order)
        assert pooled["pq"] == pytest.approx(per_image["pq"].iloc[0]) == (0.0 if order[0] == 0.9 else 0.8)
    from napari_microseg.cli.evaluate import parse_thresholds

    assert parse_thresholds("0.9,0.5,0.9") == [0.9, 0.5]  # the order given (PQ at the first), once each
    huge = np.zeros((8, 8), np.uint64)
    huge[:4, :4], huge[5:, 5:] = 2**40, 7
    assert mean_object_area(huge) == pytest.approx(12.5)


def test_segmentation_dock_exports_a_selected_earlier_result_and_shows_the_foreground(make_napari_viewer, wait_worker,
                                                                                        tmp_path):
    """After a second Segment, a corrected earlier result layer could not be exported (Export wrote the newest
    run); the probability layer showed channel 1 (a three-class model's interior, without the rims); an id
    reused in another frame took that frame's frame_label; remove-border showed for class models."""
    import pandas as pd

    from napari_microseg.simulate.nuclei import simulate_nuclei_timelapse
    from napari_microseg.widgets._base import frame_label_map, with_frame_labels
    from napari_microseg.widgets.segmentation import SegmentationWidget

    sim = simulate_nuclei_timelapse(n_frames=2, shape=(96, 96), n_nuclei=6, seed=4)
    viewer = make_napari_viewer(show=False)
    viewer.add_image(np.asarray(sim.fluorescence, np.float32), name="movie")
    widget = SegmentationWidget(viewer)
    widget.image_layer.value, widget.model_choice.value, widget.scope.value = "movie", "nuclei_fluorescence_fast", "whole stack"
    widget.keep_probabilities.value = True
    widget.export_dir.value = str(tmp_path)
    wait_worker(widget.segment())
    first = widget.result_layer
    probability = viewer.layers["movie probability"].data
    assert probability.shape == sim.fluorescence.shape
    from scipy import ndimage as ndi

    rims = (first.data > 0) & ndi.binary_dilation(first.data == 0, structure=np.ones((1, 3, 3), bool))
    from napari_microseg.inference.segment import segment_image
    from napari_microseg.progress import drain

    full = drain(segment_image("nuclei_fluorescence_fast", np.asarray(sim.fluorescence, np.float32),
                               keep_probabilities=True))
    interior = np.asarray(full.probabilities)[:, 1]
    # rims included: 1 - P(background), not channel 1 (a three-class model's interior, low on the rims)
    assert float(np.median(probability[rims])) > 0.5 > float(np.median(interior[rims]))
    assert np.allclose(probability, 1.0 - np.asarray(full.probabilities)[:, 0], atol=1e-3)  # (made in the worker)
    data = np.asarray(first.data).copy()
    erased = int(data[0][data[0] > 0][0])
    data[data == erased] = 0
    first.data = data  # a correction in the first result
    n_first = len(np.unique(data)) - 1
    wait_worker(widget.segment())  # a second run: its layer is the current result
    viewer.layers.selection.active = first
    wait_worker(widget.export())
    objects = pd.read_csv(tmp_path / "objects.csv")
    assert len(objects) == n_first and erased not in set(objects["label"])
    assert erased not in set(first.features["label"]) and len(first.features) == n_first  # hover: as written
    assert widget.counts_label.value.endswith("(corrected)")

    frame_ids = frame_label_map(first)
    one_of_frame_0 = next(label for label, (t, _) in frame_ids.items() if t == 0)
    table = pd.DataFrame({"t": [0, 1], "label": [one_of_frame_0, one_of_frame_0]})  # the id painted into frame 1 too
    labelled = with_frame_labels(table, frame_ids)
    assert labelled["frame_label"].tolist() == [frame_ids[one_of_frame_0][1], 0]

    assert not widget.remove_border.native.isHidden()  # a nuclei model: offered
    widget.model_choice.value = "ccd_classes"
    assert widget.remove_border.native.isHidden()  # a class map keeps every pixel


def test_model_pickers_show_a_files_name_before_its_folder(tmp_path):
    """A long model path was cut at the picker's right edge: a model and its -ft1 fine-tune looked the same."""
    from napari_microseg.widgets._base import model_choices

    deep = str(tmp_path / ("a_rather_long_folder_name_" * 3) / "model-ft1.pt")
    shown = dict(model_choices([deep, "nuclei_fluorescence", "model file ..."]))
    assert list(shown) == [f"model-ft1.pt  ({tmp_path / ('a_rather_long_folder_name_' * 3)})", "nuclei_fluorescence",
                           "model file ..."]
    assert list(shown.values())[0] == deep  # the value stays the path


def test_simulate_overwrite_after_an_interrupted_run_removes_all_of_it(tmp_path, monkeypatch):
    """params.json was written at the end: after a Ctrl-C'd --overwrite run it still held the earlier, smaller run,
    and the next --overwrite left the interrupted run's extra samples to be trained on."""
    import napari_microseg.cli.simulate as simulate_cli
    from napari_microseg.cli import main

    out = tmp_path / "sim"
    common = ["simulate", "nuclei", "--mode", "images", "--shape", "64", "64", "--out", str(out)]
    assert main([*common, "--n", "2"]) == 0
    write, calls = simulate_cli._write_tiff, [0]

    def interrupted(*args, **kwargs):
        calls[0] += 1
        if calls[0] > 10:
            raise KeyboardInterrupt
        return write(*args, **kwargs)

    monkeypatch.setattr(simulate_cli, "_write_tiff", interrupted)
    assert main([*common, "--n", "8", "--overwrite"]) == 130
    assert len(list((out / "images").iterdir())) > 2
    monkeypatch.setattr(simulate_cli, "_write_tiff", write)
    assert main([*common, "--n", "1", "--overwrite"]) == 0
    assert sorted(p.name for p in (out / "images").iterdir()) == ["nuclei_00000.tif"]


def test_a_keep_everything_threshold_sets_the_slider_above_every_probability(make_napari_viewer, monkeypatch):
    """A model's "discard" threshold stored just above 1 raised ValueError in the slider (its top read back 1.0)."""
    import napari_microseg.io.models as models
    from napari_microseg.widgets.classification import ABOVE_EVERY_PROBABILITY, ClassificationWidget

    widget = ClassificationWidget(make_napari_viewer(show=False))
    config = models.read_model_config(widget.model_path())
    config["use_thresholds"] = {"discard": float(np.nextafter(1.0, 2.0))}
    monkeypatch.setattr(models, "read_model_config", lambda *_: config)
    assert widget.use_threshold("discard") > 1
    assert widget.threshold.value == pytest.approx(ABOVE_EVERY_PROBABILITY, abs=1e-5) and widget.threshold.value > 1


def test_an_ome_zarr_translation_places_the_layer(tmp_path):
    """OME-Zarr's translation (a tile of a plate, a crop of a larger field) was ignored: the layer opened at 0."""
    import zarr

    from napari_microseg._reader import read_layers

    group = zarr.open_group(str(tmp_path / "tile.zarr"), mode="w")
    group.create_array("0", data=np.zeros((4, 32, 32), np.uint8))
    group.attrs["multiscales"] = [{"version": "0.4", "axes": [{"name": "z", "type": "space", "unit": "micrometer"},
                                                              {"name": "y", "type": "space", "unit": "nanometer"},
                                                              {"name": "x", "type": "space", "unit": "nanometer"}],
                                   "datasets": [{"path": "0", "coordinateTransformations": [
                                       {"type": "scale", "scale": [2.0, 500.0, 500.0]},
                                       {"type": "translation", "translation": [4.0, 100000.0, -5000.0]}]}]}]
    (_, kwargs, _), = read_layers(str(tmp_path / "tile.zarr"))
    assert kwargs["scale"] == pytest.approx((2.0, 0.5, 0.5))
    assert kwargs["translate"] == pytest.approx((4.0, 100.0, -5.0))  # micrometres, as the scale


def test_a_class_map_painted_with_a_value_of_no_class_is_refused(make_napari_viewer, wait_worker, tmp_path):
    """A CCD class map painted with 7 (no class) was added to the training set and exported with a count_7 column;
    only Fine-tune refused it."""
    from napari_microseg.simulate.ccd import simulate_ccd_frame
    from napari_microseg.widgets.segmentation import SegmentationWidget

    viewer = make_napari_viewer(show=False)
    viewer.add_image(simulate_ccd_frame(shape=(96, 96), seed=1).image.astype(np.float32), name="frame")
    widget = SegmentationWidget(viewer)
    widget.image_layer.value, widget.model_choice.value = "frame", "ccd_classes"
    widget.export_dir.value = str(tmp_path)
    wait_worker(widget.segment())
    layer = widget.result_layer
    layer.paint((10, 10), 7, refresh=False)
    widget.labels_for_training.value = layer.name
    assert widget.add_to_training_set() == 0 and "classes are 0..3" in widget.status.text()
    wait_worker(widget.export())
    assert "classes are 0..3" in widget.status.text() and not (tmp_path / "counts.csv").exists()


def test_batch_notes_a_channel_option_a_file_cannot_take(tmp_path, tiny_nuclei_model):
    """`batch segment --channel 1` over single-channel files ignored the option without a word (segment warns)."""
    import pandas as pd
    import tifffile

    from napari_microseg.cli import main

    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in" / "grey.tif", (np.random.default_rng(0).random((64, 64)) * 200).astype(np.uint8))
    assert main(["batch", "segment", "--model", str(tiny_nuclei_model), "--input", str(tmp_path / "in"),
                 "--channel", "1", "--out", str(tmp_path / "out"), "--workers", "0", "--quiet"]) == 0
    notes = pd.read_csv(tmp_path / "out" / "notes.csv")
    assert notes.note.str.contains("--channel 1 ignored").all() and len(notes) == 1
