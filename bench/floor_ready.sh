#!/usr/bin/env bash
# The floor for time to ready: create the qcow2 overlay, start QEMU detached with the given
# command line, and poll ssh until `true` runs in the guest.
#
#   floor_ready.sh DIR BASE BASE_FORMAT SIZE SSH_PORT SSH_KEY [USER] -- QEMU ARGS...
#
# DIR holds the instance's files (the QEMU command must name DIR/disk.qcow2, DIR/qmp.sock, ...)
# and already contains a seed ISO that authorises SSH_KEY. QEMU's user networking accepts TCP
# before the guest listens, hence the short ConnectTimeout; between attempts it sleeps 0.1 s,
# like corral's own ssh retry. Prints QEMU's pid; QEMU keeps running, the caller ends it.
set -eu

dir=$1 base=$2 base_fmt=$3 size=$4 port=$5 key=$6
shift 6
user=root
if [ "$1" != "--" ]; then user=$1; shift; fi
[ "$1" = "--" ] && shift

qemu-img create -q -f qcow2 -b "$base" -F "$base_fmt" "$dir/disk.qcow2" "$size"
rm -f "$dir/qmp.sock" "$dir/serial.sock" "$dir/qemu.pid"
setsid "$@" </dev/null >"$dir/qemu.stderr" 2>&1 &
pid=$!

end=$((SECONDS + 300))
until ssh -F /dev/null -i "$key" -p "$port" \
    -o BatchMode=yes -o ConnectTimeout=1 -o IdentitiesOnly=yes \
    -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR \
    "$user@127.0.0.1" true 2>/dev/null; do
    if ! kill -0 "$pid" 2>/dev/null; then
        cat "$dir/qemu.stderr" >&2
        exit 1
    fi
    if [ "$SECONDS" -ge "$end" ]; then
        kill -9 "$pid"
        echo "ssh did not answer within 300 s" >&2
        exit 1
    fi
    sleep 0.1
done
echo "$pid"
