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
exec .venv/bin/pytest --durations=30 "$@"  # the slowest tests, so the suite stays cheap
