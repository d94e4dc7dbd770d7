"""Defaults shared by the core, the command line and the docks, in a module light enough for
``microseg --help`` to import (numbers and names only)."""

#: largest tile side (px) and tile overlap (px) of tiled prediction; see inference.segment.segment_image
DEFAULT_TILE = 512
DEFAULT_OVERLAP = 32
#: smallest object (px) segment_image, ``microseg segment --min-size`` and the Segmentation widget keep
DEFAULT_MIN_SIZE = 8
#: a class map ('multiclass' labels) holds a few class indices; more values than this are object ids
#: (one id per nucleus), which would make one network output per nucleus
MAX_CLASS_VALUES = 32
#: suffix of the resumable checkpoint a training run writes beside its model file (nuclei.pt.last.pt)
LAST_SUFFIX = ".last.pt"

#: [P] the profile classification tasks and their two classes (simulate.nanoparticles draws them; the
#: Classification dock offers them without importing the simulators: 0.4 s on the GUI thread)
PROFILE_TASKS = {"hole": ("solid", "hole"), "chirality": ("clockwise", "anticlockwise")}
