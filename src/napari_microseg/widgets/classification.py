"""Classification dock widget: whole response images [R], objects [T] and STEM profiles [P].

Classify runs in a worker; results come back as a table (click a row to jump to
the image or object), a threshold for good/bad images with an ROC curve when the
truth is known, a class-coloured Labels layer for objects, and a CSV export.
A classifier can be trained on simulated data here too, in a worker, with a live
loss / accuracy plot and Stop (which keeps the best model).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Generator, Sequence

import numpy as np
import pandas as pd
import pyqtgraph as pg
from magicgui.widgets import ComboBox, Container, FileEdit, FloatSlider, LineEdit, PushButton, SpinBox
from qtpy.QtGui import QBrush, QColor
from qtpy.QtWidgets import QAbstractItemView, QDoubleSpinBox, QTableWidget, QTableWidgetItem

from ..defaults import LAST_SUFFIX
from ..errors import InputError, MicrosegError
from ..pretrained import list_pretrained_for
from ..colours import class_colour
from ..defaults import PROFILE_TASKS  # [P] hole / chirality
from ._base import (field_path, NO_MODEL_MESSAGE, MicrosegDock, chosen_model_path, model_choices, display_labels, dock_action, filling, frame_label_map, free_name, full_resolution, grey_image, label_features,
                    layer_geometry, layer_names, placement_mismatch, reset_choices_in_order, result_line, section_header, show_frame, span_row,
                    snapshot, unique_layer_name, unique_stack_ids, unwritable_reason, with_frame_labels, worker_copy)
from ._plot import BG, LossPlot, kept_alive

TASKS = {"response images [R]": "images", "objects [T]": "objects", "profiles [P]": "profiles"}
FILE_CHOICE = "model file ..."
NONE = "(none)"
#: classifiers trained in this session, newest first: model path -> task ("images", "objects", "profiles")
RECENT_CLASSIFIERS: dict[str, str] = {}


#: response images classified per step of the Classification dock's run (its progress, and where Stop acts)
CLASSIFY_CHUNK = 256
#: [P] the most views per particle offered (as the Simulation dock's STEM sample)
MAX_VIEWS = 8

#: the threshold slider's top: one of its steps above 1, a threshold no probability reaches
ABOVE_EVERY_PROBABILITY = 1.001

#: the dock's epochs for training on simulated data, per task ([P] profiles: 20 epochs left a hole classifier at
#: chance, 0.575; 100 reached 0.89 in 10 s on 2 CPU cores)
TRAIN_EPOCHS_DEFAULT = {"images": 20, "objects": 20, "profiles": 100}


class ClassificationWidget(MicrosegDock):
    title = "Classification"
    description = (
        "Classify whole response images good/bad [R] (threshold, ROC), objects of a Labels layer [T], or "
        "multi-view STEM profiles [P]; results as a table (click to jump) and CSV. Train a classifier on "
        "simulated data with a live plot."
    )

    kept_on_close = ("results", "results_task", "results_layer", "results_model", "truth", "_exact_threshold",
                     "_epochs_default")

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__(napari_viewer)
        self.task = ComboBox(label="task", choices=list(TASKS), value=list(TASKS)[0],
                             tooltip="[R] whole response images good / bad, [T] objects of a labels layer, [P] STEM profiles")
        self.image_layer = ComboBox(label="images / image", choices=lambda *_: layer_names(self.viewer, "Image"))
        self.labels_layer = ComboBox(label="objects (labels)", choices=lambda *_: [NONE, *layer_names(self.viewer, "Labels")])
        # this task's classifiers only: recent ones, the shipped ones, or a file
        self.model_choice = ComboBox(label="model", choices=lambda *_: model_choices([
            *[path for path, task in RECENT_CLASSIFIERS.items() if task == TASKS[self.task.value]],
            *list_pretrained_for(TASKS[self.task.value]), FILE_CHOICE]),
            tooltip="this task's classifiers: trained in this session, shipped, or a model file (.pt)")
        self.model_file = FileEdit(label="model file", mode="r", filter="*.pt", value="")
        self.classify_button = PushButton(text="Classify", tooltip="classify with the chosen model, in the background")
        # its top is just above 1 (a step of the slider): a model's "keep everything" threshold, which no
        # probability, 1.0 included, reaches
        # (the top a step further: Qt's slider reads a top of 1.001 back as 1.000999)
        self.threshold = FloatSlider(label="threshold (bad)", value=0.5, min=0.0, max=ABOVE_EVERY_PROBABILITY + 0.001,
                                     step=0.001, tooltip="an image whose probability of 'bad' (0-1) reaches this is called "
                                                         "bad; above 1 none is")
        # [R] use cases: the thresholds the model stored, chosen on its validation images
        self.flag_button = PushButton(text="flag", tooltip="few bad images passed as good (at most 5 % on the validation "
                                                           "images); a person checks what is flagged")
        self.discard_button = PushButton(text="discard", tooltip="few good images thrown away (at most 5 % on the "
                                                                 "validation images); only sure-bad ones are dropped")
        self.presets = Container(layout="horizontal", label="use", widgets=[self.flag_button, self.discard_button])
        self.presets.margins = (0, 0, 0, 0)
        self.box = LineEdit(label="box y0 x0 y1 x1", value="",
                            tooltip="integration box in px: the response column's area in every image (empty: the layer's own crop boxes, "
                                    "as simulated images carry them; or images already of the model's crop size)")
        self.summary = result_line()
        self.export_dir = FileEdit(label="export folder", mode="d", value=str(Path.home() / "microseg_classify"))
        self.export_button = PushButton(text="Export CSV", tooltip="the classes shown, into the export folder")
        self.train_n = SpinBox(label="simulated samples", value=400, min=20, max=200000, step=20,
                               tooltip="response images or STEM profiles to simulate; for objects, liposomes "
                                       "(about 30 per simulated TEM image)")
        self.train_epochs = SpinBox(label="epochs", value=20, min=1, max=1000, tooltip="passes over the simulated samples")
        self._epochs_default = 20  # the task's default the box shows (replaced on a task change unless edited)
        # [P] profiles: which question the classifier learns, and from how many projections per particle
        # (the Simulation dock's STEM sample has 2 views); the dock trained "hole" on 2 views only
        self.train_profile_task = ComboBox(label="profile task", choices=list(PROFILE_TASKS), value="hole",
                                           tooltip="hole: solid vs hole particles; chirality: clockwise vs "
                                                   "anticlockwise spirals ([P])")
        self.train_views = SpinBox(label="views", value=2, min=1, max=MAX_VIEWS,
                                   tooltip="projections per particle (>1: a shared-weight multi-view network); the "
                                           "profiles classified later must have as many")
        self.train_out = FileEdit(label="new model file", mode="w", filter="*.pt", value=str(Path.home() / "microseg_classifier.pt"))
        self.train_button = PushButton(text="Train on simulated data")
        # the readout showed 2 decimals: a stored threshold of 0.096 read 0.10
        for readout in self.threshold.native.findChildren(QDoubleSpinBox):
            readout.setDecimals(3)
        self.form = Container(widgets=[
            self.task, self.image_layer, self.labels_layer, self.model_choice, self.model_file, self.box, self.classify_button,
            self.threshold, self.presets, self.summary, self.export_dir, self.export_button,
        ])
        span_row(self.summary)
        self.body.addWidget(self.form.native)
        # the training part below the results (table, ROC), which are in view after Classify
        self.train_form = Container(widgets=[
            train_header := section_header("train a classifier on simulated data"), self.train_n, self.train_epochs,
            self.train_profile_task, self.train_views, self.train_out, self.train_button,
        ])
        span_row(train_header)
        self.table = QTableWidget(0, 0)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.verticalHeader().setVisible(False)
        self.table.setMinimumHeight(150)
        self.table.itemSelectionChanged.connect(self._jump)
        self.table.setVisible(False)  # shown with the first results
        self.body.addWidget(self.table)
        self.grow_with_dock(self.table)
        self.roc = kept_alive(pg.PlotWidget(background=BG))
        self.roc.setMinimumHeight(160)
        self.roc.setLabel("bottom", "false positive rate (good flagged bad)")
        self.roc.setLabel("left", "true positive rate")
        self.roc_curve = self.roc.plot([], [], pen=pg.mkPen("#f6b26b", width=2))
        self.roc_point = self.roc.plot([], [], pen=None, symbol="o", symbolBrush="#e71d95", symbolSize=9)
        self.roc.setVisible(False)
        self.body.addWidget(self.roc)
        self.body.addWidget(self.train_form.native)
        self.plot = LossPlot(metric_name="val accuracy")
        self.plot.setMaximumHeight(240)  # the rest stays the controls' (it took all but 54 px of the dock)
        self.plot.setVisible(False)
        self.pin_above_progress(self.plot)  # in view while training, however far the controls are scrolled
        self.task.changed.connect(self._new_task)
        self.task.changed.connect(self._task_changed)
        self.model_choice.changed.connect(self._task_changed)
        self.classify_button.changed.connect(self.classify)
        self._exact_threshold: float | None = None  # a stored flag/discard threshold, until the slider moves
        self._setting_threshold = False
        self.threshold.changed.connect(self._slider_moved)
        self.threshold.changed.connect(self._apply_threshold)
        self.flag_button.changed.connect(lambda *_: self.use_threshold("flag"))
        self.discard_button.changed.connect(lambda *_: self.use_threshold("discard"))
        self.export_button.changed.connect(self.export)
        self.train_button.changed.connect(self.train)
        self.run_buttons = (self.classify_button, self.train_button)
        self.follow_layers(self.image_layer, self.labels_layer)
        self.results: pd.DataFrame | None = None
        self.results_task: str | None = None  # the task that made self.results
        self.results_layer: Any = None  # the image layer self.results came from (frames, calibration)
        self.results_model: Path | None = None  # the model file that made self.results
        self.truth: np.ndarray | None = None  # the shown results' true classes (1 bad, 0 good), when known
        self._job_truth: np.ndarray | None = None  # those of the run being prepared
        self._task_changed()
        self.take_over_closed_dock()

    def state_taken_over(self) -> None:
        """A closed Classification dock's results (:meth:`take_over_closed_dock`): its table (and ROC) again."""
        if self.results is None or self.results_task != self.task_name:
            self.results = self.results_task = self.results_layer = self.results_model = None
            return
        if self.results_task == "images":
            self._apply_threshold()  # table, verdicts, ROC and summary at the kept threshold
        else:
            self._fill_table(self.results)
        self.show_message(f"kept from the closed Classification dock: the results of {len(self.results)} "
                          f"{self.results_task} (Export writes them)")

    # -- form -------------------------------------------------------------------
    @property
    def task_name(self) -> str:
        return TASKS[self.task.value]

    def _new_task(self, *_: Any) -> None:
        """That task's models, newest first, the first chosen; the other task's results are dropped
        (the threshold and Export belong to the task that made them)."""
        reset_choices_in_order(self.model_choice)
        self.model_choice.value = self.model_choice.choices[0]
        if self.results is not None and self.results_task != self.task_name:
            self._clear_results()

    def _task_changed(self, *_: Any) -> None:
        default = TRAIN_EPOCHS_DEFAULT.get(self.task_name, 20)
        if int(self.train_epochs.value) == self._epochs_default:  # (a number the user typed is kept)
            self.train_epochs.value = default
        self._epochs_default = default
        self.labels_layer.visible = self.task_name == "objects"
        self.threshold.visible = self.task_name == "images"
        self.presets.visible = self.task_name == "images"
        self.box.visible = self.task_name == "images"
        self.train_profile_task.visible = self.train_views.visible = self.task_name == "profiles"
        self.model_file.visible = self.model_choice.value == FILE_CHOICE

    def model_path(self) -> Path:
        if list(self.model_choice.choices) == [FILE_CHOICE] and self.model_choice.value == FILE_CHOICE:
            chosen = Path(str(self.model_file.value)).expanduser()
            if chosen == Path(".") or chosen.is_dir():  # no model of this task yet, none chosen: say how to get one
                raise InputError(f"No {self.task.value} model yet (none ships with the package): train one on "
                                 "simulated data below (Train on simulated data), or choose a model file (.pt)")
        return chosen_model_path(self.model_choice.value, self.model_file.value, FILE_CHOICE)

    # -- classify ---------------------------------------------------------------
    def classify(self, *_: Any) -> Any:
        """Classify the chosen layer(s) in a worker."""
        try:
            model = self.model_path()
            make, layer, task = self._make_job(model)
            notes = self._data_notes(model, layer)
        except MicrosegError as err:
            self.show_error(str(err))  # the results shown stay with their own true classes
            return None
        worker = self.start(make, lambda result: self._show(result, layer, task, notes, model), label="classifying")
        if worker is not None:
            self._clear_results()  # a failed run must not leave the previous run's results shown or exportable
            self.truth = self._job_truth
        return worker

    def _clear_results(self) -> None:
        """Forget the last run's results: table, summary, ROC and what Export would write."""
        self.results = self.results_task = self.results_layer = self.results_model = None
        self.table.clearSelection()
        self.table.setRowCount(0)
        self.table.setVisible(False)
        self.summary.value = ""
        self.roc_curve.setData([], [])
        self.roc_point.setData([], [])
        self.roc.setVisible(False)

    def _make_job(self, model: Path):
        from ..progress import Progress

        if not self.image_layer.value:
            raise InputError("Choose the image layer to classify.")
        layer = self.chosen_layer(self.image_layer.value, "image")
        data = grey_image(layer)
        task = self.task_name
        self._job_truth = None
        if task == "images":
            n_images = 1 if data.ndim == 2 else int(data.shape[0])
            boxes = self._box_setting(n_images, tuple(data.shape[-2:])) or _metadata_boxes(layer)
            if boxes is not None and len(boxes) != n_images:  # the metadata of a stack since cut or joined
                raise InputError(f"'{layer.name}' carries {len(boxes)} integration box(es) (metadata 'crop_box') for "
                                 f"{n_images} image(s): type the integration box y0 x0 y1 x1 to use for all")
            truth = _metadata_truth(layer, n_images)  # the run's true classes: taken once its worker starts
            self._job_truth = None if truth is None else np.array([t == "bad" for t in truth], dtype=int)
            truth_now = self._job_truth
            # read here (the worker never touches a Qt widget); above 1 ("none reaches it") the table's verdicts
            # are set again at the exact threshold when it is shown (_apply_threshold)
            threshold = min(self.threshold_value(), 1.0)

            def job():
                from ..classify.predict import classify_images

                # in chunks, each a step: progress, and Stop between them (5,000 images ran as one step); each chunk
                # read once, here (a Zarr-backed stack's images were lazy: the constant check computed every graph
                # on the GUI thread, a window frozen for minutes at 6,000 images)
                parts, constant = [], []
                for start in range(0, n_images, CLASSIFY_CHUNK):
                    yield Progress(start, n_images, f"classifying {n_images} images ...")
                    chunk = [np.asarray(data)] if data.ndim == 2 else list(np.asarray(data[start:start + CLASSIFY_CHUNK]))
                    chunk_boxes = boxes[start:start + CLASSIFY_CHUNK] if boxes is not None and np.ndim(boxes) != 1 \
                        else boxes
                    part = classify_images(str(model), chunk, boxes=chunk_boxes, threshold=threshold)
                    part["index"] += start
                    parts.append(part)
                    # as `classify images` says it: a constant image's verdict means nothing
                    constant += [bool(img.size and img.min() == img.max()) for img in chunk]
                table = pd.concat(parts, ignore_index=True)
                table["constant"] = constant
                if truth_now is not None and len(truth_now) == len(table):  # the ROC here (its sklearn import too):
                    from ..classify.evaluate import roc_curve_auc  # on the GUI thread it held the window 0.6-2.6 s

                    table.attrs["roc"] = roc_curve_auc(truth_now, table["probability_bad"].to_numpy())
                return table
        elif task == "objects":
            if self.labels_layer.value in (None, NONE):
                raise InputError("Choose the Labels layer holding the objects to classify.")
            objects_layer = self.chosen_layer(self.labels_layer.value, "objects (labels)")
            source = full_resolution(objects_layer)
            frame_ids = frame_label_map(objects_layer)  # a Segmentation dock's stack: its objects.csv ids
            if tuple(source.shape) != tuple(data.shape):
                raise InputError(f"labels shape {tuple(source.shape)} does not match image shape {tuple(data.shape)}")
            # read in the worker (a lazy layer); a copy in memory, so painting during the run changes nothing
            labels, copied = snapshot(source)  # big ones copied in the worker: the window does not stall

            def job():
                from ..classify.predict import classify_objects, classify_stack_objects_iter
                from ..measure.labels import masks_to_labels

                yield Progress(0, 1, "reading the objects ...")
                objects, was_mask = masks_to_labels(worker_copy(labels, copied))  # a 0/1 mask: its connected objects
                if not objects.any():
                    raise InputError("the labels layer holds no objects")
                mask_note = " (the layer is a 0/1 mask: its connected objects)" if was_mask else ""
                image = data if data.ndim == 3 else np.asarray(data)  # a lazy stack: read frame by frame
                if image.ndim == 3:  # frame by frame: progress, and Stop between frames (it waited for the
                    # whole stack, 14-26 s for 20 frames)
                    table = yield from classify_stack_objects_iter(str(model), image, objects, note=mask_note)
                else:
                    yield Progress(0, 1, f"classifying {int(np.count_nonzero(np.unique(objects)))} objects{mask_note} ...")
                    table = classify_objects(str(model), image, objects)
                table = with_frame_labels(table, frame_ids)
                # as `classify objects` says it: the classes of objects on a constant frame mean nothing
                flat = np.array([bool(np.min(f) == np.max(f)) for f in ((np.asarray(image[i]) for i in range(image.shape[0]))
                                                                       if image.ndim == 3 else [image])], bool)
                frames = table["t"].to_numpy(int) if image.ndim == 3 and "t" in table else np.zeros(len(table), int)
                table["constant"] = flat[frames] if len(flat) else False
                return table, class_layer_data(objects, table)
        else:
            from ..io.models import read_model_config

            want = read_model_config(model).get("input_shape") or []  # (views, points), the config only
            views = int(want[0]) if len(want) == 2 else None
            shape = tuple(data.shape)
            if data.ndim == 2 and views not in (None, 1):  # (N, points): one view per particle, as the CLI takes it
                raise InputError(f"'{layer.name}' holds one profile per particle, shape {shape} (N, points), but this "
                                 f"model takes {views} views per particle: give an (N, {views}, points) layer, or a "
                                 "model trained on one view")
            if data.ndim not in (2, 3):
                raise InputError(f"profiles must be an (N, views, points) layer, or (N, points) for one view, got "
                                 f"shape {shape}")
            if data.ndim == 3 and views is not None and shape[1] != views:
                raise InputError(f"'{layer.name}' holds {shape[1]} view(s) per particle, shape {shape} (N, views, "
                                 f"points), but this model takes {views}: give an (N, {views}, points) layer, or a "
                                 f"model trained on {shape[1]} view(s)")

            def job():
                from ..classify.predict import classify_profiles

                yield Progress(0, 1, f"classifying {data.shape[0]} profiles ...")
                return classify_profiles(str(model), data)
        return job, layer, task

    def _data_notes(self, model: Path, layer: Any) -> list[str]:
        """Warnings on what the run's results will mean, as ``classify`` prints them: the layer (a Simulation
        dock's) holds the model's own training samples, or true classes none of which the model knows (a
        chirality sample given to a hole model); objects whose labels layer lies elsewhere in the viewer
        than the image. The model's config only: nothing slow on the GUI thread."""
        from ..classify.data import same_samples_note
        from ..io.models import read_model_config

        config = read_model_config(model)
        notes = []
        record = layer.metadata.get("simulation")
        if isinstance(record, dict):
            note = same_samples_note(config, record, f"'{layer.name}'")
            if note:
                notes.append(note.replace("another --seed", "another seed"))
        if self.task_name == "objects" and self.labels_layer.value not in (None, NONE):
            misplaced = placement_mismatch(layer, self.chosen_layer(self.labels_layer.value, "objects (labels)"))
            if misplaced:  # objects cut from the image by pixel index, not where the user saw them
                notes.append(misplaced)
        norm = config.get("normalization") or {}
        if (self.task_name == "images" and isinstance(norm, dict) and norm.get("kind") == "fixed"
                and float(norm.get("scale", 1)) > 255 and np.dtype(getattr(layer.data, "dtype", np.float32)) == np.uint8):
            # (the dtype only, on the GUI thread: `classify images` checks each image's values)
            notes.append(f"this model keeps the 16-bit scale (x / {float(norm['scale']):g}) but '{layer.name}' is "
                         "8-bit: its images look almost black to it; use the 16-bit originals or a min-max model")
        truth = layer.metadata.get("class") if self.task_name != "images" else None
        known = [str(c) for c in config.get("class_names") or []]
        if truth is not None and known and len(truth) and not set(map(str, truth)) & set(known):
            found = sorted(set(map(str, truth)))
            notes.append(f"the layer's true classes ({', '.join(found[:4])}) are none of this model's "
                         f"({', '.join(known)}): is the model meant for this task?")
        return notes

    def _box_setting(self, n_images: int, shape: tuple) -> list | None:
        """The typed integration box, one per image; None when the field is empty."""
        text = str(self.box.value).replace(",", " ").strip()
        if not text:
            return None
        try:
            y0, x0, y1, x1 = (int(v) for v in text.split())
        except ValueError:
            raise InputError(f"integration box: give four whole numbers y0 x0 y1 x1, got {text!r}") from None
        if not (0 <= y0 < y1 <= shape[0] and 0 <= x0 < x1 <= shape[1]):
            raise InputError(f"integration box {y0} {x0} {y1} {x1} does not lie inside the {shape[0]} x {shape[1]} images")
        return [[y0, x0, y1, x1]] * n_images

    def _show(self, result: Any, layer: Any, task: str, notes: Sequence[str] = (), model: Path | None = None) -> None:
        """Show a finished run of ``task`` (as it was when the run started): its table; for objects,
        ``result`` is ``(table, (labels, features))``: the class layer as :func:`class_layer_data` made it.
        ``notes``: warnings on the data (:meth:`_data_notes`), shown with the message."""
        table, layer_data = result if task == "objects" else (result, None)
        if task != self.task_name:  # the task was changed while it ran: its results belong to no task shown
            self.show_error(f"the {task} run finished after the task was changed to {self.task_name}: its results "
                            "are not shown; choose its task and run it again")
            return
        constant = int(table.pop("constant").sum()) if "constant" in table else 0
        self.results, self.results_task, self.results_layer = table, task, layer
        self.results_model = model  # its stored flag / discard thresholds go with these probabilities
        if task == "images":
            self._apply_threshold()
        else:
            self._fill_table(table)
            self.summary.value = class_summary(table)
        if task == "objects":
            self._add_class_layer(*layer_data, layer)
        noun = {"images": "image", "objects": "object", "profiles": "profile"}[task] + ("" if len(table) == 1 else "s")
        said = "".join(f"\nwarning: {note}" for note in notes)
        if constant:
            what = "their verdicts" if task == "images" else "their classes"
            self.show_error(f"classified {len(table)} {noun}; {constant} of them "
                            f"{'constant' if task == 'images' else 'on a constant image'} (every pixel the same): "
                            f"{what} mean nothing{said}")
        elif notes:
            self.show_error(f"classified {len(table)} {noun}{said}")
        else:
            self.show_message(f"classified {len(table)} {noun}")

    def _add_class_layer(self, labels: np.ndarray, features: pd.DataFrame, layer: Any) -> None:
        """A new Labels layer coloured by class, with each object's class and probability in its
        features, on top of the image ``layer``; ``labels`` and ``features`` from
        :func:`class_layer_data` (ids unique across a stack, so frames that reuse ids keep their
        own classes)."""
        from napari.utils.colormaps import DirectLabelColormap

        colour_of = class_colour_of(self.results)
        colours = {int(lab): colour_of[c] for lab, c in zip(features["label"], features["class"])}
        colours.update({0: "transparent", None: "transparent"})
        self.viewer.add_labels(labels, name=unique_layer_name(self.viewer, f"{layer.name} classes"), opacity=0.6,
                               colormap=DirectLabelColormap(color_dict=colours), features=label_features(features),
                               **layer_geometry(layer, np.ndim(labels)))

    def use_threshold(self, mode: str) -> float | None:
        """Set the threshold to the stored ``"flag"`` or ``"discard"`` value (None if it has none) of the model
        whose results are shown (the chosen model's before any): a model chosen or trained since has other
        probabilities, and its threshold would cut these at the wrong place."""
        from ..classify.predict import resolve_threshold
        from ..io.models import read_model_config

        try:  # the config only (no torch import, no weights): nothing slow on the GUI thread
            model = self.results_model if self.results is not None and self.results_model is not None \
                else self.model_path()
            config = read_model_config(model)
            if config.get("task") is None:  # classifiers record their task; segmentation models do not
                raise InputError("this model is no classifier (a segmentation model?): choose a response-image classifier")
            if config.get("task") != "images":
                raise InputError(f"this model classifies {config.get('task')}, not response images: choose an images model")
            if mode not in (config.get("use_thresholds") or {}):
                raise InputError(f"this model stores no '{mode}' threshold (trained without validation images, or "
                                 "stopped before they were scored): move the threshold slider instead")
            value = resolve_threshold(config, mode)
        except MicrosegError as err:
            self.show_error(str(err))
            return None
        shown = ABOVE_EVERY_PROBABILITY if value > 1 else value  # (stored just above 1)
        self._setting_threshold = True
        try:
            self.threshold.value = shown
        finally:
            self._setting_threshold = False
        # the slider keeps 6 decimals: the stored value itself decides (it lies between two validation
        # images' probabilities; 0.5109199 shown as 0.510919 flagged an image of 0.51091957 the CLI passed)
        self._exact_threshold = value
        if self.results is not None:
            self._apply_threshold()
        self.show_message(f"threshold {min(value, 1.0):.3f}{' (none reaches it)' if value > 1 else ''}: the "
                          f"'{mode}' setting of {Path(str(model)).name}, whose results are shown"
                          if self.results is not None else
                          f"threshold {min(value, 1.0):.3f}{' (none reaches it)' if value > 1 else ''}: the model's "
                          f"'{mode}' setting")
        return value

    def threshold_value(self) -> float:
        """The good/bad threshold on probability_bad: a model's stored flag/discard value as stored (the
        slider shows it to 6 decimals), else the slider's; at the slider's top, above every probability."""
        if self._exact_threshold is not None:
            return self._exact_threshold
        value = float(self.threshold.value)
        return ABOVE_EVERY_PROBABILITY if value > 1 else value

    def _slider_moved(self, *_: Any) -> None:
        if not self._setting_threshold:  # the user's own threshold from now on
            self._exact_threshold = None

    def _apply_threshold(self, *_: Any) -> None:
        """Recompute good/bad verdicts at the threshold (:meth:`threshold_value`; no re-run), table and ROC point."""
        if self.results is None or self.results_task != "images":
            return
        thr = self.threshold_value()
        before = self.results
        table = before.assign(threshold=thr, verdict=np.where(before["probability_bad"] >= thr, "bad", "good"))
        if self.truth is not None and len(self.truth) == len(table):
            table["truth"] = np.where(self.truth == 1, "bad", "good")
        table.attrs = dict(before.attrs)
        self.results = table
        if self.table.rowCount() == len(table) and "verdict" in before and list(before.columns) == list(table.columns):
            self._update_verdicts(before, table)  # a slider step: only the rows whose verdict changed
        else:
            self._fill_table(table)
        flagged = int((table.verdict == "bad").sum())
        text = (f"{flagged} of {len(table)} images flagged bad at threshold "
                f"{'above 1 (none reaches it)' if thr > 1 else format(thr, '.3f')}")
        if "truth" in table:
            roc = self.results.attrs.get("roc")  # the worker's (it does not move with the threshold)
            if roc is None:
                from ..classify.evaluate import roc_curve_auc

                roc = roc_curve_auc(self.truth, table["probability_bad"].to_numpy())
                self.results.attrs["roc"] = roc
            self.roc_curve.setData(roc["fpr"], roc["tpr"])
            bad, good = self.truth == 1, self.truth == 0
            pred_bad = table["probability_bad"].to_numpy() >= thr
            fpr = float(pred_bad[good].mean()) if good.any() else np.nan
            tpr = float(pred_bad[bad].mean()) if bad.any() else np.nan
            self.roc_point.setData([fpr], [tpr])
            self.roc.setVisible(True)
            auc = f"AUC {roc['auc']:.3f}" if bad.any() and good.any() else "no AUC (the truth holds one class only)"
            text += f"; {auc}, accuracy {(table.verdict == table.truth).mean():.3f}"
        self.summary.value = text

    def _update_verdicts(self, before: pd.DataFrame, table: pd.DataFrame) -> None:
        """The table's verdict and threshold cells and row colours at a new threshold; rows whose verdict
        stays only get the threshold (a refill of 3,000 rows per slider step took 70-240 ms)."""
        headers = [self.table.horizontalHeaderItem(c).text() for c in range(self.table.columnCount())]
        verdict_col = headers.index("verdict") if "verdict" in headers else None
        threshold_col = headers.index("threshold") if "threshold" in headers else None
        changed = np.flatnonzero(before["verdict"].to_numpy() != table["verdict"].to_numpy())
        with filling(self.table):
            if threshold_col is not None:
                text = f"{float(table['threshold'].iloc[0]):.3f}" if len(table) else ""
                for row in range(len(table)):
                    self.table.item(row, threshold_col).setText(text)
            for row in changed:
                bad = table["verdict"].iloc[row] == "bad"
                if verdict_col is not None:
                    self.table.item(row, verdict_col).setText(str(table["verdict"].iloc[row]))
                for col in range(self.table.columnCount()):
                    self.table.item(row, col).setBackground(QColor("#7a2e2e") if bad else QBrush())

    def _fill_table(self, table: pd.DataFrame) -> None:
        shown = [c for c in table.columns if not c.startswith("prob_")]
        first = [c for c in ("t", "index", "label", "class", "probability", "verdict", "probability_bad") if c in shown]
        shown = first + [c for c in shown if c not in first]  # the verdict in view, measurements after it
        self.table.setVisible(True)
        self.table.setColumnCount(len(shown))
        self.table.setHorizontalHeaderLabels(shown)
        with filling(self.table):
            self.table.setRowCount(len(table))
            for row, rec in enumerate(table[shown].itertuples(index=False)):
                bad = "verdict" in shown and rec[shown.index("verdict")] == "bad"
                for col, value in enumerate(rec):
                    item = QTableWidgetItem(f"{value:.3f}" if isinstance(value, float) else str(value))
                    if bad:
                        item.setBackground(QColor("#7a2e2e"))
                    self.table.setItem(row, col, item)

    def _jump(self) -> None:
        rows = sorted({i.row() for i in self.table.selectedIndexes()})
        if not rows or self.results is None:
            return
        rec = self.results.iloc[rows[0]]
        # the layer the results came from (its frames and calibration), whatever the picker shows now
        layer = self.results_layer if self.results_layer in self.viewer.layers else None
        if self.results_task in ("images", "profiles") and "index" in rec:
            if layer is not None and layer.ndim >= 3:
                show_frame(self.viewer, layer, int(rec["index"]))
            elif layer is not None and self.results_task == "profiles" and layer.ndim == 2:  # (N, points): its row
                world = layer.data_to_world((float(rec["index"]), (layer.data.shape[1] - 1) / 2))
                self.viewer.camera.center = (float(world[-2]), float(world[-1]))
            else:
                self.viewer.dims.set_current_step(0, int(rec["index"]))
        elif "y" in rec and "x" in rec:
            if "t" in rec and layer is not None and layer.ndim >= 3:
                show_frame(self.viewer, layer, int(rec["t"]))
            world = layer.data_to_world((0.0,) * (layer.ndim - 2) + (float(rec["y"]), float(rec["x"]))) \
                if layer is not None else (float(rec["y"]), float(rec["x"]))
            self.viewer.camera.center = (float(world[-2]), float(world[-1]))

    @dock_action()
    def export(self, *_: Any) -> str | None:
        """Write flags.csv (images), object_classes.csv or profile_classes.csv (never overwriting)."""
        from ..io.tables import write_csv

        if self.results is None:
            self.show_error("Nothing to export yet: classify first.")
            return None
        stem = {"images": "flags", "objects": "object_classes", "profiles": "profile_classes"}[self.results_task]
        try:
            path = free_name(field_path(self.export_dir.value, "export folder") / f"{stem}.csv")
        except InputError as err:
            self.show_error(str(err))
            return None
        write_csv(path, self.results, overwrite=False)
        self.show_message(f"written {path}")
        return str(path)

    # -- train ------------------------------------------------------------------
    def train(self, *_: Any) -> Any:
        """Train a classifier for the chosen task on simulated data, in a worker, with a live plot."""
        if self.busy:
            self.show_error("Already running: press Stop first.")
            return None
        task, n, epochs = self.task_name, int(self.train_n.value), int(self.train_epochs.value)
        profile_task, views = str(self.train_profile_task.value), int(self.train_views.value)
        from ..classify.data import one_view_chirality_note

        note = one_view_chirality_note(profile_task, views) if task == "profiles" else None
        warning = f"\nwarning: {note}: choose 2 views or more" if note else ""
        try:
            wanted = field_path(self.train_out.value, "new model file")
        except InputError as err:
            self.show_error(str(err))
            return None
        reason = unwritable_reason(wanted)
        if reason:  # before training, not after it
            self.show_error(reason)
            return None
        out = free_name(wanted, sidecars=(LAST_SUFFIX,))  # an existing model file (or checkpoint) is never replaced
        if out != wanted:
            self.train_out.value = str(out)  # the form shows the file that will be written
        stop_event = threading.Event()
        self.plot.reset()
        self.plot.setVisible(True)
        chance: dict = {}

        def make_generator():
            from ..classify.trainer import train_with_strategy

            data = yield from _simulated_data(task, n, stop_event, profile_task=profile_task, views=views)
            if data is None:  # Stop while simulating: no training, nothing written
                return None
            classes = np.bincount(np.asarray(data.y, int))
            chance["share"] = float(classes.max() / max(classes.sum(), 1))  # what always saying one class scores
            config = _default_config(task, epochs)
            return (yield from train_with_strategy("simulated", config, simulated=data, out_path=out, stop_event=stop_event))

        def on_event(event: Any) -> None:
            if getattr(event, "kind", "") == "step" and event.train_loss is not None:
                self.plot.add_step(event.epoch - 1 + event.step / max(event.n_steps, 1), event.train_loss)
            elif getattr(event, "kind", "") == "epoch":
                self.plot.add_epoch(event.epoch, event.val_loss, event.val_accuracy)
                self.plot.refresh()

        def say(text: str) -> None:  # with the warning of a one-view chirality run (it trained without a word)
            (self.show_error if warning else self.show_message)(text + warning)

        def done(result: Any) -> None:
            if result is None:
                say("stopped while simulating the training data; nothing was written")
                return
            self.plot.refresh()
            if not result.model_path:  # stopped before the first epoch: an untrained network is no model
                say(NO_MODEL_MESSAGE)
                return
            recent = {result.model_path: task, **{p: t for p, t in RECENT_CLASSIFIERS.items() if p != result.model_path}}
            RECENT_CLASSIFIERS.clear()
            RECENT_CLASSIFIERS.update(recent)
            reset_choices_in_order(self.model_choice)
            if result.model_path in self.model_choice.choices:  # the task may have been changed meanwhile
                self.model_choice.value = result.model_path
            renamed = f" ({wanted.name} or its .last.pt checkpoint exists: written as {out.name})" if out != wanted else ""
            best = next((row for row in result.history if row.get("epoch") == result.best_epoch), {})
            accuracy = best.get("val_accuracy")
            scored = "" if accuracy is None else f"; validation accuracy {accuracy:.2f} (the kept, lowest-loss epoch)"
            share = chance.get("share")
            if accuracy is not None and share is not None and accuracy <= share + 0.05:  # it learned nothing yet
                scored += (f" - no better than always saying the commonest class (its share of the samples: "
                           f"{share:.2f}): train more epochs or samples before trusting its classes")
                self.show_error(f"trained ({result.stop_reason}): {result.model_path}{renamed}{scored}{warning}")
                return
            say(f"trained ({result.stop_reason}): {result.model_path}{renamed}{scored}")

        worker = self.start(make_generator, done, on_event=on_event, label="training classifier",
                            cooperative_stop=stop_event,
                            stop_message="Stopping after this step; the best model so far is kept ...",
                            writes=(out, out.with_name(out.name + LAST_SUFFIX)))
        if worker is not None and warning:  # said from the start too (the run's progress replaces it; done says it again)
            self.show_error(f"training classifier ...{warning}")
        return worker


