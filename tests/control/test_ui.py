"""The /ui dashboard over HTTP, on fake nodes: sign-in and its cookie, CSRF, the security
headers, escaping, roles, keyset pagination and the console websocket's checks. The same
pages in a real browser, on a real VM: tests/control/test_ui_browser.py."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from control.conftest import Api, start_client
from control.fakes import Fleet
from control.test_serve_lock import start_server, stop_server
from control.uirows import insert_vms
from corral.api.app import create_app
from corral.context import Context
from corral.control.settings import Settings
from corral.image.manifest import WarmRequirements, WarmState
from corral.node.protocol import NodeImage

ORIGIN = "http://testserver"


@pytest.fixture
def ui(tmp_path: Path) -> Iterator[Api]:
    """An app on SQLite with one fake host; its client has an admin bearer token for set-up
    (the dashboard ignores it: it signs in with its cookie)."""
    fleet = Fleet()
    settings = Settings(
        database_url=f"sqlite:///{tmp_path}/corral.db", health_interval=0, storage_roots=(tmp_path,)
    )
    app = create_app(settings, node_factory=fleet)
    client = TestClient(app)
    client.__enter__()
    _, token = app.state.plane.tokens.create("setup", "admin")
    client.headers["Authorization"] = f"Bearer {token}"
    api = Api(client, fleet)
    api.host("h1", cpus=4, memory_mib=4096)
    try:
        yield api
    finally:
        client.__exit__(None, None, None)


class Browser:
    """A browser's cookies on the app's one TestClient (jobs run in its event loop), with no
    bearer token: the dashboard knows it by its session cookie only."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.cookies: dict[str, str] = {}

    def _headers(self, headers: dict[str, str] | None) -> dict[str, str]:
        cookie = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        return {"Authorization": "", "Origin": ORIGIN, "Cookie": cookie, **(headers or {})}

    def request(self, method: str, url: str, **kw: Any) -> Any:
        kw["headers"] = self._headers(kw.get("headers"))
        kw.setdefault("follow_redirects", False)
        self.api.client.cookies.clear()
        answer = self.api.client.request(method, url, **kw)
        self.api.client.cookies.clear()
        for line in answer.headers.get_list("set-cookie"):
            name, _, rest = line.partition("=")
            value = rest.split(";")[0].strip('"')
            if "Max-Age=0" in line or not value:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
        return answer

    def get(self, url: str, **kw: Any) -> Any:
        return self.request("GET", url, **kw)

    def post(self, url: str, **kw: Any) -> Any:
        return self.request("POST", url, **kw)

    def websocket_connect(self, url: str, headers: dict[str, str]) -> Any:
        return self.api.client.websocket_connect(url, headers=self._headers(headers))


def sign_in(api: Api, client: Browser, token: str) -> Any:
    page = client.get("/ui/login")
    return client.post("/ui/login", data={"token": token, "csrf": _csrf(page.text)})


def browser(api: Api, role: str = "admin") -> tuple[Browser, str]:
    """A browser signed in with a new token of `role`, and the session's CSRF token."""
    _, token = api.plane.tokens.create(f"b{uuid.uuid4().hex[:8]}", role)
    client = Browser(api)
    answer = sign_in(api, client, token)
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/ui/vms"
    vms = client.get("/ui/vms")
    assert vms.status_code == 200
    return client, _csrf(vms.text)


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, html
    return match.group(1)


def test_sign_in_sets_a_session_cookie_that_is_not_the_token(ui: Api) -> None:
    _, token = ui.plane.tokens.create("alice", "user")
    client = Browser(ui)
    page = client.get("/ui/login")
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "script-src 'self';" in csp and "unsafe-eval" not in csp
    assert page.headers["x-frame-options"] == "DENY"
    answer = client.post("/ui/login", data={"token": token, "csrf": _csrf(page.text)})
    assert answer.status_code == 303
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith("corral_session=")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert token not in cookie and token not in answer.headers.get("location", "")
    assert client.get("/ui/hosts").status_code == 200


