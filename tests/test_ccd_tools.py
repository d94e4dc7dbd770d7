"""FITS data-section cropping and the tiles-with-class finder."""

from __future__ import annotations

import numpy as np
import pytest

from napari_microseg.errors import InputError
from napari_microseg.io.images import crop_data_section, parse_fits_section
from napari_microseg.measure.tiles import tiles_with_class


def test_parse_fits_section_is_one_based_inclusive():
    rows, cols = parse_fits_section("[9:2056,1:1040]")
    assert (rows.start, rows.stop, cols.start, cols.stop) == (0, 1040, 8, 2056)
    with pytest.raises(InputError):
        parse_fits_section("[a:b]")


def test_crop_data_section_uses_header():
    frame = np.arange(20 * 30).reshape(20, 30)
    cropped, used = crop_data_section(frame, {"DATASEC": "[3:28,1:20]"})
    assert cropped.shape == (20, 26) and cropped[0, 0] == frame[0, 2]
    same, none = crop_data_section(frame, {"OTHER": 1})
    assert none is None and same is frame


def test_tiles_with_class_finds_and_ranks():
    cm = np.zeros((600, 520), np.uint8)
    cm[10:12, 300] = 3          # tile (0, 1): 2 px
    cm[400:410, 20:25] = 3      # tile (1, 0): 50 px
    cm[590:600, 515:520] = 2    # another class, ignored
    table = tiles_with_class(cm, 3, tile=256)
    assert list(zip(table.tile_row, table.tile_col)) == [(1, 0), (0, 1)]
    assert list(table.pixels) == [50, 2]
    assert table.loc[0, "y1"] == 512 and table.loc[1, "x1"] == 512
    assert tiles_with_class(cm, 3, tile=256, min_pixels=10).shape[0] == 1
    assert tiles_with_class(cm, 1).empty


CCD_NAMES = ["background", "glowing", "hot pixel", "cluster"]


def test_shape_rules_keep_hot_lines_turn_hot_blobs_into_clusters_and_drop_big_clusters():
    from napari_microseg.inference.postprocess import ccd_shape_rules

    cls = np.zeros((60, 60), np.uint8)
    cls[5:55, 10] = 2            # a vertical hot line, 1 px wide
    cls[30, 20:50] = 2           # a horizontal one
    cls[40:42, 20:45] = 2        # a 2-px-wide run: still a line
    cls[8:12, 30:34] = 2         # a 4x4 hot blob: a cluster by the rule
    cls[20:28, 54:58] = 2        # four adjacent hot columns, 8 px long: long lines side by side stay hot
    cls[15:17, 45:47] = 3        # a small cluster
    cls[50:58, 30:58] = 3        # a big one (a track)
    cls[2:4, 2:4] = 2            # compact blobs that are no lines: a 2x2 block, a 3x2 block, an L, a diagonal pair
    cls[45:48, 2:4] = 2
    cls[2, 40], cls[3, 40:42] = 2, 2
    cls[25, 2], cls[26, 3] = 2, 2
    cls[58, 2] = 2               # a single hot pixel: a 1 px line
    ruled = ccd_shape_rules(cls, CCD_NAMES)
    for blob in ((slice(2, 4), slice(2, 4)), (slice(45, 48), slice(2, 4)), (2, 40), (3, slice(40, 42)), (25, 2), (26, 3)):
        assert (ruled[blob] == 3).all(), blob
    assert ruled[58, 2] == 2
    assert (ruled[5:55, 10] == 2).all() and (ruled[30, 20:50] == 2).all() and (ruled[40:42, 20:45] == 2).all()
    assert (ruled[8:12, 30:34] == 3).all()
    assert (ruled[20:28, 54:58] == 2).all()
    assert (ruled[50:58, 30:58] == 3).all()  # no size limit asked
    limited = ccd_shape_rules(cls, CCD_NAMES, hot_lines=False, max_cluster_size=50)
    assert (limited[50:58, 30:58] == 0).all() and (limited[15:17, 45:47] == 3).all()
    assert (limited[8:12, 30:34] == 2).all()  # the hot rule was off
    assert ruled.dtype == cls.dtype and cls[8, 30] == 2  # the input is not changed
    with pytest.raises(InputError, match="hot pixel"):
        ccd_shape_rules(cls, ["background", "interior", "boundary"])
    # names written as column names (a folder simulated before "hot pixel" was the name) are the same classes
    np.testing.assert_array_equal(ccd_shape_rules(cls, ["Background", "glowing", "hot_pixel", "cluster"]), ruled)


