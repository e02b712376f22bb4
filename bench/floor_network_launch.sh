#!/usr/bin/env bash
# The floor for `corral launch --network` (no --wait): the least a plain script must do to get a
# VM running on an existing managed network with QMP answering. A tap on the bridge with the
# network's MTU; the VM's DHCP reservation and DNS name added to dnsmasq's hosts files and
# dnsmasq told to reread them (SIGHUP, then wait until its log says so, as corral does so the
# name resolves when launch returns); then floor_launch.sh: the qcow2 overlay, QEMU detached,
# QMP polled until it answers.
#
#   floor_network_launch.sh NETDIR BRIDGE MTU TAP MAC IP NAME -- DIR BASE BASE_FORMAT SIZE -- QEMU ARGS...
#
# NETDIR is the network's state directory (dhcp-hosts, dns-hosts, dnsmasq.pid, dnsmasq.log).
set -eu

netdir=$1 br=$2 mtu=$3 tap=$4 mac=$5 ip=$6 name=$7
shift 7
[ "$1" = "--" ] && shift

ip tuntap add dev "$tap" mode tap
ip link set "$tap" mtu "$mtu" master "$br" up
echo "$mac,$ip,$name" >> "$netdir/dhcp-hosts"
echo "$ip $name" >> "$netdir/dns-hosts"
offset=$(stat -c %s "$netdir/dnsmasq.log")
kill -HUP "$(cat "$netdir/dnsmasq.pid")"
until tail -c +"$((offset + 1))" "$netdir/dnsmasq.log" | grep -q "read $netdir/dns-hosts"; do
    sleep 0.002
done
exec bash "$(dirname "$0")/floor_launch.sh" "$@"
