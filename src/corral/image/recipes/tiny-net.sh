#!/bin/sh
# corral tiny test guest: bring up the NICs a NoCloud network-config (version 2) describes.
# Usage: corral-net CONFIG HOSTNAME. Installed as /sbin/corral-net; rcS runs it at boot.
#
# Each `ethernets` entry finds its NIC by `match: macaddress` (else by the entry's own name),
# renames it to `set-name` (a matched NIC without one keeps its name, as with netplan), sets `mtu`, then either runs udhcpc (`dhcp4: true`, the hostname
# sent so the DHCP server's DNS learns it) or adds `addresses`, `gateway4`/`gateway6`, `routes`
# and `nameservers`. Exit status 1 when no entry could be applied (rcS then falls back to the
# user-mode defaults). The YAML is flattened by netconfig.awk; what it says is checked here
# before it reaches `ip`.
set -u
config=$1 hostname=$2
run=/run/net
flat=$run/config
mkdir -p "$run"

say() { echo "corral-net: $*" >&2; }

awk -f /usr/share/corral/netconfig.awk "$config" | sed 's#^network/##' >"$flat"

get() { # PATH: the value at PATH (empty if none)
    awk -v k="$1" '$1 == k { sub(/^[^ ]* /, ""); print; exit }' "$flat"
}
items() { # PATH: the values of the sequence at PATH, one a line
    awk -v p="$1/" 'index($1, p) == 1 && substr($1, length(p) + 1) ~ /^[0-9]+$/ {
        sub(/^[^ ]* /, ""); print }' "$flat"
}
indices() { # PATH: the item numbers of the sequence (of mappings) at PATH
    awk -F/ -v p="$1/" 'index($0, p) == 1 { n = split(p, parts, "/"); print $n }' "$flat" | uniq
}
is_ifname() { echo "$1" | grep -qE '^[A-Za-z0-9_.-]{1,15}$'; }
is_true() { case "$1" in true | True | TRUE | yes | on) return 0 ;; esac; return 1; }

version=$(get version)
if [ "$version" != 2 ]; then
    say "network-config version ${version:-(none)} is not supported (only version 2)"
    exit 1
fi

# 1. Find each entry's NIC and take it down under a temporary name, so that renaming eth1 to
#    eth0 and eth0 to eth1 cannot collide.
n=0
: >"$run/plan"
for id in $(awk -F/ '$1 == "ethernets" && NF > 2 { print $2 }' "$flat" | uniq); do
    mac=$(get "ethernets/$id/match/macaddress" | tr 'A-F' 'a-f')
    name=$(get "ethernets/$id/set-name")
    dev=
    if [ -n "$mac" ]; then
        if ! echo "$mac" | grep -qE '^[0-9a-f]{2}(:[0-9a-f]{2}){5}$'; then
            say "$id: invalid MAC address $mac"
            continue
        fi
        for path in /sys/class/net/*; do
            [ "$(cat "$path/address" 2>/dev/null)" = "$mac" ] && dev=${path##*/}
        done
    elif [ -e "/sys/class/net/$id" ]; then
        dev=$id
    fi
    [ -n "$name" ] || name=$dev
    if [ -z "$dev" ] || ! is_ifname "$name"; then
        say "$id: no NIC with MAC ${mac:-(none)}, or an invalid name ${name:-(none)}: skipped"
        continue
    fi
    ip link set dev "$dev" down
    ip link set dev "$dev" name "cn$n"
    echo "$id cn$n $name" >>"$run/plan"
    n=$((n + 1))
done
[ "$n" -gt 0 ] || { say "no NIC of network-config was found"; exit 1; }

# 2. Name, configure and raise each.
while read -r id tmp name; do
    ip link set dev "$tmp" name "$name" || name=$tmp
    mtu=$(get "ethernets/$id/mtu")
    if [ -n "$mtu" ]; then
        case "$mtu" in *[!0-9]*) say "$id: invalid MTU $mtu" ;; *) ip link set dev "$name" mtu "$mtu" ;; esac
    fi
    ip link set dev "$name" up
    resolv=$run/resolv.static.$name # udhcpc keeps its own resolv.$name beside it
    search=$(echo $(items "ethernets/$id/nameservers/search"))
    {
        [ -n "$search" ] && echo "search $search"
        items "ethernets/$id/nameservers/addresses" | while read -r server; do
            echo "nameserver $server"
        done
    } >"$resolv"
    if is_true "$(get "ethernets/$id/dhcp4")"; then
        # Up to ~10 s for a first lease, then udhcpc carries on in the background (renewals).
        udhcpc -i "$name" -s /usr/share/udhcpc/default.script -p "$run/udhcpc.$name.pid" \
            -x "hostname:$hostname" -O mtu -O search -b -t 10 -T 1 -A 3 -S </dev/null
    fi
    items "ethernets/$id/addresses" | while read -r address; do # one argument each, unsplit
        ip addr add "$address" dev "$name" || say "$id: cannot add address $address"
    done
    gateway=$(get "ethernets/$id/gateway4")
    [ -n "$gateway" ] && { ip route add default via "$gateway" dev "$name" || say "$id: no route via $gateway"; }
    gateway=$(get "ethernets/$id/gateway6")
    [ -n "$gateway" ] && { ip -6 route add default via "$gateway" dev "$name" || say "$id: no route via $gateway"; }
    for i in $(indices "ethernets/$id/routes"); do
        to=$(get "ethernets/$id/routes/$i/to")
        via=$(get "ethernets/$id/routes/$i/via")
        [ "$to" = 0.0.0.0/0 ] && to=default
        [ -n "$to" ] && [ -n "$via" ] && { ip route add "$to" via "$via" dev "$name" ||
            say "$id: no route to $to via $via"; }
    done
done <"$run/plan"
corral-resolv
exit 0
