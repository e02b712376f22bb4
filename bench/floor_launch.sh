#!/usr/bin/env bash
# The floor for launch overhead: the least a plain script must do to get a VM running with QMP
# answering. Create the qcow2 overlay, start QEMU detached with the given command line, and poll
# its QMP socket until it answers qmp_capabilities.
#
#   floor_launch.sh DIR BASE BASE_FORMAT SIZE -- QEMU ARGS...
#
# DIR holds the instance's files (the QEMU command must name DIR/disk.qcow2, DIR/qmp.sock, ...)
# and already contains the seed ISO (the floor does not build one). Prints QEMU's pid; QEMU keeps
# running, the caller ends it. POLL_PYTHON is the interpreter used for the QMP poll (default
# /usr/bin/python3: isolated mode, no site, so it starts in ~10 ms, and it starts while QEMU does).
set -eu

dir=$1 base=$2 base_fmt=$3 size=$4
shift 4
[ "$1" = "--" ] && shift

qemu-img create -q -f qcow2 -b "$base" -F "$base_fmt" "$dir/disk.qcow2" "$size"
rm -f "$dir/qmp.sock" "$dir/serial.sock" "$dir/qemu.pid"
setsid "$@" </dev/null >"$dir/qemu.stderr" 2>&1 &
pid=$!

"${POLL_PYTHON:-/usr/bin/python3}" -I -S -c '
import os, socket, sys, time
path, pid = sys.argv[1], int(sys.argv[2])
end = time.monotonic() + 60
while time.monotonic() < end:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        sys.exit("QEMU exited")
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(path)
        f = s.makefile("rwb")
        f.readline()
        f.write(b"{\"execute\": \"qmp_capabilities\"}\n")
        f.flush()
        if b"return" in f.readline():
            sys.exit(0)
    except OSError:
        pass
    finally:
        s.close()
    time.sleep(0.01)
sys.exit("QMP did not answer within 60 s")
' "$dir/qmp.sock" "$pid" || { kill -9 "$pid" 2>/dev/null; cat "$dir/qemu.stderr" >&2; exit 1; }
echo "$pid"
