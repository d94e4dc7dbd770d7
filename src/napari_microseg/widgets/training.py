"""Training dock widget: train on image + labels layers in a worker, with a live loss plot.

Stop sets a stop event: the trainer finishes the current step, keeps the best
model file and returns normally, so the plot and the result stay. The window
stays responsive: all work happens in the worker. Labels layers in memory are
copied before it starts (painting during a run changes nothing); lazy (dask /
zarr) layers are read, once, at the start of the worker, and every layer is
checked there; layers are written only from the GUI thread.
"""

from __future__ import annotations


import contextlib
import os
import threading
import time
from pathlib import Path
from typing import Any, Generator

import numpy as np
import pandas as pd
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, FloatSpinBox, PushButton, Select, SpinBox

from ..defaults import LAST_SUFFIX, MAX_CLASS_VALUES
from ..errors import InputError, MicrosegError
from ..progress import Progress, drain
from ..io.images import is_lazy
from ._base import field_path, NO_MODEL_MESSAGE, MicrosegDock, being_written, class_colormap, current_frame, display_labels, free_name, ids_features, full_resolution, grey_image, label_features, layer_geometry, layer_names, placement_mismatch, snapshot, unique_layer_name, unwritable_reason, worker_copy
from ._plot import LossPlot


#: height of the image / labels layer lists (about four rows; longer lists scroll)
LAYER_LIST_HEIGHT_PX = 90

PER_IMAGE = "per image (percentiles)"
RAW_CCD = "raw CCD ADC (pedestal / 200)"


def _normalization_choices() -> dict[str, dict]:
    from ..training.normalize import CCD_NORMALIZATION, DEFAULT_NORMALIZATION

    return {PER_IMAGE: dict(DEFAULT_NORMALIZATION), RAW_CCD: dict(CCD_NORMALIZATION)}


#: the Training widget's intensity normalisations: name shown -> spec stored in the model
NORMALIZATION_CHOICES = _normalization_choices()


def check_training_shapes(image_shape: tuple[int, ...], labels_shape: tuple[int, ...]) -> None:
    """Raise InputError for layer shapes that cannot be trained on: (Y, X) or (T, Y, X), the same
    for image and labels."""
    if len(image_shape) not in (2, 3):
        raise InputError(f"image layer must be 2-D (Y, X) or a (T, Y, X) stack, got shape {tuple(image_shape)}")
    if tuple(labels_shape) != tuple(image_shape):
        raise InputError(f"labels shape {tuple(labels_shape)} does not match image shape {tuple(image_shape)}")


#: a best epoch's validation Dice below this is said at the end of a training (the model may segment poorly)
LOW_VALIDATION_DICE = 0.5

#: the form's fields a resumed run takes from its checkpoint instead: setting -> label in the dock
RESUMED_FIELDS = {"preset": "network", "output_mode": "output", "distance_head": "distance head", "patch_size": "patch", "patches_per_epoch": "patches / epoch",
                  "batch_size": "batch", "lr": "learning rate", "val_fraction": "validation share", "seed": "seed",
                  "image_sampling": "sampling", "normalization": "intensities"}


def _resumed_differences(kept: dict, form: dict) -> list[str]:
    """``"<label> <the run's value>"`` for each form field (:data:`RESUMED_FIELDS`) whose value the resumed
    run replaces with its checkpoint's (``kept``: :func:`training.trainer.resume_settings`)."""
    differ = []
    for key, label in RESUMED_FIELDS.items():
        if key not in kept or kept[key] is None:
            continue
        if key == "normalization":
            from ..training.normalize import make_normalization_spec

            run_spec = make_normalization_spec(kept[key])
            if run_spec != make_normalization_spec(form.get(key)):
                named = [name for name, spec in NORMALIZATION_CHOICES.items() if make_normalization_spec(spec) == run_spec]
                differ.append(f"{label} '{named[0] if named else run_spec['kind']}'")
        elif key in ("lr", "val_fraction"):
            if float(kept[key]) != float(form.get(key, float("nan"))):
                differ.append(f"{label} {float(kept[key]):g}")
        elif key == "distance_head":  # only a three-class network has one
            if kept.get("output_mode", form.get("output_mode")) == "three_class" and bool(kept[key]) != bool(form.get(key)):
                differ.append(f"{label} {'on' if kept[key] else 'off'}")
        elif kept[key] != form.get(key):
            differ.append(f"{label} {kept[key]}")
    return differ


class EarlierEpochs:
    """The history rows of a run before it was resumed (see ``training.trainer.checkpoint_history``), sent
    from the worker to the GUI thread so the loss plot shows the whole run; ``message`` for the dock."""

    def __init__(self, rows: list[dict], message: str) -> None:
        self.rows = rows
        self.message = message


