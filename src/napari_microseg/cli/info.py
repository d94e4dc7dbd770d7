"""``microseg info``: show versions, the compute device, and whether btrack's native library loads;
``microseg info --model M`` shows what a model file holds: its task, classes, normalisation, tuned
post-processing and training record."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="show versions, device and btrack status", description=__doc__)
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.add_argument("--model", help="a model file or shipped name (e.g. nuclei_fluorescence): show what it holds instead")
    p.set_defaults(func=run)


def model_summary(spec: str) -> dict:
    """What the model file ``spec`` (a path or a shipped name) holds, for people: its kind, architecture,
    classes, normalisation, patch size, object size, intensity range, tuned post-processing, a classifier's
    stored thresholds and training record (data, epochs, best epoch, stop reason, initial model, metrics)."""
    from ..io.models import LoadedModel, _check_zip_intact, read_model_config
    from ..pretrained import resolve_model

    path = resolve_model(spec)
    _check_zip_intact(Path(path))  # a damaged byte of the weights: said here too, not only when it is used
    config = read_model_config(path)
    if not config.get("task"):  # as segmentation reads it (a file without one: by its network's outputs)
        config = {**config, "output_mode": LoadedModel(model=None, config=config).output_mode}
    training = config.get("training") or {}
    summary = {"file": str(path),
               "kind": f"{config['task']} classifier" if config.get("task") else f"{config.get('output_mode')} segmentation",
               "architecture": config.get("model"), "classes": config.get("class_names"),
               "distance_head": config.get("distance_head"), "normalization": config.get("normalization"),
               "patch_size": config.get("patch_size"), "object_size": config.get("object_size"),
               "input_range": config.get("input_range"), "postprocess": config.get("postprocess"),
               "threshold": config.get("threshold"), "use_thresholds": config.get("use_thresholds"),
               "training": {key: training.get(key) for key in ("data", "validation", "n_training_images",
                                                               "n_validation_images", "epochs_run", "best_epoch",
                                                               "stop_reason", "seed", "device", "init_model",
                                                               "resumed_from", "metrics", "saved")}}
    return {key: value for key, value in summary.items() if value not in (None, {}, [])}


def collect() -> dict:
    import numpy
    import torch

    from .. import __version__
    from ..device import resolve_device

    info = {"microseg": __version__, "numpy": numpy.__version__, "torch": torch.__version__, "device": resolve_device("auto")}
    try:
        from btrack import libwrapper

        from ..tracking.track import quiet_btrack

        quiet_btrack()  # no "[INFO] Loaded btrack" line above the table
        libwrapper.get_library()
        info["btrack_native"] = "ok"
    except Exception as err:  # noqa: BLE001 - report any loader failure
        info["btrack_native"] = f"fails to load ({err.__cause__ or err}); run: python scripts/repair_btrack.py"
    return info


def run(args: argparse.Namespace) -> int:
    info = model_summary(args.model) if args.model else collect()
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for key, value in info.items():
            if isinstance(value, dict):  # one line per entry: a training record is long
                print(key)
                for inner, item in value.items():
                    if item not in (None, {}, []):
                        print(f"  {inner:14s} {json.dumps(item) if isinstance(item, (dict, list)) else item}")
            else:
                print(f"{key:14s} {json.dumps(value) if isinstance(value, list) else value}")
    return 0
