"""Training pairs from a stain and a target channel: identical crop positions, registration check."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_microseg.autolabel.pairing import (
    RegistrationWarning,
    check_registration,
    make_training_pairs,
    shift_labels,
    tile_positions,
)
from napari_microseg.errors import InputError
from napari_microseg.simulate.nuclei import simulate_nuclei_timelapse


@pytest.fixture(scope="module")
def sim():
    s = simulate_nuclei_timelapse(n_frames=1, shape=(200, 300), n_nuclei=40, seed=4)
    return s.fluorescence[0], s.phase[0], s.labels[0]


def test_tile_positions_cover_the_field():
    pos, shape = tile_positions((1040, 1408), 512)
    assert shape == (512, 512)
    assert pos[:, 0].max() + 512 == 1040 and pos[:, 1].max() + 512 == 1408
    assert len(pos) == 3 * 3
    pos, shape = tile_positions((1040, 1408), 512, overlap=False)
    assert len(pos) == 2 * 2
    pos, shape = tile_positions((100, 80), 512)  # clipped to the image
    assert shape == (100, 80) and pos.tolist() == [[0, 0]]
    with pytest.raises(InputError):
        tile_positions((10, 10), 0)


def test_pairs_share_positions(sim):
    stain, phase, _ = sim
    with warnings.catch_warnings():
        warnings.simplefilter("error", RegistrationWarning)  # registered channels: no warning
        pairs = make_training_pairs(stain, phase, tile=128, autolabel_kwargs={"clear_border": False})
    assert pairs.tile_shape == (128, 128)
    assert len(pairs.targets) == len(pairs.labels) == len(pairs.positions) == 2 * 3
    for (y, x), t, lab in zip(pairs.positions, pairs.targets, pairs.labels):
        np.testing.assert_array_equal(t, phase[y : y + 128, x : x + 128])
        assert lab.shape == (128, 128)
        # the label tile is the full-field labels at the same place (relabelled)
        np.testing.assert_array_equal(lab > 0, pairs.full_labels[y : y + 128, x : x + 128] > 0)
        if lab.max():
            assert set(np.unique(lab)) == set(range(int(lab.max()) + 1))
    assert pairs.shift is not None and np.hypot(*pairs.shift) <= 2


def test_autolabels_match_simulated_truth(sim):
    from napari_microseg.evaluation.metrics import instance_scores

    stain, phase, truth = sim
    pairs = make_training_pairs(stain, phase, tile=512, autolabel_kwargs={"clear_border": False})
    f1 = instance_scores(truth, pairs.full_labels, thresholds=(0.5,)).f1.iloc[0]
    assert f1 > 0.7


def test_shift_is_detected_and_corrected(sim):
    stain, phase, truth = sim
    moved = ndi.shift(stain, (9, -6), order=1, mode="nearest")
    shift, err = check_registration(moved, phase)
    assert abs(shift[0] + 9) <= 2 and abs(shift[1] - 6) <= 2
    lab = ndi.shift(truth, (9, -6), order=0)
    with pytest.warns(RegistrationWarning, match="shifted"):
        pairs = make_training_pairs(moved, phase, tile=256, labels=lab, correct_shift=True)
    assert pairs.shift_applied
    back = pairs.full_labels > 0
    # corrected labels overlap the true (target-aligned) labels again
    inter = (back & (truth > 0)).sum() / max((truth > 0).sum(), 1)
    assert inter > 0.8
    with pytest.warns(RegistrationWarning, match="NOT corrected"):
        pairs = make_training_pairs(moved, phase, tile=256, labels=lab, correct_shift=False)
    assert not pairs.shift_applied
    np.testing.assert_array_equal(pairs.full_labels, lab)


def test_shift_labels_rounds_and_pads():
    lab = np.zeros((10, 10), np.uint16)
    lab[2, 3] = 5
    out = shift_labels(lab, (1.4, -2.6))
    assert out[3, 0] == 5 and (out == 5).sum() == 1
    # the strip entering at the border (1 row at the top, 3 columns at the right) is not annotated (-1): the
    # stain never saw it; the rest of the background stays 0
    entered = np.zeros((10, 10), bool)
    entered[0, :] = True
    entered[:, -3:] = True
    assert (out[entered] == -1).all() and (out[~entered] >= 0).all()


def test_real_isl_field_is_registered(shared_data):
    import skimage.io

    dapi = skimage.io.imread(shared_data / "isl_phase_dapi" / "dapi.png")[:512, :512]
    phase = skimage.io.imread(shared_data / "isl_phase_dapi" / "phase_z6.png")[:512, :512]
    shift, _ = check_registration(dapi, phase)
    assert np.hypot(*shift) <= 5  # registered data set (cross-modality estimate scatters by a few px)
    moved = ndi.shift(dapi, (0, 25), order=0, mode="nearest")
    shift2, _ = check_registration(moved, phase)
    assert abs(shift2[1] + 25) <= 5


def test_bad_inputs(sim):
    stain, phase, _ = sim
    with pytest.raises(InputError):
        make_training_pairs(stain, phase[:-1])
    with pytest.raises(InputError):
        make_training_pairs(stain[None], phase[None])
    with pytest.raises(InputError):
        make_training_pairs(stain, phase, labels=np.zeros((3, 3)))


def test_align_labels_moves_only_shifted_frames(sim):
    """A two-frame stack: frame 0 registered (labels left alone), frame 1's stain moved by (9, -6) px
    (its labels are moved back onto the target); without correction nothing moves but the shift is reported."""
    from napari_microseg.autolabel.pairing import align_labels_iter
    from napari_microseg.progress import Progress

    stain, phase, truth = sim
    moved = ndi.shift(stain, (9, -6), order=1, mode="nearest")
    stains = np.stack([stain, moved])
    labels = np.stack([truth, ndi.shift(truth, (9, -6), order=0)]).astype(np.uint16)
    gen = align_labels_iter(stains, np.stack([phase, phase]), labels, correct_shift=True, max_shift_px=5)
    events = []
    while True:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            aligned, shifts = stop.value
            break
    assert [e.done for e in events] == [1, 2] and all(isinstance(e, Progress) for e in events)
    # signed: the strip the moved labels leave at the border is -1 (not annotated, never seen by the stain)
    assert aligned.dtype == np.int32 and aligned.shape == labels.shape
    assert (aligned[1, -9:] == -1).all() and (aligned[1, :, :6] == -1).all() and (aligned[0] >= 0).all()
    assert [s["corrected"] for s in shifts] == [False, True] and shifts[1]["length"] > 9
    np.testing.assert_array_equal(aligned[0], labels[0])
    overlap = ((aligned[1] > 0) & (truth > 0)).sum() / (truth > 0).sum()
    assert overlap > 0.8 > ((labels[1] > 0) & (truth > 0)).sum() / (truth > 0).sum()

    gen = align_labels_iter(moved, phase, labels[1], correct_shift=False)
    try:
        while True:
            next(gen)
    except StopIteration as stop:
        unmoved, shifts = stop.value
    np.testing.assert_array_equal(unmoved, labels[1])
    assert shifts[0]["t"] == 0 and not shifts[0]["corrected"] and shifts[0]["length"] > 9
    with pytest.raises(InputError, match="same shape"):
        next(align_labels_iter(stain, phase[:-1], truth))
    with pytest.raises(InputError, match=">= 0"):
        next(align_labels_iter(stain, phase, truth, max_shift_px=-1))