def check_training_layers(image: np.ndarray, labels: np.ndarray, partial: bool, output_mode: str | None = None) -> None:
    """Raise InputError for layers that cannot be trained on (shown in the dock): shapes
    (:func:`check_training_shapes`), nothing painted, NaN or infinite intensities, a blank image,
    and for ``output_mode`` "multiclass" labels that hold object ids rather than a few class indices."""
    check_training_shapes(image.shape, labels.shape)
    painted = labels > 0 if not partial else labels != 0
    if not painted.any():
        raise InputError("the labels layer is empty: paint a few objects first")
    # a time-lapse: only its painted frames are trained on, and checked (frame by frame: no copies)
    stack = image.ndim == 3 and labels.ndim == 3
    frames = np.flatnonzero(painted.reshape(len(painted), -1).any(axis=1)) if stack else []
    finite = image.dtype.kind != "f" or (all(np.isfinite(image[t]).all() for t in frames) if stack else bool(np.isfinite(image).all()))
    if image.dtype.kind == "f" and not finite:
        raise InputError("the image contains NaN or infinite values" + (" in a painted frame" if stack else ""))
    if image.size and image.min() == image.max():
        raise InputError(f"the image is blank (every pixel {image.flat[0]}): nothing to learn from")
    blank = next((t for t in frames if image[t].min() == image[t].max()), None)
    if blank is not None:
        raise InputError(f"painted frame {blank} of the image is blank (every pixel {image[blank].flat[0]}): "
                         "nothing to learn from; paint on frames that show the objects")
    if output_mode == "multiclass":
        values = np.unique(labels[labels >= 0])
        if len(values) > MAX_CLASS_VALUES:
            raise InputError(f"the labels hold {len(values)} different values: a class map holds a few class indices "
                             "(0 background, 1, 2, ...); these look like object ids. For nuclei choose the output "
                             "three_class, or binary")


def read_training_pairs(
    images: list[Any], labels: list[Any], label_names: list[str], partial: bool,
    stop_event: threading.Event | None = None, output_mode: str | None = None, background_value: int | None = None,
    notes: list[str] | None = None, labels_copied: list[bool] | None = None,
) -> Generator[Progress, None, tuple[list[np.ndarray], list[np.ndarray]] | None]:
    """Worker side of the Training widget: read each (image, labels) pair into memory (lazy layers:
    dask / zarr) and check it (:func:`check_training_layers`, the labels layer's name in the message).

    ``images`` and ``labels`` hold (Y, X) or (T, Y, X) arrays of equal shapes; ``labels_copied``
    says which labels are copies already (:func:`~._base.snapshot`; the others are copied here,
    None: all are copies); yields one Progress
    per pair and returns the lists of numpy arrays, or None when ``stop_event`` was set between
    two pairs (Stop pressed while reading). Doubts that do not stop training (:func:`object_ids_note`)
    are shown and appended to ``notes``."""
    read_images, read_labels = [], []
    for index, (image, label, name) in enumerate(zip(images, labels, label_names)):
        if stop_event is not None and stop_event.is_set():
            return None
        yield Progress(index, len(images), f"reading {name}")
        copied = labels_copied is None or labels_copied[index]
        if len(getattr(image, "shape", ())) == 3 and (is_lazy(image) or is_lazy(label)):
            # a lazy movie: refused before reading when training could not hold it, read frame by frame
            # (Stop acts between frames; read whole, a 1.6 GB movie peaked at 18 GB and Stop took 110 s)
            _check_training_memory(image, label, name)
            pair = yield from _read_frames(image, label, name, stop_event)
            if pair is None:
                return None
            image, label = pair
        else:
            image, label = np.asarray(image), worker_copy(label, copied)
        try:
            check_training_layers(image, label, partial, output_mode)
        except InputError as err:
            raise InputError(f"{name}: {err}") from None
        from ..training.data import object_ids_note

        note = object_ids_note(label) if output_mode == "multiclass" else None
        if note:
            yield Progress(index, len(images), f"{name}: {note}")
            if notes is not None:
                notes.append(f"{name}: {note}")
        read_images.append(image)
        read_labels.append(label)
    if partial and background_value is not None and output_mode != "multiclass" \
            and not any(np.any(label == background_value) for label in read_labels):
        # every painted id would count as a nucleus: the network would never see what is not one
        raise InputError(f"sparse labels: no background painted (label id {background_value}) on any layer: paint "
                         "some background with that id too, or untick 'sparse labels'")
    if partial and background_value is not None and output_mode != "multiclass":
        note = _background_like_an_object(read_labels, background_value)
        if note:
            yield Progress(len(images), len(images), f"note: {note}")
            if notes is not None:
                notes.append(note)
    return read_images, read_labels


def _background_like_an_object(labels: list[np.ndarray], background_value: int) -> str | None:
    """A doubt about sparse labels whose background id covers no more than about one painted object
    (napari numbers the first nucleus painted 1, the default background id: that nucleus would be trained
    as background and nothing else would be); None when the background covers more."""
    background = sum(int(np.count_nonzero(label == background_value)) for label in labels)
    areas = []
    for label in labels:
        values, counts = np.unique(label[label > 0], return_counts=True)  # (ids of any size)
        areas.extend(int(count) for value, count in zip(values, counts) if value != background_value)
    if not areas or background > 2 * float(np.median(areas)):
        return None
    return (f"the background id {background_value} covers {background} px, about one painted object (median "
            f"{np.median(areas):.0f} px): if {background_value} is a nucleus, it is trained as background; paint the "
            "background with its own id and give that id")


#: bytes of memory training takes per pixel of its images (the pixels read, the normalised float32 copy,
#: the targets, patches): measured 22 on a 200-frame 2048 x 2048 uint16 movie with uint32 labels when the
#: targets were int64; int8 targets took a fifth off the peak (31.8 -> 25.4 B/px with the inputs, 24 frames
#: of 1024 x 1024, benchmarks/bench_train_memory.py)
TRAINING_BYTES_PER_PIXEL = 18


