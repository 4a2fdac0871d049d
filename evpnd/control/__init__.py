"""Control socket and `evpnd show`: views of the daemon's state, tables, server, client.

Kept import-light: `evpnd.config` imports `evpnd.control.settings`, so this
package must not import the config (or anything heavy) at import time.
"""
