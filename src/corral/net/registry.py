"""Finding and saving network and attachment records under $CORRAL_HOME/networks/."""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

from corral.errors import CorralError, NotFound
from corral.fsutil import write_atomic
from corral.layout import Home, NetworkFiles
from corral.net.model import NAME_RE, AttachmentRecord, NetworkRecord, check_name
from corral.records import RecordError

DIR_MODE = 0o700


def home_id(home: Home) -> str:
    """A short tag of this state directory, carried by the aliases of the links it makes."""
    return hashlib.sha256(os.fsencode(home.root.resolve())).hexdigest()[:8]


def bridge_alias(home: Home, name: str) -> str:
    return f"corral {home_id(home)} network {name}"


def tap_alias(home: Home, network: str, owner: str) -> str:
    return f"corral {home_id(home)} tap {network} {owner}"


def make_dir(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=DIR_MODE)


def names(home: Home) -> list[str]:
    if not home.networks.is_dir():
        return []
    return sorted(
        p.name for p in home.networks.iterdir() if p.is_dir() and NAME_RE.fullmatch(p.name)
    )


def load(files: NetworkFiles) -> NetworkRecord:
    try:
        return NetworkRecord.from_json(files.record.read_bytes())
    except FileNotFoundError:
        raise NotFound(
            f"no network named {files.dir.name!r}", hint="see: corral network ls"
        ) from None
    except RecordError as exc:
        raise CorralError(f"{files.record} is damaged: {exc}") from exc


def load_named(home: Home, name: str) -> tuple[NetworkFiles, NetworkRecord]:
    check_name(name)
    files = home.network(name)
    record = load(files)
    if record.state != "ready":
        raise NotFound(f"no network named {name!r} (its creation did not finish)")
    return files, record


def save(files: NetworkFiles, record: NetworkRecord) -> None:
    write_atomic(files.record, record.to_json(), mode=0o600)


def ready_networks(home: Home) -> list[tuple[NetworkFiles, NetworkRecord]]:
    out = []
    for name in names(home):
        files = home.network(name)
        with contextlib.suppress(CorralError):
            record = load(files)
            if record.state == "ready":
                out.append((files, record))
    return out


def attachments(files: NetworkFiles) -> list[AttachmentRecord]:
    """Every readable attachment record of a network, whatever its state."""
    if not files.attachments.is_dir():
        return []
    out = []
    for path in sorted(files.attachments.glob("*.json")):
        with contextlib.suppress(OSError, RecordError):
            out.append(AttachmentRecord.from_json(path.read_bytes()))
    return out


def ready_attachments(files: NetworkFiles) -> list[AttachmentRecord]:
    return [a for a in attachments(files) if a.state == "ready"]


def save_attachment(files: NetworkFiles, record: AttachmentRecord) -> None:
    make_dir(files.attachments)
    write_atomic(files.attachment(record.owner), record.to_json(), mode=0o600)


def remove_stale_temps(files: NetworkFiles) -> None:
    """Temporary files of atomic writes a killed command left (`.NAME.RANDOM.tmp`). Every write
    under a network's directory happens under the networks lock, which the caller holds: any
    such file now is a dead writer's."""
    for folder in (files.dir, files.attachments):
        if folder.is_dir():
            for temp in folder.glob(".*.tmp"):
                temp.unlink(missing_ok=True)
