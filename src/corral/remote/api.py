"""A blocking client of the control plane's REST API, for `corral --remote ...`.

VMs are addressed by name, as on the command line; long operations are jobs, and each method
waits for its job so that the CLI reports the outcome (and a failed job's error) as it does for
a local instance. Error answers (in corral.wire's shape) come back as the corral errors they
started as, so exit codes match local use: a refused token is an InvalidInput, and a failure on
the server's side (5xx) says that the control plane answered it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import httpx

from corral import wire
from corral.errors import CorralError, DeadlineExceeded, Forbidden, InvalidInput, NotFound
from corral.remote.saved import Remote

PAGE = 1000  # the API's largest page
JOB_TIMEOUT = 900.0  # a create may import a base disk on its host


class RemoteUnreachable(CorralError):
    """The control plane did not answer."""


class ControlPlaneClient:
    """The REST API of the control plane at `remote.url` (the server side is
    corral.control.plane.ControlPlane), with the remote's token."""

    def __init__(self, remote: Remote, *, timeout: float = 30.0) -> None:
        self.remote = remote
        self._http = httpx.Client(
            base_url=remote.url,
            headers={"Authorization": f"Bearer {remote.token}"},
            timeout=timeout,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ControlPlaneClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- VMs ------------------------------------------------------------------------------

    def vms(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        while True:
            page = self._json("GET", "/vms", params={"limit": PAGE, "offset": len(found)})
            found.extend(page)
            if len(page) < PAGE:
                return found

    def vm(self, name: str) -> dict[str, Any]:
        found = self._json("GET", "/vms", params={"name": name, "limit": 1})
        if not found:
            raise NotFound(f"no VM {name!r} on {self.remote.url}", hint="corral --remote ... ls")
        return found[0]

    def host_names(self) -> dict[str, str]:
        return {h["id"]: h["name"] for h in self._json("GET", "/hosts")}

    def create(self, body: dict[str, Any], *, timeout: float = JOB_TIMEOUT) -> dict[str, Any]:
        vm = self._json("POST", "/vms", json=body)
        try:
            self.wait_job(vm["job_id"], timeout=timeout)
        except CorralError:
            self._forget(vm["id"])  # a launch that failed leaves nothing behind, as locally
            raise
        return self._json("GET", f"/vms/{vm['id']}")

    def act(self, name: str, action: str, *, timeout: float = JOB_TIMEOUT) -> dict[str, Any]:
        """start, stop, force-stop, pause or resume; the VM as it is afterwards."""
        vm = self.vm(name)
        job = self._json("POST", f"/vms/{vm['id']}/{action}")
        self.wait_job(job["id"], timeout=timeout)
        return self._json("GET", f"/vms/{vm['id']}")

    def delete(self, name: str, *, timeout: float = JOB_TIMEOUT) -> None:
        vm = self.vm(name)
        job = self._json("DELETE", f"/vms/{vm['id']}")
        self.wait_job(job["id"], timeout=timeout)

    def _forget(self, vm_id: str) -> None:
        try:
            job = self._json("DELETE", f"/vms/{vm_id}", params={"force": "true"})
            self.wait_job(job["id"], timeout=60)
        except CorralError:
            pass  # the error that made us clean up is the one to report

    def console(self, name: str) -> bytes:
        vm = self.vm(name)
        return self._request("GET", f"/vms/{vm['id']}/console").content

    def follow_console(self, name: str, write: Callable[[bytes], None]) -> None:
        """The console log, then what the VM writes from now on, until the stream ends."""
        from websockets.exceptions import ConnectionClosed, InvalidStatus
        from websockets.sync.client import connect

        vm = self.vm(name)
        write(self._request("GET", f"/vms/{vm['id']}/console").content)
        url = self.remote.url.replace("http", "ws", 1) + f"/vms/{quote(vm['id'])}/console/stream"
        headers = {"Authorization": f"Bearer {self.remote.token}"}
        try:
            with connect(url, additional_headers=headers, open_timeout=30) as ws:
                for message in _frames(ws):
                    write(message if isinstance(message, bytes) else message.encode())
        except InvalidStatus as exc:
            raise RemoteUnreachable(f"console stream refused: {exc}") from None
        except (OSError, ConnectionClosed) as exc:
            raise RemoteUnreachable(f"console stream of {name!r} ended: {exc}") from None

    def ssh_user(self, vm_id: str) -> str | None:
        """Whom ssh logs in as on the VM, as its node says."""
        user = self._json("GET", f"/vms/{quote(vm_id)}/ssh").get("user")
        return user if isinstance(user, str) else None

    def wait_job(self, job_id: str, *, timeout: float = JOB_TIMEOUT) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            job = self._json("GET", f"/jobs/{job_id}")
            if job["status"] == "completed":
                return job
            if job["status"] == "failed":
                # By the status of its error's class: the user's mistakes stay theirs (exit 2).
                kind = wire.status_class(job.get("error_status") or 0)
                raise kind(f"{job['kind']} failed: {job['error']}")
            if time.monotonic() > deadline:
                raise DeadlineExceeded(f"job {job_id} ({job['kind']}) still {job['status']}")
            time.sleep(delay)
            delay = min(delay * 1.5, 1.0)

    # --- transport ------------------------------------------------------------------------

    def _json(self, method: str, path: str, **kw: Any) -> Any:
        return self._request(method, path, **kw).json()

    def _request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kw)
        except httpx.TransportError as exc:
            raise RemoteUnreachable(
                f"cannot reach the control plane at {self.remote.url}: {exc or type(exc).__name__}"
            ) from None
        if response.is_success:
            return response
        raise error_from(response, self.remote.url)


def _frames(ws: Any) -> Iterator[bytes | str]:
    from websockets.exceptions import ConnectionClosedOK

    try:
        yield from ws
    except ConnectionClosedOK:
        return


def error_from(response: httpx.Response, url: str) -> CorralError:
    """The corral error an API error answer stands for, with the server's own words."""
    return error_of(response.status_code, response.content, response.reason_phrase, url)


def error_of(status: int, content: bytes, phrase: str | None, url: str) -> CorralError:
    """The corral error an answer of `status` with body `content` stands for (also what a
    refused websocket upgrade answered)."""
    try:
        body = json.loads(content)
    except ValueError:
        body = None
    error = wire.error_from(status, body)
    if error is None:  # not an answer of corral's: its status and reason phrase
        error = wire.status_class(status)(phrase or wire.reason(status))
    if status == 401:
        return InvalidInput(
            f"the control plane at {url} refused the token: {error.message}",
            hint="corral token create NAME on the server; pass it with --token",
        )
    if status == 403:
        return Forbidden(f"the control plane at {url} refused: {error.message}", hint=error.hint)
    if 400 <= status < 500:
        return error
    return CorralError(f"control plane answered {status}: {error.message}", hint=error.hint)
