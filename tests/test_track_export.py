"""Tracking export: CSV contracts, CTC round trip through traccuracy, curation edits, CLI."""

import json

import numpy as np
import pandas as pd
import pytest
import tifffile

from napari_microseg.cli import main
from napari_microseg.errors import InputError
from napari_microseg.tracking.export import (
    counts_table,
    ctc_digits,
    delete_track,
    merge_tracks,
    read_ctc,
    read_tracks_csv,
    split_track,
    track_summary,
    write_counts_csv,
    write_ctc,
    write_tracks_csv,
)
from napari_microseg.tracking.metrics import ctc_scores, link_recall
from napari_microseg.tracking.track import TRACK_COLUMNS, finalize, relabel_stack, run_tracking

from test_track_core import division_stack, moving_discs


@pytest.fixture(scope="module")
def division_result():
    labels, _ = division_stack()
    return run_tracking(labels, config="cell")


def ids(res):
    tab = res.table
    get = lambda t, lab: tab[(tab["t"] == t) & (tab["label"] == lab)]["track_id"].item()  # noqa: E731
    return {"mother": get(0, 1), "d1": get(3, 2), "d2": get(3, 3), "still": get(0, 10)}


def test_csv_files(division_result, tmp_path):
    res = division_result
    write_tracks_csv(res, tmp_path / "tracks.csv")
    text = (tmp_path / "tracks.csv").read_text()
    header = text.splitlines()[0].split(",")
    assert header[:8] == TRACK_COLUMNS and header[8:] == ["area"]
    back = read_tracks_csv(tmp_path / "tracks.csv")
    pd.testing.assert_frame_equal(back.table, res.table, check_dtype=False)
    write_counts_csv(res, tmp_path / "counts.csv")
    counts = pd.read_csv(tmp_path / "counts.csv")
    assert list(counts.columns) == ["t", "count", "divisions", "appeared", "left_field", "disappeared"]
    assert counts["count"].tolist() == [2, 2, 2, 3, 3, 3]
    assert counts["divisions"].tolist() == [0, 0, 0, 1, 0, 0]
    # daughters and mothers count as the division only; every track reaches the last frame
    assert counts["appeared"].tolist() == counts["left_field"].tolist() == counts["disappeared"].tolist() == [0] * 6
    assert list(tmp_path.glob(".*")) == []  # atomic writes leave no temp files


def test_counts_appeared_left_disappeared():
    """Per-frame events agree with track_summary's fates; first and last frames are not events."""
    rows = [  # track_id, t, y, x, area, parent
        *[(1, t, 50, 50, 80, 0) for t in range(6)],  # whole movie
        *[(2, t, 50, 20, 80, 0) for t in range(0, 3)],  # lost inside the field after frame 2
        *[(3, t, 3, 60, 80, 0) for t in range(0, 4)],  # last seen at the top edge in frame 3
        *[(4, t, 80, 80, 80, 0) for t in range(2, 6)],  # appears in frame 2
        *[(5, t, 20, 80, 80, 0) for t in range(1, 3)],  # appears in 1, divides: daughters 6 and 7 from frame 3
        *[(6, t, 15, 80, 40, 5) for t in range(3, 6)],
        *[(7, t, 25, 80, 40, 5) for t in range(3, 5)],  # a daughter lost in frame 4
    ]
    table = finalize(pd.DataFrame(rows, columns=["track_id", "t", "y", "x", "area", "parent_track_id"]))
    counts = counts_table(table, n_frames=6, image_shape=(100, 100))
    assert counts["count"].tolist() == [3, 4, 5, 5, 4, 3]
    assert counts["divisions"].tolist() == [0, 0, 0, 1, 0, 0]
    assert counts["appeared"].tolist() == [0, 1, 1, 0, 0, 0]
    assert counts["left_field"].tolist() == [0, 0, 0, 1, 0, 0]
    assert counts["disappeared"].tolist() == [0, 0, 1, 0, 1, 0]
    # without the image size no track can be said to have left the field
    assert counts_table(table, n_frames=6)["disappeared"].tolist() == [0, 0, 1, 1, 1, 0]
    # a bare tracks table (a DataFrame, as tracks.csv holds it) gives the same counts
    pd.testing.assert_frame_equal(counts_table(table.table, n_frames=6, image_shape=(100, 100)), counts)
    assert counts_table(table.table)["count"].tolist() == counts["count"].tolist()
    # a movie longer than its last tracked frame: tracks reaching frame 5 now end inside it
    assert counts_table(table, n_frames=8, image_shape=(100, 100))["disappeared"].tolist() == [0, 0, 1, 0, 1, 3, 0, 0]


