"""The ``microseg`` command: one console script with subcommands.

Each subcommand lives in its own module under ``napari_microseg.cli`` and
exposes ``register(subparsers)``, which adds its parser and sets
``func=run`` (a callable taking the parsed ``argparse.Namespace`` and returning
an exit code). Bad input raises :class:`napari_microseg.errors.MicrosegError`;
``main`` turns it into a one-line message and exit status 2, as it does for
file-system errors (a read-only or full output folder, a folder where a file
should be) and for a missing subcommand.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
import warnings
from typing import Any

from .. import __version__
from ..errors import MicrosegError

#: subcommand modules, in the order shown by ``--help``
SUBCOMMAND_MODULES = [
    "demo",
    "simulate",
    "autolabel",
    "train",
    "segment",
    "classify",
    "track",
    "evaluate",
    "batch",
    "export",
    "info",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="microseg",
        description="napari-microseg: simulate, train, segment, classify, track and export microscopy and CCD images.",
    )
    parser.add_argument("--version", action="version", version=f"microseg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"{__name__}.{name}":
                continue  # subcommand not built yet
            raise
        module.register(sub)
    _finish_help(parser)
    return parser


def _one_line_error(parser: argparse.ArgumentParser, message: str) -> None:
    """A bad option or argument: one line naming it and where the options are, exit status 2 (argparse
    would print the whole usage block first)."""
    sys.stderr.write(f"{parser.prog}: error: {message} (see {parser.prog} --help)\n")
    sys.exit(2)


def _finish_help(parser: argparse.ArgumentParser) -> None:
    """Give every (sub)parser the shared help layout, and a description where it has none (its one-line help)."""
    import types

    from ._help import HelpFormatter

    parser.formatter_class = HelpFormatter
    parser.error = types.MethodType(_one_line_error, parser)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, child in action.choices.items():
                if not child.description and helps.get(name):
                    child.description = f"{child.prog}: {helps[name]}."
                _finish_help(child)


#: options that name files or folders a command reads: outputs may never replace them
#: (not --init-model / --resume: training may write its result over the weights it started from)
INPUT_OPTIONS = ("input", "stain", "target", "labels", "image", "images", "gt", "pred", "compare", "model",
                 "val_images", "val_labels", "config", "points")


def _input_paths(args: argparse.Namespace) -> list[str]:
    """The paths given to the input options of ``args`` (globs as written; see ``protect_inputs``)."""
    paths: list[str] = []
    for name in INPUT_OPTIONS:
        value = getattr(args, name, None)
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(item, (str, os.PathLike)):
                paths.append(os.fspath(item))
    return paths


def _shipped_model_files() -> list[str]:
    """The files of the models shipped with the package: inputs of every command that names one
    (``--model nuclei_phase`` is resolved only later), never replaced by an output, even with ``--overwrite``."""
    from ..pretrained import PRETRAINED_DIR

    return [str(path) for path in PRETRAINED_DIR.iterdir() if path.is_file() and path.suffix in (".pt", ".json")]


#: options naming a file or folder that a command needs: an empty value (an unset shell variable,
#: "$OUT") would mean the current folder, so it is refused (an empty optional one, such as
#: --init-model "", still means "not given")
PATH_OPTIONS = ("input", "out", "stain", "labels", "images", "gt", "pred", "history")


def _empty_path_option(argv: list[str]) -> str | None:
    """The first of :data:`PATH_OPTIONS` given an empty value on the command line (``--out ''``,
    ``--out=``, an abbreviation argparse accepts such as ``--ou ''``, or any item of a list value
    such as ``--input a.tif ''``)."""
    names = ["--" + name.replace("_", "-") for name in PATH_OPTIONS]
    for i, token in enumerate(argv):
        option, eq, value = token.partition("=")
        if not option.startswith("--") or len(option) < 3 or not any(name.startswith(option) for name in names):
            continue
        if eq:
            values = [value]
        else:  # the values up to the next option
            values = []
            for item in argv[i + 1:]:
                if item.startswith("-") and item.strip() != "-":
                    break
                values.append(item)
        if any(not item.strip() for item in values):
            return option
    return None


#: no numeric option of any command means anything beyond this magnitude (pixels, ADC, seconds, epochs ...);
#: such values (1e308, 99999999999999999999) overflowed deep inside numpy, torch or the simulators
LARGEST_OPTION_VALUE = 1e12


def _option_flags(parser: argparse.ArgumentParser) -> dict[str, set[str]]:
    """Every option's destination -> its flags, over all subcommands."""
    flags: dict[str, set[str]] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                for dest, names in _option_flags(sub).items():
                    flags.setdefault(dest, set()).update(names)
        elif action.option_strings:
            flags.setdefault(action.dest, set()).update(action.option_strings)
    return flags


