"""Fixes of session 29's bug hunts, each test failing on the code before its fix."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest


def test_segmentation_dock_chooses_a_model_just_trained_unless_the_user_picked_one(make_napari_viewer, tmp_path):
    """After a training the Segmentation dock kept the shipped model selected: a biologist pressed Run
    and segmented with the shipped model, not the one just trained. A dock whose model the user has not
    picked now follows the newest model trained; a user's pick (or a fine-tune's result) stays."""
    from napari_microseg.pretrained import resolve_model
    from napari_microseg.widgets.segmentation import SegmentationWidget, add_recent_model

    trained = tmp_path / "mine.pt"
    shutil.copy(resolve_model("nuclei_fluorescence_fast"), trained)
    viewer = make_napari_viewer(show=False)
    untouched, picked = SegmentationWidget(viewer), SegmentationWidget(viewer)
    assert untouched.model_choice.value == "nuclei_fluorescence"
    picked.model_choice.value = "nuclei_fluorescence_fast"
    add_recent_model(str(trained))  # what the Training dock calls when its run ends
    assert untouched.model_choice.value == str(trained)
    assert picked.model_choice.value == "nuclei_fluorescence_fast"
    assert picked.model_choice.choices[0] == str(trained)  # offered first all the same
    assert SegmentationWidget(viewer).model_choice.value == str(trained)  # a dock opened afterwards
    fine_tuned, second = tmp_path / "mine-ft1.pt", tmp_path / "mine2.pt"
    shutil.copy(trained, fine_tuned), shutil.copy(trained, second)
    untouched.set_model(str(fine_tuned))  # a fine-tune's result, chosen for the user
    add_recent_model(str(second))
    assert untouched.model_choice.value == str(fine_tuned)
    for path in (trained, fine_tuned, second):
        path.unlink()
    assert SegmentationWidget(viewer).model_choice.value == "nuclei_fluorescence"  # the files are gone


def _run_cli(*args: str) -> int:
    from napari_microseg.cli import main

    return main([str(a) for a in args])


def test_evaluate_seg_reads_a_mask_saved_in_colour_as_one_image(tmp_path, capsys):
    """An RGB mask (a 0/255 mask saved from an image editor) was read as a stack of one-row frames:
    30 "images" and AP@0.55 0.455 for a 30x30 image of 2 nuclei. Grey saved as RGB is grey; labels
    coloured per object get one id per colour."""
    import pandas as pd
    import tifffile

    gt = np.zeros((30, 30), np.uint8)
    gt[2:8, 2:8] = 255
    gt[15:25, 15:25] = 255
    pred = gt.copy()
    pred[2:8, 2:5] = 0  # one nucleus cut: IoU 0.5
    for folder, mask in (("gt", gt), ("pred", pred)):
        (tmp_path / folder).mkdir()
        tifffile.imwrite(tmp_path / folder / "a.tif", np.stack([mask] * 3, -1), photometric="rgb")
    assert _run_cli("evaluate", "seg", "--gt", tmp_path / "gt", "--pred", tmp_path / "pred", "--out", tmp_path / "m.csv") == 0
    row = pd.read_csv(tmp_path / "m.csv").set_index("name").loc["ALL"]
    assert row["tp@0.50"] == 2 and row["tp@0.55"] == 1 and row["fp@0.55"] == 1 and row["fn@0.55"] == 1
    # two objects touching, told apart only by their colours, against the same objects in grey ids
    coloured = np.zeros((30, 30, 3), np.uint8)
    coloured[5:15, 5:15] = (200, 30, 30)
    coloured[5:15, 15:25] = (30, 200, 30)
    ids = np.zeros((30, 30), np.uint16)
    ids[5:15, 5:15], ids[5:15, 15:25] = 7, 9
    (tmp_path / "gt2").mkdir(), (tmp_path / "pred2").mkdir()
    tifffile.imwrite(tmp_path / "gt2" / "b.tif", coloured, photometric="rgb")
    tifffile.imwrite(tmp_path / "pred2" / "b.tif", ids)
    assert _run_cli("evaluate", "seg", "--gt", tmp_path / "gt2", "--pred", tmp_path / "pred2", "--out", tmp_path / "c.csv") == 0
    assert "read as one object per connected piece of a colour" in capsys.readouterr().err
    row = pd.read_csv(tmp_path / "c.csv").set_index("name").loc["ALL"]
    assert row["tp@0.90"] == 2 and row["fp@0.50"] == 0 and row["fn@0.50"] == 0
    # a class map in colours means nothing: refused in one line
    (tmp_path / "cls_gt").mkdir(), (tmp_path / "cls_pred").mkdir()
    tifffile.imwrite(tmp_path / "cls_gt" / "c.tif", coloured, photometric="rgb")
    tifffile.imwrite(tmp_path / "cls_pred" / "c.tif", ids)
    assert _run_cli("evaluate", "classes", "--gt", tmp_path / "cls_gt", "--pred", tmp_path / "cls_pred",
                    "--out", tmp_path / "k.csv") != 0
    assert "class map in colour" in capsys.readouterr().err


def test_evaluate_classes_leaves_out_void_pixels_and_classes_never_seen(tmp_path, capsys):
    """A class map with 255 "void" pixels scored them as a class (class 0 precision 0.900) and printed 253
    empty rows for the ids between; ``--ignore 255`` leaves them out, and unseen unnamed ids get no row."""
    import pandas as pd
    import tifffile

    truth = np.zeros((20, 20), np.uint8)
    truth[10:, :] = 1
    truth[:2, :] = 255  # 40 px of void
    pred = np.where(truth == 255, 0, truth).astype(np.uint8)
    tifffile.imwrite(tmp_path / "t.tif", truth), tifffile.imwrite(tmp_path / "p.tif", pred)
    assert _run_cli("evaluate", "classes", "--gt", tmp_path / "t.tif", "--pred", tmp_path / "p.tif",
                    "--out", tmp_path / "a.csv") == 0
    table = pd.read_csv(tmp_path / "a.csv")
    assert list(table["class"]) == [0, 1, 255]  # no rows for 2..254
    assert table.set_index("class").loc[0, "precision"] == pytest.approx(160 / 200)
    assert len(pd.read_csv(tmp_path / "a_confusion.csv")) == 3
    assert _run_cli("evaluate", "classes", "--gt", tmp_path / "t.tif", "--pred", tmp_path / "p.tif",
                    "--out", tmp_path / "b.csv", "--ignore", "255") == 0
    assert "40 pixels marked 255 left out" in capsys.readouterr().out
    table = pd.read_csv(tmp_path / "b.csv")
    assert list(table["class"]) == [0, 1] and (table["precision"] == 1).all() and (table["recall"] == 1).all()


def test_sparse_class_labels_refuse_a_background_id_that_is_also_a_class():
    """Multiclass with sparse labels and the Training dock's background id 1: class 1 was trained as
    background and the painted background (3) as a fourth class, without a word."""
    from napari_microseg.errors import InputError
    from napari_microseg.training.data import prepare_training_data

    image = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    labels = np.zeros((64, 64), np.int64)
    labels[5:20, 5:20], labels[30:45, 30:45], labels[50:60, :] = 1, 2, 3  # classes 1, 2; background painted 3
    kwargs = dict(output_mode="multiclass", unlabelled_is_ignored=True, ignore_value=None)
    with pytest.raises(InputError, match="the background id \(1\) lies below classes painted"):
        prepare_training_data(image, labels, background_value=1, **kwargs)
    data = prepare_training_data(image, labels, background_value=3, **kwargs)
    assert data.n_classes == 3
    target = data.items[0].target
    assert set(np.unique(target[5:20, 5:20])) == {1} and set(np.unique(target[50:60])) == {0}


def test_a_blank_painted_frame_of_a_stack_is_said(tmp_path, capsys):
    """A stack whose painted frame is blank (all zero) trained without a word (a 2-D blank image was
    refused by the dock and warned about by the CLI)."""
    import tifffile

    from napari_microseg.errors import InputError
    from napari_microseg.training.data import load_training_pairs
    from napari_microseg.widgets.training import check_training_layers

    stack = np.random.default_rng(1).random((3, 48, 48)).astype(np.float32)
    stack[1] = 0.0
    labels = np.zeros((3, 48, 48), np.uint16)
    labels[1, 10:20, 10:20] = 1  # painted on the blank frame only
    with pytest.raises(InputError, match="painted frame 1 of the image is blank"):
        check_training_layers(stack, labels, partial=False)
    labels[1] = 0
    labels[0, 10:20, 10:20] = 1
    check_training_layers(stack, labels, partial=False)  # a blank frame nobody painted is fine
    labels[1, 10:20, 10:20] = 1
    (tmp_path / "images").mkdir(), (tmp_path / "labels").mkdir()
    tifffile.imwrite(tmp_path / "images" / "s.tif", stack), tifffile.imwrite(tmp_path / "labels" / "s.tif", labels)
    load_training_pairs(tmp_path / "images", tmp_path / "labels")
    assert "painted frame(s) 1 constant" in capsys.readouterr().err


def test_labels_shown_elsewhere_than_their_image_are_said_when_added_for_training(make_napari_viewer):
    """A mask opened from a plain TIFF (scale 1) over a calibrated image (scale 0.5) lies elsewhere on screen
    than the image: training pairs pixels by index, so what is learnt is not what the user painted. Said."""
    from napari_microseg.widgets._base import placement_mismatch
    from napari_microseg.widgets.segmentation import SegmentationWidget

    viewer = make_napari_viewer(show=False)
    image = np.random.default_rng(2).random((64, 64)).astype(np.float32)
    labels = np.zeros((64, 64), np.uint16)
    labels[10:20, 10:20] = 1
    image_layer = viewer.add_image(image, name="calibrated", scale=(0.5, 0.5))
    labels_layer = viewer.add_labels(labels, name="mask")
    assert "lies elsewhere" in placement_mismatch(image_layer, labels_layer)
    widget = SegmentationWidget(viewer)
    widget.image_layer.value, widget.labels_for_training.value = "calibrated", "mask"
    assert widget.add_to_training_set() == 1
    assert "lies elsewhere in the viewer" in widget.status.text()
    labels_layer.scale = (0.5, 0.5)
    assert placement_mismatch(image_layer, labels_layer) is None
    widget.add_to_training_set()
    assert "lies elsewhere" not in widget.status.text()


def test_fine_tune_uses_the_docks_device_and_names_its_frames(make_napari_viewer, monkeypatch, wait_worker):
    """Fine-tune trained on "auto" (the GPU where there is one) whatever the dock's device said, and its
    model recorded no data but "corrected labels in napari"."""
    import napari_microseg.training.finetune as finetune
    from napari_microseg.widgets.segmentation import SegmentationWidget

    seen = {}

    def fake_fine_tune(base, images, labels, out, config, stop_event=None):
        seen.update(config)
        return None
        yield  # a generator, as the real one

    monkeypatch.setattr(finetune, "fine_tune_model", fake_fine_tune)
    viewer = make_napari_viewer(show=False)
    image = np.random.default_rng(3).random((64, 64)).astype(np.float32)
    labels = np.zeros((64, 64), np.uint16)
    labels[10:20, 10:20] = 1
    viewer.add_image(image, name="cells"), viewer.add_labels(labels, name="fixed")
    widget = SegmentationWidget(viewer)
    widget.image_layer.value, widget.labels_for_training.value = "cells", "fixed"
    widget.device.value = "cpu"
    assert widget.add_to_training_set() == 1
    wait_worker(widget.fine_tune())
    assert seen["device"] == "cpu" and "cells[0]" in seen["data_description"]


def test_liposomes_placed_apart_do_not_touch():
    """Particles not meant to overlap (neither "uncertain") were spaced by their nominal radius, while their
    drawn masks reach further (outline harmonics, membrane): ~3 % overlapped a neighbour, which the [T]
    classes reserve for "uncertain" particles."""
    from napari_microseg.simulate._common import sample_seed
    from napari_microseg.simulate.liposomes import simulate_liposome_image

    touching, particles = [], 0
    for i in range(8):
        sample = simulate_liposome_image(seed=sample_seed(3, i))
        lab = sample.labels
        certain = set(sample.classes.loc[(sample.classes.lamellarity != "uncertain")
                                         & (sample.classes.encapsulation != "uncertain"), "label"])
        particles += len(certain)
        for a, b in ((lab[1:], lab[:-1]), (lab[:, 1:], lab[:, :-1])):  # 4-neighbours with two different labels
            pairs = {(int(x), int(y)) for x, y in zip(a[a != b], b[a != b]) if x and y}
            touching += [pair for pair in pairs if pair[0] in certain and pair[1] in certain]
    assert particles > 100 and touching == []


def test_simulated_lineage_roots_follow_the_parent_chain(tmp_path):
    """A nucleus that divided out of sight handed its old root to daughters that entered later: roots
    (parent 0, generation 0) named another track as their root_track_id in the truth's tracks.csv."""
    import pandas as pd

    assert _run_cli("simulate", "nuclei", "--out", tmp_path / "s", "--frames", "25", "--shape", "128", "128",
                    "--nuclei", "20", "--division-rate", "0.1", "--seed", "2") == 0
    per = pd.read_csv(tmp_path / "s" / "tracks.csv").groupby("track_id")[
        ["parent_track_id", "root_track_id", "generation"]].first()
    for track_id, row in per.iterrows():
        if row.parent_track_id == 0:
            assert row.root_track_id == track_id and row.generation == 0, track_id
        else:
            parent = per.loc[row.parent_track_id]
            assert row.root_track_id == parent.root_track_id and row.generation == parent.generation + 1, track_id


