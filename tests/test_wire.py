"""corral.wire: the one error shape both servers answer and both clients read."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from corral import errors, wire
from corral.api.app import create_app
from corral.api.errors import ErrorBody, InvalidRequest
from corral.context import Context
from corral.control.settings import Settings
from corral.errors import (
    CommandFailed,
    Conflict,
    CorralError,
    Forbidden,
    InvalidInput,
    NodeUnreachable,
    NotFound,
    QemuError,
    TooLarge,
    Unauthorized,
)
from corral.node.app import create_node_app

ERROR_CLASSES = [
    cls
    for cls in vars(errors).values()
    if isinstance(cls, type) and issubclass(cls, CorralError) and cls is not CommandFailed
]


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.__name__)
def test_every_error_class_comes_back_as_itself(cls: type[CorralError]) -> None:
    exc = cls("it broke", hint="look there", details=["line 1", "line 2"])
    body = json.loads(wire.render(exc))
    assert body == wire.error_body(exc)
    back = wire.error_from(wire.status_of(exc), body, require_kind=True)
    assert type(back) is cls
    assert (back.message, back.hint, back.details) == ("it broke", "look there", exc.details)


def test_a_class_without_a_kind_travels_as_its_base() -> None:
    class Gone(NotFound):
        pass

    failed = CommandFailed(["qemu-img", "info"], 1, "boom\n")
    assert wire.error_body(Gone("x"))["error"] == "not_found"
    assert type(wire.error_from(404, wire.error_body(Gone("x")))) is NotFound
    assert wire.error_body(failed) == {"error": "error", "detail": failed.message}
    assert wire.status_of(failed) == 502  # a failure below the server, not a bug of it


def test_statuses_and_the_shape_of_a_body() -> None:
    assert [wire.status_of(e("x")) for e in (NotFound, QemuError, Unauthorized, TooLarge)] == [
        404,
        502,
        401,
        413,
    ]
    assert wire.error_body(Conflict("taken")) == {"error": "conflict", "detail": "taken"}
    assert (
        wire.render(InvalidInput("x", hint="y"))
        == b'{"error":"invalid_input","detail":"x","hint":"y"}'
    )


@pytest.mark.parametrize(
    ("status", "body", "cls", "message"),
    [
        (404, {"detail": "no VM 'x'"}, NotFound, "no VM 'x'"),  # no kind: by status
        (409, {"error": "not_found", "detail": "gone"}, NotFound, "gone"),  # the kind wins
        (403, {"error": "forbidden", "detail": "admins only"}, Forbidden, "admins only"),
        (502, {"error": "node_unreachable", "detail": "down"}, NodeUnreachable, "down"),
        (502, {"error": "from_the_future", "detail": "new"}, CorralError, "new"),
        (
            422,
            {
                "error": "invalid_input",
                "detail": [
                    {"loc": ["body", "cpus"], "msg": "too small", "type": "x"},
                    {"loc": ["query", "limit"], "msg": "too big", "type": "y"},
                ],
            },
            InvalidInput,
            "body.cpus: too small; query.limit: too big",
        ),
    ],
)
def test_answers_in_the_shape_are_read(
    status: int, body: dict[str, object], cls: type[CorralError], message: str
) -> None:
    error = wire.error_from(status, body)
    assert type(error) is cls and error is not None
    assert error.message == message


@pytest.mark.parametrize(
    "body",
    [
        None,
        "Internal Server Error",
        ["detail"],
        {"message": "db password hunter2"},  # not ours: never repeated
        {"detail": "x", "page": "<html>"},
        {"error": 3, "detail": "x"},
        {"error": "not_found"},
    ],
)
def test_other_answers_are_not_read(body: object) -> None:
    assert wire.error_from(500, body) is None


def test_a_node_names_its_kind() -> None:
    assert wire.error_from(404, {"detail": "Not Found"}, require_kind=True) is None
    assert wire.status_class(404) is NotFound and wire.status_class(599) is CorralError
    assert wire.reason(404) == "Not Found" and wire.reason(599) == "unknown status"


# --- both servers answer it ---------------------------------------------------------------

NODE_TOKEN = "node-test-token-0123456789"


@pytest.fixture
def servers(ctx: Context, tmp_path: Path) -> Iterator[dict[str, TestClient]]:
    """The control plane (on SQLite, no hosts) and a node agent, in-process, with tokens."""
    settings = Settings(database_url=f"sqlite:///{tmp_path}/cp.db", health_interval=0)
    plane_app = create_app(settings)
    with TestClient(plane_app) as plane, TestClient(create_node_app(ctx, NODE_TOKEN)) as node:
        _, token = plane_app.state.plane.tokens.create("t", "admin")
        plane.headers["Authorization"] = f"Bearer {token}"
        node.headers["Authorization"] = f"Bearer {NODE_TOKEN}"
        yield {"plane": plane, "node": node}


JSON = {"Content-Type": "application/json"}
SAME_ANSWERS = [
    ("GET", "/nowhere", {}, 404, "not_found"),
    ("PUT", "/vms", {}, 405, "invalid_input"),
    ("POST", "/vms", {"content": b"{", "headers": JSON}, 422, "invalid_input"),
    ("POST", "/vms", {"content": b"\xff\xfe{}", "headers": JSON}, 422, "invalid_input"),
    ("POST", "/vms", {"json": {"name": 5}}, 422, "invalid_input"),
    ("POST", "/vms", {"content": b"x" * (2 << 20), "headers": JSON}, 413, "too_large"),
    ("GET", "/vms", {"headers": {"Authorization": "Bearer wrong"}}, 401, "unauthorized"),
]


@pytest.mark.parametrize(
    ("method", "path", "kw", "status", "kind"), SAME_ANSWERS, ids=[str(a[:4]) for a in SAME_ANSWERS]
)
def test_both_servers_answer_errors_alike(
    servers: dict[str, TestClient], method: str, path: str, kw: dict, status: int, kind: str
) -> None:
    shapes = []
    for client in servers.values():
        response = client.request(method, path, **kw)
        assert response.status_code == status, response.text
        body = response.json()
        assert body["error"] == kind
        InvalidRequest.model_validate(body) if status == 422 else ErrorBody.model_validate(body)
        if isinstance(body["detail"], list):  # a validation 422 names the fields
            assert all(problem["loc"][0] == "body" for problem in body["detail"])
        assert body.keys() <= {"error", "detail", "hint", "details"}  # hint, details: if any
        shapes.append(type(body["detail"]))
        assert type(wire.error_from(status, body, require_kind=True)) is wire.KINDS[kind]
    assert shapes[0] is shapes[1]