def _unusable_number(parser: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str]) -> str | None:
    """Why a numeric option given cannot be used (nan, inf, or beyond :data:`LARGEST_OPTION_VALUE`), or None."""
    import math

    flags = None
    for dest, value in vars(args).items():
        values = value if isinstance(value, (list, tuple)) else [value]
        numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        bad = next((v for v in numbers if not math.isfinite(v) or abs(v) > LARGEST_OPTION_VALUE), None)
        if bad is None:
            continue
        flags = flags if flags is not None else _option_flags(parser)
        given = sorted(f for f in flags.get(dest, ()) if any(a == f or a.startswith(f + "=") for a in argv))
        name = given[-1] if given else "--" + dest.replace("_", "-")
        return f"{name} must be finite and at most {LARGEST_OPTION_VALUE:g} in size, got {bad:g}"
    return None


def _one_line_warnings(command: str, default: Any) -> Any:
    """A ``warnings.showwarning`` printing doubts about the user's data (MicrosegWarning) as
    ``microseg <command>: warning: ...`` on stderr, and any other warning as Python does."""
    from ..errors import MicrosegWarning

    def show(message: Any, category: type, *rest: Any, **kwargs: Any) -> None:
        if issubclass(category, MicrosegWarning):
            print(f"microseg {command}: warning: {message}", file=sys.stderr)
        else:
            default(message, category, *rest, **kwargs)

    return show


def _decoding_error(err: BaseException) -> bool:
    """Whether ``err`` was raised while decoding stored pixels (a Zarr chunk, a compressed TIFF or FITS tile):
    the codecs' own errors (``Zstd decompression error`` ...) name no file and mean a damaged input."""
    if isinstance(err, MemoryError):  # too big to decode is not damaged
        return False
    codec_parts = ("numcodecs", "/zarr/codecs/", "/zarr/core/codec", "imagecodecs", "/astropy/io/fits/hdu/compressed")
    decoding = False
    tb = err.__traceback__
    while tb is not None:  # the innermost codec frame decides: decoding (reading), not encoding (writing outputs)
        code = tb.tb_frame.f_code
        if any(part in code.co_filename for part in codec_parts):
            decoding = "decode" in code.co_name or "decompress" in code.co_name
        tb = tb.tb_next
    return decoding


