"""The house rules: a Qt-free core, one manifest, a working console script."""

from __future__ import annotations

import ast
import filecmp
import subprocess
import sys
from pathlib import Path

import napari_microseg

PKG = Path(napari_microseg.__file__).parent
ROOT = Path(__file__).resolve().parents[1]
GUI_MODULES = {"_reader.py", "_writer.py", "_sample_data.py"}
FORBIDDEN = ("qtpy", "napari", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui", "superqt")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_core_does_not_import_qt_or_napari():
    offenders = []
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG)
        if rel.parts[0] == "widgets" or rel.name in GUI_MODULES:
            continue
        bad = _imports(path) & set(FORBIDDEN)
        if bad:
            offenders.append(f"{rel}: {sorted(bad)}")
    # the demo's optional --gui path imports napari lazily inside a function, which ast.walk also sees;
    # only module-level imports count for the rule, so re-check those offenders at module level
    strict = []
    for entry in offenders:
        rel = entry.split(":")[0]
        tree = ast.parse((PKG / rel).read_text(encoding="utf-8"))
        top = set()
        for node in tree.body:
            if isinstance(node, ast.Import):
                top.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                top.add(node.module.split(".")[0])
        if top & set(FORBIDDEN):
            strict.append(entry)
    assert not strict, "core modules import Qt/napari at module level: " + "; ".join(strict)


def test_core_import_does_not_load_qt():
    code = (
        "import sys, napari_microseg.io.images, napari_microseg.cli as c; c.build_parser();"
        "bad=[m for m in sys.modules if m.split('.')[0] in ('qtpy','napari','PyQt5','magicgui')];"
        "print(','.join(bad)); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, f"importing the core/CLI pulled in GUI modules: {result.stdout} {result.stderr[-500:]}"


def test_dock_modules_load_without_torch():
    """napari imports a dock's module on its GUI thread when the dock is opened: none of them may
    import torch there (1-2 s frozen window); the Training dock imports it in a thread."""
    docks = ", ".join(f"napari_microseg.widgets.{m}" for m in
                      ("training", "segmentation", "classification", "autolabel", "tracking", "simulation"))
    code = (f"import sys, {docks}; import napari_microseg.training as t; t.normalize, t.DEFAULT_NORMALIZATION;"
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr or "torch was imported"
    from napari_microseg.training import normalize, train  # the package's names still resolve (on first use)

    assert callable(normalize) and train.__module__ == "napari_microseg.training.trainer"


def test_manifest_single_source_of_truth():
    root_manifest = ROOT / "napari.yaml"
    pkg_manifest = PKG / "napari.yaml"
    assert root_manifest.is_file() and pkg_manifest.is_file()
    assert filecmp.cmp(root_manifest, pkg_manifest, shallow=False), "napari.yaml in the package differs from the top-level one"


def test_manifest_valid_and_lists_four_widgets():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_file(ROOT / "napari.yaml")
    manifest.validate_imports()
    names = {w.display_name for w in manifest.contributions.widgets}
    assert {"Simulation", "Training", "Segmentation", "Tracking"} <= names


def test_console_script_help_and_version():
    result = subprocess.run([sys.executable, "-m", "napari_microseg.cli", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and napari_microseg.__version__ in result.stdout
    result = subprocess.run([sys.executable, "-m", "napari_microseg.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "usage: microseg" in result.stdout


def _all_parsers(parser, path=()):
    """Every (sub)parser of the ``microseg`` command with its subcommand path."""
    import argparse

    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _all_parsers(child, path + (name,))


def test_every_option_of_every_subcommand_is_explained():
    """Each option has help text; help never shows a meaningless "(default: None)"; each subcommand has a description."""
    from napari_microseg.cli import build_parser

    for path, parser in _all_parsers(build_parser()):
        command = " ".join(("microseg",) + path)
        assert path == () or parser.description, f"{command}: no description"
        for action in parser._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, f"{command} {action.option_strings[0]}: no help text"
        text = parser.format_help()
        assert "(default: None)" not in text and "(default: False)" not in text, command
        assert max(len(line) for line in text.splitlines()) <= 105, f"{command}: help lines too long to read"
