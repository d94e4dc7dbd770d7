"""Auto-labelling of nuclei from a fluorescent stain ([N]): simulated and real (DSB2018) inputs."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_microseg.autolabel.fluorescence import (
    autolabel_fluorescence,
    autolabel_fluorescence_iter,
    local_otsu_threshold,
    rescale_intensity_robust,
)
from napari_microseg.errors import InputError
from napari_microseg.evaluation.metrics import instance_scores
from napari_microseg.progress import Progress
from napari_microseg.simulate.nuclei import simulate_nuclei_image, simulate_nuclei_timelapse

SAMPLE = "src/napari_microseg/sample_data/dsb2018_0287e7ee5b007c91"


def f1_at_05(gt, pred) -> float:
    return float(instance_scores(gt, pred, thresholds=(0.5,)).f1.iloc[0])


def disk_image(shape, centres_radii, value=1.0, background=0.05, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.indices(shape)
    img = np.full(shape, background, np.float32)
    for (cy, cx), r in centres_radii:
        img[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = value
    return img + rng.normal(0, 0.01, shape).astype(np.float32)


def test_simulated_image_is_labelled_well():
    scores = []
    for seed in (0, 1):  # fixed and drawn appearance
        img, gt = simulate_nuclei_image(shape=(256, 256), n_nuclei=30, seed=seed, diameter_range=(10, 18), vary_appearance=bool(seed))
        pred = autolabel_fluorescence(img, clear_border=False)
        assert pred.dtype == np.uint16 and pred.shape == img.shape
        scores.append(f1_at_05(gt, pred))
    assert min(scores) > 0.75


def test_real_dsb2018_sample_against_true_masks(shared_data):
    img = tifffile.imread(f"{SAMPLE}_image.tif")
    gt = tifffile.imread(f"{SAMPLE}_labels.tif")
    pred = autolabel_fluorescence(img, clear_border=False, diameter_range=(4, 80))
    assert f1_at_05(gt, pred) > 0.7
    # a second real image from the shared data set, another size
    name = sorted((shared_data / "dsb2018" / "images").iterdir())[5].name
    img2 = tifffile.imread(shared_data / "dsb2018" / "images" / name)
    gt2 = tifffile.imread(shared_data / "dsb2018" / "labels" / name)
    pred2 = autolabel_fluorescence(img2, clear_border=False, diameter_range=(4, 80))
    assert pred2.shape == img2.shape
    assert f1_at_05(gt2, pred2) > 0.3


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
def test_dtypes_give_the_same_objects(dtype):
    img, _ = simulate_nuclei_image(shape=(128, 128), n_nuclei=12, seed=1, diameter_range=(10, 16), vary_appearance=False)
    ref = autolabel_fluorescence(img.astype(np.float32))
    scale = {"uint8": 255, "uint16": 60000, "float32": 1000.0}[dtype]
    conv = (np.clip(img, 0, 1) * scale).astype(dtype)
    out = autolabel_fluorescence(conv)
    assert ref.max() > 3
    assert abs(int(out.max()) - int(ref.max())) <= 1
    assert f1_at_05(ref, out) > 0.9


def test_timelapse_frame_by_frame_with_progress():
    sim = simulate_nuclei_timelapse(n_frames=3, shape=(96, 96), n_nuclei=8, seed=2)
    gen = autolabel_fluorescence_iter(sim.fluorescence, clear_border=False)
    events = []
    while True:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            labels = stop.value
            break
    finished = [e for e in events if "nuclei" in e.message]  # each frame's end; its steps come before it
    assert [e.done for e in finished] == [1, 2, 3] and all(isinstance(e, Progress) and e.total == 3 for e in events)
    assert len(events) > 3 and "frame 2/3: watershed" in [e.message for e in events]
    assert labels.shape == sim.fluorescence.shape and labels.dtype == np.uint16
    single = autolabel_fluorescence(sim.fluorescence[1], clear_border=False)
    np.testing.assert_array_equal(labels[1], single)
    assert all(labels[t].max() >= 4 for t in range(3))


def test_diameter_filter_and_border_clearing():
    img = disk_image((128, 128), [((40, 40), 2), ((40, 90), 8), ((95, 60), 30), ((64, 2), 8)])
    lab = autolabel_fluorescence(img, diameter_range=(6, 30), clear_border=True, otsu_window=None, clahe_kernel=None)
    # only the medium disk inside the field survives: the tiny one, the huge one and the border one go
    assert lab.max() == 1
    ys, xs = np.nonzero(lab)
    assert abs(ys.mean() - 40) < 2 and abs(xs.mean() - 90) < 2
    keep_border = autolabel_fluorescence(img, diameter_range=(6, 30), clear_border=False, otsu_window=None, clahe_kernel=None)
    assert keep_border.max() == 2


def test_split_clumps_separates_touching_nuclei():
    yy, xx = np.indices((96, 96))
    img = (np.exp(-((yy - 48) ** 2 + (xx - 38) ** 2) / (2 * 7.0**2)) + np.exp(-((yy - 48) ** 2 + (xx - 58) ** 2) / (2 * 7.0**2))).astype(np.float32)
    kw = dict(clahe_kernel=None, otsu_window=None, diameter_range=(5, 60), threshold_bounds=(0.2, 1.0))
    assert autolabel_fluorescence(img, split_clumps=False, **kw).max() == 1
    split = autolabel_fluorescence(img, split_clumps=True, **kw)
    assert split.max() == 2
    # the cut lies between the two centres
    assert split[48, 38] != split[48, 58] and split[48, 38] > 0 and split[48, 58] > 0


def test_fill_holes():
    yy, xx = np.indices((80, 80))
    r = np.hypot(yy - 40, xx - 40)
    img = ((r < 14) & (r > 5)).astype(np.float32)
    kw = dict(clahe_kernel=None, otsu_window=None, smooth_sigma=None, split_clumps=False, diameter_range=None)
    assert autolabel_fluorescence(img, fill_holes=True, **kw)[40, 40] > 0
    assert autolabel_fluorescence(img, fill_holes=False, **kw)[40, 40] == 0


def test_local_otsu_adapts_to_uneven_illumination():
    img = disk_image((128, 256), [((64, 40), 8), ((64, 210), 8)], value=0.3)
    img[:, 128:] += 0.4  # bright right half: both nuclei must still be found
    thr = local_otsu_threshold(rescale_intensity_robust(img), 51)
    assert thr.shape == img.shape and thr[:, 200:].mean() > thr[:, :60].mean()
    lab = autolabel_fluorescence(img, clahe_kernel=None, global_floor=None, diameter_range=(8, 30))
    assert lab[64, 40] > 0 and lab[64, 210] > 0


def test_blank_image_gives_no_objects():
    assert autolabel_fluorescence(np.zeros((64, 64), np.uint16)).max() == 0
    assert autolabel_fluorescence(np.full((64, 64), 7.0)).max() == 0


@pytest.mark.parametrize("bad", [np.zeros((2, 2, 8, 8)), np.zeros(10), np.array([[np.nan, 1.0], [1.0, 1.0]])])
def test_bad_input_raises_input_error(bad):
    with pytest.raises(InputError):
        autolabel_fluorescence(bad)


def test_diameter_range_the_wrong_way_round_is_a_clear_error():
    from napari_microseg.autolabel.fluorescence import autolabel_fluorescence
    from napari_microseg.errors import InputError

    with pytest.raises(InputError, match="diameter range"):
        autolabel_fluorescence(np.random.default_rng(0).random((64, 64)), diameter_range=(40, 10))
