"""Large values through grpcio against a server with its default limits.

The server runs with its default flags (``--value-bytes-max`` 16 MiB), so its gRPC message
limit follows the value limit: 16 MiB + 64 KiB (largest key) + 64 KiB (framing) = 16,908,288
bytes. A value of 6,000,000 bytes round-trips; a message over the limit gets
RESOURCE_EXHAUSTED with the limit in its message (never UNAVAILABLE or INTERNAL, never a bare
reset), and the channel goes on serving.
"""

from __future__ import annotations

import os

import grpc
import pytest

from conftest import CHANNEL_OPTIONS, VedDbServer, server_binary
from interop_helpers import MiB, expect_status

SC = grpc.StatusCode
VALUE_BYTES_MAX = 16 * MiB
MESSAGE_BYTES_MAX = VALUE_BYTES_MAX + 64 * 1024 + 64 * 1024
LIMIT_TEXT = f"this server's limit of {MESSAGE_BYTES_MAX} bytes (--grpc-message-bytes-max)"
CALL_TIMEOUT_S = 60.0

# grpcio refuses answers over 4 MiB by default (its own limit, not the server's): raise it so
# that the answers checked here are the server's.
LARGE_CHANNEL_OPTIONS = CHANNEL_OPTIONS + [
    ("grpc.max_receive_message_length", 64 * MiB),
    ("grpc.max_send_message_length", -1),
]


@pytest.fixture(scope="module")
def default_server(pb, tmp_path_factory):
    """A server with the default message and value limits (only cores and port given)."""
    instance = VedDbServer(
        server_binary(), tmp_path_factory.mktemp("veddb_values") / "veddb-server.log", pb
    )
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()


@pytest.fixture(scope="module")
def large_stub(pb, default_server):
    with grpc.insecure_channel(default_server.address, options=LARGE_CHANNEL_OPTIONS) as channel:
        yield pb.veddb_grpc.VedDbStub(channel)


def test_six_megabyte_value_round_trips(large_stub, pb, prefix):
    key = prefix + b"six"
    value = os.urandom(6_000_000)
    stored = large_stub.Set(pb.veddb.SetRequest(key=key, value=value), timeout=CALL_TIMEOUT_S)
    assert stored.stored
    got = large_stub.Get(pb.veddb.GetRequest(key=key), timeout=CALL_TIMEOUT_S)
    assert (len(got.value), got.version) == (len(value), stored.version)
    assert got.value == value
    large_stub.Delete(pb.veddb.DeleteRequest(key=key), timeout=CALL_TIMEOUT_S)


def test_value_of_exactly_the_value_limit_round_trips_and_one_more_byte_is_refused(
    large_stub, pb, prefix
):
    key = prefix + b"max"
    value = os.urandom(VALUE_BYTES_MAX)
    assert large_stub.Set(pb.veddb.SetRequest(key=key, value=value), timeout=CALL_TIMEOUT_S).stored
    assert large_stub.Get(pb.veddb.GetRequest(key=key), timeout=CALL_TIMEOUT_S).value == value
    error = expect_status(
        SC.RESOURCE_EXHAUSTED,
        large_stub.Set,
        pb.veddb.SetRequest(key=key, value=value + b"x"),
        timeout=CALL_TIMEOUT_S,
    )
    assert str(VALUE_BYTES_MAX) in error.details() and "--value-bytes-max" in error.details()
    large_stub.Delete(pb.veddb.DeleteRequest(key=key), timeout=CALL_TIMEOUT_S)


def test_request_over_the_message_limit_is_resource_exhausted_with_the_limit(
    large_stub, pb, prefix
):
    """A unary Set and a Batch whose message is over the limit: RESOURCE_EXHAUSTED naming it,
    while grpcio is still sending the body; then the same channel serves a Get and a Ping."""
    key = prefix + b"over"
    request = pb.veddb.SetRequest(key=key, value=bytes(MESSAGE_BYTES_MAX))
    assert request.ByteSize() > MESSAGE_BYTES_MAX
    for _ in range(3):
        error = expect_status(SC.RESOURCE_EXHAUSTED, large_stub.Set, request, timeout=CALL_TIMEOUT_S)
        assert LIMIT_TEXT in error.details(), error.details()
        assert f"a request message of {request.ByteSize()} bytes" in error.details()

    def batch():
        yield pb.veddb.BatchRequest(set=request)

    with pytest.raises(grpc.RpcError) as info:
        list(large_stub.Batch(batch(), timeout=CALL_TIMEOUT_S))
    assert info.value.code() == SC.RESOURCE_EXHAUSTED, info.value
    assert LIMIT_TEXT in info.value.details(), info.value.details()

    expect_status(SC.NOT_FOUND, large_stub.Get, pb.veddb.GetRequest(key=key), timeout=CALL_TIMEOUT_S)
    large_stub.Ping(pb.veddb.PingRequest(), timeout=CALL_TIMEOUT_S)


def test_answer_over_the_message_limit_is_resource_exhausted_with_the_limit(
    large_stub, pb, prefix
):
    """Two values that fit one by one, not together in one MGet answer: the server answers
    RESOURCE_EXHAUSTED naming its limit instead of sending it; in a Batch, that request's
    status, and the stream goes on."""
    keys = [prefix + b"half-1", prefix + b"half-2"]
    value = os.urandom(9 * MiB)
    try:
        for key in keys:
            assert large_stub.Set(
                pb.veddb.SetRequest(key=key, value=value), timeout=CALL_TIMEOUT_S
            ).stored
        error = expect_status(
            SC.RESOURCE_EXHAUSTED,
            large_stub.MGet,
            pb.veddb.MGetRequest(keys=keys),
            timeout=CALL_TIMEOUT_S,
        )
        assert LIMIT_TEXT in error.details(), error.details()

        def batch():
            yield pb.veddb.BatchRequest(mget=pb.veddb.MGetRequest(keys=keys))
            yield pb.veddb.BatchRequest(get=pb.veddb.GetRequest(key=keys[0]))

        answers = list(large_stub.Batch(batch(), timeout=CALL_TIMEOUT_S))
        assert len(answers) == 2
        assert answers[0].status.code == SC.RESOURCE_EXHAUSTED.value[0], answers[0].status
        assert LIMIT_TEXT in answers[0].status.message
        assert answers[1].status.code == 0 and answers[1].get.value == value
    finally:
        for key in keys:
            large_stub.Delete(pb.veddb.DeleteRequest(key=key), timeout=CALL_TIMEOUT_S)


def test_six_megabyte_message_reaches_a_subscriber(large_stub, pb, prefix):
    topic = prefix + b"topic"
    message = os.urandom(6_000_000)
    stream = large_stub.Subscribe(pb.veddb.SubscribeRequest(topic=topic), timeout=CALL_TIMEOUT_S)
    try:
        assert next(stream).subscribed
        receivers = large_stub.Publish(
            pb.veddb.PublishRequest(topic=topic, message=message), timeout=CALL_TIMEOUT_S
        ).receivers
        assert receivers == 1
        got = next(stream)
        assert (got.dropped, len(got.message)) == (0, len(message))
        assert got.message == message
    finally:
        stream.cancel()
