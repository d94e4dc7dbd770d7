"""Tracking core: divisions, entering/leaving objects, stage shifts, points."""

import numpy as np
import pandas as pd
import pytest
from skimage.draw import disk

from napari_microseg.errors import InputError
from napari_microseg.tracking.metrics import link_recall, point_link_recall
from napari_microseg.tracking.shift import estimate_stage_shift
from napari_microseg.tracking.track import TRACK_COLUMNS, objects_from_labels, run_tracking, track, track_points


def division_stack(n_frames=6, shape=(100, 100)):
    """Cell A moves right and divides at frame 3 into two daughters; cell B sits still.
    Returns labels (segmentation labels differ from frame to frame for B) and the true identity stack."""
    lab = np.zeros((n_frames,) + shape, np.int32)
    ident = np.zeros_like(lab)
    for t in range(n_frames):
        if t < 3:
            rr, cc = disk((30, 20 + 3 * t), 6, shape=shape)
            lab[t][rr, cc], ident[t][rr, cc] = 1, 1
        else:
            rr, cc = disk((22, 26 + t), 5, shape=shape)
            lab[t][rr, cc], ident[t][rr, cc] = 2, 2
            rr, cc = disk((40, 26 + t), 5, shape=shape)
            lab[t][rr, cc], ident[t][rr, cc] = 3, 3
        rr, cc = disk((75, 70), 6, shape=shape)
        lab[t][rr, cc], ident[t][rr, cc] = 10 + t, 4
    return lab, ident


def test_division_columns_and_lineage():
    labels, _ = division_stack()
    image = labels.astype(np.float32) * 2.0
    res = run_tracking(labels, image, config="cell")
    tab = res.table
    assert list(tab.columns[: len(TRACK_COLUMNS)]) == TRACK_COLUMNS
    assert {"area", "mean_intensity"} <= set(tab.columns)
    assert len(tab) == 3 * 2 + 3 * 3
    mother = tab[(tab["t"] == 0) & (tab["label"] == 1)]["track_id"].item()
    still = tab[(tab["t"] == 0) & (tab["label"] == 10)]["track_id"].item()
    d1 = tab[(tab["t"] == 3) & (tab["label"] == 2)]["track_id"].item()
    d2 = tab[(tab["t"] == 3) & (tab["label"] == 3)]["track_id"].item()
    assert len({mother, still, d1, d2}) == 4
    m = tab[tab["track_id"] == mother]
    assert m["t"].tolist() == [0, 1, 2] and m["label"].tolist() == [1, 1, 1]
    assert (m["parent_track_id"] == 0).all() and (m["root_track_id"] == mother).all() and (m["generation"] == 0).all()
    for d, lab in ((d1, 2), (d2, 3)):
        rows = tab[tab["track_id"] == d]
        assert rows["t"].tolist() == [3, 4, 5] and (rows["label"] == lab).all()
        assert (rows["parent_track_id"] == mother).all() and (rows["root_track_id"] == mother).all()
        assert (rows["generation"] == 1).all()
    s = tab[tab["track_id"] == still]
    assert s["label"].tolist() == [10, 11, 12, 13, 14, 15] and (s["parent_track_id"] == 0).all()
    assert res.graph == {d1: [mother], d2: [mother]}
    # napari Tracks data and relabelled stack agree with the table
    assert res.tracks_data.shape == (len(tab), 4)
    np.testing.assert_array_equal(res.tracks_data[:, 0], tab["track_id"].to_numpy())
    assert res.relabelled.shape == labels.shape
    assert set(np.unique(res.relabelled[4])) == {0, still, d1, d2}
    np.testing.assert_allclose(tab[tab["label"] == 2]["mean_intensity"], 4.0)
    # the particle model never divides
    part = run_tracking(labels, config="particle")
    assert part.graph == {} and (part.table["parent_track_id"] == 0).all()


