"""Shell completion: `corral completion bash|zsh|fish` prints typer's completion script; the
shell then runs `corral` with `_CORRAL_COMPLETE` set at each <TAB>, and `complete` answers.

Commands and options come from typer's and click's own machinery. Instance and image names
are read from the state directory's listings (instances/, images/manifests/): no record is
parsed, no QEMU probed, nothing else imported, so a <TAB> costs little more than `corral
version`. This module is imported only when completing or printing a script, never on an
ordinary start-up.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from click.shell_completion import CompletionItem
from typer.completion import completion_init, get_completion_script

from corral.config import load_config
from corral.errors import CorralError, InvalidInput
from corral.layout import Home

PROG = "corral"
COMPLETE_VAR = "_CORRAL_COMPLETE"
SHELLS = ("bash", "zsh", "fish")

# Which parameters name what: arguments of the top-level commands called `name`/`names` are
# instances (launch's image, `corral image ...`'s names and every --image are images).
INSTANCE_PARAMS = frozenset({"name", "names"})
IMAGE_PARAMS = frozenset({"image"})
IMAGE_GROUP = "image"
NEW_NAMES = frozenset({"launch"})  # commands whose name argument names something new


def script(shell: str) -> str:
    """The completion script of `shell`."""
    if shell not in SHELLS:
        raise InvalidInput(f"no completion for the shell {shell!r}: {', '.join(SHELLS)}")
    return get_completion_script(prog_name=PROG, complete_var=COMPLETE_VAR, shell=shell)


def complete(command: click.Command) -> None:
    """Answer the shell's completion request (click exits when done)."""
    completion_init()  # typer's classes for the shells, which its scripts speak to
    attach(command)
    command.main(prog_name=PROG, complete_var=COMPLETE_VAR)


def attach(root: click.Command) -> None:
    """Give the parameters that name instances or images their completions."""
    if not isinstance(root, click.Group):
        return
    for name, command in root.commands.items():
        in_image_group = name == IMAGE_GROUP
        targets = (
            command.commands.items() if isinstance(command, click.Group) else [(name, command)]
        )
        for sub_name, sub in targets:
            for param in sub.params:
                kind = _kind(param, sub_name, in_image_group)
                if kind is not None:
                    param._custom_shell_complete = _completer(kind)


def _kind(param: click.Parameter, command: str, in_image_group: bool) -> str | None:
    if param.name in IMAGE_PARAMS:
        return "image"
    if isinstance(param, click.Argument) and param.name in INSTANCE_PARAMS:
        if in_image_group:
            return "image"
        return None if command in NEW_NAMES else "instance"
    return None


def _completer(kind: str) -> Callable[[click.Context, click.Parameter, str], list[Any]]:
    def complete_names(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
        found = home()
        if found is None:
            return []
        names = instance_names(found) if kind == "instance" else image_names(found)
        return [CompletionItem(n) for n in names if n.startswith(incomplete)]

    return complete_names


def home() -> Home | None:
    """The state directory, as corral.config finds it (CORRAL_HOME, the config file)."""
    try:
        return Home(load_config().home)
    except CorralError:  # a broken config file: no names, and no traceback in the shell
        return None


def instance_names(home: Home) -> list[str]:
    return _listing(home.instances, lambda p: p.is_dir(), lambda p: p.name)


def image_names(home: Home) -> list[str]:
    return _listing(home.manifests, lambda p: p.suffix == ".json", lambda p: p.stem)


def _listing(where: Path, keep: Callable[[Path], bool], name: Callable[[Path], str]) -> list[str]:
    try:
        return sorted(name(p) for p in where.iterdir() if keep(p) and not p.name.startswith("."))
    except OSError:
        return []
