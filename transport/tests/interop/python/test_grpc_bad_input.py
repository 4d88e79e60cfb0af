"""Bad input on the wire: raw sockets and the hyper-h2 library, below any gRPC client.

Every test ends by checking that the server process is still running and answers a
normal gRPC call on a new connection.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
import urllib.parse
from dataclasses import dataclass, field

import grpc
import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import pytest

from interop_helpers import CODE, MESSAGE_LIMIT, eventually, not_found_message

SC = grpc.StatusCode
IO_TIMEOUT_S = 30.0

PING_PATH = "/veddb.v1.VedDb/Ping"
GET_PATH = "/veddb.v1.VedDb/Get"


def split_messages(data: bytes) -> list[bytes]:
    """The complete gRPC messages at the front of `data` (uncompressed)."""
    messages = []
    while len(data) >= 5:
        flag, length = struct.unpack(">BI", data[:5])
        assert flag == 0, "the server must not compress"
        if len(data) < 5 + length:
            break
        messages.append(data[5: 5 + length])
        data = data[5 + length:]
    return messages


def grpc_frame(body: bytes, compressed: bool = False, length: int | None = None) -> bytes:
    """A gRPC length-prefixed message: flag byte, 4-byte big-endian length, body."""
    if length is None:
        length = len(body)
    return struct.pack(">BI", 1 if compressed else 0, length) + body


def frame_types(buffer: bytearray) -> list[int]:
    """Splits complete HTTP/2 frames off the front of `buffer`; returns their types."""
    types = []
    while len(buffer) >= 9:
        length = int.from_bytes(buffer[0:3], "big")
        if len(buffer) < 9 + length:
            break
        types.append(buffer[3])
        del buffer[: 9 + length]
    return types


GOAWAY = 0x7


@dataclass
class RawResponse:
    headers: dict = field(default_factory=dict)
    trailers: dict = field(default_factory=dict)
    data: bytes = b""
    ended: bool = False
    reset_code: int | None = None
    goaway: h2.events.ConnectionTerminated | None = None
    closed: bool = False

    @property
    def http_status(self) -> int | None:
        status = self.headers.get(b":status")
        return int(status) if status is not None else None

    @property
    def grpc_status(self) -> int | None:
        """grpc-status from the trailers, or from the headers of a Trailers-Only answer."""
        value = self.trailers.get(b"grpc-status", self.headers.get(b"grpc-status"))
        return int(value) if value is not None else None

    @property
    def grpc_message(self) -> bytes | None:
        return self.trailers.get(b"grpc-message", self.headers.get(b"grpc-message"))

    def describe(self) -> str:
        return (
            f"headers={self.headers} trailers={self.trailers} data={self.data[:64]!r} "
            f"ended={self.ended} reset={self.reset_code} goaway={self.goaway} "
            f"closed={self.closed}"
        )


class H2Client:
    """One plaintext HTTP/2 connection (prior knowledge), driven by hand."""

    def __init__(self, port: int):
        self.port = port
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT_S)
        self.conn = h2.connection.H2Connection(
            config=h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.conn.initiate_connection()
        self.flush()
        self.responses: dict[int, RawResponse] = {}
        self.goaway: h2.events.ConnectionTerminated | None = None
        self.closed = False

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request_headers(self, path: str, content_type: str | None = "application/grpc",
                        extra: tuple = ()) -> list:
        headers = [
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", path.encode()),
            (b":authority", f"127.0.0.1:{self.port}".encode()),
        ]
        if content_type is not None:
            headers.append((b"content-type", content_type.encode()))
        headers.append((b"te", b"trailers"))
        headers.extend(extra)
        return headers

    def start(self, path: str, content_type: str | None = "application/grpc",
              extra: tuple = (), end_stream: bool = False) -> int:
        stream_id = self.conn.get_next_available_stream_id()
        self.conn.send_headers(
            stream_id, self.request_headers(path, content_type, extra), end_stream=end_stream
        )
        self.flush()
        self.responses[stream_id] = RawResponse()
        return stream_id

    def send(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        self.conn.send_data(stream_id, data, end_stream=end_stream)
        self.flush()

    def call(self, path: str, body: bytes, content_type: str | None = "application/grpc",
             extra: tuple = ()) -> RawResponse:
        """A whole request (headers, DATA, END_STREAM) and its whole answer."""
        stream_id = self.start(path, content_type, extra)
        self.send(stream_id, body, end_stream=True)
        return self.wait(stream_id)

    def _pump(self, timeout: float) -> None:
        """Reads once from the socket (waiting up to `timeout` seconds) and dispatches
        the events."""
        self.sock.settimeout(max(timeout, 0.01))
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return
        except ConnectionResetError:
            data = b""
        if not data:
            self.closed = True
            return
        for event in self.conn.receive_data(data):
            stream_id = getattr(event, "stream_id", None)
            response = self.responses.get(stream_id)
            if isinstance(event, h2.events.ResponseReceived) and response:
                response.headers.update(event.headers)
            elif isinstance(event, h2.events.TrailersReceived) and response:
                response.trailers.update(event.headers)
            elif isinstance(event, h2.events.DataReceived):
                if response:
                    response.data += event.data
                if event.flow_controlled_length:
                    self.conn.acknowledge_received_data(event.flow_controlled_length, stream_id)
            elif isinstance(event, h2.events.StreamEnded) and response:
                response.ended = True
            elif isinstance(event, h2.events.StreamReset) and response:
                response.reset_code = event.error_code
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.goaway = event
        self.flush()

    def wait_until(self, predicate, timeout: float = IO_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while not predicate() and not self.closed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no answer within {timeout:.0f} s")
            self._pump(remaining)

    def wait(self, stream_id: int, timeout: float = IO_TIMEOUT_S) -> RawResponse:
        """Reads until the stream ends, is reset, or the connection goes away."""
        response = self.responses[stream_id]

        def done() -> bool:
            if response.ended or response.reset_code is not None:
                return True
            # A GOAWAY also ends streams above its last_stream_id, or all of them once
            # the server closes the socket.
            return self.goaway is not None and self.goaway.last_stream_id < stream_id

        self.wait_until(done, timeout)
        response.goaway = self.goaway
        response.closed = self.closed
        return response


@pytest.fixture(autouse=True)
def server_survives(server):
    """After every test: the process runs and a new connection gets a normal answer."""
    yield
    server.assert_alive()


def assert_grpc_error(response: RawResponse, allowed: set[grpc.StatusCode] | None) -> None:
    """A gRPC error answer (:status 200, grpc-status not OK) with one of the `allowed`
    codes (any error code when None)."""
    assert response.grpc_status is not None, f"no grpc-status: {response.describe()}"
    assert response.grpc_status != 0, f"grpc-status OK for a bad request: {response.describe()}"
    if allowed is not None:
        codes = {CODE[c] for c in allowed}
        assert response.grpc_status in codes, (
            f"grpc-status {response.grpc_status}, expected one of "
            f"{sorted(c.name for c in allowed)}: {response.describe()}"
        )
    assert response.http_status == 200, f"gRPC errors come with :status 200: {response.describe()}"


# --------------------------------------------------------------------------- sanity


def test_raw_client_gets_ok_for_a_good_call(server, pb):
    """The hand-driven client itself works: a good Ping is answered with OK."""
    with H2Client(server.port) as client:
        body = pb.veddb.PingRequest().SerializeToString()
        response = client.call(PING_PATH, grpc_frame(body))
    assert response.ended, response.describe()
    assert response.http_status == 200
    assert response.headers.get(b"content-type", b"").startswith(b"application/grpc")
    assert response.grpc_status == 0, response.describe()
    assert response.data == grpc_frame(b""), "one empty PingResponse message"


def test_grpc_message_is_percent_encoded_on_the_wire(server, pb):
    key = "clé ☺ 😈 100%\r\n".encode()
    with H2Client(server.port) as client:
        body = pb.veddb.GetRequest(key=key).SerializeToString()
        response = client.call(GET_PATH, grpc_frame(body))
    assert response.grpc_status == CODE[SC.NOT_FOUND], response.describe()
    raw = response.grpc_message
    assert raw is not None
    assert all(0x20 <= byte <= 0x7E for byte in raw), f"grpc-message must be ASCII: {raw!r}"
    decoded = urllib.parse.unquote_to_bytes(raw).decode("utf-8")
    assert decoded == not_found_message(key)


# --------------------------------------------------------------------------- HTTP/1.1


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: veddb-interop\r\n\r\n",
        b"POST /veddb.v1.VedDb/Ping HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/grpc\r\nContent-Length: 5\r\n\r\n\x00\x00\x00\x00\x00",
    ],
    ids=["get", "post-grpc"],
)
def test_http1_request_is_refused(server, request_bytes):
    """An HTTP/1.1 request is not a valid HTTP/2 preface: the server closes the
    connection (possibly after a GOAWAY) or answers with an HTTP error."""
    received = bytearray()
    frames = bytearray()
    closed = goaway = False
    with socket.create_connection(("127.0.0.1", server.port), timeout=IO_TIMEOUT_S) as sock:
        sock.sendall(request_bytes)
        deadline = time.monotonic() + IO_TIMEOUT_S
        while not closed and not goaway:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            sock.settimeout(remaining)
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                closed = True
                break
            except socket.timeout:
                break
            if not chunk:
                closed = True
                break
            received += chunk
            if received.startswith(b"HTTP/1."):
                if b"\r\n" in received:
                    break
            else:
                frames += chunk
                goaway = GOAWAY in frame_types(frames)
    if received.startswith(b"HTTP/1."):
        status = int(bytes(received).split(b"\r\n", 1)[0].split()[1])
        assert status >= 400, f"HTTP/1.1 request answered with {status}"
    else:
        assert closed or goaway, (
            f"connection neither closed nor refused within {IO_TIMEOUT_S:.0f} s: "
            f"{bytes(received[:200])!r}"
        )
    # A normal gRPC call on a new connection still works.
    server.ping(timeout=IO_TIMEOUT_S)


# --------------------------------------------------------------------------- headers


@pytest.mark.parametrize("content_type", ["text/plain", "application/json", None],
                         ids=["text-plain", "json", "missing"])
def test_wrong_content_type(server, pb, content_type):
    with H2Client(server.port) as client:
        body = pb.veddb.PingRequest().SerializeToString()
        response = client.call(PING_PATH, grpc_frame(body), content_type=content_type)
    ok = response.http_status == 415 or (
        response.grpc_status is not None and response.grpc_status != 0
    )
    assert ok, f"expected HTTP 415 or a gRPC error: {response.describe()}"


@pytest.mark.parametrize("path", ["/veddb.v1.VedDb/NoSuchMethod", "/no/such/path"])
def test_unknown_path_is_unimplemented(server, path):
    with H2Client(server.port) as client:
        response = client.call(path, grpc_frame(b""))
    assert_grpc_error(response, {SC.UNIMPLEMENTED})


def test_huge_header_block_does_not_hurt_the_server(server):
    """A 200 KB header (HEADERS + CONTINUATION frames): refused one way or another
    (431, RST_STREAM, GOAWAY, or an error status); the server survives."""
    with H2Client(server.port) as client:
        try:
            stream_id = client.start(PING_PATH, extra=((b"x-padding", b"a" * 200_000),))
            client.send(stream_id, grpc_frame(b""), end_stream=True)
            client.wait(stream_id)
        except (OSError, AssertionError, h2.exceptions.ProtocolError):
            pass


# --------------------------------------------------------------------------- messages


def test_truncated_message(server):
    """The length prefix says 100 bytes, only 10 come, then END_STREAM."""
    with H2Client(server.port) as client:
        response = client.call(GET_PATH, grpc_frame(b"\x0a\x08abcdefgh", length=100))
    assert_grpc_error(response, {SC.INTERNAL, SC.INVALID_ARGUMENT})


def test_truncated_prefix(server):
    """Only 3 of the 5 prefix bytes, then END_STREAM."""
    with H2Client(server.port) as client:
        response = client.call(GET_PATH, b"\x00\x00\x00")
    assert_grpc_error(response, {SC.INTERNAL, SC.INVALID_ARGUMENT})


def test_malformed_protobuf(server):
    """A complete frame whose body is not a valid GetRequest (a length-delimited field
    that claims 5 bytes and has 2)."""
    with H2Client(server.port) as client:
        response = client.call(GET_PATH, grpc_frame(b"\x0a\x05ab"))
    assert_grpc_error(response, {SC.INTERNAL, SC.INVALID_ARGUMENT})


def test_two_messages_on_a_unary_call(server, pb):
    """A unary method takes exactly one request message."""
    body = grpc_frame(pb.veddb.PingRequest().SerializeToString())
    with H2Client(server.port) as client:
        response = client.call(PING_PATH, body + body)
    assert_grpc_error(response, None)


def test_no_message_on_a_unary_call(server):
    with H2Client(server.port) as client:
        stream_id = client.start(PING_PATH, end_stream=True)
        response = client.wait(stream_id)
    assert_grpc_error(response, None)


@pytest.mark.parametrize("length", [MESSAGE_LIMIT + 1, 0xFFFF_FFFF], ids=["4MiB+1", "4GiB-1"])
def test_length_prefix_over_limit(server, length):
    """The prefix alone announces a message over the 4 MiB limit: the server answers
    RESOURCE_EXHAUSTED without waiting for the body (which is never sent)."""
    with H2Client(server.port) as client:
        stream_id = client.start(GET_PATH)
        client.send(stream_id, grpc_frame(b"", length=length), end_stream=False)
        response = client.wait(stream_id)
    assert_grpc_error(response, {SC.RESOURCE_EXHAUSTED})


def test_compressed_message_with_unsupported_encoding(server):
    with H2Client(server.port) as client:
        response = client.call(
            GET_PATH,
            grpc_frame(b"\x1f\x8b\x08\x00\x00\x00\x00\x00", compressed=True),
            extra=((b"grpc-encoding", b"gzip"),),
        )
    assert_grpc_error(response, {SC.UNIMPLEMENTED})


def test_compressed_flag_without_encoding(server, pb):
    """Flag 1 with no grpc-encoding header: a protocol error (gRPC says INTERNAL;
    this server refuses compression with UNIMPLEMENTED)."""
    with H2Client(server.port) as client:
        body = pb.veddb.PingRequest().SerializeToString()
        response = client.call(PING_PATH, grpc_frame(body, compressed=True))
    assert_grpc_error(response, {SC.INTERNAL, SC.UNIMPLEMENTED})


# --------------------------------------------------------------------------- disconnects


def test_subscriber_vanishing_without_rst_stream(server, pb, prefix):
    """A subscriber whose TCP connection just closes (no RST_STREAM, no GOAWAY) is
    removed: publishes eventually report 0 receivers."""
    topic = prefix + b"vanish"
    with server.channel() as channel:
        stub = pb.veddb_grpc.VedDbStub(channel)

        def receivers() -> int:
            request = pb.veddb.PublishRequest(topic=topic, message=b"m")
            return stub.Publish(request, timeout=IO_TIMEOUT_S).receivers

        client = H2Client(server.port)
        try:
            body = pb.veddb.SubscribeRequest(topic=topic).SerializeToString()
            stream_id = client.start("/veddb.v1.VedDb/Subscribe")
            client.send(stream_id, grpc_frame(body), end_stream=True)
            response = client.responses[stream_id]
            client.wait_until(lambda: split_messages(response.data) or response.ended)
            assert response.http_status == 200 and not response.ended, response.describe()
            first = split_messages(response.data)[0]
            assert pb.veddb.SubscribeResponse.FromString(first).subscribed
            assert receivers() == 1
        finally:
            client.close()
        eventually(lambda: receivers() == 0, "the vanished subscriber is removed")


# --------------------------------------------------------------------------- flood




def test_rapid_reset_flood(server, pb, prefix):
    """2,000 HEADERS + RST_STREAM pairs on one connection (CVE-2023-44487). The server
    may close that connection (GOAWAY); a separate, normal gRPC connection keeps working
    during and after."""
    pairs = 2000
    conn = h2.connection.H2Connection(
        config=h2.config.H2Configuration(client_side=True, header_encoding=None)
    )
    conn.initiate_connection()
    headers = [
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":path", b"/veddb.v1.VedDb/Subscribe"),
        (b":authority", f"127.0.0.1:{server.port}".encode()),
        (b"content-type", b"application/grpc"),
        (b"te", b"trailers"),
    ]
    chunks = [conn.data_to_send()]
    for i in range(pairs):
        stream_id = 1 + 2 * i
        conn.send_headers(stream_id, headers)
        conn.reset_stream(stream_id, error_code=h2.errors.ErrorCodes.CANCEL)
        if i % 100 == 99:
            chunks.append(conn.data_to_send())
    chunks.append(conn.data_to_send())

    outcome = {"sent_bytes": 0, "goaway": False, "closed": False, "send_error": None}

    def flood() -> None:
        with socket.create_connection(("127.0.0.1", server.port), timeout=IO_TIMEOUT_S) as sock:
            reader_done = threading.Event()

            def drain() -> None:
                buffer = bytearray()
                try:
                    while True:
                        data = sock.recv(65536)
                        if not data:
                            outcome["closed"] = True
                            return
                        buffer += data
                        if GOAWAY in frame_types(buffer):
                            outcome["goaway"] = True
                except OSError:
                    outcome["closed"] = True
                finally:
                    reader_done.set()

            reader = threading.Thread(target=drain, daemon=True)
            reader.start()
            try:
                for chunk in chunks:
                    sock.sendall(chunk)
                    outcome["sent_bytes"] += len(chunk)
                    # Spread the flood a little so normal calls really overlap it.
                    time.sleep(0.005)
            except OSError as error:  # the server may close the connection
                outcome["send_error"] = repr(error)
            # Give the server a moment to answer or close; do not wait for it.
            reader_done.wait(timeout=2.0)
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        reader.join(timeout=IO_TIMEOUT_S)

    with server.channel() as channel:
        stub = pb.veddb_grpc.VedDbStub(channel)

        def normal_call(i: int) -> None:
            key = prefix + b"k%d" % i
            stub.Set(pb.veddb.SetRequest(key=key, value=b"v%d" % i), timeout=IO_TIMEOUT_S)
            got = stub.Get(pb.veddb.GetRequest(key=key), timeout=IO_TIMEOUT_S)
            assert got.value == b"v%d" % i

        normal_call(-1)  # connected before the flood starts
        flooder = threading.Thread(target=flood, daemon=True)
        flooder.start()
        calls = 0
        while flooder.is_alive() or calls < 20:
            normal_call(calls)
            calls += 1
            if calls > 100_000:
                break
        flooder.join(timeout=IO_TIMEOUT_S)
        assert not flooder.is_alive(), "the flood did not finish"

        # After: the same connection and a new one both work.
        normal_call(calls)
        stub.Ping(pb.veddb.PingRequest(), timeout=IO_TIMEOUT_S)
    server.ping(timeout=IO_TIMEOUT_S)
    print(f"rapid reset flood: {outcome}, {calls} normal calls during it")
