"""The model file: one ``torch.save`` file holding weights and a JSON-able config.

Layout of the saved dict (plain types and tensors only, so that
``torch.load(..., weights_only=True)`` reads it and no class is unpickled)::

    {
      "format": "napari-microseg-model",
      "format_version": 1,
      "config_json": "<JSON text of the config dict>",
      "state_dict": {name: tensor, ...},
      # training checkpoints (``<model>.last.pt``) add:
      "optimizer_state": {...}, "scheduler_state": {...}, "trainer_state_json": "...",
    }

The config dict (see :func:`save_model`) holds at least::

    {"model": {"architecture": "unet", "in_channels": 1, "n_classes": 1, ...},
     "output_mode": "binary" | "three_class" | "multiclass",
     "class_names": [...],
     "normalization": {"kind": "percentile", "p_low": 1.0, "p_high": 99.8},
     "patch_size": [256, 256],
     "training": {... data description, epochs, seed, device, metrics, history, versions ...}}

Loading needs nothing but this file (no widget state).
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from .atomic import atomic_path

__all__ = ["MODEL_FORMAT", "LoadedModel", "save_model", "load_model", "read_model_file", "read_model_config", "model_payload",
           "update_model_config"]

MODEL_FORMAT = "napari-microseg-model"
FORMAT_VERSION = 1


@dataclass
class LoadedModel:
    """A network in eval mode plus the config it was saved with.

    Attributes
    ----------
    model : ``torch.nn.Module`` in eval mode on ``device``.
    config : the JSON-able config dict stored in the file.
    device : torch device string the model lives on.
    path : file the model was read from (None when built in memory).
    """

    model: Any
    config: dict
    device: str = "cpu"
    path: str | None = None
    extra: dict = field(default_factory=dict, repr=False)

    @property
    def output_mode(self) -> str:
        """The config's ``output_mode``; a file without one (older, or made by hand) by its network's outputs:
        1 or 2 binary, 3 (or a distance head) three-class unless its class names are others, more multiclass
        (not binary whatever it holds)."""
        mode = self.config.get("output_mode")
        if mode is not None:
            return mode
        n = (self.config.get("model") or {}).get("n_classes", self.config.get("n_classes"))
        names = [str(c).lower() for c in self.config.get("class_names") or []]
        if self.config.get("distance_head") or (n == 3 and names in ([], ["background", "interior", "boundary"])):
            return "three_class"
        return "binary" if n in (None, 1) or (n == 2 and len(names) < 3) else "multiclass"

    @property
    def normalization(self) -> dict:
        from ..training.normalize import make_normalization_spec

        return make_normalization_spec(self.config.get("normalization"))

    @property
    def class_names(self) -> list[str]:
        return list(self.config.get("class_names") or [])

    @property
    def patch_size(self) -> tuple[int, int] | None:
        p = self.config.get("patch_size")
        if isinstance(p, (int, float)) and not isinstance(p, bool):  # one side for both (a hand-made config)
            return int(p), int(p)
        return tuple(int(v) for v in p) if p else None


def _jsonable(config: dict) -> str:
    try:
        return json.dumps(config, allow_nan=True)
    except (TypeError, ValueError) as err:
        raise ValueError(f"model config is not JSON-serialisable: {err}") from err


def model_payload(model: Any, config: dict) -> dict:
    """Return the dict written by :func:`save_model` (weights copied to CPU)."""
    if "model" not in config:
        raise ValueError("model config needs a 'model' entry (architecture and its parameters)")
    state = {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}
    return {
        "format": MODEL_FORMAT,
        "format_version": FORMAT_VERSION,
        "config_json": _jsonable(config),
        "state_dict": state,
    }


def save_model(path: str | os.PathLike, model: Any, config: dict, extra: dict | None = None) -> Path:
    """Write ``model``'s weights and ``config`` to ``path`` atomically.

    Parameters
    ----------
    path : target file (``.pt`` by convention). Replaced only once the new file is complete.
    model : ``torch.nn.Module``.
    config : JSON-able dict with at least ``"model"`` (a model config for
        :func:`napari_microseg.models.build_model`); see the module docstring.
    extra : further plain entries (dicts of tensors / numbers / strings), e.g. optimiser
        state for training checkpoints.
    """
    import torch

    payload = model_payload(model, config)
    if extra:
        payload.update(extra)
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    with atomic_path(path, suffix=".tmp") as tmp:
        tmp.write_bytes(buffer.getvalue())
    return Path(path)


def update_model_config(path: str | os.PathLike, **entries: Any) -> Path:
    """Set top-level ``config`` entries of an existing model file (weights untouched; atomic replace);
    an entry set to None is removed.

    Example: ``update_model_config("m.pt", postprocess={"threshold": 0.6})``.
    """
    import torch

    if not Path(path).is_file():
        raise InputError(f"model file not found: {path}")
    payload = read_model_file(path)
    config = payload.pop("config")
    config.update(entries)
    for key in [k for k, v in entries.items() if v is None]:  # None removes an entry
        del config[key]
    payload["config_json"] = _jsonable(config)
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    with atomic_path(path, suffix=".tmp") as tmp:
        tmp.write_bytes(buffer.getvalue())
    return Path(path)


def read_model_file(path: str | os.PathLike, map_location: str = "cpu") -> dict:
    """Read and check a model file; return the raw payload with ``config`` decoded.

    Raises
    ------
    InputError
        When the file is missing, unreadable or not a napari-microseg model file.
    """
    import torch

    p = Path(path)
    if not p.is_file():
        from ..pretrained import PRETRAINED_DIR, list_pretrained

        shipped = PRETRAINED_DIR / f"{p.name}.pt"
        if p.suffix == "" and p.parent == Path(".") and shipped.is_file():
            p = shipped  # the name of a model shipped with the package
        else:
            raise InputError(f"model file not found: {p} (shipped models: {', '.join(list_pretrained()) or 'none'})")
    if _is_torchscript(p):
        raise InputError(f"{p.name} is a TorchScript export (for other programs); napari-microseg reads the model "
                         "file it was exported from")
    if p.suffix.lower() == ".onnx":  # (it said "not a napari-microseg model file (UnpicklingError)")
        raise InputError(f"{p.name} is an ONNX export (for other programs); napari-microseg reads the model file it "
                         "was exported from")
    _check_zip_intact(p)
    try:
        payload = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure means "not a model file"
        raise InputError(f"{p.name} is not a napari-microseg model file ({type(err).__name__})") from None
    _decode_config(payload, p.name)
    return payload


def _check_zip_intact(path: Path) -> None:
    """InputError when a model file (a zip archive, as torch saves it) holds an entry whose checksum fails:
    torch reads a damaged byte of the weights without a word."""
    import zipfile

    if not zipfile.is_zipfile(path):
        with open(path, "rb") as head:
            starts_as_zip = head.read(4) == b"PK\x03\x04"
        if starts_as_zip:  # a zip archive without its index, at the end: a copy cut short
            raise InputError(f"{path.name} is damaged (cut short: its index is missing): copy the model file again")
        return  # the legacy (pre-zip) format, or not a model file: torch.load says which
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError):
        damaged = "its index"
    if damaged is not None:
        raise InputError(f"{path.name} is damaged ({damaged} fails its checksum): copy the model file again")


def _decode_config(payload: Any, name: str) -> None:
    """Check a model file's payload (marker, version, weights, model description) and decode its config
    into ``payload["config"]``; InputError naming the file when anything is missing."""
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise InputError(f"{name} is not a napari-microseg model file (no '{MODEL_FORMAT}' marker)")
    try:
        version = int(payload.get("format_version", 0))
    except (TypeError, ValueError):
        raise InputError(f"{name} is damaged: its format version {payload.get('format_version')!r} is no number") from None
    if version > FORMAT_VERSION:
        raise InputError(f"{name} was written by a newer napari-microseg (format {payload['format_version']}); update the plugin")
    try:
        payload["config"] = json.loads(payload["config_json"])
    except (KeyError, TypeError, ValueError):
        raise InputError(f"{name}: model config is missing or damaged") from None
    if not isinstance(payload["config"], dict):
        raise InputError(f"{name}: model config is damaged (a JSON {type(payload['config']).__name__}, not an object)")
    if "state_dict" not in payload or "model" not in payload["config"]:
        raise InputError(f"{name}: model file lacks weights or the model description")
    _check_config_types(payload["config"], name)
    if payload["config"].get("task") is None:
        _check_segmentation_outputs(payload["config"], name)


#: the JSON types of a model config's entries (absent or null: allowed); a wrong type (a hand-edited card)
#: gave a TypeError / AttributeError deep in the code that reads it
CONFIG_TYPES = {"model": dict, "output_mode": str, "task": str, "distance_head": bool, "n_classes": int,
                "class_names": list, "normalization": (dict, str), "patch_size": (list, int), "input_shape": list,
                "input_range": dict, "training": dict, "object_size": dict, "postprocess": dict, "crop": dict,
                "positive_class": (str, int), "threshold": (int, float), "use_thresholds": dict}


#: the watershed settings (``inference.postprocess.three_class_to_labels``) a model's ``postprocess`` gives as numbers
POSTPROCESS_NUMBERS = ("threshold", "seed_threshold", "distance_sigma", "seed_dynamics", "seed_erosion", "min_seed_size",
                       "min_size", "max_size", "min_mean_interior", "grow_small_below")


def _check_config_types(config: dict, name: str) -> None:
    """InputError naming the file and the entry when a config entry is not of its JSON type
    (:data:`CONFIG_TYPES`), a class name is no string, a patch size no positive integers, or a number of the
    postprocess settings (:data:`POSTPROCESS_NUMBERS`) is not a number."""
    for key, kinds in CONFIG_TYPES.items():
        value = config.get(key)
        if value is not None and (not isinstance(value, kinds) or (kinds is int and isinstance(value, bool))):
            raise InputError(f"{name}: model config entry '{key}' is damaged ({value!r} is no "
                             f"{' or '.join(k.__name__ for k in (kinds if isinstance(kinds, tuple) else (kinds,)))})")
    # (names given as numbers through the Python API are written as they were given)
    if not all(isinstance(c, (str, int)) and not isinstance(c, bool) for c in config.get("class_names") or []):
        raise InputError(f"{name}: model config entry 'class_names' is damaged (its names must be strings)")
    patch = config.get("patch_size")
    sides = patch if isinstance(patch, list) else [patch] if patch is not None else []
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in sides):
        raise InputError(f"{name}: model config entry 'patch_size' is damaged ({patch!r}: sides in px)")
    for key, value in (config.get("postprocess") or {}).items():  # (notes such as tuned_on are free text)
        if key in POSTPROCESS_NUMBERS and not (value is None or isinstance(value, (int, float))):
            raise InputError(f"{name}: model config entry 'postprocess' is damaged ({key}: {value!r} is no number)")
    spec = config.get("normalization")
    if isinstance(spec, dict):  # a kind this version does not know: said of the model, not of each image given to it
        from ..training.normalize import make_normalization_spec

        try:
            make_normalization_spec(spec)
        except InputError as err:
            raise InputError(f"{name}: its normalisation cannot be applied here ({err}): a model of a newer "
                             "napari-microseg, or a damaged file") from None


class _Opaque:
    """Stands in for every object a model file's pickle names (tensors, storages): built from anything, holds nothing."""

    def __init__(self, *_: Any, **__: Any) -> None:
        """Takes whatever the pickle passes and keeps none of it."""

    def __setstate__(self, _: Any) -> None:
        """Drops the pickled state."""