def test_ctc_roundtrip_and_tra(division_result, tmp_path):
    res = division_result
    write_ctc(res, tmp_path / "gt")
    assert sorted(p.name for p in (tmp_path / "gt").iterdir()) == [f"mask{t:03d}.tif" for t in range(6)] + ["res_track.txt"]
    assert tifffile.imread(tmp_path / "gt" / "mask003.tif").dtype == np.uint16
    i = ids(res)
    lines = {tuple(map(int, l.split())) for l in (tmp_path / "gt" / "res_track.txt").read_text().splitlines()}
    assert (i["mother"], 0, 2, 0) in lines and (i["d1"], 3, 5, i["mother"]) in lines and (i["d2"], 3, 5, i["mother"]) in lines
    # GT vs itself through traccuracy's own CTC loader == 1
    perfect = ctc_scores(tmp_path / "gt", tmp_path / "gt")
    assert perfect["TRA"] == 1.0 and perfect["DET"] == 1.0 and perfect["division_recall"] == 1.0
    # a broken track lowers TRA; a lost division lowers division recall
    broken = split_track(res, i["still"], 3)
    write_ctc(broken, tmp_path / "broken")
    s = ctc_scores(tmp_path / "gt", tmp_path / "broken")
    assert s["TRA"] < 1.0 and s["DET"] == 1.0 and s["fn_edges"] == 1
    no_div = delete_track(res, i["d2"])
    s2 = ctc_scores(res, no_div)
    assert s2["DET"] < 1.0 and s2["division_recall"] < 1.0
    assert perfect["true_divisions"] == perfect["found_divisions"] == 1
    # a division found with a wrong daughter (the still track's second half) is still a true and a
    # found division: the totals do not change with what the prediction got right
    table = broken.table.copy()
    piece = int(table["track_id"].max())
    table.loc[table["track_id"] == i["d2"], "parent_track_id"] = 0
    table.loc[table["track_id"] == piece, "parent_track_id"] = i["mother"]
    wrong_children = finalize(table, n_frames=res.n_frames, labels=res.labels)
    s3 = ctc_scores(res, wrong_children)
    assert s3["true_divisions"] == 1 and s3["found_divisions"] == 1 and s3["division_recall"] == 0.0
    # read back
    back = read_ctc(tmp_path / "gt")
    assert back.graph == res.graph and len(back.table) == len(res.table)
    with pytest.raises(InputError):
        write_ctc(res, tmp_path / "gt")  # never overwrite silently
    # replacing a longer result leaves none of its masks behind
    for t in range(6, 9):
        tifffile.imwrite(tmp_path / "gt" / f"mask{t:03d}.tif", np.ones((4, 4), np.uint16))
    (tmp_path / "gt" / "notes.txt").write_text("mine")
    write_ctc(res, tmp_path / "gt", overwrite=True)
    assert sorted(p.name for p in (tmp_path / "gt").iterdir()) == (
        [f"mask{t:03d}.tif" for t in range(6)] + ["notes.txt", "res_track.txt"])
    assert ctc_digits(1000) == 3 and ctc_digits(1001) == 4


