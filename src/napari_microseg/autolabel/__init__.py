"""Labels without a network: nuclei from a fluorescent stain ([N]), data-set QC, training pairs,
and CCD class maps by thresholds and shape rules ([C]).

Qt-free; the widgets and the ``microseg autolabel`` command call these functions.
"""

from .ccd import CLASS_NAMES as CCD_CLASS_NAMES
from .ccd import autolabel_ccd, autolabel_ccd_details, class_agreement, estimate_baseline, find_clusters
from .fluorescence import autolabel_fluorescence, autolabel_fluorescence_iter
from .pairing import RegistrationWarning, TilePairs, check_registration, make_training_pairs, tile_positions
from .qc import qc_filter, tile_statistics

__all__ = [
    "CCD_CLASS_NAMES",
    "RegistrationWarning",
    "TilePairs",
    "autolabel_ccd",
    "autolabel_ccd_details",
    "autolabel_fluorescence",
    "autolabel_fluorescence_iter",
    "check_registration",
    "class_agreement",
    "estimate_baseline",
    "find_clusters",
    "make_training_pairs",
    "qc_filter",
    "tile_positions",
    "tile_statistics",
]
