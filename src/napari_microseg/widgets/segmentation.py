"""Segmentation dock widget: run a model on the current frame or the whole stack, in a worker.

Results are new layers (never replacing the user's): a Labels layer whose
``features`` table holds the measurements, and optionally the probability map.
Counts per frame are shown and exportable. Correct-and-retrain: fix the predicted
labels with napari's tools, "Add to training set", then "Fine-tune" the model
on the corrected frames (in a worker), which becomes the current model.
"""

from __future__ import annotations

import contextlib
import os
import threading
import traceback
import weakref
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, FloatSpinBox, Label, PushButton, SpinBox

from qtpy.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem

from ..defaults import DEFAULT_MIN_SIZE
from ..errors import InputError
from ..pretrained import list_pretrained_for
from ..colours import class_colour
from ._base import (field_path, NO_MODEL_MESSAGE, MicrosegDock, chosen_model_path, model_choices, class_colormap, current_frame, display_labels, dock_action, free_names, full_resolution,
                    FRAME_LABELS_KEY, frame_label_map, grey_image, result_line, label_features, layer_geometry, layer_names, placement_mismatch, reset_choices_in_order, section_header, span_row, unique_layer_name, watch_undo,
                    unique_stack_ids, unwritable_reason, with_frame_labels, snapshot, worker_copy, filling, labels_digest)

FILE_CHOICE = "model file ..."
#: the result layer's metadata key of its run's own id (a copy made by Duplicate Layer keeps it)
RUN_ID_KEY = "segment_run_id"
#: the model chosen when the widget opens (the shipped nuclei model), if it is installed
DEFAULT_MODEL = "nuclei_fluorescence"

#: models trained in this session (the Training widget appends), offered first
RECENT_MODELS: list[str] = []
#: the open Segmentation docks, whose model lists take in models trained meanwhile
_OPEN_DOCKS: "weakref.WeakSet[SegmentationWidget]" = weakref.WeakSet()


def add_recent_model(path: str) -> None:
    """Offer ``path`` (a model just trained) first in every open Segmentation dock's model list. A dock
    whose model the user has not picked by hand chooses it (the model just trained is the one to try);
    a dock where the user picked a model keeps that choice."""
    if path in RECENT_MODELS:
        RECENT_MODELS.remove(path)
    RECENT_MODELS.insert(0, path)
    for dock in list(_OPEN_DOCKS):
        try:
            dock.offer_model(path)
        except RuntimeError:  # a dock whose Qt widget napari has already deleted
            _OPEN_DOCKS.discard(dock)

#: output mode of each model file the Segmentation dock looked at: (path, mtime in ns) -> mode
_OUTPUT_MODES: dict[tuple[str, int], str] = {}


