"""Simulators of labelled data for the five domains (numpy in, numpy out, seeded, Qt-free).

* :mod:`.nuclei` -- nuclei time-lapses (fluorescence + phase, labels = track ids, tracks) and varied single training images.
* :mod:`.ccd` -- CCD frames in ADC with exact per-pixel classes; FITS writer.
* :mod:`.response` -- 16-bit response images (good / bad with artefact subclasses), balanced nested sets.
* :mod:`.liposomes` -- TEM liposome images, one label per particle with lamellarity / encapsulation classes.
* :mod:`.nanoparticles` -- 1D STEM thickness profiles of 2D particles (holes, chirality), single or multi-view.

Every simulator takes ``seed`` (``np.random.default_rng(seed)``) and is deterministic
for a seed; most return a small dataclass with a JSON-serialisable ``params`` dict
(``simulate_nuclei_image`` returns the ``(image, labels)`` pair).
"""

from .ccd import CCDFrame, simulate_ccd_frame, write_ccd_fits
from .liposomes import LiposomeImage, simulate_liposome_image
from .nanoparticles import ProfileSet, render_particle, simulate_profiles
from .nuclei import NucleiTimelapse, simulate_nuclei_image, simulate_nuclei_timelapse
from .response import ResponseImage, build_balanced_set, simulate_response_image

__all__ = [
    "CCDFrame",
    "LiposomeImage",
    "NucleiTimelapse",
    "ProfileSet",
    "ResponseImage",
    "build_balanced_set",
    "render_particle",
    "simulate_ccd_frame",
    "simulate_liposome_image",
    "simulate_nuclei_image",
    "simulate_nuclei_timelapse",
    "simulate_profiles",
    "simulate_response_image",
    "write_ccd_fits",
]
