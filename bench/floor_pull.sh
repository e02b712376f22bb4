#!/usr/bin/env bash
# The floor for `corral image pull`: download a file with curl, then hash it with sha256sum
# and compare with the expected digest. Usage: floor_pull.sh URL OUTFILE SHA256
set -euo pipefail
url=$1 out=$2 expected=$3
curl --silent --show-error --fail -o "$out" "$url"
actual=$(sha256sum "$out" | cut -d' ' -f1)
[ "$actual" = "$expected" ] || { echo "sha256 mismatch: $actual" >&2; exit 1; }