class SegmentationWidget(MicrosegDock):
    title = "Segmentation"
    description = (
        "Segment the current frame or a whole stack with a trained model (tiled, no seams); "
        "results as a new Labels layer with measurements, counts per frame and CSV export. "
        "Correct the labels, add them to the training set and fine-tune: it learns the whole frame, "
        "so correct all of a frame you add."
    )

    kept_on_close = (
        "result", "tiles", "clusters", "result_layer_name", "result_layer", "_result_image_ref", "_result_image_name",
        "result_edited", "result_digest", "_measurements_outdated", "_edit_count", "_earlier_results",
        "_edited_since_add", "corrections", "correction_names", "correction_sources", "correction_layers",
        "fine_tuned_path", "finetune_scores", "model_picked_by_user", "_picker_chosen_by_user")

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__(napari_viewer)
        self.image_layer = ComboBox(label="image", choices=lambda *_: layer_names(self.viewer, "Image"))
        self.model_choice = ComboBox(label="model", choices=self._model_choices,
                                     tooltip="a shipped model, one trained in this session, or a model file (.pt)")
        self.model_choice.value = default_model(self.model_choice.choices)
        self.model_picked_by_user = False  # until then a model trained meanwhile becomes the choice
        self._choosing_model = False  # the dock itself is changing the choice
        self.model_file = FileEdit(label="model file", mode="r", filter="*.pt", value="")
        self.scope = ComboBox(label="run on", choices=["current frame", "whole stack"], value="current frame",
                              tooltip="segment the frame shown in the viewer, or every frame of a stack")
        self.tile = SpinBox(label="largest tile (px)", value=512, min=64, max=4096, step=32,
                            tooltip="tiles shrink to cover each frame evenly (a 512 x 512 frame is one tile)")
        self.min_size = SpinBox(label="min size (px)", value=DEFAULT_MIN_SIZE, min=0, max=100000,
                                tooltip="objects smaller than this many pixels are dropped (as `microseg segment --min-size`)")
        self.remove_border = CheckBox(label="remove border objects", value=False,
                                      tooltip="drop objects touching the image edge (cut off: their size and shape are wrong)")
        self.keep_probabilities = CheckBox(label="add probability layer", value=False,
                                           tooltip="also show the network's probability of nucleus (0-1) as an image layer")
        self.tta = CheckBox(label="test-time augmentation (4 flips, 4x slower)", value=False,
                            tooltip="average the network's output over the image and its 3 mirror images: a little more accurate")
        self.diameter = FloatSpinBox(label="nucleus diameter (px, 0 = as trained)", value=0.0, min=0.0, max=10000.0, step=1.0,
                                     tooltip="nuclei far from the sizes the model was trained on are resized to them tile by tile")
        self.estimate_diameter = CheckBox(label="estimate nucleus diameter", value=False,
                                          tooltip="measure the diameter on a central crop first (a few seconds)")
        self.shape_rules = CheckBox(label="CCD shape rules: hot pixels are straight lines", value=False,
                                    tooltip="CCD class models: compact hot-pixel blobs become clusters")
        self.max_cluster_size = SpinBox(label="CCD max cluster size (px, 0 = none)", value=0, min=0, max=10**7,
                                        tooltip="CCD class models: larger cluster components (tracks) become background")
        self.hot_repeats = CheckBox(label="CCD hot pixels repeat (whole stack of exposures)", value=False,
                                    tooltip="CCD class models, a stack of exposures of one sensor: hot pixels that do not "
                                            "repeat in half of the frames (more when busy frames would repeat by "
                                            "chance) are charge deposits (cluster); clusters that do are defects (hot)")
        self.device = ComboBox(label="device", choices=["auto", "cpu", "cuda", "mps"], value="auto",
                               tooltip="auto: the GPU when there is one, else the CPU")
        self.run_button = PushButton(text="Segment", tooltip="segment in the background: a labels layer with each object's measurements")
        self.counts_label = result_line()
        self.export_dir = FileEdit(label="export folder", mode="d", value=str(Path.home() / "microseg_results"))
        self.export_button = PushButton(text="Export counts.csv + objects.csv",
                                        tooltip="the result layer as it is now, with your corrections, into the export folder")
        self.find_class = ComboBox(label="find tiles with class", choices=self._class_choices)
        self.find_button = PushButton(text="List tiles")
        self.batch_input = FileEdit(label="folder / Zarr", mode="d", value="")
        self.batch_out = FileEdit(label="batch output", mode="d", value=str(Path.home() / "microseg_batch"))
        self.batch_workers = SpinBox(label="Dask workers (0 = in this process)", value=2, min=0, max=256,
                                     tooltip="processes segmenting files side by side; each holds a copy of the model")
        self.batch_button = PushButton(text="Run batch (Dask, resumable)",
                                       tooltip="multi-channel files: the channel of the image layer chosen above (File > Open gives each channel as a layer)")
        self.labels_for_training = ComboBox(label="corrected labels", choices=lambda *_: layer_names(self.viewer, "Labels"),
                                            tooltip="the labels layer you corrected; its current frame is added to the fine-tuning set")
        self.add_button = PushButton(text="Add to training set (current frame)",
                                     tooltip="the corrected labels of the frame shown, for Fine-tune")
        self.clear_training_button = PushButton(text="Clear training set", tooltip="forget the frames added so far")
        self.training_set_label = Label(value="training set: empty")
        self.finetune_epochs = SpinBox(label="fine-tune epochs", value=10, min=1, max=1000,
                                       tooltip="passes over the corrected frames; the model is saved as a new file beside the old one (or in ~/microseg_models)")
        self.finetune_button = PushButton(text="Fine-tune", tooltip="train the model further on the frames added (a new model file)")
        self.form = Container(widgets=[
            self.image_layer, self.model_choice, self.model_file, self.scope, self.tile, self.min_size,
            self.remove_border, self.keep_probabilities, self.tta, self.diameter, self.estimate_diameter, self.shape_rules, self.max_cluster_size, self.hot_repeats, self.device,
            self.run_button, self.counts_label,
            self.export_dir, self.export_button, self.find_class, self.find_button,
            correct_header := section_header("correct and retrain"),
            self.labels_for_training, self.add_button, self.training_set_label, self.clear_training_button,
            self.finetune_epochs, self.finetune_button,
            batch_header := section_header("batch: a folder or Zarr store, on a local Dask cluster"),
            self.batch_input, self.batch_out, self.batch_workers, self.batch_button,
        ])
        span_row(self.counts_label, self.training_set_label, correct_header, batch_header)
        self.body.addWidget(self.form.native)
        self.tile_table = QTableWidget(0, 4)
        self.tile_table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)  # headers readable ...
        self.tile_table.horizontalHeader().setStretchLastSection(True)  # ... and the table as wide as the dock
        self.tile_table.setHorizontalHeaderLabels(["y0", "x0", "pixels", "tile"])
        self.tile_table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.tile_table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.tile_table.verticalHeader().setVisible(False)
        self.tile_table.setMaximumHeight(140)
        self.tile_table.itemSelectionChanged.connect(self._jump_to_tile)
        self.tile_table.setVisible(False)  # shown with the first list of tiles
        # right under "List tiles" in the form (not below the correct-and-retrain and batch sections)
        rows = self.form.native.layout()
        under = rows.indexOf(self.find_button.native)
        rows.insertWidget(under + 1 if under >= 0 else rows.count(), self.tile_table)
        self.find_button.changed.connect(self.find_tiles)
        self.batch_button.changed.connect(self.run_batch)
        self.run_button.changed.connect(self.segment)
        self.export_button.changed.connect(self.export)
        self.add_button.changed.connect(self.add_to_training_set)
        self.clear_training_button.changed.connect(self.clear_training_set)
        self.finetune_button.changed.connect(self.fine_tune)
        self.run_buttons = (self.run_button, self.batch_button, self.finetune_button)
        self.model_choice.changed.connect(self._toggle_file)
        self.model_choice.changed.connect(self._note_user_choice)
        self.model_file.changed.connect(self._toggle_file)  # a model file of another kind shows its own options
        self.follow_layers(self.image_layer, self.labels_for_training)
        self._setting_picker = self._picker_chosen_by_user = False  # "corrected labels" picked by the user?
        self.labels_for_training.changed.connect(self._note_picker_choice)
        self.result = None
        self.tiles = None
        self.clusters = None
        self.result_layer_name: str | None = None
        self.result_layer = self.result_image = None  # the last run's labels layer and the image it came from
        self.result_edited = False  # the user painted into that layer since: Export measures it again
        # earlier runs' result layers (weak) with what Export needs of them, by layer id: see _remember_result
        self._earlier_results: dict[Any, tuple] = {}
        # unique ids of the result layers the user edited since a frame of theirs was last added
        self._edited_since_add: set = set()
        # layer selections made (counted) and their count when the last run started: after a stopped or failed
        # run, an earlier result the user selects is exported; one left selected from before is not
        self._selection_changes = self._selection_at_run = 0
        self.connect_viewer_event(self.viewer.layers.selection.events.active, self._count_selection_change)
        _OPEN_DOCKS.add(self)
        # the fine-tuning set: (image layer name, frame) -> (image, corrected labels), one pair per frame
        self.corrections: dict[tuple[Any, int], tuple[np.ndarray, np.ndarray]] = {}  # (layer's unique id, frame)
        self.correction_names: dict[tuple[Any, int], str] = {}  # the layer's name when the frame was added
        # the model and settings whose output was corrected (None: a labels layer not made here), and
        # whether the corrections are a class map, per entry
        self.correction_sources: dict[tuple[Any, int], tuple[str | None, dict | None, bool]] = {}
        # the labels layer each frame was added from (weakly) and the frame's index in it (None: a 2-D layer):
        # corrections made there after Add are what Fine-tune trains on
        self.correction_layers: dict[tuple[Any, int], tuple[Any, int | None]] = {}
        self.fine_tuned_path: str | None = None
        self.finetune_scores: dict | None = None  # the last fine-tune's correction_agreement, before / after
        self._toggle_file()
        self.take_over_closed_dock()

    edit_handlers = ("_mark_result_edited",)

    def layers_followed(self) -> list:
        """The last result's layer and the earlier results' (their corrections: Export, Add to training set)."""
        return [self.result_layer, *(entry[0]() for entry in self._earlier_results.values())]

    def state_taken_over(self) -> None:
        """A closed Segmentation dock's results and training set (:meth:`take_over_closed_dock`): Export writes
        its last result again, its result layers' corrections are followed, List tiles shows its tiles."""
        self._earlier_results = {k: v for k, v in self._earlier_results.items() if v[0]() is not None}
        for layer in [self.result_layer, *(entry[0]() for entry in self._earlier_results.values())]:
            if layer is not None and layer in self.viewer.layers:
                for event in (layer.events.paint, layer.events.data):
                    event.disconnect(self._mark_result_edited)  # (once, whichever dock connected it)
                    event.connect(self._mark_result_edited)
                watch_undo(layer, self._mark_result_edited)  # (replaces the closed dock's)
        self.find_class.reset_choices()
        if self.tiles is not None and len(self.tiles):
            with filling(self.tile_table):
                self.tile_table.setRowCount(len(self.tiles))
                for row, rec in enumerate(self.tiles.itertuples(index=False)):
                    for col, value in enumerate(_tile_row(rec)):
                        self.tile_table.setItem(row, col, QTableWidgetItem(value))
            self.tile_table.setVisible(True)
        self._show_training_set()
        kept = [f"the last result '{self.result_layer.name}'" if self.result is not None and self.result_layer is not None
                and self.result_layer in self.viewer.layers else "",
                f"a training set of {len(self.corrections)} frame(s)" if self.corrections else ""]
        kept = [text for text in kept if text]
        if kept:
            self.show_message(f"kept from the closed Segmentation dock: {' and '.join(kept)} (Export and Fine-tune "
                              "take them)")

    # -- model choice ------------------------------------------------------
    def _model_choices(self, *_: Any) -> list[tuple[str, str]]:
        """(shown text, value) of the models (:func:`~._base.model_choices`): segmentation models only."""
        return model_choices([*RECENT_MODELS, *list_pretrained_for(None), FILE_CHOICE])

    def _toggle_file(self, *_: Any) -> None:
        """Show the file field for "model file ...", and only the options that apply to the chosen model:
        the CCD options (shape rules, cluster size, tiles with a class) for class models, the nucleus
        diameter for the others."""
        self.model_file.visible = self.model_choice.value == FILE_CHOICE
        class_model = self._chosen_output_mode() == "multiclass"
        for ccd_option in (self.shape_rules, self.max_cluster_size, self.hot_repeats, self.find_class, self.find_button):
            ccd_option.visible = class_model
        self.tile_table.setVisible(class_model and self.tile_table.rowCount() > 0)  # shown with a list of tiles
        for nucleus_option in (self.diameter, self.estimate_diameter, self.min_size, self.remove_border):  # a class map keeps every pixel
            nucleus_option.visible = not class_model

    def _chosen_output_mode(self) -> str | None:
        """The chosen model's output mode (its config only, read once per file); None when unknown."""
        from ..errors import MicrosegError
        from ..io.models import read_model_config

        try:
            path = self.model_path()
            key = (str(path), path.stat().st_mtime_ns)
        except (MicrosegError, OSError):
            return None
        if key not in _OUTPUT_MODES:
            try:
                _OUTPUT_MODES[key] = str(read_model_config(path).get("output_mode"))
            except MicrosegError:
                return None
        return _OUTPUT_MODES[key]

    def model_path(self) -> Path:
        """The chosen model as a file path (InputError if missing)."""
        return chosen_model_path(self.model_choice.value, self.model_file.value, FILE_CHOICE)

    def _chosen_model(self) -> Path | None:
        """The chosen model file, or None after showing why it cannot be used."""
        from ..errors import MicrosegError

        try:
            return self.model_path()
        except MicrosegError as err:
            self.show_error(str(err))
            return None

    def _note_user_choice(self, *_: Any) -> None:
        if not self._choosing_model:
            self.model_picked_by_user = True

    def offer_model(self, path: str) -> None:
        """List ``path`` (a model just trained, in ``RECENT_MODELS``) first; choose it (and say so) unless
        the user picked a model by hand, or the dock is in use: a result shown or corrections queued belong
        to the model chosen (Fine-tune would start from the new model on another model's corrections)."""
        self._choosing_model = True
        try:
            reset_choices_in_order(self.model_choice)  # newest first (magicgui appends new choices)
            in_use = self.result is not None or bool(self.corrections) or self.busy
            if not self.model_picked_by_user and not in_use and path in self.model_choice.choices \
                    and self.model_choice.value != path:
                self.model_choice.value = path
                self.show_message(f"model: {Path(path).name}, just trained, is chosen")
        finally:
            self._choosing_model = False

    def set_model(self, path: str) -> None:
        """Make ``path`` the current model (e.g. after training or fine-tuning), a choice as good as
        the user's own: later trainings elsewhere do not replace it."""
        add_recent_model(path)
        self._choosing_model = True
        try:
            self.model_choice.value = path
        finally:
            self._choosing_model = False
        self.model_picked_by_user = True

    # -- segmentation -------------------------------------------------------
    def _diameter_setting(self) -> float | str | None:
        """``"auto"`` (estimate ticked), the diameter in px, or None (0: as trained; and for class models,
        whose dock hides the diameter: a value left from a nuclei model is not theirs)."""
        if self._chosen_output_mode() == "multiclass":
            return None
        return "auto" if self.estimate_diameter.value else (float(self.diameter.value) or None)

    def _current_frame(self, layer: Any) -> int | None:
        """The viewer's current frame index for a (T, Y, X) image layer; None for a 2-D (or RGB) one."""
        # napari's ``ndim`` counts the displayed axes: an RGB layer's colour axis is not one
        return current_frame(self.viewer, layer) if layer.ndim == 3 else None

    def _segment_settings(self) -> dict:
        """The dock's keywords for :func:`~napari_microseg.inference.segment.segment` (class-model rules aside)."""
        return dict(tile=int(self.tile.value), min_size=int(self.min_size.value), remove_border=bool(self.remove_border.value),
                    device=self.device.value, keep_probabilities=bool(self.keep_probabilities.value),
                    test_time_augmentation=bool(self.tta.value), diameter=self._diameter_setting())

    def segment(self, *_: Any) -> Any:
        """Segment in a worker; a new Labels layer arrives when done."""
        try:
            layer = self.chosen_layer(self.image_layer.value, "image")
        except InputError as err:
            self.show_error(str(err))
            return None
        model = self._chosen_model()
        if model is None:
            return None
        t = self._current_frame(layer)
        whole = self.scope.value == "whole stack" or t is None
        data = grey_image(layer)  # RGB layers: grey
        image = data if whole else data[t]
        if image.ndim not in (2, 3):
            self.show_error(f"image must be 2-D or a (T, Y, X) stack, got shape {image.shape}")
            return None
        settings = self._segment_settings()
        class_model = self._chosen_output_mode() == "multiclass"  # the CCD options are hidden for the others
        rules = {"shape_rules": True} if class_model and self.shape_rules.value else {}
        if class_model and int(self.max_cluster_size.value) > 0:
            rules["max_cluster_size"] = int(self.max_cluster_size.value)
        if class_model and self.hot_repeats.value:
            if not whole or image.ndim != 3 or image.shape[0] < 2:
                self.show_error("'hot pixels repeat' compares the frames of a stack: choose a (T, Y, X) stack of "
                                "at least 2 exposures and 'whole stack'")
                return None
            rules["hot_repeats"] = True
        if rules:
            settings["postprocess_options"] = rules

        first_frame = 0 if whole else int(t)
        stack_shape = tuple(data.shape)
        two_pass = "hot_repeats" in rules and not settings["keep_probabilities"]

        def make_generator():
            from ..autolabel.ccd import clusters_per_frame
            from ..inference.segment import segment_image
            from ..measure.counts import class_index
            from ..progress import Progress

            from ..pretrained import model_digest

            digest = model_digest(str(model))  # the file as it segments (replaced later, the export still names it)
            defects = None
            if two_pass:  # one exposure's probabilities in memory at a time, not the whole stack's
                result, clusters, defects = yield from _repeat_rule_run(model, image, settings)
            else:
                result = yield from segment_image(str(model), image, **settings)
                clusters = None
            result.settings["model_sha256"] = digest
            if isinstance(image, np.ndarray) and image.size:  # a blank image: said, as the command line says it
                frames = image.reshape(-1, image.shape[-2] * image.shape[-1]) if image.ndim == 3 else image.reshape(1, -1)
                result.settings["constant_frames"] = [first_frame + i for i in
                                                      np.flatnonzero(frames.min(axis=1) == frames.max(axis=1)).tolist()]
            if first_frame:  # one frame of a stack: its tables name that frame, not frame 0
                for table in (result.objects, result.counts):
                    if table is not None and "t" in table.columns:
                        table["t"] = table["t"] + first_frame
            if clusters is None and result.output_mode == "multiclass" and class_index(result.class_names, "cluster") is not None:
                yield Progress(0, 1, "measuring charge clusters")
                clusters = clusters_per_frame(result.labels, image, result.class_names, first_frame=first_frame)
            yield Progress(0, 1, "preparing the layer")
            labels, features = layer_data(result, stack_shape, None if whole else t)
            if result.probabilities is not None:  # (the layer's image made here: 1.1 s on the GUI thread for 30 frames)
                result.probabilities = foreground_probability(result.probabilities)
            return result, clusters, (labels, features), labels_digest(labels), defects

        def done(outcome: Any) -> None:
            result, clusters, (labels, features), digest, defects = outcome
            self._add_result(result, layer, labels, features, model, frame=None if whole else int(t),
                             made_with={k: v for k, v in settings.items() if k != "keep_probabilities"})
            if defects is not None:  # the sensor's defects, as the CLI's defect mask: one (Y, X) layer over all frames
                self.viewer.add_labels(defects.astype(np.uint8), name=unique_layer_name(self.viewer, f"{layer.name} defects"),
                                       opacity=1.0, features={"label": [0, 1], "class": ["ok", "defect"]},
                                       **layer_geometry(layer, 2))
                self.counts_label.value += f"; {int(defects.sum())} defect pixels"
            self.result_digest = digest  # edits that emit no event (a script writing into .data) show as a change
            self.clusters = clusters
            self._remember_result()
            if clusters is not None:
                self.counts_label.value += f"; {len(clusters)} clusters"
            # an image on another intensity scale than the training images, a frame segmented as one object (an
            # undertrained model), busy exposures or frames that are not of one sensor: said together
            said = [str(result.settings[key]) for key in ("scale_warning", "coverage_warning", "repeat_warning")
                    if result.settings.get(key)]
            if said:
                self.show_error(f"'{layer.name}': " + "; ".join(said))

        worker = self.start(make_generator, done, label="segmenting")
        if worker is not None:  # a stopped or failed run must not leave the previous run's results shown or exportable
            self._clear_results()
            self._selection_at_run = self._selection_changes  # an earlier result selected after it: a choice
        return worker

    @contextlib.contextmanager
    def _picker_moved_by_dock(self) -> Iterator[None]:
        """The "corrected labels" picker set by the dock meanwhile: no choice of the user's (see
        :meth:`_note_picker_choice`)."""
        self._setting_picker = True
        try:
            yield
        finally:
            self._setting_picker = False

    def _note_picker_choice(self, *_: Any) -> None:
        if not self._setting_picker:
            self._picker_chosen_by_user = True

    def _count_selection_change(self, *_: Any) -> None:
        self._selection_changes += 1

    @property
    def result_image(self) -> Any:
        """The image layer the last run segmented; None once it is closed and freed (held weakly: a closed
        400 MB movie stayed in memory until the next run)."""
        ref = getattr(self, "_result_image_ref", None)
        return ref() if ref is not None else None

    @result_image.setter
    def result_image(self, layer: Any) -> None:
        self._result_image_ref = weakref.ref(layer) if layer is not None else None
        self._result_image_name = getattr(layer, "name", None)

    def _clear_results(self) -> None:
        """Forget the last run's results: counts, clusters, tiles and what Export would write."""
        self.result = None
        self.result_layer = self.result_image = None
        self.result_edited = False
        self.clusters = None
        self.tiles = None
        self._earlier_results = {k: v for k, v in self._earlier_results.items() if v[0]() is not None}
        self.counts_label.value = ""
        self.tile_table.clearSelection()
        self.tile_table.setRowCount(0)
        self.tile_table.setVisible(False)
        self.find_class.reset_choices()

    def _add_result(self, result: Any, layer: Any, labels: np.ndarray, features: Any, model: Path,
                    frame: int | None = None, made_with: dict | None = None) -> None:
        """Show a run's labels (from :func:`layer_data`, made in the worker) as a new layer over ``layer``;
        ``frame``: the frame of a stack a one-frame run segmented (None: all of ``layer``); ``made_with``:
        the dock's settings of the run (kept in the layer's metadata: Fine-tune's before / after compares
        corrections with the output that was corrected)."""
        self.result = result
        name = unique_layer_name(self.viewer, f"{layer.name} segmented")
        import uuid

        kwargs = {"name": name, "opacity": 0.5, "metadata": {"objects": result.objects, "counts": result.counts, "model": str(model),
                                                             "segment_settings": dict(made_with or {}),
                                                             "segmented_from": layer.name,
                                                             # this run's own (Duplicate Layer keeps it): a copy is
                                                             # matched to its run, not to another of the same settings
                                                             RUN_ID_KEY: uuid.uuid4().hex}}
        if result.output_mode == "multiclass":
            names = list(result.class_names) or [f"class {i}" for i in range(int(labels.max()) + 1)]
            kwargs["colormap"] = class_colormap(len(names))
            kwargs["opacity"] = 0.7
            kwargs["features"] = {"label": list(range(len(names))), "class": names}
        elif "label" in features:  # (no object: the columns all the same, DESIGN's label among them)
            kwargs["features"] = label_features(features)  # hover shows each object's own measurements
        added = self.viewer.add_labels(labels, **kwargs, **layer_geometry(layer, labels.ndim))  # on top of the image
        run_ids = frame_label_map(added)
        if run_ids:  # the run's own ids, whatever later exports leave in the features (an undone erase)
            added.metadata[FRAME_LABELS_KEY] = run_ids
        self.result_layer, self.result_image, self.result_edited = added, layer, False
        self._measurements_outdated = False
        for event in (added.events.paint, added.events.data):  # brush, fill, eraser, polygon; new data
            event.connect(self._mark_result_edited)
        watch_undo(added, self._mark_result_edited)  # napari's undo / redo emit neither
        self.find_class.reset_choices()
        if result.probabilities is not None:  # (made by the worker: foreground_probability)
            fg = result.probabilities
            geometry = layer_geometry(layer, fg.ndim)
            if frame is not None and labels.ndim == 3 and fg.ndim == 2:  # shown on its own frame only, not on all
                fg, geometry = fg[None], layer_geometry(layer, 3)
                if geometry:
                    geometry["translate"] = (geometry["translate"][0] + frame * geometry["scale"][0],) + geometry["translate"][1:]
                else:
                    geometry = {"translate": (float(frame), 0.0, 0.0)}
            self.viewer.add_image(fg, name=unique_layer_name(self.viewer, f"{layer.name} probability"), colormap="magma",
                                  blending="additive", visible=True, opacity=0.6, **geometry)
        self.result_layer_name = name
        chosen = self.labels_for_training.value
        with self._picker_moved_by_dock():
            self.labels_for_training.reset_choices()
            kept = next((lay for lay in self.viewer.layers if lay.name == chosen), None) if chosen else None
            # a layer the user chose stays chosen (Add then took the new, uncorrected output): a labels layer of
            # their own they picked (auto-labels they painted), or a result of this dock with corrections not
            # added yet; an untouched (or added) result, or a layer the picker merely showed, gives way
            own_result = kept is not None and kept.unique_id in self._earlier_results
            corrected = kept is not None and (kept.unique_id in self._edited_since_add
                                              or (not own_result and self._picker_chosen_by_user))
            self.labels_for_training.value = chosen if corrected else name
        self.counts_label.value = counts_summary(result.counts, result.output_mode == "multiclass")
        diameter, factor = result.settings.get("diameter"), result.settings.get("scale_factor", 1.0)
        note = ""
        if isinstance(diameter, float) and np.isfinite(diameter):
            self.counts_label.value += f"; diameter {diameter:.0f} px" + (f", tiles resized x{factor:.2f}" if factor != 1.0 else "")
            note = f"; nucleus diameter {diameter:.1f} px" + (f", tiles resized x{factor:.2f}" if factor != 1.0 else ", no resizing needed")
            from ..inference import scale

            if factor != 1.0 and factor in (scale.MIN_FACTOR, scale.MAX_FACTOR):  # as far as resizing goes
                note += " (the limit: the nuclei stay off the model's size; is the diameter right?)"
            if self.estimate_diameter.value:
                self.diameter.value = round(diameter, 1)  # kept: untick 'estimate' to reuse it on other images
        elif (made_with or {}).get("diameter") == "auto":  # the run's setting, not the box as it is now
            note = "; no nuclei found to measure a diameter, segmented as trained"
        blank = result.settings.get("constant_frames") or []
        if blank:  # (lazy images: segment_image warns of them)
            where = ("the image is" if labels.ndim == 2 or frame is not None else
                     f"{len(blank)} frame(s) ({', '.join(str(t) for t in blank[:6])}{' ...' if len(blank) > 6 else ''}) are")
            note += f"; {where} constant (every pixel one value): nothing to segment there"
        if result.output_mode != "multiclass" and (getattr(layer, "metadata", None) or {}).get("source_kind") == "fits":
            # a CCD frame through a nuclei model: its glow became giant "nuclei", without a word
            note += ("; a FITS frame (a CCD exposure?) segmented with a nuclei model: for glow, hot pixels and "
                     "charge clusters choose the ccd_classes model")
        if corrected:
            note += f"; '{chosen}' stays the labels for the training set"
        self.show_message(f"segmented with {model.name}: new layer '{name}'{note}")

    def _mark_result_edited(self, event: Any = None) -> None:
        if not self._following_viewer:  # a closed dock (its results handed to a new one, which follows them)
            return
        source = getattr(event, "source", None)
        if source is not None:  # corrected labels: a new run does not take the training set's labels from them
            self._edited_since_add.add(source.unique_id)
            if self.labels_for_training.value != source.name and source.name in self.labels_for_training.choices:
                with self._picker_moved_by_dock():  # the layer being corrected is the one to add
                    self.labels_for_training.value = source.name
        self._edit_count = getattr(self, "_edit_count", 0) + 1  # (an export compares it: edits while it measured)
        if getattr(event, "source", self.result_layer) is self.result_layer:  # an earlier run's layer: checked on export
            self.result_edited = True
            if not getattr(self, "_measurements_outdated", False):
                self._measurements_outdated = True
                self._drop_outdated_measurements(self.result_layer)

    def _drop_outdated_measurements(self, layer: Any) -> None:
        """The labels of ``layer`` were edited: its features keep the objects' ids (the join with objects.csv) but
        no longer the measurements of the objects as segmented (hover showed an erased half's area, a merged
        object's old one, rows of deleted objects), and the counts line says its counts are the run's; Export
        measures the corrected labels and shows them again."""
        features = getattr(layer, "features", None)
        if self.result is None or self.result.output_mode == "multiclass" or features is None or not len(features):
            return  # a class map's features name its classes: nothing measured there
        ids = [c for c in ("index", "label", "t", "frame_label") if c in features.columns]
        if "label" in ids and len(ids) < len(features.columns):
            layer.features = features[ids]
        line = self.counts_label.value
        if line and "(as segmented" not in line and "edited since" not in line:
            self.counts_label.value += (" (from the last export; edited since: Export measures again)"
                                        if "(corrected)" in line else
                                        " (as segmented, before your edits: Export measures the corrected labels)")

    def _remember_result(self) -> None:
        """Keep what Export needs of the run just shown (its tables, not its arrays), by its layer: selecting an
        earlier run's layer and pressing Export measures that layer, corrections included (a new run made
        earlier results unexportable)."""
        from types import SimpleNamespace

        result = self.result
        self._earlier_results[self.result_layer.unique_id] = weakref.ref(self.result_layer), {
            "result": SimpleNamespace(counts=result.counts, objects=result.objects, output_mode=result.output_mode,
                                      class_names=list(result.class_names), labels=None,
                                      settings=dict(getattr(result, "settings", None) or {})),
            "result_image": weakref.ref(self.result_image) if self.result_image is not None else None,
            "result_image_name": getattr(self.result_image, "name", None),
            "result_digest": self.result_digest, "clusters": self.clusters}  # (a closed image layer is let go)

    def _export_selected_earlier_result(self) -> str:
        """Make the selected layer the one Export writes when it is an earlier run's result layer (its class map
        is the layer's own data), or a copy of one (napari's Duplicate Layer; the copy is then measured), saying
        so; also after a stopped or failed run, which left no current result, when the user selected it since
        (its corrected labels were "nothing to export"): one still selected from before that run is not a
        choice. Returns the note for the export's message ("" when the selection is no earlier result). While
        the dock runs a task, an earlier result is refused (InputError): the last run's tables were written for it."""
        active = self.viewer.layers.selection.active
        layer = self.result_layer
        if layer is not None and (active is layer or (active is not None and _same_run(active, layer))):
            return ""  # the last result, or a copy of it
        entry = self._earlier_results.get(getattr(active, "unique_id", None))
        if entry is not None and entry[0]() is not active:
            entry = None
        if entry is None:  # a copy of an earlier result's layer: that result, its copy measured
            entry = self._earlier_result_copied_by(active)
        if entry is None or entry[0]() is self.result_layer:
            return ""
        if self.result is None and self._selection_changes == self._selection_at_run:
            return ""  # still selected from before a stopped or failed run: not a choice (nothing is exported)
        if self.busy:  # (the last run's tables were written for it, without a word)
            raise InputError(f"'{active.name}' is an earlier result: export it when the dock's running task ends "
                             "(or select the last result)")
        record, earlier = entry[1], entry[0]()
        self.result, self.result_layer = record["result"], earlier
        # the image it was segmented from (closed since: named in the export's note)
        self._result_image_ref, self._result_image_name = record["result_image"], record.get("result_image_name")
        self.result_digest, self.clusters, self.result_edited = record["result_digest"], record["clusters"], False
        self._measurements_outdated = False
        self.result.labels = earlier.data
        return "the selected earlier result "

    def _earlier_result_copied_by(self, layer: Any) -> tuple | None:
        """The :attr:`_earlier_results` entry (weak layer ref, record) of the result ``layer`` is a copy of (its
        metadata names the same run, and its shape is the same), or None."""
        from napari.layers import Labels

        if not isinstance(layer, Labels):
            return None
        for entry in self._earlier_results.values():
            earlier = entry[0]()
            if earlier is not None and earlier is not layer and _same_run(layer, earlier):
                return entry
        return None

    @dock_action(fallback=list)
    def export(self, *_: Any) -> Any:
        """Write counts.csv and objects.csv of the last result into the export folder (new names if taken).

        Labels corrected in the result layer since the run are measured again, in a worker: then the
        worker is returned (the list of written files comes in the status line); otherwise the list.
        A result layer over :data:`EXPORT_CHECK_BYTES` is checked for corrections in a worker too."""
        note = self._export_selected_earlier_result()
        if self.result is None:
            self.show_error("Nothing to export yet: segment first.")
            return []
        copy = self._selected_copy_of_result()
        if copy is not None:  # corrected in a duplicate of the result layer: that copy is measured
            return self._export_corrected(copy)
        layer = getattr(self, "result_layer", None)
        if layer is None or layer not in self.viewer.layers:  # the last run's tables, as segmented: said
            name = getattr(layer, "name", "") or "its layer"
            return self._write_tables(self._run_tables(), f"the last run's results as segmented ('{name}' is closed) "
                                                          "written: ")
        edited = getattr(self, "result_edited", False)
        if not edited and np.asarray(layer.data).nbytes <= EXPORT_CHECK_BYTES:
            # napari's tools emit paint / data events; a change written into the array itself does not
            edited = self.result_edited = labels_digest(layer.data) != getattr(self, "result_digest", None)
            if not edited:
                return self._write_tables(self._run_tables(), f"{note}'{layer.name}' as segmented, written: ")
        return self._export_corrected(layer, check_first=not edited, note=note)

    def _selected_copy_of_result(self) -> Any:
        """The selected Labels layer when it is a copy of the result layer (napari's Duplicate Layer keeps its
        metadata: the run's image, settings and shape), else None: a user correcting the copy and pressing
        Export got the uncorrected result written without a word."""
        from napari.layers import Labels

        active, layer = self.viewer.layers.selection.active, getattr(self, "result_layer", None)
        if self.busy or layer is None or active is layer or not isinstance(active, Labels):
            return None
        return active if _same_run(active, layer) else None

    def _run_tables(self) -> list:
        """(stem, table, leading columns) of the last run as segmented. A whole stack's objects carry the layer's
        ids (unique across the stack) as ``label`` and each frame's own id as ``frame_label``, as an export of
        the corrected layer does: one layout for both."""
        objects = self.result.objects
        features = getattr(self.result_layer, "features", None)
        if (features is not None and len(objects) and {"t", "label", "frame_label"} <= set(features.columns)
                and {"t", "label"} <= set(objects.columns)):
            stack_ids = {(int(t), int(own)): int(label)
                         for t, own, label in zip(features["t"], features["frame_label"], features["label"])}
            objects = objects.rename(columns={"label": "frame_label"})
            objects.insert(int(objects.columns.get_loc("frame_label")), "label",
                           [stack_ids.get((int(t), int(own)), 0) for t, own in zip(objects["t"], objects["frame_label"])])
        tables = [("counts", self.result.counts, ["t", "count"]), ("objects", objects, ["t", "label", "y", "x", "area"])]
        if self.clusters is not None:
            tables.append(("clusters", self.clusters, ["t", "label", "y", "x", "size_px", "charge_adc"]))
        return tables

    def _export_corrected(self, layer: Any, check_first: bool = False, note: str = "") -> Any:
        """Measure the corrected labels of ``layer`` (ids as the layer shows them) in a worker, then write
        them; ``check_first``: compare the labels with the run's first (a large layer, in the worker) and
        write the run's own tables when nothing changed. A large layer is copied in the worker
        (:func:`~._base.snapshot`)."""
        if self.busy:  # the dock's one worker measures the corrected labels: never advise stopping a training
            self.show_error("Export measures your corrected labels when the dock's running task ends: press Export "
                            "again then.")
            return None
        labels, copied = snapshot(layer.data)
        frame_ids = frame_label_map(layer)  # a whole stack's layer ids: each with the run's objects.csv id
        image = grey_image(self.result_image) if self.result_image in self.viewer.layers else None
        gone = self._result_image_name if image is None and self._result_image_ref is not None else None
        classes = self.result.output_mode == "multiclass"
        names = list(self.result.class_names)
        # the frames the run segmented (a "current frame" run leaves the others empty: not "0 nuclei")
        segmented_frames = {int(t) for t in self.result.counts["t"]} if "t" in self.result.counts else {0}
        digest = getattr(self, "result_digest", None)
        edits_before = getattr(self, "_edit_count", 0)

        def make_generator():
            from ..inference.segment import class_map_tables
            from ..measure.counts import counts_with_area
            from ..measure.tables import object_table
            from ..progress import Progress

            yield Progress(0, 1, "reading the result layer")
            labels_now = worker_copy(labels, copied)
            if check_first and labels_digest(labels_now) == digest:
                return None
            yield Progress(0, 1, "measuring the corrected labels")
            pixels = None if image is None or tuple(image.shape) != tuple(labels_now.shape) else image  # read frame by frame
            if classes:
                if labels_now.size and int(labels_now.max()) >= len(names):  # painted with a value of no class
                    raise InputError(f"the class map holds value {int(labels_now.max())}, but its classes are "
                                     f"0..{len(names) - 1} ({', '.join(names)}): paint with those values")
                objects, counts = class_map_tables(labels_now, pixels if pixels is not None
                                                   else np.broadcast_to(np.float32(0), labels_now.shape), names)
                if pixels is None:  # measured over zeros: no intensities (the nuclei tables leave them out too)
                    objects = objects.drop(columns=[c for c in objects.columns if c.endswith("_intensity")])
            else:
                objects = object_table(labels_now, pixels)
                counts = counts_with_area(objects, range(labels_now.shape[0] if labels_now.ndim == 3 else 1))
                objects = with_frame_labels(objects, frame_ids)  # joins the first export (0: painted anew)
            # and any frame the user painted objects into
            frames = segmented_frames | {int(t) for t in objects["t"]} if labels_now.ndim == 3 else {0}
            return objects, counts[counts["t"].isin(frames)].reset_index(drop=True)

        def done(tables: tuple | None) -> None:
            if tables is None:  # no correction after all
                self._write_tables(self._run_tables(), f"{note}'{layer.name}' as segmented, written: ")
                return
            if layer is self.result_layer:  # (a copy measured leaves the result layer as it was)
                self.result_edited = True
            objects, counts = tables
            edited_meanwhile = getattr(self, "_edit_count", 0) != edits_before  # painted while it measured
            if layer is self.result_layer and not edited_meanwhile:  # measured again: a later edit outdates them
                self._measurements_outdated = False
            if layer in self.viewer.layers and not edited_meanwhile:  # hover and the counts line: as written
                if not classes and "label" in objects:
                    layer.features = label_features(objects.drop_duplicates("label"))
                self.counts_label.value = counts_summary(counts, classes) + " (corrected)"
            written = self._write_tables([("counts", counts, ["t", "count"]),
                                          ("objects", objects, ["t", "label", "y", "x", "area"])],
                                         f"measured on your corrected labels in '{layer.name}' (ids as in the "
                                         "layer), written: ", layer=layer, corrected=True)
            if classes and written:  # the clusters' charges come from the segmentation, not from paint
                self.show_message(self.status.text() + "; no clusters.csv: it is measured when segmenting, not "
                                  "from a painted class map")
            if gone and written:  # the intensity columns need the pixels: said, not left out without a word
                self.show_message(self.status.text() + f"; without intensities: the image '{gone}' it was "
                                  "segmented from is no longer in the viewer")
            if edited_meanwhile and written:  # (the hover values and counts line were set as if the files held it)
                self.show_message(self.status.text() + f"; '{layer.name}' was edited while it was measured: these "
                                  "files hold it as it was when you pressed Export (export again to take the edit in)")

        return self.start(make_generator, done, label="exporting")

    def _write_tables(self, tables: list, message: str, layer: Any = None, corrected: bool = False) -> list[str]:
        """Write (stem, table, leading columns) as new CSV files in the export folder, and the run's record beside
        them (``segment_run.json``, as ``microseg segment`` writes it: the model and its sha256, the device and
        arithmetic, the settings; ``layer``: the labels layer measured, default the result layer; ``corrected``:
        measured on the user's corrections); their paths."""
        from ..io.tables import write_csv

        folder = field_path(self.export_dir.value, "export folder")
        written = []
        # never over an earlier export; the files of this one share their number (counts_3 with objects_3)
        paths = free_names(folder, [f"{stem}.csv" for stem, _, _ in tables] + ["segment_run.json"])
        for path, (_, table, leading) in zip(paths, tables):
            write_csv(path, table, overwrite=False, leading=leading)
            written.append(str(path))
        self._write_record(paths[-1], layer if layer is not None else self.result_layer, corrected, written)
        written.append(str(paths[-1]))
        self.show_message(message + ", ".join(written))
        return written

    def _write_record(self, path: Path, layer: Any, corrected: bool, tables: list[str]) -> None:
        """``segment_run.json`` of an export (see :meth:`_write_tables`): a dock export could not be traced to its
        model or device (the layer said device 'auto')."""
        import json

        from .. import __version__
        from ..io.atomic import atomic_write_text

        metadata = getattr(layer, "metadata", {}) or {}
        model = metadata.get("model")
        settings = dict(getattr(self.result, "settings", None) or {})
        digest = settings.get("model_sha256")  # taken when it segmented (the file may have been replaced since)
        record = {"command": "Segmentation dock export", "microseg_version": __version__,
                  "labels": f"napari layer '{getattr(layer, 'name', '')}'" + (" (corrected)" if corrected else
                                                                              " (as segmented)"),
                  "image": f"napari layer '{metadata.get('segmented_from')}'" if metadata.get("segmented_from") else None,
                  "model": model, "model_sha256": digest, "dock_settings": metadata.get("segment_settings"),
                  **{key: settings.get(key) for key in ("device", "precision", "output_mode", "threshold", "min_size",
                                                        "max_size", "remove_border", "tile", "overlap",
                                                        "test_time_augmentation", "diameter", "scale_factor")
                     if key in settings},
                  "tables": [Path(p).name for p in tables]}
        atomic_write_text(path, json.dumps(record, indent=2, default=str) + "\n")

    # -- semantic classes (CCD) -------------------------------------------
    def _class_choices(self, *_: Any) -> list[str]:
        """Non-background classes of the last multi-class result."""
        result = getattr(self, "result", None)  # also called while the widget is being built
        if result is None or result.output_mode != "multiclass":
            return []
        return list(result.class_names)[1:]

    def find_tiles(self, *_: Any) -> Any:
        """List the 256-px tiles holding the chosen class; click a row to jump there."""
        from ..measure.tiles import tiles_with_class

        if self.result is None or self.result.output_mode != "multiclass" or not self.find_class.value:
            self.show_error("Segment with a multi-class model (e.g. CCD classes) first.")
            return None
        class_map = np.asarray(self.result.labels)
        if class_map.ndim == 3:  # the frame shown of the result layer (or of the image it came from)
            shown = self._shown_result_layer()
            class_map = class_map[current_frame(self.viewer, shown) if shown is not None
                                  else min(int(self.viewer.dims.current_step[0]), class_map.shape[0] - 1)]
        class_id = list(self.result.class_names).index(self.find_class.value)
        self.tiles = tiles_with_class(class_map, class_id, tile=256)
        self.tile_table.setVisible(True)
        from qtpy.QtCore import QTimer

        # the list sits below the form: brought into view once laid out (it appeared off-screen)
        QTimer.singleShot(0, lambda: self.scroll.ensureWidgetVisible(self.tile_table))
        with filling(self.tile_table):
            self.tile_table.setRowCount(len(self.tiles))
            for row, rec in enumerate(self.tiles.itertuples(index=False)):
                for col, value in enumerate(_tile_row(rec)):
                    self.tile_table.setItem(row, col, QTableWidgetItem(value))
        self.show_message(f"{len(self.tiles)} tiles hold '{self.find_class.value}'")
        return self.tiles

    def _shown_result_layer(self) -> Any:
        """The last run's labels layer, or the image it came from, if still in the viewer (renamed or not); else None."""
        for layer in (self.result_layer, self.result_image):
            if layer is not None and layer in self.viewer.layers:
                return layer
        return None

    def _jump_to_tile(self) -> None:
        rows = sorted({i.row() for i in self.tile_table.selectedIndexes()})
        if rows and self.tiles is not None:
            rec = self.tiles.iloc[rows[0]]
            centre = (float(rec.centre_y), float(rec.centre_x))
            shown = self._shown_result_layer()
            if shown is not None:  # pixels to the viewer's world coordinates (the layer's scale and offset)
                centre = tuple(float(v) for v in shown.data_to_world((0.0,) * (shown.ndim - 2) + centre)[-2:])
            self.viewer.camera.center = centre
            self.viewer.camera.zoom = max(self.viewer.camera.zoom, 2.0)

    # -- batch --------------------------------------------------------------
    def _layer_channel(self) -> int | None:
        """The channel of the chosen image layer when it is one channel of a file (the reader names it
        ``<file> [channel N]``): the batch takes that channel of multi-channel files; else None."""
        import re

        match = re.search(r"\[channel (\d+)\]$", str(self.image_layer.value or ""))
        return int(match.group(1)) if match else None

    def run_batch(self, *_: Any) -> Any:
        """Segment a folder or Zarr store with the chosen model on a local Dask cluster (resumable), in a worker."""
        try:  # (~ is the home folder; an emptied field shows as ".", which meant napari's working folder)
            source = str(field_path(self.batch_input.value, "folder of images or Zarr store to segment"))
            out = str(field_path(self.batch_out.value, "batch output folder"))
        except InputError as err:
            self.show_error(str(err))
            return None
        if not Path(source).exists():
            self.show_error(f"{source}: no such folder or file: choose a folder of images or a Zarr store to segment.")
            return None
        model = self._chosen_model()
        if model is None:
            return None
        settings = {"tile": int(self.tile.value), "min_size": int(self.min_size.value), "device": self.device.value,
                    "workers": int(self.batch_workers.value)}
        if self.remove_border.value:
            settings["remove_border"] = True
        channel = self._layer_channel()
        if channel is not None:  # the channel of the layer shown (napari opens a file's channels as layers)
            settings["channel"] = channel
        diameter = self._diameter_setting()
        if diameter is not None:
            settings["diameter"] = diameter
        if self._chosen_output_mode() == "multiclass":  # the CCD rules the dock shows (hot repeats: whole stacks only)
            rules = {"shape_rules": True} if self.shape_rules.value else {}
            if int(self.max_cluster_size.value) > 0:
                rules["max_cluster_size"] = int(self.max_cluster_size.value)
            if rules:
                settings["postprocess_options"] = rules

        def make_generator():
            from ..batch.runner import run_batch

            # (in this process, Stop acts between an image's tiles: the run's stop event, set by Stop, is checked
            # there; with Dask workers the run is closed at its next event and cancels its workers' tasks)
            return run_batch("segment", source, out, str(model), stop_event=self._stop_requested, **settings)

        def done(summary: Any) -> None:
            if summary is None:  # (stopped within an image: the dock says so as after any Stop)
                return
            untried = " (test-time augmentation is for the dock's runs only)" if self.tta.value else ""
            said = [note for note in (summary.left_out_note(), summary.notes_note()) if note]
            self.show_message(f"batch: {summary.processed} done, {summary.skipped} skipped (already done), "
                              f"{summary.failed} failed; results in {summary.out}{untried}"
                              + "".join(f"\n{note}" for note in said))

        return self.start(make_generator, done, label="batch",
                          stopped_message=f"stopped: the images done so far are kept in {out}; run the batch again "
                                          "to go on (done ones are skipped)")

    # -- correct and retrain ------------------------------------------------
    def add_to_training_set(self, *_: Any) -> int:
        """Copy the current frame of the image and the corrected labels into the fine-tuning set."""
        if not self.image_layer.value or not self.labels_for_training.value:
            self.show_error("Choose the image layer and the corrected labels layer.")
            return len(self.training_pairs)
        try:
            image_layer = self.chosen_layer(self.image_layer.value, "image")
            labels_layer = self.chosen_layer(self.labels_for_training.value, "corrected labels")
        except InputError as err:
            self.show_error(str(err))
            return len(self.training_pairs)
        source = self._source_image(labels_layer)
        if source is not None and image_layer is not source[0] and (source[0] is not None or image_layer.name != source[1]):
            where = "" if source[0] is not None else ", which is no longer open (open it again under that name)"
            self.show_error(f"'{labels_layer.name}' was segmented from '{source[1]}'{where}: choose that image "
                            "layer to add its corrected frame")
            return len(self.training_pairs)
        # full resolution (a pyramid's data indexes levels); lazy layers: only the frame used is read
        image, labels = grey_image(image_layer), full_resolution(labels_layer)
        if tuple(image.shape) != tuple(labels.shape):
            self.show_error(f"labels shape {tuple(labels.shape)} does not match image shape {tuple(image.shape)}")
            return len(self.training_pairs)
        if image.ndim not in (2, 3):  # fine-tuning trains on (Y, X) frames
            self.show_error(f"'{image_layer.name}' has shape {tuple(image.shape)}: the training set takes frames of a "
                            "(Y, X) image or (T, Y, X) stack")
            return len(self.training_pairs)
        t = 0
        if image.ndim == 3:
            t = self._current_frame(image_layer)
            unsegmented = self._frame_not_segmented(labels_layer, source, t)
            if unsegmented:
                self.show_error(unsegmented)
                return len(self.training_pairs)
            image, labels = image[t], labels[t]
        image, labels = np.asarray(image), np.asarray(labels)
        class_names = _layer_classes(labels_layer)
        empty = not (labels > 0).any()
        # a result of this dock with every object erased (false hot pixels, clusters or nuclei removed) is a
        # correction: an empty field teaches the model not to make them; a labels layer of one's own that is
        # empty on this frame is more likely the wrong layer
        if empty and source is None:
            self.show_error("the corrected labels are empty on this frame")
            return len(self.training_pairs)
        if class_names and int(labels.max()) >= len(class_names):  # a class map painted with a value of no class
            self.show_error(f"'{labels_layer.name}' holds value {int(labels.max())} on this frame, but its classes are "
                            f"0..{len(class_names) - 1} ({', '.join(class_names)}): paint with those values")
            return len(self.training_pairs)
        # one entry per layer (not per name: another image opened under the same name is another image) and frame
        key = (image_layer.unique_id, int(t))
        metadata = getattr(labels_layer, "metadata", {}) or {}
        self.correction_sources[key] = (metadata.get("model"), metadata.get("segment_settings"), bool(class_names))
        note = (f"frame {t} of {image_layer.name} {'updated' if key in self.corrections else 'added'} with the labels "
                f"of '{labels_layer.name}'" + (" (no objects left: taught as an empty field)" if empty else ""))
        self.corrections[key] = (image.copy(), labels.copy())  # corrected again: the newer labels replace the older
        self.correction_names[key] = image_layer.name
        self.correction_layers[key] = (weakref.ref(labels_layer), int(t) if labels_layer.ndim == 3 else None)
        self._edited_since_add.discard(labels_layer.unique_id)
        self._show_training_set()
        misplaced = placement_mismatch(image_layer, labels_layer)
        self.show_message(f"{note}; training set: {len(self.training_pairs)} corrected frame(s)"
                          + (f". Note: {misplaced}" if misplaced else ""))
        return len(self.training_pairs)

    @staticmethod
    def _frame_not_segmented(labels_layer: Any, source: tuple[Any, str] | None, t: int) -> str:
        """Why frame ``t`` of this dock's result layer cannot be added ('' when it can): a one-frame run
        leaves the other frames of a stack empty, and fine-tuning learns the whole frame (its nuclei would be
        taught as background, and Fine-tune's before / after would count them as removed)."""
        counts = (getattr(labels_layer, "metadata", {}) or {}).get("counts")
        if source is None or counts is None or "t" not in counts:  # a labels layer of the user's own
            return ""
        segmented = sorted({int(v) for v in counts["t"]})
        if t in segmented:
            return ""
        which = ", ".join(str(v) for v in segmented[:6]) + (" ..." if len(segmented) > 6 else "")
        return (f"frame {t} of '{labels_layer.name}' was not segmented (the run segmented frame "
                f"{which}): segment this frame, correct it, then add it (fine-tuning learns the whole frame, "
                "so nuclei left unpainted would be taught as background)")

    @property
    def training_pairs(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """The fine-tuning set as (image, corrected labels) pairs, in the order they were added."""
        return list(self.corrections.values())

    def _source_image(self, labels_layer: Any) -> tuple[Any, str] | None:
        """``(image layer or None when closed, its name)`` a result layer of this dock was segmented from
        (the latest run's or an earlier one's); None for any other labels layer."""
        if labels_layer is self.result_layer and self._result_image_ref is not None:
            image = self.result_image  # None once closed (and freed)
        else:
            entry = self._earlier_results.get(getattr(labels_layer, "unique_id", None))
            if entry is None or entry[0]() is not labels_layer or entry[1]["result_image"] is None:
                return None
            image = entry[1]["result_image"]()
        name = (getattr(labels_layer, "metadata", {}) or {}).get("segmented_from") or getattr(image, "name", "?")
        return (image if image is not None and image in self.viewer.layers else None), name

    def clear_training_set(self, *_: Any) -> None:
        """Empty the fine-tuning set (the layers keep their corrections)."""
        self.corrections.clear()
        self.correction_names.clear()
        self.correction_sources.clear()
        self.correction_layers.clear()
        self._show_training_set()
        self.show_message("training set cleared")

    def _refresh_layer_pickers(self, *args: Any) -> None:
        with self._picker_moved_by_dock():  # (a layer added or renamed moves the picker: no choice of the user's)
            super()._refresh_layer_pickers(*args)
        if self.corrections:  # an image closed (or opened again): its frames say so
            self._show_training_set()

    def _show_training_set(self) -> None:
        n = len(self.corrections)
        open_ids = {getattr(layer, "unique_id", None) for layer in self.viewer.layers}
        # a frame of a closed image is still in the set (its copy): said, not shown like a new image's of its name
        frames = ", ".join(f"{self.correction_names[key]}{'' if key[0] in open_ids else ' (closed)'} t={key[1]}"
                           for key in list(self.corrections)[:4]) + (" ..." if n > 4 else "")
        self.training_set_label.value = f"training set: {n} frame(s): {frames}" if n else "training set: empty"

    def _take_corrections_made_since_added(self) -> str:
        """Update the training set with the corrections made in its frames' labels layers since they were added
        (Fine-tune trained on each frame as it was at Add, dropping later corrections without a word); a frame
        whose layer is closed, reshaped or now empty (or of a value of no class) keeps its copy. Returns the
        note for the status line ('' when nothing changed)."""
        updated, emptied = [], []
        for key, (ref, t) in self.correction_layers.items():
            layer = ref()
            if layer is None or layer not in self.viewer.layers or key not in self.corrections:
                continue
            image, before = self.corrections[key]
            data = full_resolution(layer)
            if tuple(data.shape[-2:]) != before.shape or (t is not None and (data.ndim != 3 or t >= data.shape[0])):
                continue
            now = np.asarray(data[t] if t is not None else data)
            if np.array_equal(now, before):
                continue
            if not (now > 0).any():  # erased since Add: trained on as added, said (Add refuses an empty frame)
                emptied.append(f"{self.correction_names[key]} t={key[1]}")
                continue
            class_names = _layer_classes(layer)
            if class_names and int(now.max()) >= len(class_names):
                continue
            self.corrections[key] = (image, now.copy())
            updated.append(f"{self.correction_names[key]} t={key[1]}")
        def listed(keys: list) -> str:
            return ", ".join(keys[:4]) + (" ..." if len(keys) > 4 else "")

        note = f"; trained on the labels as corrected since Add ({listed(updated)})" if updated else ""
        if emptied:
            note += (f"; {listed(emptied)} now empty: trained on as added (an empty frame teaches nothing; Clear "
                     "the training set to leave it out)")
        return note

    def _plain_labels_as_class_maps(self, model: Path) -> set | None:
        """For fine-tuning the class ``model``: the keys of the frames added from a labels layer that is no class
        map of this dock (one the reader opened, ``autolabel ccd``'s classes.tif, a layer painted by hand) whose
        every value is one of the model's classes (-1: not annotated): they train as class maps (they were
        refused as "object labels (nuclei)"). None after saying which frame holds another value. Nothing is
        stored: with a nuclei model chosen next, the same frames are object labels again."""
        from ..errors import MicrosegError
        from ..io.models import read_model_config

        try:
            names = [str(name) for name in read_model_config(model).get("class_names") or []]
        except MicrosegError:
            return set()  # (the model's own check says what is wrong with it)
        if not names:
            return set()
        taken = set()
        for key, (_, _, is_class_map) in self.correction_sources.items():
            if is_class_map or key not in self.corrections:
                continue
            labels = self.corrections[key][1]
            low, high = (int(labels.min()), int(labels.max())) if labels.size else (0, 0)
            if low < -1 or high >= len(names):
                self.show_error(f"{self.correction_names[key]} t={key[1]} was added with values {low}..{high}: "
                                f"{model.stem} takes a class map of its classes 0..{len(names) - 1} "
                                f"({', '.join(names)}; -1: not annotated). Clear the training set, or choose a "
                                "nuclei model to fine-tune on object labels")
                return None
            taken.add(key)
        return taken

    def fine_tune(self, *_: Any) -> Any:
        """Fine-tune the current model on the corrected frames in a worker; the result becomes the current model."""
        if not self.training_pairs:
            self.show_error("Add at least one corrected frame to the training set first.")
            return None
        if not any((labels > 0).any() for _, labels in self.training_pairs):  # empty fields only: nothing to learn
            self.show_error("every corrected frame in the training set is an empty field (all objects erased): add at "
                            "least one corrected frame with objects beside them")
            return None
        base = self._chosen_model()
        if base is None:
            return None
        out = fine_tuned_name(base)
        reason = unwritable_reason(out)
        if reason:  # before training, not after it
            self.show_error(reason)
            return None
        class_model = self._chosen_output_mode() == "multiclass"
        taken_as_class_maps = self._plain_labels_as_class_maps(base) if class_model else set()
        if taken_as_class_maps is None:
            return None
        sources = [self.correction_sources.get(key, (None, None, False)) for key in self.corrections]
        if any((is_class_map or key in taken_as_class_maps) != class_model
               for key, (_, _, is_class_map) in zip(self.corrections, sources)):
            self.show_error("the training set holds class maps (a class model's output): choose a class model "
                            "(e.g. ccd_classes) to fine-tune, or clear the training set" if not class_model else
                            "the training set holds object labels (nuclei): choose a nuclei model to fine-tune, or "
                            "clear the training set")
            return None
        corrected_since = self._take_corrections_made_since_added()
        images = [img for img, _ in self.training_pairs]
        labels = [lab for _, lab in self.training_pairs]
        config = {"epochs": int(self.finetune_epochs.value), "patches_per_epoch": 32, "batch_size": 4, "lr": 3e-4,
                  "patch_size": min(128, *[min(i.shape) for i in images]) // 32 * 32 or 64, "val_fraction": 0.0,
                  "early_stopping_patience": None, "num_threads": max(1, (os.cpu_count() or 2) - 1),
                  "device": str(self.device.value),  # the dock's device, as its segmentations use
                  "data_description": "fine-tuned on corrected labels in napari: "
                                      + ", ".join(f"{name}[{t}]" for (_, t), name in self.correction_names.items())}
        stop_event = threading.Event()  # the trainer stops after this step and keeps the best model

        # the old model's output is made again as it was made when it was corrected (a class model's maps hold
        # classes, not objects): only when every correction was made on this model's output, with one setting
        compare_settings, not_compared = None, ""
        made_by = {(str(Path(m).resolve()) if m else None) for m, _, _ in sources}
        made_with = [settings for m, settings, _ in sources if m]
        if not class_model:
            if made_by == {str(Path(base).resolve())} and made_with and all(s == made_with[0] for s in made_with):
                compare_settings = dict(made_with[0], keep_probabilities=False)
            elif made_by == {None}:  # labels painted by hand or made elsewhere: against the model as set now
                compare_settings = self._segment_settings()
            else:
                not_compared = ("; before / after not measured: the corrections were made on the output of another "
                                "model or settings than the one fine-tuned")

        def make_generator():
            from ..training.finetune import corrections_before_after, fine_tune_model

            result = yield from fine_tune_model(base, images, labels, out, config, stop_event)
            if result.model_path is None or compare_settings is None or stop_event.is_set():
                return result, None
            # the user's changes, followed before and after: only the changes count, as a partly corrected
            # frame still holds the old model's uncorrected output; a failure here loses nothing
            try:
                scores = yield from corrections_before_after(base, result.model_path, images, labels,
                                                             compare_settings, stop_event)
            except Exception:  # noqa: BLE001 - the fine-tuned model is written: it is selected all the same
                traceback.print_exc()
                scores = None
            return result, scores

        def done(outcome: Any) -> None:
            from ..training.finetune import describe_before_after

            result, scores = outcome
            if result.model_path is None:  # stopped before the first epoch finished: the current model stays
                self.show_message(NO_MODEL_MESSAGE)
                return
            self.fine_tuned_path = str(out)
            self.set_model(str(out))
            self.finetune_scores = None if scores is None else dict(zip(("before", "after"), scores))
            self.show_message(f"fine-tuned ({result.stop_reason}, {result.epochs_run} epoch{'' if result.epochs_run == 1 else 's'}): {out}"
                              + ("" if scores is None else f"; {describe_before_after(*scores)}") + not_compared
                              + corrected_since)

        from ..defaults import LAST_SUFFIX

        return self.start(make_generator, done, label="fine-tuning", cooperative_stop=stop_event,
                          stop_message="Stopping after this step; the best model so far is kept ...",
                          writes=(out, out.with_name(out.name + LAST_SUFFIX)))


def foreground_probability(probabilities: Any) -> np.ndarray:
    """The probability of anything but background, float32 (Y, X) or (T, Y, X), from a result's
    probabilities ((T, K, Y, X), (K, Y, X) or already (…, Y, X) of one channel): a nucleus with its rim, a CCD
    pixel of any class (channel 1 alone was a three-class model's interior, and a CCD model's "glowing",
    blank on cluster frames). Run in the worker: 0.8 s for 30 frames of 1024 x 1024."""
    probs = np.asarray(probabilities)
    many = probs.ndim >= 3 and probs.shape[-3] > 1
    if many:
        return (1.0 - probs[..., 0, :, :]).astype(np.float32)
    return np.asarray(probs[..., 0, :, :] if probs.ndim >= 3 else probs, np.float32)


def _repeat_rule_run(model: Path, stack: Any, settings: dict):
    """Generator (progress events; returns ``(SegmentResult, clusters, defects)``): the repeat rule over a
    (T, Y, X) stack of exposures in two passes (:func:`~napari_microseg.inference.repeats.segment_exposures`),
    so that memory holds the class map and one exposure's probabilities, not those of every frame;
    ``defects`` is the (Y, X) bool mask of the persistent pixels. Runs in a worker."""
    from ..inference.repeats import segment_exposures
    from ..inference.segment import SegmentResult

    options = {k: v for k, v in settings.items() if k != "keep_probabilities"}
    class_map = np.zeros(tuple(stack.shape), np.uint8)
    ruled = yield from segment_exposures(str(model), lambda t: np.asarray(stack[t]), int(stack.shape[0]),
                                         write_labels=class_map.__setitem__, **options)
    result = SegmentResult(labels=class_map, probabilities=None, objects=ruled.objects, counts=ruled.counts,
                           output_mode="multiclass", class_names=ruled.class_names, settings=ruled.settings)
    return result, ruled.clusters, ruled.defects


def _layer_classes(layer: Any) -> list[str]:
    """The class names of a class map the dock made (its features' ``class`` column, one row per class); []."""
    features = getattr(layer, "features", None)
    if features is None or not {"class", "label"} <= set(getattr(features, "columns", ())):
        return []
    if [int(v) for v in features["label"]] != list(range(len(features))):  # objects with a class each: no class map
        return []
    return [str(name) for name in features["class"]]


def _tile_row(rec: Any) -> list[str]:
    """The tile table's cells of one row of :func:`~napari_microseg.measure.tiles.tiles_with_class`'s table."""
    return [str(int(rec.y0)), str(int(rec.x0)), str(int(rec.pixels)), f"{int(rec.tile_row)},{int(rec.tile_col)}"]


def counts_summary(counts: Any, classes: bool) -> str:
    """The counts line under the Segment button: the class percentages (coloured as the classes) of a class map,
    else the objects of one frame, or per frame of a stack."""
    if classes:
        fractions = [(c.removeprefix("fraction_").replace("_", " "), counts[c].mean()) for c in counts.columns
                     if c.startswith("fraction_")]
        return ", ".join(f'<span style="color:{class_colour(i) if i else "#aaaaaa"}">{n}</span> {100 * v:.2f} %'
                         for i, (n, v) in enumerate(fractions))
    if len(counts) == 1:
        return f"{int(counts['count'].iloc[0])} objects"
    c = counts["count"].to_numpy()
    return f"{len(c)} frames: {c.min()}-{c.max()} objects per frame (mean {c.mean():.1f})"


def default_model(choices: Any) -> str:
    """The model to offer first: the model trained last in this session, else ``DEFAULT_MODEL``, else the first nuclei model, else the first choice
    (the list is alphabetical, so without this a CCD class model came first)."""
    choices = list(choices)
    trained_here = next((path for path in RECENT_MODELS if Path(path).is_file()), None)
    if trained_here in choices:  # the newest model trained in this session that is still there
        return trained_here
    if DEFAULT_MODEL in choices:
        return DEFAULT_MODEL
    return next((c for c in choices if str(c).startswith("nuclei")), choices[0])


def fine_tuned_name(base: Path) -> Path:
    """A new file name next to (or, for shipped models, in the home folder) for a fine-tuned model:
    ``<stem>-ftN.pt`` with the first N whose file, ``.last.pt`` checkpoint and run in progress (a
    fine-tune of the same model in another viewer, whose file appears after its first epoch) are all
    absent."""
    from ..defaults import LAST_SUFFIX
    from ..pretrained import PRETRAINED_DIR
    from ._base import name_taken

    folder = Path.home() / "microseg_models" if base.parent == PRETRAINED_DIR else base.parent
    i = 1
    while name_taken(candidate := folder / f"{base.stem}-ft{i}.pt", (LAST_SUFFIX,)):
        i += 1
    return candidate


#: result layers up to this size (bytes) are checked for corrections on the GUI thread when exporting (~0.05 s)
EXPORT_CHECK_BYTES = 64 * 2**20


def layer_data(result: Any, stack_shape: tuple, t: int | None) -> tuple[np.ndarray, Any]:
    """The labels and features table of a segmentation run's layer; run in the worker.

    ``stack_shape``: the (grey) image layer's shape; ``t``: the frame a one-frame run segmented
    (its labels go into a zero stack of that shape), None for a whole image or stack. A whole
    stack's ids start at 1 in every frame: the layer gets ids unique across the stack (frame t's
    shifted by the ids of the frames before it), so each object has its own features row;
    ``frame_label`` keeps the id of objects.csv. Labels come in the smallest dtype napari draws
    without a pause (:func:`display_labels`; uint8 for class maps).
    """
    classes = result.output_mode == "multiclass"  # a class map: its values are class ids, kept as they are
    labels = display_labels(np.asarray(result.labels), np.uint8 if classes else np.uint16)
    if t is not None:
        full = np.zeros(stack_shape, dtype=labels.dtype)
        full[t] = labels
        labels = full
    features = result.objects
    if not classes and labels.ndim == 3 and t is None and not features.empty and {"t", "label"} <= set(features.columns):
        labels, features = unique_stack_ids(labels, features)
    elif "label" in features and not features.empty:
        features = features.drop_duplicates("label").reset_index(drop=True)
    return labels, features


def _same_run(layer: Any, result_layer: Any) -> bool:
    """Whether the Labels ``layer`` is a copy of the Segmentation dock's ``result_layer`` (napari's Duplicate
    Layer keeps its metadata: the run's image, settings and model) of the same shape."""
    mine, theirs = result_layer.metadata, getattr(layer, "metadata", {}) or {}
    if not isinstance(layer, type(result_layer)):
        return False
    keys = ("segmented_from", "segment_settings", "model", RUN_ID_KEY)  # (a run of an earlier version has no id)
    same = all(theirs.get(key) == mine.get(key) for key in keys)
    return (same and theirs.get("segmented_from") is not None
            and tuple(layer.data.shape) == tuple(result_layer.data.shape))