def test_a_stop_response_image_records_its_signal_peak():
    """classes.csv gave signal_peak 0 for every "stop" image, which holds a strong (high-affinity) signal."""
    from napari_microseg.simulate.response import simulate_response_image

    stop = simulate_response_image("stop", seed=4)
    assert stop.params["signal_peak"] == stop.params["stop_peak"] > 0
    assert simulate_response_image("good_empty", seed=4).params["signal_peak"] == 0.0


def test_track_refuses_label_ids_beyond_signed_64_bit(tmp_path, capsys):
    """uint64 ids >= 2**63 wrapped negative in tracks.csv's label column, and tracks_labels.tif and the CTC
    masks came out empty while the tables listed the objects; refused in one line now."""
    import tifffile

    labels = np.zeros((3, 32, 32), np.uint64)
    labels[:, 5:12, 5:12] = 2**63 + 5
    tifffile.imwrite(tmp_path / "u64.tif", labels)
    assert _run_cli("track", "--labels", tmp_path / "u64.tif", "--out", tmp_path / "out") != 0
    assert "beyond the 64-bit signed integers" in capsys.readouterr().err
    labels[:, 5:12, 5:12] = 2**62  # large but representable: tracked, and written back as given
    tifffile.imwrite(tmp_path / "big.tif", labels)
    assert _run_cli("track", "--labels", tmp_path / "big.tif", "--out", tmp_path / "out2") == 0
    import pandas as pd

    assert (pd.read_csv(tmp_path / "out2" / "tracks.csv")["label"] == 2**62).all()
    assert (tifffile.imread(tmp_path / "out2" / "tracks_labels.tif") > 0).sum() == 3 * 49


def test_images_in_small_units_or_with_large_offsets_segment_as_the_plain_image():
    """Percentile normalisation had a fixed floor of 1e-6 on its scale and cast to float32 before the offset
    was taken off: an image in units of 1e-12 or float64 / uint64 data with an offset of 1e11 / 2**40 gave
    0 nuclei, without a word."""
    from napari_microseg.inference.segment import segment
    from napari_microseg.io.models import load_model
    from napari_microseg.simulate.nuclei import simulate_nuclei_image
    from napari_microseg.training.normalize import normalize

    image, _ = simulate_nuclei_image(shape=(128, 128), n_nuclei=10, seed=5)
    plain = np.round(image * 4000).astype(np.float64)  # whole numbers, as a 16-bit camera gives
    reference = normalize(plain)
    for variant in (plain * 1e-12, plain + 1e11, plain.astype(np.uint64) + 2**40):
        np.testing.assert_allclose(normalize(variant), reference, atol=1e-3)
    assert normalize(np.full((8, 8), 7.5e-12)).max() == 0  # a flat image still maps to 0
    model = load_model("nuclei_fluorescence_fast", device="cpu", segmentation=True)
    expected = segment(model, plain).labels.max()
    assert expected >= 5
    for variant in (plain * 1e-12, plain + 1e11, plain.astype(np.uint64) + 2**40):
        assert segment(model, variant).labels.max() == expected


def test_a_background_pocket_between_touching_nuclei_stays_background():
    """Three-class post-processing filled the mask's holes before the watershed, so a background pocket
    enclosed by several touching nuclei was flooded into them (fill_enclosed_holes leaves such pockets
    background); a ring nucleus's own hole is still filled."""
    from skimage.draw import disk

    from napari_microseg.inference.postprocess import three_class_to_labels

    interior = np.zeros((80, 80), np.float32)
    for centre in ((30, 30), (30, 50), (48, 40)):  # three nuclei around a pocket near (36, 40)
        interior[disk(centre, 11.5, shape=interior.shape)] = 1.0
    background = (interior == 0).astype(np.float32)
    probabilities = np.stack([background, np.zeros_like(background), interior])  # background, boundary, interior
    labels = three_class_to_labels(probabilities, class_order=("background", "boundary", "interior"))
    pocket = (background > 0) & (np.abs(np.mgrid[:80, :80][0] - 36) < 4) & (np.abs(np.mgrid[:80, :80][1] - 40) < 4)
    assert pocket.any() and labels.max() == 3
    assert (labels[pocket] == 0).all()
    ring = np.zeros((60, 60), np.float32)
    ring[disk((30, 30), 15)] = 1.0
    ring[disk((30, 30), 5)] = 0.0  # a ring-shaped nucleus
    ring_labels = three_class_to_labels(np.stack([1 - ring, np.zeros_like(ring), ring]),
                                        class_order=("background", "boundary", "interior"))
    assert ring_labels.max() == 1 and ring_labels[30, 30] == 1


