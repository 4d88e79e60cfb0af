"""Fixtures of the VedDB gRPC interop suite.

* ``pb``: Python stubs generated from ``wire/proto/*.proto`` with ``grpc_tools.protoc``
  into a temporary directory, once per test session (no generated code is committed).
* ``server``: one ``veddb-server`` process per test module, started on a free port with
  ``--cores 2 --spin-us 10 --port PORT --grpc-message-bytes-max 4194304``; ready once a gRPC
  Ping succeeds; stopped with SIGTERM (to that process id only) when the module is done, and
  expected to exit 0. The message limit is given explicitly so that these suites check it at
  gRPC's usual 4 MiB (the server's default follows ``--value-bytes-max``: 16 MiB + 128 KiB,
  covered by ``test_grpc_values.py``).
* ``channel`` / ``stub`` / ``health``: a plaintext channel to that server and stubs on it
  whose calls carry a generous default deadline (pass ``timeout=`` to override).

Environment:
  VEDDB_SERVER   path of the server binary (default: <repo>/target/debug/veddb-server)
"""

from __future__ import annotations

import importlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import grpc
import pytest

from interop_helpers import MESSAGE_LIMIT

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[3]
PROTO_DIR = REPO_ROOT / "wire" / "proto"
DEFAULT_SERVER = REPO_ROOT / "target" / "debug" / "veddb-server"

# Generous limits: these tests check behaviour, never speed.
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0
CALL_TIMEOUT_S = 30.0
START_ATTEMPTS = 3

