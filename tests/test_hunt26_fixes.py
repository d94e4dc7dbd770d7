"""Behaviour found broken in session 26 (bug hunts and the known-gaps list); each test fails without its fix."""

from __future__ import annotations

import numpy as np
import pytest


def test_tracking_dock_jump_and_split_follow_a_rotated_time_scaled_layer(make_napari_viewer, wait_worker):
    """A labels stack rotated 90 degrees in Y-X, 2 min per frame, starting at minute 6: a table row
    centres the camera on the track's first object where the result layers draw it, and Split cuts
    at the frame the viewer shows (both used scale and translate only, so the camera went elsewhere)."""
    from napari_microseg.simulate.nuclei import simulate_nuclei_timelapse
    from napari_microseg.widgets.tracking import TrackingWidget

    sim = simulate_nuclei_timelapse(n_frames=8, shape=(96, 128), n_nuclei=5, seed=3)
    viewer = make_napari_viewer(show=False)
    rotate = np.array([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]])  # 90 degrees in the Y-X plane, time left alone
    labels = viewer.add_labels(sim.labels, name="nuclei", scale=(2.0, 0.5, 0.5), translate=(6.0, 10.0, 20.0),
                               rotate=rotate)
    widget = TrackingWidget(viewer)
    widget.labels_layer.value = "nuclei"
    wait_worker(widget.track())
    assert widget.result.n_tracks > 1, widget.status.text()
    table = widget.result.table
    longest = int(table.groupby("track_id").t.size().idxmax())
    row = next(r for r in range(widget.table.rowCount()) if int(widget.table.item(r, 0).data(0)) == longest)
    widget.table.selectRow(row)  # as a click on the row
    first = table[table.track_id == longest].sort_values("t").iloc[0]
    expected = labels.data_to_world((first.t, first.y, first.x))
    assert abs(expected[1] - (10 + 0.5 * first.y)) > 1  # the rotation moves the object: the test can tell
    np.testing.assert_allclose(viewer.camera.center[-2:], expected[1:], atol=1e-6)
    assert viewer.dims.point[0] == pytest.approx(expected[0])

    split_at = int(first.t) + 3
    viewer.dims.set_point(0, 6.0 + 2.0 * split_at)
    wait_worker(widget.split_selected())
    assert f"at frame {split_at}" in widget.status.text()
    after = widget.result.table
    assert int(after[after.track_id == longest].t.max()) == split_at - 1
    # the result layers gone, the jump still lands where the labels lie
    viewer.layers.remove(widget.tracks_layer)
    viewer.layers.remove(widget.relabelled_layer)
    widget.table.clearSelection()
    widget.table.selectRow(row)
    np.testing.assert_allclose(viewer.camera.center[-2:], expected[1:], atol=1e-6)
