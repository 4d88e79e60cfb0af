"""VedDB gRPC API, driven by the reference gRPC implementation (grpcio).

Covers every RPC of veddb.v1.VedDb with its semantics, the error statuses and their
messages, deadlines, cancellation, message size limits, the standard health service, and
the cases of gRPC's interop-test-descriptions that apply to this API (empty_unary,
large_unary, server streaming, ping_pong, status_code_and_message, special_status_message,
timeout_on_sleeping_server, cancel_after_first_response, unimplemented_method).

Every test uses keys and topics under its own unique ``prefix``, so tests sharing the
module's server never see each other's data.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from interop_helpers import (
    CODE,
    KEY_BYTES_MAX,
    MESSAGE_LIMIT,
    STREAM_TIMEOUT_S,
    RequestQueue,
    eventually,
    expect_status,
    mismatch_message,
    not_found_message,
)

SC = grpc.StatusCode


# --------------------------------------------------------------------------- helpers


def get(stub, pb, key: bytes):
    return stub.Get(pb.veddb.GetRequest(key=key))


def set_(stub, pb, key: bytes, value: bytes, **options):
    return stub.Set(pb.veddb.SetRequest(key=key, value=value, **options))


def ttl(stub, pb, key: bytes):
    return stub.Ttl(pb.veddb.TtlRequest(key=key))


def publish(stub, pb, topic: bytes, message: bytes) -> int:
    return stub.Publish(pb.veddb.PublishRequest(topic=topic, message=message)).receivers


def subscribe(stub, pb, topic: bytes, timeout: float = STREAM_TIMEOUT_S):
    """Opens a Subscribe stream and waits for its `subscribed = true` confirmation."""
    call = stub.raw.Subscribe(pb.veddb.SubscribeRequest(topic=topic), timeout=timeout)
    first = next(call)
    assert first.subscribed, f"first Subscribe message must confirm the subscription: {first}"
    return call


def wait_for_receivers(stub, pb, topic: bytes, expected: int) -> None:
    """Polls with probe publishes until the topic has `expected` subscribers (the server
    removes a cancelled subscription asynchronously)."""
    eventually(
        lambda: publish(stub, pb, topic, b"probe") == expected,
        f"Publish to {topic!r} reports {expected} receivers",
    )


def assert_has_expiry(response, at_most_ms: int) -> None:
    assert response.exists and not response.persistent, response
    assert 0 < response.remaining_ms <= at_most_ms, response


def assert_persistent(response) -> None:
    assert response.exists and response.persistent, response


# --------------------------------------------------------------------------- unary RPCs


def test_empty_unary_ping(stub, pb):
    response, call = stub.raw.Ping.with_call(pb.veddb.PingRequest(), timeout=30)
    assert response == pb.veddb.PingResponse()
    assert response.ByteSize() == 0
    assert call.code() == SC.OK


def test_set_get_versions(stub, pb, prefix):
    key = prefix + b"k"
    first = set_(stub, pb, key, b"one")
    assert first.stored
    assert first.version > 0
    got = get(stub, pb, key)
    assert (got.value, got.version) == (b"one", first.version)

    second = set_(stub, pb, key, b"two")
    assert second.stored
    assert second.version not in (0, first.version), "every write must give a new version"
    got = get(stub, pb, key)
    assert (got.value, got.version) == (b"two", second.version)

    # Binary values (all byte values, NULs included) survive unchanged; an empty value is
    # a value.
    binary = bytes(range(256)) * 4
    set_(stub, pb, key, binary)
    assert get(stub, pb, key).value == binary
    set_(stub, pb, key, b"")
    got = get(stub, pb, key)
    assert got.value == b"" and got.version > 0


def test_set_if_absent_nx(stub, pb, prefix):
    key = prefix + b"nx"
    created = set_(stub, pb, key, b"first", condition=pb.veddb.SET_CONDITION_IF_ABSENT)
    assert created.stored and created.version > 0

    refused = set_(stub, pb, key, b"second", condition=pb.veddb.SET_CONDITION_IF_ABSENT)
    assert not refused.stored
    got = get(stub, pb, key)
    assert (got.value, got.version) == (b"first", created.version)


def test_set_if_present_xx(stub, pb, prefix):
    key = prefix + b"xx"
    refused = set_(stub, pb, key, b"v", condition=pb.veddb.SET_CONDITION_IF_PRESENT)
    assert not refused.stored
    expect_status(SC.NOT_FOUND, get, stub, pb, key)

    created = set_(stub, pb, key, b"v1")
    replaced = set_(stub, pb, key, b"v2", condition=pb.veddb.SET_CONDITION_IF_PRESENT)
    assert replaced.stored
    assert replaced.version not in (0, created.version)
    assert get(stub, pb, key).value == b"v2"


def test_set_keep_ttl(stub, pb, prefix):
    key = prefix + b"keep"
    set_(stub, pb, key, b"a", ttl_ms=100_000)
    assert_has_expiry(ttl(stub, pb, key), 100_000)

    # keep_ttl without a new TTL keeps the expiry.
    set_(stub, pb, key, b"b", keep_ttl=True)
    assert_has_expiry(ttl(stub, pb, key), 100_000)
    assert get(stub, pb, key).value == b"b"

    # A new TTL wins over keep_ttl.
    set_(stub, pb, key, b"c", keep_ttl=True, ttl_ms=50_000)
    assert_has_expiry(ttl(stub, pb, key), 50_000)

    # A plain SET clears the expiry.
    set_(stub, pb, key, b"d")
    assert_persistent(ttl(stub, pb, key))

    # keep_ttl on a new key: no expiry to keep.
    fresh = prefix + b"fresh"
    set_(stub, pb, fresh, b"x", keep_ttl=True)
    assert_persistent(ttl(stub, pb, fresh))


def test_set_with_ttl_expires(stub, pb, prefix):
    key = prefix + b"short"
    assert set_(stub, pb, key, b"soon gone", ttl_ms=300).stored

    def gone():
        try:
            get(stub, pb, key)
            return False
        except grpc.RpcError as error:
            assert error.code() == SC.NOT_FOUND, error
            return True

    eventually(gone, "a key set with ttl_ms=300 expires")
    response = ttl(stub, pb, key)
    assert not response.exists and not response.persistent
    assert response.remaining_ms == 0


def test_ttl_missing_persistent_and_remaining(stub, pb, prefix):
    missing = ttl(stub, pb, prefix + b"missing")
    assert (missing.exists, missing.persistent, missing.remaining_ms) == (False, False, 0)

    set_(stub, pb, prefix + b"forever", b"v")
    forever = ttl(stub, pb, prefix + b"forever")
    assert (forever.exists, forever.persistent, forever.remaining_ms) == (True, True, 0)

    set_(stub, pb, prefix + b"mortal", b"v", ttl_ms=3_600_000)
    assert_has_expiry(ttl(stub, pb, prefix + b"mortal"), 3_600_000)


def test_expire_and_persist(stub, pb, prefix):
    key = prefix + b"e"
    expire = stub.Expire

    assert not expire(pb.veddb.ExpireRequest(key=key, ttl_ms=60_000)).applied, "missing key"
    assert not expire(pb.veddb.ExpireRequest(key=key, persist=True)).applied, "missing key"

    set_(stub, pb, key, b"v")
    assert not expire(pb.veddb.ExpireRequest(key=key, persist=True)).applied, (
        "persist on a key without an expiry removes nothing"
    )
    assert expire(pb.veddb.ExpireRequest(key=key, ttl_ms=60_000)).applied
    assert_has_expiry(ttl(stub, pb, key), 60_000)

    # persist removes the expiry; ttl_ms is ignored with persist.
    assert expire(pb.veddb.ExpireRequest(key=key, ttl_ms=5, persist=True)).applied
    assert_persistent(ttl(stub, pb, key))
    assert get(stub, pb, key).value == b"v"

    # ttl_ms = 0 expires the key at once.
    assert expire(pb.veddb.ExpireRequest(key=key, ttl_ms=0)).applied
    expect_status(SC.NOT_FOUND, get, stub, pb, key)
    assert not ttl(stub, pb, key).exists


def test_delete(stub, pb, prefix):
    key = prefix + b"d"
    assert not stub.Delete(pb.veddb.DeleteRequest(key=key)).existed
    set_(stub, pb, key, b"v")
    assert stub.Delete(pb.veddb.DeleteRequest(key=key)).existed
    expect_status(SC.NOT_FOUND, get, stub, pb, key)
    assert not stub.Delete(pb.veddb.DeleteRequest(key=key)).existed


def test_exists(stub, pb, prefix):
    key = prefix + b"x"
    exists = stub.Exists
    assert not exists(pb.veddb.ExistsRequest(key=key)).exists, "missing key"
    set_(stub, pb, key, b"v")
    assert exists(pb.veddb.ExistsRequest(key=key)).exists
    # An empty value is a value.
    set_(stub, pb, prefix + b"empty", b"")
    assert exists(pb.veddb.ExistsRequest(key=prefix + b"empty")).exists
    assert stub.Delete(pb.veddb.DeleteRequest(key=key)).existed
    assert not exists(pb.veddb.ExistsRequest(key=key)).exists, "deleted"
    # An expired key does not exist.
    set_(stub, pb, key, b"v", ttl_ms=300)
    eventually(lambda: not exists(pb.veddb.ExistsRequest(key=key)).exists,
               "a key set with ttl_ms=300 stops existing")
    expect_status(SC.INVALID_ARGUMENT, exists, pb.veddb.ExistsRequest(key=b""))


def test_cas(stub, pb, prefix):
    key = prefix + b"cas"

    def cas(expected: int, value: bytes, **options):
        return stub.Cas(
            pb.veddb.CasRequest(key=key, expected_version=expected, value=value, **options)
        )

    # expected_version 0: only if absent.
    v1 = cas(0, b"one").version
    assert v1 > 0
    got = get(stub, pb, key)
    assert (got.value, got.version) == (b"one", v1)

    error = expect_status(SC.FAILED_PRECONDITION, cas, 0, b"again")
    assert error.details() == mismatch_message(v1)

    v2 = cas(v1, b"two").version
    assert v2 not in (0, v1)
    got = get(stub, pb, key)
    assert (got.value, got.version) == (b"two", v2)

    # A stale version fails and names the current one; the value is untouched.
    error = expect_status(SC.FAILED_PRECONDITION, cas, v1, b"stale")
    assert error.details() == mismatch_message(v2)
    assert get(stub, pb, key).value == b"two"

    # Versions are those of any write, not only of CAS.
    v3 = set_(stub, pb, key, b"three").version
    error = expect_status(SC.FAILED_PRECONDITION, cas, v2, b"stale")
    assert error.details() == mismatch_message(v3)
    assert cas(v3, b"four").version not in (0, v3)


def test_cas_missing_key_is_not_found(stub, pb, prefix):
    key = prefix + b"absent"
    error = expect_status(
        SC.NOT_FOUND,
        stub.Cas,
        pb.veddb.CasRequest(key=key, expected_version=7, value=b"v"),
    )
    assert error.details() == not_found_message(key)
    expect_status(SC.NOT_FOUND, get, stub, pb, key)


def test_cas_ttl(stub, pb, prefix):
    key = prefix + b"cas-ttl"
    version = set_(stub, pb, key, b"a", ttl_ms=100_000).version
    # ttl_ms 0 keeps the current expiry.
    version = stub.Cas(
        pb.veddb.CasRequest(key=key, expected_version=version, value=b"b")
    ).version
    assert_has_expiry(ttl(stub, pb, key), 100_000)
    # A TTL replaces it.
    stub.Cas(
        pb.veddb.CasRequest(key=key, expected_version=version, value=b"c", ttl_ms=20_000)
    )
    assert_has_expiry(ttl(stub, pb, key), 20_000)
    assert get(stub, pb, key).value == b"c"


def test_incr(stub, pb, prefix):
    key = prefix + b"counter"
    incr = stub.Incr

    first = incr(pb.veddb.IncrRequest(key=key, delta=5))
    assert first.value == 5 and first.version > 0, "a missing key counts as 0"
    got = get(stub, pb, key)
    assert (got.value, got.version) == (b"5", first.version)

    second = incr(pb.veddb.IncrRequest(key=key, delta=-8))
    assert second.value == -3
    assert second.version not in (0, first.version)
    assert get(stub, pb, key).value == b"-3"

    # delta 0 reads the counter.
    assert incr(pb.veddb.IncrRequest(key=key)).value == -3

    set_(stub, pb, key, b"41")
    assert incr(pb.veddb.IncrRequest(key=key, delta=1)).value == 42


@pytest.mark.parametrize("value", [b"abc", b"1.5", b"", b"12abc"], ids=repr)
def test_incr_non_integer_is_invalid_argument(stub, pb, prefix, value):
    key = prefix + b"text"
    set_(stub, pb, key, value)
    error = expect_status(SC.INVALID_ARGUMENT, stub.Incr, pb.veddb.IncrRequest(key=key, delta=1))
    assert error.details(), "the message must say what is wrong"
    assert get(stub, pb, key).value == value, "a failed INCR leaves the value alone"


def test_incr_overflow_is_invalid_argument(stub, pb, prefix):
    key = prefix + b"max"
    set_(stub, pb, key, str(2**63 - 1).encode())
    expect_status(SC.INVALID_ARGUMENT, stub.Incr, pb.veddb.IncrRequest(key=key, delta=1))
    assert get(stub, pb, key).value == str(2**63 - 1).encode()
    set_(stub, pb, key, str(-(2**63)).encode())
    expect_status(SC.INVALID_ARGUMENT, stub.Incr, pb.veddb.IncrRequest(key=key, delta=-1))


def test_mset_mget_many_keys_on_both_shards(stub, pb, prefix):
    keys = [prefix + b"m%03d" % i for i in range(200)]
    before = stub.Info(pb.veddb.InfoRequest())

    response = stub.MSet(
        pb.veddb.MSetRequest(
            pairs=[pb.veddb.KeyValue(key=k, value=b"value of " + k) for k in keys]
        )
    )
    assert response == pb.veddb.MSetResponse()

    # Ask for every key, with missing keys interleaved; answers come in request order.
    asked = []
    for i, key in enumerate(keys):
        asked.append(key)
        if i % 10 == 0:
            asked.append(prefix + b"missing%03d" % i)
    values = stub.MGet(pb.veddb.MGetRequest(keys=asked)).values
    assert len(values) == len(asked)
    for key, value in zip(asked, values):
        if b"missing" in key:
            assert not value.found and value.value == b"" and value.version == 0, key
        else:
            assert value.found, key
            assert value.value == b"value of " + key
            assert value.version > 0

    # MGet versions are the keys' versions.
    for key, value in list(zip(asked, values))[:20]:
        if value.found:
            assert get(stub, pb, key).version == value.version

    # 200 random keys land on both shards: each shard served some of the MGet hits.
    after = stub.Info(pb.veddb.InfoRequest())
    hits = {s.shard: s.hits for s in after.shards}
    for shard in before.shards:
        assert hits[shard.shard] > shard.hits, f"shard {shard.shard} served none of the keys"
    assert sum(hits.values()) - sum(s.hits for s in before.shards) >= len(keys)

    assert stub.MGet(pb.veddb.MGetRequest()).values == []


def test_mset_overwrites_and_versions(stub, pb, prefix):
    key = prefix + b"k"
    old = set_(stub, pb, key, b"old").version
    stub.MSet(pb.veddb.MSetRequest(pairs=[pb.veddb.KeyValue(key=key, value=b"new")]))
    got = get(stub, pb, key)
    assert got.value == b"new"
    assert got.version not in (0, old)


def scan_all(stub, pb, prefix: bytes, count: int):
    """Follows SCAN cursors to completion; returns (keys, pages)."""
    keys, pages, cursor = [], 0, b""
    while True:
        page = stub.Scan(pb.veddb.ScanRequest(cursor=cursor, prefix=prefix, count=count))
        pages += 1
        assert pages < 10_000, "SCAN does not terminate"
        assert len(page.keys) <= (count or 100), f"page larger than count={count}"
        for key in page.keys:
            assert key.startswith(prefix), key
        if page.keys and page.cursor:
            # The cursor is a position at or after the last key returned.
            assert page.cursor >= page.keys[-1]
        keys.extend(page.keys)
        if not page.cursor:
            return keys, pages
        assert page.cursor != cursor, "SCAN cursor did not advance"
        cursor = page.cursor


@pytest.mark.parametrize("count", [37, 0, 1000])
def test_scan_follows_cursor_to_completion(stub, pb, prefix, count):
    scan_prefix = prefix + b"scan/"
    wanted = [scan_prefix + b"%04d" % i for i in range(250)]
    # Neighbours that sort next to the wanted keys but do not start with the prefix.
    decoys = [prefix + b"scan", prefix + b"scan.", prefix + b"scan0", prefix + b"scam/9"]
    stub.MSet(
        pb.veddb.MSetRequest(
            pairs=[pb.veddb.KeyValue(key=k, value=b"v") for k in wanted + decoys]
        )
    )

    keys, pages = scan_all(stub, pb, scan_prefix, count)
    assert keys == sorted(set(keys)), "keys must come in byte order, without duplicates"
    assert keys == wanted
    if count == 37:
        assert pages >= 7

    # A deleted key disappears from the scan.
    stub.Delete(pb.veddb.DeleteRequest(key=wanted[100]))
    keys, _ = scan_all(stub, pb, scan_prefix, count)
    assert keys == wanted[:100] + wanted[101:]


def test_scan_empty_prefix_match(stub, pb, prefix):
    keys, _ = scan_all(stub, pb, prefix + b"nothing-here/", 10)
    assert keys == []


def test_publish_receivers(stub, pb, prefix):
    topic = prefix + b"topic"
    assert publish(stub, pb, topic, b"nobody listens") == 0

    first = subscribe(stub, pb, topic)
    second = None
    try:
        assert publish(stub, pb, topic, b"m1") == 1
        second = subscribe(stub, pb, topic)
        assert publish(stub, pb, topic, b"m2") == 2
        # Another topic is unaffected.
        assert publish(stub, pb, prefix + b"other", b"x") == 0
    finally:
        first.cancel()
        if second is not None:
            second.cancel()
    wait_for_receivers(stub, pb, topic, 0)


def test_info_has_two_shards(stub, pb, prefix):
    set_(stub, pb, prefix + b"k", b"v")
    info = stub.Info(pb.veddb.InfoRequest())
    assert sorted(s.shard for s in info.shards) == [0, 1]
    for shard in info.shards:
        assert shard.memory_bytes_limit > 0, shard
        assert shard.memory_bytes_used <= shard.memory_bytes_limit, shard
    assert sum(s.keys for s in info.shards) >= 1
    assert sum(s.ops for s in info.shards) >= 1


def test_snapshot_without_data_dir_is_failed_precondition(stub, pb, prefix):
    """The test server runs without --data-dir: persistence is off, and SNAPSHOT says how
    to turn it on. Nothing changes; the server keeps serving."""
    key = prefix + b"k"
    set_(stub, pb, key, b"v")
    error = expect_status(SC.FAILED_PRECONDITION, stub.Snapshot, pb.veddb.SnapshotRequest())
    assert "--data-dir" in error.details(), error.details()
    assert get(stub, pb, key).value == b"v"
    # SNAPSHOT has no Batch op: the oneof does not offer it.
    assert "snapshot" not in pb.veddb.BatchRequest.DESCRIPTOR.fields_by_name


def test_concurrent_calls_on_one_channel(stub, pb, prefix):
    """Many concurrent HTTP/2 streams on one connection."""

    def worker(n: int) -> None:
        for i in range(25):
            key = prefix + b"w%d-%d" % (n, i)
            value = os.urandom(64)
            version = set_(stub, pb, key, value).version
            got = get(stub, pb, key)
            assert (got.value, got.version) == (value, version)

    with ThreadPoolExecutor(max_workers=8) as pool:
        for future in [pool.submit(worker, n) for n in range(8)]:
            future.result()


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "key",
    [
        "clé ☺ 😈",
        # The message of the interop special_status_message case, as a key.
        "\t\ntest with whitespace\r\nand Unicode BMP ☺ and non-BMP 😈\t\n",
        "100% sure: %41 %zz %",
    ],
    ids=["unicode", "whitespace", "percent"],
)
def test_special_status_message(stub, pb, prefix, key):
    raw = prefix + key.encode("utf-8")
    error = expect_status(SC.NOT_FOUND, get, stub, pb, raw)
    assert key in error.details()
    assert error.details() == not_found_message(raw)


def test_status_message_of_non_utf8_key(stub, pb, prefix):
    raw = prefix + b"\xff\xfe\x80"
    error = expect_status(SC.NOT_FOUND, get, stub, pb, raw)
    assert error.details().startswith("key not found: " + prefix.decode())


def test_status_code_and_message(stub, pb, prefix):
    """The interop status_code_and_message case: the same status and message in a unary
    answer and in a Batch answer."""
    key = prefix + "missing ☺".encode()
    error = expect_status(SC.NOT_FOUND, get, stub, pb, key)
    assert error.details() == not_found_message(key)

    responses = list(
        stub.raw.Batch(iter([pb.veddb.BatchRequest(get=pb.veddb.GetRequest(key=key))]),
                       timeout=STREAM_TIMEOUT_S)
    )
    assert len(responses) == 1
    assert responses[0].status.code == CODE[SC.NOT_FOUND]
    assert responses[0].status.message == not_found_message(key)


def test_empty_key_is_invalid_argument(stub, pb):
    expect_status(SC.INVALID_ARGUMENT, get, stub, pb, b"")
    expect_status(SC.INVALID_ARGUMENT, set_, stub, pb, b"", b"v")


def test_unimplemented_method(channel):
    no_such = channel.unary_unary("/veddb.v1.VedDb/NoSuchMethod")
    error = expect_status(SC.UNIMPLEMENTED, no_such, b"", timeout=30)
    assert error.details() is not None


@pytest.mark.parametrize(
    "path", ["/veddb.v1.NoSuchService/Ping", "/grpc.health.v1.Health/NoSuchMethod", "/Ping"]
)
def test_unimplemented_service_or_path(channel, path):
    expect_status(SC.UNIMPLEMENTED, channel.unary_unary(path), b"", timeout=30)


def test_compressed_request_is_unimplemented(stub, pb, prefix):
    # Large and repetitive, so gzip really compresses it (grpc sends small or
    # incompressible messages uncompressed).
    request = pb.veddb.SetRequest(key=prefix + b"gz", value=b"a" * 100_000)
    expect_status(SC.UNIMPLEMENTED, stub.Set, request, compression=grpc.Compression.Gzip)
    # The connection is still good.
    stub.Ping(pb.veddb.PingRequest())


# --------------------------------------------------------------------------- sizes


def test_large_unary(stub, pb, prefix):
    """The interop large_unary case: a 271828-byte value out, the same back."""
    key = prefix + b"large"
    value = bytes(271_828)
    try:
        version = set_(stub, pb, key, value).version
        got = get(stub, pb, key)
        assert len(got.value) == 271_828
        assert (got.value, got.version) == (value, version)
    finally:
        stub.Delete(pb.veddb.DeleteRequest(key=key))


def test_value_just_under_message_limit(stub, pb, prefix):
    key = prefix + b"big"
    value = os.urandom(MESSAGE_LIMIT - 100)
    try:
        assert set_(stub, pb, key, value).stored
        got = get(stub, pb, key)
        assert got.value == value
        mget = stub.MGet(pb.veddb.MGetRequest(keys=[key])).values
        assert mget[0].found and mget[0].value == value
    finally:
        stub.Delete(pb.veddb.DeleteRequest(key=key))


def test_request_over_message_limit_is_resource_exhausted(stub, pb, prefix):
    key = prefix + b"too-big"
    request = pb.veddb.SetRequest(key=key, value=os.urandom(MESSAGE_LIMIT))
    assert request.ByteSize() > MESSAGE_LIMIT
    expect_status(SC.RESOURCE_EXHAUSTED, stub.Set, request)
    expect_status(SC.NOT_FOUND, get, stub, pb, key)
    stub.Ping(pb.veddb.PingRequest())


def test_response_over_message_limit_is_resource_exhausted(stub, pb, prefix):
    """Two values that fit one by one, but not together in one MGet answer: the server
    refuses to send it, or the client refuses to take it; either way RESOURCE_EXHAUSTED,
    and nothing breaks."""
    keys = [prefix + b"half-1", prefix + b"half-2"]
    value = os.urandom(MESSAGE_LIMIT * 5 // 8)
    try:
        for key in keys:
            set_(stub, pb, key, value)
        expect_status(SC.RESOURCE_EXHAUSTED, stub.MGet, pb.veddb.MGetRequest(keys=keys))
        for key in keys:
            assert get(stub, pb, key).value == value
    finally:
        for key in keys:
            stub.Delete(pb.veddb.DeleteRequest(key=key))


def test_key_size_limit(stub, pb):
    largest = b"k" * KEY_BYTES_MAX
    try:
        assert set_(stub, pb, largest, b"v").stored
        assert get(stub, pb, largest).value == b"v"
    finally:
        stub.Delete(pb.veddb.DeleteRequest(key=largest))
    too_large = b"k" * (KEY_BYTES_MAX + 1)
    expect_status(SC.RESOURCE_EXHAUSTED, set_, stub, pb, too_large, b"v")


# --------------------------------------------------------------------------- streaming


def test_server_streaming_subscribe_in_order(stub, pb, prefix):
    topic = prefix + b"stream"
    call = subscribe(stub, pb, topic)
    try:
        sent = [b"message %d " % i + os.urandom(i * 50) for i in range(20)]
        for message in sent:
            assert publish(stub, pb, topic, message) == 1
        for expected in sent:
            response = next(call)
            assert not response.subscribed
            assert response.message == expected
            assert response.dropped == 0
    finally:
        call.cancel()
    assert call.code() == SC.CANCELLED
    wait_for_receivers(stub, pb, topic, 0)


def test_subscribe_cancel_after_first_response(stub, pb, prefix):
    """The interop cancel_after_first_response case on Subscribe."""
    topic = prefix + b"cancel"
    call = subscribe(stub, pb, topic)
    assert publish(stub, pb, topic, b"hello") == 1
    assert next(call).message == b"hello"
    call.cancel()
    assert call.code() == SC.CANCELLED
    with pytest.raises(grpc.RpcError) as info:
        next(call)
    assert info.value.code() == SC.CANCELLED
    # The server notices the RST_STREAM and removes the subscription.
    wait_for_receivers(stub, pb, topic, 0)
    stub.Ping(pb.veddb.PingRequest())


def test_subscribe_deadline_exceeded(stub, pb, prefix):
    """A deadline that expires on an idle stream ends it with DEADLINE_EXCEEDED, and the
    server drops the subscription."""
    topic = prefix + b"idle"
    call = stub.raw.Subscribe(pb.veddb.SubscribeRequest(topic=topic), timeout=0.5)
    with pytest.raises(grpc.RpcError) as info:
        for response in call:
            # At most the confirmation; nothing is published.
            assert response.subscribed
    assert info.value.code() == SC.DEADLINE_EXCEEDED
    wait_for_receivers(stub, pb, topic, 0)


def test_subscribe_many_topics_at_once(stub, pb, prefix):
    topics = [prefix + b"t%d" % i for i in range(10)]
    calls = [subscribe(stub, pb, topic) for topic in topics]
    try:
        for topic in topics:
            assert publish(stub, pb, topic, b"to " + topic) == 1
        for topic, call in zip(topics, calls):
            assert next(call).message == b"to " + topic
    finally:
        for call in calls:
            call.cancel()
    for topic in topics:
        wait_for_receivers(stub, pb, topic, 0)


def batch_call(stub, requests, timeout: float = STREAM_TIMEOUT_S):
    return stub.raw.Batch(requests, timeout=timeout)


def test_batch_ping_pong(stub, pb, prefix):
    """The interop ping_pong case: one BatchRequest, one BatchResponse, repeatedly, with
    errors answered in BatchResponse.status without ending the stream."""
    v = pb.veddb
    k1, k2, k3, k4 = (prefix + b"b%d" % i for i in range(1, 5))
    missing = prefix + "missing ☺".encode()
    ok = CODE[SC.OK]

    with RequestQueue() as requests:
        call = batch_call(stub, requests)

        def roundtrip(expected_op: str | None = None, code: int = ok, **op):
            requests.put(v.BatchRequest(**op))
            response = next(call)
            assert response.status.code == code, response
            if code == ok:
                assert response.WhichOneof("op") == expected_op, response
            return response

        set1 = roundtrip("set", set=v.SetRequest(key=k1, value=b"1")).set
        assert set1.stored and set1.version > 0

        got = roundtrip("get", get=v.GetRequest(key=k1)).get
        assert (got.value, got.version) == (b"1", set1.version)

        incr = roundtrip("incr", incr=v.IncrRequest(key=k1, delta=41)).incr
        assert incr.value == 42 and incr.version not in (0, set1.version)
        assert roundtrip("get", get=v.GetRequest(key=k1)).get.value == b"42"

        error = roundtrip(code=CODE[SC.NOT_FOUND], get=v.GetRequest(key=missing))
        assert error.status.message == not_found_message(missing)

        error = roundtrip(
            code=CODE[SC.FAILED_PRECONDITION],
            cas=v.CasRequest(key=k1, expected_version=set1.version, value=b"x"),
        )
        assert error.status.message == mismatch_message(incr.version)

        roundtrip("set", set=v.SetRequest(key=k2, value=b"abc"))
        error = roundtrip(code=CODE[SC.INVALID_ARGUMENT], incr=v.IncrRequest(key=k2, delta=1))
        assert error.status.message

        roundtrip("ping", ping=v.PingRequest())

        roundtrip(
            "mset",
            mset=v.MSetRequest(
                pairs=[v.KeyValue(key=k3, value=b"3"), v.KeyValue(key=k4, value=b"4")]
            ),
        )
        values = roundtrip("mget", mget=v.MGetRequest(keys=[k3, missing, k4])).mget.values
        assert [(x.found, x.value) for x in values] == [(True, b"3"), (False, b""), (True, b"4")]

        assert roundtrip("exists", exists=v.ExistsRequest(key=k3)).exists.exists
        assert roundtrip("delete", delete=v.DeleteRequest(key=k3)).delete.existed
        assert not roundtrip("exists", exists=v.ExistsRequest(key=k3)).exists.exists
        assert roundtrip("ttl", ttl=v.TtlRequest(key=k4)).ttl.persistent
        assert roundtrip("expire", expire=v.ExpireRequest(key=k4, ttl_ms=60_000)).expire.applied
        remaining = roundtrip("ttl", ttl=v.TtlRequest(key=k4)).ttl
        assert remaining.exists and 0 < remaining.remaining_ms <= 60_000

        scanned, cursor = [], b""
        for _ in range(100):
            page = roundtrip("scan", scan=v.ScanRequest(prefix=prefix + b"b", cursor=cursor)).scan
            scanned.extend(page.keys)
            cursor = page.cursor
            if not cursor:
                break
        assert scanned == [k1, k2, k4]

        published = roundtrip("publish", publish=v.PublishRequest(topic=prefix, message=b"m"))
        assert published.publish.receivers == 0

        current = roundtrip("get", get=v.GetRequest(key=k1)).get.version
        cas = roundtrip("cas", cas=v.CasRequest(key=k1, expected_version=current, value=b"7")).cas
        assert cas.version not in (0, current)

        not_stored = roundtrip(
            "set", set=v.SetRequest(key=k1, value=b"nx", condition=v.SET_CONDITION_IF_ABSENT)
        ).set
        assert not not_stored.stored

        # Half-close: the server ends the stream with OK.
        requests.close()
        assert list(call) == []
        assert call.code() == SC.OK


def test_batch_pipelined_answers_in_order(stub, pb, prefix):
    """Many requests sent at once, answered in order across both shards."""
    v = pb.veddb
    requests = []
    for i in range(300):
        key = prefix + b"p%03d" % i
        requests.append(v.BatchRequest(set=v.SetRequest(key=key, value=b"%d" % i)))
        requests.append(v.BatchRequest(get=v.GetRequest(key=key)))
        requests.append(v.BatchRequest(incr=v.IncrRequest(key=key, delta=i)))
    call = batch_call(stub, iter(requests))
    responses = list(call)
    assert call.code() == SC.OK
    assert len(responses) == len(requests)
    for i in range(300):
        set_r, get_r, incr_r = responses[3 * i: 3 * i + 3]
        assert set_r.status.code == 0 and set_r.set.stored
        assert get_r.status.code == 0 and get_r.get.value == b"%d" % i
        assert get_r.get.version == set_r.set.version
        assert incr_r.status.code == 0 and incr_r.incr.value == 2 * i


def test_batch_empty_stream(stub):
    call = batch_call(stub, iter([]))
    assert list(call) == []
    assert call.code() == SC.OK


def test_batch_cancel_after_first_response(stub, pb):
    """The interop cancel_after_first_response case on Batch."""
    with RequestQueue() as requests:
        call = batch_call(stub, requests)
        requests.put(pb.veddb.BatchRequest(ping=pb.veddb.PingRequest()))
        first = next(call)
        assert first.status.code == 0 and first.WhichOneof("op") == "ping"
        call.cancel()
        assert call.code() == SC.CANCELLED
        with pytest.raises(grpc.RpcError) as info:
            next(call)
        assert info.value.code() == SC.CANCELLED
    stub.Ping(pb.veddb.PingRequest())


def test_timeout_on_sleeping_server(stub, pb):
    """The interop timeout_on_sleeping_server analogue: a Batch whose request stream
    stays open past a short deadline ends with DEADLINE_EXCEEDED."""
    with RequestQueue() as requests:
        call = batch_call(stub, requests, timeout=0.5)
        requests.put(pb.veddb.BatchRequest(ping=pb.veddb.PingRequest()))
        with pytest.raises(grpc.RpcError) as info:
            for response in call:
                assert response.WhichOneof("op") == "ping"
        assert info.value.code() == SC.DEADLINE_EXCEEDED
    stub.Ping(pb.veddb.PingRequest())


# --------------------------------------------------------------------------- health


@pytest.mark.parametrize("service", ["", "veddb.v1.VedDb"], ids=["overall", "veddb"])
def test_health_check_serving(health, pb, service):
    response = health.Check(pb.health.HealthCheckRequest(service=service))
    assert response.status == pb.health.HealthCheckResponse.SERVING


def test_health_check_unknown_service(health, pb):
    expect_status(
        SC.NOT_FOUND, health.Check, pb.health.HealthCheckRequest(service="no.such.Service")
    )


@pytest.mark.parametrize("service", ["", "veddb.v1.VedDb"], ids=["overall", "veddb"])
def test_health_watch(health, pb, service):
    call = health.raw.Watch(pb.health.HealthCheckRequest(service=service), timeout=STREAM_TIMEOUT_S)
    try:
        assert next(call).status == pb.health.HealthCheckResponse.SERVING
    finally:
        call.cancel()
    assert call.code() == SC.CANCELLED


def test_health_watch_unknown_service(health, pb):
    """grpc/doc/health-checking.md: Watch of an unknown service answers SERVICE_UNKNOWN
    and keeps the stream open (it is not an error)."""
    call = health.raw.Watch(
        pb.health.HealthCheckRequest(service="no.such.Service"), timeout=STREAM_TIMEOUT_S
    )
    try:
        assert next(call).status == pb.health.HealthCheckResponse.SERVICE_UNKNOWN
    finally:
        call.cancel()
