"""The control plane's errors in its OpenAPI document: every answer is one the document
describes. Errors are answered in corral.wire's shape by corral.weberrors (the node agent
answers the same): `{"error": KIND, "detail": message, "hint": hint, "details": [...]}`, with
FastAPI's list of problems, each naming its field, as the `detail` of a validation 422. 401,
413 and 422 are documented on every route, 403 on the admin-only ones; a 405 names in `Allow`
every method of the path (OPTIONS answers 204 with it).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from corral.wire import KINDS


def _kind() -> Any:
    return Field(
        description="the kind of error, as corral's error classes name it",
        json_schema_extra={"enum": [*sorted(KINDS)]},
    )


def _details() -> Any:
    return Field(default_factory=list, description="more context, one line each")


class ErrorBody(BaseModel):
    error: str = _kind()
    detail: str = Field(description="what went wrong, in one line")
    hint: str | None = Field(None, description="what to do about it")
    details: list[str] = _details()


class Problem(BaseModel):
    """One field a request got wrong (FastAPI's validation error)."""

    model_config = ConfigDict(extra="allow")  # `input`, `ctx`
    loc: list[str | int]
    msg: str
    type: str


class InvalidRequest(BaseModel):
    """A 422: the fields that failed validation, or the business rule that refused the request."""

    error: str = _kind()
    detail: str | list[Problem]
    hint: str | None = None
    details: list[str] = _details()


def _error(description: str, model: type[BaseModel] = ErrorBody) -> dict[str, Any]:
    return {"model": model, "description": description}


# Every route that needs a token (or aleph-vm's signature) may answer these.
ERRORS: dict[int | str, dict[str, Any]] = {
    401: _error("missing, unknown or revoked token"),
    404: _error("unknown id"),
    409: _error("conflicts with current state (e.g. a taken name)"),
    413: _error("the request body is larger than the server's `max_body_bytes`"),
    422: _error("invalid input: the fields, or the business rule that refused it", InvalidRequest),
}
ADMIN_ERRORS: dict[int | str, dict[str, Any]] = {
    403: _error("this route needs an admin token (`corral token create NAME --role admin`)"),
}
METRICS_ERRORS: dict[int | str, dict[str, Any]] = {
    403: _error("this route needs an admin or a metrics token (`--role metrics`)"),
}
OPEN_ERRORS: dict[int | str, dict[str, Any]] = {413: ERRORS[413]}
