"""`corral completion SHELL`: the scripts, what a <TAB> completes (commands, options, instance
and image names from the state directory), and that ordinary start-up imports none of it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CORRAL = str(Path(sys.executable).parent / "corral")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A state directory with two instances and two images (as listings: nothing more is read)."""
    for name in ("web1", "db2"):
        (tmp_path / "instances" / name).mkdir(parents=True)
    (tmp_path / "images" / "manifests").mkdir(parents=True)
    for name in ("tiny", "debian-12"):
        (tmp_path / "images" / "manifests" / f"{name}.json").write_text("{}")
    return tmp_path


def env(home: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "CORRAL_HOME": str(home), "CORRAL_CONFIG": "/nonexistent", **extra}


def bash_complete(home: Path, line: str) -> list[str]:
    """What bash offers for `line`, through the script `corral completion bash` prints."""
    words = line.split(" ")
    program = (
        f'source <("{CORRAL}" completion bash)\n'
        f"COMP_WORDS=({' '.join(repr(w) for w in words)})\n"
        f"COMP_CWORD={len(words) - 1}\n"
        f'_corral_completion "{CORRAL}"\n'
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    proc = subprocess.run(
        ["bash", "-c", program], env=env(home), capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return [line for line in proc.stdout.splitlines() if line]


def test_bash_completes_commands_options_and_names(home: Path) -> None:
    assert {"start", "stop", "ssh"} <= set(bash_complete(home, "corral s"))
    assert "image" in bash_complete(home, "corral im")
    assert bash_complete(home, "corral stop ") == ["db2", "web1"]
    assert bash_complete(home, "corral exec w") == ["web1"]
    assert bash_complete(home, "corral launch ") == ["debian-12", "tiny"]
    assert bash_complete(home, "corral image rm t") == ["tiny"]
    assert {"--force", "--timeout"} <= set(bash_complete(home, "corral stop --"))
    assert bash_complete(home, "corral launch --name ") == []  # a new name: nothing to offer


def test_zsh_and_fish_answer_with_names(home: Path) -> None:
    for shell in ("zsh", "fish"):
        script = subprocess.run(
            [CORRAL, "completion", shell], capture_output=True, text=True, check=True
        ).stdout
        assert "_CORRAL_COMPLETE=complete_" + shell in script
    zsh = subprocess.run(
        [CORRAL],
        env=env(home, _CORRAL_COMPLETE="complete_zsh", _TYPER_COMPLETE_ARGS="corral stop "),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "web1" in zsh.stdout and "db2" in zsh.stdout, zsh.stderr
    fish = subprocess.run(
        [CORRAL],
        env=env(
            home,
            _CORRAL_COMPLETE="complete_fish",
            _TYPER_COMPLETE_FISH_ACTION="get-args",
            _TYPER_COMPLETE_ARGS="corral launch t",
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert fish.stdout.split() == ["tiny"], fish.stderr


def test_an_unknown_shell_is_one_line_and_exit_2() -> None:
    proc = subprocess.run([CORRAL, "completion", "tcsh"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr == "error: no completion for the shell 'tcsh': bash, zsh, fish\n"
    assert proc.stdout == ""


def imported(*argv: str) -> set[str]:
    """The modules `corral ARGV` imports, from `python -X importtime`."""
    code = (
        f"import sys; sys.argv = ['corral', *{list(argv)!r}]\n"
        "from corral.cli.app import main; main()"
    )
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env=env(Path("/nonexistent")),
    )
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("import time:")]
    return {line.rsplit("|", 1)[1].strip() for line in lines[1:]}  # (the first is the header)


def test_start_up_imports_no_completion_nor_metrics_code() -> None:
    """`corral version` (every command's start-up) imports what it did before completion and
    metrics existed: completion's module only when completing, the server's never."""
    version = imported("version")
    with_completion = imported("completion", "bash")
    assert "corral.cli.completion" in with_completion - version
    heavy = {"corral.cli.completion", "prometheus_client", "fastapi", "corral.node.metrics"}
    assert not heavy & version
    assert not {m for m in version if m.startswith(("corral.api", "corral.control", "sqlalchemy"))}
