"""``microseg demo``: the main job on an embedded default.

Until the full pipeline lands this checks, headless, that the plugin's
manifest, widgets' modules and shipped sample load, and writes a summary.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the main job on embedded sample data", description=__doc__)
    p.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from npe2 import PluginManifest

    from .._sample_data import ccd_fe55, dsb2018_nuclei
    from ..io.atomic import atomic_write_text

    manifest = PluginManifest.from_file(Path(__file__).parents[1] / "napari.yaml")
    manifest.validate_imports()
    samples = {name: [tuple(d.shape) for d, _, _ in fn()] for name, fn in [("dsb2018", dsb2018_nuclei), ("ccd_fe55", ccd_fe55)]}
    out = Path(args.out)
    summary = {"widgets": [w.display_name for w in manifest.contributions.widgets], "samples": samples}
    atomic_write_text(out / "plugin_check.json", json.dumps(summary, indent=2))
    print(f"plugin and samples load: {summary}; written {out / 'plugin_check.json'}")
    return 0