def test_ctc_export_splits_gaps(tmp_path):
    labels = moving_discs(n_frames=8)
    labels[4][labels[4] == 2] = 0  # object 2 missed in frame 4: the tracker bridges the gap
    res = run_tracking(labels, config="particle")
    tid = res.table[(res.table["label"] == 2)]["track_id"].unique()
    assert len(tid) == 1 and 4 not in res.table[res.table["track_id"] == tid[0]]["t"].tolist()
    write_ctc(res, tmp_path / "ctc")
    lbep = np.loadtxt(tmp_path / "ctc" / "res_track.txt", dtype=int)
    first = lbep[lbep[:, 0] == tid[0]][0]
    assert first[1:3].tolist() == [0, 3]
    second = lbep[lbep[:, 3] == tid[0]]
    assert second.shape[0] == 1 and second[0, 1] == 5
    assert ctc_scores(tmp_path / "ctc", tmp_path / "ctc")["TRA"] == 1.0


def test_curation_edits(division_result, tmp_path):
    res = division_result
    i = ids(res)
    n = res.n_tracks
    # delete a daughter: the mother keeps one daughter
    d = delete_track(res, i["d2"])
    assert d.n_tracks == n - 1 and i["d2"] not in d.graph and d.graph[i["d1"]] == [i["mother"]]
    assert not (d.relabelled == i["d2"]).any() and (res.relabelled == i["d2"]).any()  # input untouched
    # merge: d1 continues the mother, d2 becomes a root
    m = merge_tracks(res, i["mother"], i["d1"])
    rows = m.table[m.table["track_id"] == i["mother"]]
    assert rows["t"].tolist() == list(range(6)) and m.graph == {}
    assert (m.table[m.table["track_id"] == i["d2"]]["generation"] == 0).all()
    assert (m.relabelled[4] == i["mother"]).sum() == (res.relabelled[4] == i["d1"]).sum()
    np.testing.assert_array_equal(m.tracks_data[:, 0], m.table["track_id"])
    # split: the still cell becomes two tracks from t=2 on
    s = split_track(res, i["still"], 2)
    new = s.table["track_id"].max()
    assert s.table[s.table["track_id"] == new]["t"].tolist() == [2, 3, 4, 5]
    assert s.table[s.table["track_id"] == i["still"]]["t"].tolist() == [0, 1]
    assert link_recall(res.relabelled, s.relabelled) < 1.0
    write_tracks_csv(s, tmp_path / "t.csv")
    assert pd.read_csv(tmp_path / "t.csv")["track_id"].nunique() == n + 1
    assert s.config["edits"] == [f"split {i['still']} 2"]
    for bad in (lambda: delete_track(res, 999), lambda: merge_tracks(res, i["d1"], i["mother"]), lambda: split_track(res, i["still"], 0)):
        with pytest.raises(InputError):
            bad()
    c = counts_table(m)
    assert c["divisions"].sum() == 0
    # a mother left with one daughter still divided: counts.csv and track_summary.csv agree
    fates = track_summary(d).set_index("track_id")["fate"]
    assert fates[i["mother"]] == "divided" and counts_table(d)["divisions"].tolist() == [0, 0, 0, 1, 0, 0]
    # edits rebuild only the frames they touch: the same stacks as relabelling the whole movie
    for edited in (d, m, s, merge_tracks(d, i["mother"], i["d1"])):
        np.testing.assert_array_equal(edited.relabelled, relabel_stack(edited.labels, edited.table))


