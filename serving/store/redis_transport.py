"""A lean asyncio Redis transport for the request path: one pipelined connection per loop.

redis-py's asyncio client spends most of a loopback EVALSHA on itself (pool checkout, a lock,
the retry wrapper, ``async_timeout``, a stream reader and its generic parser): about 100 us of
CPU per call on the serving worker's core, measured against a local ``redis-server``. This
transport keeps what the store needs and nothing else:

* **One connection per event loop**, opened on first use (inside the loop that serves
  requests) and re-opened after any failure. No pool: commands are pipelined on it.
* **Auto-pipelining.** A command on an idle connection is written at once; while replies
  are outstanding, the commands issued meanwhile are written together with one ``write``
  (flushed by a ``call_soon``). Replies come back in order (RESP2) and resolve the futures
  FIFO. So 16 concurrent requests cost the worker one syscall, not 16, and a batch's folds
  go out in one round trip, executed by the server in order.
* **Deadline.** Every call resolves within ``deadline_s`` or fails with ``timeout``; a call
  that times out closes the connection (its reply may still be in flight), so every later
  reply can never be matched to the wrong request. Connect + handshake have the same bound.
* **URLs** are parsed by redis-py itself (``redis.connection.parse_url``, the parser of
  ``Redis.from_url``): ``redis://`` (TCP), ``rediss://`` (TLS, verified against the system
  CAs by default) and ``unix://``; user name/password (``AUTH``) and database (``SELECT``).
  Supported query options: ``ssl_cert_reqs`` (``none``/``optional``/``required``),
  ``ssl_ca_certs``, ``ssl_ca_path``, ``ssl_certfile``, ``ssl_keyfile``, ``ssl_check_hostname``,
  ``db``. Any other option is refused when the store is built (one-line error), not ignored.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ssl
from typing import Any

from redis.connection import SSLConnection, UnixDomainSocketConnection, parse_url

SUPPORTED_OPTIONS = frozenset(
    {
        "host",
        "port",
        "path",
        "db",
        "username",
        "password",
        "connection_class",
        "ssl_cert_reqs",
        "ssl_ca_certs",
        "ssl_ca_path",
        "ssl_certfile",
        "ssl_keyfile",
        "ssl_check_hostname",
    }
)


class ReplyError(Exception):
    """An error reply (``-ERR ...``, ``-NOSCRIPT ...``) from the server."""


class TransportTimeout(Exception):
    """No reply within the deadline."""


class TransportClosed(Exception):
    """The connection could not be opened or was lost."""


def encode(args: tuple[Any, ...], head: tuple[int, bytes] = (0, b"")) -> bytes:
    """One command as a RESP array of bulk strings (``str`` as UTF-8, ``bytes`` as is),
    after ``head``: (count, bytes) of words encoded once by ``bulks`` (a command prefix)."""
    return b"*%d\r\n%b%b" % (head[0] + len(args), head[1], bulks(args))


def bulks(args: tuple[Any, ...]) -> bytes:
    """The RESP bulk strings of ``args`` (no array header)."""
    out = []
    for a in args:
        b = a if type(a) is bytes else str(a).encode()
        out.append(b"$%d\r\n%b\r\n" % (len(b), b))
    return b"".join(out)


def parse(buf: bytes, pos: int) -> tuple[Any, int] | None:
    """One RESP2 reply at ``buf[pos:]`` as (value, next position), or None when incomplete.

    Bulk strings are ``bytes`` (a null bulk is None), integers ``int``, arrays ``list``,
    simple strings ``bytes``, errors ``ReplyError`` instances (returned, not raised).
    """
    end = buf.find(b"\r\n", pos)
    if end < 0:
        return None
    kind = buf[pos]
    if kind == 36:  # $ bulk string
        n = int(buf[pos + 1 : end])
        pos = end + 2
        if n < 0:
            return None, pos
        stop = pos + n
        if len(buf) < stop + 2:
            return None
        return buf[pos:stop], stop + 2
    if kind == 42:  # * array
        n = int(buf[pos + 1 : end])
        pos = end + 2
        if n < 0:
            return None, pos
        items = []
        for _ in range(n):
            got = parse(buf, pos)
            if got is None:
                return None
            items.append(got[0])
            pos = got[1]
        return items, pos
    if kind == 58:  # : integer
        return int(buf[pos + 1 : end]), end + 2
    if kind == 43:  # + simple string
        return buf[pos + 1 : end], end + 2
    if kind == 45:  # - error
        return ReplyError(buf[pos + 1 : end].decode(errors="replace")), end + 2
    raise TransportClosed(f"unexpected RESP type byte {kind!r}")


class _Connection(asyncio.Protocol):
    """One socket: pipelined writes, FIFO replies."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.pending: collections.deque[asyncio.Future] = collections.deque()
        self.buf = b""  # the start of a reply not complete yet
        self.out: list[bytes] = []
        self.flushing = False
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.buf:
            data = self.buf + data
        pos = 0
        pending = self.pending
        try:
            while pending and pos < len(data):
                got = parse(data, pos)
                if got is None:
                    break
                value, pos = got
                fut = pending.popleft()
                if not fut.done():
                    fut.set_result(value)
        except (TransportClosed, ValueError) as exc:
            self.close(TransportClosed(f"bad reply: {exc}"))
            return
        self.buf = data[pos:]

    def connection_lost(self, exc: Exception | None) -> None:
        self.close(TransportClosed(f"connection lost ({exc or 'closed by the server'})"))

    def send(self, packed: bytes) -> asyncio.Future:
        """Queue one encoded command; its reply resolves the returned future."""
        fut = self.loop.create_future()
        if self.closed:
            fut.set_exception(TransportClosed("connection closed"))
            return fut
        if not self.pending and not self.flushing:
            # Idle connection (the c=1 case): write now, no loop tick of delay.
            self.pending.append(fut)
            self.transport.write(packed)  # type: ignore[union-attr]
            return fut
        self.pending.append(fut)
        self.out.append(packed)
        if not self.flushing:
            self.flushing = True
            self.loop.call_soon(self._flush)
        return fut

    def _flush(self) -> None:
        self.flushing = False
        if self.closed or not self.out:
            return
        data = self.out[0] if len(self.out) == 1 else b"".join(self.out)
        self.out.clear()
        self.transport.write(data)  # type: ignore[union-attr]

    def close(self, exc: Exception) -> None:
        if self.closed:
            return
        self.closed = True
        if self.transport is not None:
            self.transport.abort()
        while self.pending:
            fut = self.pending.popleft()
            if not fut.done():
                fut.set_exception(exc)
                fut.exception()  # retrieved: a caller that gave up early logs nothing
        self.out.clear()