def moving_discs(n_frames=10, shape=(120, 160), jump_at=None, jump=(15, 15)):
    """Discs moving right by 3 px/frame; one leaves across the right border, one enters at frame 4."""
    lab = np.zeros((n_frames,) + shape, np.int32)
    starts = {1: (20, 20), 2: (60, 40), 3: (100, 30), 4: (40, 138)}  # 4 leaves on the right
    for t in range(n_frames):
        off = np.array(jump) if (jump_at is not None and t >= jump_at) else np.zeros(2)
        for ident, (y, x) in starts.items():
            rr, cc = disk((y + off[0], x + 3 * t + off[1]), 6, shape=shape)
            lab[t][rr, cc] = ident
        if t >= 4:  # 5 enters from the left border
            rr, cc = disk((85 + off[0], -4 + 3 * (t - 4) + off[1]), 6, shape=shape)
            lab[t][rr, cc] = 5
    return lab


def test_linking_with_entering_and_leaving():
    ident = moving_discs()
    res = run_tracking(ident, config="particle")
    assert link_recall(ident, res.relabelled) == 1.0
    # one track per true object, no track shared by two objects
    pairs = {(int(g), int(p)) for g, p in zip(ident.ravel(), res.relabelled.ravel()) if g}
    assert len(pairs) == 5 and len({p for _, p in pairs}) == 5
    spans = res.table.groupby("label")["t"].agg(["min", "max"])
    assert spans.loc[5, "min"] == 4 and spans.loc[4, "max"] < 9


def test_stage_shift_correction_keeps_tracks():
    ident = moving_discs(jump_at=5, jump=(20, -20))  # 26 px: beyond search radius and gap closing
    broken = run_tracking(ident, config="particle", max_search_radius=10)
    assert link_recall(ident, broken.relabelled) < 0.9
    for mode, image in (("objects", None), ("images", ident.astype(np.float32) * 100)):
        res = run_tracking(ident, image, config="particle", max_search_radius=10, stage_shift=mode)
        assert link_recall(ident, res.relabelled) == 1.0, mode
        # coordinates stay in the original image frame
        row = res.table[(res.table["t"] == 6) & (res.table["label"] == 1)]
        assert row["y"].item() == pytest.approx(40, abs=0.5) and row["x"].item() == pytest.approx(18, abs=0.5)
        assert res.config["stage_shift"] == mode


def test_estimate_stage_shift_sign():
    rng = np.random.default_rng(0)
    base = rng.random((64, 64)).astype(np.float32)
    stack = np.stack([base, np.roll(base, (5, -7), axis=(0, 1)), np.roll(base, (5, -7), axis=(0, 1))])
    off = estimate_stage_shift(stack)
    np.testing.assert_allclose(off, [[0, 0], [5, -7], [5, -7]], atol=0.01)


def test_estimate_stage_shift_on_real_dapi_crops(shared_data):
    """A time-lapse cut from the real DAPI image with known stage jumps (content enters and leaves at
    the edges): the cumulative offsets are found within 0.5 px."""
    from skimage.io import imread

    dapi = imread(shared_data / "isl_phase_dapi" / "dapi.png").astype(np.float32)
    dapi = dapi if dapi.ndim == 2 else dapi[..., :3].mean(-1)
    offsets = np.array([(0, 0), (3, -2), (10, 5), (12, 7), (-4, 9)])
    y0, x0, side = 100, 100, 512
    stack = np.stack([dapi[y0 + dy:y0 + dy + side, x0 + dx:x0 + dx + side] for dy, dx in offsets])
    # the view moved by (dy, dx): the content moves the other way
    np.testing.assert_allclose(estimate_stage_shift(stack), -offsets, atol=0.5)


def test_estimate_stage_shift_across_an_empty_frame():
    """A black frame between two jumps: the jump across it is measured from the frame before it."""
    rng = np.random.default_rng(0)
    base = rng.random((64, 64)).astype(np.float32)
    moved = np.roll(base, (5, -7), axis=(0, 1))
    stack = np.stack([base, np.zeros_like(base), moved, np.roll(moved, (3, 2), axis=(0, 1))])
    off = estimate_stage_shift(stack)
    np.testing.assert_allclose(off, [[0, 0], [0, 0], [5, -7], [8, -5]], atol=0.01)


