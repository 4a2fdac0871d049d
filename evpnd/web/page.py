"""The live fabric page and its script: static text, no build step, nothing from a CDN.

The script fetches the server-rendered picture (fabric.svg, relative to the
page, so it works behind a path-rewriting proxy too) every second and swaps
it in; when evpnd does not answer it says so and keeps the last picture. It
counts its successful refreshes in `body[data-updates]` and marks the state
in `#status[data-state]`, so a test (or a person) can tell a live page from a
stale one.
"""

from __future__ import annotations

REFRESH_MS = 1000

HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>evpnd fabric</title>
<link rel="icon" href="data:,">
<style>
body { margin: 0; font-family: "DejaVu Sans", "Liberation Sans", Arial, sans-serif;
       background: #edf2f7; color: #1a202c; }
header { display: flex; gap: 1.5em; align-items: baseline; padding: 0.6em 1.2em;
         background: #1a202c; color: #f7fafc; }
header a { color: #bee3f8; }
#status { font-size: 0.9em; }
#status[data-state="live"] { color: #9ae6b4; }
#status[data-state="error"] { color: #feb2b2; }
main { padding: 1em; }
#fabric svg { max-width: 100%; height: auto; background: #fff;
              box-shadow: 0 1px 3px rgba(0, 0, 0, 0.2); }
</style>
</head>
<body data-updates="0">
<header>
<strong>evpnd fabric view</strong>
<span id="status" data-state="loading">loading...</span>
<span><a href="fabric.svg" download="fabric.svg">SVG</a> \u00b7 <a href="fabric.json">JSON</a>
\u00b7 <a href="metrics">metrics</a></span>
</header>
<main><div id="fabric"></div></main>
<script src="fabric.js"></script>
</body>
</html>
"""

SCRIPT = """"use strict";
(function () {
  var target = document.getElementById("fabric");
  var status = document.getElementById("status");
  var updates = 0;
  function say(state, text) {
    status.dataset.state = state;
    status.textContent = text;
  }
  async function refresh() {
    try {
      var response = await fetch("fabric.svg", {cache: "no-store"});
      if (!response.ok) {
        throw new Error("HTTP " + response.status);
      }
      target.innerHTML = await response.text();
      updates += 1;
      document.body.dataset.updates = String(updates);
      say("live", "live, updated " + new Date().toLocaleTimeString());
    } catch (error) {
      say("error", "evpnd does not answer (" + error.message + "); showing the last picture");
    } finally {
      setTimeout(refresh, %(refresh)d);
    }
  }
  refresh();
})();
""" % {"refresh": REFRESH_MS}  # noqa: UP031 - braces of the script stay literal
