"""SSH keys that go into a guest: corral's own key pair (how corral logs in to every guest)
plus the user's public keys."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from corral.errors import InvalidInput
from corral.fsutil import locked, write_atomic

KEY_PREFIXES = ("ssh-", "ecdsa-", "sk-ssh-", "sk-ecdsa-")


def ensure_corral_key(private: Path) -> str:
    """Create corral's own ed25519 key pair once; return its public key line."""
    public = private.with_name(private.name + ".pub")
    if not public.exists():
        private.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Concurrent first launches must agree on one key: create it under a lock.
        with locked(private.with_name(".keygen.lock")):
            if not public.exists():
                import asyncssh  # heavy import, only on first use

                key = asyncssh.generate_private_key("ssh-ed25519", comment="corral")
                write_atomic(private, key.export_private_key(), mode=0o600)
                write_atomic(public, key.export_public_key())
    return public.read_text().strip()


def read_public_keys(path: Path) -> list[str]:
    """Read the public keys from a file (a .pub file or an authorized_keys-style list)."""
    if path.suffix != ".pub" and path.with_name(path.name + ".pub").is_file():
        path = path.with_name(path.name + ".pub")  # given the private key, use its .pub
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise InvalidInput(f"cannot read ssh key {path}: {reason}") from exc
    keys = [ln.strip() for ln in text.splitlines() if ln.strip().startswith(KEY_PREFIXES)]
    if not keys:
        raise InvalidInput(f"{path} holds no ssh public key")
    return keys


def collect_keys(corral_key: str, keys: Iterable[str]) -> tuple[str, ...]:
    """corral's own key, then the user's key lines, each once."""
    return tuple(dict.fromkeys((corral_key, *keys)))