def test_track_is_a_progress_generator_and_rejects_bad_input():
    labels, _ = division_stack()
    events = []
    gen = track(labels, config="cell")
    try:
        while True:
            events.append(next(gen))
    except StopIteration as stop:
        result = stop.value
    assert events and events[-1].done == events[-1].total
    assert result.n_tracks == 4
    nothing = run_tracking(np.zeros((3, 10, 10), np.int32))  # no objects: no tracks, not an error
    assert nothing.n_tracks == 0 and nothing.info["no_objects"] and nothing.relabelled.shape == (3, 10, 10)
    with pytest.raises(InputError):
        run_tracking(labels[0])
    with pytest.raises(InputError):
        run_tracking(labels, np.zeros((2, 5, 5)))
    with pytest.raises(InputError):
        run_tracking(labels, config="no-such-config")


def test_track_points_walkers_and_update_modes():
    rng = np.random.default_rng(1)
    n, T = 40, 15
    pos = rng.uniform(0, 400, (n, 2))
    rows = []
    for t in range(T):
        rows.append(pd.DataFrame({"t": t, "y": pos[:, 0], "x": pos[:, 1], "true_id": np.arange(n)}))
        pos = pos + rng.normal(0, 1.0, pos.shape)
    pts = pd.concat(rows, ignore_index=True)
    for method in ("exact", "approximate"):
        res = track_points(pts, config="particle", update_method=method)
        assert res.relabelled is None and res.config["update_method"] == method.upper()
        tab = res.table
        assert point_link_recall(tab["true_id"], tab["t"], tab["track_id"]) > 0.99
    # tiled tracking (used above ``tile_objects`` objects per frame) stitches the same links
    tiled = track_points(pts, config="particle", tile_objects=10)
    tab = tiled.table
    assert len(tab) == len(pts) and tab["track_id"].nunique() < 2 * n
    assert point_link_recall(tab["true_id"], tab["t"], tab["track_id"]) > 0.99
    assert objects_from_labels(division_stack()[0])["label"].tolist()[:2] == [1, 10]


@pytest.mark.parametrize("n_frames,step_size", [(3, 10), (13, 10), (5, 1)])
def test_last_frame_is_linked_whatever_the_stack_length(n_frames, step_size):
    """btrack 0.7 drops the last frame's objects when a step ends on it; every object must come back."""
    points = pd.DataFrame({"t": np.repeat(np.arange(n_frames), 2), "y": np.tile([10.0, 60.0], n_frames),
                           "x": np.tile([10.0, 60.0], n_frames) + np.repeat(np.arange(n_frames), 2) * 1.5})
    result = track_points(points, step_size=step_size)
    assert sorted(result.table.t.tolist()) == sorted(points.t.tolist())
    # and linked: two tracks spanning all frames, not singletons in the last frame
    assert result.n_tracks == 2 and set(result.table.groupby("track_id").t.max()) == {n_frames - 1}


def test_last_frame_of_a_label_stack_is_relabelled():
    stack = np.zeros((13, 60, 60), np.uint16)
    for t in range(13):
        stack[t][disk((10 + t, 10), 3)] = 1
        stack[t][disk((40, 40), 3)] = 2
    result = run_tracking(stack)
    assert len(result.table) == 26 and np.unique(result.relabelled[-1]).size == 3


def test_single_frame_gives_one_track_per_object():
    stack = np.zeros((1, 40, 40), np.uint16)
    stack[0][disk((8, 8), 3)] = 1
    stack[0][disk((28, 28), 4)] = 5
    result = run_tracking(stack)
    assert result.n_tracks == 2 and (result.table.parent_track_id == 0).all()
    assert set(np.unique(result.relabelled)) == {0, 1, 2}


def test_huge_label_ids_and_mask_stacks_are_tracked():
    labels = np.zeros((2, 20, 20), np.uint32)
    labels[:, 2:5, 2:5] = 3_000_000_000
    labels[:, 10:15, 10:15] = 7
    result = run_tracking(labels)
    assert sorted(result.table.label.unique()) == [7, 3_000_000_000] and result.n_tracks == 2
    assert set(np.unique(result.relabelled)) == {0, 1, 2}
    # a boolean mask stack: its connected components are the objects
    assert run_tracking(labels > 0).n_tracks == 2


def test_track_points_refuses_frames_that_are_not_whole_numbers():
    good = pd.DataFrame({"t": [0, 1, 2], "y": [1.0, 2.0, 3.0], "x": [1.0, 1.0, 1.0]})
    for column, values, message in (("t", [0, 1.5, 2], "whole number"), ("t", [0, np.nan, 2], "whole number")):
        with pytest.raises(InputError, match=message):
            track_points(good.assign(**{column: values}))
    with pytest.raises(InputError, match="n_frames is 1"):
        track_points(good, n_frames=1)
    with pytest.raises(InputError, match="max_search_radius"):
        track_points(good, max_search_radius=float("nan"))


