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


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Ctrl-C (INT) and TERM wait until this block has run, then act as usual: for steps that must all
    happen or none (moving a run's outputs into place). Only in the main thread, where Python runs
    signal handlers (a signal mask would be the calling thread's only, and the kernel may hand the
    signal to any other thread of the process)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    held = (signal.SIGINT, signal.SIGTERM)
    previous = {signum: signal.signal(signum, lambda signum, frame: received.append(signum)) for signum in held}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)  # None: set outside Python
        if received:  # now with the command's own handling; TERM first (its exit status says it was killed)
            signal.raise_signal(signal.SIGTERM if signal.SIGTERM in received else signal.SIGINT)
