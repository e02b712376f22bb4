#!/usr/bin/env bash
# Set up everything and run the whole test suite: lint, format check, layers, types, then pytest
# with real QEMU (the tiny test guest and the Debian 12 image are built by the suite and cached
# in .cache/).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/lint-imports            # the layers in pyproject.toml: nothing imports upward
.venv/bin/mypy                    # src/, types checked

# Tests that boot no VM mostly wait on I/O: four at a time. Tests that boot VMs two at a time
# (two cores; TCG keeps one busy per guest), each module in one worker so its shared guests
# boot once, and every Debian end-to-end test in the same worker (they share one state
# directory). Both runs always happen; the slowest tests are listed so the suite stays cheap.
# Arguments go to both runs (e.g. -k NAME); a run left with no test to run is not a failure.
status=0
run() { .venv/bin/pytest --durations=20 "$@" || { rc=$?; [ $rc -eq 5 ] || status=$rc; }; }
run -n 4 -m "not vm and not e2e" "$@"
run -n 2 --dist loadgroup -m "vm or e2e" "$@"
exit $status
