#!/usr/bin/env bash
# Floor for `corral image build debian-12`: the same bootstrap (mmdebstrap, same packages and
# sources, same apt cache), the same ext4 and qcow2 steps, and nothing else: no configuration
# for cloud-init, no checks, no store import. Usage: floor_build.sh OUTDIR APT_CACHE PACKAGES
set -euo pipefail
out=$1 cache=$2 packages=$3
root="$out/rootfs"
mkdir -p "$out" "$cache"
mmdebstrap --quiet --mode=root --variant=apt --format=directory --include="$packages" \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' --dpkgopt='path-exclude=/usr/share/info/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
  --dpkgopt=force-unsafe-io \
  --setup-hook="mkdir -p \"\$1/var/cache/apt/archives\" && cp -p -t \"\$1/var/cache/apt/archives\" $cache/*.deb 2>/dev/null || true" \
  --customize-hook="cp -p -u -t $cache \"\$1\"/var/cache/apt/archives/*.deb 2>/dev/null || true" \
  bookworm "$root" \
  "deb http://deb.debian.org/debian bookworm main" \
  "deb http://deb.debian.org/debian bookworm-updates main" \
  "deb http://deb.debian.org/debian-security bookworm-security main"
cp "$root"/boot/vmlinuz-* "$out/vmlinuz"
cp "$root"/boot/initrd.img-* "$out/initrd.img"
mkfs.ext4 -q -d "$root" -L rootfs "$out/root.raw" 2G
qemu-img convert -q -c -O qcow2 -o compression_type=zstd "$out/root.raw" "$out/disk.qcow2"
rm -rf "$root" "$out/root.raw"
