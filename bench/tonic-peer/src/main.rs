//! `veddb-bench-tonic-peer`: a minimal stock tonic server for veddb.v1.VedDb, the peer that
//! VedDB's hand-rolled gRPC frontend is measured against (`veddb-bench grpc --unary`).
//!
//! Only `Get` and `Set` are implemented (every other method answers UNIMPLEMENTED), on a
//! `HashMap` behind a `Mutex`, on a tokio current-thread runtime: the strongest tonic
//! configuration per core measured so far. Plaintext HTTP/2 only.
//!
//! Usage: `veddb-bench-tonic-peer [PORT]` (default 0: any free port). Prints
//! `listening on 127.0.0.1:PORT` once it accepts connections; stops on SIGINT/SIGTERM or when
//! killed.

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;
use tonic::{Request, Response, Status};

#[allow(clippy::all, missing_docs)]
mod v1 {
    tonic::include_proto!("veddb.v1");
}

use v1::ved_db_server::{VedDb, VedDbServer};

#[derive(Default)]
struct Peer {
    /// key -> (value, version)
    map: Mutex<HashMap<Bytes, (Bytes, u64)>>,
    versions: Mutex<u64>,
}

#[tonic::async_trait]
impl VedDb for Peer {
    async fn get(
        &self,
        request: Request<v1::GetRequest>,
    ) -> Result<Response<v1::GetResponse>, Status> {
        let key = request.into_inner().key;
        let map = self.map.lock().expect("map lock");
        match map.get(&key) {
            Some((value, version)) => Ok(Response::new(v1::GetResponse {
                value: value.clone(),
                version: *version,
            })),
            None => Err(Status::not_found("key not found")),
        }
    }

    async fn set(
        &self,
        request: Request<v1::SetRequest>,
    ) -> Result<Response<v1::SetResponse>, Status> {
        let request = request.into_inner();
        if request.ttl_ms != 0 || request.condition != 0 || request.keep_ttl {
            return Err(Status::unimplemented(
                "this peer implements plain SET only (no TTL, NX/XX or KEEPTTL)",
            ));
        }
        let version = {
            let mut versions = self.versions.lock().expect("version lock");
            *versions += 1;
            *versions
        };
        // A received `Bytes` may be a slice of a larger receive buffer: copy the key and value
        // so the map does not pin whole buffers.
        let key = Bytes::copy_from_slice(&request.key);
        let value = Bytes::copy_from_slice(&request.value);
        self.map
            .lock()
            .expect("map lock")
            .insert(key, (value, version));
        Ok(Response::new(v1::SetResponse {
            stored: true,
            version,
        }))
    }
}

fn main() {
    let port: u16 = match std::env::args().nth(1).map(|p| p.parse()) {
        None => 0,
        Some(Ok(port)) => port,
        Some(Err(_)) => {
            eprintln!("usage: veddb-bench-tonic-peer [PORT]");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
            Ok(listener) => listener,
            Err(error) => {
                eprintln!("veddb-bench-tonic-peer: cannot listen on 127.0.0.1:{port}: {error}");
                std::process::exit(1);
            }
        };
        let local = listener.local_addr().expect("local address");
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        println!("listening on {local}");
        if let Err(error) = tonic::transport::Server::builder()
            .add_service(VedDbServer::new(Peer::default()))
            .serve_with_incoming(incoming)
            .await
        {
            eprintln!("veddb-bench-tonic-peer: {error}");
            std::process::exit(1);
        }
    });
}
