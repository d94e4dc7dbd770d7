"""Training: data preparation, augmentation, losses, normalisation, the training loop, prediction.

The names below are imported on first use (PEP 562), so that importing a light submodule
(``training.normalize``, as the Training dock does when napari loads it) does not import torch:
on napari's GUI thread that import froze the window for 1-2 s.
"""

from __future__ import annotations

import importlib
from typing import Any

# light (numpy only), and imported here so that ``training.normalize`` is the function, as it
# always was, not the submodule of the same name that Python would bind in its place
from .normalize import DEFAULT_NORMALIZATION, make_normalization_spec, normalize

#: public name -> submodule that defines it, imported on first use
_WHERE = {
    "IGNORE": "data", "TrainingData": "data", "load_training_pairs": "data", "make_target": "data",
    "prepare_training_data": "data", "split_train_val": "data",
    "TrainConfig": "trainer", "TrainEvent": "trainer", "TrainResult": "trainer", "train": "trainer",
    "predict_image": "predict", "predict_patch_batch": "predict",
}

__all__ = ["DEFAULT_NORMALIZATION", "make_normalization_spec", "normalize", *_WHERE]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value  # found directly next time
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
