"""Property tests of the nuclei simulator ([N])."""

import numpy as np
import pytest
from skimage.registration import phase_cross_correlation

from napari_microseg.errors import InputError
from napari_microseg.simulate.nuclei import simulate_nuclei_image, simulate_nuclei_timelapse

BUSY = dict(n_frames=20, shape=(128, 128), n_nuclei=18, division_rate=0.06, death_rate=0.03, seed=3)


@pytest.fixture(scope="module")
def busy():
    return simulate_nuclei_timelapse(**BUSY)


def _centroids(labels):
    yy, xx = np.mgrid[: labels.shape[0], : labels.shape[1]]
    out = {}
    for v in np.unique(labels):
        if v:
            m = labels == v
            out[int(v)] = (yy[m].mean(), xx[m].mean(), int(m.sum()))
    return out


def test_shapes_dtypes_and_params(busy):
    T, (Y, X) = BUSY["n_frames"], BUSY["shape"]
    assert busy.fluorescence.shape == busy.phase.shape == busy.labels.shape == (T, Y, X)
    assert busy.fluorescence.dtype == np.float32 and busy.phase.dtype == np.float32
    assert busy.labels.dtype == np.uint16
    assert list(busy.tracks.columns[:5]) == ["track_id", "t", "y", "x", "parent_track_id"]
    import json

    json.dumps(busy.params)
    assert busy.params["seed"] == 3 and busy.params["division_rate"] == 0.06


def test_tracks_agree_with_labels_frame_by_frame(busy):
    for t in range(busy.labels.shape[0]):
        cents = _centroids(busy.labels[t])
        rows = busy.tracks[busy.tracks.t == t]
        assert set(rows.track_id) == set(cents), f"frame {t}: label ids differ from track ids"
        for r in rows.itertuples():
            cy, cx, area = cents[r.track_id]
            assert abs(cy - r.y) < 0.5 and abs(cx - r.x) < 0.5
            assert r.area == area and r.label == r.track_id


def test_ids_persist_and_only_end_at_events(busy):
    tr, ev = busy.tracks, busy.events
    T = busy.labels.shape[0]
    ends = {(int(e.track_id), int(e.t)): e.event for e in ev.itertuples()}
    n_div = n_death = 0
    for tid, g in tr.groupby("track_id"):
        g = g.sort_values("t")
        # short steps between consecutive frames: ids are not swapped between nuclei
        step = np.hypot(np.diff(g.y), np.diff(g.x)) / np.diff(g.t)
        assert step.max(initial=0) < 8.0, f"track {tid} jumps {step.max():.1f} px"
        last = int(g.t.max())
        if last < T - 1:
            # the track ends at a division, a death, leaving the field -- or the nucleus is hidden
            kinds = [k for (i, t), k in ends.items() if i == tid]
            assert kinds, f"track {tid} ends at t={last} without an event"
            n_div += "division" in kinds
            n_death += "death" in kinds
    assert n_div >= 3 and n_death >= 2  # the busy settings do produce events


def test_divisions_give_two_adjacent_daughters_with_new_ids(busy):
    tr, ev = busy.tracks, busy.events
    checked = 0
    for e in ev[ev.event == "division"].itertuples():
        mother = tr[(tr.track_id == e.track_id)].sort_values("t")
        daughters = tr[tr.parent_track_id == e.track_id]
        ids = sorted(daughters.track_id.unique())
        last = mother.iloc[-1]
        Y, X = busy.labels.shape[1:]
        at_border = min(last.y, last.x, Y - 1 - last.y, X - 1 - last.x) < 12
        assert 1 <= len(ids) <= 2 or (at_border and not ids)  # daughters may fall outside the field
        if not ids:
            continue
        assert all(i > e.track_id for i in ids)  # new ids
        first = daughters.sort_values("t").groupby("track_id").first()
        # daughters appear in the next frame (one may be hidden by its sister for a frame or two)
        assert first.t.min() == e.t + 1 and first.t.max() <= e.t + 3
        assert (np.hypot(first.y - last.y, first.x - last.x) < 20).all()  # next to the mother
        if len(ids) == 2:
            assert np.hypot(*(first.iloc[0][["y", "x"]] - first.iloc[1][["y", "x"]])) < 25
            checked += 1
        assert e.track_id not in set(tr[tr.t > e.t].track_id)  # mother ends
    assert checked >= 2


