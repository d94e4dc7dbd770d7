"""Auto-label dock widget: labels from a nuclear stain ([N]), live preview, QC of tiles.

Preview: parameter changes restart a short timer (debounce); when it fires, the
current frame is labelled in a worker and a "preview" layer owned by this widget
is updated. Apply labels the whole stack in a worker into a new Labels layer;
with a target layer (phase contrast of the same field, [N]) the labels are
registered onto it frame by frame, ready to train a phase model on. QC tiles the
labels in a worker, applies the [N] filter and shows kept (green) and dropped
(red) tiles as a Shapes layer, with the reasons in a table.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FloatSpinBox, PushButton, SpinBox
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem

from ..errors import InputError
from ._base import GUI_COPY_BYTES, MicrosegDock, current_frame, display_labels, filling, full_resolution, grey_image, ids_features, labels_digest, layer_geometry, layer_names, placement_mismatch, snapshot, unique_layer_name, worker_copy

PREVIEW_DELAY_MS = 400
#: frames larger than this (pixels) get no live preview (minutes and GBs each; Apply still labels them)
LIVE_PREVIEW_MAX_PIXELS = 4096 * 4096  # (said as "4096 x 4096 px" in the dock)
#: bytes of memory auto-labelling takes per pixel of a frame at its peak step (58 measured since session 27;
#: `python benchmarks/bench_autolabel.py memory`): the figure the live preview's refusal gives (110 overstated it)
AUTOLABEL_BYTES_PER_PIXEL = 60
NO_TARGET = "(none)"
QC_COLUMNS = ["tile", "y", "x", "fg", "objects", "kept", "reason"]  # fg: the foreground fraction (0-1)
#: the QC table's short names of qc.csv's reasons (:func:`~napari_microseg.autolabel.qc.qc_filter`)
QC_REASONS_SHOWN = {"lowest_foreground": "lowest fg", "too_much_foreground": "too much fg"}


def size_note(sizes: dict, params: dict) -> str:
    """What the diameter filter left out, with the setting to change, and frames labelled empty for holding
    nothing above their noise; "" when neither (objects above the maximum are most often nuclei at
    another magnification)."""
    from ..autolabel.fluorescence import inverted_note

    note = (f"; {sizes['no_signal']} frame(s) hold nothing brighter than their noise (pure noise or an empty "
            "field): labelled empty" if sizes.get("no_signal") else "")
    if not sizes.get("too_large"):
        return note
    limit = params["diameter_range"][1]
    return (f"{note}; {sizes['too_large']} object(s) above the {limit:g} px max diameter left out (largest "
            f"{sizes['largest_removed_px']:g} px): raise 'max diameter' if they are nuclei." + inverted_note(sizes))


def ccd_note(layer: Any) -> str:
    """For a layer read from a FITS file (a CCD frame, in ADC): this dock labels nuclei, and where CCD
    frames are auto-labelled instead; "" for other layers."""
    if (getattr(layer, "metadata", None) or {}).get("source_kind") != "fits":
        return ""
    return ("; a FITS frame: this dock labels nuclei, CCD frames (glow, hot pixels, clusters) are "
            "auto-labelled by `microseg autolabel ccd`")


class AutolabelWidget(MicrosegDock):
    title = "Auto-label"
    description = (
        "Labels from a nuclear stain ([N]: CLAHE, local Otsu, watershed, size filter) with a live preview on the "
        "current frame; apply to the stack, optionally onto a phase-contrast target of the same field (labels "
        "registered onto it); QC keeps informative tiles. Correct the labels with napari's tools, then train on "
        "them (Training widget)."
    )

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__(napari_viewer)
        self.stain_layer = ComboBox(label="stain (fluorescence)", choices=lambda *_: layer_names(self.viewer, "Image"))
        self.target_layer = ComboBox(label="target (phase), optional",
                                     choices=lambda *_: [NO_TARGET, *layer_names(self.viewer, "Image")])
        self.correct_shift = CheckBox(label="shift labels onto the target", value=True,
                                      tooltip="register stain and target per frame (phase correlation of edges) and "
                                              "move the labels when the shift is longer than the limit below")
        self.max_shift = FloatSpinBox(label="shifts left alone up to (px)", value=5.0, min=0.0, max=500.0, step=0.5,
                                      tooltip="across modalities the estimate scatters by ~3 px: shorter shifts are noise")
        self.otsu_window = SpinBox(label="Otsu window (px)", value=51, min=5, max=1001, step=2,
                                   tooltip="side of the window in which each pixel's threshold is chosen (local Otsu); a few nucleus widths")
        self.min_diameter = FloatSpinBox(label="min diameter (px)", value=5.0, min=1.0, max=500.0,
                                         tooltip="objects narrower than this (equivalent diameter) are left out")
        self.max_diameter = FloatSpinBox(label="max diameter (px)", value=30.0, min=2.0, max=2000.0,
                                         tooltip="objects wider than this are marked -1 (not annotated) on Apply: "
                                                 "clumps the watershed did not split")
        self.smooth_sigma = FloatSpinBox(label="smoothing sigma (px)", value=1.0, min=0.0, max=10.0, step=0.5,
                                         tooltip="Gaussian smoothing of the stain before thresholding (0: none)")
        self.split_clumps = CheckBox(label="split clumps (watershed)", value=True,
                                    tooltip="split touching nuclei apart at their narrowest point")
        self.clear_border = CheckBox(label="remove border objects", value=True,
                                     tooltip="objects touching the image edge are left out (cut off: their size and shape are "
                                             "wrong): -1, not annotated, in the labels to train on")
        self.live = CheckBox(label="live preview (current frame)", value=True,
                             tooltip="label the frame in view again as settings change (none above 4096 x 4096 px)")
        self.apply_button = PushButton(text="Apply to all frames", tooltip="auto-label every frame in the background (a new labels layer)")
        self.tile = SpinBox(label="QC tile (px)", value=512, min=32, max=4096, step=32,
                            tooltip="side of the tiles the frame is cut into for the quality check")
        self.drop_lowest = FloatSpinBox(label="drop lowest fraction", value=0.25, min=0.0, max=0.95, step=0.05,
                                        tooltip="share of the tiles (0-1) with the fewest nucleus pixels left out of the training set")
        self.max_foreground = FloatSpinBox(label="max foreground", value=0.5, min=0.05, max=1.0, step=0.05,
                                           tooltip="a tile whose labelled share of pixels (0-1) is above this is left out: almost always segmented noise")
        self.drop_empty = CheckBox(label="drop every empty tile", value=False,
                                   tooltip="also leave out every tile without a labelled nucleus (off: empty tiles go only "
                                           "as part of the lowest fraction, as in [N]; they are background examples)")
        self.qc_button = PushButton(text="QC tiles of the labels")
        self.form = Container(widgets=[
            self.stain_layer, self.otsu_window, self.min_diameter, self.max_diameter, self.smooth_sigma,
            self.split_clumps, self.clear_border, self.live, self.target_layer, self.correct_shift, self.max_shift,
            self.apply_button,
            self.tile, self.drop_lowest, self.max_foreground, self.drop_empty, self.qc_button,
        ])
        self.body.addWidget(self.form.native)
        self.qc_table = QTableWidget(0, len(QC_COLUMNS))
        self.qc_table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)  # narrow columns ...
        self.qc_table.horizontalHeader().setStretchLastSection(True)  # ... and the reason takes the rest
        self.qc_table.setHorizontalHeaderLabels(QC_COLUMNS)
        self.qc_table.horizontalHeaderItem(QC_COLUMNS.index("fg")).setToolTip("the tile's foreground fraction (0-1)")
        self.qc_table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.qc_table.verticalHeader().setVisible(False)
        self.qc_table.setMinimumHeight(120)
        self.qc_table.setVisible(False)  # shown with the first QC
        self.body.addWidget(self.qc_table)
        self.grow_with_dock(self.qc_table)  # a tall dock shows more tiles (5 of 16 rows above 150 px left empty)
        self._last_run = ""  # "preview" or "apply": what the dock ran last
        self._changed_during_apply = False  # the form changed while an Apply ran
        self._apply_summary: str | None = None  # that Apply's message, said again with the next preview
        self.timer = QTimer(self)
        self.timer.setSingleShot(True)
        self.timer.setInterval(PREVIEW_DELAY_MS)
        self.timer.timeout.connect(self._live_preview)
        for w in (self.stain_layer, self.otsu_window, self.min_diameter, self.max_diameter, self.smooth_sigma,
                  self.split_clumps, self.clear_border, self.live):
            w.changed.connect(self._form_changed)
        self._previewed_frame: int | None = None  # the stain's frame the last preview labelled
        self.connect_viewer_event(self.viewer.dims.events.current_step, self._frame_moved)  # another frame
        self.apply_button.changed.connect(self.apply)
        self.qc_button.changed.connect(self.run_qc)
        self.run_buttons = (self.apply_button, self.qc_button)
        self.follow_layers(self.stain_layer, self.target_layer)
        self.preview_layer = None
        self._preview_name: str | None = None  # the name the dock gave its preview layer (renamed: the user's)
        self._preview_painted = False  # the user painted into the preview layer since it was last written
        self._preview_digest: str | None = None  # labels_digest of what the dock last wrote there (small layers)
        self._preview_hidden_by_failure = False  # a failed preview hid the last one: the next shows it again
        self.labels_layer = None
        self.qc = None
        self.qc_labels_layer = None  # the last QC's labels layer
        self._pending_preview = False
        self.schedule_preview()  # opened with a stain already chosen (the first image layer): preview it too

    def parameters(self) -> dict:
        """Keyword arguments for ``autolabel_fluorescence`` from the form."""
        return {
            "otsu_window": int(self.otsu_window.value),
            "diameter_range": (float(self.min_diameter.value), float(self.max_diameter.value)),
            "smooth_sigma": float(self.smooth_sigma.value) or None,
            "split_clumps": bool(self.split_clumps.value),
            "clear_border": bool(self.clear_border.value),
        }

    def _stain(self) -> Any:
        """The chosen stain layer; None (after a message) when none is chosen or it has gone."""
        if not self.stain_layer.value:
            return None
        try:
            return self.chosen_layer(self.stain_layer.value, "stain")
        except InputError as err:
            self.show_error(str(err))
            return None

    def _frame_index(self, data: Any, layer: Any) -> int | None:
        """The frame of ``layer`` (holding ``data``, grey) that the viewer shows; None for a 2-D one."""
        return current_frame(self.viewer, layer) if data.ndim == 3 else None

    def _mark_preview_painted(self, event: Any = None) -> None:
        """Only layers this widget made are watched: any paint event means the user edited the preview."""
        self._preview_painted = True

    # -- preview ------------------------------------------------------------
    def dock_closed(self) -> None:
        self.timer.stop()  # a preview waiting for the user's pause, or for a run to end: nobody sees it now
        self._pending_preview = False

    def _form_changed(self, *_: Any) -> None:
        """A setting changed: previewed; during an Apply, after it, the Apply's summary kept and said to be of
        the settings before the change (see :meth:`_after_run`). Moving to another frame is no such change
        (it was said to be one)."""
        if self.busy and self._last_run == "apply":
            self._changed_during_apply = True
        self.schedule_preview()

    def _frame_moved(self, *_: Any) -> None:
        """The viewer's sliders moved: preview again only when the stain is a stack and shows another frame (a 2-D
        stain's preview ran again at every move of any movie's slider, the buttons greyed out each time)."""
        name = self.stain_layer.value
        layer = next((lay for lay in self.viewer.layers if lay.name == name), None)
        if layer is None or layer.ndim != 3 or current_frame(self.viewer, layer) == self._previewed_frame:
            return
        self.schedule_preview()

    def schedule_preview(self, *_: Any) -> None:
        """Restart the debounce timer; the preview runs when the user pauses (after a run going now)."""
        if self.live.value and self.stain_layer.value:
            self.timer.start()
        else:  # live preview turned off (or no stain): a pending one is dropped
            self.timer.stop()

    def _live_preview(self) -> Any:
        """The debounced live preview: not of frames over LIVE_PREVIEW_MAX_PIXELS, which take minutes
        and GBs each (~60 bytes per pixel); said instead."""
        layer = self._stain()
        if layer is None:
            return None
        shape = full_resolution(layer).shape[:-1] if layer.rgb else full_resolution(layer).shape  # (no colour mean here)
        if shape[-2] * shape[-1] > LIVE_PREVIEW_MAX_PIXELS:
            self.show_message(f"live preview is off for frames over 4096 x 4096 px (this one: "
                              f"{shape[-2] * shape[-1] / 1e6:.0f} MP; it would take minutes and about "
                              f"{shape[-2] * shape[-1] * AUTOLABEL_BYTES_PER_PIXEL / 2**30:.1f} GB): try the settings on a crop, then Apply "
                              "(its progress bar and Stop work step by step)")
            return None
        return self.preview()

    def preview(self) -> Any:
        """Label the current frame in a worker and show it in the preview layer."""
        layer = self._stain()
        if layer is None:
            return None
        if self.busy:  # a run is going: try again when it ends
            self._pending_preview = True
            return None
        data = grey_image(layer)  # RGB layers: grey
        t = self._frame_index(data, layer)
        self._previewed_frame = t
        frame = data[t] if t is not None else data  # a lazy layer's frame is read in the worker
        params = self.parameters()
        sizes: dict = {}  # objects the diameter filter removed, filled in the worker
        stack_shape = tuple(data.shape)

        def make_generator():
            from ..autolabel.fluorescence import autolabel_frame_iter
            from ..progress import Progress

            yield Progress(0, 1, "previewing ...")
            labels = yield from autolabel_frame_iter(np.asarray(frame), **params, size_report=sizes)  # Stop between steps
            labels = display_labels(labels)
            features = ids_features(labels)  # in the worker: big frames take a while
            full = labels if t is None else _in_stack(labels, stack_shape, t)
            return full, len(features), features, labels_digest(full) if full.nbytes <= GUI_COPY_BYTES else None

        def done(outcome: tuple) -> None:
            if not self._following_viewer:  # the dock was closed while it ran: nobody asked for it now
                return
            full, n_nuclei, features, digest = outcome
            kept = ""
            shown = self.preview_layer is not None and self.preview_layer in self.viewer.layers
            if shown and not self._preview_painted and self._preview_digest is not None \
                    and self.preview_layer.data.nbytes <= GUI_COPY_BYTES:
                # edits written into the array (a script, the console) send no paint event: compared (~30 ms)
                self._preview_painted = labels_digest(self.preview_layer.data) != self._preview_digest
            if shown and self.preview_layer.name != self._preview_name:
                # the user renamed the preview: a layer to keep, not to draw the next preview into
                kept = f"; '{self.preview_layer.name}' (renamed) is kept as it was"
                self.preview_layer = None
            elif shown and self._preview_painted:
                # the user painted into the preview: keep those edits as their own layer
                self.preview_layer.name = unique_layer_name(self.viewer, "auto-label preview (edited)")
                kept = f"; your edits are kept in '{self.preview_layer.name}'"
                self.preview_layer = None
            if self.preview_layer is None or self.preview_layer not in self.viewer.layers:
                self.preview_layer = self.viewer.add_labels(full, name=unique_layer_name(self.viewer, "auto-label preview"),
                                                            opacity=0.5, **layer_geometry(layer, full.ndim))
                self._preview_name = self.preview_layer.name
                self.preview_layer.events.paint.connect(self._mark_preview_painted)  # brush, fill and eraser
            elif self.preview_layer.ndim != full.ndim:  # another stain layer: a stack after a 2-D image, or back
                self.viewer.layers.remove(self.preview_layer)
                self.preview_layer = None
                return done(outcome)
            else:
                self.preview_layer.data = full
                geometry = layer_geometry(layer, full.ndim)
                # a stain of napari's default axis names after a Z stack: not the Z stack's names kept
                geometry.setdefault("axis_labels", tuple(str(i) for i in range(-full.ndim, 0)))
                for key, value in geometry.items():  # on top of the stain now chosen
                    setattr(self.preview_layer, key, value)
            self.preview_layer.features = features
            self._preview_painted = False
            self._preview_digest = digest
            if self._preview_hidden_by_failure:  # shown again; a preview the user hid stays hidden
                self.preview_layer.visible = True
                self._preview_hidden_by_failure = False
            where = f"frame {t} of {layer.name}" if t is not None else layer.name
            message = f"preview: {n_nuclei} nuclei on {where}{kept}{size_note(sizes, params)}{ccd_note(layer)}"
            if self._apply_summary:  # the form changed during an Apply: its summary stays in view
                message = (f"{self._apply_summary} (These labels use the settings before your change; the new "
                           f"settings' {message}.)")
                self._apply_summary = None
            self.show_message(message)

        self._last_run = "preview"
        return self.start(make_generator, done, label="previewing", on_failed=self._hide_stale_preview)

    def _hide_stale_preview(self) -> None:
        """A failed preview (the error shown in the dock) leaves no earlier preview over the stain as if it
        were this one's; a preview the user painted into or renamed stays."""
        if self.preview_layer is not None and self.preview_layer in self.viewer.layers and not self._preview_painted \
                and self.preview_layer.name == self._preview_name and self.preview_layer.visible:
            self.preview_layer.visible = False
            self._preview_hidden_by_failure = True

    def _after_run(self) -> None:
        """A preview asked for while a run went (the form changed meanwhile) runs now. After an Apply its
        summary (objects left out as -1 ...) is kept for the preview's message, which would replace it
        within a second, and says the labels were made with the settings before the change."""
        if self._changed_during_apply:
            self._changed_during_apply = False
            if self.status.styleSheet() == "":  # not over an error: said again with the preview that follows
                self._apply_summary = self.status.text()
        if self._pending_preview:
            self._pending_preview = False
            self.schedule_preview()

    # -- apply --------------------------------------------------------------
    def apply(self, *_: Any) -> Any:
        """Auto-label every frame in a worker into a new Labels layer (to correct, then train on).

        With a target layer the labels are registered onto it frame by frame and placed on it."""
        layer = self._stain()
        if layer is None:
            if not self.stain_layer.value:  # (a layer that cannot be used has said why already)
                self.show_error("Choose the stain (fluorescence) image layer.")
            return None
        data = grey_image(layer)  # a lazy (big) layer is read in the worker, not here
        if data.ndim not in (2, 3):
            self.show_error(f"the stain must be 2-D or a (T, Y, X) stack, got shape {tuple(data.shape)}")
            return None
        target_layer, target = self._target(layer, tuple(data.shape))
        if target_layer is False:
            return None
        params = self.parameters()
        correct, max_shift = bool(self.correct_shift.value), float(self.max_shift.value)
        sizes: dict = {}  # objects the diameter filter removed, filled in the worker

        def make_generator():
            from ..autolabel.fluorescence import autolabel_fluorescence_iter
            from ..autolabel.pairing import align_labels_iter, check_finite, constant_frames
            from ..progress import Progress

            # a lazy (dask / zarr) stain is read frame by frame by the auto-labeller (read whole here, a 1.6 GB
            # movie took 3.9 GB before the first frame, and Stop waited for the read); registration reads both
            stain = data if target is None else np.asarray(data)
            yield Progress(0, 1, "reading the layers" if target is not None else "auto-labelling")
            target_data = None if target is None else np.asarray(target)
            if target_data is not None:  # said before the labelling, not after it (as the command line)
                check_finite(target_data, f"the target '{target_layer.name}'")
                blank = constant_frames(target_data)
                if blank:
                    sizes["blank_target"] = len(blank)
            # nuclei above the max diameter: -1, "not annotated" (training ignores them), not background,
            # which would teach a network that nuclei of that size are background
            labels = yield from autolabel_fluorescence_iter(stain, **params, too_large_value=-1, size_report=sizes)
            if target is not None:
                labels, shifts = yield from align_labels_iter(stain, target_data, labels, correct_shift=correct,
                                                              max_shift_px=max_shift)
            else:
                shifts = None
            labels = display_labels(labels)
            return labels, shifts, ids_features(labels)

        def done(outcome: tuple) -> None:
            from ..autolabel.fluorescence import inverted_note

            labels, shifts, features = outcome
            n_frames = 1 if data.ndim == 2 else data.shape[0]
            left_out = ""
            if sizes.get("no_signal"):  # as the command line says it
                left_out += (f" {sizes['no_signal']} frame(s) hold nothing brighter than their noise (an empty field): "
                             "labelled empty.")
            if sizes.get("too_large"):
                left_out += (f" {sizes['too_large']} object(s) above the {params['diameter_range'][1]:g} px max diameter "
                            f"(largest {sizes['largest_removed_px']:g} px) are -1, not annotated: training ignores them "
                            "(paint them as nuclei, or raise 'max diameter' and apply again)." + inverted_note(sizes))
            if sizes.get("cut_by_edge"):
                left_out += (f" {sizes['cut_by_edge']} object(s) cut by the image edge are -1, not annotated "
                             "(training ignores them).")
            if shifts is None:
                self.labels_layer = self.viewer.add_labels(
                    labels, name=unique_layer_name(self.viewer, f"{layer.name} auto-labels"), opacity=0.5,
                    features=features, **layer_geometry(layer, labels.ndim))
                self.show_message(f"labelled {n_frames} frame(s): correct with napari's tools, then QC / train.{left_out}")
                return
            self.labels_layer = self.viewer.add_labels(
                labels, name=unique_layer_name(self.viewer, f"{target_layer.name} labels (from {layer.name})"), opacity=0.5,
                metadata={"stain": layer.name, "target": target_layer.name, "shifts": shifts}, features=features,
                **layer_geometry(target_layer, labels.ndim))
            if sizes.get("blank_target"):
                left_out += (f" '{target_layer.name}' is constant in {sizes['blank_target']} frame(s): nothing to "
                             "learn from there, and no shift was measured (is it the right layer?).")
            # the command line warns when the two state other pixel sizes; here their layers' scale / translate
            elsewhere = placement_mismatch(target_layer, layer) if target_layer in self.viewer.layers else None
            placed = (f" Note: {elsewhere.split(': pixels are paired', 1)[0]}: are they the same field? They are "
                      "paired pixel by pixel." if elsewhere else "")
            self.show_message(f"labelled {n_frames} frame(s) of '{layer.name}' onto '{target_layer.name}': "
                              f"{_shift_summary(shifts, max_shift)}. Train on '{target_layer.name}' with these labels."
                              f"{left_out}{placed}")

        self._last_run = "apply"
        worker = self.start(make_generator, done, label="auto-labelling")
        if worker is not None:  # a preview waiting for the user's pause: Apply labels with these settings, and
            self.timer.stop()  # the preview's message replaced Apply's summary half a second after it
            self._pending_preview = False
        return worker

    def _target(self, stain_layer: Any, shape: tuple) -> tuple[Any, Any]:
        """The chosen target layer and its grey data (not read yet when lazy); (None, None) when none
        is chosen; (False, None) after a message when it cannot be paired with the stain."""
        name = self.target_layer.value
        if not name or name == NO_TARGET:
            return None, None
        try:
            target_layer = self.chosen_layer(name, "target")
        except InputError as err:
            self.show_error(str(err))
            return False, None
        if target_layer.name == stain_layer.name:  # by name: a plugin dock's viewer hands out a new proxy per lookup
            self.show_error(f"the target '{name}' is the stain itself: choose the phase-contrast layer of the same "
                            f"field, or '{NO_TARGET}'")
            return False, None
        target = grey_image(target_layer)  # read in the worker
        if tuple(target.shape) != shape:
            self.show_error(f"the target '{name}' {tuple(target.shape)} and the stain '{stain_layer.name}' {shape} must "
                            "show the same field: same frames and size")
            return False, None
        return target_layer, target

    # -- QC -----------------------------------------------------------------
    def run_qc(self, *_: Any) -> Any:
        """Tile the auto-labels (current frame) in a worker and show kept / dropped tiles."""
        layer = self.labels_layer if self.labels_layer in self.viewer.layers else None
        if layer is None:
            self.show_error("Apply the auto-labeller first (QC works on its labels layer).")
            return None
        labels = layer.data
        t = self._frame_index(labels, layer)
        # copies (the user may paint meanwhile): the frame and the other frames as they are now (the "(QC)" layer
        # holds them); small ones taken now, big or lazy ones in the worker
        frame_ref, frame_copied = snapshot(labels[t] if t is not None else labels)
        others, others_copied = snapshot(labels) if t is not None else (None, True)
        tile = int(self.tile.value)
        drop_lowest, max_foreground = float(self.drop_lowest.value), float(self.max_foreground.value)
        drop_empty = bool(self.drop_empty.value)

        def make_generator():
            from ..autolabel.pairing import tile_positions
            from ..autolabel.qc import qc_filter
            from ..progress import Progress

            yield Progress(0, 1, "measuring tiles ...")
            frame = worker_copy(frame_ref, frame_copied)
            positions, tile_shape = tile_positions(frame.shape, tile)
            tiles = [frame[y:y + tile_shape[0], x:x + tile_shape[1]] for y, x in positions]
            _kept, table = qc_filter(tiles, drop_lowest_fraction=drop_lowest, max_foreground_fraction=max_foreground,
                                     drop_empty=drop_empty)
            # the labels to train on: what only dropped tiles cover is -1, "not annotated" (training ignores it)
            kept_area = np.zeros(frame.shape, bool)
            dropped_area = np.zeros(frame.shape, bool)
            for (y, x), keep in zip(positions, table["kept"]):
                (kept_area if keep else dropped_area)[y:y + tile_shape[0], x:x + tile_shape[1]] = True
            # room for -1 and every id (no wrap): signed labels as they are, unsigned ones one size up
            signed = frame.dtype if frame.dtype.kind == "i" else (np.int64 if frame.dtype.itemsize >= 4 else np.int32)
            checked = frame.astype(signed)
            checked[dropped_area & ~kept_area] = -1
            if t is not None:  # a stack: the other frames as they are (QC looked at this one)
                # one copy, in the type of the checked labels (a copy taken already is converted, or used)
                stack = (np.asarray(others).astype(checked.dtype, copy=False) if others_copied
                         else np.array(others, dtype=checked.dtype))
                stack[t] = checked
                checked = stack
            return table.assign(y=positions[:, 0], x=positions[:, 1]), tile_shape, checked, ids_features(checked)

        def done(outcome: tuple) -> None:
            table, (th, tw), checked, features = outcome
            self.qc = table
            earlier = self.qc_labels_layer if self.qc_labels_layer in self.viewer.layers else None
            self.qc_labels_layer = self.viewer.add_labels(
                checked, name=unique_layer_name(self.viewer, f"{layer.name} (QC)"), opacity=0.5, features=features,
                **layer_geometry(layer, checked.ndim))
            rects = [np.array([[y, x], [y, x + tw], [y + th, x + tw], [y + th, x]], float) for y, x in zip(table.y, table.x)]
            colours = ["#33cc33" if k else "#ff4444" for k in table.kept]
            name = unique_layer_name(self.viewer, f"{layer.name} QC tiles")
            self.viewer.add_shapes(rects, shape_type="rectangle", edge_color=colours, face_color="transparent",
                                   edge_width=max(2, th // 100), name=name, **layer_geometry(layer, 2),
                                   features={"kept": table.kept.to_numpy(), "reason": table.reason.to_numpy()})
            self.qc_table.setVisible(True)
            with filling(self.qc_table):
                self.qc_table.setRowCount(len(table))
                for row, rec in enumerate(table.itertuples(index=False)):
                    values = [rec.tile, rec.y, rec.x, f"{rec.foreground_fraction:.3f}", rec.n_objects, "yes" if rec.kept else "no",
                              QC_REASONS_SHOWN.get(rec.reason, rec.reason)]  # (short: "lowest_foreground" was cut off)
                    for col, value in enumerate(values):
                        item = QTableWidgetItem(str(value))
                        if col == len(values) - 1 and rec.reason:
                            item.setToolTip(str(rec.reason))  # qc.csv's name of the rule
                        self.qc_table.setItem(row, col, item)
            where = "" if t is None else f" of frame {t} (only this frame is checked; the other frames are as they were)"
            # which labels it read: QC checks the last Apply result, not the edits of an earlier "(QC)" layer
            read = (f" (of '{layer.name}'; edits made in '{earlier.name}' are not in it)"
                    if earlier is not None and earlier is not layer else f" (of '{layer.name}')")
            self.show_message(f"QC{read}: kept {int(table.kept.sum())} of {len(table)} tiles of {th}x{tw} px{where}; "
                              f"'{self.qc_labels_layer.name}' has the dropped tiles -1 (not annotated): train on it "
                              "to leave them out")

        return self.start(make_generator, done, label="QC")


def _in_stack(frame_labels: np.ndarray, shape: tuple, t: int) -> np.ndarray:
    full = np.zeros(shape, dtype=frame_labels.dtype)
    full[t] = frame_labels
    return full


def _shift_summary(shifts: list[dict], max_shift: float) -> str:
    """One line on the stain-to-target shifts of :func:`~napari_microseg.autolabel.pairing.align_labels_iter`."""
    longest = max(shifts, key=lambda s: s["length"])
    moved = [s for s in shifts if s["corrected"]]
    where = f" (frame {longest['t']})" if len(shifts) > 1 else ""
    text = f"largest shift (dy, dx) = ({longest['dy']:.1f}, {longest['dx']:.1f}) px{where}"
    if moved:
        return text + f"; labels moved onto the target in {len(moved)} of {len(shifts)} frame(s)"
    if longest["length"] > max_shift:
        return text + f", longer than {max_shift:g} px and NOT corrected (tick 'shift labels onto the target')"
    return text + f", within {max_shift:g} px: labels left in place"