def test_segment_applies_shape_rules_to_ccd_models_only():
    from napari_microseg.inference.segment import segment
    from napari_microseg.simulate.ccd import simulate_ccd_frame

    frame = simulate_ccd_frame(shape=(256, 256), seed=11, balanced=True)
    plain = np.asarray(segment("ccd_classes", frame.image, measure=False).labels)
    ruled = np.asarray(segment("ccd_classes", frame.image, measure=False,
                               postprocess_options={"shape_rules": True, "max_cluster_size": 30}).labels)
    from napari_microseg.inference.postprocess import ccd_shape_rules

    np.testing.assert_array_equal(ruled, ccd_shape_rules(plain, CCD_NAMES, max_cluster_size=30))
    with pytest.raises(InputError, match="at least 1 px"):
        segment("ccd_classes", frame.image, postprocess_options={"max_cluster_size": 0})
    with pytest.raises(InputError, match="CCD class models only"):
        segment("nuclei_fluorescence", np.zeros((64, 64), np.float32), postprocess_options={"shape_rules": True})


def test_repeat_rule_tells_defects_that_repeat_from_hits_that_do_not():
    """Over exposures of one sensor a hot pixel is a defect (it shows in most frames); a piece that shows
    once is a charge deposit, whatever its shape on one frame."""
    from napari_microseg.inference.postprocess import ccd_persistence_rule, persistent_frames_needed

    maps = np.zeros((4, 40, 40), np.uint8)
    maps[:, 5, 5] = 2              # a hot pixel in every frame: a defect
    maps[:, 10:30, 20] = 2         # a hot column in every frame
    maps[1, 30, 8] = 2             # a single "hot" pixel in one frame only: a one-pixel X-ray hit
    maps[2, 12, 30:32] = 2         # a two-pixel "hot" piece once: a hit shared by two pixels
    maps[0, 35, 35] = 3            # a one-pixel cluster at a place that is hot in the other frames: a warm defect
    maps[1:, 35, 35] = 2
    maps[3, 2:5, 2:5] = 3          # a cluster once: stays
    maps[0, 20, 5] = 3             # a cluster over a defect that repeats in only 1 of 4 frames: stays
    ruled = ccd_persistence_rule(maps, CCD_NAMES)
    assert persistent_frames_needed(4) == 2 and persistent_frames_needed(2) == 2 and persistent_frames_needed(10) == 5
    assert (ruled[:, 5, 5] == 2).all() and (ruled[:, 10:30, 20] == 2).all()
    assert ruled[1, 30, 8] == 3 and (ruled[2, 12, 30:32] == 3).all()
    assert (ruled[:, 35, 35] == 2).all()
    assert (ruled[3, 2:5, 2:5] == 3).all() and ruled[0, 20, 5] == 3
    changed = ruled != maps
    assert changed.sum() == 1 + 2 + 1 and ruled.dtype == maps.dtype and maps[1, 30, 8] == 2  # input kept
    with pytest.raises(InputError, match="at least 2 exposures"):
        ccd_persistence_rule(maps[0], CCD_NAMES)