def _check_training_memory(image: Any, label: Any, name: str) -> None:
    """InputError when training on the (T, Y, X) pair would take more than 60 % of the memory free now."""
    from ..simulate._common import available_memory_bytes

    pixels = int(np.prod(image.shape))
    needed = pixels * TRAINING_BYTES_PER_PIXEL
    free = available_memory_bytes()
    if free is not None and needed > 0.6 * free:
        raise InputError(f"{name}: training holds the stack's {image.shape[0]} frames in memory, about "
                         f"{needed / 2**30:.1f} GB, but {free / 2**30:.1f} GB is free: train on the frames you "
                         "painted (a substack: layer[first:last]) or on a crop")


def _read_frames(image: Any, label: Any, name: str, stop_event: threading.Event | None):
    """Read a lazy (T, Y, X) image and labels pair frame by frame into numpy arrays, one Progress per frame;
    None when ``stop_event`` was set meanwhile."""
    n = int(image.shape[0])
    out_image = np.empty(tuple(int(v) for v in image.shape), np.dtype(image.dtype))
    out_label = np.empty(tuple(int(v) for v in label.shape), np.dtype(label.dtype))
    for t in range(n):
        if stop_event is not None and stop_event.is_set():
            return None
        out_image[t] = np.asarray(image[t])
        out_label[t] = np.asarray(label[t])
        yield Progress(t + 1, n, f"reading {name}: frame {t + 1}/{n}")
    return out_image, out_label