def test_the_overlap_recorded_is_the_overlap_used():
    """Tiles fitted below the asked size (130 -> 128) take at most half of themselves as overlap (64), but
    the run recorded the 65 asked for."""
    from napari_microseg.inference.segment import segment
    from napari_microseg.io.models import load_model

    model = load_model("nuclei_fluorescence_fast", device="cpu", segmentation=True)
    result = segment(model, np.random.default_rng(0).random((300, 420)).astype(np.float32), tile=130, overlap=65)
    assert result.settings["overlap"] <= min(result.settings["tiles_yx"]) // 2


def test_a_ctc_export_stopped_midway_leaves_nothing_that_looks_whole(tmp_path):
    """Stop during the Tracking dock's CTC export said "nothing was changed" while the export went on to the
    end (one blocking call). The export now stops between masks and takes away what it wrote."""
    from napari_microseg.progress import drain
    from napari_microseg.tracking.export import write_ctc_iter
    from napari_microseg.tracking.track import run_tracking

    labels = np.zeros((6, 40, 40), np.uint16)
    for t in range(6):
        labels[t, 10:16, 5 + 3 * t:11 + 3 * t] = 1
    result = run_tracking(labels)
    folder = tmp_path / "ctc_RES"
    export = write_ctc_iter(result, folder)
    next(export), next(export)  # two masks written
    assert len(list(folder.glob("mask*.tif"))) == 2
    export.close()  # what Stop does to the dock's generator
    assert not folder.exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    export = write_ctc_iter(result, kept, overwrite=True)
    next(export)
    export.close()
    assert sorted(p.name for p in kept.iterdir()) == ["notes.txt"]  # a folder it did not make stays, with the user's file
    drain(write_ctc_iter(result, tmp_path / "whole"))
    assert len(list((tmp_path / "whole").glob("mask*.tif"))) == 6 and (tmp_path / "whole" / "res_track.txt").is_file()


def test_autolabel_keeps_a_renamed_preview_and_the_apply_summary(make_napari_viewer, qtbot, wait_worker):
    """A preview layer the user renamed (to keep it) was overwritten by the next preview; and a preview
    queued by a form change during Apply replaced Apply's summary (objects left out as -1 ...) a second
    later, the form then showing settings other than the labels'."""
    from napari_microseg.simulate.nuclei import simulate_nuclei_timelapse
    from napari_microseg.widgets.autolabel import AutolabelWidget

    sim = simulate_nuclei_timelapse(n_frames=3, shape=(128, 128), n_nuclei=15, seed=2)
    viewer = make_napari_viewer(show=False)
    viewer.add_image(sim.fluorescence, name="stain")
    widget = AutolabelWidget(viewer)
    widget.stain_layer.value = "stain"
    qtbot.waitUntil(lambda: widget.preview_layer is not None and not widget.busy, timeout=60000)
    qtbot.wait(600)
    mine = widget.preview_layer
    current = int(viewer.dims.current_step[0])
    kept = mine.data.copy()
    assert kept[current].max() > 0
    mine.name = "my nuclei"
    viewer.dims.set_current_step(0, (current + 1) % 3)
    qtbot.waitUntil(lambda: widget.preview_layer is not mine and not widget.busy, timeout=60000)
    np.testing.assert_array_equal(mine.data, kept)
    assert "'my nuclei' (renamed) is kept" in widget.status.text()
    worker = widget.apply()
    widget.smooth_sigma.value = widget.smooth_sigma.value + 0.5  # the form changes while Apply runs
    wait_worker(worker)
    qtbot.wait(1500)  # the preview's pause (debounce) and more
    qtbot.waitUntil(lambda: not widget.busy and "preview:" in widget.status.text(), timeout=60000)  # the form's preview
    assert "labelled 3 frame(s)" in widget.status.text() and "settings before your change" in widget.status.text()


def test_classify_images_expands_a_stack_inside_a_folder(tmp_path):
    """A stack given by name was classified image by image (file[i]), but a folder holding the same stack
    skipped it as "not a 2-D image"."""
    import pandas as pd
    import tifffile

    from napari_microseg.simulate.response import simulate_response_image

    samples = [simulate_response_image(kind, seed=i) for i, kind in enumerate(("good_signal", "spike", "good_empty"))]
    stack = np.stack([sample.image for sample in samples])
    masks = np.stack([sample.integration_mask for sample in samples]).astype(np.uint8)
    (tmp_path / "plate" / "integration").mkdir(parents=True)
    tifffile.imwrite(tmp_path / "plate" / "run.tif", stack)
    tifffile.imwrite(tmp_path / "plate" / "single.tif", stack[0])
    tifffile.imwrite(tmp_path / "plate" / "integration" / "run.tif", masks)  # a mask stack beside the image stack
    tifffile.imwrite(tmp_path / "plate" / "integration" / "single.tif", masks[0])
    assert _run_cli("classify", "images", "--model", "response_good_bad", "--input", tmp_path / "plate",
                    "--out", tmp_path / "folder") == 0
    (tmp_path / "one" / "integration").mkdir(parents=True)
    for i in range(3):  # the same images as files of their own
        tifffile.imwrite(tmp_path / "one" / f"run{i}.tif", stack[i])
        tifffile.imwrite(tmp_path / "one" / "integration" / f"run{i}.tif", masks[i])
    assert _run_cli("classify", "images", "--model", "response_good_bad", "--input", tmp_path / "one",
                    "--out", tmp_path / "byname") == 0
    folder = pd.read_csv(tmp_path / "folder" / "flags.csv")
    by_name = pd.read_csv(tmp_path / "byname" / "flags.csv")
    assert sorted(folder["file"]) == ["run.tif[0]", "run.tif[1]", "run.tif[2]", "single.tif"]
    np.testing.assert_allclose(folder.set_index("file").loc[["run.tif[0]", "run.tif[1]", "run.tif[2]"], "probability_bad"],
                               by_name.set_index("file").loc[["run0.tif", "run1.tif", "run2.tif"], "probability_bad"],
                               rtol=1e-5)


