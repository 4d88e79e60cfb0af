"""Small helpers shared by the test modules (no fixtures here; see conftest.py)."""

from __future__ import annotations

import queue
import time
from typing import Callable

import grpc
import pytest

MiB = 1024 * 1024
# The server's message size limit in both directions, as the shared ``server`` fixture sets it
# (--grpc-message-bytes-max; gRPC's usual 4 MiB).
MESSAGE_LIMIT = 4 * MiB
# Server defaults (wire/src/limits.rs).
KEY_BYTES_MAX = 64 * 1024

# Numbers of the gRPC status codes (as carried in grpc-status and BatchStatus.code).
CODE = {code: code.value[0] for code in grpc.StatusCode}

# Generous: the suite must pass on a slow, loaded CI machine.
EVENTUALLY_S = 30.0
STREAM_TIMEOUT_S = 60.0


def expect_status(code: grpc.StatusCode, fn: Callable, *args, **kwargs) -> grpc.RpcError:
    """Calls ``fn`` and returns the RpcError it raised, checking its status code."""
    with pytest.raises(grpc.RpcError) as info:
        fn(*args, **kwargs)
    error = info.value
    assert error.code() == code, f"expected {code.name}, got {error.code()}: {error.details()!r}"
    return error


def eventually(predicate: Callable[[], bool], what: str, timeout: float = EVENTUALLY_S):
    """Polls ``predicate`` until it is true; fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        if predicate():
            return
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout:.0f} s: {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


def not_found_message(key: bytes) -> str:
    """The grpc-message of NOT_FOUND for a missing key."""
    return "key not found: " + key.decode("utf-8", "replace")


def mismatch_message(current_version: int) -> str:
    """The grpc-message of FAILED_PRECONDITION for a CAS version mismatch."""
    return f"version mismatch: the current version is {current_version}"


class RequestQueue:
    """A request iterator for a streaming call that the test feeds one message at a time
    (ping-pong). ``close()`` ends the request stream (half-close); always call it (or use
    the context manager) so the gRPC thread consuming the iterator is released."""

    _END = object()

    def __init__(self):
        self._queue: queue.Queue = queue.Queue()

    def __iter__(self):
        return self

    def __next__(self):
        item = self._queue.get()
        if item is self._END:
            # Stay exhausted if asked again.
            self._queue.put(self._END)
            raise StopIteration
        return item

    def put(self, message) -> None:
        self._queue.put(message)

    def close(self) -> None:
        self._queue.put(self._END)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