def test_cli_track(tmp_path, capsys):
    labels, _ = division_stack()
    tifffile.imwrite(tmp_path / "labels.tif", labels.astype(np.uint16))
    tifffile.imwrite(tmp_path / "image.tif", labels.astype(np.float32))
    out = tmp_path / "out"
    rc = main(["track", "--labels", str(tmp_path / "labels.tif"), "--image", str(tmp_path / "image.tif"), "--out", str(out), "--ctc"])
    assert rc == 0
    tab = pd.read_csv(out / "tracks.csv")
    assert list(tab.columns[:8]) == TRACK_COLUMNS and "mean_intensity" in tab.columns
    assert tab["track_id"].nunique() == 4 and (tab["generation"] == 1).sum() == 6
    assert (out / "counts.csv").is_file() and (out / "ctc_RES" / "res_track.txt").is_file()
    assert set(pd.read_csv(out / "track_summary.csv")["track_id"]) == set(tab["track_id"])
    cfg = json.loads((out / "track_config.json").read_text())
    assert cfg["update_method"] == "EXACT" and cfg["seed"] == 0
    relab = tifffile.imread(out / "tracks_labels.tif")
    assert relab.shape == labels.shape and set(np.unique(relab)) == {0, 1, 2, 3, 4}
    before = (out / "tracks.csv").read_bytes()
    assert main(["track", "--labels", str(tmp_path / "labels.tif"), "--out", str(out)]) == 2  # no overwrite
    assert (out / "tracks.csv").read_bytes() == before
    assert main(["track", "--labels", str(tmp_path / "labels.tif"), "--out", str(out), "--overwrite", "--config", "particle",
                 "--pixel-size", "0.5", "--frame-interval", "10"]) == 0
    assert pd.read_csv(out / "tracks.csv")["parent_track_id"].eq(0).all()
    # the earlier run's CTC folder went with its other results: it cannot be scored as this run's
    assert not (out / "ctc_RES").exists() and "removed the earlier run's CTC folder" in capsys.readouterr().err
    summary = pd.read_csv(out / "track_summary.csv")
    np.testing.assert_allclose(summary["duration_min"], (summary["end_t"] - summary["start_t"]) * 10)
    assert json.loads((out / "track_config.json").read_text())["units"] == {"pixel_size_um": 0.5, "frame_interval_min": 10}
    assert main(["track", "--labels", str(tmp_path / "labels.tif"), "--out", str(out), "--overwrite",
                 "--pixel-size", "nan"]) == 2
    # without the options, the movie's own calibration (ImageJ metadata) is used
    tifffile.imwrite(tmp_path / "calibrated.tif", labels.astype(np.float32), imagej=True, resolution=(2.0, 2.0),
                     metadata={"axes": "TYX", "unit": "micron", "finterval": 30})
    assert main(["track", "--labels", str(tmp_path / "labels.tif"), "--image", str(tmp_path / "calibrated.tif"),
                 "--out", str(out), "--overwrite"]) == 0
    assert json.loads((out / "track_config.json").read_text())["units"] == {"pixel_size_um": 0.5,
                                                                             "frame_interval_min": 0.5}
    summary = pd.read_csv(out / "track_summary.csv")
    np.testing.assert_allclose(summary["path_length_um"], summary["path_length_px"] * 0.5, rtol=1e-5)
    assert "from the file's metadata: 0.5 um per pixel, 0.5 min per frame" in capsys.readouterr().err
    # a value typed on the command line is not reported as the file's
    assert main(["track", "--labels", str(tmp_path / "labels.tif"), "--image", str(tmp_path / "calibrated.tif"),
                 "--out", str(out), "--overwrite", "--pixel-size", "1"]) == 0
    said = capsys.readouterr().err
    assert "metadata: 0.5 min per frame (" in said and "metadata: 0.5 um per pixel" not in said
    assert "--pixel-size 1 replaces the file's 0.5 um per pixel" in said  # and the file's value it replaces is said
    tifffile.imwrite(tmp_path / "flat.tif", labels[0].astype(np.uint16))
    assert main(["track", "--labels", str(tmp_path / "flat.tif"), "--out", str(tmp_path / "o2")]) == 2
    # a one-frame stack (1, Y, X) is a stack: one track per object
    tifffile.imwrite(tmp_path / "one.tif", labels[:1].astype(np.uint16))
    assert main(["track", "--labels", str(tmp_path / "one.tif"), "--out", str(tmp_path / "o3")]) == 0
    assert len(pd.read_csv(tmp_path / "o3" / "tracks.csv")) == len(np.unique(labels[0])) - 1


