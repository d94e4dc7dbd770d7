"""Exceptions with messages meant for users (shown in widgets and by the CLI)."""


class MicrosegError(Exception):
    """A problem with the user's input or settings; the message is one clear line."""


class InputError(MicrosegError, ValueError):
    """Bad input data: wrong dimensionality, empty labels, shape mismatch, NaN, unreadable file."""


class WriteRefused(MicrosegError, OSError):
    """A napari writer refused a layer (its message says why). Not a ValueError: napari's ``layer.save``
    takes a ValueError from a writer for "no writer found" and drops its message."""


class Terminated(KeyboardInterrupt):
    """A TERM signal (a job scheduler's stop, ``kill``): wound down like Ctrl-C, exit status 143."""


class MicrosegWarning(UserWarning):
    """A doubt about the user's data that does not stop the run; the CLI prints it as one line
    (``microseg <command>: warning: ...``)."""
