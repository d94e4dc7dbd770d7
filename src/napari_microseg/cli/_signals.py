"""A TERM signal (job schedulers, ``kill``) stops a command as Ctrl-C does."""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator


def _raise_terminated(signum, frame):  # noqa: ARG001 - signal handler signature
    from ..errors import Terminated

    raise Terminated


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Within this block a TERM signal raises :class:`~napari_microseg.errors.Terminated` (a
    ``KeyboardInterrupt``), so the command's Ctrl-C handling (partial results kept, temporary files
    removed, exit 143) also runs on ``kill``. Only in the main thread (signals cannot be set elsewhere)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
