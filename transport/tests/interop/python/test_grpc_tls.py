"""gRPC over TLS (--tls-cert/--tls-key, ALPN h2) with a certificate made for the test."""

import subprocess

import grpc
import pytest

from conftest import VedDbServer, server_binary


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "2", "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture(scope="module")
def tls_server(pb, certificate, tmp_path_factory):
    cert, key = certificate
    instance = VedDbServer(
        server_binary(),
        tmp_path_factory.mktemp("veddb_tls") / "veddb-server.log",
        pb,
        extra_args=("--tls-cert", str(cert), "--tls-key", str(key)),
        root_certificates=cert.read_bytes(),
    )
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()


def test_calls_over_tls(pb, tls_server):
    with tls_server.channel() as channel:
        stub = pb.veddb_grpc.VedDbStub(channel)
        stored = stub.Set(pb.veddb.SetRequest(key=b"tls:k", value=b"secret"), timeout=30)
        assert stored.stored
        got = stub.Get(pb.veddb.GetRequest(key=b"tls:k"), timeout=30)
        assert got.value == b"secret" and got.version == stored.version
        stream = stub.Subscribe(pb.veddb.SubscribeRequest(topic=b"tls:t"), timeout=30)
        assert next(stream).subscribed
        assert stub.Publish(pb.veddb.PublishRequest(topic=b"tls:t", message=b"m"), timeout=30).receivers == 1
        assert next(stream).message == b"m"
        stream.cancel()


def test_plaintext_clients_are_refused_and_the_server_keeps_serving(pb, tls_server):
    with grpc.insecure_channel(tls_server.address) as channel:
        stub = pb.veddb_grpc.VedDbStub(channel)
        with pytest.raises(grpc.RpcError) as failure:
            stub.Ping(pb.veddb.PingRequest(), timeout=5)
        assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
    tls_server.assert_alive()


def test_a_client_that_does_not_trust_the_certificate_fails(pb, tls_server, tmp_path):
    other = tmp_path / "other.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "2", "-subj", "/CN=localhost", "-keyout", str(tmp_path / "k.pem"), "-out", str(other)],
        check=True, capture_output=True,
    )
    credentials = grpc.ssl_channel_credentials(root_certificates=other.read_bytes())
    with grpc.secure_channel(tls_server.address, credentials,
                             options=[("grpc.ssl_target_name_override", "localhost")]) as channel:
        with pytest.raises(grpc.RpcError) as failure:
            pb.veddb_grpc.VedDbStub(channel).Ping(pb.veddb.PingRequest(), timeout=5)
        assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
    tls_server.assert_alive()


def test_bad_certificate_files_stop_the_start_with_a_clear_message(tmp_path):
    missing = tmp_path / "missing.pem"
    result = subprocess.run(
        [str(server_binary()), "--cores", "1", "--port", "0", "--tls-cert", str(missing), "--tls-key", str(missing)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode != 0
    assert "missing.pem" in result.stderr and "TLS" in result.stderr
    result = subprocess.run(
        [str(server_binary()), "--cores", "1", "--port", "0", "--tls-cert", str(missing)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode != 0
    assert "--tls-cert and --tls-key go together" in result.stderr
