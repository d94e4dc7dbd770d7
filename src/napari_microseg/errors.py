"""Exceptions with messages meant for users (shown in widgets and by the CLI)."""


class MicrosegError(Exception):
    """A problem with the user's input or settings; the message is one clear line."""


class InputError(MicrosegError, ValueError):
    """Bad input data: wrong dimensionality, empty labels, shape mismatch, NaN, unreadable file."""


class TrainingDiverged(InputError):
    """Training diverged (a loss or the network's output not finite, or running away): the run's model file
    records ``stop_reason: diverged``. Other errors while training are crashes (``crash_reason``)."""


class WriteRefused(MicrosegError, OSError):
    """A napari writer refused a layer (its message says why). Not a ValueError: napari's ``layer.save``
    takes a ValueError from a writer for "no writer found" and drops its message."""


class Terminated(KeyboardInterrupt):
    """A TERM signal (a job scheduler's stop, ``kill``): wound down like Ctrl-C, exit status 143."""


class MicrosegWarning(UserWarning):
    """A doubt about the user's data that does not stop the run; the CLI prints it as one line
    (``microseg <command>: warning: ...``)."""


def disk_full_hint(err: BaseException) -> str:
    """" (is the disk full?)" for the OSError numpy's file writer raises on a full disk, which names no
    errno ("262144 requested and 260024 written"); "" otherwise."""
    text = str(err)
    return " (is the disk full?)" if isinstance(err, OSError) and "requested and" in text and "written" in text else ""
