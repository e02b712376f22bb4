#!/bin/sh
# corral tiny test guest: system bring-up, run once by busybox init (::sysinit) as /etc/init.d/rcS.
# Mounts, modules, NoCloud seed (hostname, root's ssh keys, instance-id, network-config), the network
# (corral-net, else static slirp), a cloud-init stand-in, acpid for the power button, the guest
# agent, and dropbear.
export PATH=/sbin:/usr/sbin:/bin:/usr/bin

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
mount -t tmpfs -o mode=755,nosuid,nodev tmpfs /run
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp
ln -sf /proc/self/fd /dev/fd
ln -sf /proc/self/fd/0 /dev/stdin
ln -sf /proc/self/fd/1 /dev/stdout
ln -sf /proc/self/fd/2 /dev/stderr

# Modules are listed in dependency order by the builder.
while read -r module; do # (already loaded when the root is on the disk: the loader did it)
    [ -d "/sys/module/$module" ] || insmod "/lib/modules/$module.ko" ||
        echo "corral-tiny: insmod $module failed"
done </lib/modules/load-order

# NoCloud seed: an ISO9660 volume on some virtio disk (the last one, in practice).
yaml_value() { # KEY FILE: the value of a top-level "KEY: value" line, unquoted
    sed -n "s/^$1:[[:space:]]*//p" "$2" | head -n 1 | tr -d "\"'\r" | sed 's/[[:space:]]*$//'
}
ssh_keys() { # FILE...: every ssh public key in seed files, one a line
    grep -ohE "(ssh-(ed25519|rsa|dss)|ecdsa-sha2-nistp[0-9]+|sk-[a-z0-9@.-]+) [A-Za-z0-9+/=]+( [^\"',]*)?" "$@" 2>/dev/null |
        sed 's/[[:space:]]*$//'
}
hostname=tiny
datasource=none detail=DataSourceNone
status=done # a seed can ask for "error" (corral_tiny_status: error) to test failure paths
mkdir -p /mnt/seed /root/.ssh
chmod 700 /root /root/.ssh
for dev in $(ls -r /dev/vd* 2>/dev/null); do # the seed is the last disk
    mount -t iso9660 -o ro "$dev" /mnt/seed 2>/dev/null || continue
    if [ -f /mnt/seed/meta-data ]; then
        datasource=nocloud detail="DataSourceNoCloud [seed=$dev][dsmode=net]"
        name=$(yaml_value local-hostname /mnt/seed/meta-data)
        [ -n "$name" ] && hostname=$name
        yaml_value instance-id /mnt/seed/meta-data >/run/instance-id
        ssh_keys /mnt/seed/user-data /mnt/seed/meta-data >/root/.ssh/authorized_keys
        grep -q '^corral_tiny_status: error' /mnt/seed/user-data 2>/dev/null && status=error
        [ -f /mnt/seed/network-config ] && cp /mnt/seed/network-config /run/network-config
        umount /mnt/seed
        break
    fi
    umount /mnt/seed
done
touch /root/.ssh/authorized_keys
chmod 600 /root/.ssh/authorized_keys
hostname "$hostname"
echo "$hostname" >/etc/hostname
printf '127.0.0.1 localhost\n127.0.1.1 %s\n' "$hostname" >/etc/hosts
syslogd -C64 # an in-memory log: logread (udhcpc logs there)

# The seed's network-config (NICs on taps: static addresses or DHCP), read by corral-net; without
# one (or with nothing in it that applies), QEMU user-mode networking: the guest is always
# 10.0.2.15, gateway 10.0.2.2, DNS 10.0.2.3.
ip link set lo up
if ! { [ -f /run/network-config ] && corral-net /run/network-config "$hostname"; }; then
    ip addr add 10.0.2.15/24 dev eth0
    ip link set eth0 up
    ip route add default via 10.0.2.2
    echo "nameserver 10.0.2.3" >/etc/resolv.conf
fi

# No real cloud-init here: answer `cloud-init status` the way a finished cloud-init does.
cat >/usr/bin/cloud-init <<EOF
#!/bin/sh
# corral tiny guest stand-in for cloud-init: everything it would do was done at boot.
DATASOURCE='$datasource'
DETAIL='$detail'
STATUS='$status'
LAST_UPDATE='$(date -R)'
EOF
cat >>/usr/bin/cloud-init <<'EOF'
case "$1" in
--version | -v) echo "/usr/bin/cloud-init 22.4.2 (corral tiny guest)"; exit 0 ;;
status) shift ;;
*) echo "cloud-init: only 'status' is supported in the corral tiny guest" >&2; exit 1 ;;
esac
format=tabular long=
while [ $# -gt 0 ]; do
    case "$1" in
    --format) format=$2; shift ;;
    --format=*) format=${1#--format=} ;;
    --long | -l) long=1 ;;
    --wait | -w) ;;
    *) echo "cloud-init status: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
case "$format" in
json)
    printf '{\n "boot_status_code": "enabled-by-generator",\n "datasource": "%s",\n' "$DATASOURCE"
    printf ' "detail": "%s",\n "errors": [],\n "extended_status": "%s",\n' "$DETAIL" "$STATUS"
    printf ' "last_update": "%s",\n "recoverable_errors": {},\n "status": "%s"\n}\n' "$LAST_UPDATE" "$STATUS"
    ;;
yaml | tabular)
    echo "status: $STATUS"
    if [ -n "$long" ] || [ "$format" = yaml ]; then
        printf 'extended_status: %s\nboot_status_code: enabled-by-generator\n' "$STATUS"
        printf 'last_update: %s\ndetail:\n%s\nerrors: []\n' "$LAST_UPDATE" "$DETAIL"
    fi
    ;;
*) echo "cloud-init status: unknown format $format" >&2; exit 2 ;;
esac
[ "$STATUS" = done ] # like cloud-init: exit status 1 when it reported an error
EOF
chmod 755 /usr/bin/cloud-init

# ACPI power button (QMP system_powerdown): busybox acpid runs /etc/acpi/PWRF/00000080.
acpid -c /etc/acpi -l /run/acpid.log -p /run/acpid.pid

# The guest agent on the virtio-serial port org.qemu.guest_agent.0, when the machine has one.
corral-agent </dev/null >/dev/null 2>&1 &

mkdir -p /etc/dropbear
dropbearkey -t ed25519 -f /etc/dropbear/dropbear_ed25519_host_key >/dev/null 2>&1
dropbear -s -p 22 -r /etc/dropbear/dropbear_ed25519_host_key -P /run/dropbear.pid
tries=0
until netstat -ltn 2>/dev/null | grep -q ':22 '; do
    tries=$((tries + 1))
    [ $tries -gt 200 ] && { echo "corral-tiny: dropbear is not listening, see logread"; exit 1; }
    sleep 0.05
done
echo "corral-tiny: ready"