def test_channels_registered(busy):
    fl = busy.fluorescence[5].astype(float)
    ph = busy.phase[5].astype(float)
    shift, _, _ = phase_cross_correlation(fl - fl.mean(), -(ph - ph.mean()), upsample_factor=4, normalization=None)
    assert np.all(np.abs(shift) <= 0.5)
    lab = busy.labels[5] > 0
    # fluorescence: bright nuclei; phase: dark nuclei on grey, both at the label positions
    assert fl[lab].mean() > 3 * fl[~lab].mean()
    assert ph[lab].mean() < ph[~lab].mean() - 0.1
    # the phase channel has a bright halo somewhere above the background
    assert np.percentile(ph, 99.5) > np.median(ph) + 0.1


def test_deterministic_and_seed_dependent():
    kw = dict(n_frames=3, shape=(64, 64), n_nuclei=6)
    a = simulate_nuclei_timelapse(seed=1, **kw)
    b = simulate_nuclei_timelapse(seed=1, **kw)
    c = simulate_nuclei_timelapse(seed=2, **kw)
    assert np.array_equal(a.fluorescence, b.fluorescence) and np.array_equal(a.labels, b.labels)
    assert a.tracks.equals(b.tracks)
    assert not np.array_equal(a.labels, c.labels)


def test_stage_shift_moves_all_nuclei_together():
    sim = simulate_nuclei_timelapse(n_frames=6, shape=(128, 128), n_nuclei=15, motion_sd=0.3, stage_shift_sd=6.0, division_rate=0, death_rate=0, enter_leave=False, seed=5)
    off = sim.stage_offsets
    tr = sim.tracks
    for t in range(1, 6):
        a = tr[tr.t == t - 1].set_index("track_id")
        b = tr[tr.t == t].set_index("track_id")
        common = a.index.intersection(b.index)
        d = (b.loc[common, ["y", "x"]] - a.loc[common, ["y", "x"]]).median().to_numpy()
        assert np.allclose(d, off[t] - off[t - 1], atol=1.0)


def test_enter_leave_with_drift():
    sim = simulate_nuclei_timelapse(n_frames=15, shape=(96, 96), n_nuclei=12, drift=(0.0, 3.0), division_rate=0, death_rate=0, seed=2)
    kinds = set(sim.events.event)
    assert {"enter", "leave"} <= kinds
    entered = sim.events[sim.events.event == "enter"].track_id
    first = sim.tracks[sim.tracks.track_id.isin(entered)].sort_values("t").groupby("track_id").first()
    edge_distance = np.minimum.reduce([first.y, first.x, 95 - first.y, 95 - first.x])
    assert (edge_distance < 12).all()  # nuclei enter at the border, never appear mid-field
    assert (first.x < 20).mean() >= 0.5  # drifting right: most enter on the left


def test_no_touching_keeps_labels_apart():
    sim = simulate_nuclei_timelapse(n_frames=4, shape=(96, 96), n_nuclei=25, allow_touching=False, seed=4)
    for lab in sim.labels:
        for a, b in ((lab[1:], lab[:-1]), (lab[:, 1:], lab[:, :-1])):
            assert not np.any((a > 0) & (b > 0) & (a != b))


def test_uint16_output_and_bad_input():
    sim = simulate_nuclei_timelapse(n_frames=2, shape=(48, 48), n_nuclei=3, output_dtype="uint16", seed=0)
    assert sim.fluorescence.dtype == np.uint16
    with pytest.raises(InputError):
        simulate_nuclei_timelapse(n_frames=0)
    with pytest.raises(InputError):
        simulate_nuclei_timelapse(shape=(64,))
    with pytest.raises(InputError):
        simulate_nuclei_timelapse(output_dtype="int8")


