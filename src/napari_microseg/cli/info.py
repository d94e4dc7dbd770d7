"""``microseg info``: show versions, the compute device, and whether btrack's native library loads."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="show versions, device and btrack status", description=__doc__)
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=run)


def collect() -> dict:
    import numpy
    import torch

    from .. import __version__
    from ..device import resolve_device

    info = {"microseg": __version__, "numpy": numpy.__version__, "torch": torch.__version__, "device": resolve_device("auto")}
    try:
        from btrack import libwrapper

        libwrapper.get_library()
        info["btrack_native"] = "ok"
    except Exception as err:  # noqa: BLE001 - report any loader failure
        info["btrack_native"] = f"fails to load ({err.__cause__ or err}); run: python scripts/repair_btrack.py"
    return info


def run(args: argparse.Namespace) -> int:
    info = collect()
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for key, value in info.items():
            print(f"{key:14s} {value}")
    return 0
