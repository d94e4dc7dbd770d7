#!/usr/bin/env bash
# Set up (idempotent) and run the main job: `microseg demo` (extra arguments are passed on).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/microseg demo "$@"
