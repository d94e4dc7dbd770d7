"""Training loop as a generator of progress events.

:func:`train` yields :class:`TrainEvent` after every optimisation step (and every
validation batch), so a consumer can update a progress bar and a loss plot and can
stop training within about one step: either call ``generator.close()`` (what
napari's ``thread_worker.quit()`` does) or set ``stop_event``. The best model so far
is written atomically at the end of every epoch that improves the monitored value
(``out_path``); the last state with optimiser and scheduler (``out_path + ".last.pt"``)
is written after every epoch, so a crash loses at most the running epoch and
``resume=`` continues from it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Generator

import numpy as np

from ..defaults import LAST_SUFFIX
from ..errors import InputError, MicrosegWarning, TrainingDiverged
from .augment import AugmentConfig, augment_batch
from .data import IGNORE, IMAGE_SAMPLING, LabelledImage, PatchSampler, TrainingData, prepare_training_data, split_train_val, tile_for_validation
from .normalize import SCALE_KEEPING, make_normalization_spec
from .rng import HeldGlobalRng

__all__ = ["TrainConfig", "TrainEvent", "TrainResult", "train", "default_loss", "last_checkpoint_path"]

def fitted_patch_size(patch_size: int, image_shapes: list) -> int:
    """``patch_size`` (px), or, when it exceeds every training image's larger side, that side rounded
    up to a multiple of 16 (the U-Net's step): a 1000-px patch on 256-px images was 15x the arithmetic
    of a 256-px one, all of it on padding."""
    largest = max((int(max(shape)) for shape in image_shapes), default=0)
    if largest and patch_size > largest:
        return min(int(patch_size), int(-(-largest // 16) * 16))
    return int(patch_size)


#: normalisation kinds that keep absolute levels (raw ADC minus an offset): their default
#: augmentation is exact (flips and quarter turns only)
ABSOLUTE_INTENSITY_KINDS = ("fixed", "pedestal")

DEFAULT_CLASS_NAMES = {
    "binary": ["background", "foreground"],
    "three_class": ["background", "interior", "boundary"],
}


#: learning-rate schedules (:attr:`TrainConfig.lr_schedule`)
LR_SCHEDULES = ("plateau", "cosine", "constant")
# An epoch whose mean training loss exceeds this many times the run's first-step loss has blown up
# (a network at its start predicts near-uniform classes: a working run stays below that loss; at
# --lr 1000 the loss rose 1.4 -> 5e5 and stayed finite). The first-step loss of a resumed or
# fine-tuned run can be tiny: it counts as at least BLOW_UP_FLOOR.
BLOW_UP_FACTOR = 20.0
BLOW_UP_FLOOR = 0.05
# a fresh network's reference is at least this (a first batch of few annotated pixels can score near 0 while
# the network's loss is that of guessing, ~0.7-1.5: a working sparse-painting run was stopped at 1.06)
FRESH_LOSS_FLOOR = 0.5


@dataclass
class TrainConfig:
    """Training settings; ``asdict(config)`` is JSON-able and stored in the model file.

    Attributes
    ----------
    preset : model preset (``"small"``, ``"n"``, ``"c"``; see ``napari_microseg.models``).
    model : overrides of the preset's parameters (e.g. ``{"base_filters": 32}``).
    output_mode : ``"binary"``, ``"three_class"`` or ``"multiclass"``.
    n_classes : classes for multiclass (None: from the labels).
    class_names : names per class (None: defaults per mode).
    normalization : normalisation spec (None: percentile 1 / 99.8, or the spec of the
        ``init_model`` / ``resume`` model).
    patch_size : square patch side, pixels.
    patches_per_epoch : patches drawn per training epoch.
    batch_size : patches per optimisation step.
    epochs : last epoch number (with ``resume``, training continues up to it).
    lr : initial learning rate.
    optimizer : ``"adam"``, ``"adamw"``, ``"sgd"`` (momentum 0.9) or ``"adadelta"``.
    weight_decay : L2 penalty / decoupled decay (adamw).
    loss : loss name (None: ``bce_dice`` binary, ``ce_dice`` three_class,
        ``weighted_ce`` multiclass); see ``napari_microseg.training.losses``.
    focal_gamma, focal_alpha : focal-loss parameters ([N]: 2 and 0.5).
    class_weights : per-class weights, ``"auto"`` (inverse training frequencies, for
        ``weighted_ce``), ``"sqrt"`` (their square root: milder, fewer false
        positives of the rare classes) or None.
    early_stopping_patience : epochs without improvement before stopping (None: never).
    reduce_lr_patience : epochs without improvement before multiplying the lr by
        ``reduce_lr_factor`` (None: constant lr).
    min_lr : lower bound for the plateau scheduler, and the cosine schedule's final lr.
    lr_schedule : ``"plateau"`` (default: the lr falls by ``reduce_lr_factor`` after
        ``reduce_lr_patience`` epochs without improvement) or ``"cosine"`` (the lr falls
        from ``lr`` to ``min_lr`` along half a cosine over the epochs ``1..epochs``,
        whatever the validation does; for long fine-tunes, usually with
        ``early_stopping_patience=None``) or ``"constant"`` (``lr`` throughout, as the [N] study
        trained: Adam at 2e-4 for up to 3000 epochs, patience 250).
    monitor : ``"val_loss"`` (lower is better) or ``"val_dice"`` (higher is better).
    device : ``"auto"`` (cuda > mps > cpu), ``"cpu"``, ``"cuda"``, ...
    amp : mixed precision: on CUDA bfloat16 where supported, else float16 + grad scaling;
        on CPUs that compute bfloat16 natively (AMX / AVX512-BF16) bfloat16 autocast
        (~2x the patches per second); float32 elsewhere.
    seed : seeds patch sampling, augmentation, initialisation and (unless ``split_seed``
        is given) the validation split. A whole number >= 0.
    split_seed : seeds only the validation split: which images it holds out and which of
        their tiles it scores when there are more than ``val_max_tiles`` (None: ``seed``).
        Runs with other ``seed`` values but one ``split_seed`` validate on the same
        tiles, so that their validation scores compare; a fine-tune can keep the split
        its starting model was chosen on. A resumed run keeps its checkpoint's split.
    num_threads : torch CPU threads during training (None: leave torch's setting).
    freeze_encoder : with ``init_model``, keep the contracting path fixed.
    val_fraction : share of images (or of the single image, as a strip) held out.
    val_max_tiles : validation tiles of ``patch_size`` evaluated per epoch.
    foreground_bias : probability that a patch is centred on foreground.
    image_sampling : ``"pixels"`` (images give patches in proportion to their annotated
        pixels), ``"objects"`` (in proportion to the objects they hold) or ``"mixed"``
        (half of each); see :class:`~napari_microseg.training.data.PatchSampler`.
    augment : apply augmentation; ``augmentation`` holds its settings
        (see :class:`~napari_microseg.training.augment.AugmentConfig`; with ``fixed`` or
        ``pedestal`` normalisation the default is flips and quarter turns only: no intensity
        changes and no warp).
    ignore_value, unlabelled_is_ignored, background_value : partial annotation, see
        :func:`~napari_microseg.training.data.make_target`.
    data_description : free text stored in the model file.
    distance_head : three_class only: one more output channel that regresses each
        nucleus's normalised interior distance (1 at its centre, 0 at its boundary;
        :func:`~napari_microseg.training.losses.normalized_interior_distance`); the
        watershed can then seed and flood on it (``seed_method="network"``), which
        separates touching nuclei whose predicted cores join.
    distance_weight : weight of the distance head's mean squared error in the loss.
    touching_weight : three_class only: extra loss weight on the seams between
        touching nuclei (:func:`~napari_microseg.training.losses.touching_boundary_mask`),
        as the U-Net paper's border weights: a seam pixel counts ``1 + touching_weight``
        times in the cross-entropy (and the distance head's error); see
        :func:`~napari_microseg.training.losses.with_touching_weight`. 0 (default): off.
    """

    preset: str = "small"
    model: dict = field(default_factory=dict)
    output_mode: str = "binary"
    n_classes: int | None = None
    class_names: list | None = None
    normalization: dict | None = None
    patch_size: int = 256
    patches_per_epoch: int = 256
    batch_size: int = 8
    epochs: int = 50
    lr: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    loss: str | None = None
    focal_gamma: float = 2.0
    focal_alpha: float = 0.5
    class_weights: Any = "auto"
    early_stopping_patience: int | None = 20
    reduce_lr_patience: int | None = 5
    reduce_lr_factor: float = 0.1
    min_lr: float = 1e-6
    lr_schedule: str = "plateau"
    monitor: str = "val_loss"
    device: str = "auto"
    amp: bool = True
    seed: int = 0
    split_seed: int | None = None
    num_threads: int | None = None
    freeze_encoder: bool = False
    val_fraction: float = 0.2
    val_max_tiles: int = 64
    foreground_bias: float = 0.7
    image_sampling: str = "pixels"
    augment: bool = True
    augmentation: dict = field(default_factory=dict)
    ignore_value: int | None = IGNORE
    unlabelled_is_ignored: bool = False
    background_value: int | None = None
    data_description: str = ""
    distance_head: bool = False
    distance_weight: float = 1.0
    touching_weight: float = 0.0

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise InputError(f"unknown training settings: {', '.join(sorted(unknown))}")
        return cls(**d)


@dataclass
class TrainEvent:
    """One progress event. ``done`` / ``total`` count optimisation steps over the run.

    ``kind`` is ``"step"`` (after a training step), ``"validate"`` (during validation),
    ``"epoch"`` (epoch finished: ``val_loss``, ``val_dice``, ``seconds`` are set) or
    ``"saved"``. ``seconds`` is the wall time of the epoch so far.
    """

    epoch: int
    n_epochs: int
    step: int
    n_steps: int
    train_loss: float | None
    val_loss: float | None
    val_dice: float | None
    lr: float
    seconds: float
    device: str
    done: int
    total: int
    message: str = ""
    kind: str = "step"
    improved: bool = False


@dataclass
class TrainResult:
    """What :func:`train` returns.

    ``model_path`` holds the best model (None only if no epoch finished and nothing was
    saved); ``stop_reason`` is ``"completed"``, ``"early_stopping"`` or ``"stopped"``.
    """

    model_path: str | None
    last_path: str | None
    best_epoch: int | None
    best_value: float | None
    epochs_run: int
    stop_reason: str
    history: list
    device: str
    config: dict


def check_model_out_path(out_path: str | os.PathLike) -> Path:
    """``out_path`` as a Path; InputError when it is named as a checkpoint (``*.last.pt``): a model
    written there would replace a run's resumable state (and its own checkpoint go to ``.last.pt.last.pt``)."""
    out_path = Path(out_path)
    if out_path.name.endswith(LAST_SUFFIX):
        raise InputError(f"{out_path.name} is the name of a run's resumable checkpoint, not of a model: name the "
                         f"model {out_path.name[:-len(LAST_SUFFIX)]} (its checkpoint goes beside it)")
    return out_path


def last_checkpoint_path(out_path: str | os.PathLike) -> Path:
    """Path of the resumable checkpoint written next to a model file."""
    return Path(str(out_path) + LAST_SUFFIX)


def default_loss(output_mode: str) -> str:
    return {"binary": "bce_dice", "three_class": "ce_dice", "multiclass": "weighted_ce"}[output_mode]


def _versions() -> dict:
    import torch

    from .. import __version__

    v = {"napari_microseg": __version__, "torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version()}
    try:
        import kornia

        v["kornia"] = kornia.__version__
    except ImportError:  # pragma: no cover
        pass
    return v


def _make_optimizer(name: str, params, lr: float, weight_decay: float):
    import torch

    name = name.lower()
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay, nesterov=True)
    if name == "adadelta":
        return torch.optim.Adadelta(params, lr=lr, weight_decay=weight_decay)
    raise InputError(f"unknown optimiser {name!r}: use adam, adamw, sgd or adadelta")


def _as_training_data(data: Any, cfg: TrainConfig, normalization: dict) -> TrainingData:
    if data is None:
        return None
    if isinstance(data, TrainingData):
        return data
    sequences = names = groups = None
    if isinstance(data, dict):
        images, labels, sequences, names = data["images"], data["labels"], data.get("sequences"), data.get("names")
        groups = data.get("groups")
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        images, labels = data
    else:
        raise InputError("training data must be a TrainingData, an (images, labels) pair or a dict with images and "
                         "labels (and optionally sequences: per image, the time-lapse it is a frame of; names: per image, "
                         "what the model's record calls it; groups: per image, the tiles of one field it overlaps)")
    return prepare_training_data(
        images, labels, output_mode=cfg.output_mode, n_classes=cfg.n_classes, normalization=normalization,
        ignore_value=cfg.ignore_value, unlabelled_is_ignored=cfg.unlabelled_is_ignored,
        background_value=cfg.background_value, sequences=sequences, names=names, groups=groups,
    )


def _dice_counts(logits, target, n_out: int):
    """Return (intersection, sum_pred, sum_true) per foreground class (float64 numpy)."""
    valid = target >= 0
    if n_out == 1:
        pred = (logits[:, 0] > 0).long()
        true = (target == 1)
        pred_f = (pred == 1) & valid
        true_f = true & valid
        return np.array([float((pred_f & true_f).sum())]), np.array([float(pred_f.sum())]), np.array([float(true_f.sum())])
    pred = logits.argmax(1)
    inter, sp, st = [], [], []
    for c in range(1, n_out):
        p = (pred == c) & valid
        t = (target == c) & valid
        inter.append(float((p & t).sum()))
        sp.append(float(p.sum()))
        st.append(float(t.sum()))
    return np.array(inter), np.array(sp), np.array(st)


def _foreground_dice(inter, sp, st, output_mode: str) -> float:
    """Dice of the foreground: binary / three_class (interior + boundary as one); multiclass: mean over
    foreground classes present in truth or prediction."""
    if output_mode in ("binary",):
        d = sp[0] + st[0]
        return float(2 * inter[0] / d) if d > 0 else 1.0
    if output_mode == "three_class":
        return float("nan")  # computed separately from merged counts
    per = [2 * i / (p + t) for i, p, t in zip(inter, sp, st) if p + t > 0]
    return float(np.mean(per)) if per else 1.0


def check_common_settings(cfg: Any, whole_numbers: dict[str, int]) -> None:
    """Refuse, each with one clear line, the settings both trainers share when they cannot train.

    ``whole_numbers`` maps setting names of ``cfg`` to their lowest allowed
    value; ``cfg.lr`` must be a finite number > 0 (0 would train nothing),
    ``cfg.weight_decay`` a finite number >= 0, ``cfg.val_fraction`` in [0, 1) and
    ``cfg.num_threads`` unset or a whole number >= 1.
    """
    for name, low in whole_numbers.items():
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise InputError(f"{name} must be a whole number >= {low}, got {value!r}")
    lr, weight_decay = cfg.lr, cfg.weight_decay
    if isinstance(lr, bool) or not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise InputError(f"lr (learning rate) must be a number > 0, got {lr!r}")
    if isinstance(weight_decay, bool) or not (isinstance(weight_decay, (int, float)) and math.isfinite(weight_decay)
                                              and weight_decay >= 0):
        raise InputError(f"weight_decay must be a number >= 0, got {weight_decay!r}")
    if not 0 <= cfg.val_fraction < 1:
        raise InputError(f"val_fraction must be in [0, 1), got {cfg.val_fraction!r}")
    threads = getattr(cfg, "num_threads", None)
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1):
        raise InputError(f"num_threads (CPU threads) must be a whole number >= 1 or unset, got {threads!r}")


def cosine_lr(lr: float, min_lr: float, epochs: int, done: int) -> float:
    """Learning rate of the cosine schedule after ``done`` of ``epochs`` epochs: ``lr`` at 0, ``min_lr`` at the end."""
    return min_lr + (lr - min_lr) * (1 + math.cos(math.pi * min(done, epochs) / max(1, epochs))) / 2


def _check_counts_and_rates(cfg: TrainConfig) -> None:
    """One clear line for settings that would otherwise fail deep inside torch (or divide by zero)."""
    check_common_settings(cfg, {"epochs": 1, "batch_size": 1, "patches_per_epoch": 1, "patch_size": 16,
                                "val_max_tiles": 1})
    if not (isinstance(cfg.min_lr, (int, float)) and math.isfinite(cfg.min_lr) and cfg.min_lr >= 0):
        raise InputError(f"min_lr must be a number >= 0, got {cfg.min_lr!r}")
    if not 0 <= cfg.foreground_bias <= 1:
        raise InputError(f"foreground_bias must be in [0, 1], got {cfg.foreground_bias!r}")
    for name in ("seed", "split_seed"):
        value = getattr(cfg, name)
        if value is None and name == "split_seed":
            continue
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise InputError(f"{name} must be a whole number >= 0, got {value!r}")


STRIP_SUFFIX = " (validation strip)"  # the name of a one-image split's validation part (split_train_val)


def split_note(train_td: TrainingData, held_out: TrainingData | None) -> str:
    """What the model record's ``data`` adds when validation was held out of the images it describes
    (the description counts them all): ``"; 3 trained on, 1 held out for validation"``, or for one image
    split by a strip ``"; trained on the parts of a.tif beside its validation strip (held out)"``.
    ``""`` when nothing was held out (no validation, or validation images given apart)."""
    if held_out is None or not len(held_out):
        return ""
    strips = [it.name[: -len(STRIP_SUFFIX)] for it in held_out.items if it.name.endswith(STRIP_SUFFIX)]
    if strips and len(held_out) == 1:
        others = len(train_td) - sum(1 for it in train_td.items if it.name.startswith(f"{strips[0]} (train part"))
        return (f"; trained on the parts of {strips[0]} beside its validation strip (held out)"
                + (f" and {others} other image(s)" if others > 0 else ""))
    return f"; {len(train_td)} trained on, {len(held_out)} held out for validation"


def crash_reason(err: BaseException) -> str:
    """The ``stop_reason`` a model file records for a run ended by an unexpected error:
    ``"error: <exception type>: <message>"`` (the message's first line, at most 200 characters)."""
    message = (str(err).strip().splitlines() or [""])[0][:200]
    return f"error: {type(err).__name__}" + (f": {message}" if message else "")


def annotation_digest(item: LabelledImage) -> str:
    """A short digest (16 hex digits) of an image's training target and its shape: which validation images
    a run used, whatever they are called (a resumed run checks that it is given those)."""
    import hashlib

    target = np.ascontiguousarray(item.target, dtype=np.int64)  # (as int64: the digests runs recorded before targets were int8)
    return hashlib.sha1(repr(target.shape).encode() + target.tobytes()).hexdigest()[:16]


def _run_split_kept(every: TrainingData, train_td: TrainingData, val_td: TrainingData | None, ckpt: dict,
                    name: str, cfg: TrainConfig) -> tuple[TrainingData, TrainingData | None]:
    """The training / validation split a resumed run goes on with: the one its checkpoint validated on
    (``validation_images``, by name). The split drawn again from the images given is kept when it is that
    one; otherwise the recorded validation images are taken out of ``every`` image given (images added
    since train), a one-image run's validation strip is cut again from its image, and a run whose validation
    images are no longer given is refused: its epochs' losses would compare other images."""
    recorded = list(((ckpt.get("config") or {}).get("training") or {}).get("validation_images") or [])
    drawn = [] if val_td is None else [item.name for item in val_td.items]
    if not recorded or drawn == recorded:
        return train_td, val_td
    by_name: dict = {}
    for item in every.items:
        by_name.setdefault(item.name, []).append(item)
    strip = STRIP_SUFFIX
    if len(recorded) == 1 and recorded[0].endswith(strip) and len(by_name.get(recorded[0][: -len(strip)], [])) == 1:
        # a one-image run's strip: cut again from that image (the same cut: it depends on the image alone);
        # images added since train
        source = by_name[recorded[0][: -len(strip)]][0]
        like = TrainingData([source], every.output_mode, every.n_classes, every.normalization, every.description)
        parts, strip_td = split_train_val(like, cfg.val_fraction, seed=cfg.split_seed)
        if strip_td is not None and [item.name for item in strip_td.items] == recorded:
            others = [it for it in every.items if it is not source]
            return (TrainingData(others + parts.items, every.output_mode, every.n_classes, every.normalization,
                                 every.description), strip_td)
    if len(every.items) < 2 or any(len(by_name.get(n, [])) != 1 for n in recorded):
        missing = [n for n in recorded if len(by_name.get(n, [])) != 1]
        raise InputError(f"--resume {name}: the run validated on {', '.join(recorded[:3])}"
                         f"{' ...' if len(recorded) > 3 else ''}, and {', '.join(missing[:3]) or 'its split'} is not "
                         "among the images given (one each): resume with the run's images, or start a new run")
    kept = set(recorded)
    like = {"output_mode": every.output_mode, "n_classes": every.n_classes, "normalization": every.normalization,
            "description": every.description}
    return (TrainingData([it for it in every.items if it.name not in kept], **like),
            TrainingData([by_name[n][0] for n in recorded], **like))


def read_checkpoint(resume: str | os.PathLike) -> dict:
    """The resumable state (a model file holding ``optimizer_state``) at ``resume``: a ``.last.pt``
    checkpoint, or a model path with one beside it. InputError when there is none."""
    from ..io.models import read_model_file

    rp = Path(resume)
    ckpt = read_model_file(rp) if rp.is_file() else None
    if ckpt is not None and "optimizer_state" in ckpt:
        return ckpt
    alt = last_checkpoint_path(rp)
    if alt.is_file():
        beside = read_model_file(alt)
        if "optimizer_state" in beside:
            return beside
        raise InputError(f"cannot resume from {rp.name}: {alt.name} beside it holds no optimiser state (a model "
                         "was saved under that name): fine-tune from it instead (microseg train --init-model)")
    if ckpt is None:
        from ..pretrained import resolve_model

        try:  # a shipped model's name (--init-model takes one): no run to go on, a model to fine-tune
            shipped_path = resolve_model(str(resume)) if not rp.suffix else None
        except Exception:  # noqa: BLE001 - not a shipped name either
            shipped_path = None
        if shipped_path is not None and Path(shipped_path).is_file():
            raise InputError(f"cannot resume {resume}: it is a shipped model, not a run of yours (it holds no "
                             "optimiser state): fine-tune from it instead (microseg train --init-model "
                             f"{resume}, or Fine-tune in the Segmentation dock)")
        raise InputError(f"cannot resume: {rp} not found")
    shipped = Path(__file__).resolve().parent.parent / "pretrained"
    if (ckpt.get("config") or {}).get("training") and not rp.resolve().is_relative_to(shipped):
        # a run's model whose checkpoint is gone (moved, or never written): not "a shipped or exported model"
        raise InputError(f"cannot resume from {rp.name}: its run's checkpoint {alt.name}, which holds the optimiser "
                         f"state, is not beside it (moved or removed, or the run ended before its first checkpoint); "
                         "put it back beside the model, or fine-tune from the model instead (microseg train "
                         "--init-model, or Fine-tune in the Segmentation dock)")
    raise InputError(f"cannot resume from {rp.name}: it holds no optimiser state (a shipped or exported model): "
                     "fine-tune from it instead (microseg train --init-model, or Fine-tune in the Segmentation dock)")


#: TrainConfig keys a resumed run keeps from its checkpoint (see :func:`resume_settings`)
RESUMED_RUN_KEYS = ("optimizer", "freeze_encoder", "val_fraction", "monitor", "lr", "patch_size", "patches_per_epoch",
                    "batch_size", "image_sampling", "lr_schedule", "weight_decay", "loss", "early_stopping_patience",
                    "seed", "touching_weight", "augment")


#: TrainConfig settings that change what the monitored validation value measures (the loss, its weights,
#: the validation tiles): resumed with another, the earlier epochs' best does not compare
MEASURE_KEYS = ("loss", "patch_size", "touching_weight", "class_weights", "focal_gamma", "focal_alpha",
                "distance_weight", "monitor")


def _measure_changed_on_resume(ckpt: dict, cfg: "TrainConfig") -> list[str]:
    """The :data:`MEASURE_KEYS` (names as the command line's options say them) a resumed run ``cfg`` sets
    otherwise than the checkpoint's run did."""
    before = (ckpt["config"].get("training") or {}).get("config") or {}
    mode = ckpt["config"].get("output_mode") or cfg.output_mode

    def comparable(value: Any) -> Any:  # class weights saved as a JSON list, given as a tuple of ints
        return [float(v) for v in value] if isinstance(value, (list, tuple)) else value

    changed = []
    for key in MEASURE_KEYS:
        if key not in before:
            continue
        then, now = before[key], getattr(cfg, key)
        if key == "loss":
            then, now = then or default_loss(mode), now or default_loss(cfg.output_mode)
        if comparable(then) != comparable(now):
            changed.append(key.replace("_", " "))
    return changed


def resume_settings(resume: str | os.PathLike) -> dict:
    """The settings a resumed run must keep, from the checkpoint at ``resume`` (see
    :func:`read_checkpoint`): ``optimizer``, ``lr`` (the optimiser state goes on with its own),
    ``freeze_encoder``, ``val_fraction`` and ``monitor`` (the best epoch stays chosen by one measure: a
    validation share changed on resume would compare earlier validation losses with later training
    losses), the patch size, patches per epoch, batch size, image sampling, schedule, loss, patience, seed,
    augmentation (validation tiles of another size would compare other tiles; :data:`RESUMED_RUN_KEYS`)
    ``normalization`` and the network's ``preset``, ``output_mode`` and ``distance_head`` (TrainConfig keys), for callers
    such as the Training widget whose form shows
    a new run's settings (the command line keeps those given again)."""
    ckpt = read_checkpoint(resume)
    before = (ckpt["config"].get("training") or {}).get("config") or {}
    settings = {key: before[key] for key in RESUMED_RUN_KEYS if key in before}
    settings["normalization"] = ckpt["config"].get("normalization")
    preset = (ckpt["config"].get("model") or {}).get("preset")
    if preset:  # the network is the checkpoint's (see train)
        settings["preset"] = preset
    if "distance_head" in ckpt["config"]:  # so is its distance head
        settings["distance_head"] = bool(ckpt["config"]["distance_head"])
    if ckpt["config"].get("output_mode"):  # and its output (train refuses another)
        settings["output_mode"] = ckpt["config"]["output_mode"]
    return settings


def _model_beside(resume: str | os.PathLike) -> dict:
    """The config of the model file a run's checkpoint belongs to (``x.pt`` for ``x.pt`` or ``x.pt.last.pt``);
    {} when there is none or it cannot be read."""
    from ..defaults import LAST_SUFFIX
    from ..io.models import read_model_config

    path = Path(resume)
    if path.name.endswith(LAST_SUFFIX):
        path = path.with_name(path.name[: -len(LAST_SUFFIX)])
    try:
        return read_model_config(path) if path.is_file() else {}
    except Exception:  # noqa: BLE001 - a damaged or foreign file: nothing inherited
        return {}


def checkpoint_history(resume: str | os.PathLike) -> list[dict]:
    """The per-epoch rows (``epoch``, ``train_loss``, ``val_loss``, ``val_dice``, ...) of the run saved in
    the checkpoint at ``resume`` (see :func:`read_checkpoint`), oldest first: what a resumed run continues."""
    tstate = json.loads(read_checkpoint(resume).get("trainer_state_json", "{}"))
    return [dict(row) for row in tstate.get("history", [])]


def train(
    config: TrainConfig | dict,
    train_data: Any,
    val_data: Any = None,
    out_path: str | os.PathLike = "model.pt",
    resume: str | os.PathLike | None = None,
    init_model: str | os.PathLike | None = None,
    stop_event: threading.Event | None = None,
) -> Generator[TrainEvent, None, TrainResult]:
    """Train a segmentation network; a generator of :class:`TrainEvent` returning a :class:`TrainResult`.

    Parameters
    ----------
    config : :class:`TrainConfig` or its dict form.
    train_data : a :class:`~napari_microseg.training.data.TrainingData`, or ``(images, labels)``
        (lists of 2-D arrays or ``(T, Y, X)`` stacks; see ``prepare_training_data``), or a dict
        of ``images``, ``labels`` and optionally ``sequences`` and ``names`` (per image; the
        model's record lists the validation images by these names).
    val_data : validation data in the same forms; None: split off ``config.val_fraction``
        of ``train_data`` (by image, or a strip of a single image).
        A dict's optional ``groups`` (per image, the tiles of one field it overlaps) keep overlapping
        tiles on one side of that split.
    out_path : model file for the best model; the resumable last state goes to
        ``out_path + ".last.pt"``.
    resume : a ``.last.pt`` checkpoint (or a model path next to one): continue its epochs,
        optimiser, scheduler and history up to ``config.epochs``.
    init_model : a model file to fine-tune from (weights, architecture and normalisation
        are taken from it; a head with a different class count is re-initialised).
    stop_event : ``threading.Event``; when set, training stops after the current step.

    Notes
    -----
    Stopping (``close()``, ``stop_event``, early stopping) keeps the best model file. If
    stopped before the first epoch finished nothing is saved (an untrained network is no model,
    and a file already at ``out_path`` stays as it is); the result's ``model_path`` is None.
    An error after an epoch finished (divergence, out of memory, a full disk ...) is raised with the best
    model kept: its record's ``stop_reason`` is ``"diverged"`` or ``"error: <type>: <message>"``.
    """
    import torch

    from ..device import resolve_device
    from ..io.models import check_segmentation_config, read_model_file, save_model, update_model_config
    from ..models import build_model, n_outputs_for_mode, resolve_model_config

    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(dict(config))
    if cfg.output_mode not in ("binary", "three_class", "multiclass"):
        raise InputError(f"unknown output mode {cfg.output_mode!r}: use binary, three_class or multiclass")
    if cfg.monitor not in ("val_loss", "val_dice"):
        raise InputError("monitor must be 'val_loss' or 'val_dice'")
    if cfg.lr_schedule not in LR_SCHEDULES:
        raise InputError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {cfg.lr_schedule!r}")
    if cfg.distance_head and cfg.output_mode != "three_class":
        raise InputError("distance_head needs output mode three_class")
    if not (math.isfinite(cfg.touching_weight) and cfg.touching_weight >= 0):
        raise InputError(f"touching_weight must be a number >= 0, got {cfg.touching_weight}")
    if cfg.touching_weight > 0 and cfg.output_mode != "three_class":
        raise InputError(f"touching_weight needs output mode three_class (the seams are between nuclei), not {cfg.output_mode}")
    if cfg.image_sampling not in IMAGE_SAMPLING:
        raise InputError(f"image_sampling must be one of {', '.join(IMAGE_SAMPLING)}, not {cfg.image_sampling!r}")
    _check_counts_and_rates(cfg)
    try:
        device = resolve_device(cfg.device)
    except ValueError as err:
        raise InputError(str(err)) from None
    out_path = check_model_out_path(out_path)
    last_path = last_checkpoint_path(out_path)

    # ---- checkpoint / init model
    if resume is not None and init_model is not None:  # the checkpoint's weights would be taken, the record saying otherwise
        raise InputError("give either a run to resume or an initial model to fine-tune from, not both (a resumed "
                         "fine-tune keeps its initial model's record)")
    ckpt = None
    resumes_own_run = False  # the checkpoint is out_path's own: out_path holds that run's best model
    if resume is not None:
        ckpt = read_checkpoint(resume)
        resumes_own_run = Path(resume).resolve() in (out_path.resolve(), last_path.resolve())
        run_lr = ((ckpt["config"].get("training") or {}).get("config") or {}).get("lr")
        if run_lr is not None:  # its optimiser state goes on with the run's learning rate: the record says that one
            cfg = replace(cfg, lr=float(run_lr))
    init = read_model_file(init_model) if init_model is not None else None
    source = ckpt or init
    if source is not None:
        check_segmentation_config(source["config"], Path(str(resume or init_model)).name)
    # the validation split belongs to the run: a resumed run keeps its checkpoint's (saved before
    # split_seed existed: its seed's), so that epochs before and after the resume compare
    split_seed = cfg.seed if cfg.split_seed is None else cfg.split_seed
    before = ((ckpt or {}).get("config", {}).get("training") or {}).get("config") or {}
    if "seed" in before:
        split_seed = before["seed"] if before.get("split_seed") is None else before["split_seed"]
    cfg = replace(cfg, split_seed=int(split_seed))
    if source is not None and source["config"].get("distance_head") and not cfg.distance_head \
            and cfg.output_mode == "three_class":
        # the distance head is part of the architecture: a three-class fine-tune or resume keeps it (a binary
        # or class model made from it drops it: its output layer is new, and a distance map is no class)
        cfg = replace(cfg, distance_head=True)
    if cfg.freeze_encoder and source is None:
        raise InputError("freezing the encoder needs an initial model to fine-tune (--init-model): a new network's "
                         "encoder is random")
    normalization = cfg.normalization
    if normalization is None and source is not None:
        normalization = source["config"].get("normalization")
    normalization = make_normalization_spec(normalization)
    if not cfg.augmentation and normalization["kind"] in ABSOLUTE_INTENSITY_KINDS:
        # classes told apart by their level in ADC ([C]): only exact augmentations (flips, quarter
        # turns); intensity changes and the bilinear warp (which smears 1-px hot lines into the
        # glow range while their labels stay "hot") would teach the wrong levels
        aug_cfg = AugmentConfig(intensity=False, affine_p=0.0)
    else:
        aug_cfg = AugmentConfig.from_dict(cfg.augmentation)
    if ckpt is not None:
        mode = ckpt["config"].get("output_mode")
        if mode != cfg.output_mode:
            raise InputError(f"cannot resume: checkpoint output mode is {mode!r}, settings say {cfg.output_mode!r}")
        saved_norm = ckpt["config"].get("normalization")
        if cfg.normalization is not None and saved_norm and normalization != make_normalization_spec(saved_norm):
            def said(spec: dict) -> str:  # the kind and its settings ('percentile' p_low 2.0 vs p_low 1.0)
                return f"{spec.get('kind')!r}" + "".join(f" {k} {v}" for k, v in sorted(spec.items()) if k != "kind")

            raise InputError(f"cannot resume with normalisation {said(normalization)}: the checkpoint's weights "
                             f"were trained on {said(make_normalization_spec(saved_norm))} images; leave it unset to "
                             "keep that")
        before = (ckpt["config"].get("training") or {}).get("config") or {}
        for key in ("optimizer", "freeze_encoder"):  # the saved optimiser state belongs to these
            if key in before and before[key] != getattr(cfg, key):
                raise InputError(f"cannot resume with {key} {getattr(cfg, key)!r}: the checkpoint was trained with "
                                 f"{before[key]!r}; resume with the same setting, or fine-tune it (init_model) instead")
        if val_data is None and "val_fraction" in before and float(before["val_fraction"]) != float(cfg.val_fraction):
            # the best epoch so far was chosen on that share's validation images (or on the training loss)
            raise InputError(f"cannot resume with validation share {cfg.val_fraction:g}: the run validated on "
                             f"{float(before['val_fraction']):g} of its images; resume with that share (or leave it "
                             "unset), or start a new run")
    if source is not None and source["config"].get("model", {}).get("preset"):
        # the architecture is the checkpoint's or initial model's: record that, not the unused setting
        cfg = replace(cfg, preset=source["config"]["model"]["preset"])
    if (source is not None and cfg.output_mode == "multiclass" == source["config"].get("output_mode")
            and cfg.n_classes is None and source["config"].get("n_classes")):
        # a class model fine-tuned or resumed keeps its classes and their names, whichever of them the new
        # labels hold (a CCD frame without clusters must not shrink the model to 3 classes named "class i")
        cfg = replace(cfg, n_classes=int(source["config"]["n_classes"]),
                      class_names=cfg.class_names or source["config"].get("class_names"))
    elif (source is not None and cfg.output_mode == "multiclass" == source["config"].get("output_mode")
          and cfg.n_classes and not cfg.class_names and source["config"].get("class_names")
          and int(cfg.n_classes) > len(source["config"]["class_names"])):
        # classes added to a class model: the ones it has keep their names (a CCD model's "cluster" class
        # drives clusters.csv and the shape rules), the new ones are "class i"
        kept = list(source["config"]["class_names"])
        cfg = replace(cfg, class_names=kept + [f"class {i}" for i in range(len(kept), int(cfg.n_classes))])

    # ---- data
    def preparing(message: str) -> TrainEvent:
        """An event before the first step (said, counting no step: ``total`` 0)."""
        return TrainEvent(0, int(cfg.epochs), 0, 0, None, None, None, float(cfg.lr), 0.0, device, 0, 0, message, "prepare")

    def stopped_before_training() -> TrainResult:
        """Stop while the data were prepared: nothing trained, nothing written."""
        return TrainResult(None, None, None, None, 0, "stopped", [], device, {})

    yield preparing("preparing the training data")
    train_td = _as_training_data(train_data, cfg, normalization)
    fitted = fitted_patch_size(cfg.patch_size, [item.shape for item in train_td.items])
    if fitted != cfg.patch_size:  # patches larger than every image would be mostly padding
        cfg = replace(cfg, patch_size=fitted)
    val_td = _as_training_data(val_data, cfg, normalization)
    held_out = val_td is None  # validation drawn from the training data: its description counts both
    if val_td is None:
        every = train_td
        train_td, val_td = split_train_val(train_td, cfg.val_fraction, seed=cfg.split_seed)
        if ckpt is not None:  # the run's validation images, whatever images were added or removed since
            train_td, val_td = _run_split_kept(every, train_td, val_td, ckpt, Path(str(resume)).name, cfg)
    elif ckpt is not None:  # validation images given: the run's own, or its epochs' losses would compare others
        recorded = list(((ckpt.get("config") or {}).get("training") or {}).get("validation_images") or [])
        given = [item.name for item in val_td.items]
        unnamed = all(str(n).startswith("image ") and str(n)[6:].isdigit() for n in recorded)  # named before 2026-12
        if recorded and not unnamed and given != recorded:
            raise InputError(f"--resume {Path(str(resume)).name}: the run validated on {', '.join(recorded[:3])}"
                             f"{' ...' if len(recorded) > 3 else ''}, the validation images given are "
                             f"{', '.join(given[:3])}{' ...' if len(given) > 3 else ''}: resume with the run's "
                             "validation images (or none, when it drew them itself), or start a new run")
    if stop_event is not None and stop_event.is_set():  # (Stop pressed while the data were prepared: seconds)
        return stopped_before_training()
    # the validation labels' digests, once: every checkpoint records them, a resumed run compares them
    validation_digests = [] if val_td is None else [annotation_digest(item) for item in val_td.items]
    digests = list((((ckpt or {}).get("config") or {}).get("training") or {}).get("validation_digests") or [])
    changed = [item.name for item, digest, now in zip(val_td.items if val_td is not None else [], digests,
                                                      validation_digests) if now != digest]
    if changed:
        # simulated folders name their images alike (nuclei_00000.tif ...): the names alone let another folder's
        # images pass for the run's. Corrected labels (painting between Stop and resume) are welcome: said, not refused
        warnings.warn(MicrosegWarning(
            f"resuming {Path(str(resume)).name}: the labels of validation image(s) {', '.join(changed[:3])}"
            f"{' ...' if len(changed) > 3 else ''} differ from those the run validated on (corrected since, or "
            "images of the same names from another folder): validation losses before and after this resume "
            "compare different labels"), stacklevel=2)
    n_classes = train_td.n_classes
    n_out = n_outputs_for_mode(cfg.output_mode, n_classes)
    n_class_out = n_out
    if cfg.distance_head:
        n_out += 1
    class_names = list(cfg.class_names) if cfg.class_names else DEFAULT_CLASS_NAMES.get(
        cfg.output_mode, [f"class {i}" for i in range(n_classes)])
    if len(class_names) != n_classes:
        raise InputError(f"{len(class_names)} class names for {n_classes} classes")

    # ---- threads, seeds
    prev_threads = torch.get_num_threads()
    if cfg.num_threads:
        torch.set_num_threads(int(cfg.num_threads))
    threads_used = torch.get_num_threads()  # recorded in the model file (cfg.num_threads unset: torch's own)

    # ---- model
    if source is not None:
        model_cfg = dict(source["config"]["model"])
        if init is not None and ckpt is None:
            model_cfg["n_classes"] = n_out
        if int(model_cfg.get("in_channels", 1)) != int(train_td.in_channels):
            raise InputError(f"{Path(str(resume or init_model)).name} takes {int(model_cfg.get('in_channels', 1))} "
                             f"channel(s) per pixel, the training images have {int(train_td.in_channels)}: train a new "
                             "model for them, or give images of the model's channels")
    else:
        model_cfg = dict(cfg.model)
        model_cfg.setdefault("preset", cfg.preset)
        model_cfg["in_channels"] = train_td.in_channels
        model_cfg["n_classes"] = n_out
    try:
        model_cfg = resolve_model_config(model_cfg)
        with HeldGlobalRng(cfg.seed).hold():  # its initial weights, whatever else trains in this process
            model = build_model(model_cfg)
    except ValueError as err:
        raise InputError(str(err)) from None
    if int(model_cfg.get("n_classes", n_out)) != n_out:
        head = ""
        if cfg.distance_head and source is not None and not source["config"].get("distance_head"):
            head = (f" with a distance head; {'the run to resume' if ckpt is not None else 'the model'} has none: "
                    "leave the distance head off (the Training dock's box, --distance-head) to continue it as it was, "
                    "or fine-tune from its model (--init-model) to add one")
        raise InputError(f"checkpoint has {model_cfg['n_classes']} outputs but {cfg.output_mode} needs {n_out}{head}")
    if source is not None:
        state = source["state_dict"]
        own = model.state_dict()
        fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        if ckpt is None and len(fitting) < len(own):
            missing = [k for k in own if k not in fitting]
            if any(not k.startswith("head.") for k in missing):
                raise InputError(f"init model does not fit: {len(missing)} tensors differ beyond the output layer")
        if ckpt is None:  # an output layer with fewer channels (a head added): keep the trained ones
            for k, v in state.items():
                if k.startswith("head.") and k in own and k not in fitting and v.shape[1:] == own[k].shape[1:] \
                        and v.shape[0] < own[k].shape[0]:
                    merged = own[k].clone()
                    merged[: v.shape[0]] = v
                    fitting[k] = merged
        model.load_state_dict(fitting, strict=ckpt is not None)
    model.to(device)
    frozen: list = []
    if cfg.freeze_encoder:
        enc = model.encoder_modules() if hasattr(model, "encoder_modules") else []
        for m in enc:
            for p in m.parameters():
                p.requires_grad_(False)
        frozen = enc

    # ---- loss
    loss_name = cfg.loss or default_loss(cfg.output_mode)
    class_weights = None
    if isinstance(cfg.class_weights, (list, tuple)):
        class_weights = [float(v) for v in cfg.class_weights]
        # given to a loss that does not use them, they were recorded as used; of another length, torch's traceback
        if loss_name.lower() in ("bce", "ce", "dice") or (loss_name.lower() == "focal" and n_class_out == 1):
            raise InputError(f"loss {loss_name} takes no class weights: use weighted_ce, ce_dice / bce_dice or (with "
                             "more than one output class) focal, or leave the class weights out")
        classes = max(n_class_out, 2)  # a binary network's one output: background and foreground weighed
        if len(class_weights) != classes or not all(np.isfinite(class_weights)) or min(class_weights) < 0:
            raise InputError(f"{len(class_weights)} class weights {class_weights} for {classes} classes: give "
                             f"{classes} finite weights >= 0")
    if loss_name.lower() == "focal" and not (np.isfinite(cfg.focal_gamma) and cfg.focal_gamma >= 0):
        raise InputError(f"focal gamma must be a number >= 0, got {cfg.focal_gamma}")
    elif cfg.class_weights in ("auto", "sqrt") and loss_name == "weighted_ce":
        from .losses import class_weights_from_frequencies

        power = 0.5 if cfg.class_weights == "sqrt" else 1.0
        class_weights = class_weights_from_frequencies(train_td.class_frequencies(), power=power)
    from .losses import make_loss

    try:
        loss_fn = make_loss(loss_name, class_weights=class_weights, gamma=cfg.focal_gamma, alpha=cfg.focal_alpha)
    except ValueError as err:
        raise InputError(str(err)) from None
    if cfg.distance_head:
        from .losses import with_distance_head

        loss_fn = with_distance_head(loss_fn, n_class_out, float(cfg.distance_weight))
    if cfg.touching_weight > 0:
        from .losses import with_touching_weight

        loss_fn = with_touching_weight(loss_fn, n_class_out, float(cfg.touching_weight),
                                       float(cfg.distance_weight) if cfg.distance_head else None)

    # ---- optimiser, scheduler, AMP
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = _make_optimizer(cfg.optimizer, params, cfg.lr, cfg.weight_decay)
    higher_better = cfg.monitor == "val_dice"
    scheduler = None
    if cfg.lr_schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, int(cfg.epochs)), eta_min=cfg.min_lr)
    elif cfg.reduce_lr_patience is not None and cfg.lr_schedule != "constant":
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max" if higher_better else "min", factor=cfg.reduce_lr_factor,
            patience=int(cfg.reduce_lr_patience), min_lr=cfg.min_lr)
    from ..device import cpu_has_native_bf16, cuda_has_native_bf16

    amp_device = "cuda" if device.startswith("cuda") else "cpu" if device == "cpu" and cpu_has_native_bf16() else None
    use_amp = bool(cfg.amp) and amp_device is not None
    amp_dtype = None
    scaler = None
    if use_amp and amp_device == "cuda":
        # float16 with loss scaling where bfloat16 would be emulated (GPUs before compute capability 8)
        amp_dtype = torch.bfloat16 if cuda_has_native_bf16(device) else torch.float16
        if amp_dtype == torch.float16:
            scaler = torch.amp.GradScaler("cuda")
        torch.backends.cudnn.benchmark = True
    elif use_amp:
        amp_dtype = torch.bfloat16  # no loss scaling needed: bfloat16 keeps float32's exponent range

    def autocast():
        if use_amp:
            return torch.autocast(device_type=amp_device, dtype=amp_dtype)
        return contextlib.nullcontext()

    start_epoch = 1
    history: list[dict] = []
    best_value = None
    best_epoch = None
    bad_epochs = 0
    if ckpt is not None:
        optimizer.load_state_dict(ckpt["optimizer_state"])
        tstate = json.loads(ckpt.get("trainer_state_json", "{}"))
        start_epoch = int(tstate.get("epoch", 0)) + 1
        if start_epoch > int(cfg.epochs):  # nothing would train, yet the files would be written again
            raise InputError(f"the run to resume has done {start_epoch - 1} epoch(s), as many as asked ({cfg.epochs}): "
                             "ask for more epochs to continue it")
        if isinstance(scheduler, torch.optim.lr_scheduler.CosineAnnealingLR):
            # the cosine's place follows from the epochs done; resumed up to another epoch count (or after a
            # plateau run) it is stretched over the new one from there
            scheduler.last_epoch = start_epoch - 1
            for group in optimizer.param_groups:
                group["lr"] = cosine_lr(cfg.lr, cfg.min_lr, cfg.epochs, start_epoch - 1)
        elif scheduler is not None and ckpt.get("scheduler_state"):
            scheduler.load_state_dict(ckpt["scheduler_state"])
        history = list(tstate.get("history", []))
        changed = _measure_changed_on_resume(ckpt, cfg)
        if resumes_own_run and not changed:  # otherwise out_path is a new file: its first epoch is its best so far
            best_value = tstate.get("best_value")
            best_epoch = tstate.get("best_epoch")
            bad_epochs = int(tstate.get("bad_epochs", 0))
        elif resumes_own_run:
            # the earlier epochs' validation measure is another one (another loss, other validation tiles): its
            # best (focal loss 0.027) kept every bce_dice epoch (0.68) from counting as better, and the resumed
            # training was thrown away as "no improvement"; the best epoch is chosen anew among the resumed ones
            warnings.warn(MicrosegWarning(
                f"resumed with another {', '.join(changed)} than the run's: its earlier epochs' "
                f"{cfg.monitor.replace('_', ' ')} does not compare with the new one's, so the best epoch is chosen "
                "anew among the resumed epochs (the history keeps both)"), stacklevel=2)
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                scheduler.best = scheduler.mode_worse  # its plateau is measured anew too
                scheduler.num_bad_epochs = 0
        if scaler is not None and ckpt.get("scaler_state"):
            scaler.load_state_dict(ckpt["scaler_state"])

    # ---- samplers
    sampler = PatchSampler(train_td, cfg.patch_size, foreground_bias=cfg.foreground_bias, seed=cfg.seed,
                           image_sampling=cfg.image_sampling)
    val_x = val_y = None
    if val_td is not None:
        val_x, val_y = tile_for_validation(val_td, cfg.patch_size, max_tiles=cfg.val_max_tiles, seed=cfg.split_seed)
    steps_per_epoch = max(1, math.ceil(cfg.patches_per_epoch / cfg.batch_size))
    n_val_batches = 0 if val_x is None else math.ceil(len(val_x) / cfg.batch_size)
    n_epochs = int(cfg.epochs)
    total = max(0, n_epochs - start_epoch + 1) * steps_per_epoch
    done = 0
    first_step_loss = None  # this run's loss at its first step, before any update: the blow-up reference

    train_desc = (cfg.data_description or train_td.description) + split_note(train_td, val_td if held_out else None)
    levels = {}  # the training images' peak levels, to warn when an input arrives on another intensity scale
    if normalization["kind"] in SCALE_KEEPING:
        from .normalize import input_range

        levels = input_range(item.image[0] for item in train_td.items)
    object_size = None
    if cfg.output_mode in ("binary", "three_class"):  # nucleus sizes it learns, for rescaling at other magnifications
        from ..inference.scale import foreground_diameter, object_size_of

        if ckpt is not None and ckpt["config"].get("object_size"):  # a resumed run keeps what it recorded
            object_size = ckpt["config"]["object_size"]
        else:
            diameters = []
            for index, item in enumerate(train_td.items):  # (0.2 s a 1024^2 frame: said, and Stop acts here)
                if index % 10 == 0:
                    yield preparing(f"measuring the objects' sizes: image {index + 1}/{len(train_td.items)}")
                if stop_event is not None and stop_event.is_set():
                    if cfg.num_threads:
                        torch.set_num_threads(prev_threads)
                    return stopped_before_training()
                diameters.append(foreground_diameter(item.target > 0))
            object_size = object_size_of(diameters)
            base_size = (init or {}).get("config", {}).get("object_size")
            if base_size and object_size:  # a fine-tune still knows the widths its base model knew
                object_size = {"diameter": float(base_size["diameter"]),
                               "range": [min(float(base_size["range"][0]), object_size["range"][0]),
                                         max(float(base_size["range"][1]), object_size["range"][1])],
                               "measured_on": f"{object_size['measured_on']}, joined with the base model's range"}
    val_desc = "none" if val_td is None else f"{len(val_td)} image(s) / {len(val_x)} tiles"
    if held_out and val_td is not None and any(it.group is not None for it in every.items):
        val_desc += " (tiles of a field that overlap kept on one side of the split)"
    # the watershed / post-processing settings tuned for the base (or resumed) model go on with its weights:
    # a fine-tune on a few corrected frames lost them (AP@0.5 0.860 with the defaults, 0.877 with them)
    inherited_postprocess = None
    source_postprocess = (source or {}).get("config", {}).get("postprocess")
    if ckpt is not None and not source_postprocess:  # tuned into the run's model file after its checkpoint was written
        source_postprocess = _model_beside(resume).get("postprocess")
    if source is not None and source["config"].get("output_mode") == cfg.output_mode and source_postprocess:
        inherited_postprocess = {k: v for k, v in source_postprocess.items() if not k.startswith("tuned_ap")}
        inherited_postprocess.setdefault("inherited_from", Path(str(resume or init_model)).name)
    # a resumed fine-tune goes on recording the model it started from
    base_model = str(init_model) if init_model else ((ckpt or {}).get("config", {}).get("training") or {}).get("init_model")

    def file_config(complete: bool, metrics: dict) -> dict:
        return {
            "model": model_cfg,
            "output_mode": cfg.output_mode,
            "distance_head": bool(cfg.distance_head),
            "n_classes": n_classes,
            "class_names": class_names,
            "normalization": normalization,
            "patch_size": [int(cfg.patch_size), int(cfg.patch_size)],
            **({"object_size": object_size} if object_size else {}),
            **({"input_range": levels} if levels else {}),
            **({"postprocess": inherited_postprocess} if inherited_postprocess else {}),
            "training": {
                "complete": complete,
                "config": cfg.to_dict(),
                "loss": loss_name,
                "class_weights": class_weights,
                "data": train_desc,
                "validation": val_desc,
                "validation_images": [] if val_td is None else [it.name for it in val_td.items],
                # (records written before these counts: "data" counted the validation images among the trained ones)
                "n_training_images": len(train_td),
                "n_validation_images": 0 if val_td is None else len(val_td),
                "validation_digests": validation_digests,
                "epochs_run": history[-1]["epoch"] if history else 0,
                "best_epoch": best_epoch,
                "seed": cfg.seed,
                "device": device,
                "cpu_threads": threads_used,
                "amp": str(amp_dtype).replace("torch.", "") if use_amp else None,
                "init_model": base_model,
                "resumed_from": str(resume) if resume else None,
                "metrics": metrics,
                "history": history,
                "versions": _versions(),
                "saved": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
        }

    def record_whole_run(stop_reason: str) -> None:
        """Rewrite the kept (best-epoch) file's ``training`` entry for the run as it ended: it was
        written at its best epoch, so it listed only the epochs up to then (weights unchanged)."""
        best_row = next((dict(h) for h in history if h["epoch"] == best_epoch), {})
        update_model_config(out_path, training={**file_config(True, best_row)["training"], "stop_reason": stop_reason})

    def write_last(epoch: int) -> None:
        tstate = {"epoch": epoch, "history": history, "best_value": best_value, "best_epoch": best_epoch,
                  "bad_epochs": bad_epochs}
        extra = {"optimizer_state": optimizer.state_dict(), "trainer_state_json": json.dumps(tstate)}
        if scheduler is not None:
            extra["scheduler_state"] = scheduler.state_dict()
        if scaler is not None:
            extra["scaler_state"] = scaler.state_dict()
        save_model(last_path, model, file_config(False, history[-1] if history else {}), extra=extra)

    def set_train_mode() -> None:
        model.train()
        for m in frozen:
            m.eval()

    def validate():
        model.eval()
        tot_loss, n = 0.0, 0
        inter = sp = st = None
        for i in range(n_val_batches):
            # grad mode is switched off per batch only, never across a yield (the consumer's
            # code runs while this generator is suspended)
            with torch.no_grad():
                xb = torch.from_numpy(val_x[i * cfg.batch_size:(i + 1) * cfg.batch_size]).to(device)
                yb = torch.from_numpy(val_y[i * cfg.batch_size:(i + 1) * cfg.batch_size]).to(device)
                with autocast():
                    logits = model(xb)
                logits = logits.float()
                w = int((yb >= 0).sum())
                tot_loss += float(loss_fn(logits, yb)) * w
                n += w
                if cfg.output_mode == "three_class":
                    fg_logit = torch.logsumexp(logits[:, 1:n_class_out], 1, keepdim=True) - logits[:, :1]
                    yfg = torch.where(yb > 0, torch.ones_like(yb), yb)
                    c = _dice_counts(fg_logit, yfg, 1)
                else:
                    c = _dice_counts(logits, yb, n_out)
            inter, sp, st = c if inter is None else (inter + c[0], sp + c[1], st + c[2])
            yield i + 1
        vloss = tot_loss / max(n, 1)
        vdice = _foreground_dice(inter, sp, st, "binary" if cfg.output_mode == "three_class" else cfg.output_mode)
        return vloss, vdice

    stop_reason = "completed"
    saved_any = out_path.is_file() and ckpt is not None and resumes_own_run
    epochs_before = len(history)  # a resumed run stopped before its first epoch ended keeps the kept model's record:
    # rewritten, it named the new settings (--loss, --patches-per-epoch) beside the earlier run's weights

    def ran_an_epoch() -> bool:
        return len(history) > epochs_before
    epoch = start_epoch - 1
    lr = optimizer.param_groups[0]["lr"]
    t_epoch = time.perf_counter()
    gen_torch = torch.Generator().manual_seed(cfg.seed)
    global_rng = HeldGlobalRng(cfg.seed, device)  # dropout (and kornia) draw from torch's global generator
    try:
        for epoch in range(start_epoch, n_epochs + 1):
            # per-epoch seeding: a resumed run draws the same patches as an uninterrupted one
            rng = np.random.default_rng([cfg.seed, epoch])
            gen_torch.manual_seed(cfg.seed * 100003 + epoch)
            global_rng.reseed(cfg.seed * 100003 + epoch)
            set_train_mode()
            t_epoch = time.perf_counter()
            run_loss, run_n = 0.0, 0
            lr = optimizer.param_groups[0]["lr"]
            for step in range(1, steps_per_epoch + 1):
                if stop_event is not None and stop_event.is_set():
                    stop_reason = "stopped"
                    break
                bs = min(cfg.batch_size, cfg.patches_per_epoch - (step - 1) * cfg.batch_size)
                xb_np, yb_np = sampler.sample(max(1, bs), rng)
                xb = torch.from_numpy(xb_np).to(device, non_blocking=True)
                yb = torch.from_numpy(yb_np).to(device, non_blocking=True)
                if cfg.augment:
                    xb, yb = augment_batch(xb, yb, aug_cfg, generator=gen_torch)
                optimizer.zero_grad(set_to_none=True)
                with global_rng.hold(), autocast():
                    logits = model(xb)
                loss = loss_fn(logits.float(), yb)
                if not torch.isfinite(loss):
                    value = float(loss.detach())
                    if done == 0 and ckpt is None:  # no weight was updated yet: the learning rate is not the cause
                        cause = ("the starting model or the images' values" if init is not None
                                 else "the images' values")
                        raise InputError(f"the loss is {value} at the first step, before any training: {cause} overflow "
                                         "the network's float32 arithmetic (check the starting model, the images' range "
                                         "and the normalisation)")
                    raise TrainingDiverged(f"training diverged (loss is {value}) at epoch {epoch}; lower the learning rate")
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    loss.backward()
                    optimizer.step()
                if first_step_loss is None and float(loss.detach()) > 0:  # (a batch of no annotated pixel: 0)
                    first_step_loss = float(loss.detach())
                    if init is None and ckpt is None:  # a fresh network: its loss is that of guessing
                        first_step_loss = max(first_step_loss, FRESH_LOSS_FLOOR)
                run_loss += float(loss.detach()) * xb.shape[0]
                run_n += xb.shape[0]
                done += 1
                yield TrainEvent(epoch, n_epochs, step, steps_per_epoch, run_loss / run_n, None, None, lr,
                                 time.perf_counter() - t_epoch, device, done, total,
                                 f"epoch {epoch}/{n_epochs} loss {run_loss / run_n:.4f}", "step")
            if stop_reason == "stopped":
                break
            train_loss = run_loss / max(run_n, 1)
            if first_step_loss is not None and train_loss > BLOW_UP_FACTOR * max(first_step_loss, BLOW_UP_FLOOR):
                raise TrainingDiverged(f"training diverged: the training loss rose from {first_step_loss:.3g} at the start "
                                 f"to {train_loss:.3g} over epoch {epoch}; lower the learning rate (the best "
                                 "model so far, if any, is kept)")
            val_loss = val_dice = None
            if val_x is not None:
                vgen = validate()
                while True:
                    try:
                        i = next(vgen)
                    except StopIteration as fin:
                        val_loss, val_dice = fin.value
                        break
                    yield TrainEvent(epoch, n_epochs, steps_per_epoch, steps_per_epoch, train_loss, None, None, lr,
                                     time.perf_counter() - t_epoch, device, done, total,
                                     f"epoch {epoch}/{n_epochs} validating {i}/{n_val_batches}", "validate")
                    if stop_event is not None and stop_event.is_set():
                        stop_reason = "stopped"
                        break
                if stop_reason == "stopped":
                    break
            if val_x is None and run_n:  # no validation ran the network as it is saved (evaluation mode): its
                # batch norm then uses running statistics, under which large weights overflowed to an all-NaN
                # output while the training loss stayed finite (a --lr 1e3 typo "completed" a model finding nothing)
                model.eval()
                with torch.no_grad(), autocast():
                    finite = bool(torch.isfinite(model(xb).float()).all())
                set_train_mode()
                if not finite:
                    raise TrainingDiverged(f"training diverged: the network's output is not finite at epoch {epoch}; lower "
                                     "the learning rate (the best model so far, if any, is kept)")
            monitored = {"val_loss": val_loss, "val_dice": val_dice}[cfg.monitor]
            if monitored is None:  # no validation data: monitor training loss
                monitored = train_loss if not higher_better else -train_loss
            seconds = time.perf_counter() - t_epoch
            row = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "val_dice": val_dice,
                   "lr": lr, "seconds": seconds}
            history.append(row)
            if not math.isfinite(monitored):  # a network that outputs NaN is no model: never saved as the best one
                raise TrainingDiverged(f"training diverged: the monitored loss is {monitored} at epoch {epoch}; lower the "
                                 "learning rate (the best model so far, if any, is kept)")
            improved = best_value is None or (monitored > best_value if higher_better else monitored < best_value)
            if improved:
                kept = (best_value, best_epoch, bad_epochs)
                best_value, best_epoch, bad_epochs = float(monitored), epoch, 0
                try:
                    save_model(out_path, model, file_config(True, dict(row)))
                except BaseException:  # (a full disk): the file keeps the earlier best epoch, and its record says so
                    best_value, best_epoch, bad_epochs = kept
                    raise
                saved_any = True
            else:
                bad_epochs += 1
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                scheduler.step(monitored)
            elif scheduler is not None:
                scheduler.step()
            write_last(epoch)
            msg = (f"epoch {epoch}/{n_epochs} loss {train_loss:.4f}"
                   + (f" val_loss {val_loss:.4f} val_dice {val_dice:.3f}" if val_loss is not None else "")
                   + (" *" if improved else ""))
            yield TrainEvent(epoch, n_epochs, steps_per_epoch, steps_per_epoch, train_loss, val_loss, val_dice, lr,
                             seconds, device, done, total, msg, "epoch", improved)
            if cfg.early_stopping_patience is not None and bad_epochs >= int(cfg.early_stopping_patience):
                stop_reason = "early_stopping"
                break
    except (GeneratorExit, KeyboardInterrupt):  # closed (Stop), or Ctrl-C / SIGTERM while a step ran in here
        stop_reason = "stopped"
        if saved_any and ran_an_epoch():  # before an epoch finished nothing is written: an untrained network is
            record_whole_run(stop_reason)  # no model, and with --overwrite it would replace the earlier run's one
        raise
    except TrainingDiverged:  # the model kept (its best epoch) says how the run ended; any other error (a
        if saved_any and ran_an_epoch():  # write-protected .last.pt, a full disk) is a crash, below
            record_whole_run("diverged")
        raise
    except Exception as err:  # out of memory, a full disk, a failing reader ...: the kept model (its best epoch)
        # says how the run ended and lists every epoch run (its file was written at its best epoch: it had no
        # stop_reason and lacked the later epochs); its weights and the .last.pt checkpoint stay as they are
        if saved_any and ran_an_epoch():
            with contextlib.suppress(Exception):  # (the disk that failed may refuse this too: the error is said)
                record_whole_run(crash_reason(err))
        raise
    finally:
        if cfg.num_threads:
            torch.set_num_threads(prev_threads)
    if saved_any and ran_an_epoch():
        record_whole_run(stop_reason)
    epochs_run = history[-1]["epoch"] if history else 0
    return TrainResult(str(out_path) if saved_any else None, str(last_path) if last_path.is_file() else None,
                       best_epoch, best_value, epochs_run, stop_reason, history, device, file_config(True, {}))
