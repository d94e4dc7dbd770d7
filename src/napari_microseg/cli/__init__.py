"""The ``microseg`` command: one console script with subcommands.

Each subcommand lives in its own module under ``napari_microseg.cli`` and
exposes ``register(subparsers)``, which adds its parser and sets
``func=run`` (a callable taking the parsed ``argparse.Namespace`` and returning
an exit code). Bad input raises :class:`napari_microseg.errors.MicrosegError`;
``main`` turns it into a one-line message and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

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
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except MicrosegError as err:
        print(f"microseg {args.command}: error: {err}", file=sys.stderr)
        return 2
    except FileNotFoundError as err:
        print(f"microseg {args.command}: error: file not found: {err.filename or err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"microseg {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
