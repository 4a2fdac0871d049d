"""A raw receive path for EVPN UPDATEs inside ExaBGP 5.0.15 (the launcher installs it).

ExaBGP spends 190 µs or more on every received one-NLRI UPDATE (measured by
bench/exabgp_receive.py; 340 µs in another run): it builds NLRI and
attribute objects, fills its adj-RIB-in, encodes JSON, and goes round its
reactor (four polls) once per message. evpnd decodes
EVPN itself, so for a session configured for it (`receive { raw-evpn; }` in
the neighbor's api block, a keyword this module adds to ExaBGP's parser) an
UPDATE that carries only L2VPN/EVPN is handed over untouched, as one line per
batch to the API processes of that block:

    =evpn <peer address> <base64 body> [<base64 body> ...]\\n

`<peer address>` is what ExaBGP's JSON calls `neighbor.address.peer`; a body
is the UPDATE without its 19-byte header, in arrival order. Such an UPDATE is
not parsed, not put in ExaBGP's adj-RIB-in (`show adj-rib in` does not list
it) and not JSON-encoded. Everything else takes ExaBGP's own path unchanged:
OPEN, KEEPALIVE, NOTIFICATION, ROUTE-REFRESH, state changes, UPDATEs with any
other family, and every UPDATE when add-path receive is negotiated for EVPN,
when the session is rate-limited, when another process wants parsed UPDATEs
but not the frames, or when the structural check below cannot walk it.

How (the shell, bottom of the file):
- A session with raw-evpn gets a buffered reader on its connection: one
  large non-blocking recv per turn instead of a poll and a recv for each
  header and body. It stands in for `Connection.reader` and yields exactly
  what that does (same NOTIFICATIONs for a bad marker or length), so
  ExaBGP's own `Protocol.read_message` runs on it for every message that is
  not raw.
- `Protocol.read_message`, once the session is established, takes every
  complete raw-eligible UPDATE at the head of that buffer (up to a line's
  bound), writes them as one frame line with one flush, and yields one empty
  UPDATE to `Peer._main`: the hold timer counts it as traffic, keepalives
  and our own sending get their turn, and the reactor goes round once per
  batch instead of once per message. Anything else at the head goes to the
  original method.

The structural check (the functional core, pure): no withdrawn routes, no
NLRI field, attributes that walk exactly to the end with no code twice, and
an MP_REACH or MP_UNREACH, each for AFI 25 / SAFI 70 (an empty MP_UNREACH is
the EVPN End-of-RIB). Attribute contents are not checked here: the decoder
that reads the frames validates them (RFC 7606 handling is its job for these
UPDATEs).

`install()` checks every ExaBGP name it relies on first and raises
RawReceiveUnavailable, naming what is missing, rather than run without it.
"""

from __future__ import annotations

import inspect
from binascii import b2a_base64
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from evpnd.speaker.wire import FRAME_VERB  # the frame's one definition: its decoder's

CONFIG_KEYWORD = "raw-evpn"  # in a neighbor's `api { receive { ... } }`
API_KEY = "receive-raw-evpn"  # what ParseAPI.flatten makes of it: the processes

# A frame line carries at most this many bodies or this much text; one line is
# one reactor turn, so this also bounds how long a peer keeps the reactor. The
# daemon takes a line whole (speaker.BATCH_BYTES bounds a batch, but a batch
# holds at least one line), so the text bound is also the most the daemon
# decodes and applies without a turn of its event loop: 256 KiB is ~5.5k Type-2
# routes (1 MiB, ~22k, kept it 0.3 s and more under a flood); ExaBGP's own cost
# per line (a reactor turn, a write) stays small beside that many UPDATEs.
MAX_FRAME_BODIES = 1000
MAX_FRAME_BYTES = 256 * 1024
RECV_SIZE = 1 << 20
# Read again only when less than this is buffered: the buffer stays bounded
# (a few MiB) however fast a peer sends.
RECV_LOW_WATER = 1 << 18

HEADER_LEN = 19
MARKER = b"\xff" * 16
UPDATE = 2
ATTR_EXTENDED_LENGTH = 0x10
MP_REACH_NLRI = 14
MP_UNREACH_NLRI = 15
AFI_L2VPN = 25
SAFI_EVPN = 70


class RawReceiveUnavailable(RuntimeError):
    """The installed ExaBGP lacks something the raw receive path patches or relies on."""


# ---------------------------------------------------------------------------
# Functional core


