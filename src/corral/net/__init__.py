"""Managed networks: a Linux bridge per network, one dnsmasq each for DHCP and DNS, and NAT,
isolation and published ports in one nftables table that corral alone owns (`inet corral`).

State lives in $CORRAL_HOME/networks/NAME/ (layout.NetworkFiles); what exists on the host is
made to match it, so a killed command never leaves a bridge, tap, dnsmasq or rule behind.

What the instance layer calls (all take the `Home`; names are checked here):

- `manage.reconcile(home, owner_alive)` before a launch: removes what killed commands half-made
  and, given `owner_alive(vm_name) -> bool`, the NICs of VMs that no longer exist.
- `attach.attach(home, network, vm, mac=None, ip=None) -> Attachment` at launch (tap, MAC,
  address, gateway, DNS, domain, MTU: what `TapNic` and `NicConfig` need);
  `attach.publish(home, vm, network, host_addr, host_port, guest_port, proto)` for --publish;
  `attach.reattach(home, vm)` before a stopped VM starts again (a reboot took its tap away);
  `attach.attachments(home, vm)` to show its NICs; `attach.detach(home, vm)` when it is deleted.
- `caps.NeedsNetAdmin` is what all of them raise without CAP_NET_ADMIN (exit 2, one line).
"""