def test_a_wrong_token_is_refused_and_pages_need_sign_in(ui: Api) -> None:
    client = Browser(ui)
    assert client.get("/ui/vms").headers["location"] == "/ui/login"
    page = client.get("/ui/login")
    answer = client.post(
        "/ui/login", data={"token": "corral_000000000000_nope", "csrf": _csrf(page.text)}
    )
    assert answer.status_code == 401
    assert "unknown, revoked or malformed token" in answer.text
    assert "corral_session" not in answer.headers.get("set-cookie", "")
    # htmx fragments get 401 and where to go
    fragment = client.get("/ui/vms/rows", headers={"HX-Request": "true"})
    assert fragment.status_code == 401 and fragment.headers["hx-redirect"] == "/ui/login"


def test_sign_in_itself_needs_the_forms_csrf_token(ui: Api) -> None:
    _, token = ui.plane.tokens.create("bob", "admin")
    client = Browser(ui)
    client.get("/ui/login")
    answer = client.post("/ui/login", data={"token": token, "csrf": "forged"})
    assert answer.status_code == 403
    assert "corral_session" not in answer.headers.get("set-cookie", "")


def test_forged_posts_are_refused(ui: Api) -> None:
    vm = ui.vm("web1", start=True)
    client, csrf = browser(ui)
    url = f"/ui/vms/{vm['id']}/stop"
    assert client.post(url, data={}).status_code == 403  # no token
    assert client.post(url, data={"csrf": "x" + csrf}).status_code == 403  # a wrong one
    foreign = client.post(url, data={"csrf": csrf}, headers={"Origin": "https://evil.example"})
    assert foreign.status_code == 403  # another site, even with the token
    assert ui.ok("GET", f"/vms/{vm['id']}")["status"] == "running"
    done = client.post(url, data={"csrf": csrf}, headers={"HX-Request": "true"})
    assert done.status_code == 200 and "vm.stop" in done.text
    job_id = re.search(r'data-job="([0-9a-f-]+)"', done.text)
    assert job_id
    job = ui.wait_job(job_id.group(1))
    assert job["status"] == "completed", job["error"]
    assert ui.ok("GET", f"/vms/{vm['id']}")["status"] == "shutdown"
    # the header htmx sends counts as the field does
    started = client.post(f"/ui/vms/{vm['id']}/start", headers={"X-CSRF-Token": csrf})
    assert started.status_code == 303 and "?job=" in started.headers["location"]


def test_a_user_token_sees_no_admin_pages(ui: Api) -> None:
    client, csrf = browser(ui, "user")
    page = client.get("/ui/vms")
    assert "/ui/tokens" not in page.text
    assert client.get("/ui/tokens").status_code == 403
    assert client.post("/ui/tokens", data={"csrf": csrf, "name": "x"}).status_code == 403
    host = ui.ok("GET", "/hosts")[0]
    refused = client.post(f"/ui/hosts/{host['id']}/status", data={"csrf": csrf, "status": "down"})
    assert refused.status_code == 403
    assert ui.ok("GET", "/hosts")[0]["status"] == "up"


def test_tokens_are_shown_once_and_revoking_ends_sessions(ui: Api) -> None:
    admin, csrf = browser(ui)
    made = admin.post("/ui/tokens", data={"csrf": csrf, "name": "carol", "role": "user"})
    assert made.status_code == 200
    token = re.search(r'id="new-token" class="secret" readonly value="([^"]+)"', made.text)
    assert token and token.group(1).startswith("corral_")
    assert token.group(1) not in admin.get("/ui/tokens").text
    # carol signs in, then is revoked: her session ends
    carol = Browser(ui)
    sign_in(ui, carol, token.group(1))
    assert carol.get("/ui/vms", follow_redirects=False).status_code == 200
    row = next(t for t in ui.plane.tokens.list() if t.name == "carol")
    admin.post(f"/ui/tokens/{row.id}/revoke", data={"csrf": csrf})
    time.sleep(1.1)  # other processes see a revocation within the token cache's second
    assert carol.get("/ui/vms", follow_redirects=False).status_code == 303


