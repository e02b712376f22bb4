"""`corral network create|ls|inspect|rm|up`: managed networks (a bridge, dnsmasq and NAT)."""

from __future__ import annotations

import typer

from corral.cli.context import get_context
from corral.cli.output import out, print_json, print_table
from corral.layout import Home

app = typer.Typer(
    help="Managed networks: a bridge with DHCP, DNS and NAT that VMs join with --network.",
    no_args_is_help=True,
)


@app.command("create")
def create(
    name: str = typer.Argument(..., help="The network's name (lowercase, digits, hyphens)."),
    subnet: str | None = typer.Option(
        None, "--subnet", help="IPv4 subnet, e.g. 10.80.0.0/24 (default: a free 10.x.y.0/24)."
    ),
    ipv6: str | None = typer.Option(
        None, "--ipv6", help="A unique local /64 (fd..::/64), 'auto' for a random one, or 'none'."
    ),
    no_nat: bool = typer.Option(False, "--no-nat", help="Route without masquerading."),
    isolated: bool = typer.Option(
        False, "--isolated", help="No NAT and no route out: VMs reach only each other and the host."
    ),
    domain: str = typer.Option("corral", "--domain", help="DNS domain of the VMs' names."),
    mtu: int = typer.Option(1500, "--mtu", help="MTU of the bridge, the taps and the guests."),
) -> None:
    """Create a network: its bridge, dnsmasq (DHCP and DNS) and NAT rules."""
    from corral.net import manage

    options = manage.CreateOptions(
        subnet=subnet, ipv6=ipv6, nat=not no_nat, isolated=isolated, domain=domain, mtu=mtu
    )
    record = manage.create(get_context().home, name, options)
    out.print(f"created network {record.name}: {record.subnet} on {record.bridge}", markup=False)


@app.command("ls")
def ls(json_out: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List networks."""
    from corral.net import manage

    home = _reconciled()
    rows = manage.summary(home)
    if json_out:
        print_json(rows)
        return
    print_table(
        ("NAME", "BRIDGE", "SUBNET", "IPV6", "MODE", "VMS", "STATE"),
        [(r["name"], r["bridge"], r["subnet"], r["ipv6"] or "-", _mode(r), r["vms"],
          "up" if r["up"] else "down") for r in rows],
    )  # fmt: skip


def _reconciled() -> Home:
    """The state directory, after what killed commands left is gone: half-made networks, and
    the NICs of launches killed midway (their instances are reaped first)."""
    from corral.instance.registry import reap_stale
    from corral.net import manage

    home = get_context().home
    reap_stale(home)
    manage.reconcile(home)
    return home


def _mode(row: dict[str, object]) -> str:
    return "isolated" if row["isolated"] else ("nat" if row["nat"] else "routed")


@app.command("inspect")
def inspect(
    name: str = typer.Argument(..., help="The network's name."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show a network: bridge, subnets, gateway, DHCP range and its VMs' MACs and addresses."""
    from corral.net import manage

    home = _reconciled()
    data = manage.inspect(home, name)
    if json_out:
        print_json(data)
        return
    for key in ("name", "bridge", "subnet", "gateway", "ipv6", "gateway6", "domain", "mtu"):
        out.print(f"{key + ':':12}{data[key] if data[key] is not None else '-'}", markup=False)
    out.print(f"{'dhcp:':12}{data['dhcp_start']} - {data['dhcp_end']}", markup=False)
    out.print(f"{'mode:':12}{_mode(data)}", markup=False)
    out.print(f"{'state:':12}{'up' if data['up'] else 'down'}", markup=False)
    if data["vms"]:
        out.print("")
        print_table(
            ("VM", "MAC", "ADDRESS", "LEASED", "TAP"),
            [(v["name"], v["mac"], v["ipv4"], v["leased"] or "-", v["tap"]) for v in data["vms"]],
        )


@app.command("rm")
def rm(name: str = typer.Argument(..., help="The network's name.")) -> None:
    """Remove a network (refused while VMs are on it)."""
    from corral.net import manage

    manage.remove(_reconciled(), name)
    out.print(f"removed network {name}", markup=False)


@app.command("up")
def up(name: str | None = typer.Argument(None, help="One network (default: all).")) -> None:
    """Recreate networks' bridges, dnsmasq and rules (e.g. after the host restarted)."""
    from corral.net import manage

    for record in manage.up(get_context().home, name):
        out.print(f"network {record.name} is up on {record.bridge}", markup=False)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="network")