def test_a_lone_hot_pixel_makes_no_nuclei():
    """One saturated background pixel (a camera hot pixel, a cosmic ray) at ~36x the signal spread through
    the network into nucleus-sized false objects; percentile-normalised values are cut at 5 now."""
    from napari_microseg.inference.segment import segment
    from napari_microseg.io.models import load_model
    from napari_microseg.simulate.nuclei import simulate_nuclei_image
    from napari_microseg.training.normalize import PERCENTILE_CLIP, normalize

    image, truth = simulate_nuclei_image(shape=(192, 192), n_nuclei=14, seed=11)
    frame = np.round(image * 4000).astype(np.uint16)
    background = np.argwhere(truth == 0)
    y, x = background[len(background) // 2]
    hot = frame.copy()
    hot[y, x] = 65535
    assert normalize(hot).max() == PERCENTILE_CLIP
    model = load_model("nuclei_fluorescence_fast", device="cpu", segmentation=True)
    plain, with_hot = segment(model, frame).labels, segment(model, hot).labels
    assert with_hot.max() == plain.max() and abs(int((with_hot > 0).sum()) - int((plain > 0).sum())) <= 9


def test_classification_dock_threshold_above_one_and_stored_thresholds_exact(make_napari_viewer, wait_worker):
    """The slider's top (above every probability) and a stored "discard" above 1 made Classify fail ("threshold
    must be a probability") and wiped the results; the slider's 6 decimals cut a stored threshold, so the dock
    flagged an image the CLI's --threshold flag passed."""
    from napari_microseg.classify.predict import resolve_threshold
    from napari_microseg.io.models import read_model_config
    from napari_microseg.pretrained import resolve_model
    from napari_microseg.progress import drain
    from napari_microseg.simulate.samples import generate_response
    from napari_microseg.widgets.classification import ClassificationWidget

    data, kwargs, _ = next(iter(drain(generate_response({"n_images": 6}, 3))))
    viewer = make_napari_viewer(show=False)
    viewer.add_image(np.asarray(data), **kwargs)
    widget = ClassificationWidget(viewer)
    widget.image_layer.value = viewer.layers[0].name
    widget.model_choice.value = "response_good_bad"
    widget.threshold.value = widget.threshold.max  # "none reaches it"
    wait_worker(widget.classify())
    assert widget.results is not None and (widget.results["verdict"] == "good").all()
    assert "none reaches it" in widget.summary.value
    config = read_model_config(resolve_model("response_good_bad"))
    stored = resolve_threshold(config, "flag")
    assert widget.use_threshold("flag") == stored and widget.threshold_value() == stored  # not cut to the slider's step
    expected = np.where(widget.results["probability_bad"] >= stored, "bad", "good")
    assert list(widget.results["verdict"]) == list(expected)
    widget.threshold.value = 0.3  # the user's own threshold from now on
    assert widget.threshold_value() == pytest.approx(0.3)


def test_cross_validation_follows_the_two_stage_strategy_and_the_model_records_it(tmp_path, capsys):
    """`classify train images --strategy pretrain_freeze --folds K` cross-validated plain training from scratch
    on the real images and called it the strategy's; the model file did not record its strategy."""
    import torch

    from napari_microseg.io.models import read_model_config

    assert _run_cli("simulate", "response", "--out", tmp_path / "real", "--n", "12", "--seed", "3") == 0
    out = tmp_path / "frozen.pt"
    assert _run_cli("classify", "train", "images", "--simulated", "8", "--input", tmp_path / "real", "--strategy",
                    "pretrain_freeze", "--folds", "2", "--epochs", "1", "--out", out, "--device", "cpu") == 0
    said = capsys.readouterr()
    assert "2-fold CV (pretrain_freeze)" in said.out + said.err
    config = read_model_config(out)
    assert config["training"]["strategy"] == "pretrain_freeze"
    pretrained = torch.load(out.with_name("frozen.pretrained.pt"), map_location="cpu", weights_only=False)
    final = torch.load(out, map_location="cpu", weights_only=False)
    features = [k for k in final["state_dict"] if k.startswith("features.") and "num_batches" not in k]
    assert features and all(torch.equal(final["state_dict"][k], pretrained["state_dict"][k]) for k in features)
    assert _run_cli("classify", "train", "images", "--simulated", "8", "--input", tmp_path / "real", "--strategy",
                    "simulated", "--folds", "2", "--epochs", "1", "--out", tmp_path / "sim.pt") != 0
    assert "--strategy simulated" in capsys.readouterr().err


def test_class_weights_do_not_count_rare_classes_twice_with_oversampling(tmp_path, capsys):
    """Loss weights from the raw counts on top of balanced (oversampled) epochs gave a rare class ~6.5x the
    majority's weight; "auto" weights now follow the frequencies the loss sees, and the CLI says to choose."""
    from napari_microseg.classify.trainer import ClassifierTrainConfig, train_classifier
    from napari_microseg.progress import drain

    rng = np.random.default_rng(0)
    x = rng.random((20, 1, 28, 28)).astype(np.float32)
    y = np.array([0] * 13 + [1] * 5 + [2] * 2)
    cfg = ClassifierTrainConfig(task="objects", model={"architecture": "lipnet", "n_conv": 1}, epochs=1, batch_size=8,
                                oversample=True, class_weights="auto", val_fraction=0.0, device="cpu",
                                crop={"kind": "object", "size": [28, 28]}, normalization={"kind": "none"})
    result = drain(train_classifier(cfg, (x, y), None, tmp_path / "w.pt"))
    assert result.config["training"]["class_weights"] == [1.0, 1.0, 1.0]
    assert _run_cli("classify", "train", "objects", "--simulated", "4", "--class-weights", "--epochs", "1",
                    "--out", tmp_path / "o.pt") != 0
    assert "--no-oversample" in capsys.readouterr().err


def test_batch_into_the_same_out_with_another_folder_keeps_the_first_folders_results(tmp_path):
    """`batch segment --input day1 --out r` then `--input day2 --out r` (the same file names, other images)
    replaced day1's labels unasked: the second folder was taken for the first one moved. While the first
    folder is there, day2's images are named under their folder and nothing of day1 is replaced (day2 alone,
    which would drop day1's rows from the merged tables, is refused since hunt 39: both folders are given)."""
    import json

    import tifffile

    from napari_microseg.batch.runner import run_batch_sync
    from napari_microseg.simulate.nuclei import simulate_nuclei_image

    for day, seed in (("day1", 1), ("day2", 2)):
        (tmp_path / day).mkdir()
        for k in range(2):
            image, _ = simulate_nuclei_image(shape=(96, 96), n_nuclei=6, seed=seed * 10 + k)
            tifffile.imwrite(tmp_path / day / f"A0{k}.tif", np.round(image * 4000).astype(np.uint16))
    out = tmp_path / "r"
    run_batch_sync("segment", tmp_path / "day1", out, model="nuclei_fluorescence_fast", workers=0)
    before = {p.name: p.read_bytes() for p in (out / "labels").glob("*.tif")}
    assert sorted(before) == ["A00.tif", "A01.tif"]
    # day2 alone would drop day1's rows from the merged tables: refused (hunt 39), nothing of day1 replaced
    from napari_microseg.errors import InputError

    with pytest.raises(InputError, match="A00.tif, A01.tif"):
        run_batch_sync("segment", tmp_path / "day2", out, model="nuclei_fluorescence_fast", workers=0)
    assert {p.name: p.read_bytes() for p in (out / "labels").glob("*.tif")} == before
    # the first folder moved: recognised by its names, its done images skipped
    (tmp_path / "day1").rename(tmp_path / "moved")
    assert run_batch_sync("segment", tmp_path / "moved", out, model="nuclei_fluorescence_fast", workers=0).skipped == 2
    assert {p.name: p.read_bytes() for p in (out / "labels").glob("*.tif")} == before
    # day2 beside it: its images named under their folder, the first folder's kept as they were
    both = [tmp_path / "moved", tmp_path / "day2"]
    summary = run_batch_sync("segment", both, out, model="nuclei_fluorescence_fast", workers=0)
    assert (summary.processed, summary.skipped) == (2, 2)
    assert {p.name: p.read_bytes() for p in (out / "labels").glob("*.tif")} == before  # day1's kept as they were
    assert sorted(p.name for p in (out / "labels" / "day2").glob("*.tif")) == ["A00.tif", "A01.tif"]
    config = json.loads((out / "batch_config.json").read_text())
    assert config["input_root"] == str(tmp_path / "moved")  # the folder the out folder's names start from
    assert run_batch_sync("segment", both, out, model="nuclei_fluorescence_fast", workers=0).skipped == 4


def test_batch_track_rerun_without_ctc_takes_away_the_earlier_ctc_export(tmp_path):
    """`batch track --ctc` then `--overwrite` without `--ctc` left the earlier settings' ctc_RES/<movie> beside
    the new tracks.csv, where `evaluate tracks --pred` would score it."""
    import tifffile

    from napari_microseg.batch.runner import run_batch_sync

    labels = np.zeros((4, 48, 48), np.uint16)
    for t in range(4):
        labels[t, 10:18, 4 + 4 * t:12 + 4 * t] = 1
        labels[t, 30:38, 30:38] = 2
    (tmp_path / "movies").mkdir()
    tifffile.imwrite(tmp_path / "movies" / "m1.tif", labels)
    out = tmp_path / "r"
    run_batch_sync("track", tmp_path / "movies", out, workers=0, ctc=True, config="particle")
    assert (out / "ctc_RES" / "m1" / "res_track.txt").is_file()
    run_batch_sync("track", tmp_path / "movies", out, workers=0, overwrite=True)
    assert (out / "tracks.csv").is_file() and not (out / "ctc_RES" / "m1").exists()


def test_batch_rerun_stating_tracking_or_autolabel_defaults_is_the_same_settings(tmp_path):
    """A rerun adding `--config cell`, `--update-method auto`, `--otsu-window 51` or `--diameter-range 5,30`
    (the documented defaults) was refused as "results made with other settings"."""
    import tifffile

    from napari_microseg.batch.runner import run_batch_sync
    from napari_microseg.simulate.nuclei import simulate_nuclei_image

    labels = np.zeros((3, 40, 40), np.uint16)
    labels[:, 5:12, 5:12] = 1
    (tmp_path / "movies").mkdir()
    tifffile.imwrite(tmp_path / "movies" / "m.tif", labels)
    run_batch_sync("track", tmp_path / "movies", tmp_path / "t", workers=0)
    again = run_batch_sync("track", tmp_path / "movies", tmp_path / "t", workers=0, config="cell", update_method="auto")
    assert again.skipped == 1
    image, _ = simulate_nuclei_image(shape=(96, 96), n_nuclei=6, seed=4)
    (tmp_path / "stains").mkdir()
    tifffile.imwrite(tmp_path / "stains" / "s.tif", np.round(image * 4000).astype(np.uint16))
    run_batch_sync("autolabel", tmp_path / "stains", tmp_path / "a", workers=0)
    again = run_batch_sync("autolabel", tmp_path / "stains", tmp_path / "a", workers=0,
                           autolabel={"otsu_window": 51, "diameter_range": (5.0, 30.0)})
    assert again.skipped == 1
    from napari_microseg.errors import InputError

    with pytest.raises(InputError, match="other settings"):  # a real change is still one
        run_batch_sync("autolabel", tmp_path / "stains", tmp_path / "a", workers=0, autolabel={"otsu_window": 31})


def test_a_particles_profile_class_does_not_depend_on_the_other_particles(tmp_path):
    """Per-particle min-max was applied only when some profile of the whole array lay outside [0, 1]: one
    such particle changed the class of 71 of 200 others, and profiles scaled by 0.5 were all one class.
    Every particle is normalised on its own now, and the model file says so (minmax, not none)."""
    from napari_microseg.classify.data import simulated_profile_data
    from napari_microseg.classify.predict import classify_profiles
    from napari_microseg.classify.trainer import ClassifierTrainConfig, train_classifier
    from napari_microseg.io.models import read_model_config
    from napari_microseg.progress import drain

    data = simulated_profile_data(32, seed=1)
    cfg = ClassifierTrainConfig(task="profiles", model={"architecture": "profile_cnn"}, epochs=2, batch_size=16,
                                crop={"kind": "profile", "views": 1}, device="cpu", val_fraction=0.0)
    model = drain(train_classifier(cfg, data, None, tmp_path / "p.pt")).model_path
    assert read_model_config(model)["normalization"] == {"kind": "minmax"}
    profiles = simulated_profile_data(40, seed=7).x
    plain = classify_profiles(model, profiles)
    halved = classify_profiles(model, profiles * 0.5)
    with_odd_one = classify_profiles(model, np.concatenate([profiles * 0.5, profiles[:1] * 3 + 2]))
    np.testing.assert_allclose(halved["probability"], plain["probability"], atol=1e-5)
    np.testing.assert_allclose(with_odd_one["probability"][:40], plain["probability"], atol=1e-5)


def test_model_file_with_a_bad_version_and_an_unwritable_target_get_one_line_errors(tmp_path, capsys):
    """A model file whose format_version is no number gave a ValueError traceback (`info`) or a bare "invalid
    literal" (`segment`); writing into a folder that takes no files named the hidden temporary file as "not found"."""
    import io

    import torch

    from napari_microseg.errors import InputError
    from napari_microseg.io.atomic import atomic_write_text
    from napari_microseg.io.models import load_model, read_model_file
    from napari_microseg.pretrained import resolve_model

    payload = read_model_file(resolve_model("nuclei_fluorescence_fast"))
    payload.pop("config", None)
    payload["format_version"] = "x"
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    (tmp_path / "bad.pt").write_bytes(buffer.getvalue())
    with pytest.raises(InputError, match="bad.pt is damaged: its format version 'x'"):
        load_model(tmp_path / "bad.pt")
    assert _run_cli("info", "--model", tmp_path / "bad.pt") != 0
    assert "Traceback" not in capsys.readouterr().err
    with pytest.raises(InputError, match="cannot write /proc/x.txt"):
        atomic_write_text("/proc/x.txt", "hello")


def test_shipped_models_training_records_agree_with_their_cards():
    """response_good_bad.pt said 10 epochs run and no stop reason while its card said 25 (best 10, early
    stopping); nuclei_phase.pt had no stop reason. DESIGN: the model file's training metadata is true."""
    import json

    from napari_microseg.io.models import read_model_config
    from napari_microseg.pretrained import PRETRAINED_DIR

    for card_path in sorted(PRETRAINED_DIR.glob("*.json")):
        card = json.loads(card_path.read_text())
        training = read_model_config(card_path.with_suffix(".pt")).get("training", {})
        for key in ("epochs_run", "best_epoch", "stop_reason"):
            if key in card:
                assert training.get(key) == card[key], (card_path.stem, key)


def test_tracking_dock_copies_its_by_track_stack_in_the_worker(make_napari_viewer, wait_worker, monkeypatch):
    """The "by track" layer's own copy of the relabelled stack was made on the GUI thread after every run
    and curation edit: 5-7 s of frozen window for a 1.6 GB movie. It is made in the worker now."""
    import threading

    import napari_microseg.widgets.tracking as tracking
    from napari_microseg.simulate.nuclei import simulate_nuclei_timelapse

    threads = []
    real_copy = tracking._layer_copy

    def recording_copy(result):
        threads.append(threading.current_thread() is threading.main_thread())
        return real_copy(result)

    monkeypatch.setattr(tracking, "_layer_copy", recording_copy)
    sim = simulate_nuclei_timelapse(n_frames=5, shape=(96, 96), n_nuclei=6, seed=5)
    viewer = make_napari_viewer(show=False)
    viewer.add_labels(sim.labels, name="nuclei")
    widget = tracking.TrackingWidget(viewer)
    widget.labels_layer.value = "nuclei"
    wait_worker(widget.track())
    layer = widget.relabelled_layer
    assert threads == [False]  # copied once, off the GUI thread
    assert not np.shares_memory(layer.data, widget.result.relabelled)
    np.testing.assert_array_equal(layer.data, widget.result.relabelled)
    first = int(widget.result.table["track_id"].iloc[0])
    widget._select_tracks([first])
    wait_worker(widget.delete_selected())
    assert threads == [False, False] and not (widget.relabelled_layer.data == first).any()


def test_autolabel_apply_reads_a_lazy_stain_frame_by_frame(make_napari_viewer, wait_worker, monkeypatch):
    """Apply read the whole lazy (dask / zarr) stain before the first frame (3.9 GB for a 1.6 GB movie, Stop
    waiting for the read); the auto-labeller reads it frame by frame."""
    import dask.array as da

    from napari_microseg.simulate.nuclei import simulate_nuclei_timelapse
    from napari_microseg.widgets.autolabel import AutolabelWidget

    sim = simulate_nuclei_timelapse(n_frames=3, shape=(96, 96), n_nuclei=6, seed=2)
    lazy = da.from_array(sim.fluorescence, chunks=(1, 96, 96))
    shapes = []
    real_array = da.Array.__array__

    def recording_array(self, *args, **kwargs):
        shapes.append(self.shape)
        return real_array(self, *args, **kwargs)

    viewer = make_napari_viewer(show=False)
    viewer.add_image(lazy, name="stain")
    widget = AutolabelWidget(viewer)
    widget.live.value = False
    widget.stain_layer.value = "stain"
    monkeypatch.setattr(da.Array, "__array__", recording_array)
    wait_worker(widget.apply())
    assert widget.labels_layer is not None and widget.labels_layer.data.shape == (3, 96, 96)
    assert shapes and all(len(shape) == 2 for shape in shapes), shapes


def test_training_reads_a_lazy_stack_frame_by_frame_and_refuses_one_too_big(monkeypatch):
    """A lazy (dask / zarr) movie was read whole before training (18 GB peak for a 1.6 GB movie, the bar
    at 0/1, Stop acting after 110 s): it is read frame by frame (Stop between frames), and refused first
    when training could not hold it."""
    import threading

    import dask.array as da

    import napari_microseg.simulate._common as common
    from napari_microseg.errors import InputError
    from napari_microseg.progress import drain
    from napari_microseg.widgets.training import read_training_pairs

    image = da.from_array(np.random.default_rng(0).random((4, 64, 64)).astype(np.float32), chunks=(1, 64, 64))
    labels = np.zeros((4, 64, 64), np.uint16)
    labels[:, 10:20, 10:20] = 1
    events = []
    pairs = drain(read_training_pairs([image], [labels], ["movie"], False), on_event=events.append)
    assert isinstance(pairs[0][0], np.ndarray) and pairs[0][0].shape == (4, 64, 64)
    np.testing.assert_array_equal(pairs[0][0], image.compute())
    assert sum("frame" in getattr(e, "message", "") for e in events) == 4
    stop = threading.Event()
    reader = read_training_pairs([image], [labels], ["movie"], False, stop_event=stop)
    next(reader), next(reader)  # the pair's first event, then its first frame
    stop.set()
    assert drain(reader) is None  # stopped between frames: nothing returned
    monkeypatch.setattr(common, "available_memory_bytes", lambda: 2**16)  # 64 KiB free
    with pytest.raises(InputError, match="training holds the stack's 4 frames in memory"):
        drain(read_training_pairs([image], [labels], ["movie"], False))


def test_tracks_writer_and_reader_keep_lineage_and_say_what_is_wrong(make_napari_viewer, tmp_path):
    """A Tracks layer with ids from 0 lost its divisions on Save (parent 0 means "no parent"); a 2-D layer's
    "z" feature made the saved table 3-D; the reader cut t = 0.5 to frame 0 and failed on an empty x or a
    text id in napari or int(); a 3-frame labels stack named *_mask.tif opened as an image."""
    import napari
    import pandas as pd
    import tifffile

    from napari_microseg.errors import InputError, MicrosegWarning
    from napari_microseg._reader import read_layers, read_tracks_layer

    viewer = make_napari_viewer(show=False)
    data = np.array([[0, 0, 5, 5], [0, 1, 6, 6], [1, 2, 10, 10], [1, 3, 11, 11], [2, 2, 20, 20], [2, 3, 21, 21]], float)
    layer = viewer.add_tracks(data, graph={1: [0], 2: [0]}, features=pd.DataFrame({"z": [1, 2, 3, 4, 5, 6]}))
    with pytest.warns(MicrosegWarning, match="written from 1"):
        written = napari.save_layers(str(tmp_path / "lineage_tracks.csv"), [layer], plugin="napari-microseg")
    table = pd.read_csv(written[0])
    assert "z" not in table.columns and list(table["z_feature"]) == [1, 2, 3, 4, 5, 6]
    reopened_data, kwargs, _ = read_tracks_layer(written[0])[0]
    assert reopened_data.shape == (6, 4) and kwargs["graph"] == {2: [1], 3: [1]}
    for name, text in (("frac_tracks.csv", "track_id,t,y,x\n1,0.5,3,3\n"),
                       ("empty_tracks.csv", "track_id,t,y,x\n1,0,3,3\n1,1,,3\n"),
                       ("text_tracks.csv", "track_id,t,y,x\na,0,3,3\n")):
        (tmp_path / name).write_text(text)
        with pytest.raises(InputError, match=f"{name}: column"):
            read_tracks_layer(str(tmp_path / name))
    with pytest.warns(MicrosegWarning, match="opens tracks tables named"):
        napari.save_layers(str(tmp_path / "nuclei.csv"), [layer], plugin="napari-microseg")
    stack = np.zeros((3, 32, 32), np.uint16)
    stack[:, 5:10, 5:10] = 1
    tifffile.imwrite(tmp_path / "cells_mask.tif", stack)  # tifffile tags a 3-frame stack SYX
    assert read_layers(str(tmp_path / "cells_mask.tif"))[0][2] == "labels"


def test_napari_opens_every_image_hdu_of_a_multi_extension_fits(tmp_path):
    """File > Open read only the first image HDU of a FITS file holding one amplifier per HDU, and its
    warning pointed to --hdu, which napari has not: every image HDU is a layer of its own now."""
    import warnings

    from astropy.io import fits

    from napari_microseg._reader import read_layers

    amp1 = np.full((20, 30), 1000, np.int32)
    amp2 = np.full((20, 30), 2000, np.int32)
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(amp1, name="AMP1"), fits.ImageHDU(amp2, name="AMP2")]).writeto(
        tmp_path / "frame.fits")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing left out, nothing to warn about
        layers = read_layers(str(tmp_path / "frame.fits"))
    assert [kwargs["name"] for _, kwargs, _ in layers] == ["frame [HDU 1 AMP1]", "frame [HDU 2 AMP2]"]
    np.testing.assert_array_equal(layers[1][0], amp2)
    fits.PrimaryHDU(amp1).writeto(tmp_path / "single.fits")
    assert [kwargs["name"] for _, kwargs, _ in read_layers(str(tmp_path / "single.fits"))] == ["single"]


