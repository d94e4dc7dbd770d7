"""Regression tests for the bugs found by session 33's hunts and review: each failed on the code before its fix
(the uint16 label buffer's test guards the widening the memory fix brought in)."""
from __future__ import annotations

import numpy as np
import pytest
from test_hunt32_fixes import _image_label_folders  # folders of simulated image / label pairs


def test_a_run_whose_loss_blows_up_but_stays_finite_is_refused(tmp_path, capsys):
    """`--lr 1000` without validation: the loss rose from 1.4 to 5e5 (finite) and the run "completed", keeping
    a model that finds nothing. It is stopped as diverged and nothing is saved (no epoch was any good)."""
    from napari_microseg.cli import main

    _image_label_folders(tmp_path, 3)
    assert main(["train", "--images", str(tmp_path / "images"), "--labels", str(tmp_path / "labels"), "--out",
                 str(tmp_path / "m.pt"), "--epochs", "3", "--patch", "32", "--patches-per-epoch", "16", "--batch-size",
                 "4", "--lr", "1000", "--val-fraction", "0", "--threads", "1", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "training diverged: the training loss rose from" in err and "at the start" in err and "lower the learning rate" in err, err
    assert not (tmp_path / "m.pt").exists()


def test_an_ordinary_run_is_not_taken_for_a_blow_up(tmp_path):
    """The blow-up check must leave a run at the default learning rate alone (scratch, then fine-tuned)."""
    from napari_microseg.cli import main

    _image_label_folders(tmp_path, 3)
    common = ["--images", str(tmp_path / "images"), "--labels", str(tmp_path / "labels"), "--epochs", "2",
              "--patch", "32", "--patches-per-epoch", "16", "--batch-size", "4", "--val-fraction", "0",
              "--threads", "1", "--quiet"]
    assert main(["train", *common, "--out", str(tmp_path / "m.pt")]) == 0
    assert main(["train", *common, "--out", str(tmp_path / "tuned.pt"), "--init-model", str(tmp_path / "m.pt")]) == 0


def test_training_dock_resumes_a_run_of_another_output_mode_with_the_runs_own(make_napari_viewer, wait_worker,
                                                                                tmp_path):
    """Resuming a binary run (a CLI run's default) from a dock whose form shows three_class was refused
    ("checkpoint output mode is 'binary'") where `microseg train --resume` goes on with the run's own: the
    dock now does too, and names it."""
    from test_hunt32_fixes import _tiny_training_dock

    from napari_microseg.io.models import read_model_config

    widget = _tiny_training_dock(make_napari_viewer, 2)
    widget.output_mode.value, widget.val_fraction.value = "binary", 0.0
    widget.out_path.value = str(tmp_path / "m.pt")
    wait_worker(widget.train())
    messages, errors = [], []
    widget.show_message, widget.show_error = messages.append, errors.append
    widget.resume.value, widget.epochs.value, widget.output_mode.value = True, 2, "three_class"
    wait_worker(widget.train())
    assert not errors, errors
    assert "output binary" in " ".join(messages), messages
    config = read_model_config(tmp_path / "m.pt")
    assert config["output_mode"] == "binary" and config["training"]["epochs_run"] == 2


@pytest.mark.parametrize("task", ["objects", "profiles"])
def test_classifier_config_defaults_train_every_task(tmp_path, task):
    """`ClassifierTrainConfig(task="objects" | "profiles")` defaulted to the small_cnn for images: the
    package's own 28 x 28 crops and (views, points) profiles were refused as "too small for the small net"."""
    from napari_microseg.classify import ClassifierTrainConfig, train_classifier
    from napari_microseg.classify.data import simulated_liposome_data, simulated_profile_data
    from napari_microseg.progress import drain

    data = simulated_liposome_data(2, seed=0) if task == "objects" else simulated_profile_data(40, n_views=2, seed=0)
    cfg = ClassifierTrainConfig(task=task, epochs=1, device="cpu", num_threads=1)
    result = drain(train_classifier(cfg, data, out_path=tmp_path / "m.pt"))
    from napari_microseg.io.models import read_model_config

    expected = {"objects": "lipnet", "profiles": "profile_cnn"}[task]
    assert read_model_config(result.model_path)["model"]["architecture"] == expected


def test_a_misspelt_normalisation_setting_is_refused():
    """`{"kind": "fixed", "ofset": 8800}` trained (and saved) offset 0 without a word."""
    from napari_microseg.errors import InputError
    from napari_microseg.training.normalize import make_normalization_spec

    with pytest.raises(InputError, match="unknown fixed normalisation setting.*'ofset'.*offset, scale"):
        make_normalization_spec({"kind": "fixed", "ofset": 8800, "scale": 1000})
    with pytest.raises(InputError, match="'high', 'low'"):
        make_normalization_spec("percentile", low=5, high=95)
    assert make_normalization_spec({"kind": "pedestal", "scale": 200, "estimator": "mode", "level_taps": True})[
        "level_taps"] is True


def _blob(shape, centre, total, sigma):
    """A 2-D Gaussian charge cloud of ``total`` ADC and ``sigma`` px at ``centre`` (y, x), pixel-integrated."""
    from scipy.special import erf

    def edges(n, c):
        e = (np.arange(n + 1) - 0.5 - c) / (np.sqrt(2) * sigma)
        return np.diff(0.5 * erf(e))
    return total * np.outer(edges(shape[0], centre[0]), edges(shape[1], centre[1]))


def test_cluster_charge_includes_the_charge_diffused_around_its_class_pixels():
    """`charge_adc` summed only a cluster's class pixels: the charge diffused into the pixels around them
    (below the class threshold) was lost, ~30 % on real Fe-55 frames with the shipped model (a spectrum read
    low). The cluster is grown by 1.5 px (into quiet pixels only, none counted twice) for its charge."""
    from napari_microseg.autolabel.ccd import find_clusters

    rng = np.random.default_rng(0)
    image = 1000 + rng.normal(0, 3, (48, 64))
    for centre in ((12, 12), (12, 17.5), (30, 40)):  # two clusters 5.5 px apart, one alone
        image += _blob(image.shape, centre, 1600, 0.9)
    classes = np.where(image - 1000 > 80, 3, 0).astype(np.uint8)  # the class pixels: the bright cores only
    image[30, 43] += 5000  # a hot pixel beside the lone cluster: not its charge
    classes[30, 43] = 2
    table = find_clusters(classes, image).sort_values(["y", "x"]).reset_index(drop=True)
    assert len(table) == 3
    np.testing.assert_allclose(table.charge_adc, 1600, rtol=0.04)
    assert (table.charge_core_adc < 0.9 * 1600).all()  # what the class pixels alone hold
    assert (find_clusters(classes, image, grow=0).charge_adc < 0.9 * 1600).all()  # as before
    assert not table.at_edge.any()
    image[0:3, 60:64] += 300  # a cluster on the frame's edge is flagged: its charge may be cut off there
    classes[0:3, 60:64] = 3
    assert find_clusters(classes, image).sort_values("x").at_edge.tolist()[-1] == 1


def test_shipped_ccd_model_clusters_hold_their_window_charge_on_real_fe55():
    """Real Fe-55 frame (the shipped crop): the model's cluster charge against a 7 x 7 window sum read 0.85
    (its class pixels only); grown, within a few per cent of the window."""
    import warnings

    from napari_microseg.autolabel.ccd import clusters_per_frame, detect_taps, estimate_baseline
    from napari_microseg.inference.segment import segment
    from napari_microseg.io.images import read_image
    from napari_microseg.io.models import load_model

    image = read_image("src/napari_microseg/sample_data/ccd_fe55_ESIS1_00002_crop.fits.gz").data.astype(np.float32)
    model = load_model("ccd_classes")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        classes = np.asarray(segment(model, image).labels)
        table = clusters_per_frame(classes, image, model.config["class_names"])
        levelled = image - estimate_baseline(image, boundaries=detect_taps(image)).pedestal
    levelled = levelled - np.median(levelled[classes == 0])
    ys, xs = table.y.to_numpy(), table.x.to_numpy()
    ratios, core_ratios = [], []
    for i, (y, x) in enumerate(zip(np.rint(ys).astype(int), np.rint(xs).astype(int))):
        others = np.hypot(ys - ys[i], xs - xs[i])
        others[i] = np.inf
        window = levelled[y - 3:y + 4, x - 3:x + 4].sum() if 3 <= y < image.shape[0] - 3 and 3 <= x < image.shape[1] - 3 \
            else 0
        if others.min() >= 8 and window > 300:  # isolated events inside the frame
            ratios.append(table.charge_adc.iloc[i] / window)
            core_ratios.append(table.charge_core_adc.iloc[i] / window)
    assert len(ratios) > 50
    assert 0.97 < np.median(ratios) < 1.03, np.median(ratios)
    assert np.median(core_ratios) < 0.9


def test_simulate_ccd_writes_each_point_charge_and_autolabel_recovers_its_charge(tmp_path):
    """`simulate ccd` dropped the drawn point charges (only class fractions in classes.csv): a cluster
    measurement could not be checked against the truth from the command line. clusters_truth.csv lists them;
    `autolabel ccd`'s clusters.csv charges of isolated point charges match it."""
    import pandas as pd

    from napari_microseg.cli import main

    assert main(["simulate", "ccd", "--out", str(tmp_path / "sim"), "--n", "2", "--noise", "20",
                 "--glow-probability", "0", "--seed", "3"]) == 0
    truth = pd.read_csv(tmp_path / "sim" / "clusters_truth.csv")
    # (session 39: charge_adc is the charge on the frame, fraction_on_frame its share of the whole charge)
    assert list(truth.columns) == ["index", "y", "x", "energy_kev", "sigma_px", "charge_adc", "fraction_on_frame"]
    assert set(truth["index"]) == {0, 1} and (truth.charge_adc > 0).all()
    assert main(["autolabel", "ccd", "--input", str(tmp_path / "sim" / "frames" / "ccd_00000.fits"),
                 "--out", str(tmp_path / "auto")]) == 0
    found = pd.read_csv(tmp_path / "auto" / "clusters.csv")
    drawn = truth[truth["index"] == 0].reset_index(drop=True)
    ratios = []
    for i, row in drawn.iterrows():
        distance = np.hypot(drawn.y - row.y, drawn.x - row.x)
        distance[i] = np.inf
        near = np.hypot(found.y - row.y, found.x - row.x)
        if distance.min() > 8 and near.min() < 1.5 and row.charge_adc > 400:  # isolated, found
            ratios.append(found.charge_adc[near.idxmin()] / row.charge_adc)
    assert len(ratios) >= 5
    assert 0.95 < np.median(ratios) < 1.05, ratios


def _segmented_discs(make_napari_viewer, wait_worker):
    """A Segmentation dock that segmented a (4, 96, 96) stack of four discs per frame (whole stack)."""
    from test_hunt32_fixes import _disc_stack

    from napari_microseg.widgets.segmentation import SegmentationWidget

    viewer = make_napari_viewer(show=False)
    viewer.add_image(_disc_stack(), name="movie")
    widget = SegmentationWidget(viewer)
    widget.model_choice.value = "nuclei_fluorescence_fast"
    widget.scope.value = "whole stack"
    wait_worker(widget.segment())
    assert widget.result_layer is not None and int((widget.result_layer.data[1] > 0).any())
    return viewer, widget


def test_export_measures_a_corrected_copy_of_the_result_layer(make_napari_viewer, wait_worker, tmp_path):
    """Correcting a duplicate of the result layer (napari's Duplicate Layer), selecting it and pressing
    Export wrote the uncorrected result's tables without a word. The copy is measured, and named."""
    import pandas as pd
    from napari.layers._layer_actions import _duplicate_layer

    viewer, widget = _segmented_discs(make_napari_viewer, wait_worker)
    widget.export_dir.value = str(tmp_path)
    original = widget.result_layer
    viewer.layers.selection = {original}
    _duplicate_layer(viewer.layers)
    copy = viewer.layers[f"{original.name} copy"]
    removed = int(copy.data[1][25, 25])
    assert removed
    copy.fill((1, 25, 25), 0)  # the user deletes one nucleus in the copy
    viewer.layers.selection.active = copy
    wait_worker(widget.export())
    assert f"'{copy.name}'" in widget.status.text(), widget.status.text()
    objects = pd.read_csv(tmp_path / "objects.csv")
    assert len(objects) == len(np.unique(copy.data)) - 1 == len(np.unique(original.data)) - 2
    assert removed not in set(objects["label"])


def test_fine_tune_trains_on_corrections_made_after_add(make_napari_viewer, wait_worker, tmp_path, monkeypatch):
    """A frame added to the training set and then corrected further: Fine-tune trained on the copy taken
    at Add, dropping the later corrections without a word. The frame's current labels are taken, and said."""
    monkeypatch.setenv("HOME", str(tmp_path))  # the fine-tuned model goes to ~/microseg_models
    viewer, widget = _segmented_discs(make_napari_viewer, wait_worker)
    layer = widget.result_layer
    viewer.dims.set_current_step(0, 1)
    assert widget.add_to_training_set() == 1
    layer.fill((1, 25, 25), 0)  # corrected after Add
    widget.finetune_epochs.value = 1
    wait_worker(widget.fine_tune())
    assert "as corrected since Add (movie t=1)" in widget.status.text(), widget.status.text()
    np.testing.assert_array_equal(widget.training_pairs[0][1], layer.data[1])


def test_overwrite_leaves_a_users_files_of_output_names_no_run_wrote(tmp_path):
    """Files of an output's name that no microseg run wrote were deleted as "stale": `autolabel ccd` removed a
    user's class_fractions.csv (even without --overwrite); with --overwrite `segment` (nuclei model) removed
    clusters.csv, `classify images` metrics.json / confusion.csv, `track` a CTC folder's res_track.txt and
    masks. They are removed only where the folder's run record says a run of that command wrote there."""
    import shutil

    import tifffile

    from napari_microseg.cli import main
    from napari_microseg.simulate.nuclei import simulate_nuclei_timelapse

    def user_files(folder, *names):
        for name in names:
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text("the user's own\n")

    def kept(folder, *names):
        return all((folder / name).read_text() == "the user's own\n" for name in names)

    assert main(["simulate", "ccd", "--out", str(tmp_path / "ccd"), "--n", "1", "--shape", "64", "64"]) == 0
    user_files(tmp_path / "a", "class_fractions.csv")
    assert main(["autolabel", "ccd", "--input", str(tmp_path / "ccd" / "frames" / "ccd_00000.fits"),
                 "--out", str(tmp_path / "a")]) == 0
    assert kept(tmp_path / "a", "class_fractions.csv")

    sim = simulate_nuclei_timelapse(n_frames=3, shape=(64, 64), n_nuclei=5, seed=1)
    tifffile.imwrite(tmp_path / "im.tif", sim.fluorescence[0])
    tifffile.imwrite(tmp_path / "labels.tif", sim.labels.astype(np.uint16))
    user_files(tmp_path / "s", "clusters.csv")
    assert main(["segment", "--model", "nuclei_fluorescence_fast", "--input", str(tmp_path / "im.tif"),
                 "--out", str(tmp_path / "s"), "--overwrite", "--quiet"]) == 0
    assert kept(tmp_path / "s", "clusters.csv")

    ctc = ("ctc_RES/res_track.txt", "ctc_RES/mask000.tif")
    user_files(tmp_path / "t", *ctc)
    assert main(["track", "--labels", str(tmp_path / "labels.tif"), "--out", str(tmp_path / "t"), "--overwrite"]) == 0
    assert kept(tmp_path / "t", *ctc)
    assert main(["track", "--labels", str(tmp_path / "labels.tif"), "--out", str(tmp_path / "t2"), "--ctc"]) == 0
    assert main(["track", "--labels", str(tmp_path / "labels.tif"), "--out", str(tmp_path / "t2"), "--overwrite"]) == 0
    assert not (tmp_path / "t2" / "ctc_RES" / "res_track.txt").exists()  # an earlier run's export still goes

    assert main(["simulate", "response", "--out", str(tmp_path / "r"), "--n", "4"]) == 0
    for sub in ("images", "integration"):  # the images and their integration masks, without the true classes
        shutil.copytree(tmp_path / "r" / sub, tmp_path / "plain" / sub)
    scored = ("metrics.json", "confusion.csv")
    user_files(tmp_path / "c", *scored)
    assert main(["classify", "images", "--model", "response_good_bad", "--input", str(tmp_path / "plain"),
                 "--out", str(tmp_path / "c"), "--overwrite"]) == 0
    assert kept(tmp_path / "c", *scored)


def test_history_csv_never_replaces_a_model_file(tmp_path, capsys):
    """`classify train --history` naming the model --out writes replaced the trained model with the CSV (exit 2
    "not a napari-microseg model file"); `train --history` naming --init-model replaced the starting model.
    Both refused before training."""
    from napari_microseg.cli import main

    model = tmp_path / "r.pt"
    assert main(["classify", "train", "images", "--simulated", "4", "--epochs", "1", "--out", str(model),
                 "--history", str(model)]) == 2
    assert "is a model file this run writes or starts from" in capsys.readouterr().err and not model.exists()
    _image_label_folders(tmp_path, 2)
    base = tmp_path / "base.pt"
    base.write_bytes(b"the user's starting model")
    assert main(["train", "--images", str(tmp_path / "images"), "--labels", str(tmp_path / "labels"), "--out",
                 str(tmp_path / "m.pt"), "--init-model", str(base), "--history", str(base), "--overwrite"]) == 2
    assert "is a model file this run writes or starts from" in capsys.readouterr().err
    assert base.read_bytes() == b"the user's starting model"


def test_evaluate_never_writes_its_scores_over_a_label_image(tmp_path, capsys):
    """`evaluate seg --compare old --out old/x.tif --overwrite` turned a label image of the --compare folder
    into CSV text: the scores need a .csv name (and --compare is declared an input, as --gt and --pred)."""
    import tifffile

    from napari_microseg.cli import INPUT_OPTIONS, main

    labels = np.zeros((32, 32), np.uint16)
    labels[5:12, 5:12] = 1
    for sub in ("gt", "new", "old"):
        (tmp_path / sub).mkdir()
        tifffile.imwrite(tmp_path / sub / "a.tif", labels)
    before = (tmp_path / "old" / "a.tif").read_bytes()
    common = ["evaluate", "seg", "--gt", str(tmp_path / "gt"), "--pred", str(tmp_path / "new"),
              "--compare", str(tmp_path / "old"), "--overwrite"]
    assert main([*common, "--out", str(tmp_path / "old" / "a.tif")]) == 2
    assert "give a .csv file name" in capsys.readouterr().err
    assert (tmp_path / "old" / "a.tif").read_bytes() == before
    assert main([*common, "--out", str(tmp_path / "old" / "a.csv")]) == 0  # a CSV beside them is fine
    assert "compare" in INPUT_OPTIONS


def test_matching_solves_each_group_of_conflicting_candidates_on_its_own(monkeypatch):
    """One merged pair among thousands of nuclei sent every object with a candidate into one dense score matrix
    (n x n: 36 GiB for 70,000 nuclei, `evaluate seg` refused "out of memory"). Each group of objects linked by
    candidates is matched on its own, with the same optimum as one matching of all (checked by brute force)."""
    import itertools

    import scipy.optimize

    from napari_microseg.evaluation.metrics import compute_overlaps, instance_scores, match_instances

    side = 40  # 1600 squares of 8 x 8 px on a 10 px grid; the prediction merges squares 1 and 2 (IoU 0.5 each)
    yy, xx = np.mgrid[0:side * 10, 0:side * 10]
    gt = ((yy // 10) * side + (xx // 10) + 1).astype(np.uint32)
    gt[(yy % 10 > 7) | (xx % 10 > 7)] = 0
    pred = gt.copy()
    pred[pred == 2] = 1
    shapes = []
    real = scipy.optimize.linear_sum_assignment
    monkeypatch.setattr(scipy.optimize, "linear_sum_assignment",
                        lambda score, **kw: (shapes.append(score.shape), real(score, **kw))[1])
    row = instance_scores(gt, pred, thresholds=[0.5]).iloc[0]
    assert (row.tp, row.fp, row.fn) == (side * side - 1, 0, 1)
    assert shapes and max(a * b for a, b in shapes) <= 4, shapes  # the merge's group only, not 1600 x 1600

    rng = np.random.default_rng(0)
    for _ in range(30):  # random overlaps with conflicts: the most matches, then the largest summed IoU
        gt = np.zeros((40, 40), np.int32)
        pred = np.zeros((40, 40), np.int32)
        for k in range(1, 7):
            y, x = rng.integers(0, 32, 2)
            gt[y:y + 8, x:x + 8] = k
            y2, x2 = np.clip([y, x] + rng.integers(-3, 4, 2), 0, 32)
            pred[y2:y2 + rng.integers(4, 9), x2:x2 + rng.integers(4, 9)] = k
        overlaps = compute_overlaps(gt, pred)
        g, p, iou = match_instances(overlaps, 0.3)
        keep = overlaps.iou >= 0.3
        pairs = list(zip(overlaps.pairs_gt[keep], overlaps.pairs_pred[keep], overlaps.iou[keep]))
        best = (0, 0.0)
        for size in range(len(pairs), 0, -1):
            for chosen in itertools.combinations(pairs, size):
                if len({c[0] for c in chosen}) == size == len({c[1] for c in chosen}):
                    best = max(best, (size, round(sum(c[2] for c in chosen), 9)))
            if best[0]:
                break
        assert (len(g), round(float(iou.sum()), 9)) == best
        assert len(set(g)) == len(g) and len(set(p)) == len(p)


def test_track_with_more_tracks_than_ctc_holds_keeps_the_other_outputs(tmp_path, monkeypatch, capsys):
    """`track --ctc` of more tracks than CTC's 16-bit masks hold threw the whole finished run away (no
    tracks.csv, no labels): the other outputs are written, the CTC export refused (exit 1)."""
    import tifffile

    import napari_microseg.tracking.export as export
    from napari_microseg.cli import main
    from napari_microseg.simulate.nuclei import simulate_nuclei_timelapse

    sim = simulate_nuclei_timelapse(n_frames=3, shape=(64, 64), n_nuclei=5, seed=1)
    tifffile.imwrite(tmp_path / "labels.tif", sim.labels.astype(np.uint16))
    monkeypatch.setattr(export, "CTC_MAX_TRACKS", 2)
    assert main(["track", "--labels", str(tmp_path / "labels.tif"), "--out", str(tmp_path / "t"), "--ctc"]) == 1
    assert "no CTC export" in capsys.readouterr().err
    assert (tmp_path / "t" / "tracks.csv").is_file() and (tmp_path / "t" / "tracks_labels.tif").is_file()
    assert not (tmp_path / "t" / "ctc_RES").exists()


def test_two_planar_samples_are_channels_and_cmyk_is_read_as_colour(tmp_path):
    """A one-page TIFF of 2 planar samples (axes SYX) was segmented as a 2-frame movie (--channel ignored); a
    CMYK JPEG was averaged as R, G, B with K (the picture) dropped as alpha: "constant", 0 objects. A CMYK
    TIFF is refused in one line."""
    import tifffile
    from PIL import Image

    from napari_microseg.errors import InputError
    from napari_microseg.io.images import read_image

    yy, xx = np.mgrid[:64, :64]
    picture = np.where((yy - 30) ** 2 + (xx - 30) ** 2 < 100, 250, 25).astype(np.uint8)
    tifffile.imwrite(tmp_path / "planar.tif", np.stack([picture, picture // 2]), photometric="minisblack",
                     planarconfig="separate")
    image = read_image(tmp_path / "planar.tif", channel=1)
    assert image.data.shape == (64, 64) and int(image.data.max()) == 125
    Image.fromarray(picture, "L").convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    colour = read_image(tmp_path / "cmyk.jpg").data
    assert colour.shape == (64, 64, 3)
    assert np.corrcoef(colour.mean(-1).ravel(), picture.ravel())[0, 1] > 0.99
    tifffile.imwrite(tmp_path / "cmyk.tif", np.dstack([picture] * 4), photometric="separated")
    with pytest.raises(InputError, match="CMYK"):
        read_image(tmp_path / "cmyk.tif")


@pytest.mark.parametrize("multiscales, said", [
    ([{"version": "0.4", "datasets": []}], "lists no array"),
    ([{"version": "0.4", "datasets": [{"path": "s0"}]}], "array 's0', which the store does not hold"),
    ({"datasets": [{"path": "0"}]}, "is not a list of images"),
])
def test_damaged_ome_zarr_metadata_is_one_line(tmp_path, multiscales, said):
    """An OME-Zarr store whose multiscales list is empty, names a missing array or is no list gave an
    IndexError / KeyError traceback (command line and napari reader)."""
    import zarr

    from napari_microseg.errors import InputError
    from napari_microseg.io.images import read_image

    group = zarr.open_group(str(tmp_path / "bad.zarr"), mode="w", zarr_format=2)
    group.create_array("0", shape=(32, 32), dtype="uint16")[:] = 1
    group.attrs["multiscales"] = multiscales
    with pytest.raises(InputError, match=f"bad.zarr: damaged OME-Zarr metadata.*{said}"):
        read_image(tmp_path / "bad.zarr")


@pytest.mark.parametrize("entry, said", [
    ({"class_names": 3}, "'class_names' is damaged"),
    ({"patch_size": "abc"}, "'patch_size' is damaged"),
    ({"postprocess": "x"}, "'postprocess' is damaged"),
    ({"postprocess": {"threshold": "high", "tuned_on": "a note"}}, "threshold: 'high' is no number"),
    ({"training": "x"}, "'training' is damaged"),
])
def test_a_model_config_entry_of_the_wrong_type_is_one_line(tmp_path, entry, said):
    """A hand-edited model card with an entry of the wrong JSON type gave TypeError / AttributeError /
    ValueError tracebacks (segment, info, the docks' model choosers)."""
    import inspect
    import shutil

    from napari_microseg.errors import InputError
    from napari_microseg.inference import postprocess
    from napari_microseg.io.models import POSTPROCESS_NUMBERS, read_model_config, update_model_config
    from napari_microseg.pretrained import pretrained_path

    model = tmp_path / "m.pt"
    shutil.copy(pretrained_path("nuclei_fluorescence_fast"), model)
    update_model_config(model, **entry)
    with pytest.raises(InputError, match=f"m.pt: model config entry {said}" if "'" in said[:1] else said):
        read_model_config(model)
    numbers = {name for name, p in inspect.signature(postprocess.three_class_to_labels).parameters.items()
               if isinstance(p.default, (int, float)) and not isinstance(p.default, bool)}
    assert numbers | {"max_size"} == set(POSTPROCESS_NUMBERS)  # the list follows the watershed's settings


def test_an_output_name_taken_by_a_folder_is_refused_before_any_work(tmp_path, capsys):
    """`track --overwrite` with a folder named track_summary.csv in --out moved the new tracks.csv and counts.csv
    in, then failed (naming its hidden staging folder): two runs' files mixed. `segment` likewise wrote new
    labels and objects.csv, then failed on a counts.csv folder. Refused before any work."""
    import tifffile

    from napari_microseg.cli import main
    from napari_microseg.simulate.nuclei import simulate_nuclei_timelapse

    sim = simulate_nuclei_timelapse(n_frames=3, shape=(64, 64), n_nuclei=5, seed=1)
    tifffile.imwrite(tmp_path / "labels.tif", sim.labels.astype(np.uint16))
    tifffile.imwrite(tmp_path / "im.tif", sim.fluorescence[0])
    (tmp_path / "t" / "track_summary.csv").mkdir(parents=True)
    (tmp_path / "t" / "tracks.csv").write_text("an earlier run's\n")
    assert main(["track", "--labels", str(tmp_path / "labels.tif"), "--out", str(tmp_path / "t"), "--overwrite"]) == 2
    assert "track_summary.csv is a folder" in capsys.readouterr().err
    assert (tmp_path / "t" / "tracks.csv").read_text() == "an earlier run's\n"
    (tmp_path / "s" / "counts.csv").mkdir(parents=True)
    assert main(["segment", "--model", "nuclei_fluorescence_fast", "--input", str(tmp_path / "im.tif"),
                 "--out", str(tmp_path / "s"), "--overwrite", "--quiet"]) == 2
    assert "counts.csv is a folder" in capsys.readouterr().err
    assert not (tmp_path / "s" / "objects.csv").exists() and not (tmp_path / "s" / "labels").exists()


def test_a_constant_learning_rate_can_be_asked_for(tmp_path):
    """The [N] study trained at a constant Adam lr (2e-4, patience 250); `microseg train` always reduced it
    on plateaus (x0.1 after 5 epochs: 250 epochs of patience spent at 1e-6). `--lr-schedule constant`."""
    import pandas as pd

    from napari_microseg.cli import main

    _image_label_folders(tmp_path, 2)
    assert main(["train", "--images", str(tmp_path / "images"), "--labels", str(tmp_path / "labels"), "--out",
                 str(tmp_path / "m.pt"), "--epochs", "3", "--patch", "32", "--patches-per-epoch", "4", "--batch-size",
                 "4", "--lr", "2e-4", "--lr-schedule", "constant", "--val-fraction", "0", "--threads", "1",
                 "--quiet"]) == 0
    history = pd.read_csv(tmp_path / "m.history.csv")
    assert len(history) == 3 and (history.lr == 2e-4).all()


def test_tracking_export_says_when_the_tracked_labels_were_edited_since(make_napari_viewer, wait_worker, tmp_path):
    """A nucleus deleted from the labels layer after Track: Export CSV wrote it in tracks.csv (and the old
    count in counts.csv) without a word. The export says the layer was edited since it was tracked."""
    from napari_microseg.simulate.nuclei import simulate_nuclei_timelapse
    from napari_microseg.widgets.tracking import TrackingWidget

    sim = simulate_nuclei_timelapse(n_frames=4, shape=(96, 96), n_nuclei=6, seed=5)
    viewer = make_napari_viewer(show=False)
    layer = viewer.add_labels(sim.labels.astype(np.uint16), name="nuclei")
    widget = TrackingWidget(viewer)
    widget.labels_layer.value = "nuclei"
    widget.export_dir.value = str(tmp_path)
    wait_worker(widget.track())
    widget.export_csv()
    assert "was edited since" not in widget.status.text()
    t, y, x = np.argwhere(layer.data > 0)[0]
    layer.fill((int(t), int(y), int(x)), 0)  # the user deletes one nucleus
    widget.export_csv()
    assert "'nuclei' was edited since it was tracked" in widget.status.text(), widget.status.text()
    wait_worker(widget.track())  # tracked again: the note goes
    widget.export_csv()
    assert "was edited since" not in widget.status.text()


def test_an_edited_result_layer_shows_no_measurements_of_the_objects_as_segmented(make_napari_viewer, wait_worker,
                                                                                  tmp_path):
    """After a nucleus was erased, the result layer's features still held its row and every object's old area
    (hover showed them) and the counts line the run's counts, without a word. The measurements go (the ids
    stay) and the counts line says they are the run's, until Export measures the corrected labels."""
    import pandas as pd

    viewer, widget = _segmented_discs(make_napari_viewer, wait_worker)
    widget.export_dir.value = str(tmp_path)
    layer = widget.result_layer
    assert "area" in layer.features.columns
    layer.fill((1, 25, 25), 0)
    assert "area" not in layer.features.columns and {"label", "t", "frame_label"} <= set(layer.features.columns)
    assert "before your edits" in widget.counts_label.value
    wait_worker(widget.export())
    objects = pd.read_csv(tmp_path / "objects.csv")
    assert "area" in layer.features.columns and len(layer.features) == len(objects)
    assert "before your edits" not in widget.counts_label.value
    layer.fill((2, 25, 25), 0)  # edited again after the export: outdated again
    assert "area" not in layer.features.columns


def test_corrected_labels_stay_chosen_and_exportable_after_another_run(make_napari_viewer, wait_worker, tmp_path):
    """A new run switched "corrected labels" from the layer the user had corrected to its new, uncorrected
    output (Add then took that); after a stopped run the corrected layer, selected, was "nothing to export"."""
    viewer, widget = _segmented_discs(make_napari_viewer, wait_worker)
    widget.export_dir.value = str(tmp_path)
    corrected = widget.result_layer
    corrected.fill((1, 25, 25), 0)
    wait_worker(widget.segment())
    assert widget.result_layer is not corrected
    assert widget.labels_for_training.value == corrected.name
    assert f"'{corrected.name}' stays the labels" in widget.status.text()
    worker = widget.segment()
    widget.stop()  # stopped before it made anything: no current result
    wait_worker(worker)
    assert widget.result is None
    viewer.layers.selection.active = corrected
    wait_worker(widget.export())
    assert "measured on your corrected labels in" in widget.status.text(), widget.status.text()


def test_python_api_takes_lists_and_refuses_what_it_silently_got_wrong():
    """Notebook calls: lists of frames gave "'list' object has no attribute 'shape'"; a probability map counted
    as objects; (Y, X, K) probabilities gave a wrong (X, K) class map; a table's frames beyond n_frames, a
    misspelt statistic or footprint, reversed bounds, max_size < min_size, connectivity 3 and a negative
    validation share were taken without a word."""
    from napari_microseg.autolabel.ccd import find_clusters
    from napari_microseg.autolabel.fluorescence import autolabel_fluorescence
    from napari_microseg.errors import InputError
    from napari_microseg.inference.postprocess import multiclass_to_classes
    from napari_microseg.inference.segment import segment
    from napari_microseg.measure.counts import count_objects, counts_from_objects, mean_object_area
    from napari_microseg.measure.tables import object_table
    from napari_microseg.simulate.nuclei import simulate_nuclei_image
    from napari_microseg.training.data import prepare_training_data, split_train_val

    image, labels = simulate_nuclei_image((64, 64), n_nuclei=5, seed=0)
    labels = labels.astype(np.int32)
    as_lists = [labels.tolist(), labels.tolist()]
    assert list(count_objects(as_lists)["count"]) == [len(np.unique(labels)) - 1] * 2
    assert len(object_table(as_lists)) == 2 * (len(np.unique(labels)) - 1)
    assert segment("nuclei_fluorescence_fast", [image, image]).labels.shape == (2, 64, 64)
    assert autolabel_fluorescence([image, image]).shape == (2, 64, 64)
    with pytest.raises(InputError, match="non-integer"):
        count_objects(labels * 0.4 + 0.1)  # a probability map
    probabilities = np.random.default_rng(0).random((64, 80, 4))
    with pytest.raises(InputError, match=r"look like \(Y, X, K\)"):
        multiclass_to_classes(probabilities)
    assert multiclass_to_classes(np.moveaxis(probabilities, -1, 0)).shape == (64, 80)
    with pytest.raises(InputError, match="beyond the 2 frame"):
        counts_from_objects(object_table(np.stack([labels] * 3)), n_frames=2)
    with pytest.raises(InputError, match="'median' or 'mean'"):
        mean_object_area(labels, "mode")
    with pytest.raises(InputError, match="footprint"):
        autolabel_fluorescence(image, otsu_footprint="circle")
    with pytest.raises(InputError, match="threshold bounds"):
        autolabel_fluorescence(image, threshold_bounds=(1, 0.05))
    with pytest.raises(InputError, match="max_size"):
        segment("nuclei_fluorescence_fast", image, min_size=50, max_size=10)
    with pytest.raises(InputError, match="connectivity"):
        find_clusters(np.zeros((16, 16), np.uint8), np.zeros((16, 16)), connectivity=3)
    data = prepare_training_data([image, image], [labels, labels])
    with pytest.raises(InputError, match="val_fraction"):
        split_train_val(data, val_fraction=-0.1)


def test_api_mismatches_are_named(tmp_path):
    """classify_images with 3 masks (or 1 name) for 4 images: IndexError / a pandas error; evaluate_dataset
    of a 3- and a 2-frame stack told the caller to score stacks frame by frame (as it does); an RGB image given
    to prepare_training_data was "96 images but 1 label images"."""
    from napari_microseg.classify import classify_images
    from napari_microseg.errors import InputError
    from napari_microseg.evaluation import evaluate_dataset
    from napari_microseg.simulate.nuclei import simulate_nuclei_image
    from napari_microseg.simulate.response import simulate_response_image
    from napari_microseg.training.data import prepare_training_data

    responses = [simulate_response_image(seed=s) for s in range(4)]
    images, masks = [r.image for r in responses], [r.integration_mask for r in responses]
    with pytest.raises(InputError, match="3 masks for 4 images"):
        classify_images("response_good_bad", images, masks=masks[:3])
    with pytest.raises(InputError, match="1 names for 4 images"):
        classify_images("response_good_bad", images, masks=masks, names=["a.tif"])
    image, labels = simulate_nuclei_image((96, 80), seed=0)
    with pytest.raises(InputError, match=r"movie: ground truth shape \(3, 96, 80\) does not match"):
        evaluate_dataset([("movie", np.stack([labels] * 3), np.stack([labels] * 2))])
    with pytest.raises(InputError, match="look like RGB"):
        prepare_training_data(np.stack([image] * 3, -1), labels)


def test_input_names_that_are_not_utf8_are_refused_before_any_work(tmp_path, capsys):
    """A Latin-1 file name in an input folder: `segment` wrote its labels, then listed it as skipped with a raw
    UnicodeEncodeError; `batch` processed every file, then exited 2 with no failures.csv (every rerun alike)."""
    import os

    import tifffile

    from napari_microseg.batch.runner import find_batch_inputs
    from napari_microseg.cli import main
    from napari_microseg.errors import InputError
    from napari_microseg.simulate.nuclei import simulate_nuclei_image

    image, _ = simulate_nuclei_image((64, 64), n_nuclei=4, seed=0)
    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in" / "ok.tif", image)
    tifffile.imwrite(tmp_path / "in" / os.fsdecode(b"caf\xe9.tif"), image)
    assert main(["segment", "--model", "nuclei_fluorescence_fast", "--input", str(tmp_path / "in"),
                 "--out", str(tmp_path / "seg"), "--quiet"]) == 2
    assert "not valid UTF-8" in capsys.readouterr().err
    assert not (tmp_path / "seg" / "labels").exists()
    with pytest.raises(InputError, match="not valid UTF-8"):
        find_batch_inputs(tmp_path / "in")


def test_an_output_of_a_long_legal_name_is_written(tmp_path):
    """A 250-character input name (legal: up to 255 bytes) could not be segmented: the hidden temporary file
    beside its labels, ".<name>.XXXXXXXX.tif", passed 255 bytes ("File name too long")."""
    import tifffile

    from napari_microseg.cli import main
    from napari_microseg.simulate.nuclei import simulate_nuclei_image

    image, _ = simulate_nuclei_image((64, 64), n_nuclei=4, seed=0)
    name = "M" * 246 + ".tif"
    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in" / name, image)
    assert main(["segment", "--model", "nuclei_fluorescence_fast", "--input", str(tmp_path / "in"),
                 "--out", str(tmp_path / "out"), "--quiet"]) == 0
    assert (tmp_path / "out" / "labels" / name).is_file()


def test_tracks_reader_names_a_damaged_table_and_reads_an_excel_save(tmp_path):
    """A ragged tracks.csv raised pandas' ParserError in napari; one saved by Excel as "CSV" (Windows-1252,
    a 'café' in a note) was "not ours": napari found no reader for it."""
    from napari_microseg._reader import get_reader
    from napari_microseg.errors import InputError

    ragged = tmp_path / "ragged_tracks.csv"
    ragged.write_text("track_id,t,y,x\n1,0,5\n1,1,5,6,7,8\n")
    with pytest.raises(InputError, match="ragged_tracks.csv is not a readable"):
        get_reader(str(ragged))(str(ragged))
    excel = tmp_path / "excel_tracks.csv"
    excel.write_text("track_id,t,y,x,note\n1,0,5,5,café\n1,1,6,6,ok\n", encoding="cp1252")
    reader = get_reader(str(excel))
    assert reader is not None
    layers = reader(str(excel))
    assert layers[0][2] == "tracks" and len(layers[0][0]) == 2


def test_small_command_line_blemishes(tmp_path, capsys):
    """`classify images --input f f ./f` classified one file three times; roc.csv's first threshold was
    "inf" (text to a spreadsheet); autolabel's NaN refusal named no file; its suggested train command was not
    quoted for the shell."""
    import shlex

    import pandas as pd
    import tifffile

    from napari_microseg.cli import main
    from napari_microseg.simulate.nuclei import simulate_nuclei_image

    assert main(["simulate", "response", "--out", str(tmp_path / "r"), "--n", "4"]) == 0
    first = sorted((tmp_path / "r" / "images").glob("*.tif"))[0]
    mask = tmp_path / "r" / "integration" / first.name
    assert mask.is_file()
    assert main(["classify", "images", "--model", "response_good_bad", "--input", str(first), str(first),
                 str(first.parent / "." / first.name), "--box", "10", "10", "49", "52", "--out", str(tmp_path / "c")]) in (0, 1)
    assert len(pd.read_csv(tmp_path / "c" / "flags.csv")) == 1
    assert main(["classify", "images", "--model", "response_good_bad", "--input", str(tmp_path / "r"),
                 "--out", str(tmp_path / "c2")]) == 0
    roc = (tmp_path / "c2" / "roc.csv").read_text()
    assert "inf" not in roc and pd.read_csv(tmp_path / "c2" / "roc.csv")["threshold"].iloc[1:].notna().all()

    image, _ = simulate_nuclei_image((64, 64), n_nuclei=4, seed=0)
    bad = image.astype(np.float32)
    bad[0, 0] = np.nan
    tifffile.imwrite(tmp_path / "nan stain.tif", bad)
    capsys.readouterr()
    assert main(["autolabel", "fluorescence", "--stain", str(tmp_path / "nan stain.tif"), "--out",
                 str(tmp_path / "a")]) == 2
    assert "nan stain.tif: image holds NaN" in capsys.readouterr().err
    stain, _ = simulate_nuclei_image((256, 256), n_nuclei=25, seed=1)
    tifffile.imwrite(tmp_path / "stain.tif", stain)
    assert main(["autolabel", "fluorescence", "--stain", str(tmp_path / "stain.tif"), "--out",
                 str(tmp_path / "my run"), "--tile", "128", "--qc"]) == 0
    said = capsys.readouterr().out
    assert shlex.quote(str(tmp_path / "my run" / "tiles" / "images")) in said, said


def test_a_size_is_never_stored_as_a_models_watershed_setting(tmp_path):
    """`tune_postprocess(grid={"min_size": ...})` then `store_postprocess` wrote min_size into the model: every
    later segment with it failed ("unknown post-processing option(s) min_size"). Refused when tuning; a model
    that holds one (an earlier version's) segments again."""
    import shutil

    from napari_microseg.errors import InputError
    from napari_microseg.inference.segment import segment
    from napari_microseg.inference.tune import store_postprocess, tune_postprocess
    from napari_microseg.io.models import update_model_config
    from napari_microseg.pretrained import pretrained_path
    from napari_microseg.progress import drain
    from napari_microseg.simulate.nuclei import simulate_nuclei_image

    image, labels = simulate_nuclei_image((64, 64), n_nuclei=5, seed=0)
    with pytest.raises(InputError, match="min_size: not a watershed setting"):
        drain(tune_postprocess("nuclei_fluorescence_fast", [image], [labels], grid={"min_size": (8, 20)}))
    model = tmp_path / "m.pt"
    shutil.copy(pretrained_path("nuclei_fluorescence_fast"), model)
    with pytest.raises(InputError, match="min_size"):
        store_postprocess(model, {"threshold": 0.5, "min_size": 20})
    update_model_config(model, postprocess={"threshold": 0.5, "seed_dynamics": 0.2, "min_size": 20})
    assert segment(str(model), image).labels.max() > 0


def test_segment_holds_a_movies_labels_in_uint16_until_a_frame_needs_more(monkeypatch):
    """`segment` kept a uint32 buffer of the whole movie plus a uint16 copy (6 bytes a pixel beside the movie:
    33 GB for 1000 frames of 2048^2). The buffer is uint16, widened once when a frame holds more than 65,535
    objects, earlier frames kept."""
    import napari_microseg.inference.postprocess as postprocess
    from napari_microseg.inference.segment import segment
    from napari_microseg.simulate.nuclei import simulate_nuclei_timelapse

    sim = simulate_nuclei_timelapse(n_frames=3, shape=(96, 96), n_nuclei=6, seed=1)
    plain = segment("nuclei_fluorescence_fast", sim.fluorescence).labels
    assert plain.dtype == np.uint16
    real, calls = postprocess.probabilities_to_labels, []

    def many_ids_in_frame_1(*args, **kwargs):
        lab = real(*args, **kwargs)
        calls.append(1)
        if len(calls) == 2:
            lab = lab.astype(np.uint32)
            lab[lab > 0] += 70_000
        return lab
    monkeypatch.setattr(postprocess, "probabilities_to_labels", many_ids_in_frame_1)
    wide = segment("nuclei_fluorescence_fast", sim.fluorescence).labels
    assert wide.dtype == np.uint32 and int(wide[1].max()) > 70_000
    np.testing.assert_array_equal(wide[0], plain[0])
    np.testing.assert_array_equal(wide[2], plain[2])


def test_autolabel_ccd_refuses_a_z_stack_without_saying_it_labels_its_planes(tmp_path, capsys):
    """`autolabel ccd` on a Z stack said "its planes are labelled as frames", then refused it (2-D frames only)."""
    import tifffile

    from napari_microseg.cli import main

    tifffile.imwrite(tmp_path / "z.tif", np.full((3, 32, 32), 8800, np.uint16), imagej=True, metadata={"axes": "ZYX"})
    assert main(["autolabel", "ccd", "--input", str(tmp_path / "z.tif"), "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "expected a 2-D frame" in err and "labelled as frames" not in err, err


def test_an_output_under_a_file_names_the_file_in_the_way(tmp_path):
    """`export --out afile/x.pt` (afile a file) said "error: File exists: afile": the file in the way is named."""
    from napari_microseg.errors import InputError
    from napari_microseg.io.atomic import atomic_write_text

    (tmp_path / "afile").write_text("x")
    with pytest.raises(InputError, match=r"afile is a file, not a folder"):
        atomic_write_text(tmp_path / "afile" / "sub" / "m.csv", "a,b\n")


def test_a_zipped_zarr_store_is_named_as_such(tmp_path):
    """A zipped store named .zarr gave "No group found in store StorePath(LocalStore ...)"."""
    import zipfile

    import zarr

    from napari_microseg.errors import InputError
    from napari_microseg.io.images import read_image

    zarr.open_array(str(tmp_path / "a.zarr"), mode="w", shape=(16, 16), dtype="uint8")[:] = 1
    with zipfile.ZipFile(tmp_path / "z.zarr", "w") as archive:
        for file in (tmp_path / "a.zarr").rglob("*"):
            archive.write(file, file.relative_to(tmp_path / "a.zarr"))
    with pytest.raises(InputError, match="z.zarr is a zipped Zarr store: unzip it"):
        read_image(tmp_path / "z.zarr")


def test_loading_a_model_draws_nothing_from_torchs_global_generator():
    """Loading a model built its network first, whose random initialisation drew from torch's global
    generator: a Segmentation run during a training in another dock changed that run's dropout, so one seed
    gave two different models."""
    import torch

    from napari_microseg.io.models import load_model
    from napari_microseg.pretrained import pretrained_path

    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    loaded = load_model(pretrained_path("nuclei_fluorescence_fast"))
    assert torch.equal(torch.rand(3), expected)
    assert all(p.dtype == torch.float32 and not p.is_meta for p in loaded.model.parameters())


def test_a_labels_layer_the_user_picked_stays_the_training_sets_labels(make_napari_viewer, wait_worker):
    """Auto-labels the user painted and picked as "corrected labels" were swapped for the new run's raw output
    by Segment (Add then took that); a labels layer the picker merely showed still gives way to the result."""
    from test_hunt32_fixes import _disc_stack

    from napari_microseg.widgets.segmentation import SegmentationWidget

    viewer = make_napari_viewer(show=False)
    viewer.add_image(_disc_stack(), name="movie")
    viewer.add_labels(np.zeros((4, 96, 96), np.uint16), name="shown only")
    mine = viewer.add_labels(np.zeros((4, 96, 96), np.uint16), name="my labels")
    widget = SegmentationWidget(viewer)
    widget.model_choice.value = "nuclei_fluorescence_fast"
    widget.scope.value = "whole stack"
    wait_worker(widget.segment())
    assert widget.labels_for_training.value == widget.result_layer.name  # the picker had only shown a layer
    widget.labels_for_training.value = "my labels"  # the user picks their own layer
    mine.data[1, 20:30, 20:30] = 7
    wait_worker(widget.segment())
    assert widget.labels_for_training.value == "my labels"
    viewer.dims.set_current_step(0, 1)
    widget.add_to_training_set()
    assert "with the labels of 'my labels'" in widget.status.text()


def test_learning_rate_and_crop_defaults_follow_the_choices_made(tmp_path, capsys):
    """`classify train profiles --optimizer adam` kept Adadelta's --lr 1 (val loss 2e5, chance accuracy,
    "completed"); `train --optimizer adadelta` kept Adam's 0.001; `classify train objects --depth 6` cut 28 px
    crops where its help and [T] say 32; `train` defaulted to binary without a word where its help says
    three_class for nuclei."""
    from napari_microseg.cli import main
    from napari_microseg.io.models import read_model_config

    assert main(["classify", "train", "profiles", "--simulated", "40", "--epochs", "1", "--optimizer", "adam",
                 "--out", str(tmp_path / "p.pt")]) == 0
    assert read_model_config(tmp_path / "p.pt")["training"]["config"]["lr"] == pytest.approx(1e-3)
    assert main(["classify", "train", "objects", "--simulated", "1", "--epochs", "1", "--depth", "6",
                 "--out", str(tmp_path / "o.pt")]) == 0
    assert read_model_config(tmp_path / "o.pt")["crop"]["size"] == [32, 32]
    _image_label_folders(tmp_path, 2)
    capsys.readouterr()
    assert main(["train", "--images", str(tmp_path / "images"), "--labels", str(tmp_path / "labels"), "--out",
                 str(tmp_path / "m.pt"), "--epochs", "1", "--patch", "32", "--patches-per-epoch", "4", "--optimizer",
                 "adadelta", "--val-fraction", "0", "--quiet"]) == 0
    assert "output mode binary (the default)" in capsys.readouterr().err
    assert read_model_config(tmp_path / "m.pt")["training"]["config"]["lr"] == 1.0


def test_autolabel_ccd_says_why_clusters_csv_holds_fewer_clusters_than_counts(tmp_path, capsys):
    """`autolabel ccd --cluster-max-size 5` printed "73 clusters" where counts.csv said count_cluster 242."""
    import pandas as pd

    from napari_microseg.cli import main

    assert main(["simulate", "ccd", "--out", str(tmp_path / "sim"), "--n", "1", "--seed", "2"]) == 0
    assert main(["autolabel", "ccd", "--input", str(tmp_path / "sim" / "frames" / "ccd_00000.fits"), "--out",
                 str(tmp_path / "a"), "--cluster-max-size", "1"]) == 0
    said = capsys.readouterr().out
    pieces = int(pd.read_csv(tmp_path / "a" / "counts.csv")["count_cluster"].iloc[0])
    kept = len(pd.read_csv(tmp_path / "a" / "clusters.csv"))
    assert kept < pieces and f"{pieces - kept} of the {pieces} cluster pieces" in said, said


@pytest.mark.parametrize("command, said", [
    (["batch", "autolabel", "--otsu-window", "-3"], "--otsu-window must be >= 0"),
    (["batch", "autolabel", "--diameter-range", "30", "5"], "--diameter-range must satisfy"),
    (["batch", "track", "--max-search-radius", "-4"], "--max-search-radius must be > 0"),
    (["segment", "--model", "nuclei_fluorescence_fast", "--zarr-above", "-5"], "--zarr-above must be"),
])
def test_batch_and_segment_refuse_out_of_range_settings_before_any_work(tmp_path, capsys, command, said):
    """`batch autolabel --otsu-window -3` ran (as 3) and recorded -3; a reversed --diameter-range and a negative
    --max-search-radius failed every item (exit 1, failures.csv); `segment --zarr-above -5` wrote Zarr."""
    import tifffile

    from napari_microseg.cli import main

    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in" / "a.tif", np.zeros((3, 32, 32), np.uint16))
    assert main([*command, "--input", str(tmp_path / "in"), "--out", str(tmp_path / "out")]) == 2
    assert said in capsys.readouterr().err
    assert not (tmp_path / "out" / "failures.csv").exists()


def test_classify_train_resume_goes_on_with_the_runs_own_settings(tmp_path):
    """`classify train --resume` without --batch-size / --lr again ran on with the parser's defaults (64, 3e-4)
    while the optimiser kept the old lr, recorded those, and its epochs 3-4 differed from an uninterrupted run."""
    import pandas as pd

    from napari_microseg.cli import main
    from napari_microseg.io.models import read_model_config

    common = ["classify", "train", "images", "--simulated", "40", "--threads", "1"]
    settings = ["--batch-size", "16", "--lr", "0.003", "--seed", "0"]
    assert main([*common, *settings, "--epochs", "4", "--out", str(tmp_path / "full.pt")]) == 0
    assert main([*common, *settings, "--epochs", "2", "--out", str(tmp_path / "r.pt")]) == 0
    assert main([*common, "--epochs", "4", "--resume", str(tmp_path / "r.pt"), "--out", str(tmp_path / "r.pt")]) == 0
    full, resumed = (pd.read_csv(tmp_path / f"{name}.history.csv") for name in ("full", "r"))
    np.testing.assert_allclose(resumed[["train_loss", "val_loss"]], full[["train_loss", "val_loss"]], rtol=1e-5)
    config = read_model_config(tmp_path / "r.pt")["training"]["config"]
    assert config["batch_size"] == 16 and config["lr"] == pytest.approx(0.003)


def test_track_config_of_an_earlier_run_repeats_its_units(tmp_path, capsys):
    """`track --config <earlier track_config.json>` dropped the pixel size and frame interval it recorded: the
    repeated run's track summary lost its micrometre and minute columns."""
    import pandas as pd
    import tifffile

    from napari_microseg.cli import main
    from napari_microseg.simulate.nuclei import simulate_nuclei_timelapse

    sim = simulate_nuclei_timelapse(n_frames=4, shape=(64, 64), n_nuclei=5, seed=1)
    tifffile.imwrite(tmp_path / "labels.tif", sim.labels.astype(np.uint16))
    assert main(["track", "--labels", str(tmp_path / "labels.tif"), "--out", str(tmp_path / "t1"),
                 "--pixel-size", "0.5", "--frame-interval", "3"]) == 0
    assert main(["track", "--labels", str(tmp_path / "labels.tif"), "--out", str(tmp_path / "t2"),
                 "--config", str(tmp_path / "t1" / "track_config.json")]) == 0
    assert "calibration from the config file: 0.5 um per pixel, 3.0 min per frame" in capsys.readouterr().err
    first, again = (pd.read_csv(tmp_path / t / "track_summary.csv") for t in ("t1", "t2"))
    pd.testing.assert_frame_equal(first, again)


def test_the_correct_and_retrain_loop_adds_the_layer_being_corrected(make_napari_viewer, wait_worker):
    """Correct run 1, Add, segment again, correct run 2, Add: the picker stayed on run 1's layer (edited once)
    and Add took its frame, the old model's output with the nucleus the user had just deleted in run 2."""
    viewer, widget = _segmented_discs(make_napari_viewer, wait_worker)
    first = widget.result_layer
    viewer.dims.set_current_step(0, 0)
    first.fill((0, 25, 25), 0)
    assert widget.add_to_training_set() == 1
    wait_worker(widget.segment())  # again (say, with the fine-tuned model)
    second = widget.result_layer
    assert widget.labels_for_training.value == second.name  # run 1's corrections are in the set already
    viewer.dims.set_current_step(0, 1)
    second.fill((1, 70, 71), 0)
    assert widget.add_to_training_set() == 2
    added = widget.corrections[(viewer.layers["movie"].unique_id, 1)][1]
    assert added[70, 71] == 0 and f"with the labels of '{second.name}'" in widget.status.text()


def test_review_fixes_sparse_first_batch_integer_class_names_and_box_counts(tmp_path):
    """(Review of this session's changes.) A fresh sparse-painting run whose first batch held no annotated pixel
    (loss 0) was stopped as "diverged" at a fresh network's loss; a classifier trained through the API with
    integer class names could not be loaded (its own record refused); 4 boxes for 3 images passed."""
    from napari_microseg.classify import classify_images, train_classifier
    from napari_microseg.errors import InputError
    from napari_microseg.io.models import load_model
    from napari_microseg.progress import drain
    from napari_microseg.simulate.nuclei import simulate_nuclei_image
    from napari_microseg.simulate.response import simulate_response_image
    from napari_microseg.training.trainer import train

    images, labels = [], []
    for i in range(4):
        image, lab = simulate_nuclei_image(shape=(128, 128), seed=i)
        lab = np.asarray(lab).astype(np.int32)
        lab[:, 48:] = -1
        lab[48:, :] = -1  # only the top-left corner annotated
        images.append(np.asarray(image))
        labels.append(lab)
    cfg = dict(output_mode="three_class", patch_size=64, patches_per_epoch=8, batch_size=1, epochs=1, lr=1e-3,
               device="cpu", num_threads=1, amp=False, val_fraction=0.25, seed=11)
    assert drain(train(cfg, (images, labels), out_path=tmp_path / "sparse.pt")).stop_reason == "completed"

    rng = np.random.default_rng(0)
    x = rng.random((40, 1, 39, 42)).astype(np.float32)
    y = np.r_[np.zeros(20, int), np.ones(20, int)]
    x[y == 1] += 0.5
    drain(train_classifier({"task": "images", "epochs": 1, "device": "cpu", "class_names": [0, 1],
                            "val_fraction": 0.25}, {"x": x, "y": y}, out_path=tmp_path / "int.pt"))
    assert load_model(tmp_path / "int.pt").config["class_names"] == [0, 1]

    responses = [simulate_response_image(seed=s) for s in range(3)]
    with pytest.raises(InputError, match="4 boxes for 3 images"):
        classify_images("response_good_bad", [r.image for r in responses], boxes=[(10, 10, 49, 52)] * 4)


def test_moving_to_another_frame_during_apply_is_no_change_of_settings(make_napari_viewer, wait_worker, qtbot):
    """Auto-label's Apply with the frame moved meanwhile (the slider, or the Tracking dock jumping to a track)
    said its labels "use the settings before your change", though no setting had changed."""
    from napari_microseg.simulate.nuclei import simulate_nuclei_timelapse
    from napari_microseg.widgets.autolabel import AutolabelWidget

    sim = simulate_nuclei_timelapse(n_frames=4, shape=(128, 128), n_nuclei=10, seed=6)
    viewer = make_napari_viewer(show=False)
    viewer.add_image(sim.fluorescence, name="fl")
    widget = AutolabelWidget(viewer)
    widget.stain_layer.value = "fl"
    worker = widget.apply()
    viewer.dims.set_current_step(0, 3)
    wait_worker(worker)
    qtbot.waitUntil(lambda: "preview:" in widget.status.text(), timeout=60000)  # the frame's preview, after
    assert "settings before your change" not in widget.status.text(), widget.status.text()


def test_a_docks_run_does_not_queue_behind_other_docks_runs(make_napari_viewer, wait_worker, qtbot):
    """Qt's global thread pool holds as many threads as cores: a Track of under a second, started while two
    long runs went (a training, a fine-tune), waited silently (its dock busy) until one of them ended."""
    import threading
    import time

    from qtpy.QtCore import QThreadPool

    from napari_microseg.simulate.nuclei import simulate_nuclei_timelapse
    from napari_microseg.widgets.segmentation import SegmentationWidget
    from napari_microseg.widgets.tracking import TrackingWidget

    pool = QThreadPool.globalInstance()
    before = pool.maxThreadCount()
    sim = simulate_nuclei_timelapse(n_frames=3, shape=(64, 64), n_nuclei=5, seed=1)
    viewer = make_napari_viewer(show=False)
    viewer.add_labels(sim.labels.astype(np.uint16), name="nuclei")
    long_dock, tracking = SegmentationWidget(viewer), TrackingWidget(viewer)
    release = threading.Event()

    def long_run():
        while not release.is_set():
            time.sleep(0.05)
            yield None
        return None
    try:
        pool.setMaxThreadCount(1)  # every thread taken by the long run
        long_worker = long_dock.start(long_run, lambda _: None, label="a long run")
        qtbot.waitUntil(lambda: pool.activeThreadCount() == 1, timeout=10000)
        tracking.labels_layer.value = "nuclei"
        tracking.track()
        qtbot.waitUntil(lambda: tracking.result is not None, timeout=30000)  # while the long run still goes
        assert not release.is_set() and long_worker.is_running
    finally:
        release.set()
        wait_worker(long_worker)
        pool.setMaxThreadCount(before)


def test_run_records_pin_the_model_by_digest_and_the_package_version(tmp_path):
    """segment_run.json / classify_run.json named the model by path only: after a fine-tune in place (train
    --init-model X.pt --out X.pt --overwrite) the records of two different models read alike."""
    import json

    import tifffile

    from napari_microseg import __version__
    from napari_microseg.batch.manifest import sha256_file
    from napari_microseg.cli import main
    from napari_microseg.pretrained import pretrained_path
    from napari_microseg.simulate.nuclei import simulate_nuclei_image

    image, _ = simulate_nuclei_image((64, 64), n_nuclei=4, seed=0)
    tifffile.imwrite(tmp_path / "im.tif", image)
    assert main(["segment", "--model", "nuclei_fluorescence_fast", "--input", str(tmp_path / "im.tif"),
                 "--out", str(tmp_path / "s"), "--quiet"]) == 0
    record = json.loads((tmp_path / "s" / "segment_run.json").read_text())
    assert record["model_sha256"] == sha256_file(pretrained_path("nuclei_fluorescence_fast"))
    assert record["microseg_version"] == __version__


def _running_until(release):
    """A dock run's generator factory: a run that goes on (yielding) until ``release`` is set."""
    import time

    def long_run():
        while not release.is_set():
            time.sleep(0.05)
            yield None
    return long_run


def test_a_layer_closed_while_a_run_goes_is_freed(make_napari_viewer, wait_worker, qtbot, monkeypatch):
    """Runs freeze the garbage collector's objects (no 0.2 s pauses of the window): a 400 MB movie closed during
    an hour-long training stayed in memory until every run ended (layers sit in reference cycles). (Session 34:
    only layers of COLLECT_CLOSED_BYTES or more are freed during a run; the test's small layer counts as big.)"""
    import gc
    import threading
    import weakref

    import napari_microseg.widgets._base as base
    from napari_microseg.widgets.segmentation import SegmentationWidget

    monkeypatch.setattr(base, "COLLECT_CLOSED_BYTES", 1)

    class Marker:
        """Held by the layer only; its weak reference dies with the layer."""

    viewer = make_napari_viewer(show=False)
    dock = SegmentationWidget(viewer)
    marker = Marker()
    viewer.add_image(np.zeros((32, 32), np.float32), name="movie", metadata={"marker": marker})
    gone = weakref.ref(marker)
    del marker
    release = threading.Event()
    worker = dock.start(_running_until(release), lambda _: None, label="a long run")
    try:
        qtbot.waitUntil(lambda: worker.is_running, timeout=10000)
        gc.collect()
        viewer.layers.remove("movie")
        qtbot.waitUntil(lambda: gone() is None, timeout=5000)  # freed while the run still goes
        assert not release.is_set()
    finally:
        release.set()
        wait_worker(worker)
