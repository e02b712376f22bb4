"""Bearer tokens: every route but health, /openapi.json and the docs needs one; tokens are
stored as sha256 and revocable; `corral token create|ls|revoke` and `corral db upgrade`."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import typer
from sqlalchemy import select
from typer.testing import CliRunner

from control.conftest import Api
from corral.cli.commands import serve as serve_cmd
from corral.db.engine import Database
from corral.db.migrate import head
from corral.db.models import ApiToken
from corral.errors import CorralError

PROTECTED = [
    ("GET", "/hosts"),
    ("POST", "/hosts"),
    ("GET", "/storage-pools"),
    ("GET", "/storage-objects"),
    ("GET", "/boot-sources"),
    ("GET", "/vms"),
    ("POST", "/vms"),
    ("GET", "/jobs"),
    ("GET", "/events"),
    ("DELETE", "/vms/00000000-0000-0000-0000-000000000000"),
    ("POST", "/control/machine/web1/stop"),
]


def _status(api: Api, method: str, path: str, token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {"Authorization": ""}
    return api.client.request(method, path, headers=headers, json={}).status_code


def test_routes_need_a_valid_token(api: Api) -> None:
    plane = api.plane
    _row, token = plane.tokens.create("ci")
    for method, path in PROTECTED:
        response = api.client.request(method, path, headers={"Authorization": ""})
        assert response.status_code == 401, (method, path)
        assert response.headers["www-authenticate"] == "Bearer"
        assert _status(api, method, path, "corral_0123456789ab_guess") == 401
        assert _status(api, method, path, "not-even-the-format") == 401
        basic = api.client.request(method, path, headers={"Authorization": f"Basic {token}"})
        assert basic.status_code == 401, (method, path)
    assert _status(api, "GET", "/hosts", token) == 200
    # A token with its last character changed is refused (same key, different hash).
    assert _status(api, "GET", "/hosts", token[:-1] + ("A" if token[-1] != "A" else "B")) == 401
    plane.tokens.revoke("ci")
    assert _status(api, "GET", "/hosts", token) == 401


def test_health_openapi_and_docs_need_no_token(api: Api) -> None:
    anonymous = {"Authorization": ""}
    health = api.client.get("/health", headers=anonymous)
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    told = api.client.get("/health").json()  # with a token: the details
    assert told["database_status"] == "ok" and told["version"]
    schema = api.client.get("/openapi.json", headers=anonymous)
    assert schema.status_code == 200 and schema.json()["openapi"].startswith("3.1")
    assert "bearer" in json.dumps(schema.json()["components"]["securitySchemes"]).lower()
    paths = schema.json()["paths"]
    for path, operations in paths.items():  # OpenAPI says which routes need the token
        for method, operation in operations.items():
            # (aleph-vm's /control routes document their X-Auth-Signature header instead)
            if path != "/health" and not path.startswith("/control/"):
                assert operation["security"] == [{"HTTPBearer": []}], (method, path)
    assert "security" not in paths["/health"]["get"]
    docs = api.client.get("/swagger-ui", headers=anonymous)
    assert docs.status_code == 200 and "swagger-ui" in docs.text


def test_tokens_are_stored_as_sha256(api: Api) -> None:
    _row, token = api.plane.tokens.create("stored")
    with api.plane.db.read() as session:
        stored = session.scalars(select(ApiToken).where(ApiToken.name == "stored")).one()
    assert stored.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert token not in repr(stored.__dict__)
    with pytest.raises(Exception, match="already exists"):
        api.plane.tokens.create("stored")


def test_token_and_db_commands(tmp_path: Path, database_url: str) -> None:
    app = typer.Typer()
    serve_cmd.register(app)
    runner = CliRunner()
    db = ["--database", database_url]

    def run(*args: str) -> str:
        result = runner.invoke(app, list(args))
        assert result.exit_code == 0, (args, result.output, result.exception)
        return result.stdout

    assert f"database at revision {head()}" in run("db", "upgrade", *db)
    assert f"database at revision {head()}" in run("db", "upgrade", *db)  # idempotent
    token = run("token", "create", "alice", *db).strip()
    assert token.startswith("corral_")
    made = json.loads(run("token", "create", "bob", "--role", "admin", "--json", *db))
    assert made["name"] == "bob" and made["token"].startswith("corral_")
    assert made["role"] == "admin"
    listing = json.loads(run("token", "ls", "--json", *db))
    assert [(t["name"], t["role"]) for t in listing] == [("alice", "user"), ("bob", "admin")]
    assert all(t["revoked_at"] is None for t in listing)
    assert "token" not in json.dumps(listing)
    assert "revoked alice" in run("token", "revoke", "alice", *db)
    text = run("token", "ls", *db).splitlines()
    assert text[0].split() == ["NAME", "ROLE", "CREATED", "STATE"]
    assert text[1].split()[:2] == ["alice", "user"] and "revoked" in text[1]
    assert text[2].split()[:2] == ["bob", "admin"] and text[2].endswith("active")
    wrong = runner.invoke(app, ["token", "create", "carol", "--role", "root", *db])
    assert isinstance(wrong.exception, CorralError) and wrong.exception.exit_code == 2
    assert wrong.exception.message == "invalid role 'root': admin, user, metrics"
    assert "carol" not in run("token", "ls", *db)

    from corral.control.tokens import TokenService

    database = Database(database_url)
    try:
        tokens = TokenService(database)
        assert tokens.authenticate(token) is None
        assert tokens.authenticate(made["token"]) == "admin"
    finally:
        database.dispose()
    bad = runner.invoke(app, ["token", "revoke", "carol", *db])
    assert bad.exit_code != 0


def test_listen_addresses() -> None:
    assert serve_cmd.parse_listen("127.0.0.1:8000") == ("127.0.0.1", 8000)
    assert serve_cmd.parse_listen("[::1]:9000") == ("::1", 9000)
    assert serve_cmd.parse_listen("0.0.0.0:80") == ("0.0.0.0", 80)
    assert serve_cmd.parse_listen("8080") == ("127.0.0.1", 8080)
    with pytest.raises(Exception, match="HOST:PORT"):
        serve_cmd.parse_listen("localhost:http")


def test_an_unreachable_database_is_one_error_without_its_password() -> None:
    app = typer.Typer()
    serve_cmd.register(app)
    url = "postgresql+psycopg://corral:s3cret@127.0.0.1:1/corral"
    for args in (["db", "upgrade"], ["token", "create", "alice"], ["serve"]):
        result = CliRunner().invoke(app, [*args, "--database", url])
        assert isinstance(result.exception, CorralError), (args, result.exception)
        assert "Connection refused" in result.exception.message
        assert "s3cret" not in result.exception.message and "***" in result.exception.message