def test_track_summary_hand_computed():
    """Span, gaps, daughters, fate, displacement, path, speed and straightness of a hand-made lineage."""
    from napari_microseg.tracking.export import track_summary
    from napari_microseg.tracking.track import finalize

    rows = [  # track_id, t, y, x, parent, area
        (1, 0, 10, 10, 0, 50), (1, 1, 10, 13, 0, 50), (1, 2, 14, 13, 0, 50),
        (2, 3, 20, 20, 1, 30), (2, 4, 20, 21, 1, 30), (2, 5, 20, 22, 1, 30),
        (3, 3, 50, 6, 1, 12), (3, 4, 50, 2, 1, 12),
        (4, 0, 50, 50, 0, 40), (4, 2, 50, 50, 0, 40),
    ]
    table = pd.DataFrame(rows, columns=["track_id", "t", "y", "x", "parent_track_id", "area"])
    result = finalize(table, n_frames=6, config={"image_shape": [6, 100, 100]})
    summary = track_summary(result, pixel_size=0.5, frame_interval=10).set_index("track_id")
    one = summary.loc[1]
    assert (one.start_t, one.end_t, one.frames, one.gap_frames, one.daughters) == (0, 2, 3, 0, 2)
    assert one.net_displacement_px == pytest.approx(5.0) and one.path_length_px == pytest.approx(7.0)
    assert one.straightness == pytest.approx(5 / 7) and one.mean_speed_px_per_frame == pytest.approx(3.5)
    assert one.path_length_um == pytest.approx(3.5) and one.duration_min == pytest.approx(20)
    assert one.mean_speed_um_per_min == pytest.approx(3.5 * 0.5 / 10)
    assert list(summary.fate) == ["divided", "end of movie", "left the field", "disappeared"]
    four = summary.loc[4]
    assert four.gap_frames == 1 and np.isnan(four.straightness) and four.path_length_px == 0
    assert summary.loc[2].generation == 1 and summary.loc[2].root_track_id == 1
    plain = track_summary(result)
    assert not any(c.endswith(("_um", "_min")) for c in plain.columns) and "mean_area_px" in plain.columns
    # a stage jump is not a step: with stage offsets (stage-shift correction) still cells stay still
    still = pd.DataFrame({"track_id": 1, "t": [0, 1, 2], "y": [30.0, 42.0, 42.0], "x": [30.0, 39.0, 39.0],
                          "parent_track_id": 0})
    jumped = finalize(still, n_frames=3, config={"stage_offsets": [[0, 0], [12, 9], [12, 9]]})
    assert track_summary(jumped).loc[0, "path_length_px"] == pytest.approx(0.0)
    # no tracks at all: the same columns (a spreadsheet template does not change)
    empty = finalize(table.iloc[:0], n_frames=6)
    assert list(track_summary(empty, pixel_size=0.5, frame_interval=10).columns) == \
        list(track_summary(result, pixel_size=0.5, frame_interval=10).columns)
    with pytest.raises(InputError, match="pixel size"):
        track_summary(result, pixel_size=0)


