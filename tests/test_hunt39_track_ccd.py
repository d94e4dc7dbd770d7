"""Session 39: track / segment never replace each other's tables under --overwrite; simulated CCD clusters'
positions and truth charge (each test failed before its fix)."""

from __future__ import annotations

import shutil
import time

import numpy as np
import pytest
import torch

from napari_microseg.cli import main


# ---------------------------------------------------------------- track / segment: whose tables
@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """An untrained tiny binary U-Net (what it finds does not matter here)."""
    from napari_microseg.io.models import save_model
    from napari_microseg.models.registry import build_model

    torch.manual_seed(0)
    cfg_model = {"preset": "small", "n_classes": 1, "depth": 2, "base_filters": 4}
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    save_model(path, build_model(cfg_model), {"model": cfg_model, "output_mode": "binary", "patch_size": [64, 64],
                                              "normalization": {"kind": "percentile", "p_low": 1.0, "p_high": 99.8}})
    return path


@pytest.fixture(scope="module")
def movie(tmp_path_factory):
    """A small simulated time-lapse: (image stack, label stack) files."""
    folder = tmp_path_factory.mktemp("sim") / "sim"
    assert main(["simulate", "nuclei", "--out", str(folder), "--frames", "4", "--nuclei", "6", "--shape", "64", "64",
                 "--seed", "3"]) == 0
    return folder / "fluorescence.tif", folder / "labels.tif"


def _track(movie, out, *extra):
    return main(["track", "--labels", str(movie[1]), "--out", str(out), *extra])


def _segment(model_file, movie, out, *extra):
    return main(["segment", "--model", str(model_file), "--input", str(movie[0]), "--out", str(out), "--tile", "64",
                 "--overlap", "16", "--device", "cpu", "--min-size", "0", "--quiet", *extra])


def _add_later(source, target, names):
    """Copy ``names`` from ``source`` into ``target`` as a later run writing there would (newer times)."""
    time.sleep(0.05)
    for name in names:
        shutil.copyfile(source / name, target / name)


SEGMENT_TABLES = ["objects.csv", "counts.csv", "segment_run.json"]
TRACK_FILES = ["tracks.csv", "counts.csv", "track_summary.csv", "tracks_labels.tif", "track_config.json"]


def test_track_overwrite_keeps_a_later_segmentations_counts(model_file, movie, tmp_path, capsys):
    """A folder where `track`, then `segment --overwrite` wrote: `track --overwrite` replaced the segmentation's
    counts.csv (the earlier track run's track_config.json let it): refused now, without "use --overwrite"."""
    folder, seg = tmp_path / "f", tmp_path / "seg"
    assert _track(movie, folder) == 0
    assert _segment(model_file, movie, seg) == 0
    _add_later(seg, folder, SEGMENT_TABLES)  # (what segment --overwrite left there before it refused)
    counts = (folder / "counts.csv").read_bytes()
    capsys.readouterr()
    for extra in ([], ["--overwrite"]):
        assert _track(movie, folder, *extra) == 2
        err = capsys.readouterr().err
        assert "segmentation's" in err and "segment_run.json" in err and "use --overwrite" not in err, err
    assert (folder / "counts.csv").read_bytes() == counts
    # a track run's own folder is still replaced as asked
    assert _track(movie, tmp_path / "own") == 0
    assert _track(movie, tmp_path / "own", "--overwrite") == 0


def test_segment_overwrite_keeps_a_tracks_counts(model_file, movie, tmp_path, capsys):
    """`segment --overwrite` into a track run's folder replaced its counts.csv (segment had no such check), also
    where an earlier segment run's segment_run.json was older than the track run's files: refused now."""
    track_only, mixed, other = tmp_path / "track", tmp_path / "mixed", tmp_path / "other"
    assert _track(movie, track_only) == 0
    assert _segment(model_file, movie, mixed) == 0
    assert _track(movie, other) == 0
    _add_later(other, mixed, TRACK_FILES)  # segment, then track wrote here
    capsys.readouterr()
    for folder in (track_only, mixed):
        counts = (folder / "counts.csv").read_bytes()
        for extra in ([], ["--overwrite"]):
            assert _segment(model_file, movie, folder, *extra) == 2
            err = capsys.readouterr().err
            assert "tracking's" in err and "track_config.json" in err and "use --overwrite" not in err, err
        assert (folder / "counts.csv").read_bytes() == counts
    # a segment run's own folder is still replaced as asked
    assert _segment(model_file, movie, tmp_path / "own") == 0
    assert _segment(model_file, movie, tmp_path / "own", "--overwrite") == 0