def evpn_only(buf: bytes | bytearray, start: int, end: int) -> bool:
    """Whether the UPDATE body buf[start:end] carries L2VPN/EVPN and nothing else.

    True only when the attributes walk exactly to the end of the body, no
    attribute code repeats, and at least one MP_REACH/MP_UNREACH is present,
    every one of them for AFI 25 / SAFI 70.
    """
    if end - start < 4 or buf[start] or buf[start + 1]:
        return False  # too short, or IPv4 withdrawn routes
    pos = start + 4
    stop = pos + (buf[start + 2] << 8 | buf[start + 3])
    if stop != end:
        return False  # an IPv4 NLRI field, or attributes longer than the message
    seen = 0
    multiprotocol = False
    while pos < stop:
        if stop - pos < 3:
            return False
        flags = buf[pos]
        code = buf[pos + 1]
        if flags & ATTR_EXTENDED_LENGTH:
            if stop - pos < 4:
                return False
            value = pos + 4
            pos = value + (buf[pos + 2] << 8 | buf[pos + 3])
        else:
            value = pos + 3
            pos = value + buf[pos + 2]
        if pos > stop:
            return False
        bit = 1 << code
        if seen & bit:
            return False
        seen |= bit
        if code in (MP_REACH_NLRI, MP_UNREACH_NLRI):
            if (pos - value < 3 or buf[value] != 0 or buf[value + 1] != AFI_L2VPN
                    or buf[value + 2] != SAFI_EVPN):
                return False
            multiprotocol = True
    return multiprotocol


def scan(
    buf: bytes | bytearray,
    start: int,
    end: int,
    max_length: int,
    max_bodies: int = MAX_FRAME_BODIES,
    max_text: int = MAX_FRAME_BYTES,
) -> tuple[list[tuple[int, int]], int]:
    """The raw-eligible UPDATEs at the head of buf[start:end], as body spans.

    Stops at the first message that is incomplete, not an UPDATE, not
    EVPN-only, or whose header ExaBGP's reader would refuse (bad marker,
    length below 23 or above `max_length`), and once a frame line would
    exceed `max_bodies` bodies or `max_text` bytes of base64. Returns the
    spans and the offset just after the last one taken.
    """
    spans: list[tuple[int, int]] = []
    text = 0
    pos = start
    while len(spans) < max_bodies and end - pos >= HEADER_LEN:
        if buf[pos + 18] != UPDATE or not buf.startswith(MARKER, pos):
            break
        length = buf[pos + 16] << 8 | buf[pos + 17]
        if length < HEADER_LEN + 4 or length > max_length or end - pos < length:
            break
        body = pos + HEADER_LEN
        stop = pos + length
        if not evpn_only(buf, body, stop):
            break
        text += 1 + (stop - body + 2) // 3 * 4
        if text > max_text and spans:
            break
        spans.append((body, stop))
        pos = stop
    return spans, pos


def frame_line(peer: str, buf: bytes | bytearray, spans: Sequence[tuple[int, int]]) -> bytes:
    """`=evpn <peer> <b64> ...` for the given body spans of buf, without the newline."""
    with memoryview(buf) as view:
        bodies = [b2a_base64(view[s:e], newline=False) for s, e in spans]
    return b" ".join((FRAME_VERB, peer.encode("ascii"), *bodies))


def raw_recipients(api: dict[str, Any]) -> Sequence[str]:
    """The processes that get frames for this neighbor, or () when raw is off.

    Off as well when a process wants parsed UPDATEs without the frames: it
    would silently miss every EVPN UPDATE otherwise.
    """
    raw = api.get(API_KEY) or ()
    if raw and any(process not in raw for process in api.get("receive-update", ())):
        return ()
    return raw


# ---------------------------------------------------------------------------
# Shell: buffered framing for one connection