CHANNEL_OPTIONS = [
    # Never send loopback traffic through an HTTP proxy named in the environment.
    ("grpc.enable_http_proxy", 0),
    # Reconnect quickly if a connection is lost (e.g. after a GOAWAY).
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


# --------------------------------------------------------------------------- stubs


@pytest.fixture(scope="session")
def pb(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """Generates and imports the stubs: ``pb.veddb``, ``pb.veddb_grpc``, ``pb.health``,
    ``pb.health_grpc``."""
    return generate_stubs(tmp_path_factory.mktemp("veddb_stubs"))


def generate_stubs(out_dir: Path) -> SimpleNamespace:
    protos = sorted(PROTO_DIR.glob("*.proto"))
    names = {p.name for p in protos}
    missing = {"veddb.proto", "health.proto"} - names
    if missing:
        pytest.fail(f"missing proto files in {PROTO_DIR}: {sorted(missing)}")
    command = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"--proto_path={PROTO_DIR}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *[str(p) for p in protos],
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        pytest.fail(
            "grpc_tools.protoc failed "
            f"(exit {result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    # The generated *_pb2_grpc modules import their *_pb2 modules by top-level name.
    sys.path.insert(0, str(out_dir))
    importlib.invalidate_caches()
    return SimpleNamespace(
        veddb=importlib.import_module("veddb_pb2"),
        veddb_grpc=importlib.import_module("veddb_pb2_grpc"),
        health=importlib.import_module("health_pb2"),
        health_grpc=importlib.import_module("health_pb2_grpc"),
    )


# --------------------------------------------------------------------------- server


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def new_channel(address: str) -> grpc.Channel:
    return grpc.insecure_channel(address, options=CHANNEL_OPTIONS)


class DefaultTimeout:
    """Wraps a generated stub so every call gets ``timeout=CALL_TIMEOUT_S`` unless the
    caller passes its own. ``.raw`` is the stub itself (for ``.future``/``.with_call``)."""

    def __init__(self, stub, timeout: float = CALL_TIMEOUT_S):
        self.raw = stub
        self._timeout = timeout

    def __getattr__(self, name: str):
        method = getattr(self.raw, name)

        def call(*args, **kwargs):
            kwargs.setdefault("timeout", self._timeout)
            return method(*args, **kwargs)

        call.__name__ = name
        return call


class VedDbServer:
    """A running ``veddb-server`` process."""

    def __init__(
        self,
        binary: Path,
        log_path: Path,
        pb: SimpleNamespace,
        extra_args: tuple[str, ...] = (),
        root_certificates: bytes | None = None,
    ):
        self.binary = binary
        self.log_path = log_path
        self.pb = pb
        self.extra_args = extra_args
        # Set for a TLS server: channels then verify its certificate (issued to "localhost").
        self.root_certificates = root_certificates
        self.port = 0
        self.process: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"

    def channel(self) -> grpc.Channel:
        """A new channel (a new HTTP/2 connection) to the server; the caller closes it."""
        if self.root_certificates is not None:
            credentials = grpc.ssl_channel_credentials(root_certificates=self.root_certificates)
            return grpc.secure_channel(
                self.address, credentials, options=[("grpc.ssl_target_name_override", "localhost")]
            )
        return new_channel(self.address)

    def ping(self, timeout: float = 2.0) -> None:
        """One Ping on a fresh connection; raises grpc.RpcError when it fails."""
        with self.channel() as channel:
            stub = self.pb.veddb_grpc.VedDbStub(channel)
            stub.Ping(self.pb.veddb.PingRequest(), timeout=timeout)

    def assert_alive(self) -> None:
        assert self.process is not None
        code = self.process.poll()
        assert code is None, f"veddb-server exited with {code}; log:\n{self.log_tail()}"
        self.ping(timeout=CALL_TIMEOUT_S)

    def start(self) -> None:
        failures = []
        for _ in range(START_ATTEMPTS):
            self.port = free_port()
            command = [
                str(self.binary),
                "--cores", "2",
                "--spin-us", "10",
                "--port", str(self.port),
                *self.extra_args,
            ]
            with open(self.log_path, "ab") as log:
                log.write(f"\n$ {' '.join(command)}\n".encode())
                log.flush()
                self.process = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=REPO_ROOT,
                )
            outcome = self._wait_ready()
            if outcome is None:
                return
            failures.append(outcome)
            if self.process.poll() is None:
                # Ran but never answered: retrying on another port will not help.
                break
        self.stop(check=False)
        pytest.fail(
            "veddb-server did not become ready: "
            + "; ".join(failures)
            + f"\nlog ({self.log_path}):\n{self.log_tail()}"
        )

    def _wait_ready(self) -> str | None:
        """None when a Ping succeeded; else why not."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        last_error = "no attempt"
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                return f"exited with {code} on port {self.port}"
            try:
                self.ping(timeout=1.0)
                return None
            except grpc.RpcError as error:
                last_error = f"{error.code()}: {error.details()}"
            time.sleep(0.1)
        return f"no successful Ping within {READY_TIMEOUT_S:.0f} s (last: {last_error})"

    def stop(self, check: bool = True) -> None:
        """SIGTERM to this process id only, then wait for it to exit."""
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT_S)
            if check:
                pytest.fail(
                    f"veddb-server did not stop within {STOP_TIMEOUT_S:.0f} s of SIGTERM; "
                    f"log:\n{self.log_tail()}"
                )
            return
        if check and code != 0:
            pytest.fail(f"veddb-server exited with {code} after SIGTERM; log:\n{self.log_tail()}")


def server_binary() -> Path:
    binary = Path(os.environ.get("VEDDB_SERVER", DEFAULT_SERVER))
    if not binary.is_file() or not os.access(binary, os.X_OK):
        pytest.fail(
            f"veddb-server binary not found at {binary}: build it (cargo build) "
            "or point VEDDB_SERVER at it"
        )
    return binary


# The message limit the shared ``server`` fixture runs with.
SERVER_MESSAGE_LIMIT_ARGS = ("--grpc-message-bytes-max", str(MESSAGE_LIMIT))


@pytest.fixture(scope="module")
def server(pb, tmp_path_factory: pytest.TempPathFactory):
    """A fresh server for each test module, with a 4 MiB message limit."""
    log_path = tmp_path_factory.mktemp("veddb_server") / "veddb-server.log"
    instance = VedDbServer(server_binary(), log_path, pb, SERVER_MESSAGE_LIMIT_ARGS)
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()


@pytest.fixture(scope="module")
def channel(server):
    with server.channel() as ch:
        yield ch


@pytest.fixture(scope="module")
def stub(pb, channel) -> DefaultTimeout:
    return DefaultTimeout(pb.veddb_grpc.VedDbStub(channel))


@pytest.fixture(scope="module")
def health(pb, channel) -> DefaultTimeout:
    return DefaultTimeout(pb.health_grpc.HealthStub(channel))


@pytest.fixture
def prefix(request) -> bytes:
    """A key/topic prefix unique to this test, so tests sharing a server never collide."""
    name = request.node.name.encode("ascii", "replace")[:40]
    return b"it:" + name + b":" + uuid.uuid4().hex[:8].encode() + b":"
