"""Tracking dock widget: btrack on a labels time-lapse, in a worker.

Results: a Tracks layer (tails, coloured by track or generation) and a Labels
layer relabelled by track id — both new layers owned by this widget. A table
lists the tracks; clicking a row jumps to the track's first frame and centres
it. Curation (delete, merge, split at the current frame) rebuilds the result,
updates those two layers, and the exports reflect the edits.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Generator

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, FloatSpinBox, PushButton
from qtpy.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem

from ..errors import InputError
from ..progress import Progress
from ._base import (field_path, MicrosegDock, dock_action, filling, frame_label_map, free_name, free_names, grey_image, label_features, layer_geometry, layer_names, unique_layer_name,
                    snapshot, unwritable_reason, with_frame_labels, worker_copy)

NO_IMAGE = "(none)"
TABLE_COLUMNS = ["track", "start", "end", "frames", "parent", "generation"]


#: the undo history of curation edits keeps at most this many results ...
UNDO_EDITS = 20
#: ... and label stacks of at most this many bytes (at least the last edit is always kept)
UNDO_BYTES = 1 << 30


class TrackingWidget(MicrosegDock):
    title = "Tracking"
    description = (
        "Link objects of a labels time-lapse into tracks with btrack (divisions included); results as "
        "Tracks + relabelled Labels layers, a track table (click to jump), curation, CSV and Cell Tracking Challenge export."
    )

    kept_on_close = ("result", "edits", "tracks_layer", "relabelled_layer", "_by_track_edited", "_source_ref",
                     "_source_edited", "tracked_name", "tracked_image", "tracked_geometry")

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__(napari_viewer)
        from ..tracking.track import available_configs

        self.labels_layer = ComboBox(label="labels (T,Y,X)", choices=lambda *_: layer_names(self.viewer, "Labels"))
        self.image_layer = ComboBox(label="image (optional)", choices=lambda *_: [NO_IMAGE, *layer_names(self.viewer, "Image")])
        self.config = ComboBox(label="model", choices=available_configs(), value="cell" if "cell" in available_configs() else None,
                               tooltip="cell: motion model with divisions; particle: no divisions")
        self.max_search_radius = FloatSpinBox(label="max search radius (px)", value=15.0, min=1.0, max=1000.0,
                                              tooltip="largest move of an object between frames (the model "
                                                      "links steps up to it; larger: near objects are told apart "
                                                      "less surely); choosing a model sets its default")
        self.stage_shift = ComboBox(label="stage-shift correction", choices=["none", "images", "objects"], value="none",
                                    tooltip="take whole-field jumps between frames out before linking: measured on the images, or on the objects' positions; none: no correction")
        self.optimize = CheckBox(label="optimise (divisions, appear/disappear)", value=True,
                                 tooltip="join track pieces across gaps and find divisions (btrack's global optimisation); "
                                         "off: frame-to-frame links only")
        self.colour_by = ComboBox(label="colour by", choices=["track_id", "generation", "root_track_id"], value="track_id",
                                  tooltip="colour of each track: its own id, its generation (divisions since its first ancestor), or its lineage (the first ancestor's id)")
        self.track_button = PushButton(text="Track", tooltip="link the labels' objects through the frames (btrack), in the background")
        self.export_dir = FileEdit(label="export folder", mode="d", value=str(Path.home() / "microseg_tracks"))
        self.export_csv_button = PushButton(text="Export CSV: tracks, counts, track summary")
        self.export_ctc_button = PushButton(text="Export CTC (res_track.txt + masks)")
        self.export_ctc_button.native.setText("Export CTC (res_track.txt + masks)")  # magicgui turns "_" into " "
        self.delete_button = PushButton(text="Delete selected track")
        self.merge_button = PushButton(text="Merge 2 selected (the later continues the earlier)")
        self.split_button = PushButton(text="Split selected at current frame")
        self.undo_button = PushButton(text="Undo last edit", tooltip="the tracks before the last delete, merge or split")
        self.form = Container(widgets=[self.labels_layer, self.image_layer, self.config, self.max_search_radius,
                                       self.stage_shift, self.optimize, self.colour_by, self.track_button])
        self.body.addWidget(self.form.native)
        self.table = QTableWidget(0, len(TABLE_COLUMNS))
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)  # headers readable ...
        self.table.horizontalHeader().setStretchLastSection(True)  # ... and the table as wide as the dock
        self.table.setHorizontalHeaderLabels(TABLE_COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.setMinimumHeight(160)
        self.table.verticalHeader().setVisible(False)
        self.table.itemSelectionChanged.connect(self._jump_to_selected)
        self.body.addWidget(self.table)
        self.grow_with_dock(self.table)
        self.actions = Container(widgets=[self.delete_button, self.merge_button, self.split_button, self.undo_button,
                                          self.export_dir,
                                          self.export_csv_button, self.export_ctc_button])
        self.body.addWidget(self.actions.native)
        self.track_button.changed.connect(self.track)
        # curation and the CTC export rebuild or write the whole result: they run in the worker too
        self.run_buttons = (self.track_button, self.delete_button, self.merge_button, self.split_button,
                            self.undo_button, self.export_csv_button, self.export_ctc_button)
        self.config.changed.connect(self._config_radius)
        self._config_radius()
        self.export_csv_button.changed.connect(self.export_csv)
        self.export_ctc_button.changed.connect(self.export_ctc)
        self.delete_button.changed.connect(self.delete_selected)
        self.merge_button.changed.connect(self.merge_selected)
        self.split_button.changed.connect(self.split_selected)
        self.undo_button.changed.connect(self.undo)
        self.colour_by.changed.connect(self._recolour)
        self.follow_layers(self.labels_layer, self.image_layer)
        self.result = None
        self.edits: list[tuple[Any, str]] = []  # (result before, what was done) of each curation edit, to undo
        self.tracks_layer = None
        self.relabelled_layer = None
        self._by_track_edited = False  # the user painted into the "by track" layer since the dock last set it
        # the labels layer the shown result tracked (weakly) and whether it was edited since its tracking began;
        # the pending pair: those of the run under way
        self._source_ref: Any = None
        self._source_edited = False
        self._pending_source: Any = None
        self._pending_edited = False
        self._updating_layers = False  # the dock is setting that layer's data itself
        self.tracked_name = ""
        self.tracked_image: str | None = None
        self.tracked_geometry: dict = {}  # where the tracked labels layer lies (layer_geometry)
        self.take_over_closed_dock()

    edit_handlers = ("_mark_source_edited", "_mark_by_track_edited")

    def layers_followed(self) -> list:
        """The labels layer tracked (edited since: Export says so) and the "by track" layer (its paint is kept
        apart by the next curation edit)."""
        return [self._source_ref() if self._source_ref is not None else None, self.relabelled_layer]

    def state_taken_over(self) -> None:
        """A closed Tracking dock's tracks, curation edits (Undo) and layers (:meth:`take_over_closed_dock`):
        its table is shown again, and the edits of its layers followed."""
        source = self._source_ref() if self._source_ref is not None else None
        if source is not None:
            for event in (source.events.paint, source.events.data):
                event.disconnect(self._mark_source_edited)  # (once, whichever dock connected it)
                event.connect(self._mark_source_edited)
        if self.relabelled_layer is not None:
            for event in (self.relabelled_layer.events.paint, self.relabelled_layer.events.data):
                event.disconnect(self._mark_by_track_edited)
                event.connect(self._mark_by_track_edited)
        if self.result is not None:
            self._fill_table()
            self.show_message(f"kept from the closed Tracking dock: {self.result.n_tracks} tracks of '{self.tracked_name}'"
                              + (f" with {len(self.edits)} edit(s) to undo" if self.edits else "")
                              + " (curation and Export take them)")

    def _config_radius(self, *_: Any) -> None:
        """Show the chosen model's own search radius (15 px for cell, 10 for particle)."""
        from ..tracking.track import load_config

        if self.config.value:
            radius = load_config(self.config.value).get("max_search_radius")
            if radius:
                self.max_search_radius.value = float(radius)

    # -- tracking -------------------------------------------------------------
    def track(self, *_: Any) -> Any:
        """Track the chosen labels layer in a worker."""
        if not self.labels_layer.value:
            self.show_error("Choose a labels layer holding a (T, Y, X) time-lapse.")
            return None
        try:
            labels_layer = self.chosen_layer(self.labels_layer.value, "labels")
            has_image = self.image_layer.value and self.image_layer.value != NO_IMAGE
            # RGB layers: grey, as the other docks take them (measured intensities, stage-shift registration)
            image = grey_image(self.chosen_layer(self.image_layer.value, "image")) if has_image else None
        except InputError as err:
            self.show_error(str(err))
            return None
        labels = labels_layer.data  # numpy, or a lazy (dask / zarr) array read in the worker
        if getattr(labels_layer, "multiscale", False) or isinstance(labels, list):
            self.show_error("tracking needs a single-resolution labels layer, not a multiscale pyramid")
            return None
        if labels.ndim != 3 or labels.shape[0] < 2:
            self.show_error(f"tracking needs a (T, Y, X) labels stack with at least 2 frames, got shape {labels.shape}")
            return None
        if image is not None and image.shape != labels.shape:
            self.show_error(f"image shape {image.shape} does not match labels shape {labels.shape}")
            return None
        unfinished = _unfinished_store(labels_layer)
        if unfinished:
            self.show_error(unfinished)
            return None
        shift = None if self.stage_shift.value == "none" else self.stage_shift.value
        if shift == "images" and image is None:
            self.show_error("stage-shift correction from images needs an image layer")
            return None
        kwargs = dict(config=self.config.value, max_search_radius=float(self.max_search_radius.value),
                      optimize=bool(self.optimize.value), stage_shift=shift)
        # painting during the run must not change what is tracked: a small stack copied now, a big one in the worker
        labels, copied = snapshot(labels)
        source_name = str(self.labels_layer.value)
        image_name = str(self.image_layer.value) if has_image else None
        geometry = layer_geometry(labels_layer, labels.ndim)
        frame_ids = frame_label_map(labels_layer)  # a Segmentation dock's stack: tracks.csv joins its objects.csv
        self._watch_source(labels_layer)

        def make_generator():
            result = yield from _track_layers(labels, image, kwargs, copied)
            result.table = with_frame_labels(result.table, frame_ids)
            return result, _layer_copy(result)

        image_layer = self.chosen_layer(image_name, "image") if has_image else None
        calibration_note = _calibration_clash(geometry, layer_geometry(image_layer, 3) if image_layer is not None
                                              else {}, image_name)

        def current_name(layer: Any, name_then: str | None) -> str | None:
            """The layer's name when the run ends (renamed meanwhile: a new layer may carry the old name)."""
            return layer.name if layer is not None and layer in self.viewer.layers else name_then

        return self.start(make_generator, lambda done: self._show_result(
            done[0], current_name(labels_layer, source_name), geometry, current_name(image_layer, image_name),
            layer_data=done[1], calibration_note=calibration_note), label="tracking")

    def _show_result(self, result: Any, source_name: str, geometry: dict | None = None,
                     image_name: str | None = None, layer_data: np.ndarray | None = None,
                     calibration_note: str = "") -> None:
        """Show a tracking ``result``; ``layer_data``: the "by track" layer's own copy of its relabelled
        stack, made in the worker (None: copied here); ``calibration_note``: the image layer's calibration
        differs from the labels layer's (whose is used)."""
        self.result = result
        self._source_ref, self._source_edited = self._pending_source, self._pending_edited
        self.tracked_image = image_name  # the image layer measured with the labels, if any
        self.edits.clear()  # a new tracking: the edits of the last one cannot be undone onto it
        self.tracked_name = source_name  # the labels tracked: result layers are named after them
        self.tracked_geometry = dict(geometry or {})  # result layers lie where the tracked labels lie
        self._update_layers(new=True, layer_data=layer_data)
        from ..tracking.track import track_warnings

        note = "a 0/1 mask, not labels: tracked its connected objects; " if result.info.get("mask_converted") else ""
        if _z_step_of(self.tracked_geometry) is not None:  # as `microseg track` says it of a Z stack
            note += "a Z stack (its first axis a length): its planes were linked as frames; "
        text = f"{note}{result.n_tracks} tracks over {result.n_frames} frames"
        events = result.info.get("events")
        if events:  # the events counts.csv dates frame by frame
            text += (f"; {events['divisions']} divisions, {events['appeared']} appeared after frame 0, "
                     f"{events['left_field']} left the field, {events['disappeared']} disappeared before the end")
        warning = "; ".join([*track_warnings(result), *([calibration_note] if calibration_note else [])])
        if warning:
            self.show_error(f"{text}. Note: {warning}")
        else:
            self.show_message(text)

    def _watch_source(self, layer: Any) -> None:
        """Follow the edits of the labels layer a run tracks (from now: the run tracks a copy made now)."""
        import weakref

        self._pending_source, self._pending_edited = weakref.ref(layer), False
        for event in (layer.events.paint, layer.events.data):
            event.disconnect(self._mark_source_edited)  # (connected once, whatever the runs on it)
            event.connect(self._mark_source_edited)

    def _mark_source_edited(self, event: Any = None) -> None:
        if not self._following_viewer:  # a closed dock (its results handed to a new one, which follows them)
            return
        source = getattr(event, "source", None)
        if self._pending_source is not None and source is self._pending_source():
            self._pending_edited = True
        if self._source_ref is not None and source is self._source_ref():
            self._source_edited = True

    def _mark_by_track_edited(self, event: Any = None) -> None:
        """A paint stroke or new data in the current "by track" layer, other than the dock's own update
        (an earlier run's or a kept "(edited)" layer does not count)."""
        if not self._following_viewer:  # a closed dock (see _mark_source_edited)
            return
        if not self._updating_layers and getattr(event, "source", self.relabelled_layer) is self.relabelled_layer:
            self._by_track_edited = True

    def _update_layers(self, new: bool = False, layer_data: np.ndarray | None = None) -> str:
        """Show ``self.result`` in the result layers (``new``: new layers). A "by track" layer the user
        painted into (or gave new data) is kept as "... (edited)", the result going into a new one: a
        curation edit or Undo replaced the paint without a word. Returns a note saying so ("" if none).
        ``layer_data``: that layer's own copy of ``result.relabelled`` made in a worker (a 1.6 GB copy here
        froze the window for 5-7 s); None: copied here (Undo)."""
        if layer_data is None and self.result.relabelled is not None:
            layer_data = self.result.relabelled.copy()
        result = self.result
        kept = ""
        data, kwargs = result.napari_tracks()
        if len(data) == 0:  # no tracks (a movie without objects, or all deleted): napari draws no empty Tracks layer
            if not new and self.tracks_layer is not None and self.tracks_layer in self.viewer.layers:
                self.viewer.layers.remove(self.tracks_layer)
            self.tracks_layer = None
        elif new or self.tracks_layer is None or self.tracks_layer not in self.viewer.layers:
            kwargs = {**kwargs, "name": unique_layer_name(self.viewer, f"{self.tracked_name} tracks"), "tail_length": 10,
                      "color_by": "track_id", **self.tracked_geometry}
            self.tracks_layer = self.viewer.add_tracks(data, **kwargs)
        else:  # our own result layer: update it after curation
            # (its colouring by a property the new data has no features for yet warned on every edit;
            # _recolour sets it back below)
            self.tracks_layer.color_by = "track_id"
            self.tracks_layer.data = data
            self.tracks_layer.graph = kwargs["graph"]
            self.tracks_layer.properties = kwargs["properties"]
        if result.relabelled is not None:
            features = track_features(result.table)  # label = track id: hovering shows its lineage
            shown = self.relabelled_layer is not None and self.relabelled_layer in self.viewer.layers
            if shown and not new and self._by_track_edited:
                self.relabelled_layer.name = unique_layer_name(self.viewer, f"{self.tracked_name} by track (edited)")
                kept = f"; your edits are kept in '{self.relabelled_layer.name}'"
                shown = False
            # the layer gets its own copy: napari paints in place, and the result (kept for Undo and Export)
            # must not change with it, nor be shared by a kept "(edited)" layer and the next one
            if new or not shown:
                self.relabelled_layer = self.viewer.add_labels(
                    layer_data, name=unique_layer_name(self.viewer, f"{self.tracked_name} by track"),
                    opacity=0.4, visible=False, features=features, **self.tracked_geometry)
                for event in (self.relabelled_layer.events.paint, self.relabelled_layer.events.data):
                    event.connect(self._mark_by_track_edited)
            else:
                self._updating_layers = True
                try:
                    self.relabelled_layer.data = layer_data
                finally:
                    self._updating_layers = False
                self.relabelled_layer.features = features
            self._by_track_edited = False
        if new and self.tracks_layer is not None:  # the visible result to work on, not the hidden "by track" labels
            self.viewer.layers.selection.active = self.tracks_layer
        self._recolour()
        self._fill_table()
        return kept

    def _recolour(self, *_: Any) -> None:
        if self.tracks_layer is not None and self.colour_by.value in self.tracks_layer.properties:
            self.tracks_layer.color_by = self.colour_by.value

    def _fill_table(self) -> None:
        table = self.result.table
        summary = table.groupby("track_id").agg(start=("t", "min"), end=("t", "max"), frames=("t", "size"),
                                                parent=("parent_track_id", "first"), generation=("generation", "first"))
        with filling(self.table):
            self.table.setRowCount(len(summary))
            for row, (track_id, rec) in enumerate(summary.iterrows()):
                values = [track_id, rec.start, rec.end, rec.frames, rec.parent, rec.generation]
                for col, value in enumerate(values):
                    item = QTableWidgetItem()
                    item.setData(0, int(value))
                    self.table.setItem(row, col, item)

    # -- table interaction --------------------------------------------------
    def selected_track_ids(self) -> list[int]:
        rows = sorted({index.row() for index in self.table.selectedIndexes()})
        return [int(self.table.item(r, 0).data(0)) for r in rows]

    def _jump_to_selected(self) -> None:
        ids = self.selected_track_ids()
        if not ids or self.result is None:
            return
        rows = self.result.table[self.result.table.track_id == ids[-1]].sort_values("t")
        first = rows.iloc[0]
        # the table is in pixels and frames; the viewer in world units (where the result layers lie)
        world = self._data_to_world((float(first.t), float(first.y), float(first.x)))
        self.viewer.dims.set_point(self.viewer.dims.ndim - 3, float(world[0]))  # the tracked stack's time axis
        self.viewer.camera.center = (float(world[1]), float(world[2]))
        self.show_message(f"track {ids[-1]}: frames {int(rows.t.min())}-{int(rows.t.max())}")

    def _placement(self) -> Any:
        """A layer placed as the tracked labels were (scale, translate, rotation, shear, affine): the
        result layer if it is still shown, else an empty Points layer made with their geometry."""
        for layer in (self.tracks_layer, self.relabelled_layer):
            if layer is not None and layer in self.viewer.layers:
                return layer
        from napari.layers import Points

        return Points(np.zeros((0, 3)), **self.tracked_geometry)

    def _data_to_world(self, point: tuple) -> np.ndarray:
        """(t, y, x) of the tracked stack (frames, pixels) to the viewer's world coordinates."""
        return np.asarray(self._placement().data_to_world(point), float)

    def _world_to_data(self, point: tuple) -> np.ndarray:
        """The viewer's world (t, y, x) to the tracked stack's (frames, pixels)."""
        return np.asarray(self._placement().world_to_data(point), float)

    def _edit(self, edit: Any, done_message: str) -> Any:
        """Apply a curation edit in the worker (it rebuilds the relabelled stack); the layers and the
        table follow on the GUI thread. A refused edit shows its reason in the dock."""
        if self.result is None:
            self.show_error("Track first.")
            return None
        if self._results_closed():
            return None
        before = self.result

        def make_generator():
            yield Progress(0, 1, "editing tracks")
            result = edit(before)
            return result, _layer_copy(result)

        chosen = self.selected_track_ids()

        def done(edited: Any) -> None:
            result, layer_data = edited
            self.edits.append((before, done_message))
            self._trim_edits()
            self.result = result
            kept = self._update_layers(layer_data=layer_data)
            self._select_tracks(chosen)  # the same tracks where they survive: never the next row by accident
            self.show_message(f"{done_message} (Undo last edit restores it){kept}")

        return self.start(make_generator, done, label="editing")

    def _results_closed(self) -> bool:
        """True (and said) when both layers of the tracks (Tracks and "by track") were closed: an edit or an
        Undo would bring back the tracks of labels that may be closed too, over whatever layers now carry
        their names."""
        if any(layer is not None and layer in self.viewer.layers for layer in (self.tracks_layer, self.relabelled_layer)):
            return False
        self.show_error(f"the layers of the tracks of '{self.tracked_name}' are closed: track again to edit them")
        return True

    def _trim_edits(self) -> None:
        """Keep the undo history within :data:`UNDO_EDITS` edits and :data:`UNDO_BYTES` of label stacks."""
        def size(result: Any) -> int:
            return int(getattr(getattr(result, "relabelled", None), "nbytes", 0))

        while len(self.edits) > UNDO_EDITS or (len(self.edits) > 1 and sum(size(r) for r, _ in self.edits) > UNDO_BYTES):
            self.edits.pop(0)

    def undo(self, *_: Any) -> bool:
        """Go back to the tracks before the last curation edit (delete, merge or split); False if none."""
        if self.busy:
            self.show_error("Already running: press Stop first.")
            return False
        if not self.edits:
            self.show_error("No edit to undo.")
            return False
        if self._results_closed():
            return False
        chosen = self.selected_track_ids()
        self.result, what = self.edits.pop()
        kept = self._update_layers()
        self._select_tracks(chosen)
        self.show_message(f"undone: {what}" + (f"; {len(self.edits)} more edit(s) can be undone" if self.edits else "")
                          + kept)
        return True

    def _select_tracks(self, track_ids: list[int]) -> None:
        """Select the table rows of ``track_ids`` that still exist (none: no selection), without
        moving the view."""
        self.table.blockSignals(True)
        self.table.clearSelection()
        wanted = set(int(t) for t in track_ids)
        from qtpy.QtCore import QItemSelectionModel

        flags = QItemSelectionModel.Select | QItemSelectionModel.Rows
        for row in range(self.table.rowCount()):
            if int(self.table.item(row, 0).data(0)) in wanted:
                self.table.selectionModel().select(self.table.model().index(row, 0), flags)
        self.table.blockSignals(False)

    def delete_selected(self, *_: Any) -> Any:
        from ..tracking.export import delete_track

        ids = self.selected_track_ids()
        if len(ids) != 1:
            self.show_error("Select one track in the table to delete.")
            return None
        return self._edit(lambda r: delete_track(r, ids[0]), f"deleted track {ids[0]}")

    def merge_selected(self, *_: Any) -> Any:
        from ..tracking.export import merge_tracks

        ids = self.selected_track_ids()
        if len(ids) != 2:
            self.show_error("Select exactly two tracks to merge (the later one continues the earlier).")
            return None
        starts = self.result.table.groupby("track_id")["t"].min()
        ids = sorted(ids, key=lambda i: int(starts.get(i, 0)))  # the earlier first, whatever their ids
        return self._edit(lambda r: merge_tracks(r, ids[0], ids[1]), f"merged track {ids[1]} onto {ids[0]}")

    def split_selected(self, *_: Any) -> Any:
        from ..tracking.export import split_track

        ids = self.selected_track_ids()
        if len(ids) != 1:
            self.show_error("Select one track in the table to split at the current frame.")
            return None
        world = tuple(float(v) for v in self.viewer.dims.point[-3:])
        t = int(np.floor(self._world_to_data(world)[0] + 0.5))  # the frame shown, in the tracked stack
        return self._edit(lambda r: split_track(r, ids[0], t), f"split track {ids[0]} at frame {t}")

    # -- export ---------------------------------------------------------------
    def _export_folder(self) -> Path:
        if self.result is None:
            raise InputError("Nothing to export yet: track first.")
        return field_path(self.export_dir.value, "export folder")

    @dock_action(fallback=list)
    def export_csv(self, *_: Any) -> list[str]:
        """Write tracks.csv, counts.csv, track_summary.csv and the config JSON (new names if the files exist).
        The summary adds micrometres and minutes where the tracked labels layer's units say what its
        scale means (napari layer ``units``, e.g. from OME metadata)."""
        from ..tracking.export import write_config_json, write_counts_csv, write_track_summary_csv, write_tracks_csv

        if self.busy:  # a tracking or curation edit in progress: the tables would be the result before it
            raise InputError("Tracking or an edit is running: export when it has finished.")
        folder = self._export_folder()
        reason = unwritable_reason(folder / "tracks.csv")  # all three or none
        if reason:
            raise InputError(reason)
        # one number for the four files of this export (a Segmentation export there may hold counts.csv)
        paths = free_names(folder, ("tracks.csv", "counts.csv", "track_summary.csv", "track_config.json"))
        write_tracks_csv(self.result, paths[0])
        write_counts_csv(self.result, paths[1])
        units = physical_units(self.tracked_geometry)
        write_track_summary_csv(self.result, paths[2], **units)
        # the record holds what the CLI's does: the inputs, the units and the seed (tracking is deterministic)
        self.result.config.setdefault("seed", 0)
        self.result.config["inputs"] = {"labels": f"napari layer '{self.tracked_name}'",
                                        "image": f"napari layer '{self.tracked_image}'" if self.tracked_image else None}
        self.result.config["units"] = {"pixel_size_um": units.get("pixel_size"),
                                       "frame_interval_min": units.get("frame_interval")}
        if units.get("pixel_size_y") is not None:  # non-square pixels: tracks.csv reopens over the movie
            self.result.config["units"]["pixel_size_y_um"] = units["pixel_size_y"]
        if units.get("pixel_size") is not None:  # where the movie lies (translate, um), as `microseg track` keeps it:
            from ..io.images import origin_from_layer  # tracks.csv reopens over the movie, not beside it

            origin = origin_from_layer(self.tracked_geometry.get("translate"), self.tracked_geometry.get("units"))
            if origin:
                self.result.config["units"]["origin_um"] = origin
        z_step = _z_step_of(self.tracked_geometry)  # a Z stack linked plane by plane: tracks.csv reopens over it
        if z_step is not None and units.get("frame_interval") is None:
            self.result.config["units"]["z_step_um"] = z_step
        write_config_json(self.result, paths[3])
        self.show_message("written: " + ", ".join(str(p) for p in paths) + self._painted_note())
        return [str(p) for p in paths]

    def _painted_note(self) -> str:
        """A note for an export when the labels layer tracked was edited since its tracking, or the user painted
        into the "by track" layer since the dock set it: the files hold the tracking result, not the edits
        (they said nothing); "" otherwise."""
        note = ""
        source = self._source_ref() if self._source_ref is not None else None
        if self._source_edited and source is not None and source in self.viewer.layers:
            note = (f"; '{source.name}' was edited since it was tracked: these files hold its labels as tracked "
                    "(track it again to take the edits in)")
        layer = self.relabelled_layer
        if not self._by_track_edited or layer is None or layer not in self.viewer.layers:
            return note
        return note + (f"; the paint in '{layer.name}' is not in these files (they hold the tracking result): track "
                       "that layer to take it in")

    @dock_action()
    def export_ctc(self, *_: Any) -> Any:
        """Write a Cell Tracking Challenge result folder (res_track.txt + maskNNN.tif) in the worker;
        returns the worker (``None`` when refused)."""
        from ..tracking.export import CTC_FOLDER

        folder = free_name(self._export_folder() / CTC_FOLDER)
        reason = unwritable_reason(folder / "res_track.txt")
        if reason:
            raise InputError(reason)
        result = self.result

        def make_generator():
            from ..tracking.export import write_ctc_iter

            yield Progress(0, 1, f"writing {folder.name}")
            try:
                return (yield from write_ctc_iter(result, folder))  # Stop: the masks written are taken away
            except OSError as err:  # a folder the checks let through (a read-only mount, /proc): one line
                raise InputError(f"cannot write {folder}: {err.strerror or err}") from None

        painted = self._painted_note()
        return self.start(make_generator, lambda written: self.show_message(f"written CTC folder {written}{painted}"),
                          label="exporting", stopped_message=f"stopped; {folder.name} was not written",
                          finished_counts=True)  # a complete folder is written: said so, whenever Stop came