class _OpaqueDict(dict):
    """A pickled OrderedDict (a state dict) read as a plain dict; its attributes (``_metadata``) dropped."""

    def __setstate__(self, _: Any) -> None:
        """Drops the pickled attributes."""


def read_model_config(path: str | os.PathLike) -> dict:
    """A model file's config without importing torch or reading the weights (milliseconds; the first
    ``import torch`` takes ~1 s, which froze the docks when a model was chosen).

    The file's pickle is read with every class it names replaced by a placeholder, so no code from the
    file runs; files that are not torch zip archives (old or foreign formats) go through
    :func:`read_model_file`. Raises InputError as :func:`read_model_file` does.
    """
    import pickle
    import zipfile

    p = Path(path)
    try:
        with zipfile.ZipFile(p) as archive:
            pickled = [n for n in archive.namelist() if n.endswith("/data.pkl")]
            if len(pickled) != 1 or _is_torchscript(p):
                return read_model_file(p)["config"]
            data = archive.read(pickled[0])
    except (zipfile.BadZipFile, OSError):
        return read_model_file(p)["config"]

    class ConfigUnpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            return _OpaqueDict if (module, name) == ("collections", "OrderedDict") else _Opaque

        def persistent_load(self, _: Any) -> None:
            return None

    try:
        payload = ConfigUnpickler(io.BytesIO(data)).load()
    except Exception as err:  # noqa: BLE001 - any failure means "not a model file"
        raise InputError(f"{p.name} is not a napari-microseg model file ({type(err).__name__})") from None
    _decode_config(payload, p.name)
    return payload["config"]