class BufferedInput:
    """What one connection has received and not consumed yet, and how to get more.

    `reader()` is a drop-in for ExaBGP's `Connection.reader`: it yields
    (0, 0, b'', b'', None) while a message is incomplete, then one
    (length, type, header, body, notify) tuple, with the same NotifyError as
    the original for a header it refuses.
    """

    ATTRIBUTE = "_evpnd_buffered_input"

    def __init__(self, connection: Any, exa: _Exa) -> None:
        self.connection = connection
        self.exa = exa
        self.buffer = bytearray()
        self.start = 0
        self.failure: Callable[[], Exception] | None = None

    @classmethod
    def of(cls, connection: Any) -> BufferedInput | None:
        found = connection.__dict__.get(cls.ATTRIBUTE)
        return found if isinstance(found, cls) else None

    @classmethod
    def attach(cls, connection: Any, exa: _Exa) -> BufferedInput:
        """Give the connection buffered framing for the rest of its life.

        Once bytes sit in this buffer every read must go through it, so the
        instance attribute shadows the class's reader for good.
        """
        buffered = cls(connection, exa)
        setattr(connection, cls.ATTRIBUTE, buffered)
        connection.reader = buffered.reader
        return buffered

    def available(self) -> int:
        return len(self.buffer) - self.start

    def consume(self, upto: int) -> None:
        self.start = upto
        if self.start == len(self.buffer):
            self.buffer.clear()
            self.start = 0

    def fill(self) -> None:
        """One non-blocking recv; a closed or failed socket is kept for when it matters.

        Bytes already buffered are still delivered first: a NOTIFICATION
        followed by a close must reach ExaBGP as the NOTIFICATION.
        """
        io = self.connection.io
        if self.failure is not None or not io:
            return
        exa = self.exa
        try:
            data = io.recv(RECV_SIZE)
        except TimeoutError as exc:  # socket.timeout, as ExaBGP catches it
            self.failure = lambda exc=exc: self._too_slow(exc)
            return
        except OSError as exc:
            if exc.args and exc.args[0] in exa.block:
                return
            if exc.args and exc.args[0] in exa.fatal:
                self.failure = lambda exc=exc: self._lost(
                    f"issue reading on the socket: {exa.errstr(exc)}", quiet=True)
            else:
                self.failure = lambda exc=exc: self._undefined(exc)
            return
        if not data:
            self.failure = lambda: self._lost("the TCP connection was closed by the remote end")
            return
        if self.start:
            del self.buffer[: self.start]
            self.start = 0
        self.buffer += data

    def head_ready(self) -> bool:
        """Whether the original reader would yield something other than a wait now."""
        available = self.available()
        if available < HEADER_LEN:
            return False
        buf, pos = self.buffer, self.start
        length = buf[pos + 16] << 8 | buf[pos + 17]
        if self._header_error(bytes(buf[pos : pos + HEADER_LEN])) is not None:
            return True
        return available >= length

    def reader(self) -> Iterator[tuple[int, int, bytes, bytes, Any]]:
        connection = self.connection
        if not connection.io and not self.available():
            connection.close()
            raise self.exa.NotConnected("Trying to read on a closed TCP connection")
        yield from self._until(HEADER_LEN)
        header = self._take(HEADER_LEN)
        problem = self._header_error(header)
        if problem is not None:
            yield problem
            return
        msg = header[18]
        length = header[16] << 8 | header[17]
        number = length - HEADER_LEN
        if not number:
            yield length, msg, header, b"", None
            return
        yield from self._until(number)
        yield length, msg, header, self._take(number), None

    def _until(self, size: int) -> Iterator[tuple[int, int, bytes, bytes, Any]]:
        """Wait (as the original does, yielding an empty tuple) until `size` bytes are here."""
        while self.available() < size:
            self._wait()
            if self.available() < size:
                yield 0, 0, b"", b"", None

    def _header_error(self, header: bytes) -> tuple[int, int, bytes, bytes, Any] | None:
        """The tuple ExaBGP's Connection.reader yields for a header it refuses, if it does."""
        exa = self.exa
        if not header.startswith(MARKER):
            report = "The packet received does not contain a BGP marker"
            return 0, 0, header, b"", exa.NotifyError(1, 1, report)
        msg = header[18]
        length = header[16] << 8 | header[17]
        if length < HEADER_LEN or length > self.connection.msg_size:
            report = f"{exa.code_name(msg)} has an invalid message length of {length}"
            return length, 0, header, b"", exa.NotifyError(1, 2, report)
        if not exa.length_valid(msg, length):
            report = f"{exa.code_name(msg)} has an invalid message length of {length}"
            return length, 0, header, b"", exa.NotifyError(1, 2, report)
        return None

    def _take(self, size: int) -> bytes:
        data = bytes(self.buffer[self.start : self.start + size])
        self.consume(self.start + size)
        return data

    def _wait(self) -> None:
        """Read more; raise what the socket said once nothing complete is left."""
        self.fill()
        if self.failure is not None:
            failure, self.failure = self.failure, None
            raise failure()
        if not self.connection.io:
            raise self.exa.NotConnected("Trying to read on a closed TCP connection")

    def _lost(self, reason: str, quiet: bool = False) -> Exception:
        connection = self.connection
        connection.close()
        if not quiet:
            self.exa.log.warning(
                lambda: f"{connection.name()} {connection.peer} lost TCP session with peer",
                connection.session(),
            )
        return self.exa.LostConnection(reason)

    def _too_slow(self, exc: Exception) -> Exception:
        connection = self.connection
        connection.close()
        self.exa.log.warning(lambda: f"{connection.name()} {connection.peer} peer is too slow",
                             connection.session())
        return self.exa.TooSlowError(
            f"Timeout while reading data from the network ({self.exa.errstr(exc)})")

    def _undefined(self, exc: Exception) -> Exception:
        connection = self.connection
        self.exa.log.critical(
            lambda: f"{connection.name()} {connection.peer} undefined error reading on socket",
            connection.session(),
        )
        return self.exa.NetworkError(
            f"Problem while reading data from the network ({self.exa.errstr(exc)})")


