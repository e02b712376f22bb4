"""The CLI's one Context per process."""

from __future__ import annotations

import functools

from corral.context import Context


@functools.cache
def get_context() -> Context:
    return Context()