def _layer_copy(result: Any) -> np.ndarray | None:
    """The "by track" layer's own copy of a result's relabelled stack, made in the worker: napari paints
    in place, and the result (kept for Undo and Export) must not change with it."""
    relabelled = getattr(result, "relabelled", None)
    return None if relabelled is None else np.array(relabelled, copy=True)


def _calibration_clash(labels_geometry: dict, image_geometry: dict, image_name: str | None) -> str:
    """A note where the image layer's pixel size or frame interval (its scale and units) differs from the
    labels layer's, whose the exports use (as ``microseg track`` does, and says); "" where they agree."""
    from ..tracking.units import COMPARED_UNITS, _differs

    names = {"pixel_size": "pixel_size_um", "pixel_size_y": "pixel_size_y_um", "frame_interval": "frame_interval_min"}
    labels_units, image_units = physical_units(labels_geometry), physical_units(image_geometry)
    clashes = [f"{labels_units[key]:g} {COMPARED_UNITS[names[key]]} in the labels, {image_units[key]:g} in the image"
               for key in names if key in labels_units and key in image_units
               and _differs(labels_units[key], image_units[key])]
    if not clashes:
        return ""
    return (f"the labels layer and the image layer '{image_name}' are calibrated differently ({'; '.join(clashes)}): "
            "the labels layer's used in the exported um and min; are they the same movie?")


