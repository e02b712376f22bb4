// The VM page's serial console: xterm.js over the dashboard's same-origin websocket
// (output arrives as binary frames; keystrokes go back as binary frames).
(function () {
  "use strict";
  var el = document.getElementById("console");
  if (!el || !window.Terminal) return;
  var status = document.getElementById("console-status");
  var term = new window.Terminal({ cursorBlink: true, fontSize: 14, scrollback: 5000, rows: 24 });
  var fit = window.FitAddon ? new window.FitAddon.FitAddon() : null;
  if (fit) term.loadAddon(fit);
  term.open(el);
  if (fit) fit.fit();
  window.addEventListener("resize", function () { if (fit) fit.fit(); });

  var url = new URL(el.getAttribute("data-ws"), window.location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  var ws = new WebSocket(url.toString());
  ws.binaryType = "arraybuffer";
  var encoder = new TextEncoder();
  ws.addEventListener("open", function () { status.textContent = "connected"; });
  ws.addEventListener("message", function (event) {
    term.write(typeof event.data === "string" ? event.data : new Uint8Array(event.data));
  });
  ws.addEventListener("close", function (event) {
    status.textContent = "disconnected" + (event.reason ? ": " + event.reason : "");
  });
  term.onData(function (data) {
    if (ws.readyState === WebSocket.OPEN) ws.send(encoder.encode(data));
  });
  window.addEventListener("pagehide", function () { ws.close(); });
})();