class TrainingWidget(MicrosegDock):
    title = "Training"
    description = (
        "Train a U-Net on image + labels layers in a background thread, with a live loss plot, "
        "Stop (keeps the best model) and resume. Paint a few nuclei; with 'sparse' only painted pixels count."
    )

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__(napari_viewer)
        self.image_layer = Select(label="image(s)", choices=self._image_choices,
                                  tooltip="one or several image layers; 2-D images or (T, Y, X) stacks")
        self.labels_layer = Select(label="labels", choices=self._labels_choices,
                                   tooltip="one labels layer per image, in the same order; in a stack, unpainted frames are skipped")
        self.preset = ComboBox(label="preset", choices=["small", "n", "c"], value="small",
                               tooltip="small: fast CPU default; n: [N] 64-filter U-Net; c: [C] CCD U-Net")
        self.output_mode = ComboBox(label="output", choices=["three_class", "binary", "multiclass"], value="three_class",
                                    tooltip="three_class separates touching nuclei; multiclass for semantic classes (CCD)")
        self.distance_head = CheckBox(label="distance head (splits touching nuclei)", value=False,
                                      tooltip="three_class: also learn each nucleus's distance map; the watershed seeds from it")
        self.sparse = CheckBox(label="sparse labels (0 = not annotated)", value=False,
                               tooltip="only painted pixels count; paint background with the label id below")
        self.background_id = SpinBox(label="background id", value=1, min=1, max=65535,
                                     tooltip="sparse labels: the label id painted on background (napari paints 1 "
                                             "first); objects get the other ids. multiclass: classes are painted "
                                             "with their number, background with an id above them all")
        self.normalization = ComboBox(label="intensities", choices=list(NORMALIZATION_CHOICES), value=PER_IMAGE,
                                      tooltip="per image: each image stretched to its own 1-99.8 percentiles "
                                              "(fluorescence, phase contrast); raw CCD ADC: pedestal subtracted, "
                                              "divided by 200 ADC, so cluster charge keeps its meaning ([C])")
        self.val_fraction = FloatSpinBox(label="validation share", value=0.2, min=0.0, max=0.5, step=0.05,
                                         tooltip="share of the images (of one image: a strip; of a time-lapse: its "
                                                 "last frames) held out to choose the best epoch; 0: none, the "
                                                 "training loss decides (one small image)")
        self.patch = SpinBox(label="patch (px)", value=128, min=32, max=1024, step=32,
                             tooltip="side of the square pieces cut from the images to train on: a few nuclei wide")
        self.image_sampling = ComboBox(label="sample images by", choices=["pixels", "objects", "mixed"], value="pixels",
                                       tooltip="pixels: each annotated pixel equally likely; objects: images give patches "
                                               "in proportion to the nuclei they hold (a small crowded image is not "
                                               "outweighed by a large sparse one); mixed: half of each")
        self.epochs = SpinBox(label="epochs", value=20, min=1, max=10000,
                              tooltip="passes over the patches per epoch; the best epoch on the validation images is kept")
        self.patches_per_epoch = SpinBox(label="patches / epoch", value=64, min=4, max=100000,
                                         tooltip="patches drawn (at random places) in each epoch")
        self.batch_size = SpinBox(label="batch", value=8, min=1, max=256, tooltip="patches per optimisation step")
        self.lr = FloatSpinBox(label="learning rate", value=1e-3, min=1e-6, max=1.0, step=1e-4,
                               tooltip="Adam's step size; lower it (1e-4) to fine-tune a trained model gently")
        self.lr.native.setDecimals(6)  # Qt's 4 decimals rounded 5e-5 (a fine-tune's rate) to 1e-4 and 1e-6 to 0
        self.device = ComboBox(label="device", choices=["auto", "cpu", "cuda", "mps"], value="auto",
                               tooltip="auto: the GPU when there is one, else the CPU")
        self.out_path = FileEdit(label="model file", mode="w", value=str(Path.home() / "microseg_model.pt"), filter="*.pt",
                                 tooltip="where the trained model goes; an existing file is never replaced (a new name is taken)")
        self.resume = CheckBox(label="resume from the model file's last state", value=False,
                               tooltip="continue the run that wrote the model file (its settings are kept), up to "
                                       "the epochs asked; unticked, an existing file is never replaced: a new name is taken")
        self.seed = SpinBox(label="seed", value=0, min=0, max=2**31 - 1,
                            tooltip="the same seed, layers and settings train the same model (on the same device)")
        self.train_button = PushButton(text="Train", tooltip="train in the background: live loss plot; Stop keeps the best model")
        self.preview_button = PushButton(text="Predict preview (current frame)",
                                         tooltip="segment the frame shown with the model in the model file field (a new layer)")
        for picker in (self.image_layer, self.labels_layer):  # a few rows each; the list scrolls
            picker.native.setMaximumHeight(LAYER_LIST_HEIGHT_PX)
        self.form = Container(widgets=[
            self.image_layer, self.labels_layer, self.preset, self.output_mode, self.distance_head, self.sparse,
            self.background_id, self.normalization, self.val_fraction,
            self.patch, self.image_sampling, self.epochs, self.patches_per_epoch, self.batch_size, self.lr, self.device,
            self.out_path, self.resume, self.seed, self.train_button, self.preview_button,
        ])
        self.body.addWidget(self.form.native)
        # pinned next to the progress bar and Stop, in view while the controls scroll; shown from
        # the first run on, so that before it the controls have the room
        self.plot = LossPlot(min_height=100)
        self.plot.setMaximumHeight(240)  # the rest stays the controls'
        self.plot.setVisible(False)
        self.pin_above_progress(self.plot)
        self.train_button.changed.connect(self.train)
        self.sparse.changed.connect(self._show_background_id)
        self._show_background_id()
        self._previous_output_mode = str(self.output_mode.value)
        self.output_mode.changed.connect(self._default_normalization)
        self.preview_button.changed.connect(self.preview)
        self.run_buttons = (self.train_button, self.preview_button)
        self.result = None
        self.model_path: str | None = None
        self._last_redraw = 0.0
        # torch and the trainer are imported now, in a thread of their own: on the GUI thread the
        # import froze the window for 1-4 s when the dock opened; in a thread the window keeps
        # drawing (longest event-loop gap ~0.2 s, benchmarks/bench_gui_open.py). A run started
        # before it ends waits for it (Python's import lock).
        self.imports = threading.Thread(target=_import_training_modules, name="microseg-training-imports")
        self.imports.start()
        self.follow_layers(self.image_layer, self.labels_layer)

    def _default_normalization(self, mode: str) -> None:
        """Multiclass is the CCD task: raw ADC by default; the other outputs stretch each image. Only the
        other output's default is swapped: an intensity the user chose stays (raw CCD for a binary task)."""
        if mode == "multiclass" and self.normalization.value == PER_IMAGE:
            self.normalization.value = RAW_CCD
        elif mode != "multiclass" and self._previous_output_mode == "multiclass" and self.normalization.value == RAW_CCD:
            self.normalization.value = PER_IMAGE
        self._previous_output_mode = mode

    # -- layer pickers ------------------------------------------------------
    def _image_choices(self, *_: Any) -> list[str]:
        return layer_names(self.viewer, "Image")

    def _labels_choices(self, *_: Any) -> list[str]:
        return layer_names(self.viewer, "Labels")

    # -- training -----------------------------------------------------------
    def chosen_training_layers(self) -> tuple[list[Any], list[np.ndarray | Any], list[str]]:
        """The chosen (image, labels) layer data, not read yet: InputError with a clear message for a
        choice that cannot be trained on, found from names and shapes alone (the GUI thread's part).

        Images are returned as they are (numpy, or dask / zarr for lazy layers), read in the worker by
        :func:`read_training_pairs`; small in-memory labels copied now, large ones as they are, to be
        copied in the worker (``_labels_copied`` says which; :func:`~._base.snapshot`). Also returns the
        labels layers' names, for messages."""
        image_names, label_names = list(self.image_layer.value), list(self.labels_layer.value)
        # nothing picked but only one candidate: that is the user's choice (and the list shows it)
        if not image_names and len(self._image_choices()) == 1:
            image_names = self._image_choices()
            self.image_layer.value = image_names
        if not label_names and len(self._labels_choices()) == 1:
            label_names = self._labels_choices()
            self.labels_layer.value = label_names
        if not image_names or not label_names:
            raise InputError("Choose an image layer and a labels layer (paint a few objects in a Labels layer; a "
                             "mask opened as an image becomes one with right-click > Convert to Labels).")
        if len(image_names) != len(label_names):
            raise InputError(f"choose one labels layer per image: {len(image_names)} image(s), {len(label_names)} labels layer(s)")
        if len(image_names) > 1:  # the lists show layers in the viewer's order: pair by shape and name instead
            shapes = {name: _grey_shape(self.chosen_layer(name, "image")) for name in image_names}
            shapes.update({name: tuple(full_resolution(self.chosen_layer(name, "labels")).shape) for name in label_names})
            image_names, label_names = pair_by_shape_and_name(image_names, label_names, shapes)
        images, labels, labels_copied = [], [], []
        self._placement_notes = []  # labels shown elsewhere than their image: said when the run starts and ends
        for image_name, label_name in zip(image_names, label_names):
            image_layer = self.chosen_layer(image_name, "image")
            image = grey_image(image_layer)  # RGB layers: grey
            labels_layer = self.chosen_layer(label_name, "labels")
            misplaced = placement_mismatch(image_layer, labels_layer)
            if misplaced:
                self._placement_notes.append(misplaced)
            label = full_resolution(labels_layer)
            try:
                check_training_shapes(image.shape, label.shape)
            except InputError as err:
                raise InputError(f"{label_name}: {err}") from None
            images.append(image)
            label, copied = snapshot(label)  # painting during the run changes nothing (a large one: copied in the worker)
            labels.append(label)
            labels_copied.append(copied)
        self._labels_copied = labels_copied  # which labels are copies already (large ones: copied in the worker)
        self._paired_names = list(zip(image_names, label_names))  # as paired: the model's record says so too
        # messages name the pair ("the image contains NaN" would otherwise carry the labels' name)
        return images, labels, [f"{label} (on {image})" for image, label in zip(image_names, label_names)]

    def training_pairs(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """The chosen (image, labels) layer pairs, read and checked (:func:`read_training_pairs`, here
        on the calling thread); InputError with a clear message otherwise."""
        images, labels, names = self.chosen_training_layers()
        return drain(read_training_pairs(images, labels, names, bool(self.sparse.value),
                                         output_mode=str(self.output_mode.value),
                                         background_value=self.config().get("background_value"),
                                         labels_copied=self._labels_copied))

    def _show_background_id(self, *_: Any) -> None:
        """'background id' matters with sparse labels only: editable with them, greyed out otherwise
        (hiding it would resize the loss plot below, whose larger redraws then stall the window)."""
        self.background_id.enabled = bool(self.sparse.value)

    def config(self) -> dict:
        """The TrainConfig (dict form) from the form's values."""
        return {
            "preset": self.preset.value, "output_mode": self.output_mode.value, "patch_size": int(self.patch.value),
            "epochs": int(self.epochs.value), "patches_per_epoch": int(self.patches_per_epoch.value),
            "batch_size": int(self.batch_size.value), "lr": float(self.lr.value), "device": self.device.value,
            "image_sampling": self.image_sampling.value,
            "normalization": dict(NORMALIZATION_CHOICES[self.normalization.value]),
            "val_fraction": float(self.val_fraction.value),
            "seed": int(self.seed.value), "unlabelled_is_ignored": bool(self.sparse.value),
            "distance_head": bool(self.distance_head.value) and self.output_mode.value == "three_class",
            "background_value": int(self.background_id.value) if self.sparse.value else None,
            # leave one core to the GUI thread so the window stays responsive
            "num_threads": max(1, (os.cpu_count() or 2) - 1),
            "data_description": "napari layers: " + ", ".join(f"{i} + {lab}" for i, lab in zip(self.image_layer.value, self.labels_layer.value)),
        }

    def train(self, *_: Any) -> Any:
        """Validate the inputs on the GUI thread, then train in a worker."""
        if self.busy:
            self.show_error("Already running: press Stop first.")
            return None
        try:
            images, labels, label_names = self.chosen_training_layers()
        except InputError as err:
            self.show_error(str(err))
            return None
        try:
            wanted = field_path(self.out_path.value, "model file")
        except InputError as err:
            self.show_error(str(err))
            return None
        if wanted.name.endswith(LAST_SUFFIX):  # a run's checkpoint: resuming it continues its model's run
            model = wanted.with_name(wanted.name[:-len(LAST_SUFFIX)])
            if not self.resume.value:
                self.show_error(f"{wanted.name} is the resumable checkpoint of {model.name}: tick 'resume' to "
                                f"continue that run, or name a new model")
                return None
            wanted = model
            self.out_path.value = str(wanted)
        reason = unwritable_reason(wanted)
        if reason:  # before training, not after it
            self.show_error(reason)
            return None
        resume = str(wanted) if self.resume.value else None
        if resume and being_written(wanted):
            self.show_error(f"{wanted.name} is being written by a training that is still running: wait for it "
                            "to end (or Stop it) before resuming it")
            return None
        # an existing model file is continued (resume) or left alone: a new name, shown in the field
        out_path = wanted if resume else free_name(wanted, sidecars=(LAST_SUFFIX,))
        if out_path != wanted:
            self.out_path.value = str(out_path)
        cfg = self.config()
        cfg["data_description"] = "napari layers: " + ", ".join(f"{i} + {lab}" for i, lab in self._paired_names)
        if cfg["output_mode"] == "multiclass":  # class names a labels layer carries (the Simulation's CCD classes)
            names = layer_class_names([self.chosen_layer(name, "labels") for name in self.labels_layer.value])
            if names:
                cfg.update(class_names=names, n_classes=len(names))
        sparse = bool(self.sparse.value)
        image_names = [image for image, _ in self._paired_names]
        labels_copied = list(self._labels_copied)
        stop_event = threading.Event()  # Stop: the trainer stops after this step and keeps the best model
        notes: list[str] = list(self._placement_notes)  # doubts about the layers, said again when the run ends
        self.plot.reset()
        self.plot.setVisible(True)
        resumed_with: list[str] = []  # the form's fields the resumed run replaced by its own (worker -> end message)
        kept_after_failure: dict = {}  # a failed run's kept model: its best epoch, history file (worker -> failed())

        def make_generator():
            from ..io.images import frame_name
            from ..training.trainer import checkpoint_history, resume_settings, train  # torch: in the worker

            if len(label_names) > 1:  # which labels go with which image, said before any work
                yield Progress(0, len(images), "pairs: " + ", ".join(label_names))
            for note in notes:
                yield Progress(0, len(images), f"note: {note}")
            if resume:  # a resumed run keeps its output, optimiser, normalisation, patches and seed, whatever the
                # form shows (taken before the layers are read: their check depends on the output mode)
                kept = resume_settings(resume)
                differ = _resumed_differences(kept, cfg)
                cfg.update(kept)
                cfg["distance_head"] = bool(cfg.get("distance_head")) and cfg["output_mode"] == "three_class"
                if differ:
                    resumed_with.extend(differ)  # said again at the end: this message is replaced meanwhile
                    yield Progress(0, len(images), "resuming with the run's own " + ", ".join(differ))
            pairs = yield from read_training_pairs(images, labels, label_names, sparse, stop_event, cfg["output_mode"],
                                                   cfg.get("background_value"), notes, labels_copied)
            if pairs is None:  # Stop while reading: no training, nothing written
                return None
            if out_path != wanted:  # said once the layers are read (the reading messages came first)
                yield Progress(len(images), len(images), f"{wanted.name} (or its .last.pt checkpoint) exists: training into {out_path.name}")
            # a (T, Y, X) stack trains on its frames (one pair each; the library skips unpainted ones)
            # (a frame holding only -1, "not annotated" as the Auto-label QC layer marks it, is not one)
            n_annotated = sum(int(np.count_nonzero([np.any(frame > 0) for frame in lab])) if lab.ndim == 3 else 1
                              for lab in pairs[1])
            cfg["data_description"] += f" ({n_annotated} annotated frame(s))"
            if resume:
                earlier = checkpoint_history(resume)
                if earlier:  # the plot shows the whole run, not only the epochs from here on
                    yield EarlierEpochs(earlier, f"resuming after epoch {earlier[-1]['epoch']}")
            # the model's record names its validation images by layer (a stack's frames as "<layer>[t]")
            names = [name if image.ndim == 2 else frame_name(name, t) for name, image in zip(image_names, pairs[0])
                     for t in range(1 if image.ndim == 2 else image.shape[0])]
            data = {"images": pairs[0], "labels": pairs[1], "names": names}
            started = _file_stamp(out_path)
            try:
                return (yield from train(cfg, data, out_path=out_path, resume=resume, stop_event=stop_event))
            except GeneratorExit:  # the viewer closed mid-run: the trainer kept its best model; its history
                if _file_stamp(out_path) != started:  # beside it too, as after Stop (no dock is left to write it)
                    _history_of_kept_model(out_path, bool(resume))
                raise
            except Exception:  # diverged, out of memory, a full disk ...: the best epoch so far is kept, as after
                if _file_stamp(out_path) != started:  # Stop; said with the error (on_failed), with its history
                    kept_after_failure.update(_history_of_kept_model(out_path, bool(resume)))
                raise

        def failed() -> None:
            """After a failure's message: a model the run kept is said, offered and resumable."""
            if not kept_after_failure:
                return
            from .segmentation import add_recent_model

            add_recent_model(out_path)
            self.model_path = str(out_path)
            epoch = kept_after_failure.get("best_epoch")
            history = kept_after_failure.get("history_name")
            self.show_error(f"{self.status.text()}. The best epoch so far" + (f" ({epoch})" if epoch else "")
                            + f" is kept: {out_path}" + (f" (history: {history})" if history else "")
                            + "; tick 'resume' to continue its run")

        # the pairs ("<labels> (on <image>)") are said when the run starts and when it ends
        return self.start(make_generator, lambda result: self._finished(result, label_names, notes, bool(resume), resumed_with),
                          on_event=self._on_event, label="training", cooperative_stop=stop_event, on_failed=failed,
                          stop_message="Stopping after this step; the best model so far is kept ...",
                          writes=(out_path, out_path.with_name(out_path.name + LAST_SUFFIX)))

    def _on_event(self, event: Any) -> None:
        if isinstance(event, EarlierEpochs):
            self.plot.add_earlier_epochs(event.rows)
            self.plot.refresh()
            return
        if getattr(event, "kind", "") == "step" and event.train_loss is not None:
            self.plot.add_step(event.epoch - 1 + event.step / max(event.n_steps, 1), event.train_loss)
        if getattr(event, "kind", "") == "epoch":
            self.plot.add_epoch(event.epoch, event.val_loss, event.val_dice)
            dice = f"{event.val_dice:.3f}" if event.val_dice is not None else "-"
            vloss = f"{event.val_loss:.4f}" if event.val_loss is not None else "-"
            self.show_message(f"epoch {event.epoch}/{event.n_epochs}: val loss {vloss}, val Dice {dice} on {event.device}")
        now = time.perf_counter()
        if now - self._last_redraw > 0.5 or getattr(event, "kind", "") == "epoch":
            self._last_redraw = now
            self.plot.refresh()

    def _finished(self, result: Any, pairs: list[str] | None = None, notes: list[str] | None = None,
                  resumed: bool = False, resumed_with: list[str] | None = None) -> None:
        """A run's end (``resumed``: whether it continued an earlier run, as chosen when it started;
        ``resumed_with``: the form's settings it replaced by the run's own, "output binary"). The
        files come first: the dock's widgets may be gone (its window closed while napari went on)."""
        if result is None:  # stopped while the layers were read
            self.show_message("stopped before training started; nothing was written")
            return
        self.result = result
        history_note = ""
        if result.model_path is not None and result.history:  # beside the model, as `microseg train` writes them
            try:
                history_note = f"; history: {write_history_beside(Path(result.model_path), result.history, resumed).name}"
            except OSError as err:
                history_note = f"; history not written ({err})"
        if result.model_path is not None:
            from .segmentation import add_recent_model

            add_recent_model(result.model_path)  # offered in the Segmentation docks open now and later
        self.plot.refresh()
        if result.model_path is None:  # stopped before the first epoch finished: nothing to offer
            self.show_message(NO_MODEL_MESSAGE)
            return
        self.model_path = result.model_path
        best = f"{result.best_value:.4f}" if result.best_value is not None else "-"
        validated = any(row.get("val_loss") is not None for row in result.history)
        monitor = str(result.config.get("training", {}).get("config", {}).get("monitor", "val_loss"))
        monitored_name = ({"val_loss": "validation loss", "val_dice": "validation Dice"}.get(monitor, monitor)
                          if validated else "training loss")
        pairs_note = f"; pairs: {', '.join(pairs)}" if pairs and len(pairs) > 1 else ""  # which labels went with which image
        best_row = next((row for row in result.history if row.get("epoch") == result.best_epoch), {})
        dice = best_row.get("val_dice")
        dice_note = f", validation Dice {dice:.3f}" if isinstance(dice, (int, float)) and dice == dice else ""
        text = (f"{result.stop_reason}: {result.epochs_run} epochs on {result.device}; best epoch {result.best_epoch} "
                f"({monitored_name} {best}{dice_note}); model: {result.model_path}{history_note}{pairs_note}"
                + (f"; resumed with the run's own {', '.join(resumed_with)} (not the form's)" if resumed_with else "")
                + "".join(f". Note: {note}" for note in notes or ()))
        if dice_note and dice < LOW_VALIDATION_DICE:  # (a brief run's model made each frame one object, unsaid)
            self.show_error(f"{text}. The validation Dice is low: this model may segment poorly; train longer "
                            "(more epochs or patches) before using it")
        else:
            self.show_message(text)

    # -- preview ------------------------------------------------------------
    def preview(self, *_: Any) -> Any:
        """Segment the visible frame of the image layer with the current best model (new layer)."""
        field = str(Path(str(self.out_path.value or "")).expanduser())  # (~: the home folder)
        # the model file the field names, if it exists (the user chose another one); else the last one trained
        path = field if Path(field).is_file() else (self.model_path or field)
        if not Path(path).is_file():
            self.show_error("No model yet: train first (or choose an existing model file).")
            return None
        if not self.image_layer.value:
            self.show_error("Choose an image layer.")
            return None
        try:
            layer = self.chosen_layer(self.image_layer.value[0], "image")
        except InputError as err:
            self.show_error(str(err))
            return None
        data = grey_image(layer)
        t = current_frame(self.viewer, layer) if data.ndim == 3 else None
        frame = data[t] if t is not None else data  # a lazy layer's frame is read in the worker

        def make_generator():
            from ..inference.segment import segment_image

            result = yield from segment_image(path, np.asarray(frame))
            classes = result.output_mode == "multiclass"
            labels = display_labels(result.labels, np.uint8 if classes else np.uint16)
            if classes:  # a class map: the share of each class, as the Segmentation dock gives it
                shares = np.bincount(labels.ravel(), minlength=len(result.class_names)) / max(labels.size, 1)
                said = ", ".join(f"{name} {100 * share:.1f} %" for name, share in zip(result.class_names, shares))
                classes = pd.DataFrame({"label": np.arange(len(result.class_names)), "class": list(result.class_names)})
                return on_its_frame(labels), said, list(result.class_names), label_features(classes)
            features = ids_features(labels)
            return on_its_frame(labels), f"{len(features)} objects", None, features

        def on_its_frame(labels: np.ndarray) -> np.ndarray:
            """One frame's labels in a zero stack of the layer's frames (drawn on frame t alone, as the
            Segmentation dock's; a (Y, X) layer was drawn over every frame of the stack)."""
            if t is None:
                return labels
            stack = np.zeros((data.shape[0], *labels.shape), labels.dtype)
            stack[t] = labels
            return stack

        def done(outcome: tuple) -> None:
            labels, said, class_names, features = outcome
            name = unique_layer_name(self.viewer, f"preview {Path(path).stem}" + (f" t={t}" if t is not None else ""))
            colours = {"colormap": class_colormap(len(class_names))} if class_names else {}  # the fixed class colours
            self.viewer.add_labels(labels, name=name, opacity=0.5, **colours, features=features,
                                   **layer_geometry(layer, labels.ndim))
            self.show_message(f"preview: {said}")

        return self.start(make_generator, done, label="predicting")


def write_history_beside(model_path: Path, history: list[dict], resumed: bool) -> Path:
    """Write a run's per-epoch ``history`` as ``<model>.history.csv`` (as ``microseg train`` does);
    another run's file there is kept (a new name) unless this run ``resumed`` it. Returns the path."""
    from ..io.tables import TRAIN_HISTORY_COLUMNS, model_sidecar, write_history_csv

    history_path = model_sidecar(Path(model_path), "history.csv")
    if history_path.exists() and not resumed:
        history_path = free_name(history_path)
    return write_history_csv(history_path, history, TRAIN_HISTORY_COLUMNS)


def _history_of_kept_model(model_path: Path, resumed: bool) -> dict:
    """Write the history of a model a run kept and ended without returning (the viewer closed, an error)
    beside it; returns ``best_epoch`` and ``history_name`` (absent where unknown or not written)."""
    from ..io.models import read_model_config

    out: dict = {}
    try:
        training = read_model_config(model_path).get("training") or {}
    except (MicrosegError, OSError):
        return out
    if training.get("best_epoch"):
        out["best_epoch"] = int(training["best_epoch"])
    history = training.get("history") or []
    if history:
        with contextlib.suppress(OSError):  # (a full disk: the model is still said)
            out["history_name"] = write_history_beside(model_path, history, resumed=resumed).name
    return out


def _file_stamp(path: Path) -> tuple | None:
    """(size, modification time) of a file, None when there is none: tells whether a run wrote it."""
    try:
        stat = Path(path).stat()
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns


def _import_training_modules() -> None:
    """Import torch, kornia and the training code (run in a thread when the Training dock opens), so
    that Train starts at once. (A run moves the objects alive when it starts out of the garbage
    collector's reach: see ``_base._hold_gc``.)"""
    import kornia  # noqa: F401
    import torch  # noqa: F401
    import torch._dynamo  # noqa: F401  (imported by the first optimiser made: 2-5 s after Train otherwise)

    import napari_microseg.io.models  # noqa: F401
    import napari_microseg.models  # noqa: F401
    import napari_microseg.training.augment  # noqa: F401
    import napari_microseg.training.trainer  # noqa: F401

    from ._base import refreeze_if_running

    refreeze_if_running()  # Train pressed before the imports ended: their objects join the run's frozen ones


def pair_by_shape_and_name(image_names: list[str], label_names: list[str], shapes: dict) -> tuple[list[str], list[str]]:
    """Image and labels layer names paired one to one. The pickers' order (the viewer's layer order)
    stands unless it pairs layers of different shapes, or the names clearly say otherwise: whole words
    shared ("cells A" with "A nuclei", not with "B nuclei"), leaving out words any layer could carry
    ("labels", "image", napari's "[1]" suffix). Every pair must have one shape (``shapes``: name ->
    full shape, (Y, X) or (T, Y, X))."""
    import re

    from scipy.optimize import linear_sum_assignment

    generic = {"labels", "label", "image", "images", "mask", "masks", "layer", "segmented", "seg", "gt"}

    def words(name: str) -> set[str]:
        return set(re.findall(r"[a-z0-9]+", re.sub(r"\s*\[\d+\]$", "", name.lower()))) - generic

    score = np.zeros((len(image_names), len(label_names)))
    for i, image in enumerate(image_names):
        for j, label in enumerate(label_names):
            same_shape = tuple(shapes.get(image, ())) == tuple(shapes.get(label, ()))
            union = words(image) | words(label)
            score[i, j] = (0.0 if same_shape else -1000.0) + (len(words(image) & words(label)) / len(union) if union else 0.0)
    in_order = float(np.trace(score))
    rows, cols = linear_sum_assignment(score, maximize=True)
    if float(score[rows, cols].sum()) <= in_order + 1e-9:  # no clear evidence against the pickers' order
        return list(image_names), list(label_names)
    return [image_names[i] for i in rows], [label_names[j] for j in cols]

def layer_class_names(layers: list[Any]) -> list[str] | None:
    """The class names of class-map labels layers, from their features (``label`` 0..K-1 with a
    ``class`` name each, as the Simulation dock's CCD classes carry them); None when they carry none
    or disagree, so that a model trained on them names its classes as the Segmentation dock's CCD
    tools expect them."""
    found = None
    for layer in layers:
        features = getattr(layer, "features", None)
        if features is None or not len(features) or not {"label", "class"} <= set(features.columns):
            return None
        table = features[["label", "class"]].drop_duplicates().sort_values("label")
        if list(table["label"].astype(int)) != list(range(len(table))):
            return None
        names = [str(name) for name in table["class"]]
        if found is not None and names != found:
            return None
        found = names
    return found


def _grey_shape(layer: Any) -> tuple:
    """The shape of an image layer's grey data (an RGB layer's without its colour axis), read from
    the layer without computing the grey image."""
    shape = tuple(full_resolution(layer).shape)
    return shape[:-1] if getattr(layer, "rgb", False) else shape
