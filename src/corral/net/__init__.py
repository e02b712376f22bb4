"""Managed networks: a Linux bridge per network, one dnsmasq each for DHCP and DNS, and NAT,
isolation and published ports in one nftables table that corral alone owns (`inet corral`).

State lives in $CORRAL_HOME/networks/NAME/ (layout.NetworkFiles); what exists on the host is
made to match it by `manage.reconcile`, so a killed command never leaves a bridge, tap, dnsmasq
or rule behind. The instance layer gives VMs NICs through `attach`, `detach` and `publish`.
"""
