"""Hunt 38, simulated CCD frames: the balanced layout without a whole-frame recount per hot line and with the
clusters' charge added in one pass (the same frames, byte for byte), progress from within a balanced frame
(the Simulation dock's Stop acts there), and the FITS ``GAIN`` key in electrons per ADU."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from napari_microseg.progress import Progress, drain
from napari_microseg.simulate import ccd
from napari_microseg.simulate.ccd import simulate_ccd_frame

# ---------------------------------------------------------------- the same frames, faster
# (the frames were compared byte for byte with the code before this change in 50 seed / size / layout cases when it
# was made; stored digests would tie the suite to one numpy / scipy build and CPU, so the equality is tested on
# the part that changed: the clusters' charge added at once against one by one)


def test_charges_added_at_once_sum_as_one_by_one_bit_for_bit():
    """Overlapping charges (100 on 30 x 40 px), some at or past the edges: the float32 sums in the same order."""
    rng = np.random.default_rng(5)
    n = 100
    ys, xs = rng.uniform(-3, 33, n), rng.uniform(-3, 43, n)
    sigmas, totals = rng.uniform(0.05, 2.5, n), rng.uniform(1, 5000, n)
    one_by_one = np.zeros((30, 40), np.float32)
    for y, x, s, t in zip(ys, xs, sigmas, totals):
        ccd._add_gaussian_charge(one_by_one, y, x, s, t)
    at_once = np.zeros((30, 40), np.float32)
    ccd._add_gaussian_charges(at_once, ys, xs, sigmas, totals)
    assert one_by_one.tobytes() == at_once.tobytes()
    assert (one_by_one > 0).mean() > 0.5  # (the charges do overlap)


class _CountingNumpy:
    """numpy, but counting the ``count_nonzero`` calls over a whole frame of ``size`` pixels."""

    def __init__(self, size: int) -> None:
        self.size, self.whole_frame_counts = size, 0

    def count_nonzero(self, a, *args, **kwargs):
        self.whole_frame_counts += np.size(a) == self.size
        return np.count_nonzero(a, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(np, name)


def test_the_balanced_layout_does_not_recount_the_frame_for_each_hot_line(monkeypatch):
    """~900 single hot pixels: the frame was counted again before each one (quadratic in the frame's area)."""
    counting = _CountingNumpy(80 * 48)
    monkeypatch.setattr(ccd, "np", counting)
    frame = simulate_ccd_frame(shape=(80, 48), seed=2, balanced=True, hot_length=(1, 1))
    monkeypatch.undo()
    assert np.count_nonzero(frame.classes == 2) > 500  # the hot pixels are there
    assert counting.whole_frame_counts < 60  # (once per cluster batch; before: ~900)


# ---------------------------------------------------------------- progress within a frame
def test_a_balanced_frame_yields_progress_while_it_is_built():
    steps = ccd.simulate_ccd_frame_iter(shape=(256, 256), seed=0, balanced=True)
    events = []
    while True:
        try:
            events.append(next(steps))
        except StopIteration as stop:
            frame = stop.value
            break
    assert len(events) >= 2 and all(isinstance(e, Progress) and e.total == 100 and 0 <= e.done < 100 for e in events)
    assert [e.done for e in events] == sorted(e.done for e in events)
    whole = simulate_ccd_frame(shape=(256, 256), seed=0, balanced=True)  # the plain call gives the same frame
    assert frame.image.tobytes() == whole.image.tobytes() and frame.classes.tobytes() == whole.classes.tobytes()


def test_the_dock_s_ccd_generator_can_stop_within_a_frame():
    from napari_microseg.simulate.samples import generate_ccd

    params = {"n_images": 1, "size": 256, "balanced": True}
    gen = generate_ccd(params, seed=0)
    first = next(gen)
    assert (first.done, first.total) == (0, 1) and "CCD frame 1/1" in first.message  # within frame 1
    gen.close()  # what the worker does on Stop: no frame to finish first
    events = []
    layers = drain(generate_ccd(params, seed=0), events.append)
    assert sum(e.done == 0 for e in events) >= 2 and (events[-1].done, events[-1].total) == (1, 1)
    from napari_microseg.simulate._common import sample_seed

    expected = simulate_ccd_frame(shape=(256, 256), seed=sample_seed(0, 0), balanced=True)
    assert layers[0][0].tobytes() == expected.image.tobytes() and layers[1][0].tobytes() == expected.classes.tobytes()


# ---------------------------------------------------------------- FITS GAIN
def test_fits_gain_is_electrons_per_adu(tmp_path):
    from astropy.io import fits

    frame = simulate_ccd_frame(shape=(32, 32), seed=1, gain=4.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # (a comment too long for its card is cut with a warning)
        path = ccd.write_ccd_fits(tmp_path / "frame.fits", frame)
    with fits.open(path) as hdul:
        header = hdul[0].header
        assert header["GAIN"] == pytest.approx(0.25) and "e-/ADU" in header.comments["GAIN"]
        assert header["ADUPERE"] == pytest.approx(4.0) and "ADU/e-" in header.comments["ADUPERE"]
        electrons = hdul[0].data.astype(np.float64) * header["GAIN"]  # as ccdproc's gain correction does
    assert electrons == pytest.approx(frame.image / 4.0, rel=1e-6)