def class_layer_data(objects: np.ndarray, table: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame]:
    """The labels and features of the per-object class layer; run in the worker.

    ``objects``: the classified labels, (Y, X) or (T, Y, X); ``table``: the classification, one row
    per object (``t`` for a stack, ``label``, optional ``frame_label``, ``class``, ``probability``).
    A stack whose ids repeat from frame to frame gets ids unique across it (``frame_label`` keeps
    the frame's id), so an id reused in another frame gets that frame's class; ids unique already
    (a Segmentation dock's stack) are kept. Labels in the smallest dtype napari draws without a pause;
    "not annotated" pixels (negative, from Auto-label) are no object: 0."""
    objects = np.asarray(objects)
    if objects.dtype.kind == "i" and objects.size and objects.min() < 0:
        objects = np.maximum(objects, 0)
    labels = display_labels(objects)
    columns = [c for c in ("t", "label", "frame_label", "class", "probability") if c in table.columns]
    features = table[columns]
    if labels.ndim == 3 and "t" in features.columns and features.groupby("label")["t"].nunique().max() > 1:
        return unique_stack_ids(labels, features.drop(columns="frame_label", errors="ignore"))
    # ids unique across the stack already (a Segmentation dock's layer): kept, so both layers show one id
    return labels, features.drop_duplicates("label").reset_index(drop=True)


