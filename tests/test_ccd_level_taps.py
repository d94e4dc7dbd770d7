"""CCD readout taps with different pedestals: levelled before a pedestal-normalised model sees them."""

from __future__ import annotations

import numpy as np

from napari_microseg.autolabel.ccd import level_taps
from napari_microseg.inference.segment import TapLevelledFrames, segment
from napari_microseg.io.models import load_model
from napari_microseg.simulate.ccd import simulate_ccd_frame


def two_tap_frame(step: float = 2800.0) -> tuple[np.ndarray, np.ndarray]:
    """A 384 x 256 simulated frame (no glow) whose bottom 128 rows (a second, smaller tap) sit ``step`` ADC higher."""
    top = simulate_ccd_frame(shape=(256, 256), seed=1, glow_probability=0.0)
    bottom = simulate_ccd_frame(shape=(128, 256), seed=2, glow_probability=0.0)
    image = np.vstack([top.image, bottom.image + step]).astype(np.float32)
    return image, np.vstack([top.classes, bottom.classes])


def test_level_taps_removes_the_step_and_keeps_adc_scale():
    image, _ = two_tap_frame()
    levelled = level_taps(image)
    upper, lower = np.median(levelled[:256]), np.median(levelled[256:])
    assert abs(upper - lower) < 5  # was 2800 ADC
    assert abs(np.median(levelled) - np.median(image)) < 1500  # still ADC around the pedestal, not re-scaled
    single = simulate_ccd_frame(shape=(128, 128), seed=3).image
    np.testing.assert_allclose(level_taps(single), single, atol=1e-3)  # one tap: unchanged


def test_pedestal_model_with_level_taps_sees_no_false_signal():
    image, truth = two_tap_frame()
    plain = load_model("ccd_classes")
    plain.config["normalization"] = {k: v for k, v in plain.config["normalization"].items() if k != "level_taps"}
    levelling = load_model("ccd_classes")
    levelling.config["normalization"] = {**plain.config["normalization"], "level_taps": True}
    raw_classes = np.asarray(segment(plain, image, measure=False).labels)
    levelled_classes = np.asarray(segment(levelling, image, measure=False).labels)
    # the model given the raw two-tap frame takes the smaller, higher tap for signal; levelled, it does not
    background = truth == 0
    assert (raw_classes[background] != 0).mean() > 0.2
    assert (levelled_classes[background] != 0).mean() < 0.02
    assert (levelled_classes == 1).mean() < 0.01
    np.testing.assert_array_equal(levelled_classes, np.asarray(segment(plain, level_taps(image), measure=False).labels))
    assert (levelled_classes[truth == 0] == 0).mean() > 0.95
    # objects are measured on the raw ADC, not on the levelled copy the model was given
    objects = segment(levelling, image).objects
    assert len(objects)
    for row in objects.head(20).itertuples():
        y, x = int(round(row.y)), int(round(row.x))
        if row.area == 1:
            assert row.max_intensity == image[y, x]
    lower_tap = objects[objects["y"] > 260]
    assert (lower_tap["min_intensity"] > np.median(image[256:]) - 1000).all()


def test_tap_levelled_frames_view_of_a_stack():
    image, _ = two_tap_frame()
    stack = np.stack([image, image + 10])
    view = TapLevelledFrames(stack)
    assert view.shape == stack.shape and view.ndim == 3
    np.testing.assert_allclose(view[1], level_taps(stack[1]))
    np.testing.assert_allclose(view[0, 250:260, 5:9], level_taps(stack[0])[250:260, 5:9])
    np.testing.assert_allclose(np.asarray(view)[1], level_taps(stack[1]))