def _is_torchscript(path: Path) -> bool:
    """True for a TorchScript archive (a zip holding ``<name>/constants.pkl`` or ``code/``), which torch.load refuses noisily."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n.endswith("/constants.pkl") or "/code/" in n for n in names)


#: what a segmentation model's ``output_mode`` may be
SEGMENTATION_OUTPUT_MODES = ("binary", "three_class", "multiclass")


def check_segmentation_config(config: dict, name: str) -> None:
    """Refuse a classifier's config where a segmentation model is needed (one clear line)."""
    task = config.get("task")  # classifiers say what they classify; segmentation models have no task
    if task is not None:
        raise InputError(f"{name} is a classifier (of {task}), not a segmentation model: "
                         f"use it with 'microseg classify {task}' or napari's Classification dock")
    mode = config.get("output_mode")
    if mode is not None and mode not in SEGMENTATION_OUTPUT_MODES:
        raise InputError(f"{name}: output_mode {mode!r} is none of {', '.join(SEGMENTATION_OUTPUT_MODES)}: "
                         "not a model file this package can segment with")


def _check_segmentation_outputs(config: dict, name: str) -> None:
    """InputError when a segmentation model's ``output_mode``, ``distance_head`` or class names do not fit its
    network's outputs (a hand-edited config: a three-class network read as binary lost 15 % of its
    foreground without a word, a distance channel read as a class 12 of 56 nuclei)."""
    network = config.get("model")
    outputs = network.get("n_classes") if isinstance(network, dict) else None
    mode = config.get("output_mode")
    if not isinstance(outputs, int) or mode is None:
        return  # an older file: its mode is taken from its outputs (LoadedModel.output_mode)
    head = 1 if config.get("distance_head") else 0
    classes = outputs - head
    names = config.get("class_names") or []
    fits = {"binary": classes in (1, 2), "three_class": classes == 3,
            "multiclass": classes >= 2 and (not names or len(names) == classes)}.get(mode, True)
    if not fits:
        described = f"{mode}{' with a distance channel' if head else ''}" + (f", classes {names}" if names else "")
        raise InputError(f"{name}: its config says {described}, but its network has {outputs} outputs: the config "
                         "was edited or belongs to another model")


