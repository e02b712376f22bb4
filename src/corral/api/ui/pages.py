"""The dashboard's pages and the fragments htmx swaps into them."""

from __future__ import annotations

import hmac
import uuid
from datetime import datetime
from typing import Annotated, Any, cast
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from corral.api.deps import token_role
from corral.api.schemas import (
    HostCreate,
    HostUpdate,
    StorageObjectCreate,
    StoragePoolCreate,
    VmAction,
)
from corral.api.ui import forms
from corral.api.ui.sessions import COOKIE, LOGIN_COOKIE, Session
from corral.api.ui.web import (
    UI_ROLES,
    admin,
    error_text,
    first,
    form,
    is_htmx,
    plane_of,
    render,
    sessions_of,
    signed_in,
)
from corral.control.images import by_name
from corral.control.tokens import ROLES
from corral.db.repositories import VmRepository
from corral.errors import CorralError, Forbidden, InvalidInput, NotFound

router = APIRouter()
SignedIn = Annotated[Session, Depends(signed_in)]
Admin = Annotated[Session, Depends(admin)]
PAGE = 50  # VMs per page
ACTIONS = ("start", "stop", "force-stop", "pause", "resume")
STATUSES = ("pending", "created", "running", "paused", "shutdown", "crashed", "unknown")
FINAL_JOB = ("completed", "failed")
VM_EVENTS = 20  # a VM's stored events on its page
EVENTS = 100  # stored events on the Events page


