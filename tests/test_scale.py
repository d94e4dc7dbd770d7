"""Nucleus-diameter rescaling: parsing, diameters, factors, the tile wrapper, segment_image and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_microseg.errors import InputError
from napari_microseg.evaluation.metrics import compute_overlaps, match_instances
from napari_microseg.inference import scale
from napari_microseg.inference.segment import segment
from napari_microseg.io.models import load_model
from napari_microseg.pretrained import pretrained_path
from napari_microseg.simulate.nuclei import simulate_nuclei_image


def disc_labels(shape, centres, radius):
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    lab = np.zeros(shape, np.int32)
    for i, (y, x) in enumerate(centres, start=1):
        lab[(yy - y) ** 2 + (xx - x) ** 2 <= radius ** 2] = i
    return lab


@pytest.mark.parametrize("value, expected", [(None, None), ("", None), ("none", None), (0, None), ("0", None),
                                             ("auto", "auto"), (" AUTO ", "auto"), ("12.5", 12.5), (30, 30.0)])
def test_parse_diameter_accepts(value, expected):
    assert scale.parse_diameter(value) == expected


@pytest.mark.parametrize("value", ["big", -3, float("nan"), float("inf"), True])
def test_parse_diameter_refuses_with_a_reason(value):
    with pytest.raises(InputError, match="diameter"):
        scale.parse_diameter(value)


def test_foreground_diameter_of_discs_leaves_out_cut_objects():
    centres = [(30, 30), (30, 80), (80, 30), (80, 80), (55, 55)]
    lab = disc_labels((110, 110), centres, 8)
    assert scale.foreground_diameter(lab > 0) == pytest.approx(17.0, abs=1.0)
    big = disc_labels((110, 110), [(0, 0), (0, 109), (109, 0), (109, 109), (0, 55), (109, 55)], 25)  # six cut, larger
    assert scale.foreground_diameter((big > 0) | (lab > 0)) == pytest.approx(17.0, abs=1.0)  # the cut ones are left out
    assert scale.foreground_diameter(big > 0) > 20  # ... unless nothing else remains (cut: their inscribed width)


def test_factor_for_diameter_inside_range_outside_and_limits():
    spec = {"diameter": 16.0, "range": (10.0, 45.0)}
    assert scale.factor_for_diameter(30.0, spec) == 1.0
    assert scale.factor_for_diameter(90.0, spec) == pytest.approx(22.5 / 90)  # mirrored into the range: 45^2 / 90
    assert scale.factor_for_diameter(8.0, spec) == pytest.approx(12.5 / 8)  # 10^2 / 8
    assert scale.factor_for_diameter(150.0, spec) == pytest.approx(16.0 / 150)  # far outside: the typical width
    assert scale.factor_for_diameter(45.2, spec) == pytest.approx(1.0, abs=0.01)  # continuous at the ends
    assert scale.factor_for_diameter(9.9, spec) == pytest.approx(1.0, abs=0.021)
    assert scale.factor_for_diameter(1.0, spec) == scale.MAX_FACTOR
    assert scale.factor_for_diameter(1000.0, spec) == scale.MIN_FACTOR  # 16 / 1000 < 0.1
    assert scale.factor_for_diameter(float("nan"), spec) == 1.0
    assert scale.native_overlap(0.125, 0.5) == 0.125 and scale.native_overlap(32, 0.5) == 64


def test_rescaled_predict_fn_sees_resized_tiles_and_returns_tile_shape():
    seen = []

    def fn(batch):
        seen.append(batch.shape)
        return np.concatenate([batch, 1 - batch], axis=1)

    yy, xx = np.mgrid[:64, :96]
    smooth = (0.5 + 0.4 * np.sin(yy / 9.0) * np.cos(xx / 11.0)).astype(np.float32)[None, None]
    batch = np.repeat(smooth, 2, axis=0)
    for factor, expected in ((2.0, (128, 192)), (0.5, (32, 48))):
        out = scale.rescaled_predict_fn(fn, factor)(batch)
        assert seen[-1] == (2, 1) + expected
        assert out.shape == (2, 2, 64, 96)
        np.testing.assert_allclose(out[:, 0, 4:-4, 4:-4], batch[:, 0, 4:-4, 4:-4], atol=0.03)
    assert scale.rescaled_predict_fn(fn, 1.0) is fn
    assert scale.native_tile(256, 0.25) == 1024 and scale.native_tile(256, 4.0) == 64 and scale.native_tile(128, 4.0) == 32


def test_model_object_size_is_checked():
    loaded = load_model(pretrained_path("nuclei_fluorescence"))
    spec = scale.object_size_spec(loaded)
    lo, hi = spec["range"]
    assert lo <= spec["diameter"] <= hi
    loaded.config["object_size"] = {"diameter": 50.0, "range": [10.0, 20.0]}
    with pytest.raises(InputError, match="inconsistent"):
        scale.object_size_spec(loaded)


def matched_f1(gt, pred):
    ov = compute_overlaps(gt, pred)
    tp = len(match_instances(ov, 0.5)[0])
    return 2 * tp / (ov.n_gt + ov.n_pred)


@pytest.fixture(scope="module")
def big_nuclei(shared_data):
    """A real DSB2018 crop (training split) zoomed x2: 512 x 640 px, nuclei about 75 px across (model range ~10-42 px)."""
    import tifffile
    from skimage.transform import resize

    path = next((shared_data / "dsb2018" / "images").glob("5d21acedb3*.tif"))
    image = tifffile.imread(path)[:256, :320].astype(np.float32)
    gt = tifffile.imread(shared_data / "dsb2018" / "labels" / path.name)[:256, :320]
    zoomed = resize(image, (512, 640), order=1, preserve_range=True, anti_aliasing=False).astype(np.float32)
    return zoomed, resize(gt, (512, 640), order=0, preserve_range=True, anti_aliasing=False).astype(np.int32)


def test_auto_diameter_recovers_nuclei_larger_than_trained(big_nuclei):
    image, gt = big_nuclei
    loaded = load_model(pretrained_path("nuclei_fluorescence"))
    plain = segment(loaded, image, measure=False)
    auto = segment(loaded, image, measure=False, diameter="auto")
    true_diameter = scale.foreground_diameter(gt > 0)
    assert plain.settings["scale_factor"] == 1.0 and plain.settings["diameter"] is None
    assert auto.settings["diameter"] == pytest.approx(true_diameter, rel=0.25)
    assert auto.settings["scale_factor"] < 0.7
    assert np.asarray(auto.labels).shape == gt.shape
    f1_plain, f1_auto = matched_f1(gt, np.asarray(plain.labels)), matched_f1(gt, np.asarray(auto.labels))
    assert f1_plain < 0.4 and f1_auto > 0.7, (f1_plain, f1_auto)  # measured: 0.16 and 0.83
    given = segment(loaded, image, measure=False, diameter=true_diameter)
    assert given.settings["scale_factor"] == pytest.approx(scale.factor_for_diameter(true_diameter, scale.object_size_spec(loaded)))
    assert matched_f1(gt, np.asarray(given.labels)) > 0.7


def test_diameter_inside_the_trained_range_changes_nothing():
    image, gt = simulate_nuclei_image(shape=(256, 256), n_nuclei=25, seed=4, diameter_range=(18, 24))
    loaded = load_model(pretrained_path("nuclei_fluorescence"))
    plain = segment(loaded, image, measure=False)
    given = segment(loaded, image, measure=False, diameter=21.0)
    assert given.settings["scale_factor"] == 1.0
    np.testing.assert_array_equal(np.asarray(given.labels), np.asarray(plain.labels))


def test_diameter_refused_for_models_without_an_object_size():
    loaded = load_model(pretrained_path("nuclei_fluorescence"))
    loaded.config.pop("object_size")
    image, _ = simulate_nuclei_image(shape=(64, 64), n_nuclei=3, seed=1)
    with pytest.raises(InputError, match="nucleus size"):
        segment(loaded, image, diameter=30)
    assert segment(loaded, image, measure=False).settings["scale_factor"] == 1.0


def test_cli_diameter_is_used_and_recorded(tmp_path, big_nuclei, capsys):
    import tifffile

    from napari_microseg.cli import main

    image, _ = big_nuclei
    tifffile.imwrite(tmp_path / "big.tif", image)
    rc = main(["segment", "--model", str(pretrained_path("nuclei_fluorescence")), "--input", str(tmp_path / "big.tif"),
               "--out", str(tmp_path / "out"), "--diameter", "auto", "--quiet"])
    assert rc == 0
    assert "tiles resized" in capsys.readouterr().out
    run = json.loads((tmp_path / "out" / "segment_run.json").read_text())
    assert run["scale_factor"] < 0.7 and run["images"][0]["diameter"] > 50 and run["diameter"] == "auto"
    rc = main(["segment", "--model", str(pretrained_path("nuclei_fluorescence")), "--input", str(tmp_path / "big.tif"),
               "--out", str(tmp_path / "out2"), "--diameter", "huge", "--quiet"])
    assert rc != 0
    assert "diameter" in capsys.readouterr().err


def test_training_records_the_object_size_of_its_data(tiny_nuclei_model):
    size = load_model(tiny_nuclei_model).config["object_size"]
    lo, hi = size["range"]
    assert 5 < lo <= size["diameter"] <= hi < 60  # simulated nuclei, DSB-like sizes
    targets = [np.zeros((32, 32), np.int64), -np.ones((32, 32), np.int64)]  # nothing to measure
    assert scale.training_object_size(targets) is None
    discs = [disc_labels((120, 120), [(30, 30), (30, 90), (90, 30), (90, 90)], r) > 0 for r in (5, 8, 11)]
    measured = scale.training_object_size(discs)
    assert measured["diameter"] == pytest.approx(17.0, abs=1.0)
    assert measured["range"][0] < 14 and measured["range"][1] > 20


def test_foreground_diameter_measures_touching_and_cut_nuclei_whole():
    lab = disc_labels((120, 120), [(40, 40), (40, 59), (85, 85)], 10)  # two touching discs and one alone
    assert scale.foreground_diameter(lab > 0) == pytest.approx(21.0, abs=1.5)
    specks = np.zeros_like(lab)
    specks[5:7, 100:102] = specks[110:112, 10:12] = specks[60:62, 110:112] = 1  # more specks than nuclei
    assert scale.foreground_diameter((lab > 0) | (specks > 0)) == pytest.approx(21.0, abs=1.5)  # area-weighted
    assert np.isnan(scale.foreground_diameter(np.zeros((10, 10), bool)))


def test_auto_diameter_on_an_empty_image_segments_as_trained():
    loaded = load_model(pretrained_path("nuclei_fluorescence"))
    result = segment(loaded, np.full((96, 96), 7.0, np.float32), diameter="auto")
    assert result.settings["diameter"] is None and result.settings["scale_factor"] == 1.0
    assert json.loads(json.dumps(result.settings, default=str, allow_nan=False))["diameter"] is None  # strict JSON


def test_batch_segment_passes_the_diameter(tmp_path, big_nuclei):
    import tifffile

    from napari_microseg.batch import run_batch_sync

    image, _ = big_nuclei
    tifffile.imwrite(tmp_path / "big.tif", image)
    model = pretrained_path("nuclei_fluorescence")
    summary = run_batch_sync("segment", tmp_path / "big.tif", tmp_path / "out", model=str(model), workers=0, diameter=75.0)
    assert summary.processed == 1
    written = tifffile.imread(next((tmp_path / "out" / "labels").glob("big*")))
    expected = segment(load_model(model), image, keep_probabilities=False, diameter=75.0)
    assert expected.settings["scale_factor"] < 0.7
    np.testing.assert_array_equal(written, np.asarray(expected.labels))


def test_stack_uses_one_diameter_and_pixel_overlap_follows_the_tiles(big_nuclei):
    image, _ = big_nuclei
    stack = np.stack([image, image[:, ::-1]])
    loaded = load_model(pretrained_path("nuclei_fluorescence"))
    result = segment(loaded, stack, measure=False, diameter=80.0, overlap=32, tile=256)
    factor = result.settings["scale_factor"]
    assert factor == pytest.approx(scale.factor_for_diameter(80.0, scale.object_size_spec(loaded)))
    assert result.settings["tile"] == 256  # what the network sees; the image tiles are larger, at most the image
    assert result.settings["image_tile"] == min(scale.native_tile(256, factor), 640)
    assert result.settings["overlap"] == 32  # what the network sees; the image tiles overlap 32 / factor px
    assert np.asarray(result.labels).shape == stack.shape
    for t in range(2):
        single = segment(loaded, stack[t], measure=False, diameter=80.0, overlap=32, tile=256)
        np.testing.assert_array_equal(np.asarray(result.labels)[t], np.asarray(single.labels))
    tta = segment(loaded, image, measure=False, diameter=80.0, test_time_augmentation=True)
    assert matched_f1(np.asarray(result.labels)[0], np.asarray(tta.labels)) > 0.8  # flips at network size agree


def test_malformed_object_size_is_a_clear_error_only_when_a_diameter_is_asked():
    loaded = load_model(pretrained_path("nuclei_fluorescence"))
    loaded.config["object_size"] = {"range": [10, 40]}
    image, _ = simulate_nuclei_image(shape=(64, 64), n_nuclei=3, seed=1)
    assert segment(loaded, image, measure=False).settings["scale_factor"] == 1.0  # not needed, not read
    with pytest.raises(InputError, match="object size"):
        segment(loaded, image, diameter=30)


def test_fine_tune_joins_the_base_models_object_size(tmp_path, tiny_nuclei_model):
    from napari_microseg.progress import run_with_text_progress
    from napari_microseg.training.trainer import train

    base = load_model(tiny_nuclei_model).config["object_size"]
    image, labels = simulate_nuclei_image(shape=(192, 192), n_nuclei=6, seed=5, diameter_range=(44, 50))
    cfg = {"preset": "small", "output_mode": "three_class", "patch_size": 64, "patches_per_epoch": 4, "batch_size": 4,
           "epochs": 1, "lr": 1e-3, "seed": 0, "num_threads": 2}
    out = tmp_path / "ft.pt"
    run_with_text_progress(train(cfg, ([image], [labels]), val_data=([image], [labels]), out_path=out,
                                 init_model=tiny_nuclei_model), label="ft")
    joined = load_model(out).config["object_size"]
    assert joined["diameter"] == base["diameter"] and joined["range"][0] == base["range"][0]
    assert joined["range"][1] > max(base["range"][1], 40)  # the new, larger nuclei widen it
