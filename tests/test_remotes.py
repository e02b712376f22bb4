"""Saved remotes (STATE/remotes.json) and how API error answers become corral errors."""

from __future__ import annotations

import stat
from pathlib import Path

import httpx
import pytest

from corral.errors import Conflict, CorralError, InvalidInput, NotFound
from corral.remote import saved
from corral.remote.api import error_from


def test_add_load_remove(tmp_path: Path) -> None:
    path = tmp_path / "state" / "remotes.json"
    saved.add(path, "lab", "http://10.0.0.5:8000/", "corral_abc")
    saved.add(path, "prod", "https://cp.example.org", "corral_def")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # it holds tokens
    remotes = saved.load(path)
    assert remotes["lab"].url == "http://10.0.0.5:8000"  # no trailing slash
    assert remotes["prod"].token == "corral_def"
    assert "corral_def" not in repr(remotes["prod"])
    with pytest.raises(Conflict, match="remote 'lab' exists"):
        saved.add(path, "lab", "http://elsewhere:1", "t")
    saved.add(path, "lab", "http://elsewhere:1", "t2", replace=True)
    assert saved.load(path)["lab"].token == "t2"
    saved.remove(path, "lab")
    assert set(saved.load(path)) == {"prod"}
    with pytest.raises(NotFound, match="no remote 'lab'"):
        saved.remove(path, "lab")


@pytest.mark.parametrize(
    ("name", "url", "token", "words"),
    [
        ("lab", "10.0.0.5:8000", "t", "looks like http://HOST:PORT"),
        ("lab", "ftp://host", "t", "looks like http://HOST:PORT"),
        ("lab", "http://user:pw@host", "t", "no query, fragment or credentials"),
        ("Lab!", "http://host", "t", "remote name 'Lab!'"),
        ("lab\n", "http://host", "t", "remote name 'lab\\\\n'"),
        ("lab", "http://host", "two words", "spaces"),
        ("lab", "http://host", "  ", "empty"),
    ],
)
def test_bad_remotes_are_refused_and_nothing_is_written(
    tmp_path: Path, name: str, url: str, token: str, words: str
) -> None:
    path = tmp_path / "remotes.json"
    with pytest.raises(InvalidInput, match=words):
        saved.add(path, name, url, token)
    assert not path.exists()


def test_resolve_a_name_or_a_url(tmp_path: Path) -> None:
    path = tmp_path / "remotes.json"
    saved.add(path, "lab", "http://10.0.0.5:8000", "corral_saved")
    assert saved.resolve(path, "lab", None).token == "corral_saved"
    assert saved.resolve(path, "lab", "corral_given").token == "corral_given"
    direct = saved.resolve(path, "http://127.0.0.1:9/", "corral_t")
    assert (direct.name, direct.url) == (None, "http://127.0.0.1:9")
    with pytest.raises(InvalidInput, match="needs an API token"):
        saved.resolve(path, "http://127.0.0.1:9", None)
    with pytest.raises(NotFound, match="no remote 'prod'"):
        saved.resolve(path, "prod", None)


def test_a_broken_remotes_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "remotes.json"
    path.write_text("{not json")
    with pytest.raises(InvalidInput, match="not a remotes file"):
        saved.load(path)
    path.write_text('{"lab": {"url": "http://h"}}')
    with pytest.raises(InvalidInput, match="missing 'token'"):
        saved.load(path)


@pytest.mark.parametrize(
    ("status", "body", "cls", "words"),
    [
        (404, {"detail": "no VM 'x'"}, NotFound, "no VM 'x'"),
        (409, {"detail": "a VM named 'a' exists", "hint": "pick another"}, Conflict, "exists"),
        (422, {"detail": "no up host has room"}, InvalidInput, "no up host"),
        (401, {"detail": "unknown or revoked token"}, InvalidInput, "refused the token"),
        (
            422,
            {"detail": [{"loc": ["body", "memory_size"], "msg": "too small"}]},
            InvalidInput,
            "memory_size: too small",
        ),
        (502, {"detail": "node down"}, CorralError, "answered 502: node down"),
        (500, "internal", CorralError, "answered 500"),
    ],
)
def test_api_errors_become_corral_errors(
    status: int, body: object, cls: type[CorralError], words: str
) -> None:
    response = httpx.Response(status, json=body)
    error = error_from(response, "http://cp:8000")
    assert type(error) is cls
    assert words in error.message
    if isinstance(body, dict) and "hint" in body:
        assert error.hint == body["hint"]