def _ssl_context(opts: dict[str, Any]) -> ssl.SSLContext:
    reqs = str(opts.get("ssl_cert_reqs", "required")).lower()
    modes = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}
    if reqs not in modes:
        raise ValueError(f"REDIS_URL ssl_cert_reqs={reqs!r}: use none, optional or required")
    ctx = ssl.create_default_context(
        cafile=opts.get("ssl_ca_certs"), capath=opts.get("ssl_ca_path")
    )
    check = str(opts.get("ssl_check_hostname", reqs != "none")).lower() in ("true", "1", "yes")
    ctx.check_hostname = check and reqs != "none"
    ctx.verify_mode = modes[reqs]
    if opts.get("ssl_certfile"):
        ctx.load_cert_chain(opts["ssl_certfile"], opts.get("ssl_keyfile"))
    return ctx


class Transport:
    """Pipelined Redis calls with a deadline, one connection per running event loop.

    Args:
        url: ``redis://``, ``rediss://`` or ``unix://`` URL (see the module docstring).
        deadline_s: Bound on every call, and on connect + handshake.
        on_connect: Commands sent (pipelined) right after the handshake on every new
            connection, e.g. ``SCRIPT LOAD``; an error reply fails the connect.

    Raises:
        ValueError: The URL has an option this transport does not support.
    """

    def __init__(
        self, url: str, *, deadline_s: float, on_connect: tuple[tuple[Any, ...], ...] = ()
    ) -> None:
        opts = parse_url(url)
        unknown = sorted(set(opts) - SUPPORTED_OPTIONS)
        if unknown:
            raise ValueError(
                f"REDIS_URL option(s) {', '.join(unknown)} not supported by the serving transport"
            )
        cls = opts.get("connection_class")
        self._unix = opts.get("path") if cls is UnixDomainSocketConnection else None
        self._host = opts.get("host", "localhost")
        self._port = int(opts.get("port", 6379))
        self._ssl = _ssl_context(opts) if cls is SSLConnection else None
        handshake: list[tuple[Any, ...]] = []
        if opts.get("password") is not None:
            user = opts.get("username")
            handshake.append(
                ("AUTH", user, opts["password"]) if user else ("AUTH", opts["password"])
            )
        if int(opts.get("db") or 0):
            handshake.append(("SELECT", int(opts["db"])))
        self._handshake = tuple(encode(c) for c in (*handshake, *on_connect))
        self.deadline_s = deadline_s
        self._conn: _Connection | None = None
        self._opening: asyncio.Future | None = None

    def connection(self) -> _Connection | None:
        """The open connection of the running loop, or None (then ``await connect()``)."""
        conn = self._conn
        if conn is None or conn.closed or conn.loop is not asyncio.get_running_loop():
            return None
        return conn

    async def connect(self) -> _Connection:
        """The open connection, opening it (once, for all concurrent callers) if needed."""
        conn = self.connection()
        if conn is not None:
            return conn
        loop = asyncio.get_running_loop()
        old = self._conn
        if old is not None and old.loop is not loop:  # a new loop (tests, some Lambda shims)
            self._conn = None
            with contextlib.suppress(RuntimeError):  # its loop may be closed already
                old.close(TransportClosed("event loop changed"))
        opening = self._opening
        if opening is None or opening.get_loop() is not loop:
            opening = self._opening = loop.create_task(self._open(loop))
            opening.add_done_callback(self._opened)
        return await asyncio.shield(opening)

    def _opened(self, task: asyncio.Future) -> None:
        if self._opening is task:
            self._opening = None
        if not task.cancelled() and task.exception() is None:
            self._conn = task.result()

    async def _open(self, loop: asyncio.AbstractEventLoop) -> _Connection:
        def factory() -> _Connection:
            return _Connection(loop)

        made: list[_Connection] = []

        async def opened() -> _Connection:
            if self._unix is not None:
                _, conn = await loop.create_unix_connection(factory, self._unix)
            else:
                _, conn = await loop.create_connection(
                    factory,
                    self._host,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._host if self._ssl is not None else None,
                )
            made.append(conn)
            replies = await asyncio.gather(*(conn.send(c) for c in self._handshake))
            for reply in replies:
                if isinstance(reply, ReplyError):
                    conn.close(TransportClosed(str(reply)))
                    raise TransportClosed(f"handshake: {reply}")
            return conn

        try:
            return await asyncio.wait_for(opened(), self.deadline_s)
        except TimeoutError:
            for conn in made:
                conn.close(TransportTimeout("handshake timed out"))
            raise TransportTimeout(
                f"no connection within {self.deadline_s * 1000:.0f} ms"
            ) from None
        except OSError as exc:
            raise TransportClosed(str(exc)) from None

    async def call(self, packed: bytes) -> Any:
        """One encoded command (pipelined with the others of this loop tick); its reply
        (an error reply as a ``ReplyError`` value). Raises TransportTimeout / TransportClosed."""
        conn = self.connection() or await self.connect()
        fut = conn.send(packed)
        timer = conn.loop.call_later(self.deadline_s, _expire, conn, fut, self.deadline_s)
        try:
            return await fut
        finally:
            timer.cancel()

    async def call_many(self, commands: list[bytes]) -> list[Any]:
        """Encoded commands written together, executed in order; their replies (error
        replies as ``ReplyError`` values). Raises TransportTimeout / TransportClosed."""
        conn = self.connection() or await self.connect()
        futs = [conn.send(c) for c in commands]
        # Replies come in order: the last one's arrival means all have arrived.
        timer = conn.loop.call_later(self.deadline_s, _expire, conn, futs[-1], self.deadline_s)
        try:
            return await asyncio.gather(*futs)
        finally:
            timer.cancel()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close(TransportClosed("transport closed"))
            self._conn = None


def _expire(conn: _Connection, fut: asyncio.Future, deadline_s: float) -> None:
    if not fut.done():  # the reply may have come in the same loop iteration
        conn.close(TransportTimeout(f"no reply within {deadline_s * 1000:.0f} ms"))