def test_cli_evaluate_tracks_scores_track_simulate_and_ctc_folders(tmp_path, capsys):
    """``microseg evaluate tracks`` reads the folders the package writes and gives traccuracy's scores."""
    from napari_microseg.simulate.nuclei import simulate_nuclei_timelapse
    from napari_microseg.tracking.track import finalize

    sim_dir, out = tmp_path / "sim", tmp_path / "tracked"
    assert main(["simulate", "nuclei", "--out", str(sim_dir), "--frames", "6", "--nuclei", "8", "--seed", "4",
                 "--shape", "96", "96"]) == 0
    labels = tifffile.imread(sim_dir / "labels.tif")
    damaged = labels.copy()
    damaged[3] = 0  # a missing frame: detection and link errors to find
    tifffile.imwrite(tmp_path / "damaged.tif", damaged)
    assert main(["track", "--labels", str(tmp_path / "damaged.tif"), "--out", str(out), "--ctc"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "tracks", "--gt", str(sim_dir), "--pred", str(out), "--out", str(tmp_path / "m.csv")]) == 0
    printed = capsys.readouterr().out
    row = pd.read_csv(tmp_path / "m.csv").iloc[0]
    truth_table = pd.read_csv(sim_dir / "tracks.csv")
    truth = finalize(truth_table, n_frames=6, labels=labels)
    expected = ctc_scores(truth, run_tracking(damaged))
    assert row["TRA"] == pytest.approx(expected["TRA"], abs=1e-6) and row["DET"] == pytest.approx(expected["DET"], abs=1e-6)
    assert 0.5 < row["DET"] < 1.0 and f"TRA {row['TRA']:.4f}" in printed
    # the CTC export of the same result scores the same
    assert main(["evaluate", "tracks", "--gt", str(sim_dir), "--pred", str(out / "ctc_RES"), "--out", str(tmp_path / "c.csv")]) == 0
    assert pd.read_csv(tmp_path / "c.csv").iloc[0]["TRA"] == pytest.approx(row["TRA"], abs=1e-6)
    # refusals: an existing output, a file instead of a folder, a folder of something else
    assert main(["evaluate", "tracks", "--gt", str(sim_dir), "--pred", str(out), "--out", str(tmp_path / "m.csv")]) == 2
    assert main(["evaluate", "tracks", "--gt", str(sim_dir / "labels.tif"), "--pred", str(out), "--out", str(tmp_path / "x.csv")]) == 2
    (tmp_path / "empty").mkdir()
    assert main(["evaluate", "tracks", "--gt", str(sim_dir), "--pred", str(tmp_path / "empty"), "--out", str(tmp_path / "x.csv")]) == 2
    assert "expected tracks.csv" in capsys.readouterr().err
    # the Tracking widget's CSV export (tracks.csv, no label stack) beside its CTC export: pointed to it
    widget_export = tmp_path / "widget_export"
    widget_export.mkdir()
    (widget_export / "tracks.csv").write_bytes((out / "tracks.csv").read_bytes())
    (widget_export / "ctc_RES").mkdir()
    assert main(["evaluate", "tracks", "--gt", str(sim_dir), "--pred", str(widget_export), "--out", str(tmp_path / "x.csv")]) == 2
    assert f"give its CTC folder {widget_export / 'ctc_RES'}" in capsys.readouterr().err
    # tracks of another field size: one line, not traccuracy's traceback (nor its ValueError on CTC folders)
    tifffile.imwrite(tmp_path / "crop.tif", damaged[:, :64, :64])
    assert main(["track", "--labels", str(tmp_path / "crop.tif"), "--out", str(tmp_path / "crop"), "--ctc"]) == 0
    for pred in (tmp_path / "crop", tmp_path / "crop" / "ctc_RES"):
        assert main(["evaluate", "tracks", "--gt", str(sim_dir), "--pred", str(pred), "--out", str(tmp_path / "y.csv")]) == 2
        assert "score tracks of the same movie" in capsys.readouterr().err


