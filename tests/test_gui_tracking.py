"""Tracking widget: tracks a simulated time-lapse in a worker, shows layers and a table, curates and exports."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.gui


def test_track_curate_export(make_napari_viewer, qtbot, tmp_path, artifacts, wait_worker):
    from napari_microseg.simulate.nuclei import simulate_nuclei_timelapse
    from napari_microseg.widgets.tracking import TrackingWidget

    sim = simulate_nuclei_timelapse(n_frames=12, shape=(160, 160), n_nuclei=12, seed=5)
    viewer = make_napari_viewer(show=True)
    viewer.add_image(sim.fluorescence, name="movie")
    viewer.add_labels(sim.labels, name="nuclei")
    widget = TrackingWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Tracking")
    widget.labels_layer.value = "nuclei"
    widget.image_layer.value = "movie"
    widget.export_dir.value = str(tmp_path)
    worker = widget.track()
    assert worker is not None, widget.status.text()
    wait_worker(worker)
    assert widget.result is not None, widget.status.text()
    assert type(widget.tracks_layer).__name__ == "Tracks"
    n_tracks = widget.result.n_tracks
    assert widget.table.rowCount() == n_tracks
    header = widget.table.horizontalHeader()
    metrics = header.fontMetrics()
    for column in range(widget.table.columnCount()):  # every header is readable in the dock
        text = widget.table.horizontalHeaderItem(column).text()
        assert header.sectionSize(column) >= metrics.horizontalAdvance(text), text
    qtbot.wait(50)
    widths = [header.sectionSize(column) for column in range(widget.table.columnCount())]
    assert sum(widths) <= widget.table.viewport().width() + 1, widths  # no column hidden off to the right
    assert n_tracks >= sim.tracks.track_id.nunique() * 0.8
    assert viewer.layers.selection.active is widget.tracks_layer  # not the hidden "by track" labels
    from napari_microseg.tracking.export import counts_table

    totals = counts_table(widget.result).sum()  # the message gives the movie's totals of counts.csv
    assert f"{totals['divisions']} divisions, {totals['appeared']} appeared" in widget.status.text()

    # click-to-jump: selecting a row moves the viewer to the track's first frame
    late = widget.result.table.groupby("track_id").t.min().idxmax()
    row = [int(widget.table.item(r, 0).data(0)) for r in range(widget.table.rowCount())].index(int(late))
    widget.table.selectRow(row)
    assert viewer.dims.current_step[0] == int(widget.result.table[widget.result.table.track_id == late].t.min())

    # curation: delete the selected track (in the worker) -> fewer tracks, and the export reflects it
    wait_worker(widget.delete_selected())
    assert widget.result.n_tracks == n_tracks - 1 and "deleted track" in widget.status.text()
    assert widget.table.rowCount() == n_tracks - 1
    assert widget.selected_track_ids() == []  # the next row is not selected for the next Delete
    tracks_csv, counts_csv, summary_csv, _ = widget.export_csv()
    assert set(pd.read_csv(summary_csv)["track_id"]) == set(pd.read_csv(tracks_csv)["track_id"])
    table = pd.read_csv(tracks_csv)
    assert list(table.columns[:8]) == ["track_id", "t", "y", "x", "parent_track_id", "root_track_id", "generation", "label"]
    assert late not in set(table.track_id)
    assert list(pd.read_csv(counts_csv).columns[:2]) == ["t", "count"]
    assert (tmp_path / "track_config.json").is_file()  # the CLI's name
    wait_worker(widget.export_ctc())
    assert (tmp_path / "ctc_RES" / "res_track.txt").is_file() and "ctc_RES" in widget.status.text()
    # split: the split track stays selected
    longest = int(widget.result.table.groupby("track_id").t.size().idxmax())
    widget._select_tracks([longest])
    viewer.dims.set_current_step(0, 5)
    wait_worker(widget.split_selected())
    assert widget.selected_track_ids() == [longest]

    # the user deletes the Tracks layer, selects other labels, then curates: the layer comes back named
    # after the labels that were tracked, and the "by track" labels layer is not added a second time
    viewer.layers.remove(widget.tracks_layer)
    viewer.add_labels(np.zeros_like(sim.labels), name="other")
    widget.labels_layer.value = "other"
    widget.table.selectRow(0)
    wait_worker(widget.delete_selected())
    names = [layer.name for layer in viewer.layers]
    assert "nuclei tracks" in names and not any(name.startswith("other") and name != "other" for name in names)
    assert sum(name.startswith("nuclei by track") for name in names) == 1

    viewer.dims.set_current_step(0, 11)
    viewer.layers["nuclei"].visible = False
    viewer.window._qt_window.resize(1400, 1000)
    qtbot.wait(100)
    from skimage.io import imsave

    imsave(artifacts / "tracking_widget.png", viewer.screenshot(canvas_only=False, flash=False), check_contrast=False)


def test_tracking_rejects_2d_labels(make_napari_viewer):
    from napari_microseg.widgets.tracking import TrackingWidget

    viewer = make_napari_viewer(show=False)
    viewer.add_labels(np.ones((32, 32), np.uint16), name="flat")
    widget = TrackingWidget(viewer)
    widget.labels_layer.value = "flat"
    assert widget.track() is None
    assert "(T, Y, X)" in widget.status.text()


def test_tracking_mask_stack_lazy_data_and_layer_geometry(make_napari_viewer, wait_worker, tmp_path):
    """A 0/1 mask stack held lazily (dask) in a scaled, shifted layer: tracked as its connected objects
    (as ``microseg track`` does), and the result layers lie on top of the labels."""
    import dask.array as da

    from napari_microseg.measure.labels import masks_to_labels
    from napari_microseg.simulate.nuclei import simulate_nuclei_timelapse
    from napari_microseg.tracking.track import run_tracking
    from napari_microseg.widgets.tracking import TrackingWidget

    sim = simulate_nuclei_timelapse(n_frames=6, shape=(96, 96), n_nuclei=6, seed=2)
    mask = (sim.labels > 0).astype(np.uint8)
    viewer = make_napari_viewer(show=False)
    viewer.add_labels(da.from_array(mask, chunks=(1, 96, 96)), name="mask", scale=(1, 0.5, 0.5), translate=(0, 10, 20),
                      units=("minute", "micrometer", "micrometer"))
    widget = TrackingWidget(viewer)
    widget.labels_layer.value = "mask"
    widget.config.value = "particle"
    assert widget.max_search_radius.value == 10.0  # the particle model's own radius
    widget.config.value = "cell"
    assert widget.max_search_radius.value == 15.0
    wait_worker(widget.track())
    expected = run_tracking(masks_to_labels(mask)[0], config="cell")
    assert widget.result.n_tracks == expected.n_tracks > 1, widget.status.text()
    assert "0/1 mask" in widget.status.text()
    for layer in (widget.tracks_layer, widget.relabelled_layer):
        np.testing.assert_allclose(layer.scale, (1, 0.5, 0.5))
        np.testing.assert_allclose(layer.translate, (0, 10, 20))
    widget.table.selectRow(0)
    first = widget.result.table[widget.result.table.track_id == widget.selected_track_ids()[-1]].iloc[0]
    np.testing.assert_allclose(viewer.camera.center[-2:], (first.y * 0.5 + 10, first.x * 0.5 + 20))
    # the exported track summary is in micrometres and minutes, as the layer's scale and units say
    widget.export_dir.value = str(tmp_path)
    widget.export_csv()
    summary = pd.read_csv(tmp_path / "track_summary.csv")
    np.testing.assert_allclose(summary["path_length_um"], summary["path_length_px"] * 0.5, rtol=1e-5)
    np.testing.assert_allclose(summary["duration_min"], summary["end_t"] - summary["start_t"])


def test_a_stack_segmented_on_one_frame_only_is_tracked_with_a_warning(make_napari_viewer, wait_worker, tmp_path, capsys):
    """Segmenting only the current frame of a time-lapse leaves the other frames empty: tracking it
    gives plausible-looking counts, so the dock (and `microseg track`) say how many frames were empty."""
    import tifffile

    from napari_microseg.cli import main
    from napari_microseg.simulate.nuclei import simulate_nuclei_timelapse
    from napari_microseg.widgets.tracking import TrackingWidget

    labels = simulate_nuclei_timelapse(n_frames=6, shape=(96, 96), n_nuclei=6, seed=7).labels
    one_frame = np.zeros_like(labels)
    one_frame[2] = labels[2]
    viewer = make_napari_viewer(show=False)
    viewer.add_labels(one_frame, name="current frame only")
    viewer.add_labels(labels, name="every frame")
    widget = TrackingWidget(viewer)
    widget.labels_layer.value = "current frame only"
    wait_worker(widget.track())
    assert "5 of 6 frames hold no objects: was only one frame segmented?" in widget.status.text()
    widget.labels_layer.value = "every frame"
    wait_worker(widget.track())
    assert "tracks over 6 frames" in widget.status.text() and "hold no objects" not in widget.status.text()
    # an RGB movie as the image: measured in grey, as the other docks take RGB layers
    movie = simulate_nuclei_timelapse(n_frames=6, shape=(96, 96), n_nuclei=6, seed=7).fluorescence
    viewer.add_image(np.repeat(movie[..., None], 3, axis=-1), name="rgb movie", rgb=True)
    widget.image_layer.value = "rgb movie"
    wait_worker(widget.track())
    assert "tracks over 6 frames" in widget.status.text(), widget.status.text()
    assert "mean_intensity" in widget.result.table and widget.result.table["mean_intensity"].notna().all()
    tifffile.imwrite(tmp_path / "one.tif", one_frame)
    assert main(["track", "--labels", str(tmp_path / "one.tif"), "--out", str(tmp_path / "out")]) == 0
    assert "warning: one.tif: 5 of 6 frames hold no objects" in capsys.readouterr().err
