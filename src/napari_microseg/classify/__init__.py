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


def _register_architectures() -> None:
    """Import the classifier architectures so ``build_model`` / ``load_model`` know them."""
    from ..models import classifiers, profile  # noqa: F401  (registration on import)


_register_architectures()

from .data import ClassificationData  # noqa: E402
from .predict import classify_images, classify_objects, classify_profiles, load_classifier, population_summary  # noqa: E402
from .trainer import ClassifierTrainConfig, cross_validate, train_classifier, train_with_strategy  # noqa: E402

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
