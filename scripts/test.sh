#!/usr/bin/env bash
# Set up (idempotent) and run the test suite under a virtual display. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export MICROSEG_TEST_ARTIFACTS=${MICROSEG_TEST_ARTIFACTS:-$PWD/test-artifacts}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
cmd=(.venv/bin/python -m pytest "$@")
if [ -z "${DISPLAY:-}" ] && command -v xvfb-run >/dev/null 2>&1; then
  cmd=(xvfb-run -a -s "-screen 0 1920x1200x24" "${cmd[@]}")
fi
set +e
"${cmd[@]}"
rc=$?
set -e
if [ "$rc" = 5 ]; then
  echo "[test] pytest collected no tests: treating as a failure" >&2
  exit 1
fi
exit "$rc"