def main(argv: list[str] | None = None) -> int:
    try:  # the subcommands' imports take a second or two: a Ctrl-C then printed an import traceback
        parser = build_parser()
    except KeyboardInterrupt:
        print("microseg: interrupted", file=sys.stderr)
        return 130
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    seed = getattr(args, "seed", None)
    if isinstance(seed, int) and not 0 <= seed < 2**32:  # numpy, torch and btrack take 0 .. 2**32 - 1
        print(f"microseg {args.command}: error: --seed must be from 0 to {2**32 - 1}, got {seed}", file=sys.stderr)
        return 2
    unusable = _unusable_number(parser, args, argv)
    if unusable:
        print(f"microseg {args.command}: error: {unusable}", file=sys.stderr)
        return 2
    empty = _empty_path_option(argv)
    if empty is not None:
        print(f"microseg {args.command}: error: {empty} is empty (an unset variable?): give a file or folder",
              file=sys.stderr)
        return 2
    from ..io.atomic import forget_created_folders, protect_inputs, remove_empty_created_folders

    for stream in (sys.stdout, sys.stderr):  # a file name that is no UTF-8 (a latin-1 zip) is printed escaped
        if hasattr(stream, "reconfigure"):
            with contextlib.suppress(ValueError, OSError):  # a stream already written to in binary, or closed
                stream.reconfigure(errors="backslashreplace")
    forget_created_folders()
    try:
        protect_inputs(_input_paths(args) + _shipped_model_files())
        from ._signals import terminate_as_interrupt

        # every command: a TERM signal (kill, a job scheduler) stops it as Ctrl-C does (exit 143, a line said)
        with warnings.catch_warnings(), terminate_as_interrupt():
            warnings.showwarning = _one_line_warnings(args.command, warnings.showwarning)
            return int(args.func(args) or 0)
    except MicrosegError as err:
        print(f"microseg {args.command}: error: {err}", file=sys.stderr)
    except FileNotFoundError as err:
        print(f"microseg {args.command}: error: file not found: {err.filename or err}", file=sys.stderr)
    except UnicodeEncodeError as err:  # a name of undecodable bytes (surrogates) cannot go into a UTF-8 table
        bad = err.object[max(0, err.start - 20):err.end + 20] if isinstance(err.object, str) else ""
        shown = bad.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        print(f"microseg {args.command}: error: a file name is not valid UTF-8 (...{shown}...): rename it (e.g. with "
              "convmv) and run again", file=sys.stderr)
    except OSError as err:  # permissions, a full disk, a folder where a file should be ...
        where = f": {err.filename}" if err.filename else ""
        from ..errors import disk_full_hint

        print(f"microseg {args.command}: error: {err.strerror or err}{where}{disk_full_hint(err)}", file=sys.stderr)
    except MemoryError as err:  # numpy's names the size: "Unable to allocate 11.9 GiB for an array with shape ..."
        print(f"microseg {args.command}: error: out of memory ({err or 'MemoryError'}): use smaller inputs or "
              "sizes, or a machine with more memory", file=sys.stderr)
    except Exception as err:  # noqa: BLE001 - only a damaged file's decoding error is said in a line; the rest re-raised
        stop = _interrupt_inside(err)
        if stop is not None:  # Ctrl-C / TERM while a class was built (pydantic's __set_name__ during an import):
            # Python wraps it in a RuntimeError, and the run ended in a 60-line traceback, exit 1
            from ..errors import Terminated

            terminated = isinstance(stop, Terminated)
            print(f"microseg {args.command}: {'terminated' if terminated else 'interrupted'}", file=sys.stderr)
            remove_empty_created_folders()
            return 143 if terminated else 130
        if isinstance(err, RuntimeError) and "Symlink loop" in str(err):  # pathlib's (Python 3.11), not an OSError
            print(f"microseg {args.command}: error: {err}: a symbolic link that leads back to itself", file=sys.stderr)
        elif not _decoding_error(err):
            raise
        else:
            print(f"microseg {args.command}: error: cannot decode the data of an input ({type(err).__name__}: {err}): "
                  "a damaged or incompletely copied file or Zarr store?", file=sys.stderr)
    except KeyboardInterrupt as err:
        from ..errors import Terminated

        terminated = isinstance(err, Terminated)
        print(f"microseg {args.command}: {'terminated' if terminated else 'interrupted'}", file=sys.stderr)
        remove_empty_created_folders()
        return 143 if terminated else 130  # the shell's codes for SIGTERM and SIGINT
    finally:
        protect_inputs([])
    remove_empty_created_folders()  # a refused run leaves no empty output folder behind
    return 2


def _interrupt_inside(err: BaseException) -> KeyboardInterrupt | None:
    """The KeyboardInterrupt (or Terminated) an exception was raised from (its cause or context chain), if any."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        if isinstance(current, KeyboardInterrupt):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