# ---------------------------------------------------------------------------
# Shell: what is patched, checked before anything is


class _Exa:
    """Every ExaBGP name this module uses, resolved and checked once by install()."""

    def __init__(self) -> None:
        missing: list[str] = []

        def need(module: str, path: str) -> Any:
            try:
                obj: Any = __import__(module, fromlist=["_"])
            except ImportError:
                missing.append(f"module {module}")
                return None
            for name in path.split("."):
                if not hasattr(obj, name):
                    missing.append(f"{module}.{path}")
                    return None
                obj = getattr(obj, name)
            return obj

        def uses(function: Any, where: str, *names: str) -> None:
            code = getattr(function, "__code__", None)
            for name in names:
                if code is None or name not in code.co_names:
                    missing.append(f"{where} using {name!r}")

        protocol = "exabgp.reactor.protocol"
        self.Protocol = need(protocol, "Protocol")
        self.read_message = need(protocol, "Protocol.read_message")
        self.NOP_MESSAGE = need(protocol, "_NOP")
        self.EMPTY_UPDATE = need(protocol, "_UPDATE")
        reader = need("exabgp.reactor.network.connection", "Connection.reader")
        for name in ("close", "name", "session"):
            need("exabgp.reactor.network.connection", f"Connection.{name}")
        network = "exabgp.reactor.network.error"
        self.NotifyError = need(network, "NotifyError")
        self.LostConnection = need(network, "LostConnection")
        self.NetworkError = need(network, "NetworkError")
        self.TooSlowError = need(network, "TooSlowError")
        self.NotConnected = need(network, "NotConnected")
        self.block = need(network, "error.block")
        self.fatal = need(network, "error.fatal")
        self.errstr = need("exabgp.util.errstr", "errstr")
        self.log = need("exabgp.logger", "log")
        message = need("exabgp.bgp.message", "Message")
        lengths = need("exabgp.bgp.message", "Message.Length")
        names = need("exabgp.bgp.message", "Message.CODE.name")
        self.ESTABLISHED = need("exabgp.bgp.fsm", "FSM.ESTABLISHED")
        self.L2VPN = need("exabgp.protocol.family", "AFI.l2vpn")
        self.EVPN = need("exabgp.protocol.family", "SAFI.evpn")
        main = need("exabgp.reactor.peer", "Peer._main")
        negotiated = need("exabgp.bgp.message.open.capability.negotiated", "Negotiated.__init__")
        need("exabgp.bgp.message.open.capability.negotiated", "RequirePath.receive")
        processes_init = need("exabgp.reactor.api.processes", "Processes.__init__")
        need("exabgp.reactor.api.processes", "Processes.write")
        api = "exabgp.configuration.neighbor.api"
        self.ParseAPI = need(api, "ParseAPI")
        self.ParseReceive = need(api, "ParseReceive")
        for name in ("known", "action", "default"):
            need(api, f"ParseReceive.{name}")
        need(api, "ParseAPI.DEFAULT_API")
        flatten = need(api, "ParseAPI.flatten")
        self.boolean = need("exabgp.configuration.parser", "boolean")

        if self.read_message is not None:
            # Once installed, the original is what counts (install() may run twice).
            self.read_message = inspect.unwrap(self.read_message)
            if not inspect.isgeneratorfunction(self.read_message):
                missing.append(f"{protocol}.Protocol.read_message as a generator")
            uses(self.read_message, "Protocol.read_message", "connection", "reader")
        if reader is not None and not inspect.isgeneratorfunction(reader):
            missing.append("Connection.reader as a generator")
        if main is not None:
            uses(main, "Peer._main", "read_message", "check_ka", "recv_timer")
        if negotiated is not None:
            uses(negotiated, "Negotiated.__init__", "addpath")
        if processes_init is not None:
            uses(processes_init, "Processes.__init__", "silence")
        if flatten is not None and not isinstance(
                self.ParseAPI.__dict__.get("flatten"), classmethod):
            missing.append("ParseAPI.flatten as a classmethod")
        if self.EMPTY_UPDATE is not None and getattr(self.EMPTY_UPDATE, "nlris", None) != []:
            missing.append(f"{protocol}._UPDATE as an UPDATE without NLRI")
        if message is not None and (getattr(message, "MARKER", None) != MARKER
                                    or getattr(message, "HEADER_LEN", None) != HEADER_LEN):
            missing.append("Message.MARKER / Message.HEADER_LEN as RFC 4271 has them")
        if (self.L2VPN, self.EVPN) != (AFI_L2VPN, SAFI_EVPN):
            missing.append("AFI.l2vpn == 25 and SAFI.evpn == 70")
        if missing:
            raise RawReceiveUnavailable(
                "this ExaBGP cannot carry evpnd's raw EVPN receive path (evpnd/speaker/"
                "rawreceive.py, written for ExaBGP 5.0.15); missing: " + "; ".join(missing)
            )
        self._lengths = lengths
        self._names = names

    def length_valid(self, msg: int, length: int) -> bool:
        return bool(self._lengths.get(msg, lambda value: value >= HEADER_LEN)(length))

    def code_name(self, msg: int) -> str:
        return str(self._names(msg))


