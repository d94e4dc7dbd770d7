"""Which frame a widget acts on: read from the viewer's world position, so that a time-lapse scaled to
minutes beside an unscaled layer is not mistaken (napari's slider step counts in the finest step)."""

from __future__ import annotations

import numpy as np


def test_current_frame_and_show_frame_follow_the_layers_scale_and_offset():
    from napari.components import ViewerModel

    from napari_microseg.widgets._base import current_frame, show_frame

    viewer = ViewerModel()
    movie = viewer.add_image(np.zeros((4, 16, 16)), scale=(5, 0.5, 0.5), translate=(3, 0, 0))  # 5 min per frame
    painted = viewer.add_labels(np.zeros((20, 16, 16), np.uint8))  # unscaled: slider steps of 1
    viewer.dims.set_point(0, 3 + 2 * 5)  # frame 2 of the movie: world time 13
    assert viewer.dims.current_step[0] != 2  # the slider's step is not the movie's frame ...
    assert current_frame(viewer, movie) == 2  # ... the world position is
    assert current_frame(viewer, painted) == 13
    show_frame(viewer, movie, 3)
    assert viewer.dims.point[0] == 3 + 3 * 5 and current_frame(viewer, movie) == 3
    viewer.dims.set_point(0, 1000)  # beyond the last frame: the last one
    assert current_frame(viewer, movie) == 3
    flat = viewer.add_image(np.zeros((16, 16)))  # a 2-D layer among 3-D ones: its own first axis
    assert flat.world_to_data(viewer.dims.point).shape == (2,)


def test_grey_image_of_a_lazy_rgb_layer_stays_lazy_and_matches_the_in_memory_grey():
    """An RGB(A) layer becomes the mean of its colour channels, computed where it is read: a lazy one
    (dask, zarr) is not read by the call, nor is an in-memory one averaged, so a widget hands it to its
    worker."""
    import dask.array as da
    import zarr
    from napari.components import ViewerModel

    from napari_microseg.widgets._base import grey_image

    rgba = np.random.default_rng(0).integers(0, 255, (3, 20, 24, 4)).astype(np.uint8)
    viewer = ViewerModel()
    in_memory = grey_image(viewer.add_image(rgba, rgb=True))
    assert isinstance(in_memory, da.Array) and in_memory.shape == (3, 20, 24)
    np.testing.assert_allclose(np.asarray(in_memory), rgba[..., :3].mean(axis=-1), rtol=1e-6)
    in_memory = np.asarray(in_memory)
    store = zarr.zeros(rgba.shape, chunks=(1, 20, 24, 4), dtype=np.uint8)
    store[:] = rgba
    for lazy_data in (da.from_array(rgba, chunks=(1, 20, 24, 4)), store):
        lazy = grey_image(viewer.add_image(lazy_data, rgb=True, contrast_limits=(0, 255)))
        assert isinstance(lazy, da.Array) and lazy.shape == (3, 20, 24) and lazy.dtype == np.float32
        np.testing.assert_allclose(np.asarray(lazy), in_memory, rtol=1e-6)
