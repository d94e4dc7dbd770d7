"""napari-microseg: simulate labelled data, train, segment, classify, track and export.

The core (everything outside ``widgets/`` and the napari hook modules) is plain
numpy/torch and never imports Qt or napari, so the ``microseg`` command and
scripts run headless.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
