"""The RESP codec of ``serving.store.redis_transport`` (no server: see
``tests/integration/test_redis_transport.py`` for the transport against ``redis-server``)."""

from __future__ import annotations

import pytest

from serving.store.redis_transport import ReplyError, Transport, bulks, encode, parse


def test_encode_is_a_resp_array_of_bulk_strings_after_a_prefix():
    assert encode(("GET", "k")) == b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"
    head = (2, bulks(("EVALSHA", "ab")))
    assert encode(("1", b"\x00\r\n", "\u00e9"), head) == (
        b"*5\r\n$7\r\nEVALSHA\r\n$2\r\nab\r\n$1\r\n1\r\n$3\r\n\x00\r\n\r\n$2\r\n\xc3\xa9\r\n"
    )


def test_parse_every_reply_type_and_nested_arrays():
    wire = b"*4\r\n$3\r\nabc\r\n$0\r\n\r\n$-1\r\n:-7\r\n+OK\r\n-NOSCRIPT no script\r\n*-1\r\n"
    value, pos = parse(wire, 0)
    assert value == [b"abc", b"", None, -7]
    ok, pos = parse(wire, pos)
    err, pos = parse(wire, pos)
    null, pos = parse(wire, pos)
    assert ok == b"OK" and isinstance(err, ReplyError) and str(err) == "NOSCRIPT no script"
    assert null is None and pos == len(wire)


def test_parse_waits_for_a_complete_reply_at_every_cut():
    """A reply split anywhere (TCP delivers any cut) parses only once complete."""
    wire = b"*3\r\n$8\r\n\x01\x02\r\n\x03\x04\x05\x06\r\n$0\r\n\r\n:1\r\n"
    for cut in range(len(wire)):
        assert parse(wire[:cut], 0) is None, cut
    assert parse(wire, 0) == ([b"\x01\x02\r\n\x03\x04\x05\x06", b"", 1], len(wire))


@pytest.mark.parametrize(
    "url",
    ["redis://h:6379/0?socket_keepalive=true", "redis://h/0?protocol=3"],
)
def test_url_options_the_transport_does_not_support_are_refused(url):
    with pytest.raises(ValueError, match="not supported by the serving transport"):
        Transport(url, deadline_s=0.05)


def test_url_credentials_database_and_tls_make_the_handshake():
    t = Transport("rediss://user:pw@h:6380/3?ssl_cert_reqs=none", deadline_s=0.05)
    assert t._handshake == (encode(("AUTH", "user", "pw")), encode(("SELECT", 3)))
    assert t._ssl is not None and t._port == 6380
    assert Transport("unix:///tmp/r.sock", deadline_s=0.05)._unix == "/tmp/r.sock"


def test_replies_fed_in_any_pieces_resolve_their_own_calls_in_order():
    """The connection's framing: three pipelined calls, replies cut at every position."""
    import asyncio

    from serving.store.redis_transport import _Connection

    class Sink:  # the socket side: records what the connection writes
        def __init__(self) -> None:
            self.written: list[bytes] = []

        def write(self, data: bytes) -> None:
            self.written.append(data)

    wire = b"*2\r\n$3\r\nabc\r\n:1\r\n$-1\r\n-ERR x\r\n"
    loop = asyncio.new_event_loop()
    try:
        for cut in range(1, len(wire)):
            conn = _Connection(loop)
            conn.transport = Sink()  # type: ignore[assignment]
            futs = [conn.send(encode(("GET", k))) for k in "abc"]
            loop.run_until_complete(asyncio.sleep(0))  # the pipelined flush
            assert b"".join(conn.transport.written) == b"".join(  # type: ignore[union-attr]
                encode(("GET", k)) for k in "abc"
            )
            conn.data_received(wire[:cut])
            conn.data_received(wire[cut:])
            values = [f.result() for f in futs]
            assert values[:2] == [[b"abc", 1], None] and str(values[2]) == "ERR x", cut
    finally:
        loop.close()