def test_segment_overwrite_keeps_a_simulations_truth_labels(model_file, tmp_path, capsys):
    """`segment --input <simulation>/images --out <simulation> --overwrite` replaced the truth labels/*.tif with
    its own: refused now (the simulation's params.json is the folder's newest record)."""
    sim = tmp_path / "sim"
    assert main(["simulate", "nuclei", "--mode", "images", "--n", "1", "--shape", "64", "64", "--out", str(sim)]) == 0
    truth = next((sim / "labels").iterdir())
    before = truth.read_bytes()
    capsys.readouterr()
    assert main(["segment", "--model", str(model_file), "--input", str(sim / "images"), "--out", str(sim),
                 "--overwrite", "--device", "cpu", "--quiet", "--tile", "64", "--overlap", "16"]) == 2
    assert "simulation's ground truth" in capsys.readouterr().err
    assert truth.read_bytes() == before


# ---------------------------------------------------------------- simulated CCD clusters: where, how much
def test_simulated_ccd_charges_are_drawn_over_the_whole_frame():
    """Pixel k spans k - 0.5 .. k + 0.5 (the clusters table's and regionprops' convention): the point charges were
    drawn over 0 .. n, none centred in the first row's / column's outer half, some past the last row / column."""
    from napari_microseg.simulate.ccd import simulate_ccd_frame

    frame = simulate_ccd_frame((16, 12), seed=1, n_clusters=3000, n_hot=0, glow_probability=0, noise_sd=5)
    for axis, n in ((0, 16), (1, 12)):
        where = frame.clusters[:, axis]
        assert where.min() >= -0.5 and where.max() < n - 0.5
        assert (where < 0).mean() == pytest.approx(0.5 / n, abs=0.02)  # as often as in any other half pixel


def test_simulated_ccd_truth_lists_the_charge_on_the_frame(tmp_path):
    """clusters_truth.csv listed the whole charge of a point charge at the frame's edge, part of which lay off
    the frame (no measurement of the frame can find it): it lists the charge deposited on the frame now, and
    the share of the whole charge that is (fraction_on_frame)."""
    import pandas as pd

    from napari_microseg.simulate._common import sample_seed
    from napari_microseg.simulate.ccd import simulate_ccd_frame

    assert main(["simulate", "ccd", "--out", str(tmp_path / "sim"), "--n", "2", "--shape", "24", "24", "--seed", "3",
                 "--glow-probability", "0"]) == 0
    truth = pd.read_csv(tmp_path / "sim" / "clusters_truth.csv")
    first = simulate_ccd_frame(shape=(24, 24), seed=sample_seed(3, 0), pedestal=8800.0, noise_sd=60.0,
                               glow_probability=0.0)  # the run's first frame, as simulate made it
    assert truth.charge_adc[truth["index"] == 0].sum() == pytest.approx(
        float(first.components["clusters"].sum(dtype=np.float64)), rel=1e-5)
    assert list(truth.columns) == ["index", "y", "x", "energy_kev", "sigma_px", "charge_adc", "fraction_on_frame"]
    whole = truth.energy_kev * 1000 / 3.65  # (gain 1)
    assert np.allclose(truth.charge_adc, whole * truth.fraction_on_frame)
    assert ((truth.fraction_on_frame > 0) & (truth.fraction_on_frame <= 1)).all()


def test_charge_on_frame_is_what_each_charge_deposited():
    """:func:`charge_on_frame` (what clusters_truth.csv lists) sums to the frame's cluster charge; a charge within
    a sigma of the edge has less than 85 % of its charge on the frame, one 4 sigma inside all of it."""
    from napari_microseg.simulate.ccd import charge_on_frame, simulate_ccd_frame

    frame = simulate_ccd_frame((20, 20), seed=4, n_clusters=400, n_hot=0, glow_probability=0, noise_sd=5)
    on_frame = charge_on_frame(frame.image.shape, frame.clusters)
    deposited = float(frame.components["clusters"].sum(dtype=np.float64))
    assert on_frame.sum() == pytest.approx(deposited, rel=1e-5)
    assert frame.clusters[:, 4].sum() > 1.02 * deposited  # (the whole charges: more than lies on the frame)
    share = on_frame / frame.clusters[:, 4]
    y, x, sigma = frame.clusters[:, 0], frame.clusters[:, 1], frame.clusters[:, 3]
    to_edge = np.minimum.reduce([y + 0.5, 19.5 - y, x + 0.5, 19.5 - x])  # px to the frame's nearest edge
    assert (to_edge < sigma).sum() > 10 and (share[to_edge < sigma] < 0.85).all()  # (Phi(1) = 0.84 at most)
    assert (share[to_edge > 4 * sigma] > 0.9999).all() and (share > 0.2).all()
