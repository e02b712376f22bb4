// Live updates of the dashboard from the server's event stream (same origin, session cookie):
// VM statuses and job statuses change in place; the Events page lists what arrives.
// Text only (textContent): nothing from the stream is parsed as HTML.
(function () {
  "use strict";
  var STATUS = /^[a-z-]{1,20}$/;

  function setStatus(el, status) {
    if (!STATUS.test(status)) return;
    el.textContent = status;
    el.className = "status status-" + status;
  }

  // Times as the server renders the events it kept: UTC.
  function utcTime() {
    return new Date().toISOString().slice(11, 19);
  }

  function logEvent(ev) {
    var log = document.getElementById("event-log");
    if (!log) return;
    var row = document.createElement("tr");
    [utcTime(), ev.kind, ev.action, ev.status || "", ev.id].forEach(function (text) {
      var cell = document.createElement("td");
      cell.textContent = text;
      row.appendChild(cell);
    });
    log.insertBefore(row, log.firstChild);
    while (log.children.length > 200) log.removeChild(log.lastChild);
  }

  // A VM's page: its own events on top of the kept ones the page came with.
  function logVmEvent(ev) {
    var list = document.getElementById("vm-events");
    if (!list || ev.kind !== "vm" || list.getAttribute("data-vm") !== String(ev.id)) return;
    var item = document.createElement("li");
    var when = document.createElement("time");
    when.textContent = utcTime();
    item.appendChild(when);
    item.appendChild(document.createTextNode(" " + ev.action + " "));
    if (ev.status && STATUS.test(ev.status)) {
      var status = document.createElement("span");
      setStatus(status, ev.status);
      item.appendChild(status);
    }
    var reason = ev.data && ev.data.reason;
    if (reason) item.appendChild(document.createTextNode(" \u2014 " + reason));
    var none = list.querySelector("[data-none]");
    if (none) none.remove();
    list.insertBefore(item, list.firstChild);
  }

  function onEvent(message) {
    var ev;
    try { ev = JSON.parse(message.data); } catch (e) { return; }
    logEvent(ev);
    logVmEvent(ev);
    var attr = ev.kind === "vm" ? "data-vm-status" : "data-job-status";
    document.querySelectorAll("[" + attr + "='" + CSS.escape(String(ev.id)) + "']").forEach(function (el) {
      if (ev.status) setStatus(el, ev.status);
    });
    if (ev.kind === "vm" && ev.action === "deleted") {
      document.querySelectorAll("[data-vm-row='" + CSS.escape(String(ev.id)) + "']").forEach(function (row) {
        row.remove();
      });
    }
    if (ev.kind === "vm" && ev.action === "created") resync();
  }

  // The table again, as the filters ask, and a VM page's status (htmx fragments, no reload).
  function resync() {
    if (!window.htmx) return;
    var filters = document.getElementById("vm-filters");
    if (filters) window.htmx.trigger(filters, "submit");
    var status = document.getElementById("vm-status");
    if (status) window.htmx.trigger(status, "resync");
  }

  if (!window.EventSource) return;
  var source = new EventSource("/ui/events/stream");
  source.addEventListener("vm", onEvent);
  source.addEventListener("job", onEvent);
  // What changed between the page's rendering and the stream's start (or a reconnection).
  source.addEventListener("open", resync);
  window.addEventListener("pagehide", function () { source.close(); });
})();
