"""Check that btrack's native tracker library loads; rebuild it from source if not.

btrack 0.7.0 wheels ship ``libtracker.so`` linked against a newer libstdc++
than Debian 12 provides (``GLIBCXX_3.4.32 not found``). The wheel also ships the
C++ sources (``btrack/src``, ``btrack/include``), so we compile them here with
the system g++ and Eigen headers (Debian package ``libeigen3-dev``).

Usage: ``python scripts/repair_btrack.py`` (exit 0 when btrack loads at the end).
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

EIGEN_CANDIDATES = ("/usr/include/eigen3", "/usr/local/include/eigen3")


def btrack_dir() -> Path:
    spec = importlib.util.find_spec("btrack")
    if spec is None or spec.origin is None:
        raise SystemExit("btrack is not installed in this environment")
    return Path(spec.origin).parent


def library_loads(lib: Path) -> str | None:
    """Return None when the library loads, else the loader's error message."""
    try:
        ctypes.CDLL(str(lib))
    except OSError as err:
        return str(err)
    return None


def build(pkg: Path) -> None:
    eigen = next((p for p in EIGEN_CANDIDATES if Path(p, "Eigen", "Dense").exists()), None)
    if eigen is None:
        raise SystemExit("Eigen headers not found: install libeigen3-dev (apt-get install libeigen3-dev)")
    if shutil.which("g++") is None:
        raise SystemExit("g++ not found: install g++ (apt-get install g++)")
    with tempfile.TemporaryDirectory() as tmp:
        # the sources include "eigen/Eigen/Dense": give them that layout
        os.symlink(eigen, Path(tmp, "eigen"))
        sources = sorted(str(p) for p in (pkg / "src").glob("*.cc"))
        out = Path(tmp, "libtracker.so")
        cmd = ["g++", "-O3", "-std=c++17", "-fPIC", "-shared", "-w",
               f"-I{pkg / 'include'}", f"-I{tmp}", *sources, "-o", str(out)]
        print("btrack: building native library ...", flush=True)
        subprocess.run(cmd, check=True)
        target = pkg / "libs" / "libtracker.so"
        backup = target.with_suffix(".so.orig")
        if target.exists() and not backup.exists():
            shutil.copy2(target, backup)
        tmp_target = target.with_suffix(".so.new")
        shutil.copy2(out, tmp_target)
        os.replace(tmp_target, target)


def main() -> int:
    pkg = btrack_dir()
    lib = pkg / "libs" / "libtracker.so"
    err = library_loads(lib)
    if err is None:
        print(f"btrack: native library loads ({lib})")
        return 0
    print(f"btrack: native library does not load: {err}")
    build(pkg)
    err = library_loads(lib)
    if err is not None:
        print(f"btrack: rebuilt library still fails to load: {err}", file=sys.stderr)
        return 1
    print(f"btrack: rebuilt and loads ({lib})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
