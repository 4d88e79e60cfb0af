//! The gRPC frontend: `veddb.v1.VedDb` and `grpc.health.v1.Health` over HTTP/2, hand-rolled on
//! `h2`, on every core.
//!
//! Every core listens on the same address with `SO_REUSEPORT`, so the kernel spreads
//! connections over cores; a connection lives on the core that accepted it, and a request for a
//! key another core owns is forwarded over the engine's inbox mesh. Protocol rules followed are
//! grpc/grpc `doc/PROTOCOL-HTTP2.md`; what each status means is in `docs/wire-format.md`.

mod server;

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::sync_channel;
use std::sync::Arc;
use std::time::Duration;

use veddb_engine::Engine;

/// Settings of the gRPC frontend.
#[derive(Clone, Debug)]
pub struct GrpcConfig {
    /// Address to listen on (default 127.0.0.1).
    pub bind: IpAddr,
    /// Port (`--port`); 0 picks a free one.
    pub port: u16,
    /// Largest gRPC message accepted or sent. A request over it is answered RESOURCE_EXHAUSTED
    /// (naming the limit) as soon as its length prefix arrives; an answer over it is replaced by
    /// that status. Default: room for the engine's default largest key and value
    /// ([`veddb_wire::grpc::message_bytes_max_for`], 16 MiB + 128 KiB); `veddb-server` derives
    /// it from its `--key-bytes-max` and `--value-bytes-max` unless `--grpc-message-bytes-max`
    /// is given.
    pub message_bytes_max: usize,
    /// Concurrent streams per connection (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS).
    pub streams_per_connection_max: u32,
    /// Connections one core serves at once; more are closed at accept.
    pub connections_per_core_max: usize,
    /// Ping an idle client this often, and close the connection if it does not answer within
    /// `keepalive_timeout` (dead peers do not hold resources forever).
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    /// Longest wait for a new connection's TLS and HTTP/2 handshakes.
    pub handshake_timeout: Duration,
    /// Serve TLS (ALPN `h2`) instead of plaintext HTTP/2; see [`tls_config`].
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        GrpcConfig {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 50051,
            message_bytes_max: veddb_wire::grpc::message_bytes_max_for(
                veddb_wire::limits::KEY_BYTES_MAX_DEFAULT,
                veddb_wire::limits::VALUE_BYTES_MAX_DEFAULT,
            ),
            streams_per_connection_max: 256,
            connections_per_core_max: 10_000,
            keepalive_interval: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(20),
            handshake_timeout: Duration::from_secs(10),
            tls: None,
        }
    }
}

/// The running frontend. Dropping it does not stop the listeners; they stop with the engine.
pub struct GrpcServer {
    address: SocketAddr,
    shutting_down: Arc<AtomicBool>,
}

impl GrpcServer {
    /// The address every core listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.address
    }

    /// From now on new calls get UNAVAILABLE and the health service answers NOT_SERVING; calls
    /// in progress finish. Call before stopping the engine.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }
}

/// A TLS configuration (rustls with the ring provider, TLS 1.2 and 1.3, ALPN `h2`) from a PEM
/// certificate chain and a PEM private key. The error names the file and what is wrong.
pub fn tls_config(
    certificate_chain: &Path,
    private_key: &Path,
) -> io::Result<Arc<rustls::ServerConfig>> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let invalid = |path: &Path, what: String| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: {what}", path.display()),
        )
    };
    let certificates = CertificateDer::pem_file_iter(certificate_chain)
        .map_err(|error| {
            invalid(
                certificate_chain,
                format!("cannot read certificates: {error}"),
            )
        })?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| invalid(certificate_chain, format!("bad PEM certificate: {error}")))?;
    if certificates.is_empty() {
        return Err(invalid(certificate_chain, "no certificate found".into()));
    }
    let key = PrivateKeyDer::from_pem_file(private_key)
        .map_err(|error| invalid(private_key, format!("cannot read a private key: {error}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| io::Error::other(error.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certificates, key)
        .map_err(|error| {
            invalid(
                private_key,
                format!("the key does not fit the certificate: {error}"),
            )
        })?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Starts listening on every core of `engine`. Fails if any core cannot bind (for example, the
/// port is taken by another program).
pub fn start(engine: &Engine, config: GrpcConfig) -> io::Result<GrpcServer> {
    let shutting_down = Arc::new(AtomicBool::new(false));
    let mut address = SocketAddr::new(config.bind, config.port);
    if config.port != 0 {
        // SO_REUSEPORT would let a second server (same user) share the port silently and take
        // half the connections. A plain bind first fails if anybody listens there already.
        std::net::TcpListener::bind(address).map_err(|error| {
            io::Error::new(error.kind(), format!("cannot listen on {address}: {error}"))
        })?;
    }
    // Core 0 first: with port 0 it picks the port that the other cores then share.
    for core in 0..engine.shard_count() as usize {
        let (sender, receiver) = sync_channel::<io::Result<SocketAddr>>(1);
        let config = config.clone();
        let shutting_down = shutting_down.clone();
        let submitted = engine.run_on(core, move |context| {
            compio::runtime::spawn(server::listen(
                context,
                address,
                config,
                shutting_down,
                sender,
            ))
            .detach();
        });
        if !submitted {
            return Err(io::Error::other("the engine is stopping"));
        }
        let bound = receiver
            .recv_timeout(Duration::from_secs(30))
            .map_err(|_| io::Error::other(format!("core {core} did not report its listener")))??;
        address = bound;
    }
    Ok(GrpcServer {
        address,
        shutting_down,
    })
}

/// The gRPC frontend as the server binary drives it (see [`crate::Frontend`]).
pub struct GrpcFrontend {
    config: GrpcConfig,
    server: Option<GrpcServer>,
}

impl GrpcFrontend {
    pub fn new(config: GrpcConfig) -> GrpcFrontend {
        GrpcFrontend {
            config,
            server: None,
        }
    }

    /// The address every core listens on, once started.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.server.as_ref().map(GrpcServer::local_addr)
    }
}

impl crate::Frontend for GrpcFrontend {
    fn name(&self) -> &'static str {
        "gRPC"
    }

    fn start(&mut self, engine: &Engine) -> Result<(), String> {
        let server = start(engine, self.config.clone()).map_err(|error| error.to_string())?;
        tracing::info!(
            address = %server.local_addr(),
            tls = self.config.tls.is_some(),
            "gRPC listening on every core"
        );
        self.server = Some(server);
        Ok(())
    }

    fn shutdown(&mut self) {
        if let Some(server) = &self.server {
            server.begin_shutdown();
        }
    }
}
