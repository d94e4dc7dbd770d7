"""``microseg export``: write a trained model as TorchScript (default) or ONNX, with its config inside."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InputError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a model to TorchScript or ONNX", description=__doc__)
    p.add_argument("--model", required=True, help="model file or shipped model name")
    p.add_argument("--out", required=True, help="output file (.pt for TorchScript, .onnx for ONNX)")
    p.add_argument("--format", choices=["torchscript", "onnx"], default=None,
                   help="default: from --out's suffix (.onnx: ONNX, else TorchScript)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..io.export import export_onnx, export_torchscript
    from ..pretrained import resolve_model

    suffix = Path(args.out).suffix.lower()
    fmt = args.format or ("onnx" if suffix == ".onnx" else "torchscript")
    expected = {"onnx": (".onnx",), "torchscript": (".pt", ".pth", ".ts", ".torchscript")}[fmt]
    if suffix not in expected:
        raise InputError(f"--out {args.out}: a {fmt} file should end in {' or '.join(expected)}")
    exporter = export_onnx if fmt == "onnx" else export_torchscript
    path = exporter(resolve_model(args.model), args.out, overwrite=args.overwrite)
    print(f"exported {args.model} as {fmt}: {path}")
    return 0
