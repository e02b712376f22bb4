#!/usr/bin/env bash
# The floor for a cold boot to ready: QEMU with ITS OWN defaults, run the way a new user would
# (after the example in cloud-localds(1)), not corral's command line.
#
#   floor_cold.sh DIR BASE KERNEL INITRD CMDLINE SIZE CPUS MEMORY_MIB SSH_PORT SSH_KEY USER
#
# A qcow2 overlay on BASE; a NoCloud seed made with cloud-localds (cloud-image-utils, which
# calls genisoimage) from a two-line user-data and meta-data; then qemu-system-x86_64 with -m,
# -smp, both drives as if=virtio, user networking with one ssh hostfwd, -nographic (the serial
# console to a log file) and, because corral's Debian image has no bootloader, -kernel, -initrd
# and -append, and the NIC's model is virtio-net-pci (Debian's cloud kernel has no driver for
# QEMU's default e1000: with it the guest has no network; Debian's own cloud images need the
# same). Everything else is QEMU's default: machine pc (i440fx), CPU qemu64, accelerator TCG,
# VGA, no rng. Then it retries `ssh ... cloud-init status --wait`
# (0.1 s between attempts, like corral's own ssh retry) until it exits 0, with a ConnectTimeout
# of 10 s like corral's wait for the banner (1 s, under load, kills sshd's pre-auth children
# before they can greet, over and over). Prints QEMU's pid;
# QEMU keeps running, the caller ends it. DIR must exist and be empty.
#
# FLOOR_QEMU_ARGS (unset for the floor itself) adds arguments to QEMU's command line: the
# benchmark uses it only to price single choices against the floor (e.g. `-cpu max`).
set -eu

dir=$1 base=$2 kernel=$3 initrd=$4 cmdline=$5 size=$6 cpus=$7 memory=$8 port=$9 key=${10} user=${11}

qemu-img create -q -f qcow2 -b "$base" -F qcow2 "$dir/disk.qcow2" "$size"
cat >"$dir/user-data" <<EOF
#cloud-config
ssh_authorized_keys: ["$(cat "$key.pub")"]
EOF
printf 'instance-id: %s\nlocal-hostname: floor\n' "$(basename "$dir")" >"$dir/meta-data"
cloud-localds "$dir/seed.img" "$dir/user-data" "$dir/meta-data"

setsid qemu-system-x86_64 \
    -m "$memory" -smp "$cpus" \
    -drive "file=$dir/disk.qcow2,if=virtio" \
    -drive "file=$dir/seed.img,if=virtio,format=raw" \
    -nic "user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:$port-:22" \
    -kernel "$kernel" -initrd "$initrd" -append "$cmdline" \
    -nographic ${FLOOR_QEMU_ARGS:-} </dev/null >"$dir/console.log" 2>&1 &
pid=$!

end=$((SECONDS + 1700))
while :; do
    rc=0
    ssh -F /dev/null -i "$key" -p "$port" \
        -o BatchMode=yes -o ConnectTimeout=10 -o IdentitiesOnly=yes \
        -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR \
        "$user@127.0.0.1" cloud-init status --wait >"$dir/status" 2>/dev/null || rc=$?
    [ "$rc" = 0 ] && break
    if [ "$rc" != 255 ]; then
        echo "cloud-init status --wait exited $rc:" >&2
        cat "$dir/status" >&2
        kill -9 "$pid"
        exit 1
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
        tail -20 "$dir/console.log" >&2
        exit 1
    fi
    if [ "$SECONDS" -ge "$end" ]; then
        kill -9 "$pid"
        echo "cloud-init was not done within 1700 s" >&2
        exit 1
    fi
    sleep 0.1
done
echo "$pid"