def test_sign_out_ends_the_session(ui: Api) -> None:
    client, csrf = browser(ui)
    assert client.post("/ui/logout", data={"csrf": csrf}, follow_redirects=False).status_code == 303
    assert client.get("/ui/vms", follow_redirects=False).headers["location"] == "/ui/login"


def test_hosts_page_shows_capacity_and_reservations(ui: Api) -> None:
    ui.vm("a", vcpus=2, memory_mib=1024)
    client, _ = browser(ui)
    page = client.get("/ui/hosts").text
    assert 'max="4" value="2"' in page  # vCPUs reserved of the host's
    assert "2 / 4 vCPUs" in page and "1.0 GiB / 4.0 GiB" in page
    assert re.search(r'<a href="/ui/vms\?host=[0-9a-f-]+">1</a>', page)


def test_create_form_shows_the_apis_errors_at_their_fields_escaped(ui: Api) -> None:
    client, csrf = browser(ui)
    bad = {"csrf": csrf, "name": "<script>alert(1)</script>", "memory": "3", "tags": "ok !bad"}
    answer = client.post("/ui/vms/new", data=bad)
    assert answer.status_code == 422
    assert "<script>alert(1)" not in answer.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in answer.text
    for field in ("name", "memory", "tags"):
        assert f'id="e-{field}"' in answer.text, field
    good = {"csrf": csrf, "name": "made-here", "instance_type": "c1m256", "image": "tiny",
            "tags": "web blue", "start": "on"}  # fmt: skip
    created = client.post("/ui/vms/new", data=good, follow_redirects=False)
    assert created.status_code == 303
    vm = next(v for v in ui.ok("GET", "/vms") if v["name"] == "made-here")
    assert (vm["boot_vcpus"], vm["memory_size"], vm["tags"]) == (1, 256 << 20, ["blue", "web"])
    assert created.headers["location"].startswith(f"/ui/vms/{vm['id']}?job=")


def test_vm_list_pages_by_key_and_filters(ui: Api) -> None:
    host_id = uuid.UUID(ui.ok("GET", "/hosts")[0]["id"])
    insert_vms(ui.plane, host_id, 120, tags=lambda i: ["even"] if i % 2 == 0 else [])
    client, _ = browser(ui)
    seen: list[str] = []
    query = ""
    while True:
        page = client.get(f"/ui/vms/rows?{query}", headers={"HX-Request": "true"}).text
        seen += re.findall(r'data-vm-row="([0-9a-f-]+)"', page)
        more = re.search(r'hx-get="/ui/vms/rows\?([^"]+)"[^>]*rel="next"', page)
        if not more:
            break
        query = more.group(1).replace("&amp;", "&")
    assert len(seen) == 120 and len(set(seen)) == 120
    even = client.get("/ui/vms/rows?tag=even&name=vm0001").text
    names = re.findall(r'<a href="/ui/vms/[0-9a-f-]+">(vm\d+)</a>', even)
    assert names == [f"vm0001{d}" for d in range(0, 10, 2)]
    running = client.get("/ui/vms/rows?status=running").text
    assert running.count("data-vm-row=") == 24
    assert client.get("/ui/vms/rows?status=bogus").status_code == 422