_installed: _Exa | None = None


def install() -> None:
    """Check the running ExaBGP, then add the config keyword and the receive path.

    Raises RawReceiveUnavailable (nothing patched) when a name it needs is
    missing. Installing twice is harmless.
    """
    global _installed
    exa = _Exa()
    if _installed is not None:
        return
    _add_config_keyword(exa)
    _patch_read_message(exa)
    _installed = exa


def installed() -> bool:
    return _installed is not None


def _add_config_keyword(exa: _Exa) -> None:
    """`receive { raw-evpn; }`: only under receive (ParseSend keeps the shared tables)."""
    receive = exa.ParseReceive
    receive.known = {**receive.known, CONFIG_KEYWORD: exa.boolean}
    receive.action = {**receive.action, CONFIG_KEYWORD: "set-command"}
    receive.default = {**receive.default, CONFIG_KEYWORD: True}
    parse_api = exa.ParseAPI
    parse_api.DEFAULT_API[API_KEY] = []
    original = parse_api.__dict__["flatten"].__func__

    def flatten(cls: Any, apis: dict[str, Any]) -> dict[str, Any]:
        built: dict[str, Any] = original(cls, apis)
        built[API_KEY] = [
            process
            for api in apis.values()
            if api.get("receive", {}).get(CONFIG_KEYWORD, False)
            for process in api.get("processes", [])
        ]
        return built

    parse_api.flatten = classmethod(flatten)


def _patch_read_message(exa: _Exa) -> None:
    original = exa.read_message
    established = exa.ESTABLISHED
    l2vpn, evpn = exa.L2VPN, exa.EVPN
    nop, empty_update = exa.NOP_MESSAGE, exa.EMPTY_UPDATE

    def read_message(self: Any) -> Iterator[Any]:
        peer = self.peer
        neighbor = peer.neighbor
        recipients = raw_recipients(neighbor.api)
        connection = self.connection
        buffered = None if connection is None else BufferedInput.of(connection)
        if buffered is None:
            if not recipients or connection is None:
                yield from original(self)
                return
            buffered = BufferedInput.attach(connection, exa)
        if (not recipients or peer.fsm != established or neighbor["rate-limit"] > 0
                or self.negotiated.addpath.receive(l2vpn, evpn)):
            yield from original(self)
            return
        while True:
            if buffered.available() < RECV_LOW_WATER:
                buffered.fill()
            buf = buffered.buffer
            spans, upto = scan(buf, buffered.start, len(buf), connection.msg_size)
            if spans:
                peer.stats["receive-update"] += len(spans)
                processes = peer.reactor.processes
                if not processes.silence:
                    line = frame_line(str(neighbor["peer-address"]), buf, spans).decode("ascii")
                    for process in recipients:
                        processes.write(process, line, neighbor)
                buffered.consume(upto)
                # Traffic for the hold timer, a turn for keepalives and our sending.
                yield empty_update
                return
            if buffered.head_ready() or buffered.failure is not None or not connection.io:
                yield from original(self)  # not raw, refused, or the socket's end
                return
            yield nop

    read_message.__doc__ = original.__doc__
    read_message.__wrapped__ = original  # type: ignore[attr-defined]
    exa.Protocol.read_message = read_message