def _redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def _cookie(response: Response, request: Request, name: str, value: str, age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=age,
        path="/ui",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


# --- sign in and out --------------------------------------------------------------------------


@router.get("/", include_in_schema=False)
async def home(request: Request) -> Response:
    session = sessions_of(request).get(request.cookies.get(COOKIE))
    return _redirect("/ui/vms" if session else "/ui/login")


@router.get("/login")
async def login_page(request: Request) -> HTMLResponse:
    login_csrf = request.cookies.get(LOGIN_COOKIE) or uuid.uuid4().hex + uuid.uuid4().hex
    response = render(request, "login.html", login_csrf=login_csrf)
    _cookie(response, request, LOGIN_COOKIE, login_csrf, 3600)
    return response


@router.post("/login")
async def login(request: Request) -> Response:
    """Sign in with a pasted token: checked with the token store, never put in a URL or a
    cookie; the cookie holds a random session id."""
    fields = await form(request, None)
    expected = request.cookies.get(LOGIN_COOKIE)
    sent = first(fields, "csrf")
    if not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
        raise Forbidden("the sign-in form's CSRF token is missing or wrong: reload the page")
    token = first(fields, "token").strip()
    role = await token_role(plane_of(request), token) if token else None
    if role not in UI_ROLES:
        return render(
            request,
            "login.html",
            status_code=401,
            login_csrf=expected,
            error="unknown, revoked or malformed token",
        )
    session = sessions_of(request).open(token, str(role))
    response = _redirect("/ui/vms")
    _cookie(response, request, COOKIE, session.id, 12 * 3600)
    response.delete_cookie(LOGIN_COOKIE, path="/ui")
    return response


@router.post("/logout")
async def logout(request: Request, session: SignedIn) -> Response:
    await form(request, session)
    sessions_of(request).close(session.id)
    response = _redirect("/ui/login")
    response.delete_cookie(COOKIE, path="/ui")
    return response


# --- hosts ------------------------------------------------------------------------------------


@router.get("/hosts")
async def hosts_page(request: Request, session: SignedIn) -> HTMLResponse:
    return await _hosts(request, session)


async def _hosts(
    request: Request, session: Session, status_code: int = 200, **context: Any
) -> HTMLResponse:
    plane = plane_of(request)
    hosts = await plane.hosts.list()
    counts = await plane.read(lambda s: VmRepository(s).count_by_host())
    rows = [
        {
            "host": h,
            "vms": counts.get(h.id, 0),
            "cpu_pct": _pct(h.used_vcpus, h.cpus),
            "mem_pct": _pct(h.used_memory, h.memory),
        }
        for h in hosts
    ]
    return render(request, "hosts.html", session, status_code, rows=rows, title="Hosts", **context)


@router.post("/hosts")
async def register_host(request: Request, session: Admin) -> Response:
    """Register a host's node agent (the API's HostCreate checks it), then init it."""
    fields = await form(request, session)
    values = {k: first(fields, k).strip() for k in ("name", "address", "port", "token")}
    body = {k: v for k, v in values.items() if v}
    plane = plane_of(request)
    try:
        host = await plane.hosts.create(HostCreate.model_validate(body))
        await plane.hosts.init(host.id)
    except ValidationError as exc:
        errors = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return await _hosts(request, session, 422, error=errors, values=values)
    except CorralError as exc:
        return await _hosts(request, session, 422, error=error_text(exc), values=values)
    return _redirect("/ui/hosts")


def _pct(used: int, total: int) -> int:
    return min(100, round(100 * used / total)) if total else 0


@router.post("/hosts/{host_id}/status")
async def host_status(request: Request, host_id: uuid.UUID, session: Admin) -> Response:
    fields = await form(request, session)
    status = first(fields, "status")
    plane = plane_of(request)
    if status == "init":
        await plane.hosts.init(host_id)
    else:
        try:
            update = HostUpdate.model_validate({"status": status})
        except ValueError:
            raise InvalidInput(f"invalid host status {status!r}") from None
        await plane.hosts.update(host_id, update)
    return _redirect("/ui/hosts")


# --- VMs --------------------------------------------------------------------------------------


def _cursor(text: str) -> tuple[datetime, uuid.UUID] | None:
    if not text:
        return None
    when, _, vm_id = text.rpartition("_")
    try:
        return datetime.fromisoformat(when), uuid.UUID(vm_id)
    except ValueError:
        raise InvalidInput("invalid page cursor") from None


async def _vm_rows(request: Request) -> dict[str, Any]:
    """The VM table for the query's filters: one page by key, and the next page's cursor."""
    query = request.query_params
    status = query.get("status") or None
    if status is not None and status not in STATUSES:
        raise InvalidInput(f"invalid status {status!r}")
    host = query.get("host") or None
    try:
        host_id = uuid.UUID(host) if host else None
    except ValueError:
        raise InvalidInput("invalid host id") from None
    tag = query.get("tag", "").strip()
    name = query.get("name", "").strip()[:63]
    plane = plane_of(request)
    vms = await plane.vms.list(
        tags=[tag] if tag else [],
        status=status,
        host_id=host_id,
        limit=PAGE + 1,
        offset=0,
        name_prefix=name or None,
        after=_cursor(query.get("after", "")),
    )
    more = len(vms) > PAGE
    vms = vms[:PAGE]
    after = query.get("after", "")
    filters = {"status": status or "", "host": host or "", "tag": tag, "name": name}
    next_after = f"{vms[-1].created_at.isoformat()}_{vms[-1].id}" if more else ""
    return {
        "vms": vms,
        "filters": {**filters, "after": after},
        "next_after": next_after,
        "first_query": urlencode(filters),
        "next_query": urlencode({**filters, "after": next_after}),
    }


async def _host_names(request: Request) -> dict[uuid.UUID, str]:
    return {h.id: h.name for h in await plane_of(request).hosts.list()}


@router.get("/vms")
async def vms_page(request: Request, session: SignedIn) -> HTMLResponse:
    table = await _vm_rows(request)
    hosts = await _host_names(request)
    return render(
        request, "vms.html", session, title="VMs", hosts=hosts, statuses=STATUSES, **table
    )


@router.get("/vms/rows")
async def vm_rows(request: Request, session: SignedIn) -> HTMLResponse:
    """The fragment a filter change or "next page" fetches: the table alone."""
    table = await _vm_rows(request)
    hosts = await _host_names(request)
    return render(request, "_vm_table.html", session, hosts=hosts, **table)


@router.get("/vms/new")
async def new_vm_page(request: Request, session: SignedIn) -> HTMLResponse:
    return render(
        request, "vm_new.html", session, title="Create VM", values={}, errors={},
        **await _choices(request),
    )  # fmt: skip


async def _choices(request: Request) -> dict[str, Any]:
    """What the form offers: the images the up hosts have (and the default image), each with
    the hosts that have it, and the networks. The image field stays free text."""
    plane = plane_of(request)
    found = {i.name: [c.host for c in i.copies] for i in by_name(await plane.images.fleet())}
    if plane.settings.vm_default_image:
        found.setdefault(plane.settings.vm_default_image, [])
    networks = [n.name for n in await plane.networks.list()]
    return {"images": sorted(found.items()), "networks": networks}


@router.post("/vms/new")
async def create_vm(request: Request, session: SignedIn) -> Response:
    fields = await form(request, session)
    values = {name: first(fields, name) for name in forms.FIELDS}
    body, errors = forms.vm_create(values)
    if body is not None:
        try:
            vm = await plane_of(request).vms.create(body)
        except CorralError as exc:
            errors = {"form": error_text(exc)}
        else:
            return _redirect(f"/ui/vms/{vm['id']}?job={vm['job_id']}")
    return render(
        request, "vm_new.html", session, status_code=422, title="Create VM", values=values,
        errors=errors, **await _choices(request),
    )  # fmt: skip


@router.get("/vms/{vm_id}")
async def vm_page(request: Request, vm_id: uuid.UUID, session: SignedIn) -> HTMLResponse:
    plane = plane_of(request)
    vm = await plane.vms.get(vm_id)
    host = await plane.hosts.get(vm.host_id)
    jobs = await plane.jobs.list(vm_id=vm_id, limit=10, offset=0)
    events = await plane.events.recent(kinds=("vm",), object_id=vm_id, limit=VM_EVENTS)
    job = None
    if job_id := request.query_params.get("job"):
        try:
            job = next((j for j in jobs if j.id == uuid.UUID(job_id)), None)
        except ValueError:
            job = None
    return render(
        request, "vm.html", session, title=vm.name, vm=vm, host=host, jobs=jobs, job=job,
        events=events, actions=ACTIONS, final=FINAL_JOB,
    )  # fmt: skip


@router.post("/vms/{vm_id}/{action}")
async def vm_action(request: Request, vm_id: uuid.UUID, action: str, session: SignedIn) -> Response:
    """start, stop, force-stop, pause, resume, delete: the same service calls as the API's
    routes; htmx gets the job's fragment, a plain form the VM's page."""
    await form(request, session)
    plane = plane_of(request)
    if action == "delete":
        job = await plane.vms.delete(vm_id)
    elif action in ACTIONS:
        job = await plane.vms.act(vm_id, cast(VmAction, action))
    else:
        raise NotFound(f"no VM action {action!r}")
    if is_htmx(request):
        return render(request, "_job.html", session, job=job, final=FINAL_JOB)
    if action == "delete":
        return _redirect("/ui/vms")
    return _redirect(f"/ui/vms/{vm_id}?job={job.id}")


@router.get("/vms/{vm_id}/delete")
async def confirm_delete(request: Request, vm_id: uuid.UUID, session: SignedIn) -> HTMLResponse:
    vm = await plane_of(request).vms.get(vm_id)
    return render(request, "vm_delete.html", session, title=f"Delete {vm.name}", vm=vm)


# --- images -----------------------------------------------------------------------------------


@router.get("/images")
async def images_page(request: Request, session: SignedIn) -> HTMLResponse:
    """The images of the up hosts by name, each host's copy (size, warm) beside it."""
    answers = await plane_of(request).images.fleet()
    unreachable = [a for a in answers if a.error]
    return render(
        request, "images.html", session, title="Images", images=by_name(answers),
        unreachable=unreachable, hosts=len(answers),
    )  # fmt: skip


# --- jobs, storage, events ---------------------------------------------------------------------


@router.get("/jobs/{job_id}")
async def job_fragment(request: Request, job_id: uuid.UUID, session: SignedIn) -> HTMLResponse:
    """A job's line, polled by itself until it ends; its end also brings the VM's status
    (an out-of-band swap), should the page have missed that event."""
    plane = plane_of(request)
    job = await plane.jobs.get(job_id)
    vm = None
    if job.status in FINAL_JOB and job.vm_id is not None and job.kind != "vm.delete":
        try:
            vm = await plane.vms.get(job.vm_id)
        except NotFound:
            vm = None
    return render(request, "_job.html", session, job=job, final=FINAL_JOB, vm=vm)


@router.get("/vms/{vm_id}/status")
async def vm_status(request: Request, vm_id: uuid.UUID, session: SignedIn) -> HTMLResponse:
    vm = await plane_of(request).vms.get(vm_id)
    return render(request, "_vm_status.html", session, vm=vm)


@router.get("/jobs")
async def jobs_page(request: Request, session: SignedIn) -> HTMLResponse:
    jobs = await plane_of(request).jobs.list(vm_id=None, limit=100, offset=0)
    return render(request, "jobs.html", session, title="Jobs", jobs=jobs, final=FINAL_JOB)


@router.get("/storage")
async def storage_page(request: Request, session: SignedIn) -> HTMLResponse:
    return await _storage(request, session)


async def _storage(
    request: Request, session: Session, status_code: int = 200, error: str = ""
) -> HTMLResponse:
    plane = plane_of(request)
    return render(
        request, "storage.html", session, status_code, title="Storage",
        pools=await plane.pools.list(), objects=await plane.objects.list(),
        boot_sources=await plane.boot_sources.list(), error=error,
        pool_types=("local", "nfs"), object_types=("disk", "kernel", "initrd", "iso", "snapshot"),
    )  # fmt: skip


@router.post("/storage/{what}")
async def storage_create(request: Request, what: str, session: Admin) -> Response:
    """Create a pool or an object through the API's own models and services."""
    fields = await form(request, session)
    plane = plane_of(request)
    try:
        if what == "pools":
            config: dict[str, str] = {"path": first(fields, "path").strip()}
            if server := first(fields, "server").strip():
                config["server"] = server
            body = {"name": first(fields, "name").strip(),
                    "pool_type": first(fields, "pool_type"), "config": config}  # fmt: skip
            await plane.pools.create(StoragePoolCreate.model_validate(body))
        elif what == "objects":
            body = {"name": first(fields, "name").strip(),
                    "storage_pool_id": first(fields, "storage_pool_id"),
                    "object_type": first(fields, "object_type"),
                    "size_bytes": first(fields, "size_bytes", "0") or "0",
                    "config": {"path": first(fields, "path").strip()}}  # fmt: skip
            await plane.objects.create(StorageObjectCreate.model_validate(body))
        else:
            raise NotFound(f"no storage kind {what!r}")
    except ValidationError as exc:
        errors = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return await _storage(request, session, 422, errors)
    except (InvalidInput, Forbidden) as exc:
        return await _storage(request, session, 422, error_text(exc))
    return _redirect("/ui/storage")


@router.post("/storage/{what}/{item_id}/delete")
async def storage_delete(
    request: Request, what: str, item_id: uuid.UUID, session: Admin
) -> Response:
    await form(request, session)
    plane = plane_of(request)
    if what == "pools":
        await plane.pools.delete(item_id)
    elif what == "objects":
        await plane.objects.delete(item_id)
    else:
        raise NotFound(f"no storage kind {what!r}")
    return _redirect("/ui/storage")


@router.get("/events")
async def events_page(request: Request, session: SignedIn) -> HTMLResponse:
    """The newest stored events of VMs and jobs; live.js puts the stream's above them."""
    plane = plane_of(request)
    events = await plane.events.recent(kinds=("vm", "job"), limit=EVENTS)
    return render(request, "events.html", session, title="Events", events=events)


# --- tokens (admin) -------------------------------------------------------------------------


@router.get("/tokens")
async def tokens_page(request: Request, session: Admin) -> HTMLResponse:
    plane = plane_of(request)
    tokens = await plane.call(plane.tokens.list)
    return render(request, "tokens.html", session, title="Tokens", tokens=tokens, roles=ROLES)


@router.post("/tokens")
async def create_token(request: Request, session: Admin) -> HTMLResponse:
    fields = await form(request, session)
    plane = plane_of(request)
    role = first(fields, "role", "user")
    if role not in ROLES:
        raise InvalidInput(f"invalid role {role!r}")
    row, token = await plane.call(plane.tokens.create, first(fields, "name").strip(), role)
    tokens = await plane.call(plane.tokens.list)
    return render(
        request, "tokens.html", session, title="Tokens", tokens=tokens, roles=ROLES,
        created=row, secret=token,
    )  # fmt: skip


@router.post("/tokens/{token_id}/revoke")
async def revoke_token(request: Request, token_id: uuid.UUID, session: Admin) -> Response:
    await form(request, session)
    plane = plane_of(request)
    await plane.call(plane.tokens.revoke, str(token_id))
    return _redirect("/ui/tokens")