def test_tracking_configs_are_checked_in_one_line_and_btrack_nulls_are_dropped(tmp_path):
    import json

    from napari_microseg.tracking.track import CONFIG_DIR, check_config

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"motion_model": {"name": "x", "measurements": 3, "states": 3}}))
    with pytest.raises(InputError) as err:
        check_config(bad)
    assert "\n" not in str(err.value) and "A: Field required" in str(err.value)
    # btrack's own save_config writes unset fields as null (e.g. "G": null beside "Q")
    cfg = json.loads((CONFIG_DIR / "cell.json").read_text())
    cfg["motion_model"]["G"] = None
    saved = tmp_path / "from_btrack.json"
    saved.write_text(json.dumps(cfg))
    assert "G" not in check_config(saved)["motion_model"]
    labels = np.zeros((3, 40, 40), np.uint16)
    for t in range(3):
        labels[t][disk((10 + 2 * t, 20), 4)] = 1
    assert run_tracking(labels, config=str(saved)).n_tracks == 1


def test_relabelled_stack_is_as_small_as_the_track_ids_allow():
    """uint16 up to 65535 tracks (a long movie's relabelled stack is not twice its labels), uint32 above;
    an edit that adds a track id past 65535 promotes the stack."""
    from napari_microseg.tracking.track import finalize, relabel_frames, relabel_stack

    labels = np.zeros((2, 8, 8), np.uint16)
    labels[:, 2:4, 2:4] = 1
    labels[:, 5:7, 5:7] = 2
    table = pd.DataFrame({"track_id": [1, 1, 2, 2], "t": [0, 1, 0, 1], "y": 2.5, "x": 2.5, "parent_track_id": 0,
                          "label": [1, 1, 2, 2]})
    small = finalize(table, labels=labels)
    assert small.relabelled.dtype == np.uint16 and set(np.unique(small.relabelled)) == {0, 1, 2}
    big = table.assign(track_id=table["track_id"].replace({2: 70_000}))
    stack = relabel_stack(labels, big)
    assert stack.dtype == np.uint32 and stack[1, 6, 6] == 70_000
    promoted = relabel_frames(small.relabelled, labels, big, frames=[0, 1])
    assert promoted.dtype == np.uint32 and np.array_equal(promoted, stack)


class FrameOnlyStack:
    """A stack on disk as the tracker sees it (shape, dtype, ``compute``), which fails the test if
    anything reads it whole or more than a frame at a time; counts the frames read."""

    def __init__(self, data):
        self.data, self.shape, self.dtype, self.ndim = data, data.shape, data.dtype, data.ndim
        self.reads = 0

    def __getitem__(self, key):
        assert isinstance(key, (int, np.integer)), f"read more than one frame: {key!r}"
        self.reads += 1
        return self.data[key]

    def compute(self):
        raise AssertionError("the whole stack was read into memory")

    def __array__(self, dtype=None, copy=None):
        raise AssertionError("the whole stack was read into memory")


@pytest.mark.parametrize("kind", ["labels", "mask 0/255", "float labels"])
def test_a_stack_on_disk_is_tracked_frame_by_frame_as_in_memory(kind):
    """Labels, a 0/255 mask stack or whole-number floats given lazily (dask / zarr) are read one frame
    at a time (labels and image, stage shift included) and give the same tracks; the relabelled
    stack is lazy and equal to the in-memory one."""
    from napari_microseg.tracking.track import FrameStack

    labels, _ = division_stack()
    if kind == "mask 0/255":  # the division's daughters touch nothing: one object per component
        labels = ((labels > 0) * 255).astype(np.uint8)
    elif kind == "float labels":
        labels = labels.astype(np.float32)
    image = (labels > 0).astype(np.float32) * 100 + 5
    expected = run_tracking(labels, image, config="cell", stage_shift="objects")
    lazy_labels, lazy_image = FrameOnlyStack(labels), FrameOnlyStack(image)
    got = run_tracking(lazy_labels, lazy_image, config="cell", stage_shift="objects")
    pd.testing.assert_frame_equal(got.table, expected.table)
    assert got.info["mask_converted"] is expected.info["mask_converted"] is (kind == "mask 0/255")
    assert isinstance(got.labels, FrameStack) and hasattr(got.relabelled, "compute")
    reads = lazy_labels.reads
    assert reads <= 3 * len(labels)  # mask check, measuring, stage shift: each frame once
    np.testing.assert_array_equal(np.asarray(got.relabelled), expected.relabelled)
    assert got.relabelled.dtype == expected.relabelled.dtype


