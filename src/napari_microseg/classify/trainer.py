"""Training of classifiers as a generator of progress events ([R], [T], [P]).

Same conventions as the segmentation trainer (:mod:`napari_microseg.training.trainer`):
:func:`train_classifier` yields :class:`ClassifierEvent` after every optimisation step
and every validation batch (``done`` / ``total`` count steps over the run), returns a
:class:`ClassifierTrainResult`, stops within one step when ``generator.close()`` is
called (napari ``thread_worker.quit()``) or ``stop_event`` is set, writes the best model
atomically whenever the monitored value improves (``out_path``) and the resumable
last state after every epoch (``out_path + ".last.pt"``).

Also here: :func:`train_with_strategy` (real only / simulated only / pre-train then
fine-tune / pre-train + frozen conv base, METHODS [R]) and :func:`cross_validate`
(k-fold, grouped or stratified).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Generator

import numpy as np

from ..errors import InputError, TrainingDiverged
from ..training.trainer import _make_optimizer, _versions, check_common_settings, check_model_out_path, last_checkpoint_path
from ..training.rng import HeldGlobalRng
from .data import ClassificationData, as_classification_data, class_weights_from_labels, epoch_indices, undersample_majority

__all__ = [
    "ClassifierTrainConfig",
    "ClassifierEvent",
    "ClassifierTrainResult",
    "train_classifier",
    "train_with_strategy",
    "cross_validate",
    "STRATEGIES",
    "split_validation",
]

STRATEGIES = ("real", "simulated", "pretrain_finetune", "pretrain_freeze")
TASKS = ("images", "objects", "profiles")
#: the architecture a task trains when ``ClassifierTrainConfig.model`` names none (as ``microseg classify train``)
DEFAULT_ARCHITECTURES = {"images": "small_cnn", "objects": "lipnet", "profiles": "profile_cnn"}


@dataclass
class ClassifierTrainConfig:
    """Settings of a classifier training run (``to_dict()`` is JSON-able and goes into the model file).

    Attributes
    ----------
    task : ``"images"`` ([R], binary good/bad), ``"objects"`` ([T]) or ``"profiles"`` ([P]).
    model : model config: ``{"architecture": "small_cnn" | "vgg16_like" | "lipnet" |
        "profile_cnn", ...builder keyword arguments}`` (default: the task's, :data:`DEFAULT_ARCHITECTURES`:
        small_cnn for images, lipnet for objects, profile_cnn for profiles); ``input_size`` /
        ``n_views`` / ``data_points`` / ``n_classes`` are filled in from the data.
    output_mode : ``"binary"`` (one sigmoid logit; needs 2 classes, index 1 positive) or
        ``"multiclass"`` (softmax); None: binary for images, multiclass otherwise.
    class_names : names per class (None: from the data).
    normalization : normalisation spec the data were prepared with (stored for inference;
        the trainer itself receives normalised samples).
    crop : how inputs were cut (stored for inference), e.g. ``{"kind": "integration",
        "size": [39, 42]}`` or ``{"kind": "object", "mode": "masked", "margin": 50, "size": [28, 28]}``.
    epochs : last epoch number (300 max in [R]; 200 in [P]).
    batch_size : samples per step ([R] 70-128, [T] 32).
    lr : learning rate ([R] 1e-4..3e-4 with Adam; AdaDelta in [P] uses 1.0).
    optimizer : ``"adam"``, ``"adamw"``, ``"sgd"`` (momentum 0.9, Nesterov) or ``"adadelta"``.
    weight_decay : L2 penalty (0: the study found decay on convs killed filters).
    label_smoothing : label smoothing ([T]; 0 = off).
    class_weights : None, ``"auto"`` (inversely proportional to the class frequencies the loss sees: with
        ``oversample`` each epoch is balanced, so the present classes weigh alike) or a list.
    oversample : oversample minority classes to the majority count each epoch ([T]).
    undersample_fraction : random share of the majority class left out each epoch ([T]: 0.2).
    augment : ``"none"``, ``"hflip"`` ([R]: horizontal flips, p 0.5) or ``"affine"`` ([T]:
        kornia rotation, shear, shift, zoom, flips; settings in ``augmentation``); None: by
        task -- hflip for images, affine for objects, none for profiles (mirroring the views
        of a multi-view particle one by one is not a mirror of the particle).
    augmentation : ``degrees`` (180), ``shear`` (0.2 rad, given to kornia in degrees),
        ``translate`` (0.1), ``scale`` ([0.8, 1.0]), ``flip_p`` (0.5).
    early_stopping_patience : epochs without improvement of ``val_loss`` before stopping
        (30 in [R]; None: never).
    device, seed, num_threads : as in the segmentation trainer.
    freeze_features : with ``init_model``: keep the conv base fixed, train the head only.
    val_fraction : share held out for validation when no ``val_data`` is given (by group
        when the data have groups, stratified by class otherwise); 0: no validation
        (the training loss is monitored).
    data_description : free text stored in the model file.
    """

    task: str = "images"
    model: dict = field(default_factory=dict)
    output_mode: str | None = None
    class_names: list | None = None
    normalization: dict | None = None
    crop: dict = field(default_factory=dict)
    epochs: int = 50
    batch_size: int = 64
    lr: float = 3e-4
    optimizer: str = "adam"
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    class_weights: Any = None
    oversample: bool = False
    undersample_fraction: float = 0.0
    augment: str | None = None
    augmentation: dict = field(default_factory=dict)
    early_stopping_patience: int | None = 30
    device: str = "auto"
    seed: int = 0
    num_threads: int | None = None
    freeze_features: bool = False
    val_fraction: float = 0.2
    data_description: str = ""

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, d: dict) -> "ClassifierTrainConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise InputError(f"unknown training settings: {', '.join(sorted(unknown))}")
        return cls(**d)


@dataclass
class ClassifierEvent:
    """One progress event (``kind``: ``"step"``, ``"validate"``, ``"epoch"``)."""

    epoch: int
    n_epochs: int
    step: int
    n_steps: int
    train_loss: float | None
    val_loss: float | None
    val_accuracy: float | None
    lr: float
    seconds: float
    device: str
    done: int
    total: int
    message: str = ""
    kind: str = "step"
    improved: bool = False
    phase: str = ""


@dataclass
class ClassifierTrainResult:
    """What :func:`train_classifier` returns (``stop_reason``: completed / early_stopping / stopped)."""

    model_path: str | None
    last_path: str | None
    best_epoch: int | None
    best_value: float | None
    epochs_run: int
    stop_reason: str
    history: list
    device: str
    config: dict


def split_validation(data: ClassificationData, fraction: float, seed: int = 0):
    """Hold out ``fraction`` of ``data``: by group when it has groups, else stratified by class."""
    from sklearn.model_selection import GroupShuffleSplit, train_test_split

    n = len(data)
    if fraction <= 0 or n < 4:
        return data, None
    idx = np.arange(n)
    try:
        if data.groups is not None and len(np.unique(data.groups)) >= 2:
            tr, va = next(GroupShuffleSplit(1, test_size=fraction, random_state=seed).split(idx, data.y, data.groups))
        else:
            counts = np.bincount(data.y)
            strat = data.y if counts[counts > 0].min() >= 2 and int(round(fraction * n)) >= (counts > 0).sum() else None
            tr, va = train_test_split(idx, test_size=fraction, random_state=seed, stratify=strat)
    except ValueError as err:  # scikit-learn's: a share that leaves no training sample
        raise InputError(f"validation share {fraction:g} of {n} samples: {err} Give a smaller share or more samples") from None
    if len(tr) == 0 or len(va) == 0:
        raise InputError(f"validation share {fraction:g} of {n} samples leaves no training or no validation sample")
    return data.subset(np.sort(tr)), data.subset(np.sort(va))


def make_augmenter(kind: str, settings: dict | None = None):
    """Return ``f(x: Tensor, generator) -> Tensor`` for the augmentation ``kind``."""
    import torch

    settings = dict(settings or {})
    if kind in (None, "none", False):
        return None
    if kind == "hflip":
        p = float(settings.get("flip_p", 0.5))

        def hflip(x, gen):
            flip = torch.rand(x.shape[0], generator=gen) < p
            if flip.any():
                x = x.clone()
                x[flip] = torch.flip(x[flip], dims=[-1])
            return x

        return hflip
    if kind == "affine":
        import kornia.augmentation as K

        shear_deg = float(np.rad2deg(float(settings.get("shear", 0.2))))
        t = float(settings.get("translate", 0.1))
        scale = tuple(settings.get("scale", (0.8, 1.0)))
        flip_p = float(settings.get("flip_p", 0.5))
        aug = torch.nn.Sequential(
            K.RandomAffine(degrees=float(settings.get("degrees", 180.0)), translate=(t, t), scale=scale,
                           shear=(-shear_deg, shear_deg), p=1.0, padding_mode="zeros"),
            K.RandomHorizontalFlip(p=flip_p), K.RandomVerticalFlip(p=flip_p))

        def affine(x, gen):
            # kornia draws from torch's global generator; seed it from ours for reproducibility
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
            with torch.no_grad():
                return aug(x)

        return affine
    raise InputError(f"unknown augmentation {kind!r}: use none, hflip or affine")


def _load_weights_lenient(model, state: dict, skip: tuple[str, ...] = ()) -> list[str]:
    """Load matching tensors except ``skip``; return names left as initialised (shape differs, or skipped)."""
    own = model.state_dict()
    keep = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape and k not in skip}
    model.load_state_dict(keep, strict=False)
    return sorted(k for k in own if k not in keep)


def _check_samples_fit(model: Any, data: Any, source_name: str) -> None:
    """InputError, before any training, when the samples' shape does not fit the network taken from a
    model file (other views, points or crop size than it was built for)."""
    import torch

    probe = torch.from_numpy(np.ascontiguousarray(data.x[:1], dtype=np.float32))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(probe)
    except (RuntimeError, ValueError) as err:
        raise InputError(f"the samples, each of shape {tuple(data.x.shape[1:])}, do not fit the network of {source_name} "
                         f"({str(err).splitlines()[0]}): make them as for that model (views, points, crop size) or "
                         "train without it") from None
    finally:
        model.train(was_training)


def _one_view_profiles(data: ClassificationData | None, task: str) -> ClassificationData | None:
    """Profiles given as (N, points) (one view each, as ``classify_profiles`` takes them) as (N, 1, points)."""
    if data is None or task != "profiles" or np.ndim(data.x) != 2:
        return data
    return replace(data, x=np.asarray(data.x)[:, None, :])


def train_classifier(
    config: ClassifierTrainConfig | dict,
    data: Any,
    val_data: Any = None,
    out_path: str | os.PathLike = "classifier.pt",
    resume: str | os.PathLike | None = None,
    init_model: str | os.PathLike | None = None,
    stop_event: threading.Event | None = None,
) -> Generator[ClassifierEvent, None, ClassifierTrainResult]:
    """Train a classifier; a generator of :class:`ClassifierEvent` returning a :class:`ClassifierTrainResult`.

    Parameters
    ----------
    config : :class:`ClassifierTrainConfig` or its dict form.
    data : :class:`~napari_microseg.classify.data.ClassificationData` (or ``(x, y)``): samples
        already cropped and normalised, ``x`` (N, 1, H, W) or (N, views, points) float32.
    val_data : validation samples in the same forms; None: ``config.val_fraction`` of ``data``
        is held out (by group / stratified).
    out_path : best model file; the resumable last state goes to ``out_path + ".last.pt"``.
    resume : a ``.last.pt`` checkpoint (or a model path next to one) to continue.
    init_model : a classifier model file to fine-tune from (architecture, normalisation and
        crop settings are taken from it; a head with another class count is re-initialised).
    stop_event : ``threading.Event``; when set, training stops after the current step.

    Notes
    -----
    Stopping keeps the best model file. If stopped before the first epoch finished (as
    :func:`napari_microseg.training.trainer.train`) nothing is saved (an untrained network is no
    model, and a file already at ``out_path`` stays as it is); the result's ``model_path`` is None.
    """
    import torch

    from ..device import resolve_device
    from ..io.models import read_model_file, save_model, update_model_config
    from ..models import resolve_model_config
    from ..models.registry import build_model
    from . import _register_architectures

    _register_architectures()
    cfg = config if isinstance(config, ClassifierTrainConfig) else ClassifierTrainConfig.from_dict(dict(config))
    if cfg.task not in TASKS:
        raise InputError(f"unknown task {cfg.task!r}: use {', '.join(TASKS)}")
    check_common_settings(cfg, {"epochs": 1, "batch_size": 1})
    try:
        device = resolve_device(cfg.device)
    except ValueError as err:
        raise InputError(str(err)) from None
    out_path = check_model_out_path(out_path)
    last_path = last_checkpoint_path(out_path)

    ckpt = None
    resumes_own_run = False  # the checkpoint is out_path's own: out_path holds that run's best model
    if resume is not None:
        rp = Path(resume)
        resumes_own_run = rp.resolve() in (out_path.resolve(), last_path.resolve())
        for cand in (rp, last_checkpoint_path(rp)):
            if cand.is_file():
                c = read_model_file(cand)
                if "optimizer_state" in c:
                    ckpt = c
                    break
        if ckpt is None:
            raise InputError(f"cannot resume from {rp}: no checkpoint with optimiser state found")
    init = read_model_file(init_model) if init_model is not None else None
    source = ckpt or init
    for name, found, given in (("--resume", ckpt, resume), ("--init-model", init, init_model)):
        kind = None if found is None else found["config"].get("task")
        if found is not None and kind != cfg.task:
            what = f"a classifier of {kind}" if kind else "not a classifier (a segmentation model?)"
            raise InputError(f"{name} {given}: {what}; this run trains a classifier of {cfg.task}")

    data = _one_view_profiles(as_classification_data(data, cfg.class_names), cfg.task)
    if data is None or len(data) == 0:
        raise InputError("no training samples")
    val = _one_view_profiles(as_classification_data(val_data, data.class_names), cfg.task)
    for samples, name in ((data, "training"), (val, "validation")):
        expected = (3,) if cfg.task == "profiles" else (4,)
        if samples is not None and samples.x.ndim not in expected:
            shape = "(N, views, points) or (N, points)" if cfg.task == "profiles" else "(N, channels, height, width)"
            raise InputError(f"{name} samples of shape {samples.x.shape}: a classifier of {cfg.task} takes {shape}")
    n_samples = len(data)  # before the validation split: a resumed run must split the same samples alike
    if val is None:
        data, val = split_validation(data, cfg.val_fraction, cfg.seed)
    class_names = list(cfg.class_names or data.class_names)
    n_classes = len(class_names)
    resumed_classes = list(ckpt["config"].get("class_names") or []) if ckpt is not None else []
    if resumed_classes and [str(c) for c in resumed_classes] != [str(c) for c in class_names]:
        raise InputError(f"--resume {resume}: its run classifies {', '.join(map(str, resumed_classes))}; this data "
                         f"has the classes {', '.join(map(str, class_names))}. A run resumes on its own task; to start "
                         "from its network on another, give it as --init-model (its output layer starts afresh)")
    if ckpt is not None:  # the same samples, and the same validation split of them (split by the seed)
        before = ckpt["config"].get("training") or {}
        recorded, now = before.get("simulation"), data.meta.get("simulation")
        if recorded and now and recorded != now:
            raise InputError(f"--resume {resume}: its run trained on simulated {recorded.get('domain')} samples of seed "
                             f"{recorded.get('seed')} {recorded.get('settings')}; this run's are seed {now.get('seed')} "
                             f"{now.get('settings')}: its epochs would go on on other samples, validated on others. Give "
                             "the resumed run's --seed and sample options (or leave --seed out), or train anew")
        # another number of samples (--simulated N) or validation share splits them otherwise: samples the
        # run trained on would be validated on (4 of 12 validation images had been trained on), its best
        # epoch and thresholds chosen on them
        n_before = before.get("n_samples")
        if n_before is not None and int(n_before) != n_samples:
            raise InputError(f"--resume {resume}: its run trained on {n_before} samples, this one has {n_samples}: "
                             "its validation split would hold samples it trained on. Give the resumed run's number "
                             "of samples (--simulated), or train anew")
        share_before = (before.get("config") or {}).get("val_fraction")
        if share_before is not None and val_data is None and float(share_before) != float(cfg.val_fraction):
            raise InputError(f"--resume {resume}: its run held out {share_before:g} of its samples for validation, "
                             f"this one {cfg.val_fraction:g}: give --val-fraction {share_before:g} (or leave it out)")
        seed_before = (before.get("config") or {}).get("seed")
        if seed_before is not None and val_data is None and int(seed_before) != int(cfg.seed):
            raise InputError(f"--resume {resume}: its run split its validation samples with seed {seed_before}, this "
                             f"one with {cfg.seed}: give --seed {seed_before} (or leave --seed out)")
    output_mode = cfg.output_mode or ("binary" if cfg.task == "images" else "multiclass")
    if output_mode == "binary" and n_classes != 2:
        raise InputError(f"binary output needs 2 classes, got {n_classes}")
    n_out = 1 if output_mode == "binary" else n_classes
    # settings to reapply at inference: the config's, else the data's, else the source model's
    normalization = cfg.normalization if cfg.normalization is not None else data.meta.get("normalization")
    if normalization is None and source is not None:
        normalization = source["config"].get("normalization")
    crop = dict(cfg.crop) or dict(data.meta.get("crop") or {}) or (dict(source["config"].get("crop") or {}) if source else {})

    prev_threads = torch.get_num_threads()
    if cfg.num_threads:
        torch.set_num_threads(int(cfg.num_threads))
    threads_used = torch.get_num_threads()  # recorded in the model file (cfg.num_threads unset: torch's own)

    # ---- model
    if source is not None:
        model_cfg = dict(source["config"]["model"])
        if ckpt is None:
            model_cfg["n_classes"] = n_out
        # the record names the network trained (the source's), not one asked for and not built
        cfg = replace(cfg, model={k: v for k, v in model_cfg.items() if k != "n_classes"})
    else:
        model_cfg = dict(cfg.model or {})
        arch = str(model_cfg.get("architecture") or DEFAULT_ARCHITECTURES.get(cfg.task, "small_cnn")).lower()
        model_cfg["architecture"] = arch
        model_cfg["n_classes"] = n_out
        if arch == "profile_cnn":
            model_cfg.setdefault("n_views", int(data.x.shape[1]))
            model_cfg.setdefault("data_points", int(data.x.shape[2]))
        else:
            model_cfg.setdefault("input_size", [int(data.x.shape[-2]), int(data.x.shape[-1])])
            model_cfg.setdefault("in_channels", int(data.x.shape[1]))
    try:
        model_cfg = resolve_model_config(model_cfg)
        with HeldGlobalRng(cfg.seed).hold():  # its initial weights, whatever else trains in this process
            model = build_model(model_cfg)
    except (ValueError, TypeError) as err:
        raise InputError(f"cannot build the classifier: {err}") from None
    reinit: list[str] = []
    if ckpt is not None:
        model.load_state_dict(ckpt["state_dict"])
    elif init is not None:
        # an output layer trained for other classes (an encapsulation model fine-tuned for lamellarity)
        # starts afresh: its outputs would otherwise carry the other classes' meaning into the new ones
        init_classes = list(init["config"].get("class_names") or [])
        own = model.state_dict()
        output_layer = tuple(k for k in list(own)[-2:] if own[k].ndim and own[k].shape[0] == n_out)
        other_classes = bool(init_classes) and init_classes != class_names
        reinit = _load_weights_lenient(model, init["state_dict"], skip=output_layer if other_classes else ())
    if source is not None:  # its network, built for its own samples: do these fit it?
        _check_samples_fit(model, data, "--resume" if ckpt is not None else "--init-model")
    model.to(device)
    frozen = []
    if cfg.freeze_features:
        if init is None and ckpt is None:
            raise InputError("freezing the conv base needs a pre-trained model (init_model)")
        for p in model.features.parameters():
            p.requires_grad_(False)
        frozen = [model.features]
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = _make_optimizer(cfg.optimizer, params, cfg.lr, cfg.weight_decay)

    # ---- loss
    if cfg.class_weights is None:
        weights = None
    elif cfg.class_weights == "auto":
        # inversely to the frequencies the loss sees: an oversampled epoch is balanced already (weights
        # from the raw counts on top of it counted a rare class twice: 6.5x the majority for 13/5/2 samples)
        # from raw counts; an undersampled majority (a share dropped each epoch) counts as the loss sees it:
        # weighted on the raw count, its total weight came out 0.8x the other classes'
        if cfg.oversample:
            seen = np.flatnonzero(np.bincount(data.y, minlength=n_classes))
        else:
            seen = data.y[undersample_majority(data.y, cfg.undersample_fraction, 0)] \
                if cfg.undersample_fraction > 0 else data.y
        weights = class_weights_from_labels(seen, n_classes)
    else:
        weights = [float(w) for w in cfg.class_weights]
        if len(weights) != n_classes:
            raise InputError(f"{len(weights)} class weights for {n_classes} classes")
    w_t = None if weights is None else torch.tensor(weights, dtype=torch.float32, device=device)
    ls = float(cfg.label_smoothing)

    def loss_fn(logits, yb, reduce_weights=True):
        if output_mode == "binary":
            target = yb.float() * (1 - ls) + 0.5 * ls
            per = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, 0], target, reduction="none")
            if w_t is not None and reduce_weights:
                sw = w_t[yb]
                return (per * sw).sum() / sw.sum()
            return per.mean()
        return torch.nn.functional.cross_entropy(logits, yb, weight=w_t if reduce_weights else None, label_smoothing=ls)

    augment = cfg.augment if cfg.augment is not None else {"images": "hflip", "objects": "affine", "profiles": "none"}[cfg.task]
    augmenter = make_augmenter(augment, cfg.augmentation)

    start_epoch = 1
    history: list[dict] = []
    best_value = None
    best_epoch = None
    bad_epochs = 0
    if ckpt is not None:
        optimizer.load_state_dict(ckpt["optimizer_state"])
        tstate = json.loads(ckpt.get("trainer_state_json", "{}"))
        start_epoch = int(tstate.get("epoch", 0)) + 1
        if start_epoch > int(cfg.epochs):  # nothing would train, and no model would be written
            raise InputError(f"the run to resume has done {start_epoch - 1} epoch(s), as many as asked ({cfg.epochs}): "
                             "ask for more epochs to continue it")
        history = list(tstate.get("history", []))
        if resumes_own_run:  # otherwise out_path is a new file: its first epoch is its best so far
            best_value = tstate.get("best_value")
            best_epoch = tstate.get("best_epoch")
            bad_epochs = int(tstate.get("bad_epochs", 0))

    # ---- sizes
    counts = np.bincount(data.y, minlength=n_classes)
    missing = [str(class_names[i]) for i in np.flatnonzero(counts[:n_classes] == 0)]
    if missing and ckpt is None:
        import warnings

        from ..errors import MicrosegWarning

        warnings.warn(f"no training sample of class {', '.join(repr(name) for name in missing)} (class counts "
                      f"{', '.join(f'{name} {int(c)}' for name, c in zip(class_names, counts))}): it will not learn "
                      f"to recognise {'it' if len(missing) == 1 else 'them'}: add samples", MicrosegWarning, stacklevel=2)
    n_epoch = len(epoch_indices(data.y, np.random.default_rng(0), cfg.oversample, cfg.undersample_fraction))
    bs = int(cfg.batch_size)
    steps_per_epoch = max(1, math.ceil(n_epoch / bs))
    n_val_batches = 0 if val is None else math.ceil(len(val) / bs)
    n_epochs = int(cfg.epochs)
    total = max(0, n_epochs - start_epoch + 1) * steps_per_epoch
    done = 0
    input_size = list(data.x.shape[1:])
    train_desc = cfg.data_description or data.description or f"{len(data)} samples"
    val_desc = "none" if val is None else (val.description or f"{len(val)} samples")

    def file_config(complete: bool, metrics: dict) -> dict:
        return {
            "model": model_cfg,
            "task": cfg.task,
            "output_mode": output_mode,
            "n_classes": n_classes,
            "class_names": class_names,
            "positive_class": class_names[1] if output_mode == "binary" else None,
            "normalization": normalization,
            "crop": crop,
            "input_shape": input_size,
            "patch_size": input_size[-2:] if cfg.task != "profiles" else None,
            "threshold": 0.5,
            "training": {
                "complete": complete,
                "config": cfg.to_dict(),
                "class_weights": weights,
                "augment": augment,
                "class_counts": [int(c) for c in counts],
                "n_samples": n_samples,  # before the validation split (a resume checks it)
                "data": train_desc,
                "validation": val_desc,
                **({"simulation": data.meta["simulation"]} if data.meta.get("simulation") else {}),
                "epochs_run": history[-1]["epoch"] if history else 0,
                "best_epoch": best_epoch,
                "seed": cfg.seed,
                "device": device,
                "cpu_threads": threads_used,
                "init_model": str(init_model) if init_model else None,
                "reinitialised": reinit,
                "frozen_features": bool(frozen),
                "resumed_from": str(resume) if resume else None,
                "metrics": metrics,
                "history": history,
                "versions": _versions(),
                "saved": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
        }

    def write_last(epoch: int) -> None:
        tstate = {"epoch": epoch, "history": history, "best_value": best_value, "best_epoch": best_epoch, "bad_epochs": bad_epochs}
        save_model(last_path, model, file_config(False, history[-1] if history else {}),
                   extra={"optimizer_state": optimizer.state_dict(), "trainer_state_json": json.dumps(tstate)})

    def set_train_mode() -> None:
        model.train()
        for m in frozen:
            m.eval()

    val_x = None if val is None else torch.from_numpy(val.x)
    val_y = None if val is None else torch.from_numpy(val.y)

    def validate():
        model.eval()
        tot, correct, n = 0.0, 0, 0
        with torch.no_grad():
            for i in range(n_val_batches):
                xb = val_x[i * bs:(i + 1) * bs].to(device)
                yb = val_y[i * bs:(i + 1) * bs].to(device)
                logits = model(xb).float()
                tot += float(loss_fn(logits, yb, reduce_weights=False)) * len(yb)
                pred = (logits[:, 0] > 0).long() if output_mode == "binary" else logits.argmax(1)
                correct += int((pred == yb).sum())
                n += len(yb)
                yield i + 1
        return tot / max(n, 1), correct / max(n, 1)

    def record_whole_run(reason: str) -> None:
        """Rewrite the kept (best-epoch) file's ``training`` entry for the run as it ended: how it
        stopped and all its epochs (it was written at its best epoch; weights unchanged)."""
        best_row = next((dict(h) for h in history if h["epoch"] == best_epoch), {})
        update_model_config(out_path, training={**file_config(True, best_row)["training"], "stop_reason": reason})

    stop_reason = "completed"
    saved_any = out_path.is_file() and ckpt is not None and resumes_own_run  # another file there is not this run's
    x_all = torch.from_numpy(data.x)
    y_all = torch.from_numpy(data.y)
    gen_torch = torch.Generator().manual_seed(cfg.seed)
    global_rng = HeldGlobalRng(cfg.seed, device)  # dropout (and kornia) draw from torch's global generator
    epoch = start_epoch - 1
    try:
        for epoch in range(start_epoch, n_epochs + 1):
            rng = np.random.default_rng([cfg.seed, epoch])
            gen_torch.manual_seed(cfg.seed * 100003 + epoch)
            global_rng.reseed(cfg.seed * 100003 + epoch)
            order = epoch_indices(data.y, rng, cfg.oversample, cfg.undersample_fraction)
            set_train_mode()
            t0 = time.perf_counter()
            run_loss, run_n = 0.0, 0
            lr = optimizer.param_groups[0]["lr"]
            n_steps = max(1, math.ceil(len(order) / bs))
            for step in range(1, n_steps + 1):
                if stop_event is not None and stop_event.is_set():
                    stop_reason = "stopped"
                    break
                idx = torch.from_numpy(order[(step - 1) * bs:step * bs])
                xb, yb = x_all[idx], y_all[idx]
                optimizer.zero_grad(set_to_none=True)
                with global_rng.hold():  # kornia's augmentations and dropout draw from torch's global generator
                    if augmenter is not None:
                        xb = augmenter(xb, gen_torch)
                    xb, yb = xb.to(device), yb.to(device)
                    logits = model(xb)
                loss = loss_fn(logits.float(), yb)
                if not torch.isfinite(loss):
                    raise TrainingDiverged(f"training diverged (loss is {float(loss)}) at epoch {epoch}; lower the learning rate")
                loss.backward()
                optimizer.step()
                run_loss += float(loss.detach()) * len(yb)
                run_n += len(yb)
                done = min(done + 1, total)
                yield ClassifierEvent(epoch, n_epochs, step, n_steps, run_loss / run_n, None, None, lr,
                                      time.perf_counter() - t0, device, done, total,
                                      f"epoch {epoch}/{n_epochs} loss {run_loss / run_n:.4f}", "step")
            if stop_reason == "stopped":
                break
            train_loss = run_loss / max(run_n, 1)
            val_loss = val_acc = None
            if val is not None:
                vgen = validate()
                while True:
                    try:
                        i = next(vgen)
                    except StopIteration as fin:
                        val_loss, val_acc = fin.value
                        break
                    yield ClassifierEvent(epoch, n_epochs, n_steps, n_steps, train_loss, None, None, lr,
                                          time.perf_counter() - t0, device, done, total,
                                          f"epoch {epoch}/{n_epochs} validating {i}/{n_val_batches}", "validate")
                    if stop_event is not None and stop_event.is_set():
                        stop_reason = "stopped"
                        break
                if stop_reason == "stopped":
                    break
            monitored = val_loss if val_loss is not None else train_loss
            seconds = time.perf_counter() - t0
            row = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "val_accuracy": val_acc, "lr": lr, "seconds": seconds}
            history.append(row)
            if not math.isfinite(monitored):  # a network that outputs NaN is no model: never saved as the best one
                raise TrainingDiverged(f"training diverged: the monitored loss is {monitored} at epoch {epoch}; lower the "
                                 "learning rate (the best model so far, if any, is kept)")
            improved = best_value is None or monitored < best_value
            if improved and val is None:  # no validation ran the network as it will be used: a quick check
                model.eval()
                with torch.no_grad():
                    finite = bool(torch.isfinite(model(x_all[:8].to(device)).float()).all())
                set_train_mode()
                if not finite:
                    raise TrainingDiverged(f"training diverged: the network gives NaN in use (evaluation mode) after epoch "
                                     f"{epoch}; lower the learning rate (the best model so far, if any, is kept)")
            if improved:
                best_value, best_epoch, bad_epochs = float(monitored), epoch, 0
                save_model(out_path, model, file_config(True, dict(row)))
                saved_any = True
            else:
                bad_epochs += 1
            write_last(epoch)
            msg = (f"epoch {epoch}/{n_epochs} loss {train_loss:.4f}"
                   + (f" val_loss {val_loss:.4f} val_acc {val_acc:.3f}" if val_loss is not None else "")
                   + (" *" if improved else ""))
            yield ClassifierEvent(epoch, n_epochs, n_steps, n_steps, train_loss, val_loss, val_acc, lr, seconds,
                                  device, done, total, msg, "epoch", improved)
            if cfg.early_stopping_patience is not None and bad_epochs >= int(cfg.early_stopping_patience):
                stop_reason = "early_stopping"
                break
    except (GeneratorExit, KeyboardInterrupt):  # closed (Stop), or Ctrl-C / SIGTERM while a step ran in here
        stop_reason = "stopped"
        if saved_any:  # before an epoch finished nothing is written (an untrained network is no model)
            record_whole_run(stop_reason)
        raise
    finally:
        if cfg.num_threads:
            torch.set_num_threads(prev_threads)
    if saved_any:
        record_whole_run(stop_reason)
    if saved_any and stop_reason != "stopped" and cfg.task == "images" and val is not None and len(np.unique(val.y)) == 2:
        yield ClassifierEvent(epoch, n_epochs, 0, 0, None, None, None, optimizer.param_groups[0]["lr"], 0.0, device,
                              total, total, "choosing the flag / discard thresholds on the validation images", "validate")
        _store_use_thresholds(out_path, val, val_desc)
    epochs_run = history[-1]["epoch"] if history else 0
    return ClassifierTrainResult(str(out_path) if saved_any else None, str(last_path) if last_path.is_file() else None,
                                 best_epoch, best_value, epochs_run, stop_reason, history, device, file_config(True, {}))


#: tolerated error rate of the kind each use of a good/bad classifier protects against
USE_MAX_RATE = 0.05


def _store_use_thresholds(out_path: Path, val: ClassificationData, description: str) -> dict:
    """Store the [R] use-case thresholds of the saved (best) model, chosen on the validation images.

    ``"flag"``: the highest threshold that passes at most :data:`USE_MAX_RATE` of the bad images
    as good (a human checks what is flagged); ``"discard"``: the lowest that throws away at
    most that share of the good ones. Written to the model config as ``use_thresholds``.
    """
    from ..io.models import update_model_config
    from .evaluate import choose_threshold
    from .predict import predict_proba

    probability_bad = predict_proba(str(out_path), val.x)[:, 1]
    thresholds = {"max_rate": USE_MAX_RATE, "chosen_on": description, "n_images": int(len(val.y))}
    for mode in ("flag", "discard"):
        # not rounded: a threshold must keep its place between two images' probabilities
        # "above every probability" is just above 1: kept so (clipped to 1.0, p >= 1.0 flagged an image it had promised
        # to keep, a float32 sigmoid giving exactly 1.0 for an overconfident model)
        thresholds[mode] = min(float(choose_threshold(val.y, probability_bad, mode, USE_MAX_RATE)["threshold"]),
                               float(np.nextafter(1.0, 2.0)))
    update_model_config(out_path, use_thresholds=thresholds)
    return thresholds


def _relabel(gen, phase: str, offset: int, n_remaining: int, label: str, state: dict | None = None):
    """Re-emit events of an inner run with a phase name and run-wide done / total.

    ``total`` is estimated as ``offset + n_remaining x`` the inner run's total (runs still to
    come are assumed as long as this one); ``state["done"]`` keeps the last ``done``.
    """
    try:
        while True:
            e = next(gen)
            total = offset + e.total * n_remaining
            done = offset + e.done
            if state is not None:
                state["done"] = done
            yield replace(e, done=done, total=max(total, done), phase=phase,
                          message=f"{label}: {e.message}")
    except StopIteration as stop:
        return stop.value


def train_with_strategy(
    strategy: str,
    config: ClassifierTrainConfig | dict,
    real: Any = None,
    simulated: Any = None,
    out_path: str | os.PathLike = "classifier.pt",
    pretrain_config: ClassifierTrainConfig | dict | None = None,
    real_val: Any = None,
    stop_event: threading.Event | None = None,
    pretrained: str | os.PathLike | None = None,
) -> Generator[ClassifierEvent, None, ClassifierTrainResult]:
    """Train by one of the [R] strategies; events carry ``phase`` (``"pretrain"`` / ``"finetune"`` / ``"train"``).

    Parameters
    ----------
    strategy : ``"real"`` (real data only), ``"simulated"`` (simulated only),
        ``"pretrain_finetune"`` (pre-train on simulated, then fine-tune every layer on real),
        ``"pretrain_freeze"`` (pre-train, then train the dense head on real with the conv base frozen).
    config : settings of the (final) training on real data (or on simulated for ``"simulated"``).
    real, simulated : :class:`ClassificationData` (or ``(x, y)``).
    out_path : final model file; a pre-trained model is kept as ``<stem>.pretrained.pt`` next to it.
    pretrain_config : settings of the pre-training (default: ``config``).
    real_val : validation samples for the real-data phase (default: split from ``real``).
    pretrained : a model pre-trained on the simulated data already (``pretrain_*``: the pre-training
        stage is skipped).

    The strategy is recorded in the model file (``training.strategy``).
    """
    if strategy not in STRATEGIES:
        raise InputError(f"unknown strategy {strategy!r}: use {', '.join(STRATEGIES)}")
    cfg = config if isinstance(config, ClassifierTrainConfig) else ClassifierTrainConfig.from_dict(dict(config))
    out_path = Path(out_path)
    if strategy in ("real", "pretrain_finetune", "pretrain_freeze") and real is None:
        raise InputError(f"strategy {strategy!r} needs real (annotated) data")
    if strategy != "real" and simulated is None:
        raise InputError(f"strategy {strategy!r} needs simulated data")
    if strategy == "real":
        result = yield from _relabel(train_classifier(cfg, real, real_val, out_path, stop_event=stop_event), "train", 0, 1, "train")
        return _record_strategy(result, strategy, None)
    if strategy == "simulated":
        result = yield from _relabel(train_classifier(cfg, simulated, None, out_path, stop_event=stop_event), "train", 0, 1, "train")
        return _record_strategy(result, strategy, None)
    pcfg = cfg if pretrain_config is None else (pretrain_config if isinstance(pretrain_config, ClassifierTrainConfig)
                                                 else ClassifierTrainConfig.from_dict(dict(pretrain_config)))
    offset = 0
    if pretrained is None:
        pre_path = out_path.with_name(out_path.stem + ".pretrained.pt")
        state = {"done": 0}
        pre = yield from _relabel(train_classifier(replace(pcfg, freeze_features=False), simulated, None, pre_path,
                                                   stop_event=stop_event), "pretrain", 0, 2, "pre-train on simulated (1/2)", state)
        if pre.stop_reason == "stopped" or pre.model_path is None:
            return pre
        offset = state["done"]
    else:  # pre-trained already (for cross-validation): the same model
        pre_path = Path(pretrained)
    fcfg = replace(cfg, freeze_features=(strategy == "pretrain_freeze"))
    fine = train_classifier(fcfg, real, real_val, out_path, init_model=pre_path, stop_event=stop_event)
    result = yield from _relabel(fine, "finetune", offset, 1, "fine-tune on real (2/2)")
    return _record_strategy(result, strategy, pre_path)


def _record_strategy(result: ClassifierTrainResult, strategy: str, pretrained: Path | None) -> ClassifierTrainResult:
    """Note the [R] strategy (and the pre-trained model) in the result and in its model file, beside the
    training record the file holds (its metrics and stop reason: the result's own record, written before
    the run ended, replaced them with none)."""
    training = result.config.setdefault("training", {})
    if result.model_path is not None and Path(result.model_path).is_file():
        from ..io.models import read_model_config

        training.update(read_model_config(result.model_path).get("training") or {})
    training["strategy"] = strategy
    if pretrained is not None:
        training["pretrained_model"] = str(pretrained)
    if result.model_path is not None and Path(result.model_path).is_file():
        from ..io.models import update_model_config

        update_model_config(result.model_path, training=training)
    return result


def cross_validate(
    config: ClassifierTrainConfig | dict,
    data: Any,
    k: int = 5,
    grouped: bool | None = None,
    out_dir: str | os.PathLike | None = None,
    seed: int = 0,
    stop_event: threading.Event | None = None,
    init_model: str | os.PathLike | None = None,
) -> Generator[ClassifierEvent, None, dict]:
    """k-fold cross-validation; returns ``{"folds": DataFrame, "predictions": DataFrame, "summary": dict}``
    (predictions: one row per sample, ``index`` into ``data``, ``fold``, ``true`` and ``pred`` class names,
    ``prob_<class>``, and ``group`` / ``subclass`` where ``data`` has them).

    Parameters
    ----------
    config : training settings of every fold (validation for early stopping is split from
        the training folds with ``config.val_fraction``; the test fold is never seen).
    data : :class:`ClassificationData`.
    k : folds (5 in [T]).
    grouped : split by ``data.groups`` (GroupKFold: copies of one sample stay in one fold);
        None: when the data have groups. Otherwise stratified by class.
    out_dir : where fold models go (``fold_<i>.pt``); None: a temporary folder.
    init_model : every fold starts from this model (the [R] pre-trained one: the strategies
        ``pretrain_finetune`` / ``pretrain_freeze`` cross-validated; ``config.freeze_features`` applies).
    """
    import pandas as pd

    from .data import fold_indices
    from .evaluate import classification_report
    from .predict import load_classifier, predict_proba

    cfg = config if isinstance(config, ClassifierTrainConfig) else ClassifierTrainConfig.from_dict(dict(config))
    data = as_classification_data(data)
    grouped = (data.groups is not None) if grouped is None else bool(grouped)
    if grouped and data.groups is None:
        raise InputError("grouped cross-validation needs groups")
    try:
        folds = fold_indices(data.y, k, data.groups if grouped else None, stratified=True, seed=seed)
    except ValueError as err:  # scikit-learn's: more folds than samples of a class (or groups)
        raise InputError(f"{k} folds: {err} Use fewer folds or more samples") from None
    tmp = None
    if out_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="microseg-cv-")
        out_dir = tmp.name
    out_dir = Path(out_dir)
    rows, preds = [], []
    state = {"done": 0}
    try:
        for i, (tr, te) in enumerate(folds, 1):
            res = yield from _relabel(train_classifier(cfg, data.subset(tr), None, out_dir / f"fold_{i}.pt",
                                                       init_model=init_model, stop_event=stop_event),
                                      "fold", state["done"], len(folds) - i + 1, f"fold {i}/{len(folds)}", state)
            if res.stop_reason == "stopped":
                break
            lm = load_classifier(res.model_path)
            prob = predict_proba(lm, data.x[te])
            pred = prob.argmax(1)
            rep = classification_report(data.y[te], pred, data.class_names, prob=prob)
            rows.append({"fold": i, "n_train": len(tr), "n_test": len(te), "best_epoch": res.best_epoch, **rep["summary"]})
            names = np.asarray(data.class_names, dtype=object)  # class names, as every other table holds them
            p = pd.DataFrame({"index": te, "fold": i, "true": names[data.y[te]], "pred": names[pred]})
            if data.groups is not None:  # (the sample's group: its image, for joining back)
                p["group"] = np.asarray(data.groups)[te]
            for c, name in enumerate(data.class_names):
                p[f"prob_{name}"] = prob[:, c]
            if data.subclass is not None:
                p["subclass"] = data.subclass[te]
            preds.append(p)
    finally:
        if tmp is not None:
            tmp.cleanup()
    folds_df = pd.DataFrame(rows)
    pred_df = pd.concat(preds, ignore_index=True) if preds else pd.DataFrame()
    summary = {} if folds_df.empty else {c: float(folds_df[c].mean()) for c in folds_df.columns
                                          if c not in ("fold", "n_train", "n_test", "best_epoch") and np.issubdtype(folds_df[c].dtype, np.number)}
    return {"folds": folds_df, "predictions": pred_df, "summary": summary}
