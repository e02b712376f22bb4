#!/usr/bin/env bash
# The main job, from nothing: set up, build the default image if it is missing, launch a VM,
# wait until it is ready, run a command in it, show how to reach it, then stop and remove it.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
name=${CORRAL_DEMO_NAME:-quickstart}

corral doctor
if ! corral image inspect debian-12 >/dev/null 2>&1; then
  corral image build debian-12
fi
trap 'corral rm --force "$name" >/dev/null 2>&1 || true' EXIT
corral launch debian-12 --name "$name" --type c2m2048 --disk-size 8G --wait
corral exec "$name" -- sh -c 'echo "hello from $(hostname)"; uname -sr; cloud-init status'
corral inspect "$name"
corral stop "$name"
corral rm "$name"
trap - EXIT
echo "quickstart: done"
