//! `veddb-client`: the Rust client library of VedDB.
//!
//! [`Client`] is the blocking API (one per thread): each call runs on a private compio
//! runtime, so nothing else is needed. [`grpc::GrpcConnection`] is the async API underneath,
//! for programs that already run on compio and want many calls in flight. Requests and answers
//! are the engine's own [`veddb_wire::Request`] and [`veddb_wire::Response`]; the typed helpers
//! (`get`, `set`, ...) wrap them.
//!
//! Transports: shared memory for clients on the server's machine ([`Client::connect_local`],
//! [`local::LocalConnection`], with zero-copy reads through [`local::LocalConnection::get_view`])
//! and gRPC for remote ones ([`Client::connect_grpc`]). Both run the same calls.
#![forbid(unsafe_code)]

pub mod grpc;
pub mod local;

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};

use bytes::Bytes;
use veddb_wire::grpc::Status;
use veddb_wire::grpc_client::SubscribeEvent;
use veddb_wire::{Info, Request, Response, SetOptions, Ttl};

pub use veddb_wire;

/// Why a call failed.
#[derive(Debug)]
pub enum ClientError {
    /// Connecting or talking to the server failed.
    Io(std::io::Error),
    /// The server answered something this client does not understand, or the connection broke.
    Protocol(String),
    /// The server answered with a gRPC status (its code and message say why).
    Status(Status),
}

impl ClientError {
    fn from_h2(error: h2::Error) -> ClientError {
        if let Some(io) = error.get_io() {
            return ClientError::Io(std::io::Error::new(io.kind(), io.to_string()));
        }
        ClientError::Protocol(error.to_string())
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Io(error) => write!(f, "I/O error: {error}"),
            ClientError::Protocol(text) => write!(f, "protocol error: {text}"),
            // Server messages usually start with the code already ("NOT_FOUND: ...").
            ClientError::Status(status) if status.message.starts_with(status.code.name()) => {
                write!(f, "{}", status.message)
            }
            ClientError::Status(status) => write!(f, "{}: {}", status.code.name(), status.message),
        }
    }
}

impl std::error::Error for ClientError {}

/// A blocking client. Not `Send`: keep one per thread.
pub struct Client {
    backend: Backend,
}

enum Backend {
    Grpc {
        runtime: compio::runtime::Runtime,
        connection: grpc::GrpcConnection,
    },
    Local(local::LocalConnection),
}

/// An engine error as the status a gRPC server would have sent: one error type for both
/// transports.
fn refused(error: &veddb_wire::Error) -> ClientError {
    ClientError::Status(error.status())
}

impl Client {
    /// Connects to a server's gRPC port (`host:port`).
    pub fn connect_grpc(address: &str) -> Result<Client, ClientError> {
        let address: SocketAddr = address
            .to_socket_addrs()
            .map_err(ClientError::Io)?
            .next()
            .ok_or_else(|| ClientError::Protocol(format!("{address} resolves to no address")))?;
        let runtime = compio::runtime::Runtime::new().map_err(ClientError::Io)?;
        let connection = runtime.block_on(grpc::GrpcConnection::connect(address))?;
        Ok(Client {
            backend: Backend::Grpc {
                runtime,
                connection,
            },
        })
    }

    /// Attaches to a local instance by name (`veddb-server --create --name NAME`) through
    /// shared memory.
    pub fn connect_local(name: &str) -> Result<Client, ClientError> {
        Ok(Client {
            backend: Backend::Local(local::LocalConnection::connect(name)?),
        })
    }

    /// The shared-memory connection, when this client is local (for zero-copy reads).
    pub fn local(&self) -> Option<&local::LocalConnection> {
        match &self.backend {
            Backend::Local(connection) => Some(connection),
            Backend::Grpc { .. } => None,
        }
    }

    /// Runs any request. An engine error comes back as `Err(ClientError::Status)`, whatever
    /// the transport.
    pub fn execute(&self, request: Request) -> Result<Response, ClientError> {
        match &self.backend {
            Backend::Grpc {
                runtime,
                connection,
            } => runtime.block_on(connection.execute(request)),
            Backend::Local(connection) => match connection.execute(request)? {
                Response::Error(error) => Err(refused(&error)),
                response => Ok(response),
            },
        }
    }