def known_classes(table: pd.DataFrame) -> list[str]:
    """The model's classes in its order (its ``prob_<class>`` columns), then any other found."""
    known = [c[len("prob_"):] for c in table.columns if c.startswith("prob_")]
    return list(dict.fromkeys([*known, *table["class"].unique()]))


def class_colour_of(table: pd.DataFrame) -> dict[str, str]:
    """A fixed colour per class (hex), by the model's class order: the layer and the summary agree."""
    return {c: class_colour(i + 1) for i, c in enumerate(known_classes(table))}


def class_summary(table: pd.DataFrame) -> str:
    """``class: count (percent)`` for every class the model knows, those found in no object included
    (as the CLI's population table lists them), each class name in its layer colour (rich text)."""
    counts = table["class"].value_counts().reindex(known_classes(table), fill_value=0)
    colour = class_colour_of(table)
    return ", ".join(f"<span style='color:{colour[k]}'>&#9632; {k}</span>: {v} ({100 * v / max(len(table), 1):.1f} %)"
                     for k, v in counts.items())


def _simulated_data(task: str, n: int, stop_event: threading.Event | None = None, profile_task: str = "hole",
                    views: int = 2) -> Generator[Any, None, Any]:
    """Simulate the training data of ``task`` (``n`` images, objects or particles), yielding progress;
    returns None when ``stop_event`` was set meanwhile (200,000 profiles take about a minute).
    Profiles: particles of ``profile_task`` ("hole" or "chirality") seen in ``views`` projections."""
    from ..classify import data

    if task == "images":
        steps = data.simulated_response_data(n, seed=0, progress=True)
    elif task == "objects":
        steps = data.simulated_liposome_data(max(1, n // 30), seed=0, progress=True)
    else:
        steps = data.simulated_profile_data(n, task=profile_task, n_views=views, seed=0, progress=True)
    while True:
        if stop_event is not None and stop_event.is_set():
            steps.close()
            return None
        try:
            event = next(steps)
        except StopIteration as done:
            return done.value
        yield event


def _default_config(task: str, epochs: int) -> dict:
    """Settings per task, with the batch sizes of `microseg classify train` (images 64; objects 32, as
    [T]; profiles 128) and its object defaults (undersampling, label smoothing, affine augmentation);
    the epochs are the form's."""
    threads = max(1, (os.cpu_count() or 2) - 1)
    if task == "images":
        return {"task": "images", "model": {"architecture": "small_cnn"}, "epochs": epochs, "batch_size": 64, "lr": 3e-4, "num_threads": threads}
    if task == "objects":  # [T] as `classify train objects` trains by default: 20 % undersampling, label smoothing
        return {"task": "objects", "model": {"architecture": "lipnet", "n_conv": 4}, "epochs": epochs, "batch_size": 32, "lr": 1e-3,
                "oversample": True, "undersample_fraction": 0.2, "label_smoothing": 0.1, "augment": "affine",
                "num_threads": threads}
    return {"task": "profiles", "model": {"architecture": "profile_cnn"}, "epochs": epochs, "batch_size": 128,
            "optimizer": "adadelta", "lr": 1.0, "num_threads": threads}


def _metadata_boxes(layer: Any) -> list | None:
    """The integration boxes a layer's metadata carries (``crop_box``: one ``y0 x0 y1 x1`` per image, as the
    Simulation dock's response images carry them), None when it carries none; InputError when they are not
    boxes of four numbers (hand-set metadata gave a bare "not enough values to unpack")."""
    boxes = (getattr(layer, "metadata", None) or {}).get("crop_box")
    if boxes is None:
        return None
    try:
        values = np.asarray(boxes, dtype=float)
    except (TypeError, ValueError):
        values = np.zeros((0, 0))
    if values.ndim != 2 or values.shape[1] != 4 or not np.isfinite(values).all():
        raise InputError(f"'{layer.name}' metadata 'crop_box' must hold one box y0 x0 y1 x1 (four numbers) per image; "
                         "type the integration box to use for all instead")
    return [list(map(int, box)) for box in values]


def _metadata_truth(layer: Any, n_images: int) -> list[str] | None:
    """The true classes a layer's metadata carries (``label``: "good" / "bad" per image, as simulated response
    images carry them), lower-cased as ``classify images`` reads them; None (no scores) when it carries none or
    not one class name per image (a bare string was read letter by letter, "Bad" as good)."""
    truth = (getattr(layer, "metadata", None) or {}).get("label")
    if not isinstance(truth, (list, tuple, np.ndarray)) or len(truth) != n_images:
        return None
    names = [str(value).strip().lower() for value in truth]
    return names if set(names) <= {"good", "bad"} else None
