#!/bin/sh
# corral tiny test guest: a tiny QEMU guest agent, installed as /sbin/corral-agent and started by
# rcS. It serves the virtio-serial port named org.qemu.guest_agent.0 with agent.awk, which answers
# the part of qemu-ga's protocol corral uses. A read of a virtio port returns end-of-file while
# nothing is connected on the host side, so awk ends then and the port is opened again shortly.
name=org.qemu.guest_agent.0
state=/run/corral-agent # one directory per command run by guest-exec

find_port() { # the port's device: udev's by-name link if any, else found through sysfs
    if [ -c "/dev/virtio-ports/$name" ]; then
        echo "/dev/virtio-ports/$name"
        return
    fi
    for file in /sys/class/virtio-ports/*/name; do
        [ "$(cat "$file" 2>/dev/null)" = "$name" ] || continue
        dir=${file%/name}
        echo "/dev/${dir##*/}"
        return
    done
}

mkdir -p "$state"
chmod 700 "$state"
cd /
missing=0
port=
while :; do
    [ -c "$port" ] || port=$(find_port)
    if [ -z "$port" ]; then # a machine without the channel: look a few times, then give up
        missing=$((missing + 1))
        [ "$missing" -gt 20 ] && exit 0
        sleep 0.5
        continue
    fi
    # One open file for both directions: a virtio port can be open only once at a time.
    awk -v state="$state" -f /usr/share/corral/agent.awk <>"$port" >&0
    sleep 0.2
done