    /// Runs several requests pipelined; one result per request, in order.
    pub fn execute_many(
        &self,
        requests: Vec<Request>,
    ) -> Result<Vec<Result<Response, ClientError>>, ClientError> {
        match &self.backend {
            Backend::Grpc {
                runtime,
                connection,
            } => runtime.block_on(connection.execute_many(requests)),
            Backend::Local(connection) => Ok(connection
                .execute_many(&requests)?
                .into_iter()
                .map(|response| match response {
                    Response::Error(error) => Err(refused(&error)),
                    response => Ok(response),
                })
                .collect()),
        }
    }

    fn unexpected(response: Response) -> ClientError {
        ClientError::Protocol(format!("unexpected answer {response:?}"))
    }

    pub fn ping(&self) -> Result<(), ClientError> {
        match self.execute(Request::Ping)? {
            Response::Pong => Ok(()),
            other => Err(Self::unexpected(other)),
        }
    }

    /// The value and version of `key`, or `None`.
    pub fn get(&self, key: impl Into<Bytes>) -> Result<Option<(Bytes, u64)>, ClientError> {
        match self.execute(Request::Get { key: key.into() })? {
            Response::Value { value, version } => Ok(Some((value, version))),
            Response::NotFound => Ok(None),
            other => Err(Self::unexpected(other)),
        }
    }

    /// Writes `value`; the new version, or `None` when the NX/XX condition did not hold.
    pub fn set(
        &self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
        options: SetOptions,
    ) -> Result<Option<u64>, ClientError> {
        match self.execute(Request::Set {
            key: key.into(),
            value: value.into(),
            options,
        })? {
            Response::Stored { version } => Ok(Some(version)),
            Response::NotStored => Ok(None),
            other => Err(Self::unexpected(other)),
        }
    }

    /// Deletes `key`; whether it existed.
    pub fn delete(&self, key: impl Into<Bytes>) -> Result<bool, ClientError> {
        match self.execute(Request::Delete { key: key.into() })? {
            Response::Bool(existed) => Ok(existed),
            other => Err(Self::unexpected(other)),
        }
    }

    /// Adds `delta`; the new value.
    pub fn incr(&self, key: impl Into<Bytes>, delta: i64) -> Result<i64, ClientError> {
        match self.execute(Request::Incr {
            key: key.into(),
            delta,
        })? {
            Response::Integer { value, .. } => Ok(value),
            other => Err(Self::unexpected(other)),
        }
    }

    pub fn ttl(&self, key: impl Into<Bytes>) -> Result<Ttl, ClientError> {
        match self.execute(Request::Ttl { key: key.into() })? {
            Response::Ttl(ttl) => Ok(ttl),
            other => Err(Self::unexpected(other)),
        }
    }

    /// Publishes; how many subscribers it was queued for.
    pub fn publish(
        &self,
        topic: impl Into<Bytes>,
        message: impl Into<Bytes>,
    ) -> Result<u32, ClientError> {
        match self.execute(Request::Publish {
            topic: topic.into(),
            message: message.into(),
        })? {
            Response::Published { receivers } => Ok(receivers),
            other => Err(Self::unexpected(other)),
        }
    }

    pub fn info(&self) -> Result<Info, ClientError> {
        match &self.backend {
            Backend::Grpc {
                runtime,
                connection,
            } => runtime.block_on(connection.info()),
            Backend::Local(_) => match self.execute(Request::Info)? {
                Response::Info(info) => Ok(info),
                other => Err(Self::unexpected(other)),
            },
        }
    }

    /// Writes a snapshot of every shard to the server's data directory (SNAPSHOT); returns
    /// once every shard's snapshot is durable. Errors are [`ClientError::Status`]:
    /// FAILED_PRECONDITION when the server runs without `--data-dir`, INTERNAL for a disk
    /// error (the message names the file), UNAVAILABLE when busy or stopping (retry later).
    pub fn snapshot(&self) -> Result<(), ClientError> {
        match &self.backend {
            Backend::Grpc {
                runtime,
                connection,
            } => runtime.block_on(connection.snapshot()),
            Backend::Local(_) => match self.execute(Request::Snapshot)? {
                Response::Ok => Ok(()),
                other => Err(Self::unexpected(other)),
            },
        }
    }

