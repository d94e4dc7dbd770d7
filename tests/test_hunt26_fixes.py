"""Behaviour found broken in session 26 (bug hunts and the known-gaps list); each test fails without its fix."""

from __future__ import annotations

import numpy as np
import pandas as pd
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


def test_segmentation_export_of_a_large_layer_checks_and_measures_in_a_worker(make_napari_viewer, wait_worker,
                                                                            tiny_nuclei_model, tmp_path, monkeypatch):
    """A result layer above the GUI-thread limit: Export compares and measures it in a worker, reading it
    in place while it takes no paint (it was copied, and hashed, on the GUI thread: seconds and gigabytes
    for a long movie segmented on one frame), then paint is allowed again; the lazy movie's frames
    without objects are not read."""
    import dask.array as da

    import napari_microseg.widgets.segmentation as seg
    from napari_microseg.simulate.nuclei import simulate_nuclei_timelapse

    sim = simulate_nuclei_timelapse(n_frames=4, shape=(96, 96), n_nuclei=8, seed=5)
    frames_read = []

    def read(block, block_info=None):
        frames_read.append(block_info[0]["chunk-location"][0])
        return block

    movie = da.from_array(sim.fluorescence, chunks=(1, 96, 96)).map_blocks(read, dtype=sim.fluorescence.dtype)
    viewer = make_napari_viewer(show=False)
    viewer.add_image(movie, name="movie")
    widget = seg.SegmentationWidget(viewer)
    widget.image_layer.value = "movie"
    widget.model_choice.value = seg.FILE_CHOICE
    widget.model_file.value = str(tiny_nuclei_model)
    widget.export_dir.value = str(tmp_path)
    viewer.dims.set_current_step(0, 2)
    wait_worker(widget.segment())  # the current frame only
    layer = viewer.layers["movie segmented"]
    assert layer.data.shape == (4, 96, 96) and layer.data[2].any(), widget.status.text()
    monkeypatch.setattr(seg, "EXPORT_CHECK_BYTES", 0)

    worker = widget.export()  # nothing corrected: the run's own tables, after the check in the worker
    assert worker is not None and not layer.editable
    wait_worker(worker)
    assert layer.editable and "corrected" not in widget.status.text()
    written = widget.status.text().split("written: ", 1)[1].split(", ")
    assert pd.read_csv(written[0])["count"].sum() == len(widget.result.objects) > 1

    gone = int(np.unique(layer.data[2])[-1])
    layer.data[layer.data == gone] = 0  # a script's change: no paint event
    frames_read.clear()
    worker = widget.export()
    assert not layer.editable
    wait_worker(worker)
    assert layer.editable and "corrected labels" in widget.status.text()
    written = widget.status.text().split("written: ", 1)[1].split(", ")
    counts = pd.read_csv(written[0])
    assert list(counts["t"]) == [2] and int(counts["count"].iloc[0]) == len(widget.result.objects) - 1
    assert gone not in set(pd.read_csv(written[1])["label"])
    assert set(frames_read) == {2}  # mean intensities from the one frame with objects