def test_training_image_labels_and_variety():
    images, means = [], []
    for seed in range(6):
        img, lab = simulate_nuclei_image(shape=(128, 160), n_nuclei=20, seed=seed)
        assert img.shape == lab.shape == (128, 160) and img.dtype == np.float32 and lab.dtype == np.uint16
        assert 0 <= img.min() and img.max() <= 1
        ids = np.unique(lab)
        assert np.array_equal(ids, np.arange(ids.max() + 1))  # consecutive 0..n
        assert ids.max() >= 5
        assert img[lab > 0].mean() > img[lab == 0].mean() + 0.04  # bright nuclei, dark background
        means.append(img[lab == 0].mean())
        images.append(img)
    assert np.ptp(means) > 0.02  # appearance varies between calls
    again, _ = simulate_nuclei_image(shape=(128, 160), n_nuclei=20, seed=0)
    assert np.array_equal(again, images[0])


def test_timelapse_generator_reports_each_frame_and_gives_the_same_result():
    """The Simulation widget's progress bar and Stop act between frames of this generator."""
    from napari_microseg.simulate.nuclei import simulate_nuclei_timelapse, simulate_nuclei_timelapse_iter
    from napari_microseg.simulate.samples import generate_nuclei

    from napari_microseg.progress import drain

    steps = []
    result = drain(simulate_nuclei_timelapse_iter(n_frames=4, shape=(64, 64), n_nuclei=5, seed=7), on_event=steps.append)
    assert [(s.done, s.total) for s in steps] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    np.testing.assert_array_equal(result.labels, simulate_nuclei_timelapse(n_frames=4, shape=(64, 64), n_nuclei=5, seed=7).labels)
    params = {"n_frames": 3, "size": 64, "n_nuclei": 5, "stage_shift": 0.0, "enter_leave": True}
    assert sum(1 for _ in generate_nuclei(params, seed=1)) == 4  # a start line, then one per frame


def test_a_crowded_field_stops_placing_and_says_how_many_fit():
    """5000 nuclei asked for in a 64 px field: placing stops once the canvas is full (it tried every
    one 30 times before, ~2 min) and the parameters say how many fit and what to change."""
    sim = simulate_nuclei_timelapse(n_frames=2, shape=(64, 64), n_nuclei=5000, seed=0)
    placed = sim.params["n_nuclei_placed"]
    assert 5 < placed < 200
    note = sim.params["crowding_note"]
    assert f"only about {placed} of the 5000 nuclei" in note and "64 x 64 px" in note and "fewer nuclei" in note
    assert 0 < sim.labels[0].max()
    roomy = simulate_nuclei_timelapse(n_frames=1, shape=(128, 128), n_nuclei=10, seed=0)
    assert "crowding_note" not in roomy.params and roomy.params["n_nuclei_placed"] >= 9


def test_a_simulation_that_would_not_fit_in_memory_is_refused_before_allocating(monkeypatch):
    from napari_microseg.simulate import _common

    monkeypatch.setattr(_common, "available_memory_bytes", lambda: 100 * 2**20)  # 100 MiB free
    with pytest.raises(InputError, match=r"simulating 200 frames of 512 x 512 px needs about 0\.5 GiB .* fewer frames"):
        simulate_nuclei_timelapse(n_frames=200, shape=(512, 512), n_nuclei=5, seed=0)
    sim = simulate_nuclei_timelapse(n_frames=2, shape=(64, 64), n_nuclei=3, seed=0)  # 80 KiB: fine
    assert sim.labels.shape == (2, 64, 64)
    from napari_microseg.progress import drain
    from napari_microseg.simulate.samples import generate_ccd

    with pytest.raises(InputError, match="CCD frames of 1024 x 1024 px"):
        drain(generate_ccd({"n_images": 20, "size": 1024, "balanced": False}, seed=0))
