#!/usr/bin/env bash
# Floors for an uncached N-step build of trivial `run` steps, given a QEMU command line as
# floor_ready.sh takes it:
#
#   floor_build_steps.sh one-boot  N DIR BASE BASE_FMT SIZE PORT KEY USER -- QEMU ARGS...
#   floor_build_steps.sh per-step  N DIR BASE BASE_FMT SIZE PORT KEY USER -- QEMU ARGS...
#
# one-boot: boot once (floor_ready.sh), then N ssh commands (`echo i > /root/step-i; sync`):
# the least a one-boot build can do. per-step: obuilder's way, for each step a new overlay on
# the previous step's disk, a boot to ssh, the command, and the VM killed (obuilder shuts it
# down with ACPI, which only costs more).
set -eu
mode=$1 n=$2 dir=$3 base=$4 fmt=$5 size=$6 port=$7 key=$8 user=$9
shift 9
[ "$1" = "--" ] && shift
here=$(dirname "$0")
ssh_run() {
    ssh -F /dev/null -i "$key" -p "$port" -o BatchMode=yes -o IdentitiesOnly=yes \
        -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR \
        "$user@127.0.0.1" "$1"
}
if [ "$mode" = one-boot ]; then
    pid=$(bash "$here/floor_ready.sh" "$dir" "$base" "$fmt" "$size" "$port" "$key" "$user" -- "$@")
    for i in $(seq "$n"); do ssh_run "echo $i > /root/step-$i; sync"; done
    kill -9 "$pid"
    exit 0
fi
previous=$base previous_fmt=$fmt
for i in $(seq "$n"); do
    step="$dir/step-$i"
    mkdir -p "$step"
    cp "$dir/seed.iso" "$step/seed.iso"
    args=()
    for a in "$@"; do args+=("${a//$dir\//$step/}"); done
    pid=$(bash "$here/floor_ready.sh" "$step" "$previous" "$previous_fmt" "$size" "$port" "$key" "$user" -- "${args[@]}")
    ssh_run "echo $i > /root/step-$i; sync"
    kill -9 "$pid"
    while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
    previous=$step/disk.qcow2 previous_fmt=qcow2
done
