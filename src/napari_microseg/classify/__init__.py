"""Classification: whole images ([R]), objects ([T]) and multi-view profiles ([P]).

Qt-free core used by the CLI (``microseg classify``) and the widgets:

- :mod:`.data` -- crops around the integration area, simulated sets, class balancing, folds;
- :mod:`.crops` -- one crop per labelled object (margin / tight / masked);
- :mod:`.trainer` -- :func:`train_classifier` (a generator of progress events),
  :func:`train_with_strategy`, :func:`cross_validate`;
- :mod:`.predict` -- :func:`classify_images`, :func:`classify_objects`, :func:`classify_profiles`;
- :mod:`.evaluate` -- confusion matrices, per-class rates, ROC / AUC, thresholds;
- :mod:`.baseline` -- the SVM baseline on hand-made object features ([T]).
"""

from __future__ import annotations

import importlib
from typing import Any


def _register_architectures() -> None:
    """Import the classifier architectures so ``build_model`` / ``load_model`` know them."""
    from ..models import classifiers, profile  # noqa: F401  (registration on import)


#: public name -> submodule; loaded on first use, so that importing a torch-free part of the package (the
#: Classification dock's notes, on the GUI thread) does not import torch (a 3 s freeze of the window)
_LAZY = {"ClassificationData": "data", "classify_images": "predict", "classify_objects": "predict",
         "classify_profiles": "predict", "load_classifier": "predict", "population_summary": "predict",
         "ClassifierTrainConfig": "trainer", "cross_validate": "trainer", "train_classifier": "trainer",
         "train_with_strategy": "trainer"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ClassificationData",
    "ClassifierTrainConfig",
    "train_classifier",
    "train_with_strategy",
    "cross_validate",
    "classify_images",
    "classify_objects",
    "classify_profiles",
    "population_summary",
    "load_classifier",
]
