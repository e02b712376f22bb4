#!/usr/bin/env bash
# The floor for `corral network create` / `rm`: the least a plain script must do for the same
# network. create: a bridge with its address, up; IP forwarding; the same nftables document corral
# applies (`nft -j -f`); dnsmasq with the same configuration, daemonised with a pid file. rm: kill
# that dnsmasq, delete the bridge, delete the table.
#
#   floor_network.sh create DIR BRIDGE GATEWAY/PREFIX NFT_JSON DNSMASQ_CONF
#   floor_network.sh rm DIR BRIDGE
set -eu

case $1 in
create)
    dir=$2 br=$3 addr=$4 rules=$5 conf=$6
    ip link add "$br" type bridge
    ip addr add "$addr" dev "$br"
    ip link set "$br" up
    echo 1 > /proc/sys/net/ipv4/ip_forward
    nft -j -f "$rules"
    : > "$dir/leases"
    /usr/sbin/dnsmasq --conf-file="$conf" --pid-file="$dir/dnsmasq.pid" \
        --dhcp-leasefile="$dir/leases" --user=root --group=root
    ;;
rm)
    dir=$2 br=$3
    kill "$(cat "$dir/dnsmasq.pid")"
    ip link del "$br"
    nft delete table inet corral
    ;;
esac
