"""The live fabric view: a read-only picture of the fabric, served next to /metrics.

* `fabric_svg.render` - the fabric view's JSON -> an SVG picture (pure).
* `page` - the HTML page and its script (static text, no build step, no CDN).
* `routes.FabricPages` - /fabric, /fabric.js, /fabric.svg, /fabric.json on the
  metrics server's aiohttp application.

The data is `evpnd.control.views.fabric` of the same snapshot `evpnd show`
reads; `evpnd show fabric --svg FILE` writes the same picture to a file.
"""
