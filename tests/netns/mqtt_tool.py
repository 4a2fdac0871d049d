"""A tiny MQTT client for the fabric tests, run inside a lab node's namespace.

    python -m tests.netns.mqtt_tool sub HOST TOPIC...    one JSON line per message
    python -m tests.netns.mqtt_tool pub HOST TOPIC [PAYLOAD] [--retain]

`sub` prints {"ready": true} once subscribed, then {"topic", "payload",
"retain"} per message (payload as text), flushing each line, until killed.
`pub` publishes one message at QoS 1 (no PAYLOAD: an empty one, which clears
a retained message) and exits. aiomqtt, like evpnd itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

import aiomqtt


async def sub(host: str, port: int, topics: list[str]) -> None:
    async with aiomqtt.Client(host, port, identifier=f"test-sub-{id(topics):x}") as client:
        for topic in topics:
            await client.subscribe(topic, qos=1)
        print(json.dumps({"ready": True}), flush=True)
        async for message in client.messages:
            payload = message.payload
            text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else payload
            print(json.dumps({"topic": message.topic.value, "payload": text,
                              "retain": message.retain}), flush=True)


async def pub(host: str, port: int, topic: str, payload: str | None, retain: bool) -> None:
    async with aiomqtt.Client(host, port, identifier="test-pub") as client:
        await client.publish(topic, (payload or "").encode(), qos=1, retain=retain)


def main() -> None:
    parser = argparse.ArgumentParser()
    sub_parsers = parser.add_subparsers(dest="what", required=True)
    s = sub_parsers.add_parser("sub")
    s.add_argument("host")
    s.add_argument("topics", nargs="+")
    p = sub_parsers.add_parser("pub")
    p.add_argument("host")
    p.add_argument("topic")
    p.add_argument("payload", nargs="?")
    p.add_argument("--retain", action="store_true")
    parser.add_argument("--port", type=int, default=1883)
    args = parser.parse_args()
    try:
        if args.what == "sub":
            asyncio.run(sub(args.host, args.port, args.topics))
        else:
            asyncio.run(pub(args.host, args.port, args.topic, args.payload, args.retain))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
