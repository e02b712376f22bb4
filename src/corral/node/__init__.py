"""The node: what the control plane asks of one hypervisor host, in-process or over HTTP."""