def test_console_websocket_checks_origin_and_session_then_relays_both_ways(ui: Api) -> None:
    vm = ui.vm("con", start=True)
    node = next(iter(ui.fleet.nodes.values()))
    client, _ = browser(ui)
    url = f"/ui/vms/{vm['id']}/console/ws"
    with pytest.raises(WebSocketDisconnect) as info:  # noqa: SIM117
        # another site's page, with the user's cookie
        with client.websocket_connect(url, headers={"Origin": "https://evil.example"}):
            pass
    assert info.value.code == 1008
    stranger = Browser(ui)
    with pytest.raises(WebSocketDisconnect) as info:  # noqa: SIM117
        with stranger.websocket_connect(url, headers={"Origin": ORIGIN}):  # no session
            pass
    assert info.value.code == 1008
    with client.websocket_connect(url, headers={"Origin": ORIGIN}) as ws:
        deadline = time.monotonic() + 5
        while not node.streaming("con"):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        node.write_console("con", b"login: ")
        assert ws.receive_bytes() == b"login: "
        ws.send_bytes(b"echo hi\r")
        assert ws.receive_bytes() == b"echo hi\r"  # the fake node echoes what is typed
        node.write_console("con", b"hi\n", end=True)
        assert ws.receive_bytes() == b"hi\n"
    assert node.typed["con"] == b"echo hi\r"


def test_static_assets_are_served_from_the_package(ui: Api) -> None:
    client = Browser(ui)
    for name in ("vendor/htmx-2.0.11.min.js", "vendor/xterm-5.5.0.js", "live.js", "ui.css"):
        answer = client.get(f"/ui/static/{name}")
        assert answer.status_code == 200, name
        assert "content-security-policy" in answer.headers


