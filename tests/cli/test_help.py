"""Every command's --help renders: option help is rich markup, where `[/udp]` would be a
closing tag and end `--help` in a traceback."""

from __future__ import annotations

import click
import pytest
import typer
from typer.testing import CliRunner

from corral.cli.app import app


def commands() -> list[list[str]]:
    root = typer.main.get_command(app)
    out: list[list[str]] = []

    def walk(cmd: click.Command, path: list[str]) -> None:
        out.append(path)
        if isinstance(cmd, click.Group):
            for name, sub in cmd.commands.items():
                walk(sub, [*path, name])

    walk(root, [])
    return out


@pytest.mark.parametrize("path", commands(), ids=lambda p: " ".join(p) or "corral")
def test_help_renders(path: list[str]) -> None:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_launch_help_shows_network_and_publish() -> None:
    output = CliRunner().invoke(app, ["launch", "--help"], env={"COLUMNS": "200"}).output
    assert "NAME[,ip=ADDR][,mac=MAC]" in output
    assert "[ADDR:]HOSTPORT:GUESTPORT[/udp]" in output
