"""Preloaded into the local Dask cluster's worker and nanny processes (``LocalCluster(preload=...)``):
Ctrl-C is the batch command's to handle. A Ctrl-C in the terminal reaches the whole process group, and
each worker printed its KeyboardInterrupt traceback while the command, which handles it, stopped them."""

from __future__ import annotations

import signal
import threading


def _ignore_ctrl_c() -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def dask_setup(*_args) -> None:
    """Dask's preload hook (called with the worker or nanny)."""
    _ignore_ctrl_c()


_ignore_ctrl_c()  # at import too: a nanny imports its preloads in its main thread
