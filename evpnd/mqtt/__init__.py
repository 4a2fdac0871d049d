"""MQTT: events out, endpoint registrations in.

* `settings` - the optional `mqtt:` config section (pydantic, like evpnd.config).
* `codec` - topics, event payloads, registration parsing (pure, no I/O).
* `client` - `MqttService`, the asyncio shell around aiomqtt.

Nothing is imported here so that evpnd.config can import `settings` without
pulling in aiomqtt.
"""