def test_segment_applies_the_repeat_rule_to_a_stack_and_measures_after_it():
    from napari_microseg.inference.postprocess import ccd_persistence_rule
    from napari_microseg.inference.segment import segment
    from napari_microseg.simulate.ccd import simulate_ccd_frame

    frames = np.stack([simulate_ccd_frame(shape=(128, 128), seed=s, n_hot=3, n_clusters=25).image for s in (21, 22, 23)])
    plain = segment("ccd_classes", frames)
    ruled = segment("ccd_classes", frames, postprocess_options={"hot_repeats": True})
    expected = ccd_persistence_rule(np.asarray(plain.labels), CCD_NAMES)
    np.testing.assert_array_equal(np.asarray(ruled.labels), expected)
    assert not np.array_equal(expected, np.asarray(plain.labels))  # independent tiles: their hot lines do not repeat
    assert ruled.settings["hot_repeats"] is True
    # the tables are of the ruled maps: as many cluster objects per frame as pieces of class cluster
    from scipy import ndimage as ndi

    for t in range(3):
        n_pieces = ndi.label(expected[t] == 3, structure=np.ones((3, 3)))[1]
        got = ruled.objects[(ruled.objects.t == t) & (ruled.objects["class"] == "cluster")]
        assert len(got) == n_pieces and got["probability"].between(0, 1).all()
    with pytest.raises(InputError, match="at least 2 exposures"):
        segment("ccd_classes", frames[0], postprocess_options={"hot_repeats": True})
    with pytest.raises(InputError, match="CCD class models only"):
        segment("nuclei_fluorescence", np.zeros((2, 64, 64), np.float32), postprocess_options={"hot_repeats": True})


