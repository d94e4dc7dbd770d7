#!/usr/bin/env bash
# One-time (idempotent) set-up of napari-microseg on a Debian/Ubuntu machine with Python 3.10+.
#  1. system packages for the virtual display, Mesa GL, Qt's xcb libraries, g++ and Eigen
#     (installed with apt-get when missing and we are root; otherwise the command to run is printed)
#  2. a virtual environment in .venv
#  3. torch (CPU build torch==2.13.0 from PyTorch's CPU index, unless TORCH_SPEC / TORCH_INDEX_URL say otherwise)
#  4. the package in editable mode with its dev extras
#  5. btrack's native library: checked, and rebuilt from the wheel's C++ sources if it does not load
# Re-running skips what is done (a stamp keyed on pyproject.toml).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
SYSTEM_PACKAGES=(xvfb xauth libgl1-mesa-dri libglx-mesa0 libegl1 libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0
  libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-xinerama0 libxcb-xfixes0 libxcb-shape0
  libxcb-cursor0 libdbus-1-3 libfontconfig1 libeigen3-dev g++)

log() { printf '[setup] %s\n' "$*"; }

missing=()
if command -v dpkg >/dev/null 2>&1; then
  for pkg in "${SYSTEM_PACKAGES[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
fi
if ! "$PYTHON" -c "import ensurepip, venv" >/dev/null 2>&1; then
  missing+=(python3-venv)  # Debian / Ubuntu ship venv apart from Python
fi
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing system packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    log "WARNING: missing system packages (GUI tests and btrack repair need them):"
    log "  sudo apt-get install ${missing[*]}"
  fi
fi

if [ ! -x .venv/bin/python ]; then
  log "creating virtual environment .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
fi

if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  log "installing $TORCH_SPEC"
  # PyPI's Linux torch wheels are CUDA builds (GBs): the CPU build comes from PyTorch's own index
  # (TORCH_INDEX_URL; empty for the configured indexes only), the configured ones as a fallback
  TORCH_INDEX_URL=${TORCH_INDEX_URL-https://download.pytorch.org/whl/cpu}
  if [ -z "$TORCH_INDEX_URL" ] || ! .venv/bin/pip install -q --retries 1 --timeout 20 --index-url "$TORCH_INDEX_URL" "$TORCH_SPEC"; then
    .venv/bin/pip install -q "$TORCH_SPEC"
  fi
fi

stamp=.venv/.microseg-setup-stamp
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || ! .venv/bin/python -c "import napari_microseg" >/dev/null 2>&1; then
  log "installing napari-microseg (editable) with dev extras"
  .venv/bin/pip install -q -e ".[dev]"
  echo "$want" > "$stamp"
fi

.venv/bin/python scripts/repair_btrack.py
log "ready: .venv/bin/microseg --help"
