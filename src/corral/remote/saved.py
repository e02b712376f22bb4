"""Saved remotes: named control-plane URLs with their tokens, in STATE/remotes.json (mode 0600).

`corral --remote NAME` looks a name up here; `corral --remote URL` takes the token from
`--token` or CORRAL_TOKEN instead. The file holds secrets, so it is written atomically with
mode 0600 and never printed with its tokens.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from corral.errors import Conflict, InvalidInput, NotFound
from corral.fsutil import write_atomic

_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")


@dataclass(frozen=True)
class Remote:
    name: str | None  # None for a URL given on the command line
    url: str
    token: str

    def __repr__(self) -> str:
        return f"Remote({self.name!r}, {self.url!r})"  # never the token


def check_url(url: str) -> str:
    """http(s)://HOST[:PORT][/PREFIX], without a trailing slash."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(
            f"a control-plane URL looks like http://HOST:PORT, not {url!r}",
            hint="corral serve listens on http://127.0.0.1:8000 by default",
        )
    if parts.query or parts.fragment or parts.username or parts.password:
        raise InvalidInput(f"{url!r}: no query, fragment or credentials in a control-plane URL")
    return url.rstrip("/")


def check_token(token: str) -> str:
    token = token.strip()
    if not token or any(c.isspace() for c in token) or not token.isprintable():
        raise InvalidInput("the API token is empty or has spaces or control characters")
    return token


def load(path: Path) -> dict[str, Remote]:
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"{path}: not a remotes file: {exc}") from exc
    try:
        return {
            name: Remote(name, str(entry["url"]), str(entry["token"]))
            for name, entry in raw.items()
        }
    except (AttributeError, KeyError, TypeError) as exc:
        raise InvalidInput(f"{path}: not a remotes file: missing {exc}") from exc


def _save(path: Path, remotes: dict[str, Remote]) -> None:
    data = {r.name: {"url": r.url, "token": r.token} for r in remotes.values()}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode(), mode=0o600)


def add(path: Path, name: str, url: str, token: str, *, replace: bool = False) -> Remote:
    if not _NAME.fullmatch(name):
        raise InvalidInput(
            f"remote name {name!r}: use lowercase letters, digits, '-' and '_' (max 63)"
        )
    remote = Remote(name, check_url(url), check_token(token))
    remotes = load(path)
    if name in remotes and not replace:
        raise Conflict(f"remote {name!r} exists", hint="corral remote add --replace ...")
    remotes[name] = remote
    _save(path, remotes)
    return remote


def remove(path: Path, name: str) -> None:
    remotes = load(path)
    if remotes.pop(name, None) is None:
        raise NotFound(f"no remote {name!r}", hint="corral remote ls")
    _save(path, remotes)


def resolve(path: Path, target: str, token: str | None) -> Remote:
    """`--remote` as given: a saved remote's name, or a URL with `--token`/CORRAL_TOKEN."""
    if "://" not in target:
        remote = load(path).get(target)
        if remote is None:
            raise NotFound(
                f"no remote {target!r}",
                hint="give a URL (--remote http://HOST:PORT --token T) or "
                "save one with `corral remote add NAME URL --token T`",
            )
        return remote if token is None else Remote(remote.name, remote.url, check_token(token))
    if token is None:
        raise InvalidInput(
            f"--remote {target} needs an API token",
            hint="--token TOKEN or CORRAL_TOKEN; `corral token create NAME` on the server",
        )
    return Remote(None, check_url(target), check_token(token))