def test_two_pass_repeat_rule_matches_the_in_memory_one_and_cleans_up(tmp_path):
    """segment_exposures (one exposure in memory at a time, the rest in a scratch folder) gives the labels,
    objects (with probabilities), counts and clusters of segment(stack, hot_repeats=True), removes its
    scratch folder, also when closed half-way, and refuses what the rule cannot compare."""
    from napari_microseg.autolabel.ccd import clusters_per_frame
    from napari_microseg.inference.repeats import segment_exposures
    from napari_microseg.inference.segment import segment
    from napari_microseg.io.models import load_model
    from napari_microseg.progress import run_with_text_progress
    from napari_microseg.simulate.ccd import simulate_ccd_frame

    frames = np.stack([simulate_ccd_frame(shape=(128, 128), seed=s, n_hot=0, n_clusters=25).image for s in (31, 32, 33)])
    frames[:, 40, 40] += 2200  # a defect in every exposure
    frames[1, 90, 10:20] += 2200  # a line in one exposure only: a deposit
    model = load_model("ccd_classes")
    expected = segment(model, frames, postprocess_options={"hot_repeats": True, "shape_rules": True})
    reads, written = [], {}

    def read(t):
        reads.append(t)
        return frames[t]

    gen = segment_exposures(model, read, 3, write_labels=written.__setitem__, scratch_parent=tmp_path,
                            postprocess_options={"shape_rules": True})
    import io

    events = []

    def watch(gen):  # records the progress events, passed on
        while True:
            try:
                event = next(gen)
            except StopIteration as stop:
                return stop.value
            events.append((event.done, event.total))
            yield event

    result = run_with_text_progress(watch(gen), stream=io.StringIO(), label="exposures")
    assert reads == [0, 1, 2, 0, 1, 2] and list(tmp_path.iterdir()) == []
    done = [d for d, _ in events]
    assert done == sorted(done) and len({total for _, total in events}) == 1 and events[-1][0] == events[-1][1]
    np.testing.assert_array_equal(np.stack([written[t] for t in range(3)]), np.asarray(expected.labels))
    assert written[1][90, 15] == 3 and all(written[t][40, 40] == 2 for t in range(3))
    # the line the network called hot is a cluster after the rule: its probability is now P(cluster), low
    line = result.objects[(result.objects.t == 1) & (result.objects.y == 90) & (result.objects["class"] == "cluster")]
    assert len(line) == 1 and line["probability"].iloc[0] < 0.5
    from pandas import testing as pd_testing

    pd_testing.assert_frame_equal(result.objects, expected.objects)
    pd_testing.assert_frame_equal(result.counts, expected.counts)
    pd_testing.assert_frame_equal(result.clusters, clusters_per_frame(np.asarray(expected.labels), frames, model.class_names))
    assert result.settings["hot_repeats"] is True and result.settings["persistent_pixels"] >= 1
    assert result.settings["scratch_bytes"] > 0
    # closed after the first exposure: nothing left behind
    gen = segment_exposures(model, read, 3, scratch_parent=tmp_path)
    next(gen)
    assert len(list(tmp_path.iterdir())) == 1
    gen.close()
    assert list(tmp_path.iterdir()) == []
    # a named scratch folder outlives a stopped run; the same keys take the segmented exposures from it
    kept = tmp_path / "kept"
    keys = ["a", "b", "c"]
    gen = segment_exposures(model, read, 3, scratch_dir=kept, resume_keys=keys, postprocess_options={"shape_rules": True})
    for event in gen:
        if event.message.startswith("exposure 3/"):  # two exposures through the first pass
            break
    gen.close()
    assert sorted(p.name for p in kept.iterdir()) == ["0.npz", "1.npz"]
    reads.clear()
    resumed = run_with_text_progress(segment_exposures(model, read, 3, scratch_dir=kept, resume_keys=["a", "b", "x"],
                                                       postprocess_options={"shape_rules": True}), stream=io.StringIO())
    assert reads == [2, 0, 1, 2] and resumed.settings["exposures_resumed"] == 2
    assert sorted(p.name for p in kept.iterdir()) == ["0.npz", "1.npz", "2.npz"]  # the caller's to remove
    # a damaged record is deleted and its exposure segmented again; a record of another key is not reused
    (kept / "1.npz").write_bytes((kept / "1.npz").read_bytes()[:200])
    reads.clear()
    again = run_with_text_progress(segment_exposures(model, read, 3, scratch_dir=kept, resume_keys=["a", "b", "y"],
                                                     postprocess_options={"shape_rules": True}), stream=io.StringIO())
    assert reads == [1, 2, 0, 1, 2] and again.settings["exposures_resumed"] == 1
    pd_testing.assert_frame_equal(again.objects, expected.objects)
    import shutil

    shutil.rmtree(kept)
    pd_testing.assert_frame_equal(resumed.objects, expected.objects)
    assert resumed.settings["tile"] == result.settings["tile"]  # the settings kept with the first exposure
    with pytest.raises(InputError, match="resume_keys need a scratch_dir"):
        next(segment_exposures(model, read, 3, resume_keys=keys))
    # a failure in the second pass (a full disk while writing labels) leaves no scratch either
    def failing_write(t, labels):
        if t == 1:
            raise OSError("No space left on device")

    with pytest.raises(OSError, match="No space"):
        run_with_text_progress(segment_exposures(model, read, 3, write_labels=failing_write, scratch_parent=tmp_path),
                               stream=io.StringIO())
    assert list(tmp_path.iterdir()) == []
    # errors name the exposure; share outside (0, 1] (NaN too) is refused
    bad = frames.copy()
    bad[1, 5, 5] = np.nan
    with pytest.raises(InputError, match="^b.fits: .*NaN.*replace them"):
        run_with_text_progress(segment_exposures(model, lambda t: bad[t], 3, scratch_parent=tmp_path,
                                                 exposure_names=["a.fits", "b.fits", "c.fits"]), stream=io.StringIO())
    for share in (0, 1.5, float("nan")):
        with pytest.raises(InputError, match="share must be"):
            next(segment_exposures(model, read, 3, share=share))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(InputError, match="at least 2 exposures"):
        next(segment_exposures(model, read, 1))
    with pytest.raises(InputError, match="where exposure 1 has"):
        run_with_text_progress(segment_exposures(model, lambda t: frames[0][: 64 + t], 2, scratch_parent=tmp_path),
                               stream=io.StringIO())
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(InputError, match="CCD class models only"):
        next(segment_exposures("nuclei_fluorescence", read, 2))