def test_corral_serve_prints_the_dashboard_url_and_serves_it(ctx: Context, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/corral.db"
    proc, port = start_server(ctx, url)
    try:
        page = httpx.get(f"http://127.0.0.1:{port}/ui/login", timeout=10)
        assert page.status_code == 200 and 'id="token"' in page.text
        assert httpx.get(f"http://127.0.0.1:{port}/ui/vms", timeout=10).status_code == 303
    finally:
        stop_server(proc)
    _, stderr = proc.communicate()
    assert f"dashboard: http://127.0.0.1:{port}/ui/" in stderr.decode()


def test_a_finished_jobs_line_brings_the_vms_status(ui: Api) -> None:
    """A page that missed the VM's event still shows its status once the job's line ends."""
    vm = ui.vm("late", start=True)
    client, csrf = browser(ui)
    page = client.get(f"/ui/vms/{vm['id']}").text
    assert page.count('id="vm-status"') == 1
    line = client.post(
        f"/ui/vms/{vm['id']}/pause", data={"csrf": csrf}, headers={"HX-Request": "true"}
    )
    job_id = re.search(r'data-job="([0-9a-f-]+)"', line.text)
    assert job_id and "hx-swap-oob" not in line.text
    ui.wait_job(job_id.group(1))
    done = client.get(f"/ui/jobs/{job_id.group(1)}", headers={"HX-Request": "true"}).text
    assert 'hx-swap-oob="true"' in done and ">paused</span>" in done
    assert "every 1s" not in done  # it stops polling
    status = client.get(f"/ui/vms/{vm['id']}/status").text
    assert ">paused</span>" in status


def test_an_admin_registers_and_sets_hosts(ui: Api) -> None:
    ui.fleet.add("10.0.0.9", 7000, cpus=8, memory_mib=8192)
    client, csrf = browser(ui)
    bad = client.post(
        "/ui/hosts", data={"csrf": csrf, "name": "h9", "address": "10.0.0.9", "port": "0"}
    )
    assert bad.status_code == 422 and 'id="register-error"' in bad.text and "port" in bad.text
    good = {"csrf": csrf, "name": "h9", "address": "10.0.0.9", "port": "7000"}
    assert client.post("/ui/hosts", data=good).status_code == 303
    host = next(h for h in ui.ok("GET", "/hosts") if h["name"] == "h9")
    assert (host["status"], host["cpus"]) == ("up", 8)
    down = client.post(
        f"/ui/hosts/{host['id']}/status", data={"csrf": csrf, "status": "maintenance"}
    )
    assert down.status_code == 303
    assert ui.ok("GET", f"/hosts/{host['id']}")["status"] == "maintenance"


def test_an_admin_creates_and_deletes_pools_and_objects(ui: Api, tmp_path: Path) -> None:
    (tmp_path / "pool").mkdir()
    (tmp_path / "pool" / "vmlinux").write_bytes(b"k" * 10)
    client, csrf = browser(ui)
    root = {"csrf": csrf, "name": "p0", "pool_type": "local", "path": "/"}
    outside = client.post("/ui/storage/pools", data=root)
    assert outside.status_code == 422 and 'id="storage-error"' in outside.text
    made = client.post("/ui/storage/pools", data={"csrf": csrf, "name": "p1",
                       "pool_type": "local", "path": str(tmp_path / "pool")})  # fmt: skip
    assert made.status_code == 303
    pool = ui.ok("GET", "/storage-pools")[0]
    body = {"csrf": csrf, "name": "k1", "storage_pool_id": pool["id"], "object_type": "kernel",
            "path": str(tmp_path / "pool" / "vmlinux")}  # fmt: skip
    assert client.post("/ui/storage/objects", data=body).status_code == 303
    obj = ui.ok("GET", "/storage-objects")[0]
    assert obj["name"] == "k1"
    page = client.get("/ui/storage").text
    assert "Delete k1" in page and "Delete p1" in page
    assert (
        client.post(f"/ui/storage/objects/{obj['id']}/delete", data={"csrf": csrf}).status_code
        == 303
    )
    assert (
        client.post(f"/ui/storage/pools/{pool['id']}/delete", data={"csrf": csrf}).status_code
        == 303
    )
    assert ui.ok("GET", "/storage-pools") == []
    user, user_csrf = browser(ui, "user")
    assert "Create pool" not in user.get("/ui/storage").text
    refused = user.post("/ui/storage/pools", data={"csrf": user_csrf, "name": "p2",
                        "pool_type": "local", "path": str(tmp_path)})  # fmt: skip
    assert refused.status_code == 403


def _image(name: str, digest: str = "ab" * 32, **kw: Any) -> NodeImage:
    return NodeImage(name=name, digest=digest, format="qcow2", virtual_size=1 << 30,
                     file_size=300 << 20, **kw)  # fmt: skip


def test_images_page_and_the_create_form_show_what_the_up_hosts_have(ui: Api) -> None:
    """By name, with the hosts that have it; a host that does not answer is named with the
    reason (never a 500); a host that is down is not asked."""
    h2 = ui.host("h2")
    ui.host("h3")
    h1, n2, n3 = (ui.fleet.nodes[(f"10.0.0.{i}", 7000)] for i in (1, 2, 3))
    h1.images = [_image("debian-12"), _image("tiny", warm=True, warm_cpus=1, warm_memory_mib=256)]
    n2.images = [_image("debian-12", digest="cd" * 32), _image("<b>x</b>")]
    n3.reachable = False
    ui.ok("PATCH", f"/hosts/{h2['id']}", json={"status": "maintenance"})
    client, _ = browser(ui)
    page = client.get("/ui/images").text
    assert re.findall(r'data-image="([^"]+)"', page) == ["debian-12", "tiny"]
    assert "<b>x</b>" not in page  # h2 is in maintenance: not asked
    assert "1.0 GiB" in page and "300.0 MiB" in page and "yes (c1m256)" in page
    assert "h3</a>: unreachable: node 10.0.0.3:7000: connection refused" in page
    ui.ok("PATCH", f"/hosts/{h2['id']}", json={"status": "up"})
    page = client.get("/ui/images").text
    assert "&lt;b&gt;x&lt;/b&gt;" in page and "<b>x</b>" not in page
    debian = page[page.index('data-image="debian-12"') :].split("</tr>")[0]
    assert re.findall(r'data-image-host="(\w+)"', debian) == ["h1", "h2"]
    assert "other content: cdcdcdcdcdcd" in debian
    form = client.get("/ui/vms/new").text
    assert re.findall(r'<option value="([^"]+)">', form) == [
        "&lt;b&gt;x&lt;/b&gt;",
        "debian-12",
        "tiny",
    ]
    assert "debian-12 (on h1, h2)" in form and 'list="images"' in form
    # The API's answers, for the same question.
    fleet = ui.ok("GET", "/images")
    assert [(i["name"], [c["host"] for c in i["copies"]]) for i in fleet["images"]] == [
        ("<b>x</b>", ["h2"]), ("debian-12", ["h1", "h2"]), ("tiny", ["h1"]),
    ]  # fmt: skip
    assert [(u["host"], u["images"]) for u in fleet["unreachable"]] == [("h3", [])]
    h3 = next(h for h in ui.ok("GET", "/hosts") if h["name"] == "h3")
    one = ui.ok("GET", f"/hosts/{h3['id']}/images")
    assert one["error"].startswith("unreachable") and one["images"] == []
    ui.ok("GET", f"/hosts/{uuid.uuid4()}/images", 404)
    assert ui.client.get("/images", headers={"Authorization": ""}).status_code == 401


def test_images_of_a_real_store_through_the_embedded_node(ctx: Context, tmp_path: Path) -> None:
    """The embedded server's host `local` is a LocalNode on a real image store: the page and
    the form list its images (a warm one as warm), and the configured default image."""
    disk = tmp_path / "small.qcow2"
    ctx.qemu_img.create(disk, 64 << 20)
    ctx.store.import_image(disk, "small")
    made = ctx.store.import_image(disk, "small-warm")
    warm = WarmState(state="ef" * 32, state_size=1, agent=False, requirements=WarmRequirements(
        qemu_version="8", machine="q35", cpu_model="max", accelerator="tcg", cpus=2,
        memory_mib=512, devices=()))  # fmt: skip
    ctx.store.save(replace(made, warm=warm))
    settings = Settings(
        database_url=f"sqlite:///{tmp_path}/corral.db", health_interval=0, local_node=True,
        config=ctx.config, vm_default_image="debian-12",
    )  # fmt: skip
    client, _ = start_client(settings, None)
    try:
        api = Api(client, Fleet())
        (fleet,) = api.ok("GET", "/images")["images"][1:]
        assert fleet["name"] == "small-warm" and fleet["copies"][0]["host"] == "local"
        assert fleet["copies"][0]["image"]["warm_cpus"] == 2
        browser_, _ = browser(api)
        page = browser_.get("/ui/images").text
        assert re.findall(r'data-image="([^"]+)"', page) == ["small", "small-warm"]
        assert "64.0 MiB" in page and "yes (c2m512)" in page
        form = browser_.get("/ui/vms/new").text
        assert re.findall(r'<option value="([^"]+)">', form) == ["debian-12", "small", "small-warm"]
        assert "debian-12 (the default image)" in form
    finally:
        client.__exit__(None, None, None)


def test_a_vms_page_shows_its_recent_events_and_the_events_page_the_latest(ui: Api) -> None:
    vm = ui.vm("ev", start=True)
    ui.act(vm["id"], "pause")
    other = ui.vm("other")
    client, _ = browser(ui)
    page = client.get(f"/ui/vms/{vm['id']}").text
    events = page[page.index('id="vm-events"') :].split("</ul>")[0]
    assert re.findall(r"</time> (\w+) <span class=\"status status-(\w+)\"", events) == [
        ("updated", "paused"),
        ("updated", "running"),
        ("created", "pending"),
    ]
    log = client.get("/ui/events").text
    log = log[log.index('id="event-log"') :].split("</tbody>")[0]
    ids = re.findall(r"<td>(vm|job|host)</td><td>(\w+)</td>", log)
    assert ids[0] == ("job", "updated") and ("host", "updated") not in ids
    assert f'<a href="/ui/vms/{other["id"]}">' in log