def test_a_stack_on_disk_with_bad_values_is_refused_naming_the_frame():
    labels, _ = division_stack()
    negative = labels.copy()
    negative[4, 0, 0] = -3
    with pytest.raises(InputError, match="frame 4"):
        run_tracking(FrameOnlyStack(negative))
    fractional = labels.astype(np.float32)
    fractional[2, 50, 50] = 0.5
    with pytest.raises(InputError, match="frame 2"):
        run_tracking(FrameOnlyStack(fractional))
    with pytest.raises(InputError, match="integers"):
        run_tracking(FrameOnlyStack(labels.astype(np.complex64)))


def test_a_stack_on_disk_with_nan_images_is_refused_in_one_line_and_empty_stacks_have_no_shifts():
    """Stage shift from images on disk: a NaN frame (even one without objects) is an InputError naming
    the frame, as the in-memory path refuses the stack (it was skimage's traceback)."""
    labels, _ = division_stack()
    labels[1] = 0
    image = (labels > 0).astype(np.float32) * 100
    image[1, 5, 5] = np.nan
    with pytest.raises(InputError, match="frame 1"):
        run_tracking(FrameOnlyStack(labels), FrameOnlyStack(image), stage_shift="images")
    assert estimate_stage_shift(np.zeros((0, 10, 10))).shape == (0, 2)


def test_an_intensity_image_given_as_labels_is_refused_at_once():
    """An integer intensity movie passed as labels: every grey level makes specks of 1-2 px over the
    whole frame (thousands per frame, which kept btrack busy for hours); refused after measuring.
    Labels of small spots (4 px each, sparse) are still tracked."""
    from napari_microseg.simulate.nuclei import simulate_nuclei_timelapse

    sim = simulate_nuclei_timelapse(n_frames=3, shape=(64, 64), n_nuclei=6, seed=1)
    movie = (sim.fluorescence * 4000).astype(np.uint16)
    with pytest.raises(InputError, match="look like an intensity image"):
        objects_from_labels(movie)
    noisy = np.random.default_rng(0).normal(2000, 300, (2, 256, 256)).clip(0).astype(np.uint16)  # ~1900 grey levels
    with pytest.raises(InputError, match="look like an intensity image"):
        objects_from_labels(noisy)
    confluent = np.repeat(np.arange(1, 257, dtype=np.uint16).reshape(16, 16).repeat(16, 0).repeat(16, 1)[None], 2, 0)
    assert len(objects_from_labels(confluent)) == 2 * 256  # labels tiling the whole frame are labels
    spots = np.zeros((3, 64, 64), np.uint16)
    for t in range(3):
        for i in range(20):
            y, x = 3 * i + 2, 10 + 2 * t
            spots[t, y:y + 2, x:x + 2] = i + 1
    assert len(objects_from_labels(spots)) == 60


def test_a_given_search_radius_also_limits_the_optimisers_links():
    """One object at x=20 for frames 0-2, another at x=33 for frames 3-5: a 13 px step. With a 3 px
    radius they are two tracks, with or without the global optimisation (its own link distance, 20 px
    for the particle config, used to join them); with a 20 px radius, one track. (Session 31: the radius
    caps that distance given or not; the particle config's own is 10 px, below the step.)"""
    points = pd.DataFrame({"t": range(6), "y": [50.0] * 6, "x": [20.0] * 3 + [33.0] * 3})
    for optimize in (True, False):
        assert track_points(points, config="particle", max_search_radius=3, optimize=optimize).table["track_id"].nunique() == 2
    assert track_points(points, config="particle", max_search_radius=20).table["track_id"].nunique() == 1
    assert track_points(points, config="particle").table["track_id"].nunique() == 2