def test_ccd_noise_of_a_frame_digitised_in_steps_of_two(tmp_path):
    """Integer frames whose values step by 2 ADC (FITS BSCALE 2) had their noise spread over steps of 1:
    the read noise came out 17 % low, and more pixels were taken for charge."""
    from napari_microseg.autolabel.ccd import robust_noise

    rng = np.random.default_rng(0)
    noise = rng.normal(0.0, 4.3, (256, 256))
    coarse = 1000 + 2 * np.round(noise / 2)  # digitised in steps of 2
    fine = 1000 + np.round(noise)
    assert robust_noise(coarse) == pytest.approx(robust_noise(fine), rel=0.06)
    assert robust_noise(coarse) == pytest.approx(4.3, rel=0.06)


def test_correct_and_retrain_pairs_results_with_their_images_and_compares_with_what_was_corrected(
        make_napari_viewer, wait_worker, monkeypatch, tmp_path):
    """An earlier result's corrections were paired with whichever image was chosen (trained on another
    image's labels); Fine-tune's before / after re-ran the model chosen now with the settings set now, not
    the output that was corrected (a second fine-tune reported 31 changes where there were 4); a class map
    in the training set fine-tuned a nuclei model on class values."""
    import shutil
    from types import SimpleNamespace

    import napari_microseg.training.finetune as finetune
    from napari_microseg.pretrained import resolve_model
    from napari_microseg.simulate.nuclei import simulate_nuclei_image
    from napari_microseg.widgets.segmentation import SegmentationWidget

    calls = []

    def fake_fine_tune(base, images, labels, out, config, stop_event=None):
        shutil.copy(base, out)
        return SimpleNamespace(model_path=str(out), stop_reason="completed", epochs_run=1)
        yield

    def fake_before_after(base, tuned, images, corrected, settings=None, stop_event=None):
        calls.append(settings)
        return ({"changed": 1}, {"changed": 1})
        yield

    monkeypatch.setattr(finetune, "fine_tune_model", fake_fine_tune)
    monkeypatch.setattr(finetune, "corrections_before_after", fake_before_after)
    monkeypatch.setattr(finetune, "describe_before_after", lambda before, after: "compared")
    viewer = make_napari_viewer(show=False)
    for name, seed in (("E", 1), ("F", 2)):
        image, _ = simulate_nuclei_image(shape=(96, 96), n_nuclei=6, seed=seed)
        viewer.add_image(image, name=name)
    base = tmp_path / "base.pt"
    shutil.copy(resolve_model("nuclei_fluorescence_fast"), base)
    widget = SegmentationWidget(viewer)
    widget.set_model(str(base))
    widget.min_size.value = 5
    for name in ("E", "F"):
        widget.image_layer.value = name
        wait_worker(widget.segment())
    e_result = viewer.layers["E segmented"]
    e_result.data[40:44, 40:44] = 9  # a correction
    widget.labels_for_training.value = "E segmented"  # the image is still F, as after the last run
    assert widget.add_to_training_set() == 0 and "was segmented from 'E'" in widget.status.text()
    widget.image_layer.value = "E"
    assert widget.add_to_training_set() == 1
    widget.min_size.value = 60  # changed after the corrected output was made
    wait_worker(widget.fine_tune())
    assert calls and calls[-1]["min_size"] == 5 and "compared" in widget.status.text()
    wait_worker(widget.fine_tune())  # again, the fine-tuned model now chosen: not the model that was corrected
    assert len(calls) == 1 and "before / after not measured" in widget.status.text()
    widget.clear_training_set()
    ccd = np.zeros((64, 64), np.uint8)
    ccd[5:9, 5:9] = 3
    viewer.add_image(np.random.default_rng(0).random((64, 64)).astype(np.float32), name="frame")
    viewer.add_labels(ccd, name="classes", features={"label": [0, 1, 2, 3], "class": ["bg", "glow", "hot", "cluster"]})
    widget.image_layer.value, widget.labels_for_training.value = "frame", "classes"
    assert widget.add_to_training_set() == 1
    widget.set_model(str(base))
    assert widget.fine_tune() is None and "holds class maps" in widget.status.text()


