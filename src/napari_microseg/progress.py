"""Progress reporting shared by long-running generators, the CLI and widgets.

Long work is written as a generator that yields :class:`Progress` (or richer
event objects with the same ``done``/``total``/``message`` fields). The CLI
drives it with :func:`run_with_text_progress`; widgets drive it in a
``napari.qt.threading.thread_worker`` and update a progress bar from ``yielded``.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Generator, Iterable, TextIO


@dataclass
class Progress:
    """One progress step: ``done`` of ``total`` units, with a short message."""

    done: int
    total: int
    message: str = ""


class StepRate:
    """Time left of a count of steps, from the rate of its own steps: a new count (another ``total``, or
    ``done`` going back) starts anew, so the reading and preparing before the first training step do not
    count (the first estimates were 5-20x too long: eta 320 s for 16 s left)."""

    def __init__(self) -> None:
        self.total: int | None = None
        self.first_done = 0
        self.started = 0.0

    def seconds_left(self, done: int, total: int, now: float | None = None) -> float | None:
        """Seconds left after ``done`` of ``total`` steps; None before a step of this count is done."""
        now = time.perf_counter() if now is None else now
        if self.total != total or done < self.first_done:
            self.total, self.first_done, self.started = total, done, now
        steps = done - self.first_done
        return (now - self.started) / steps * (total - done) if steps > 0 else None


def text_bar(done: int, total: int, width: int = 30) -> str:
    frac = 0.0 if total <= 0 else min(1.0, done / total)
    filled = int(round(frac * width))
    return "[" + "#" * filled + "-" * (width - filled) + f"] {done}/{total}"


def run_with_text_progress(gen: Generator[Any, None, Any], stream: TextIO | None = None, label: str = "",
                           quiet: bool = False) -> Any:
    """Drive a progress generator, printing a one-line bar with ETA (none when ``quiet``: scripts, logs
    of many runs); return its return value."""
    if quiet:
        with open(os.devnull, "w", errors="backslashreplace") as sink:
            return run_with_text_progress(gen, stream=sink, label=label)
    stream = stream or sys.stderr
    start = time.perf_counter()
    interactive = hasattr(stream, "isatty") and stream.isatty()
    last_print = 0.0
    result = None
    rate = StepRate()
    try:
        while True:
            event = next(gen)
            done = getattr(event, "done", None)
            total = getattr(event, "total", None)
            if done is None or total is None:
                continue
            now = time.perf_counter()
            elapsed = now - start
            left = rate.seconds_left(done, total, now)
            eta = float("nan") if left is None else left
            msg = getattr(event, "message", "")
            eta_text = f"{eta:6.1f}s" if eta == eta else "     --"  # NaN before the first step is done
            bar = text_bar(done, total) if total > 0 else ""  # (total 0: a message before the counting starts)
            line = f"{label} {bar} {elapsed:6.1f}s eta {eta_text} {msg}"
            if interactive:
                stream.write("\r" + line[:150].ljust(150))
                stream.flush()
            elif now - last_print > 2.0 or (total > 0 and done == total):
                stream.write(line + "\n")
                last_print = now
    except StopIteration as stop:
        result = stop.value
    if interactive:
        stream.write("\n")
    return result


def iterate_with_progress(items: Iterable[Any], total: int, message: str = "") -> Generator[Progress, None, list]:
    """Turn an iterable into a progress generator that returns the list of items."""
    out = []
    for i, item in enumerate(items, 1):
        out.append(item)
        yield Progress(i, total, message)
    return out


def drain(gen: Generator[Any, None, Any], on_event: Any = None) -> Any:
    """Run a progress generator to its end without printing; return its return value.

    ``on_event(event)`` is called for every yielded event when given.
    """
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            return stop.value
        if on_event is not None:
            on_event(event)