def test_cli_track_reads_zarr_labels_as_segment_writes_them(tmp_path):
    """``microseg segment`` can write Zarr labels; ``microseg track`` must read them (and TIFF or FITS)."""
    from napari_microseg.io.images import read_image, write_zarr

    labels, _ = division_stack()
    write_zarr(tmp_path / "labels.zarr", labels.astype(np.uint32))
    assert main(["track", "--labels", str(tmp_path / "labels.zarr"), "--out", str(tmp_path / "z")]) == 0
    from_tiff = tmp_path / "t"
    tifffile.imwrite(tmp_path / "labels.tif", labels.astype(np.uint16))
    assert main(["track", "--labels", str(tmp_path / "labels.tif"), "--out", str(from_tiff)]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "z" / "tracks.csv"), pd.read_csv(from_tiff / "tracks.csv"))
    # Zarr is tracked frame by frame and its relabelled stack streamed to disk: the same files
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "z" / "tracks_labels.tif"),
                                  tifffile.imread(from_tiff / "tracks_labels.tif"))
    assert tifffile.TiffFile(tmp_path / "z" / "tracks_labels.tif").series[0].axes == "TYX"
    assert main(["track", "--labels", str(tmp_path / "labels.zarr"), "--out", str(tmp_path / "z"), "--ctc", "--overwrite"]) == 0
    assert main(["track", "--labels", str(tmp_path / "labels.tif"), "--out", str(from_tiff), "--ctc", "--overwrite"]) == 0
    for mask in sorted((from_tiff / "ctc").glob("mask*.tif")):
        np.testing.assert_array_equal(tifffile.imread(tmp_path / "z" / "ctc" / mask.name), tifffile.imread(mask))
    # a one-frame stack stays a stack, in Zarr as in TIFF; OME-style size-1 axes are dropped
    write_zarr(tmp_path / "one.zarr", labels[:1].astype(np.uint32))
    assert read_image(tmp_path / "one.zarr").data.shape == (1,) + labels.shape[1:]
    write_zarr(tmp_path / "tczyx.zarr", labels[:, None, None].astype(np.uint32))
    assert read_image(tmp_path / "tczyx.zarr").data.shape == labels.shape
    write_zarr(tmp_path / "image2d.zarr", labels[:1, None, None].astype(np.uint32))  # OME 2-D image
    assert read_image(tmp_path / "image2d.zarr").data.shape == labels.shape[1:]
    # a (T, 1, Y, X) TIFF tracks as (T, Y, X)
    tifffile.imwrite(tmp_path / "t1yx.tif", labels[:, None].astype(np.uint16))
    assert main(["track", "--labels", str(tmp_path / "t1yx.tif"), "--out", str(tmp_path / "t1")]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "t1" / "tracks.csv"), pd.read_csv(from_tiff / "tracks.csv"))


def test_a_movie_without_objects_gives_zero_counts_not_a_failure(tmp_path, capsys):
    """A well where nothing grew: `track` writes no tracks and zero counts (it used to refuse the
    movie, and a plate's batch run listed the well as failed and left it out of counts.csv)."""
    from napari_microseg.batch.runner import run_batch_sync

    movies = tmp_path / "plate"
    movies.mkdir()
    tifffile.imwrite(movies / "empty_well.tif", np.zeros((4, 32, 32), np.uint16))
    labels, _ = division_stack()
    tifffile.imwrite(movies / "cells.tif", labels.astype(np.uint16))
    assert main(["track", "--labels", str(movies / "empty_well.tif"), "--out", str(tmp_path / "one")]) == 0
    assert "none of the 4 frames holds an object" in capsys.readouterr().err
    counts = pd.read_csv(tmp_path / "one" / "counts.csv")
    assert list(counts["t"]) == [0, 1, 2, 3] and counts["count"].eq(0).all()
    assert len(pd.read_csv(tmp_path / "one" / "tracks.csv")) == 0
    assert tifffile.imread(tmp_path / "one" / "tracks_labels.tif").max() == 0
    summary = run_batch_sync("track", movies, tmp_path / "batch", workers=0)
    assert (summary.processed, summary.failed) == (2, 0)
    merged = pd.read_csv(tmp_path / "batch" / "counts.csv")
    assert merged[merged["image"] == "empty_well.tif"]["count"].tolist() == [0, 0, 0, 0]
