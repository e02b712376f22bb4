"""The /ui dashboard in a real headless browser (Debian's chromium and chromium-driver, driven
by Selenium) against a real `corral serve` with the local node and the tiny guest: sign in,
see the host, create a VM through the form, watch it start without a reload, use its serial
console, stop and delete it; roles, a wrong token and a forged form post. One browser and one
VM for the module. Every page's browser console must be free of errors; on a failure the
page's screenshot is saved under test-artifacts/ui/.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from conftest import CACHE, REPO, TINY, kill_all
from control.livesrv import LiveServer
from corral.api.app import create_app
from corral.config import Config
from corral.context import Context
from corral.control.settings import Settings

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402

pytestmark = pytest.mark.vm

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")  # given explicitly: Selenium Manager never runs
ARTIFACTS = REPO / "test-artifacts" / "ui"
VM = "web-ui"

if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
    pytest.skip("needs chromium and chromium-driver (scripts/setup.sh)", allow_module_level=True)


class Dash:
    def __init__(self, server: LiveServer, admin: str, user: str) -> None:
        self.server = server
        self.url = server.url
        self.admin = admin
        self.user = user
        self.vm_id = ""


@pytest.fixture(scope="module")
def dash(tiny_guest: Any) -> Iterator[Dash]:
    home = Path(tempfile.mkdtemp(prefix="cu", dir="/tmp"))
    ctx = Context(replace(Config(), home=home, cache_dir=CACHE / "host"))
    ctx.store.import_image(
        tiny_guest.disk, TINY, kernel=tiny_guest.kernel, initrd=tiny_guest.initrd,
        cmdline=tiny_guest.cmdline, default_user=tiny_guest.default_user,
    )  # fmt: skip
    settings = Settings(
        database_url=f"sqlite:///{home}/corral.db",
        local_node=True,
        config=ctx.config,
        vm_default_image=TINY,
        health_interval=0,
        storage_roots=ctx.config.pool_roots(),
    )
    server = LiveServer(create_app(settings)).start()
    try:
        yield Dash(server, server.token("ui-admin", "admin"), server.token("ui-user", "user"))
    finally:
        server.stop()
        kill_all(ctx)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def driver(dash: Dash) -> Iterator[Any]:
    """Quit before the server stops (its event streams end with the browser)."""
    profile = tempfile.mkdtemp(prefix="cu-chromium-")
    options = Options()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,900", f"--user-data-dir={profile}", "--no-first-run",
                "--disable-extensions", "--disable-background-networking"):  # fmt: skip
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    browser.implicitly_wait(0)
    try:
        yield browser
    finally:
        browser.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(autouse=True)
def screenshot_on_failure(request: pytest.FixtureRequest, driver: Any) -> Iterator[None]:
    yield
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        for i, handle in enumerate(driver.window_handles):
            driver.switch_to.window(handle)
            driver.save_screenshot(str(ARTIFACTS / f"{request.node.name}-{i}.png"))


def wait_for(what: str, condition: Callable[[], Any], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
        except Exception:  # e.g. an element not there yet, or replaced by htmx
            value = None
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def console_errors(driver: Any, allowed: tuple[str, ...] = ()) -> list[str]:
    """SEVERE entries of the browser console since the last call, but those naming an
    answer the test asked for (e.g. the 401 of a wrong token)."""
    entries = driver.get_log("browser")
    return [
        e["message"]
        for e in entries
        if e["level"] == "SEVERE" and not any(a in e["message"] for a in allowed)
    ]


def visit(driver: Any, dash: Dash, path: str) -> None:
    driver.get(dash.url + path)
    wait_for(
        f"{path} to load", lambda: driver.execute_script("return document.readyState") == "complete"
    )


def sign_in(driver: Any, dash: Dash, token: str) -> None:
    visit(driver, dash, "/ui/login")
    field = driver.find_element(By.ID, "token")
    field.clear()
    field.send_keys(token)
    field.send_keys(Keys.ENTER)
    wait_for("the VM list", lambda: driver.current_url.endswith("/ui/vms"))


def test_a_wrong_token_is_refused(driver: Any, dash: Dash) -> None:
    visit(driver, dash, "/ui/vms")
    assert driver.current_url.endswith("/ui/login")  # pages need a session
    driver.find_element(By.ID, "token").send_keys("corral_000000000000_wrong", Keys.ENTER)
    error = wait_for("the error", lambda: driver.find_element(By.ID, "login-error"))
    assert "unknown, revoked or malformed token" in error.text
    assert not driver.get_cookie("corral_session")
    assert console_errors(driver, allowed=("401",)) == []


def test_sign_in_and_see_the_local_host(driver: Any, dash: Dash) -> None:
    sign_in(driver, dash, dash.admin)
    cookie = driver.get_cookie("corral_session")
    assert cookie and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert dash.admin not in cookie["value"]
    visit(driver, dash, "/ui/hosts")
    row = driver.find_element(By.CSS_SELECTOR, "tr[data-host='local']")
    assert "up" in row.text
    cpu = row.find_element(By.CSS_SELECTOR, "meter[id^='cpu-']")
    assert int(cpu.get_attribute("max")) >= 1
    assert re.search(r"\d+ / \d+ vCPUs", row.text)
    assert "GiB" in row.text
    assert console_errors(driver) == []


def test_create_a_vm_through_the_form_and_watch_it_start_without_reload(
    driver: Any, dash: Dash
) -> None:
    visit(driver, dash, "/ui/vms")
    driver.execute_script("window.__notReloaded = true")
    listing = driver.current_window_handle
    driver.switch_to.new_window("tab")
    visit(driver, dash, "/ui/vms/new")
    driver.find_element(By.ID, "f-name").send_keys(VM)
    driver.find_element(By.ID, "f-instance_type").send_keys("c1m256")
    image = driver.find_element(By.ID, "f-image")
    offered = driver.find_elements(By.CSS_SELECTOR, "#images option")
    assert [o.get_attribute("value") for o in offered] == [TINY]  # the local host's image
    image.clear()
    image.send_keys(TINY)
    driver.find_element(By.ID, "f-tags").send_keys("browser")
    start = driver.find_element(By.ID, "f-start")
    if start.is_selected():
        start.click()  # created only: it is started below, while the list watches
    driver.find_element(By.ID, "create").click()
    wait_for(
        "the VM's page", lambda: "/ui/vms/" in driver.current_url and "?job=" in driver.current_url
    )
    dash.vm_id = driver.current_url.split("/ui/vms/")[1].split("?")[0]
    assert console_errors(driver) == []

    driver.switch_to.window(listing)
    status = f"span[data-vm-status='{dash.vm_id}']"
    wait_for(
        "the new row", lambda: driver.find_element(By.CSS_SELECTOR, status).text == "created", 120
    )
    driver.switch_to.window(driver.window_handles[-1])
    wait_for("created", lambda: driver.find_element(By.ID, "vm-status").text == "created", 120)
    driver.find_element(By.ID, "action-start").click()
    wait_for("the start job", lambda: "vm.start" in driver.find_element(By.ID, "job").text)
    driver.switch_to.window(listing)
    wait_for("running", lambda: driver.find_element(By.CSS_SELECTOR, status).text == "running", 120)
    assert driver.execute_script("return window.__notReloaded === true")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / "dashboard.png"))
    assert console_errors(driver) == []
    driver.close()  # the listing tab
    driver.switch_to.window(driver.window_handles[0])


def _terminal_lines(driver: Any) -> list[str]:
    rows = driver.find_elements(By.CSS_SELECTOR, "#console .xterm-rows > div")
    return [row.text.strip() for row in rows]


def test_the_console_shows_boot_output_and_takes_commands(driver: Any, dash: Dash) -> None:
    assert dash.vm_id, "needs the VM of the test before"
    visit(driver, dash, f"/ui/vms/{dash.vm_id}")
    wait_for(
        "the console", lambda: driver.find_element(By.ID, "console-status").text == "connected"
    )
    wait_for("boot output", lambda: any(_terminal_lines(driver)), 120)
    typing = driver.find_element(By.CSS_SELECTOR, "#console .xterm-helper-textarea")

    # The shell's prompt first: what is typed before it starts is lost, or half-read.
    wait_for("the prompt", lambda: any(line.endswith("#") for line in _terminal_lines(driver)), 120)

    def answered() -> bool:
        typing.send_keys(Keys.CONTROL, "c")  # a fresh line, whatever came before
        typing.send_keys("echo $((6*7))", Keys.ENTER)
        return wait_for("42", lambda: "42" in _terminal_lines(driver), 10)

    wait_for("the shell's answer", answered, 60)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / "vm.png"))  # docs/ui.png is one of these
    assert console_errors(driver) == []


def test_stop_and_delete_the_vm(driver: Any, dash: Dash) -> None:
    visit(driver, dash, f"/ui/vms/{dash.vm_id}")
    driver.find_element(By.ID, "action-stop").click()
    wait_for(
        "the stop job",
        lambda: "completed" in driver.find_element(By.CSS_SELECTOR, "#job .job").text,
        120,
    )
    wait_for("shutdown", lambda: driver.find_element(By.ID, "vm-status").text == "shutdown", 30)
    # Its events: the kept ones the page came with, and the stop's, live on top.
    events = driver.find_element(By.ID, "vm-events")
    wait_for("the stop's event", lambda: events.text.split("\n")[0].endswith("updated shutdown"))
    assert "created pending" in events.text
    driver.find_element(By.ID, "action-delete").click()
    wait_for("the confirmation", lambda: driver.find_element(By.ID, "confirm-delete"))
    driver.find_element(By.ID, "confirm-delete").click()
    wait_for("the list", lambda: driver.current_url.endswith("/ui/vms"))
    gone = f"tr[data-vm-row='{dash.vm_id}']"
    wait_for("the row to go", lambda: not driver.find_elements(By.CSS_SELECTOR, gone), 120)
    assert console_errors(driver) == []


def test_read_views_have_no_console_errors(driver: Any, dash: Dash) -> None:
    for path in ("/ui/images", "/ui/storage", "/ui/jobs", "/ui/events", "/ui/tokens",
                 "/ui/vms?status=running"):  # fmt: skip
        visit(driver, dash, path)
        assert driver.find_element(By.TAG_NAME, "h1").text
        assert console_errors(driver) == [], path
    visit(driver, dash, "/ui/events")  # the kept events, before any arrives live
    assert driver.find_elements(By.CSS_SELECTOR, "#event-log tr[data-event]")
    visit(driver, dash, "/ui/images")
    assert driver.find_element(By.CSS_SELECTOR, f"tr[data-image='{TINY}']").text.endswith("local")


def test_pages_fit_a_phone_screen(driver: Any, dash: Dash) -> None:
    """At 390 px wide, nothing but the tables' own scrolling boxes is wider than the screen."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    phone = {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", phone)
    try:
        for path in ("/ui/hosts", "/ui/vms", "/ui/vms/new", "/ui/images", "/ui/jobs", "/ui/events",
                     "/ui/tokens"):  # fmt: skip
            visit(driver, dash, path)
            wide = driver.execute_script(
                "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            if wide > 0:
                driver.save_screenshot(str(ARTIFACTS / "phone.png"))
            assert wide <= 0, (path, wide)
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_a_forged_form_post_is_refused(driver: Any, dash: Dash) -> None:
    visit(driver, dash, "/ui/tokens")
    # A form as another page would post it: the session cookie goes along, no CSRF token.
    driver.execute_script(
        "var f = document.createElement('form'); f.method = 'post'; f.action = '/ui/tokens';"
        "var i = document.createElement('input'); i.name = 'name'; i.value = 'forged';"
        "f.appendChild(i); document.body.appendChild(f); f.submit();"
    )
    wait_for("the refusal", lambda: "CSRF" in driver.find_element(By.TAG_NAME, "main").text)
    visit(driver, dash, "/ui/tokens")
    assert "forged" not in driver.find_element(By.TAG_NAME, "main").text
    console_errors(driver, allowed=("403",))


def test_a_user_token_does_not_see_the_tokens_page(driver: Any, dash: Dash) -> None:
    driver.find_element(By.CSS_SELECTOR, ".signout button").click()
    wait_for("the sign-in page", lambda: driver.current_url.endswith("/ui/login"))
    sign_in(driver, dash, dash.user)
    assert "Tokens" not in driver.find_element(By.CSS_SELECTOR, "header nav").text
    visit(driver, dash, "/ui/tokens")
    assert "admin" in driver.find_element(By.TAG_NAME, "main").text
    assert not driver.find_elements(By.ID, "new-token")
    console_errors(driver, allowed=("403",))
