"""``microseg segment`` and ``microseg evaluate seg`` on tiny files with a small saved model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import torch

from napari_microseg.cli import build_parser, main
from napari_microseg.evaluation.metrics import evaluate_dataset
from napari_microseg.io.models import save_model
from napari_microseg.models.registry import build_model


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    torch.manual_seed(0)
    cfg_model = {"preset": "small", "n_classes": 1, "depth": 2, "base_filters": 4}
    net = build_model(cfg_model)
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    save_model(path, net, {"model": cfg_model, "output_mode": "binary", "patch_size": [64, 64],
                           "normalization": {"kind": "percentile", "p_low": 1.0, "p_high": 99.8}})
    return path


def _images(folder):
    rng = np.random.default_rng(0)
    folder.mkdir()
    a = (rng.random((2, 70, 90)) * 255).astype(np.uint8)
    b = (rng.random((80, 64)) * 4000).astype(np.uint16)
    tifffile.imwrite(folder / "a.tif", a)
    tifffile.imwrite(folder / "b.tif", b)
    return a, b


def test_segment_cli_writes_outputs_and_refuses_overwrite(tmp_path, model_file, capsys):
    a, b = _images(tmp_path / "in")
    out = tmp_path / "out"
    args = ["segment", "--model", str(model_file), "--input", str(tmp_path / "in"), "--out", str(out),
            "--tile", "64", "--overlap", "16", "--device", "cpu", "--min-size", "0", "--quiet"]
    assert main(args) == 0
    la = tifffile.imread(out / "labels" / "a.tif")
    lb = tifffile.imread(out / "labels" / "b.tif")
    assert la.shape == a.shape and lb.shape == b.shape
    assert la.dtype in (np.uint16, np.uint32)
    objects = pd.read_csv(out / "objects.csv")
    counts = pd.read_csv(out / "counts.csv")
    assert list(objects.columns[:5]) == ["t", "label", "y", "x", "area"]
    assert list(counts.columns[:2]) == ["t", "count"]
    assert counts[counts.image == "a.tif"]["count"].tolist() == [int((np.unique(f) > 0).sum()) for f in la]
    assert counts[counts.image == "b.tif"]["count"].tolist() == [int((np.unique(lb) > 0).sum())]
    run = json.loads((out / "segment_run.json").read_text())
    assert run["device"] == "cpu" and run["tile"] == 64
    before = (out / "objects.csv").read_bytes()
    # a second run must not replace anything without --overwrite
    assert main(args) == 2
    assert "overwrite" in capsys.readouterr().err
    assert (out / "objects.csv").read_bytes() == before
    assert main(args + ["--overwrite"]) == 0


def test_segment_cli_zarr_in_zarr_out_and_glob(tmp_path, model_file):
    import zarr

    img = (np.random.default_rng(1).random((2, 60, 75)) * 255).astype(np.uint8)
    z = zarr.open_array(str(tmp_path / "movie.zarr"), mode="w", shape=img.shape, chunks=(1, 32, 32), dtype="uint8")
    z[:] = img
    out = tmp_path / "out"
    assert main(["segment", "--model", str(model_file), "--input", str(tmp_path / "movie.zarr"), "--out", str(out),
                 "--tile", "64", "--quiet"]) == 0
    labels = zarr.open_array(str(out / "labels" / "movie.zarr"), mode="r")
    assert labels.shape == img.shape
    assert not [p for p in (out / "labels").iterdir() if p.name.startswith(".")]  # temp store renamed away
    tifffile.imwrite(tmp_path / "c.tif", img[0])
    assert main(["segment", "--model", str(model_file), "--input", str(tmp_path / "*.tif"), "--out",
                 str(tmp_path / "out2"), "--tile", "64", "--quiet"]) == 0
    assert (tmp_path / "out2" / "labels" / "c.tif").is_file()


def test_segment_cli_bad_input(tmp_path, model_file, capsys):
    assert main(["segment", "--model", str(model_file), "--input", str(tmp_path / "nothing.tif"),
                 "--out", str(tmp_path / "o")]) == 2
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    tifffile.imwrite(tmp_path / "x.tif", np.zeros((10, 10), np.uint8))
    assert main(["segment", "--model", str(tmp_path / "junk.pt"), "--input", str(tmp_path / "x.tif"),
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") >= 2 and "Traceback" not in err


def test_evaluate_cli(tmp_path, capsys):
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    gt_dir.mkdir()
    pred_dir.mkdir()
    pairs = []
    for i in range(2):
        gt = np.zeros((40, 40), np.uint16)
        gt[5:15, 5:15] = 1
        gt[20:30, 20:30 + i * 5] = 2
        pred = np.zeros_like(gt)
        pred[5:15, 7:17] = 3
        if i:
            pred[0:3, 30:33] = 9
        tifffile.imwrite(gt_dir / f"img{i}.tif", gt)
        tifffile.imwrite(pred_dir / f"img{i}_labels.tif", pred)
        pairs.append((f"img{i}.tif", gt, pred))
    out = tmp_path / "metrics.csv"
    assert main(["evaluate", "seg", "--gt", str(gt_dir), "--pred", str(pred_dir), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "AP@0.50" in printed
    _, pooled = evaluate_dataset(pairs)
    # two images: the bootstrap interval over image sets is printed
    assert f"AP@0.50 {pooled['ap_low@0.50']:.3f}-{pooled['ap_high@0.50']:.3f}: 95 % interval" in printed
    table = pd.read_csv(out)
    assert table.name.tolist() == ["img0.tif", "img1.tif", "ALL"]
    all_row = table.set_index("name").loc["ALL"]
    assert all_row["ap@0.50"] == pytest.approx(pooled["ap@0.50"], abs=1e-5)
    assert all_row["object_fp"] == 1 and all_row["object_fn"] == 2
    thr = pd.read_csv(tmp_path / "metrics_thresholds.csv")
    assert thr.threshold.tolist() == pytest.approx([0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9])
    assert main(["evaluate", "seg", "--gt", str(gt_dir), "--pred", str(pred_dir), "--out", str(out)]) == 2
    assert main(["evaluate", "seg", "--gt", str(gt_dir), "--pred", str(tmp_path / "missing"), "--out",
                 str(tmp_path / "m2.csv")]) == 2


def test_evaluate_compare_tells_a_better_segmentation_from_chance(tmp_path, capsys):
    """--compare: both APs over the common images and the paired bootstrap interval of their difference."""
    gt_dir, good_dir, worse_dir = (tmp_path / d for d in ("gt", "good", "worse"))
    for d in (gt_dir, good_dir, worse_dir):
        d.mkdir()
    for i in range(12):
        gt = np.zeros((60, 60), np.uint16)
        for k in range(4):  # four nuclei per image
            gt[5 + 14 * k:15 + 14 * k, 5:15] = k + 1
        worse = gt.copy()
        worse[worse == 4] = 0  # misses one nucleus in every image
        tifffile.imwrite(gt_dir / f"im{i}.tif", gt)
        tifffile.imwrite(good_dir / f"im{i}.tif", gt)
        tifffile.imwrite(worse_dir / f"im{i}.tif", worse)
    out = tmp_path / "m.csv"
    assert main(["evaluate", "seg", "--gt", str(gt_dir), "--pred", str(good_dir), "--compare", str(worse_dir),
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    # good: TP 48 -> AP 1; worse: TP 36, FN 12 -> AP 0.75; every draw of images gives the same difference
    assert "over the 12 image(s) both hold: --pred 1.000, --compare 0.750; --pred minus --compare +0.250" in printed
    assert "95 % interval +0.250 to +0.250 (paired bootstrap): --pred is better" in printed
    table = pd.read_csv(tmp_path / "m_compare.csv").set_index("name")
    assert table.loc["ALL", "ap@0.50_pred_minus_compare"] == pytest.approx(0.25) and table.loc["ALL", "fn@0.50_compare"] == 12
    assert table.loc["im3.tif", "ap@0.50_compare"] == pytest.approx(0.75)
    # the same predictions on both sides: no difference the images could show
    assert main(["evaluate", "seg", "--gt", str(gt_dir), "--pred", str(worse_dir), "--compare", str(worse_dir),
                 "--out", str(out), "--overwrite"]) == 0
    assert "+0.000, 95 % interval +0.000 to +0.000 (paired bootstrap): the images cannot tell them apart" in \
        capsys.readouterr().out
    # images only one side holds are left out, and said; three images are too few for a verdict
    few = tmp_path / "few"
    few.mkdir()
    for i in range(3):
        tifffile.imwrite(few / f"im{i}.tif", tifffile.imread(worse_dir / f"im{i}.tif"))
    assert main(["evaluate", "seg", "--gt", str(gt_dir), "--pred", str(good_dir), "--compare", str(few),
                 "--out", str(out), "--overwrite"]) == 0
    printed = capsys.readouterr().out
    assert "left out 9 image(s) only --pred holds and 0 only --compare holds" in printed
    assert "3 image(s) or stack(s) are too few for the interval to be trusted" in printed and "better" not in printed
    # a --compare file that cannot be scored stops the run before any CSV is written
    bad = tmp_path / "bad"
    bad.mkdir()
    tifffile.imwrite(bad / "im0.tif", np.zeros((30, 30), np.uint16))
    assert main(["evaluate", "seg", "--gt", str(gt_dir), "--pred", str(good_dir), "--compare", str(bad),
                 "--out", str(tmp_path / "b.csv")]) == 2
    assert not (tmp_path / "b.csv").exists() and "shape" in capsys.readouterr().err
    # the comparison's CSV is not replaced without --overwrite, before anything is scored
    assert main(["evaluate", "seg", "--gt", str(gt_dir), "--pred", str(good_dir), "--compare", str(worse_dir),
                 "--out", str(out)]) == 2
    other = tmp_path / "other"
    other.mkdir()
    tifffile.imwrite(other / "unrelated.tif", np.zeros((60, 60), np.uint16))
    tifffile.imwrite(other / "unrelated2.tif", np.zeros((60, 60), np.uint16))
    assert main(["evaluate", "seg", "--gt", str(gt_dir), "--pred", str(good_dir), "--compare", str(other),
                 "--out", str(tmp_path / "n.csv")]) == 2
    assert "no file names" in capsys.readouterr().err


def test_evaluate_leaves_out_what_the_ground_truth_did_not_annotate(tmp_path, capsys):
    """Ground truth -1 ("not annotated", as autolabel's tiles mark nuclei outside its size range):
    a predicted nucleus there is neither a hit nor a false positive."""
    gt = np.zeros((60, 60), np.int32)
    gt[5:15, 5:15] = 1
    gt[30:50, 30:50] = -1  # a nucleus too large for the auto-labeller
    pred = np.zeros((60, 60), np.uint16)
    pred[5:15, 5:15] = 1
    pred[31:49, 31:49] = 2  # found by the network: on the not-annotated nucleus
    tifffile.imwrite(tmp_path / "gt.tif", gt)
    tifffile.imwrite(tmp_path / "pred.tif", pred)
    assert main(["evaluate", "seg", "--gt", str(tmp_path / "gt.tif"), "--pred", str(tmp_path / "pred.tif"),
                 "--out", str(tmp_path / "m.csv")]) == 0
    row = pd.read_csv(tmp_path / "m.csv").set_index("name").loc["ALL"]
    assert row["ap@0.50"] == 1.0 and row["object_fp"] == 0 and row["n_pred"] == 1
    assert "not annotated (-1) in the ground truth: 400 px in 1 image(s) left out, with the 1 predicted" in capsys.readouterr().out
    # a prediction that calls (almost) everything foreground: the any-overlap scores are flagged
    tifffile.imwrite(tmp_path / "everything.tif", np.ones((60, 60), np.uint16))
    assert main(["evaluate", "seg", "--gt", str(tmp_path / "gt.tif"), "--pred", str(tmp_path / "everything.tif"),
                 "--out", str(tmp_path / "m3.csv")]) == 0
    assert "trust the IoU-matched AP" in capsys.readouterr().err
    # a prediction with negative values is still refused: only the ground truth may leave pixels out
    tifffile.imwrite(tmp_path / "bad_pred.tif", gt)
    assert main(["evaluate", "seg", "--gt", str(tmp_path / "pred.tif"), "--pred", str(tmp_path / "bad_pred.tif"),
                 "--out", str(tmp_path / "m2.csv")]) == 2


def test_parser_builds():
    parser = build_parser()
    args = parser.parse_args(["segment", "--model", "m.pt", "--input", "x.tif", "--out", "o", "--remove-border"])
    assert args.remove_border and args.min_size == 8 and args.overwrite is False


def test_segment_cli_ccd_shape_rules(tmp_path, capsys):
    from napari_microseg.simulate.ccd import simulate_ccd_frame

    tifffile.imwrite(tmp_path / "frame.tif", simulate_ccd_frame(shape=(256, 256), seed=12, balanced=True).image)
    common = ["segment", "--model", "ccd_classes", "--input", str(tmp_path / "frame.tif"), "--quiet"]
    assert main(common + ["--out", str(tmp_path / "plain")]) == 0
    assert main(common + ["--out", str(tmp_path / "ruled"), "--shape-rules", "--max-cluster-size", "20"]) == 0
    plain = tifffile.imread(next((tmp_path / "plain").rglob("frame.tif")))
    ruled = tifffile.imread(next((tmp_path / "ruled").rglob("frame.tif")))
    from napari_microseg.inference.postprocess import ccd_shape_rules

    names = ["background", "glowing", "hot pixel", "cluster"]
    np.testing.assert_array_equal(ruled, ccd_shape_rules(plain, names, max_cluster_size=20))
    # a class model with a "cluster" class also writes clusters.csv: one row per cluster of its class map
    clusters = pd.read_csv(tmp_path / "ruled" / "clusters.csv")
    assert list(clusters.columns[:7]) == ["t", "label", "y", "x", "size_px", "charge_adc", "peak_adc"]
    from scipy import ndimage as ndi

    assert len(clusters) == ndi.label(ruled == 3, structure=np.ones((3, 3)))[1] > 0
    assert (clusters.size_px <= 20).all() and (clusters.image == "frame.tif").all()
    # clusters.csv and objects.csv join on (t, label): the same cluster, its size and class
    objects = pd.read_csv(tmp_path / "ruled" / "objects.csv")
    joined = clusters.merge(objects, on=["t", "label"], how="left", validate="one_to_one")
    assert (joined["class"] == "cluster").all() and (joined["area"] == joined["size_px"]).all()
    # on a nuclei model the rules are refused with a one-line reason
    tifffile.imwrite(tmp_path / "nuclei.tif", np.zeros((64, 64), np.uint8))
    capsys.readouterr()
    assert main(["segment", "--model", "nuclei_fluorescence", "--input", str(tmp_path / "nuclei.tif"),
                 "--out", str(tmp_path / "n"), "--shape-rules", "--quiet"]) == 2
    assert "CCD class models only" in capsys.readouterr().err


def test_segment_cli_one_bad_image_does_not_lose_the_others(tmp_path, model_file, capsys):
    """A folder with a NaN image: it is skipped with its name, the rest is segmented and written, exit 1."""
    folder = tmp_path / "mix"
    folder.mkdir()
    rng = np.random.default_rng(1)
    tifffile.imwrite(folder / "a.tif", (rng.random((64, 64)) * 255).astype(np.uint8))
    bad = np.full((64, 64), np.nan, np.float32)
    tifffile.imwrite(folder / "b.tif", bad)
    tifffile.imwrite(folder / "c.tif", np.zeros((64, 64), np.uint8))
    out = tmp_path / "o"
    assert main(["segment", "--model", str(model_file), "--input", str(folder), "--out", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "skipped b.tif" in err and "warning: c.tif is constant" in err and "Traceback" not in err
    objects = pd.read_csv(out / "objects.csv")
    assert set(objects["image"]) <= {"a.tif", "c.tif"}
    assert not (out / "clusters.csv").exists()  # nuclei models have no cluster class
    assert (out / "labels" / "a.tif").is_file() and not (out / "labels" / "b.tif").exists()
    run = json.loads((out / "segment_run.json").read_text())
    assert [Path(f["image"]).name for f in run["failures"]] == ["b.tif"] and len(run["images"]) == 2
    assert "b.tif: b.tif" not in err  # the name once
    # a 4-D file among them is skipped too (found before any work)
    tifffile.imwrite(folder / "d.tif", np.zeros((2, 2, 16, 16), np.uint8))
    assert main(["segment", "--model", str(model_file), "--input", str(folder), "--out", str(tmp_path / "o4"),
                 "--quiet"]) == 1
    assert "skipped d.tif: expected a (Y,X) image" in capsys.readouterr().err
    assert (tmp_path / "o4" / "labels" / "a.tif").is_file()
    # nothing segmentable at all: exit 2 with the reason
    assert main(["segment", "--model", str(model_file), "--input", str(folder / "b.tif"), "--out", str(tmp_path / "o2")]) == 2
    assert "NaN" in capsys.readouterr().err
    # batch checks the same settings up front (one line, exit 2) instead of failing every item
    assert main(["batch", "segment", "--model", str(model_file), "--input", str(folder), "--out", str(tmp_path / "b"),
                 "--workers", "0", "--batch-size", "0"]) == 2
    assert "--batch-size must be >= 1" in capsys.readouterr().err


def test_segment_cli_interrupted_keeps_the_finished_images_tables(tmp_path, model_file, capsys, monkeypatch):
    """Ctrl-C during the third of four images: the two finished images' labels, objects.csv, counts.csv
    and segment_run.json (interrupted, with the images not done) are written; exit 130."""
    import napari_microseg.cli.segment as segment_cli

    folder = tmp_path / "four"
    folder.mkdir()
    rng = np.random.default_rng(2)
    for name in "abcd":
        tifffile.imwrite(folder / f"{name}.tif", (rng.random((64, 64)) * 255).astype(np.uint8))
    real = segment_cli._segment_one

    def interrupted_at_c(args, loaded, path, *rest):
        if path.name == "c.tif":
            raise KeyboardInterrupt
        return real(args, loaded, path, *rest)

    monkeypatch.setattr(segment_cli, "_segment_one", interrupted_at_c)
    out = tmp_path / "o"
    assert main(["segment", "--model", str(model_file), "--input", str(folder), "--out", str(out), "--quiet"]) == 130
    assert "2 image(s) segmented and written, 2 not" in capsys.readouterr().err
    assert set(pd.read_csv(out / "counts.csv")["image"]) == {"a.tif", "b.tif"}
    run = json.loads((out / "segment_run.json").read_text())
    assert run["interrupted"] is True and [Path(p).name for p in run["not_done"]] == ["c.tif", "d.tif"]
    # interrupted before any image finished: nothing written, the empty output folder removed
    monkeypatch.setattr(segment_cli, "_segment_one", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    assert main(["segment", "--model", str(model_file), "--input", str(folder), "--out", str(tmp_path / "o2")]) == 130
    assert not (tmp_path / "o2").exists()


def test_a_blank_frame_gives_no_objects_even_from_a_network_that_sees_foreground(tmp_path):
    """A network biased to foreground everywhere: the constant frame of a stack stays empty, the other does not."""
    from napari_microseg.inference.segment import segment
    from napari_microseg.io.models import load_model

    torch.manual_seed(0)
    cfg_model = {"preset": "small", "n_classes": 1, "depth": 2, "base_filters": 4}
    net = build_model(cfg_model)
    last = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    with torch.no_grad():
        last.bias.fill_(10.0)
    path = tmp_path / "always.pt"
    save_model(path, net, {"model": cfg_model, "output_mode": "binary", "patch_size": [64, 64],
                           "normalization": {"kind": "percentile", "p_low": 1.0, "p_high": 99.8}})
    rng = np.random.default_rng(0)
    stack = np.stack([np.zeros((64, 64), np.uint8), (rng.random((64, 64)) * 255).astype(np.uint8)])
    result = segment(load_model(path), stack)
    assert result.labels[0].max() == 0 and result.labels[1].max() > 0
    assert list(result.counts["count"]) == [0, 1]


def test_evaluate_classes_scores_ccd_class_maps_pixel_by_pixel(tmp_path, capsys):
    """Simulated CCD frames, segmented by the shipped class model, scored per class against their true maps."""
    from napari_microseg.autolabel.ccd import class_agreement

    sim = tmp_path / "sim"
    assert main(["simulate", "ccd", "--n", "2", "--shape", "96", "96", "--balanced", "--out", str(sim), "--seed", "4"]) == 0
    assert main(["segment", "--model", "ccd_classes", "--input", str(sim / "frames"), "--out", str(tmp_path / "seg"),
                 "--quiet"]) == 0
    out = tmp_path / "classes.csv"
    assert main(["evaluate", "classes", "--gt", str(sim / "classes"), "--pred", str(tmp_path / "seg" / "labels"),
                 "--out", str(out)]) == 0
    table = pd.read_csv(out)
    assert list(table["name"]) == ["background", "glowing", "hot pixel", "cluster"]  # from the folder's params.json
    truth = np.concatenate([tifffile.imread(p).ravel() for p in sorted((sim / "classes").glob("*.tif"))])
    pred = np.concatenate([tifffile.imread(p).ravel() for p in sorted((tmp_path / "seg" / "labels").glob("*.tif"))])
    expected = class_agreement(truth, pred)
    np.testing.assert_allclose(table["f1"], expected["f1"], rtol=1e-6)
    confusion = pd.read_csv(tmp_path / "classes_confusion.csv").set_index("true class")
    assert confusion.to_numpy().sum() == truth.size == 2 * 96 * 96
    assert table.loc[table.name == "background", "f1"].item() > 0.8


def test_segment_cli_names_a_z_stack(tmp_path, model_file, capsys):
    """A Z stack is segmented plane by plane; the user is told that 't' is then the plane."""
    stack = (np.random.default_rng(3).random((3, 48, 48)) * 255).astype(np.uint8)
    tifffile.imwrite(tmp_path / "z.tif", stack, imagej=True, metadata={"axes": "ZYX"})
    assert main(["segment", "--model", str(model_file), "--input", str(tmp_path / "z.tif"), "--out", str(tmp_path / "o")]) == 0
    assert "is a Z stack" in capsys.readouterr().err
    assert len(pd.read_csv(tmp_path / "o" / "counts.csv")) == 3


def test_segment_cli_says_what_a_folder_input_leaves_out(tmp_path, model_file, capsys):
    folder = tmp_path / "plate"
    (folder / "well2").mkdir(parents=True)
    tifffile.imwrite(folder / "a.tif", (np.random.default_rng(4).random((48, 48)) * 255).astype(np.uint8))
    (folder / "notes.txt").write_text("exposure 20 ms")
    assert main(["segment", "--model", str(model_file), "--input", str(folder), "--out", str(tmp_path / "o"),
                 "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "1 file(s) of other types (notes.txt)" in err and "1 sub-folder(s) (well2;" in err


def test_segment_cli_reads_a_big_tiff_tile_by_tile_with_the_same_result(tmp_path, model_file, monkeypatch):
    """A TIFF over LAZY_TIFF_BYTES is read as a dask array of its own tiles (as Zarr is), never whole;
    the labels and tables equal those of the same TIFF read into memory."""
    import napari_microseg.io.images as image_io

    img = (np.random.default_rng(2).random((150, 170)) * 4000).astype(np.uint16)
    tifffile.imwrite(tmp_path / "big.tif", img, tile=(64, 64), compression="zlib")
    assert main(["segment", "--model", str(model_file), "--input", str(tmp_path / "big.tif"), "--out", str(tmp_path / "eager"),
                 "--tile", "64", "--quiet"]) == 0
    reads = []
    original = image_io._tiff_level

    def counting_level(series, level):
        arr = original(series, level)
        reads.append(arr.chunks)
        return arr

    monkeypatch.setattr(image_io, "LAZY_TIFF_BYTES", 1000)
    monkeypatch.setattr(image_io, "_tiff_level", counting_level)
    assert main(["segment", "--model", str(model_file), "--input", str(tmp_path / "big.tif"), "--out", str(tmp_path / "lazy"),
                 "--tile", "64", "--quiet"]) == 0
    assert reads and reads[0] == ((64, 64, 22), (64, 64, 42))  # the file's tiles
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "lazy" / "labels" / "big.tif"),
                                  tifffile.imread(tmp_path / "eager" / "labels" / "big.tif"))
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "lazy" / "objects.csv"), pd.read_csv(tmp_path / "eager" / "objects.csv"))


def test_segment_labels_keep_the_movies_calibration_for_track(tmp_path, model_file, capsys):
    """A calibrated movie (ImageJ: 0.5 um per pixel, 2 min per frame) gives labels that carry its
    calibration, so `microseg track --labels` alone reports micrometres and minutes."""
    from napari_microseg.io.images import read_image

    rng = np.random.default_rng(1)
    movie = (rng.random((3, 64, 64)) * 255).astype(np.uint8)
    movie[:, 20:34, 20:34] = 255
    tifffile.imwrite(tmp_path / "movie.tif", movie, imagej=True, resolution=(2.0, 2.0),
                     metadata={"axes": "TYX", "unit": "micron", "finterval": 120})
    out = tmp_path / "seg"
    assert main(["segment", "--model", str(model_file), "--input", str(tmp_path / "movie.tif"), "--out", str(out),
                 "--tile", "64", "--device", "cpu", "--min-size", "0", "--quiet"]) == 0
    labels = read_image(out / "labels" / "movie.tif")
    assert labels.metadata["calibration"] == {"pixel_size_um": 0.5, "frame_interval_min": 2.0}
    assert labels.data.shape == movie.shape
    if not labels.data.any():  # a weak test model may find nothing in noise: give the tracker objects
        stack = np.zeros(movie.shape, np.uint16)
        stack[:, 20:34, 20:34] = 1
        from napari_microseg.io.images import write_tiff

        write_tiff(out / "labels" / "movie.tif", stack, overwrite=True, calibration=labels.metadata["calibration"])
    assert main(["track", "--labels", str(out / "labels" / "movie.tif"), "--out", str(tmp_path / "trk")]) == 0
    assert "0.5 um per pixel, 2.0 min per frame" in capsys.readouterr().err
    summary = pd.read_csv(tmp_path / "trk" / "track_summary.csv")
    assert {"path_length_um", "duration_min"} <= set(summary.columns)
    assert read_image(tmp_path / "trk" / "tracks_labels.tif").metadata["calibration"]["frame_interval_min"] == 2.0


def test_segment_cli_hot_repeats_compares_single_exposures(tmp_path, capsys):
    """Three FITS exposures of one sensor: a defect pixel and column are hot in all of them; a bright pixel
    and a short line in one exposure only are charge deposits: --hot-repeats makes them cluster."""
    from astropy.io import fits

    from napari_microseg.simulate.ccd import simulate_ccd_frame

    folder = tmp_path / "exposures"
    folder.mkdir()
    for s in range(3):
        image = simulate_ccd_frame(shape=(256, 256), seed=40 + s, n_hot=0, n_clusters=30).image
        image[100, 50] += 2200
        image[30:60, 200] += 2200
        if s == 1:
            image[200, 120] += 2200
            image[150, 20:40] += 2200
        fits.writeto(folder / f"exp{s}.fits", image)
    common = ["segment", "--model", "ccd_classes", "--input", str(folder), "--quiet"]
    assert main(common + ["--out", str(tmp_path / "plain")]) == 0
    assert main(common + ["--out", str(tmp_path / "rep"), "--hot-repeats"]) == 0
    plain = tifffile.imread(tmp_path / "plain" / "labels" / "exp1.tif")
    ruled = tifffile.imread(tmp_path / "rep" / "labels" / "exp1.tif")
    assert plain[200, 120] == 2 and plain[150, 30] == 2  # on one frame they look like defects
    assert ruled[200, 120] == 3 and (ruled[150, 20:40] == 3).all()
    for name in ("exp0", "exp1", "exp2"):  # the defects stay hot in every exposure
        labels = tifffile.imread(tmp_path / "rep" / "labels" / f"{name}.tif")
        assert labels[100, 50] == 2 and (labels[30:60, 200] == 2).all()
    counts = pd.read_csv(tmp_path / "rep" / "counts.csv").set_index("image")
    assert list(counts.index) == ["exp0.fits", "exp1.fits", "exp2.fits"] and (counts["t"] == 0).all()
    plain_counts = pd.read_csv(tmp_path / "plain" / "counts.csv").set_index("image")
    assert counts.loc["exp1.fits", "count_hot_pixel"] == plain_counts.loc["exp1.fits", "count_hot_pixel"] - 2
    clusters = pd.read_csv(tmp_path / "rep" / "clusters.csv")
    objects = pd.read_csv(tmp_path / "rep" / "objects.csv")
    joined = clusters.merge(objects, on=["image", "t", "label"], how="left", validate="one_to_one")
    assert (joined["class"] == "cluster").all() and len(clusters[clusters.image == "exp1.fits"]) == counts.loc["exp1.fits", "count_cluster"]
    assert json.loads((tmp_path / "rep" / "segment_run.json").read_text())["hot_repeats"] is True
    defects = tifffile.imread(tmp_path / "rep" / "defect_masks" / "all_exposures.tif")  # the sensor's, from all three
    assert defects[100, 50] == 1 and defects[30:60, 200].all() and defects[200, 120] == 0 and defects[150, 30] == 0
    assert not list((tmp_path / "rep").glob(".microseg-*"))  # the two-pass scratch and staging folders are gone
    assert "defect_masks (1 defect mask(s))" in capsys.readouterr().out
    # the same folder again with --overwrite but without the rule: the earlier defect mask does not stay behind
    assert main(common + ["--out", str(tmp_path / "rep"), "--overwrite"]) == 0
    assert not (tmp_path / "rep" / "defect_masks" / "all_exposures.tif").exists()
    # one exposure cannot be compared with anything; a mix of stacks and frames is refused
    capsys.readouterr()
    assert main(["segment", "--model", "ccd_classes", "--input", str(folder / "exp0.fits"), "--out",
                 str(tmp_path / "one"), "--hot-repeats", "--quiet"]) == 2
    assert "at least 2 exposures" in capsys.readouterr().err
    tifffile.imwrite(folder / "stack.tif", np.zeros((2, 256, 256), np.float32))
    assert main(common + ["--out", str(tmp_path / "mix"), "--hot-repeats"]) == 2
    assert "not both" in capsys.readouterr().err


def test_segment_cli_hot_repeats_interrupted_resumes_and_leaves_no_labels(tmp_path, monkeypatch, capsys):
    """Ctrl-C while the second pass writes the labels of single exposures: no label file is left (they
    are moved into labels/ only when all are done); the segmented exposures are kept in a hidden folder,
    and the same command again takes them from there (none segmented twice) and removes it. A changed
    exposure is segmented again."""
    from napari_microseg.io import images
    from napari_microseg.simulate.ccd import simulate_ccd_frame

    folder = tmp_path / "exposures"
    folder.mkdir()
    for s in range(3):
        tifffile.imwrite(folder / f"e{s}.tif", simulate_ccd_frame(shape=(64, 64), seed=70 + s, n_hot=1).image.astype(np.float32))
    real_write = images.write_tiff
    calls = []

    def write_then_interrupt(path, data, **kwargs):
        calls.append(Path(path).name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_write(path, data, **kwargs)

    monkeypatch.setattr(images, "write_tiff", write_then_interrupt)
    out = tmp_path / "out"
    args = ["segment", "--model", "ccd_classes", "--input", str(folder), "--out", str(out), "--hot-repeats", "--quiet"]
    capsys.readouterr()
    assert main(args) == 130
    assert "3 segmented exposure(s) are kept" in capsys.readouterr().err
    assert calls == ["e0.tif", "e1.tif"] and [p.name for p in out.iterdir()] == [".microseg-repeats"]
    monkeypatch.setattr(images, "write_tiff", real_write)
    # one input changed since: that one is segmented again, the other two are taken from the kept folder
    tifffile.imwrite(folder / "e2.tif", simulate_ccd_frame(shape=(64, 64), seed=99, n_hot=1).image.astype(np.float32))
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "2 of 3 exposures were taken from the interrupted run" in err
    assert "one sensor" in err  # independently simulated frames: their hot pixels never repeat
    assert sorted(p.name for p in out.iterdir()) == ["clusters.csv", "counts.csv", "defect_masks", "labels", "objects.csv",
                                                     "segment_run.json"]
    assert sorted(p.name for p in (out / "labels").iterdir()) == ["e0.tif", "e1.tif", "e2.tif"]
    assert json.loads((out / "segment_run.json").read_text())["exposures_resumed"] == 2
    fresh = tmp_path / "fresh"
    assert main(args[:5] + ["--out", str(fresh), "--hot-repeats", "--quiet"]) == 0
    for name in ("e0.tif", "e1.tif", "e2.tif"):  # resuming gives what one uninterrupted run gives
        np.testing.assert_array_equal(tifffile.imread(out / "labels" / name), tifffile.imread(fresh / "labels" / name))
    pd.testing.assert_frame_equal(pd.read_csv(out / "objects.csv"), pd.read_csv(fresh / "objects.csv"))
    assert json.loads((fresh / "segment_run.json").read_text())["exposures_resumed"] == 0


def test_segment_cli_names_and_batch_pointer_for_the_repeat_rule(tmp_path, capsys):
    """Tile-compressed FITS names lose their whole suffix (labels/frame.tif); batch segment --hot-repeats
    points to segment instead of argparse's 'unrecognized arguments'."""
    from napari_microseg.cli.segment import IMAGE_SUFFIXES, _stem
    from napari_microseg.io.images import FITS_SUFFIXES, TIFF_SUFFIXES

    assert set(FITS_SUFFIXES + TIFF_SUFFIXES) <= set(IMAGE_SUFFIXES)
    assert _stem(Path("frame.fits.fz")) == "frame" and _stem(Path("ESIS1_00002.fit.gz")) == "ESIS1_00002"
    capsys.readouterr()
    assert main(["batch", "segment", "--model", "ccd_classes", "--input", str(tmp_path), "--out", str(tmp_path / "o"),
                 "--hot-repeats"]) == 2
    assert "use 'microseg segment --hot-repeats'" in capsys.readouterr().err


def test_segment_cli_hot_repeats_warns_when_fits_headers_name_two_cameras(tmp_path, capsys):
    from astropy.io import fits

    from napari_microseg.simulate.ccd import simulate_ccd_frame

    folder = tmp_path / "exposures"
    folder.mkdir()
    for s, camera in enumerate(("ESIS1", "ESIS1", "ESIS3")):
        header = fits.Header({"CAM_ID": camera})
        fits.writeto(folder / f"e{s}.fits", simulate_ccd_frame(shape=(64, 64), seed=s, n_hot=0).image, header)
    capsys.readouterr()
    assert main(["segment", "--model", "ccd_classes", "--input", str(folder), "--out", str(tmp_path / "o"),
                 "--hot-repeats", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert err.count("different cameras") == 1 and "e0.fits and e2.fits" in err and "CAM_ID ESIS3" in err


def test_segment_cli_says_object_filters_do_not_apply_to_class_models(tmp_path, capsys):
    """--min-size / --remove-border ... filter instance objects; a CCD class map keeps every pixel's class:
    the command says so, and segment_run.json records no such filter."""
    from napari_microseg.simulate.ccd import simulate_ccd_frame

    tifffile.imwrite(tmp_path / "f.tif", simulate_ccd_frame(shape=(64, 64), seed=3).image.astype(np.float32))
    capsys.readouterr()
    assert main(["segment", "--model", "ccd_classes", "--input", str(tmp_path / "f.tif"), "--out", str(tmp_path / "o"),
                 "--min-size", "3", "--remove-border", "--quiet"]) == 0
    assert "--min-size, --remove-border apply to nuclei" in capsys.readouterr().err
    run = json.loads((tmp_path / "o" / "segment_run.json").read_text())
    assert run["min_size"] is None and run["remove_border"] is None and run["output_mode"] == "multiclass"
    assert main(["segment", "--model", "ccd_classes", "--input", str(tmp_path / "f.tif"), "--out", str(tmp_path / "p"),
                 "--quiet"]) == 0
    assert "apply to nuclei" not in capsys.readouterr().err


def _term_before_each_tiff_write(monkeypatch) -> None:
    """Every TIFF write first sends this process a TERM signal, as a job scheduler would (undo with
    ``monkeypatch.undo()``)."""
    import os
    import signal

    from napari_microseg.io import images

    real_write = images.write_tiff

    def terminated_while_writing(path, data, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return real_write(path, data, **kwargs)

    monkeypatch.setattr(images, "write_tiff", terminated_while_writing)


def test_segment_cli_stops_on_a_term_signal_like_ctrl_c(tmp_path, monkeypatch, capsys):
    """A TERM signal (a job scheduler, kill) during --hot-repeats: exit 143, the segmented exposures are
    kept for a rerun, no labels; a staging folder a killed run left is removed by the next run."""
    import signal

    from napari_microseg.simulate.ccd import simulate_ccd_frame

    folder = tmp_path / "exposures"
    folder.mkdir()
    for s in range(3):
        tifffile.imwrite(folder / f"e{s}.tif", simulate_ccd_frame(shape=(64, 64), seed=70 + s, n_hot=0).image.astype(np.float32))
    _term_before_each_tiff_write(monkeypatch)
    out = tmp_path / "out"
    args = ["segment", "--model", "ccd_classes", "--input", str(folder), "--out", str(out), "--hot-repeats", "--quiet"]
    capsys.readouterr()
    before = signal.getsignal(signal.SIGTERM)
    assert main(args) == 143
    err = capsys.readouterr().err
    assert "3 segmented exposure(s) are kept" in err and "terminated" in err
    assert [p.name for p in out.iterdir()] == [".microseg-repeats"]
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is put back
    monkeypatch.undo()
    (out / ".microseg-labels-stale").mkdir()  # what a killed run (SIGKILL) leaves
    (out / ".microseg-labels-stale" / "e0.tif").write_bytes(b"half")
    assert main(args) == 0
    assert not list(out.glob(".microseg-*")) and len(list((out / "labels").iterdir())) == 3


def test_segment_cli_term_while_writing_a_stack_keeps_its_first_pass(tmp_path, monkeypatch, capsys, model_file):
    """A TERM signal while a stack's labels are written (after both passes): exit 143, the stack's first pass
    is still in its scratch folder and the rerun takes every exposure from it; a plain segment run stopped by
    TERM exits 143 too (not 130)."""
    from napari_microseg.simulate.ccd import simulate_ccd_frame

    stack = np.stack([simulate_ccd_frame(shape=(64, 64), seed=90 + s, n_hot=0).image for s in range(3)]).astype(np.float32)
    tifffile.imwrite(tmp_path / "stack.tif", stack)
    _term_before_each_tiff_write(monkeypatch)
    out = tmp_path / "out"
    args = ["segment", "--model", "ccd_classes", "--input", str(tmp_path / "stack.tif"), "--out", str(out),
            "--hot-repeats", "--quiet"]
    assert main(args) == 143
    assert sorted(p.name for p in (out / ".microseg-repeats-stack").iterdir()) == ["0.npz", "1.npz", "2.npz"]
    assert main(["segment", "--model", str(model_file), "--input", str(tmp_path / "stack.tif"), "--out",
                 str(tmp_path / "plain"), "--quiet"]) == 143
    monkeypatch.undo()
    assert main(args) == 0
    run = json.loads((out / "segment_run.json").read_text())
    assert run["images"][0]["exposures_resumed"] == 3 and not (out / ".microseg-repeats-stack").exists()
    assert tifffile.imread(out / "labels" / "stack.tif").shape == (3, 64, 64)


def test_segment_cli_hot_repeats_on_stacks_runs_in_two_passes(tmp_path, capsys):
    """A TIFF stack and a Zarr stack of exposures: --hot-repeats gives the labels and tables of
    segment(stack, hot_repeats=True) (the in-memory rule) and leaves no scratch folder in --out;
    --save-probabilities is refused with it before any work."""
    import zarr

    from napari_microseg.inference.segment import segment
    from napari_microseg.simulate.ccd import simulate_ccd_frame

    frames = np.stack([simulate_ccd_frame(shape=(96, 96), seed=60 + s, n_hot=0, n_clusters=12).image for s in range(3)])
    frames[:, 20, 30] += 2200
    frames[2, 70, 10:18] += 2200
    frames = frames.astype(np.float32)
    tifffile.imwrite(tmp_path / "stack.tif", frames)
    z = zarr.open_array(str(tmp_path / "cube.zarr"), mode="w", shape=frames.shape, chunks=(1, 96, 96), dtype="float32")
    z[:] = frames
    expected = segment("ccd_classes", frames, postprocess_options={"hot_repeats": True})
    for name, read in (("stack.tif", lambda o: tifffile.imread(o / "labels" / "stack.tif")),
                       ("cube.zarr", lambda o: zarr.open_array(str(o / "labels" / "cube.zarr"), mode="r")[:])):
        out = tmp_path / f"out_{name}"
        assert main(["segment", "--model", "ccd_classes", "--input", str(tmp_path / name), "--out", str(out),
                     "--hot-repeats", "--quiet"]) == 0
        np.testing.assert_array_equal(read(out), np.asarray(expected.labels))
        assert read(out)[2, 70, 14] == 3 and (read(out)[:, 20, 30] == 2).all()
        objects = pd.read_csv(out / "objects.csv")
        assert len(objects) == len(expected.objects)
        np.testing.assert_allclose(objects["probability"], expected.objects["probability"], rtol=1e-5)
        assert (pd.read_csv(out / "counts.csv")["count_cluster"].to_numpy() == expected.counts["count_cluster"]).all()
        assert len(pd.read_csv(out / "clusters.csv")) == int(expected.counts["count_cluster"].sum())
        assert sorted(p.name for p in out.iterdir()) == ["clusters.csv", "counts.csv", "defect_masks", "labels",
                                                         "objects.csv", "segment_run.json"]
        mask = tifffile.imread(out / "defect_masks" / f"{name.split('.')[0]}.tif")
        assert mask.dtype == np.uint8 and mask[20, 30] == 1 and mask[70, 14] == 0  # the one-frame line is no defect
        assert mask.sum() == json.loads((out / "segment_run.json").read_text())["images"][0]["persistent_pixels"]
    capsys.readouterr()
    assert main(["segment", "--model", "ccd_classes", "--input", str(tmp_path / "stack.tif"), "--out",
                 str(tmp_path / "probs"), "--hot-repeats", "--save-probabilities", "--quiet"]) == 2
    assert "--save-probabilities is not available" in capsys.readouterr().err and not (tmp_path / "probs").exists()


def test_segment_cli_hot_repeats_on_tiff_exposures_keeps_what_segment_keeps(tmp_path, capsys):
    """TIFF exposures of mixed types (uint16 then float32, negative ADC included), calibrated: the labels
    keep each file's calibration, an unreadable file is skipped with its name (exit 1), and a labels file
    that exists is refused before any work."""
    from napari_microseg.io.images import read_image
    from napari_microseg.simulate.ccd import simulate_ccd_frame

    folder = tmp_path / "exposures"
    folder.mkdir()
    for s in range(3):
        image = simulate_ccd_frame(shape=(128, 128), seed=50 + s, n_hot=0, n_clusters=10).image
        image[64, 64] += 2200
        data = np.clip(image, 0, 65535).astype(np.uint16) if s == 0 else (image - 9000).astype(np.float32)
        tifffile.imwrite(folder / f"e{s}.tif", data, imagej=True, resolution=(1 / 15.0, 1 / 15.0),
                         metadata={"unit": "micron"})
    (folder / "e3.tif").write_bytes(b"II*\x00 broken")
    out = tmp_path / "rep"
    args = ["segment", "--model", "ccd_classes", "--input", str(folder), "--out", str(out), "--hot-repeats", "--quiet"]
    capsys.readouterr()
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "skipped e3.tif" in err
    for s in range(3):
        labels = read_image(out / "labels" / f"e{s}.tif")
        assert labels.metadata["calibration"]["pixel_size_um"] == pytest.approx(15.0)
        assert labels.data[64, 64] == 2  # the defect repeats in every exposure, whatever the file's type
    run = json.loads((out / "segment_run.json").read_text())
    assert [f["image"] for f in run["failures"]] == [str(folder / "e3.tif")]
    assert {"diameter", "scale_factor", "image_tile", "scale_warning"} <= set(run["images"][0])
    # frames over --zarr-above would need Zarr labels: refused before any work (an existing e0.tif stays)
    (folder / "e3.tif").unlink()
    other = tmp_path / "rep2"
    (other / "labels").mkdir(parents=True)
    (other / "labels" / "e0.tif").write_bytes(b"earlier run")
    assert main(args[:5] + ["--out", str(other), "--hot-repeats", "--quiet", "--zarr-above", "100"]) == 2
    assert "Zarr" in capsys.readouterr().err
    assert (other / "labels" / "e0.tif").read_bytes() == b"earlier run" and not (other / "objects.csv").exists()
    assert main(["segment", "--model", "nuclei_fluorescence", "--input", str(folder), "--out", str(tmp_path / "n"),
                 "--hot-repeats", "--quiet"]) == 2
    assert "CCD class models only" in capsys.readouterr().err