    /// Subscribes to `topic`; iterate the result for messages.
    pub fn subscribe(
        &self,
        topic: impl Into<Bytes>,
    ) -> Result<BlockingSubscription<'_>, ClientError> {
        let inner = match &self.backend {
            Backend::Grpc {
                runtime,
                connection,
            } => Subscription::Grpc(Some(runtime.block_on(connection.subscribe(topic.into()))?)),
            Backend::Local(_) => match self.execute(Request::Subscribe {
                topic: topic.into(),
            })? {
                Response::Subscribed { subscriber } => Subscription::Local {
                    subscriber,
                    pending: std::collections::VecDeque::from([SubscribeEvent::Subscribed]),
                },
                other => return Err(Self::unexpected(other)),
            },
        };
        Ok(BlockingSubscription {
            client: self,
            inner,
        })
    }
}

/// How long one FETCH of a local subscription waits on the server.
const LOCAL_FETCH_WAIT_MS: u64 = 1000;
/// Messages one FETCH of a local subscription takes.
const LOCAL_FETCH_MAX: u32 = 256;

/// A subscription read by blocking calls.
pub struct BlockingSubscription<'a> {
    client: &'a Client,
    inner: Subscription,
}

enum Subscription {
    Grpc(Option<grpc::Subscription>),
    /// Long polls (FETCH with a wait) on the topic's core, through the rings.
    Local {
        subscriber: veddb_wire::SubscriberId,
        pending: std::collections::VecDeque<SubscribeEvent>,
    },
}

impl Drop for BlockingSubscription<'_> {
    /// Cancels the subscription. gRPC: the connection only runs inside a call, so make one (a
    /// ping, whose frames follow the cancellation) to get the cancellation to the server now.
    fn drop(&mut self) {
        match (&mut self.inner, &self.client.backend) {
            (
                Subscription::Grpc(subscription),
                Backend::Grpc {
                    runtime,
                    connection,
                },
            ) => {
                drop(subscription.take());
                let _ = runtime.block_on(connection.execute(Request::Ping));
            }
            (Subscription::Local { subscriber, .. }, _) => {
                let _ = self.client.execute(Request::Unsubscribe {
                    subscriber: *subscriber,
                });
            }
            _ => {}
        }
    }
}

impl Iterator for BlockingSubscription<'_> {
    type Item = Result<SubscribeEvent, ClientError>;

    /// The next message, blocking; `None` when the server ended the stream.
    fn next(&mut self) -> Option<Self::Item> {
        match (&mut self.inner, &self.client.backend) {
            (Subscription::Grpc(subscription), Backend::Grpc { runtime, .. }) => {
                let subscription = subscription.as_mut()?;
                runtime.block_on(subscription.next())
            }
            (
                Subscription::Local {
                    subscriber,
                    pending,
                },
                _,
            ) => loop {
                if let Some(event) = pending.pop_front() {
                    return Some(Ok(event));
                }
                match self.client.execute(Request::Fetch {
                    subscriber: *subscriber,
                    max: LOCAL_FETCH_MAX,
                    wait_ms: LOCAL_FETCH_WAIT_MS,
                }) {
                    Ok(Response::Messages { messages, dropped }) => {
                        let mut dropped = dropped;
                        for message in messages {
                            pending.push_back(SubscribeEvent::Message {
                                message,
                                dropped: std::mem::take(&mut dropped),
                            });
                        }
                    }
                    Ok(other) => return Some(Err(Self::unexpected(other))),
                    Err(error) => return Some(Err(error)),
                }
            },
            _ => None,
        }
    }
}

impl BlockingSubscription<'_> {
    fn unexpected(response: Response) -> ClientError {
        ClientError::Protocol(format!("unexpected answer {response:?}"))
    }
}
