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
    /// Largest gRPC message accepted or sent (default 4 MiB, as gRPC clients assume).
    pub message_bytes_max: usize,
    /// Concurrent streams per connection (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS).
    pub streams_per_connection_max: u32,
    /// Connections one core serves at once; more are closed at accept.
    pub connections_per_core_max: usize,
    /// Ping an idle client this often, and close the connection if it does not answer within
    /// `keepalive_timeout` (dead peers do not hold resources forever).
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    /// Longest wait for a new connection's HTTP/2 preface and settings.
    pub handshake_timeout: Duration,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        GrpcConfig {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 50051,
            message_bytes_max: veddb_wire::grpc::MESSAGE_BYTES_MAX_DEFAULT,
            streams_per_connection_max: 256,
            connections_per_core_max: 10_000,
            keepalive_interval: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(20),
            handshake_timeout: Duration::from_secs(10),
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
