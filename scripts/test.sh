#!/usr/bin/env bash
# Set up everything and run the whole test suite: lint, format check, then pytest with real
# QEMU (the tiny test guest and the Debian 12 image are built by the suite and cached in .cache/).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/pytest "$@"