def _z_step_of(geometry: dict) -> float | None:
    """Micrometres per plane of a tracked (Z, Y, X) layer (its first axis a length), else None."""
    from ..io.images import calibration_from_layer

    scale = geometry.get("scale")
    if not scale or len(scale) != 3:
        return None
    return calibration_from_layer(scale, geometry.get("units")).get("z_step_um")


def _unfinished_store(layer: Any) -> str | None:
    """Why ``layer`` cannot be tracked when it was opened from a label store a ``microseg batch segment`` run
    has not finished (its frames after the last written are empty: every track "disappeared" there), as
    ``microseg track`` refuses it; None otherwise."""
    from types import SimpleNamespace

    from ..io.images import check_complete

    header = (getattr(layer, "metadata", None) or {}).get("header")
    if not isinstance(header, dict) or "microseg_batch" not in header:
        return None
    record = header["microseg_batch"]
    path = getattr(getattr(layer, "source", None), "path", None)
    if path and Path(path).is_dir():  # the store as it is now (the run may have finished since it was opened)
        import zarr

        with contextlib.suppress(Exception):  # unreadable now: the record it was opened with
            record = dict(zarr.open(str(path), mode="r").attrs).get("microseg_batch", record)
    try:
        check_complete(SimpleNamespace(metadata={"microseg_batch": record}), f"'{layer.name}'")
    except InputError as err:
        return str(err)
    return None