def _built_without_drawing(model_config: dict, state_dict: dict) -> Any:
    """The network of ``model_config`` holding ``state_dict``'s weights, built on torch's meta device: its
    random initialisation, replaced by the weights anyway, drew from torch's global generator, which a
    training run in another dock draws its dropout from (that run's weights then differed from the same
    seed's). Built as usual where the weights leave a tensor unset (a buffer not saved)."""
    import itertools

    import torch

    from ..models import build_model

    with torch.device("meta"):
        model = build_model(model_config)
    model.load_state_dict(state_dict, assign=True)
    if any(t.is_meta for t in itertools.chain(model.parameters(), model.buffers())):
        model = build_model(model_config)
        model.load_state_dict(state_dict)
    return model.float()  # float32, as weights copied into a network built as usual were (a file of half ones)


def load_model(path: str | os.PathLike, device: str = "cpu", segmentation: bool = False) -> LoadedModel:
    """Load a model file; return the network in eval mode on ``device`` and its config.

    Parameters
    ----------
    path : a file written by :func:`save_model` (a best model or a ``.last.pt`` checkpoint).
    device : ``"cpu"``, ``"cuda"``, ``"mps"`` or ``"auto"``.
    segmentation : refuse classifiers (a clear message rather than a failure later).
    """
    from ..device import resolve_device

    device = resolve_device(device)
    payload = read_model_file(path)
    config = payload["config"]
    if segmentation:
        check_segmentation_config(config, Path(path).name)
    try:
        model = _built_without_drawing(config["model"], payload["state_dict"])
    except (ValueError, RuntimeError, TypeError) as err:
        raise InputError(f"{Path(path).name}: weights do not fit the stored architecture ({str(err).splitlines()[0]})") from None
    model.to(device).eval()
    return LoadedModel(model=model, config=config, device=device, path=str(path))
