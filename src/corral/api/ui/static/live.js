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

  function logEvent(ev) {
    var log = document.getElementById("event-log");
    if (!log) return;
    var row = document.createElement("tr");
    [new Date().toLocaleTimeString(), ev.kind, ev.action, ev.status || "", ev.id].forEach(function (text) {
      var cell = document.createElement("td");
      cell.textContent = text;
      row.appendChild(cell);
    });
    log.insertBefore(row, log.firstChild);
    while (log.children.length > 200) log.removeChild(log.lastChild);
  }

  function onEvent(message) {
    var ev;
    try { ev = JSON.parse(message.data); } catch (e) { return; }
    logEvent(ev);
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