def test_review_mends_colour_palettes_two_level_noise_empty_z_and_busy_docks(tmp_path, capsys, make_napari_viewer):
    """From the review: two objects of one colour apart (a palette repeats) are two objects; a noise-free
    two-level image is not taken for noise (its 255 gap is no digitisation step); a tracks table whose z is
    empty for one movie opens as before, errors name the file's line; a Segmentation dock showing a result
    keeps its model when another is trained."""
    import shutil

    from napari_microseg.autolabel.ccd import robust_noise
    from napari_microseg.measure.labels import colour_labels_as_ids
    from napari_microseg._reader import read_tracks_layer
    from napari_microseg.errors import InputError
    from napari_microseg.pretrained import resolve_model
    from napari_microseg.widgets.segmentation import SegmentationWidget, add_recent_model

    rgb = np.zeros((30, 30, 3), np.uint8)
    rgb[2:8, 2:8] = rgb[20:26, 20:26] = (255, 0, 0)  # two red objects apart
    rgb[2:8, 20:26] = (0, 255, 0)
    ids = colour_labels_as_ids(rgb, "x.tif")
    assert len(np.unique(ids)) == 4 and ids[3, 3] != ids[22, 22]
    dots = np.zeros((64, 64))
    dots[::8, ::8] = 255
    assert robust_noise(dots) < 1
    (tmp_path / "m_tracks.csv").write_text("track_id,t,z,y,x,image\n1,0,1,3,3,a\n1,1,1,4,4,a\n1,0,,3,3,b\n1,1,,4,4,b\n")
    assert [layer[0].shape[1] for layer in read_tracks_layer(str(tmp_path / "m_tracks.csv"))] == [5, 4]
    (tmp_path / "n_tracks.csv").write_text("track_id,t,y,x,image\n1,0,3,3,a\n1,1,4,4,a\n1,0,3,3,b\n1,1.5,4,4,b\n")
    with pytest.raises(InputError, match="line 5 holds 1.5"):
        read_tracks_layer(str(tmp_path / "n_tracks.csv"))
    viewer = make_napari_viewer(show=False)
    dock = SegmentationWidget(viewer)
    dock.result = object()  # a result shown: its model stays
    shutil.copy(resolve_model("nuclei_fluorescence_fast"), tmp_path / "new.pt")
    add_recent_model(str(tmp_path / "new.pt"))
    assert dock.model_choice.value == "nuclei_fluorescence"