def physical_units(geometry: dict) -> dict:
    """``pixel_size`` (micrometres per pixel along X), ``pixel_size_y`` (along Y, only where the pixels
    are not square) and ``frame_interval`` (minutes) of a layer's ``scale`` and ``units``
    (``geometry``: the tracked (T, Y, X) layer's), for :func:`track_summary`; each only where the units
    are a length or a time, not napari's "pixel"."""
    from ..io.images import calibration_from_layer

    scale = geometry.get("scale")
    if not scale or len(scale) < 3:
        return {}
    found = calibration_from_layer(scale, geometry.get("units"))
    names = {"pixel_size_um": "pixel_size", "pixel_size_y_um": "pixel_size_y", "frame_interval_min": "frame_interval"}
    return {names[key]: value for key, value in found.items() if key in names}


def _track_layers(labels: Any, image: Any, kwargs: dict, copied: bool = True) -> Generator[Any, None, Any]:
    """Worker side of :meth:`TrackingWidget.track`: read lazy layer data (and copy a big in-memory
    stack unless ``copied``, see ``snapshot``), then track (a 0/1 mask stack as its connected objects).
    Returns the TrackResult, with ``info["events"]``: the movie's totals of counts.csv's event columns
    (divisions, appeared, left_field, disappeared)."""
    from ..tracking.export import counts_table
    from ..tracking.track import track

    yield Progress(0, 1, "reading layers")
    # the labels in memory (curation rebuilds their frames); a lazy image (Zarr, big TIFF) is measured frame by frame
    image = None if image is None else image if hasattr(image, "compute") else np.asarray(image)
    result = yield from track(worker_copy(labels, copied), image, **kwargs)
    if len(result.table):
        events = counts_table(result).drop(columns=["t", "count"]).sum()
        result.info["events"] = {name: int(value) for name, value in events.items()}
    return result


def track_features(table: Any) -> Any:
    """The "by track" Labels layer's features: one row per track, ``label`` its track id, with its
    parent, root and generation (from a tracks.csv-style table, one row per track and frame)."""
    import pandas as pd

    columns = [c for c in ("parent_track_id", "root_track_id", "generation") if c in table.columns]
    if len(table) == 0:
        return label_features(pd.DataFrame({"label": pd.Series(dtype=np.int64), **{c: [] for c in columns}}))
    per_track = table.groupby("track_id", sort=True)[columns].first().reset_index()
    return label_features(per_track.rename(columns={"track_id": "label"}))