def test_repeat_rule_raises_the_frames_needed_when_chance_repeats_are_common():
    """Busy exposures of a sensor without defects: two hits on one pixel are common, so the rule asks for
    more repeats and calls (almost) none of them a defect, while a real defect (charged in every frame)
    stays; the expected chance count follows the binomial sum; too busy and too few frames warn; frames
    that share no pixel at all warn that they may not be of one sensor."""
    from napari_microseg.inference.postprocess import (chance_repeat_pixels, ccd_persistence_rule,
                                                       persistent_frames_needed)

    n_pixels = 256 * 256
    p = 0.02
    exact = 1 - (1 - p) ** 4 - 4 * p * (1 - p) ** 3  # P(charged in at least 2 of 4)
    assert chance_repeat_pixels([p] * 4, n_pixels, 2) == pytest.approx(n_pixels * exact)
    assert persistent_frames_needed(4, charged_fractions=[p] * 4, n_pixels=n_pixels) == 4
    assert persistent_frames_needed(4, charged_fractions=[1e-4] * 4, n_pixels=n_pixels) == 2
    assert persistent_frames_needed(10) == 5  # without the fractions: half, at least 2

    rng = np.random.default_rng(5)
    maps = np.where(rng.random((4, 256, 256)) < p, 3, 0).astype(np.uint8)  # cluster pixels at random
    maps[:, 100, 100] = 2  # a defect, hot in every exposure
    info = {}
    ruled = ccd_persistence_rule(maps, CCD_NAMES, info=info)
    by_chance_at_two = int(((maps > 0).sum(axis=0) >= 2).sum())
    assert by_chance_at_two > 100  # what "half of the frames, at least 2" called defects
    assert info["persistent_frames_needed"] == 4 and info["persistent_pixels"] <= 3 and info["repeat_warning"] is None
    assert (ruled[:, 100, 100] == 2).all()
    busy = np.where(rng.random((2, 256, 256)) < 0.2, 3, 0).astype(np.uint8)
    ccd_persistence_rule(busy, CCD_NAMES, info=info)
    assert info["chance_defect_pixels"] > 1000 and "busy" in info["repeat_warning"]
    independent = np.zeros((3, 64, 64), np.uint8)
    for t in range(3):
        independent[t, 10 + t, 5:20] = 2  # hot lines that do not repeat
    ccd_persistence_rule(independent, CCD_NAMES, info=info)
    assert info["persistent_pixels"] == 0 and "one sensor" in info["repeat_warning"]


def test_chance_of_repeats_leaves_the_defects_themselves_out():
    """A sensor with many defects (2 % of its pixels hot in every exposure) and few random hits (0.5 %):
    the defects are no chance hits, so the frames needed stay low and a defect that shows in 4 of 6
    exposures (flickering) is still one."""
    from napari_microseg.inference.postprocess import ccd_persistence_rule

    rng = np.random.default_rng(9)
    defects = rng.random((256, 256)) < 0.02
    maps = np.where(rng.random((6, 256, 256)) < 0.005, 3, 0).astype(np.uint8)
    maps[:, defects] = 2
    maps[:4, 7, 7], maps[4:, 7, 7] = 2, 0  # flickering
    info = {}
    ruled = ccd_persistence_rule(maps, CCD_NAMES, info=info)
    assert info["persistent_frames_needed"] == 3 and info["chance_defect_pixels"] < 1
    assert (ruled[:4, 7, 7] == 2).all() and (ruled[:, defects] == 2).all()