def test_zarr_labels_of_a_z_stack_keep_their_z_step(tmp_path):
    """Z-stack labels written as Zarr (segment --zarr-above, batch) stored their Z step but read back without
    it (a bare array names no axes): napari drew them 1 px per plane beside a 2 um-per-plane image."""
    import zarr

    from napari_microseg.io.images import read_image

    store = zarr.open(str(tmp_path / "labels.zarr"), mode="w", shape=(4, 32, 32), dtype="uint16")
    store.attrs["calibration"] = {"pixel_size_um": 0.5, "z_step_um": 2.0}
    assert read_image(tmp_path / "labels.zarr").metadata["calibration"] == {"pixel_size_um": 0.5, "z_step_um": 2.0}
    movie = zarr.open(str(tmp_path / "movie.zarr"), mode="w", shape=(4, 32, 32), dtype="uint16")
    movie.attrs["calibration"] = {"pixel_size_um": 0.5, "z_step_um": 2.0, "frame_interval_min": 5.0}
    assert "z_step_um" not in read_image(tmp_path / "movie.zarr").metadata["calibration"]  # a time-lapse of one plane


def test_segmentation_dock_batch_takes_the_channel_of_the_layer_shown(make_napari_viewer, monkeypatch, tmp_path, wait_worker):
    """The dock's "Run batch" passed no channel: every multi-channel file failed with a hint to use --channel,
    which the dock has not. It takes the channel of the chosen layer (napari opens a file's channels as layers)."""
    import napari_microseg.batch.runner as runner
    from napari_microseg.widgets.segmentation import SegmentationWidget

    seen = {}

    def fake_run_batch(task, source, out, model, **settings):
        seen.update(settings)
        return None
        yield

    monkeypatch.setattr(runner, "run_batch", fake_run_batch)
    viewer = make_napari_viewer(show=False)
    viewer.add_image(np.zeros((32, 32), np.float32), name="plate [channel 1]")
    (tmp_path / "in").mkdir()
    widget = SegmentationWidget(viewer)
    widget.image_layer.value = "plate [channel 1]"
    widget.batch_input.value, widget.batch_out.value = str(tmp_path / "in"), str(tmp_path / "out")
    wait_worker(widget.run_batch())
    assert seen.get("channel") == 1


def test_a_time_lapse_of_two_interleaved_samples_is_two_channels(tmp_path):
    """A (T, Y, X, 2) TIFF tagged TYXS said "has no channels: --channel ignored" and then refused its shape;
    its 2 samples are 2 channels, as those of a (Y, X, 2) image are."""
    import tifffile

    from napari_microseg.errors import InputError
    from napari_microseg.io.images import read_image

    movie = np.zeros((3, 32, 32, 2), np.uint16)
    movie[..., 1] = 7
    tifffile.imwrite(tmp_path / "m.tif", movie, photometric="minisblack", planarconfig="contig",
                     metadata={"axes": "TYXS"})
    assert tifffile.TiffFile(tmp_path / "m.tif").series[0].axes == "TYXS"  # the layout the report met
    picked = read_image(tmp_path / "m.tif", channel=1)
    assert picked.data.shape == (3, 32, 32) and (np.asarray(picked.data) == 7).all()
    with pytest.raises(InputError, match="2 channels"):
        read_image(tmp_path / "m.tif")


def test_track_summary_keeps_eight_digits_as_batch_does(tmp_path):
    """track_summary.csv was written with 6 significant digits (a 1,234,321 px area as 1.23432e+06; 219.667 where
    `batch track` wrote 219.66667), unlike every other table."""
    from napari_microseg.tracking.export import write_track_summary_csv
    from napari_microseg.tracking.track import run_tracking

    labels = np.zeros((3, 40, 40), np.uint16)
    labels[0, 5:25, 5:16] = 1  # 220 px
    labels[1, 5:24, 6:17] = 1  # 209 px
    labels[2, 5:25, 7:18] = 1  # 220 px
    written = write_track_summary_csv(run_tracking(labels), tmp_path / "track_summary.csv")
    text = Path(written).read_text()
    assert "216.33333" in text and "e+" not in text


def test_evaluate_compare_writes_each_images_difference(tmp_path):
    """`evaluate seg --compare` left the per-image difference column empty (only ALL was filled)."""
    import pandas as pd
    import tifffile

    truth = np.zeros((20, 20), np.uint8)
    truth[2:8, 2:8], truth[12:18, 12:18] = 1, 2
    worse = truth.copy()
    worse[2:8, 2:6] = 0  # IoU 1/3: a false positive and a miss
    for folder, labels in (("g", truth), ("p", truth), ("c", worse)):
        (tmp_path / folder).mkdir()
        tifffile.imwrite(tmp_path / folder / "a.tif", labels)
    assert _run_cli("evaluate", "seg", "--gt", tmp_path / "g", "--pred", tmp_path / "p", "--compare", tmp_path / "c",
                    "--out", tmp_path / "m.csv") == 0
    table = pd.read_csv(tmp_path / "m_compare.csv").set_index("name")
    assert table.loc["a.tif", "ap@0.50_pred_minus_compare"] == pytest.approx(1 - 1 / 3)


def test_simulated_ccd_table_counts_the_cluster_pieces_of_its_class_maps(tmp_path):
    """classes.csv's n_clusters counts the point charges drawn (many overlap or stay below the labelling
    threshold): beside it, n_cluster_pieces counts what the written class map holds (what a model can find)."""
    import pandas as pd
    import tifffile
    from scipy import ndimage as ndi

    assert _run_cli("simulate", "ccd", "--out", tmp_path / "c", "--n", "2", "--seed", "1", "--balanced") == 0
    table = pd.read_csv(tmp_path / "c" / "classes.csv")
    for row in table.itertuples():
        classes = tifffile.imread(tmp_path / "c" / row.classes)
        assert row.n_cluster_pieces == ndi.label(classes == 3, structure=np.ones((3, 3), bool))[1]
        assert row.n_cluster_pieces < row.n_clusters


def test_wide_images_whose_values_float32_holds_segment_as_their_16_bit_twins():
    """Normalising every float64 / 32-bit image in float64 (for images with huge offsets) tipped watershed
    near-ties: the float64 copy of a uint16 image got other labels (794 px on a 2048 x 2048 frame). Float64
    is used only where float32 would lose the signal."""
    from napari_microseg.inference.segment import segment
    from napari_microseg.io.models import load_model
    from napari_microseg.simulate.nuclei import simulate_nuclei_image
    from napari_microseg.training.normalize import normalize

    image, _ = simulate_nuclei_image(shape=(256, 256), n_nuclei=30, seed=8)
    frame = np.round(image * 4000).astype(np.uint16)
    for wide in (frame.astype(np.float64), frame.astype(np.int32), frame.astype(np.uint64)):
        np.testing.assert_array_equal(normalize(wide), normalize(frame))
    model = load_model("nuclei_fluorescence_fast", device="cpu", segmentation=True)
    np.testing.assert_array_equal(segment(model, frame.astype(np.float64)).labels, segment(model, frame).labels)


def test_sixteen_bit_colour_pngs_and_palette_label_pngs_keep_their_values(tmp_path):
    """Pillow read a 16-bit colour (or grey + alpha) PNG as 8 bits (12-bit values 0..4080 came back 0..15, and
    objects.csv intensities with them); a palette PNG of labels gave colours instead of its ids."""
    import imagecodecs
    from PIL import Image

    from napari_microseg.io.images import read_image

    rgb = np.zeros((16, 32, 3), np.uint16)
    rgb[..., 2] = np.arange(32) * 128
    (tmp_path / "blue16.png").write_bytes(imagecodecs.png_encode(rgb))
    read = read_image(tmp_path / "blue16.png").data
    assert read.dtype == np.uint16 and int(read.max()) == 31 * 128
    grey_alpha = np.stack([rgb[..., 2], np.full((16, 32), 65535, np.uint16)], -1)
    (tmp_path / "ga16.png").write_bytes(imagecodecs.png_encode(grey_alpha))
    np.testing.assert_array_equal(read_image(tmp_path / "ga16.png").data, rgb[..., 2])
    ids = np.zeros((16, 32), np.uint8)
    ids[2:6, 2:6], ids[8:12, 20:30] = 1, 2
    picture = Image.fromarray(ids, mode="P")
    picture.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
    picture.save(tmp_path / "cells_mask.png")
    np.testing.assert_array_equal(read_image(tmp_path / "cells_mask.png").data, ids)


def test_docks_refuse_a_grey_with_alpha_layer_clearly(make_napari_viewer):
    """napari's own reader opens a grey + alpha PNG as a (Y, X, 2) layer: the Auto-label dock labelled its 256
    rows as frames of 2 px, the Segmentation dock said "too small". Both now say what the layer is."""
    from napari_microseg.widgets.autolabel import AutolabelWidget
    from napari_microseg.widgets.segmentation import SegmentationWidget

    viewer = make_napari_viewer(show=False)
    viewer.add_image(np.zeros((64, 64, 2), np.uint8), name="png")
    segmentation = SegmentationWidget(viewer)
    segmentation.image_layer.value = "png"
    assert segmentation.segment() is None and "grey image with an alpha channel" in segmentation.status.text()
    autolabel = AutolabelWidget(viewer)
    autolabel.live.value = False
    autolabel.stain_layer.value = "png"
    assert autolabel.apply() is None and "grey image with an alpha channel" in autolabel.status.text()


