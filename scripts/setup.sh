#!/usr/bin/env bash
# Set up corral on Debian 12: the system packages it drives (apt-get, with sudo when not root)
# and a virtualenv in .venv with corral and its test tools installed.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  qemu-system-x86 qemu-utils      # QEMU and qemu-img / qemu-io
  mmdebstrap e2fsprogs            # corral image build debian-12
  openssh-client                  # corral ssh
  postgresql                      # control-plane tests run against a real PostgreSQL
  cpio xz-utils ca-certificates   # tiny test guest, compressed images
  busybox                         # copy-step tests run the guest side under busybox ash
  sqlite3                         # bench/api.py: the SQLite floor
  dnsmasq-base nftables iproute2  # managed networks: DHCP/DNS per network, NAT, bridges
  iperf3                          # bench/network.py: throughput on bridges and forwards
  chromium chromium-driver        # the /ui browser tests (headless, driven by Selenium)
  cloud-image-utils genisoimage   # bench/floor_cold.sh: the floor's seed, as cloud-localds makes it
  python3 python3-venv python3-pip
)

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi

missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
# The tiny test guest is built from packages fetched with apt-get download: lists must exist.
if [ ${#missing[@]} -gt 0 ] || [ -z "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v lock)" ]; then
  $sudo apt-get update -q
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

python=${PYTHON:-python3}
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
  echo "setup: corral needs Python >= 3.11 ($python is $("$python" --version))" >&2
  exit 1
}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check -c constraints.txt -e '.[test]'
echo "setup: done; corral is at $(pwd)/.venv/bin/corral"
