#!/bin/sh
# corral tiny test guest: udhcpc's hook (/usr/share/udhcpc/default.script), run as
# `default.script EVENT` with the lease in the environment (ip, mask, router, dns, domain,
# search, mtu; see busybox's udhcpc). It sets the address, default route, MTU and resolver.
run=/run/net
mkdir -p "$run"
case "$1" in
deconfig)
    ip -4 addr flush dev "$interface"
    ip link set dev "$interface" up
    rm -f "$run/resolv.$interface" "$run/lease.$interface"
    corral-resolv
    ;;
bound | renew)
    [ -n "${mtu:-}" ] && ip link set dev "$interface" mtu "$mtu"
    # A new lease replaces the old address; a renewal of the same one keeps connections.
    [ "$(cat "$run/lease.$interface" 2>/dev/null)" = "$ip/$mask" ] || ip -4 addr flush dev "$interface"
    ip addr replace "$ip/$mask" dev "$interface" ${broadcast:+broadcast "$broadcast"}
    if [ -n "${router:-}" ]; then
        while ip -4 route del default dev "$interface" 2>/dev/null; do :; done
        metric=0
        for gateway in $router; do
            ip route add default via "$gateway" dev "$interface" metric "$metric" 2>/dev/null
            metric=$((metric + 1))
        done
    fi
    {
        [ -n "${search:-}${domain:-}" ] && echo "search ${search:-$domain}"
        for server in ${dns:-}; do echo "nameserver $server"; done
    } >"$run/resolv.$interface"
    echo "$ip/$mask" >"$run/lease.$interface"
    corral-resolv
    ;;
esac
exit 0