def test_inputs_in_paths_with_brackets_are_protected(tmp_path, capsys):
    """protect_inputs read an existing path holding [ ] * ? as a pattern: plate[1]/ matched plate1/ (or
    nothing), so its images went unprotected and --overwrite replaced an input with labels."""
    import tifffile

    from napari_microseg.simulate.nuclei import simulate_nuclei_image

    image, _ = simulate_nuclei_image(shape=(64, 64), n_nuclei=4, seed=1)
    folder = tmp_path / "plate[1]" / "labels"
    folder.mkdir(parents=True)
    tifffile.imwrite(folder / "img.tif", image)
    before = (folder / "img.tif").read_bytes()
    assert _run_cli("segment", "--model", "nuclei_fluorescence_fast", "--input", folder, "--out", tmp_path / "plate[1]",
                    "--overwrite") != 0
    assert "never overwritten" in capsys.readouterr().err and (folder / "img.tif").read_bytes() == before


def test_a_file_name_that_is_not_utf8_gets_one_line(tmp_path):
    """A latin-1 file name (undecodable bytes) made a UnicodeEncodeError traceback (tables, --quiet's sink)."""
    import os
    import subprocess
    import sys

    import tifffile

    folder = tmp_path / "in"
    folder.mkdir()
    name = os.fsdecode(b"caf\xe9.tif")
    tifffile.imwrite(folder / name, np.random.default_rng(0).random((48, 48)).astype(np.float32))
    done = subprocess.run([sys.executable, "-m", "napari_microseg.cli", "segment", "--model", "nuclei_fluorescence_fast",
                           "--input", str(folder), "--out", str(tmp_path / "out"), "--quiet"], capture_output=True)
    err = done.stderr.decode("utf-8", "replace")
    assert done.returncode != 0 and "not valid UTF-8" in err and "Traceback" not in err


def test_dock_file_fields_take_the_home_folder_and_refuse_an_empty_field(make_napari_viewer, wait_worker, monkeypatch,
                                                                         tmp_path):
    """"~/results" typed into an export folder wrote into a folder called "~" in napari's working folder; an
    emptied field wrote into the working folder itself."""
    from napari_microseg.widgets.segmentation import SegmentationWidget

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    viewer = make_napari_viewer(show=False)
    viewer.add_image(np.random.default_rng(0).random((64, 64)).astype(np.float32), name="cells")
    widget = SegmentationWidget(viewer)
    widget.image_layer.value = "cells"
    widget.model_choice.value = "nuclei_fluorescence_fast"
    wait_worker(widget.segment())
    widget.export_dir.value = "~/results"
    wait_worker(widget.export()) if widget.worker is not None else widget.export()
    assert (tmp_path / "home" / "results" / "counts.csv").is_file() and not (tmp_path / "~").exists()
    widget.export_dir.line_edit.native.setText("")  # the user clears the field
    widget.export()
    assert "the field is empty" in widget.status.text() and not (tmp_path / "counts.csv").exists()


def test_train_lists_every_fits_form_and_classify_skips_hidden_files(tmp_path, capsys):
    """`train` and `evaluate` did not list .fts / .fz FITS files that segment reads; `classify images` took
    macOS's hidden ._name.tif files for images (and `classify objects` refused the whole folder)."""
    from astropy.io import fits

    from napari_microseg.training.data import load_training_pairs

    (tmp_path / "images").mkdir(), (tmp_path / "labels").mkdir()
    image = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    labels = np.zeros((32, 32), np.int16)
    labels[5:10, 5:10] = 1
    fits.PrimaryHDU(image).writeto(tmp_path / "images" / "a.fts")
    fits.PrimaryHDU(labels).writeto(tmp_path / "labels" / "a.fts")
    images, _, names = load_training_pairs(tmp_path / "images", tmp_path / "labels")
    assert names == ["a.fts"]
    assert _run_cli("simulate", "response", "--out", tmp_path / "r", "--n", "2", "--seed", "1") == 0
    (tmp_path / "r" / "images" / "._response_00000.tif").write_bytes(b"\x00\x05\x16\x07")  # AppleDouble
    assert _run_cli("classify", "images", "--model", "response_good_bad", "--input", tmp_path / "r",
                    "--out", tmp_path / "flags") == 0
    assert "._response" not in capsys.readouterr().err


def test_train_refuses_history_over_its_model_and_sparse_labels_without_background(tmp_path, capsys):
    """`train --history m.pt --out m.pt` wrote the CSV over the trained model and exited 0; 0 taken for
    "not annotated" without a painted background trained everything as foreground (val_dice 1.000)."""
    from napari_microseg.errors import InputError
    from napari_microseg.training.data import prepare_training_data

    assert _run_cli("train", "--simulated", "2", "--out", tmp_path / "m.pt", "--history", tmp_path / "m.pt",
                    "--epochs", "1") != 0
    assert "is a model file this run writes" in capsys.readouterr().err and not (tmp_path / "m.pt").exists()
    labels = np.zeros((32, 32), np.int64)
    labels[5:15, 5:15] = 1  # objects painted, background not
    with pytest.raises(InputError, match="no background is annotated"):
        prepare_training_data(np.random.default_rng(0).random((32, 32)), labels, output_mode="binary",
                              unlabelled_is_ignored=True)


def test_autolabel_correct_shift_writes_the_labels_on_the_target(tmp_path):
    """--correct-shift moved the tile labels onto the target but labels.tif kept the stain's positions, with
    nothing said: training on the whole target with it was misregistered. labels_on_target.tif holds them moved."""
    import tifffile

    from napari_microseg.simulate.nuclei import simulate_nuclei_image

    image, _ = simulate_nuclei_image(shape=(256, 256), n_nuclei=12, seed=3)
    stain = np.round(image * 4000).astype(np.uint16)
    target = np.roll(stain, (10, -6), axis=(0, 1))
    tifffile.imwrite(tmp_path / "stain.tif", stain), tifffile.imwrite(tmp_path / "target.tif", target)
    assert _run_cli("autolabel", "fluorescence", "--stain", tmp_path / "stain.tif", "--target", tmp_path / "target.tif",
                    "--out", tmp_path / "out", "--correct-shift", "--tile", "128") == 0
    own = tifffile.imread(tmp_path / "out" / "labels.tif")
    moved = tifffile.imread(tmp_path / "out" / "labels_on_target.tif")
    from skimage.filters import threshold_otsu

    bright = target > threshold_otsu(target)  # the nuclei where the target shows them
    on_target = float(bright[moved > 0].mean())
    assert on_target > 0.7 and on_target > float(bright[own > 0].mean()) + 0.2


def test_train_writes_its_history_after_every_epoch(tmp_path, monkeypatch):
    """history.csv was written at the end only (or on Ctrl-C): after a kill -9 there was none beside the
    model kept, or an earlier run's. It is written again after each epoch."""
    import napari_microseg.cli.train as train_cli

    written = []
    real = train_cli.write_history_csv

    def recording(path, history):
        written.append(len(history))
        return real(path, history)

    monkeypatch.setattr(train_cli, "write_history_csv", recording)
    assert _run_cli("train", "--simulated", "2", "--epochs", "2", "--patch", "64", "--patches-per-epoch", "4",
                    "--out", tmp_path / "m.pt") == 0
    assert len(written) >= 3 and written[0] >= 1 and written[-1] == 2  # during the run, then at its end


def test_colour_response_images_and_colour_time_lapses_are_taken_as_everywhere(tmp_path):
    """`classify images` refused an RGB response image the Classification dock classified (the mean of the
    colours); `train` refused an RGB time-lapse that segment, track and the docks take."""
    import tifffile

    from napari_microseg.simulate.response import simulate_response_image
    from napari_microseg.training.data import load_training_pairs

    sample = simulate_response_image("good_signal", seed=2)
    tifffile.imwrite(tmp_path / "rgb.tif", np.stack([sample.image] * 3, -1), photometric="rgb")
    assert _run_cli("classify", "images", "--model", "response_good_bad", "--input", tmp_path / "rgb.tif",
                    "--box", "20", "10", "59", "52", "--out", tmp_path / "flags") == 0
    (tmp_path / "images").mkdir(), (tmp_path / "labels").mkdir()
    movie = np.random.default_rng(0).integers(0, 255, (2, 32, 32, 3), dtype=np.uint8)
    labels = np.zeros((2, 32, 32), np.uint16)
    labels[:, 5:12, 5:12] = 1
    tifffile.imwrite(tmp_path / "images" / "m.tif", movie, photometric="rgb")
    tifffile.imwrite(tmp_path / "labels" / "m.tif", labels)
    images, _, names = load_training_pairs(tmp_path / "images", tmp_path / "labels")
    assert names == ["m.tif[0]", "m.tif[1]"] and images[0].shape == (32, 32)
