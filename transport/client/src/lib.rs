//! `veddb-client`: the Rust client library of VedDB.
//!
//! [`Client`] is the blocking API (one per thread). It reaches the server through a
//! [`Transport`]: shared memory for clients on the server's machine ([`Client::connect_local`],
//! [`local::LocalConnection`], with zero-copy reads through [`local::LocalConnection::get_view`])
//! or gRPC for remote ones ([`Client::connect_grpc`], [`grpc::GrpcTransport`]: a
//! [`grpc::GrpcConnection`] driven by a private compio runtime). [`grpc::GrpcConnection`] is also
//! the async API, for programs that already run on compio and want many calls in flight.
//! Requests and answers are the engine's own [`veddb_wire::Request`] and
//! [`veddb_wire::Response`]; the typed helpers (`get`, `set`, ...) wrap them, written once on top
//! of [`Transport`], so every transport runs the same calls with the same errors.
#![forbid(unsafe_code)]

pub mod grpc;
pub mod local;

use std::fmt;
use std::time::Duration;

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
    /// The server refused the request with a gRPC status (its code and message say why). Engine
    /// errors come as the status [`veddb_wire::Error::status`] gives them, whatever the
    /// transport; a transport's own limit (a frame or message too large) is a status too.
    Status(Status),
}

impl ClientError {
    fn from_h2(error: h2::Error) -> ClientError {
        if let Some(io) = error.get_io() {
            return ClientError::Io(std::io::Error::new(io.kind(), io.to_string()));
        }
        ClientError::Protocol(error.to_string())
    }

    /// An answer that does not fit the request (a server or client defect).
    fn unexpected(response: Response) -> ClientError {
        ClientError::Protocol(format!("unexpected answer {response:?}"))
    }

    /// The status code, when the server (or a transport limit) refused the request.
    pub fn code(&self) -> Option<veddb_wire::grpc::Code> {
        match self {
            ClientError::Status(status) => Some(status.code),
            ClientError::Io(_) | ClientError::Protocol(_) => None,
        }
    }
}

/// An engine error as the status a gRPC server sends for it: one error for every transport.
impl From<veddb_wire::Error> for ClientError {
    fn from(error: veddb_wire::Error) -> ClientError {
        ClientError::Status(error.status())
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Io(error) => write!(f, "I/O error: {error}"),
            ClientError::Protocol(text) => write!(f, "protocol error: {text}"),
            // Engine errors start with their own status name already ("NOT_FOUND: ...",
            // "OUT_OF_MEMORY: ..." under RESOURCE_EXHAUSTED): say it once.
            ClientError::Status(status) if names_its_status(&status.message) => {
                write!(f, "{}", status.message)
            }
            ClientError::Status(status) => write!(f, "{}: {}", status.code.name(), status.message),
        }
    }
}

impl std::error::Error for ClientError {}

/// Whether a status message starts with a status name of its own (`NOT_FOUND: `,
/// `OUT_OF_MEMORY: `): an upper-case word of letters and underscores, then `": "`.
fn names_its_status(message: &str) -> bool {
    message.split_once(": ").is_some_and(|(name, _)| {
        name.len() >= 2
            && name
                .bytes()
                .all(|byte| byte.is_ascii_uppercase() || byte == b'_')
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use veddb_wire::grpc::Code;

    fn status(code: Code, message: &str) -> String {
        ClientError::Status(Status::new(code, message)).to_string()
    }

    /// One status name per message: the engine's own when its message has one, else the
    /// gRPC code's.
    #[test]
    fn a_status_is_named_once() {
        assert_eq!(
            status(Code::NotFound, "NOT_FOUND: key not found"),
            "NOT_FOUND: key not found"
        );
        assert_eq!(
            status(
                Code::ResourceExhausted,
                "OUT_OF_MEMORY: the write needs 9 bytes"
            ),
            "OUT_OF_MEMORY: the write needs 9 bytes"
        );
        assert_eq!(
            status(Code::ResourceExhausted, "INVALID_ARGUMENT: empty key"),
            "INVALID_ARGUMENT: empty key"
        );
        assert_eq!(
            status(Code::Unavailable, "BUSY: the log is full; retry later"),
            "BUSY: the log is full; retry later"
        );
        assert_eq!(
            status(
                Code::FailedPrecondition,
                "version mismatch: the current version is 3"
            ),
            "FAILED_PRECONDITION: version mismatch: the current version is 3"
        );
        assert_eq!(
            status(Code::Unknown, "A: B"),
            "UNKNOWN: A: B",
            "one letter is not a status name"
        );
        assert_eq!(status(Code::Internal, ""), "INTERNAL: ");
    }
}

/// One way of reaching a VedDB server: the seam between [`Client`] and the wire.
///
/// A transport carries requests and subscriptions, nothing else: every typed call of
/// [`Client`] (`get`, `set`, `incr`, `mget`, `publish`, `info`, `snapshot`, ...) is written once,
/// on top of these methods. **A new transport (QUIC, say) is added by implementing this one
/// trait** — [`execute`](Transport::execute), [`execute_many`](Transport::execute_many) and
/// [`subscribe`](Transport::subscribe) — and handing it to [`Client::from_transport`]; the
/// conformance suite (`transport/server/tests/conformance.rs`) then runs every client-visible
/// behaviour through it after one more line in its list of transports.
///
/// The contract every implementation keeps:
/// - an engine error ([`Response::Error`]) is never an `Ok` answer: it is
///   `Err(ClientError::Status)` with the status of [`veddb_wire::Error::status`]
///   (`ClientError::from(error)`), so callers see the same code whatever the transport;
/// - a request over one of the transport's own limits (its largest frame or message) is
///   `Err(ClientError::Status)` with RESOURCE_EXHAUSTED, and the connection stays usable;
/// - [`Request::Info`] and [`Request::Snapshot`] run through [`execute`](Transport::execute)
///   like any other request (a transport with dedicated calls for them routes them there).
///
/// Implementations are used from one thread (`Client` is not `Send`), so they may hold
/// `!Send` state such as a runtime.
pub trait Transport {
    /// Runs one request and waits for its answer.
    fn execute(&self, request: Request) -> Result<Response, ClientError>;

    /// Runs several requests pipelined (all sent before any answer is awaited); one result per
    /// request, in order. The outer error is a failure of the whole exchange (the connection
    /// broke, or the transport refused the batch as such); each inner one is that request's.
    fn execute_many(
        &self,
        requests: Vec<Request>,
    ) -> Result<Vec<Result<Response, ClientError>>, ClientError>;

    /// Subscribes to `topic`; returns once the subscription is in place on the server, so a
    /// message published after this returns is delivered. Dropping the returned subscription
    /// unsubscribes; so does closing the connection.
    fn subscribe(&self, topic: Bytes) -> Result<Box<dyn TransportSubscription + '_>, ClientError>;

    /// The shared-memory connection underneath, for zero-copy reads. `None` (the default) for
    /// every transport that has none.
    fn local(&self) -> Option<&local::LocalConnection> {
        None
    }
}

/// A subscription made through a [`Transport`]. Dropping it unsubscribes.
pub trait TransportSubscription {
    /// Waits up to `timeout` for the next message (`Duration::ZERO` only takes one already
    /// there). Once [`Received::Ended`] is returned, every later call returns it too.
    fn receive(&mut self, timeout: Duration) -> Result<Received, ClientError>;
}

/// What waiting on a subscription gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Received {
    /// A published message, oldest first. `dropped`: messages of this subscription that were
    /// lost just before this one to the slow-subscriber policy (its queue on the server is
    /// bounded and drops its oldest messages when full), so the receiver knows the size of the
    /// gap.
    Message { message: Bytes, dropped: u64 },
    /// Nothing arrived within the timeout; the subscription is still in place.
    Timeout,
    /// The server ended the subscription; nothing more will arrive.
    Ended,
}

/// A blocking client. Not `Send`: keep one per thread.
pub struct Client {
    transport: Box<dyn Transport>,
}

/// What a CAS did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CasOutcome {
    /// Written; the key's new version.
    Stored { version: u64 },
    /// The key's version was not the expected one (or, for expected version 0, the key exists);
    /// its current version.
    VersionMismatch { current: u64 },
    /// The key does not exist (and the expected version was not 0).
    NotFound,
}

impl Client {
    /// Connects to a server's gRPC port (`host:port`).
    pub fn connect_grpc(address: &str) -> Result<Client, ClientError> {
        Ok(Client::from_transport(grpc::GrpcTransport::connect(
            address,
        )?))
    }

    /// Attaches to a local instance by name (`veddb-server --create --name NAME`) through
    /// shared memory.
    pub fn connect_local(name: &str) -> Result<Client, ClientError> {
        Ok(Client::from_transport(local::LocalConnection::connect(
            name,
        )?))
    }

    /// A client over any [`Transport`].
    pub fn from_transport(transport: impl Transport + 'static) -> Client {
        Client {
            transport: Box::new(transport),
        }
    }

    /// The transport this client talks through.
    pub fn transport(&self) -> &dyn Transport {
        &*self.transport
    }

    /// The shared-memory connection, when this client is local (for zero-copy reads).
    pub fn local(&self) -> Option<&local::LocalConnection> {
        self.transport.local()
    }

    /// Runs any request. An engine error comes back as `Err(ClientError::Status)`, whatever
    /// the transport.
    pub fn execute(&self, request: Request) -> Result<Response, ClientError> {
        self.transport.execute(request)
    }

    /// Runs several requests pipelined; one result per request, in order.
    pub fn execute_many(
        &self,
        requests: Vec<Request>,
    ) -> Result<Vec<Result<Response, ClientError>>, ClientError> {
        self.transport.execute_many(requests)
    }

    pub fn ping(&self) -> Result<(), ClientError> {
        match self.execute(Request::Ping)? {
            Response::Pong => Ok(()),
            other => Err(ClientError::unexpected(other)),
        }
    }

    /// The value and version of `key`, or `None`.
    pub fn get(&self, key: impl Into<Bytes>) -> Result<Option<(Bytes, u64)>, ClientError> {
        match self.execute(Request::Get { key: key.into() })? {
            Response::Value { value, version } => Ok(Some((value, version))),
            Response::NotFound => Ok(None),
            other => Err(ClientError::unexpected(other)),
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
            other => Err(ClientError::unexpected(other)),
        }
    }

    /// Deletes `key`; whether it existed.
    pub fn delete(&self, key: impl Into<Bytes>) -> Result<bool, ClientError> {
        match self.execute(Request::Delete { key: key.into() })? {
            Response::Bool(existed) => Ok(existed),
            other => Err(ClientError::unexpected(other)),
        }
    }

    /// Whether `key` exists (false when missing or expired).
    pub fn exists(&self, key: impl Into<Bytes>) -> Result<bool, ClientError> {
        match self.execute(Request::Exists { key: key.into() })? {
            Response::Bool(exists) => Ok(exists),
            other => Err(ClientError::unexpected(other)),
        }
    }

    /// Writes `value` only if the key's version is `expected_version` (0: only if the key is
    /// absent). The key's expiry is kept unless `ttl_ms` is given.
    pub fn cas(
        &self,
        key: impl Into<Bytes>,
        expected_version: u64,
        value: impl Into<Bytes>,
        ttl_ms: Option<u64>,
    ) -> Result<CasOutcome, ClientError> {
        match self.execute(Request::Cas {
            key: key.into(),
            expected_version,
            value: value.into(),
            ttl_ms,
        })? {
            Response::Stored { version } => Ok(CasOutcome::Stored { version }),
            Response::VersionMismatch { current } => Ok(CasOutcome::VersionMismatch { current }),
            Response::NotFound => Ok(CasOutcome::NotFound),
            other => Err(ClientError::unexpected(other)),
        }
    }

    /// Adds `delta`; the new value.
    pub fn incr(&self, key: impl Into<Bytes>, delta: i64) -> Result<i64, ClientError> {
        match self.execute(Request::Incr {
            key: key.into(),
            delta,
        })? {
            Response::Integer { value, .. } => Ok(value),
            other => Err(ClientError::unexpected(other)),
        }
    }

    /// Sets the key's time to live (0 expires it at once); whether the key existed.
    pub fn expire(&self, key: impl Into<Bytes>, ttl_ms: u64) -> Result<bool, ClientError> {
        match self.execute(Request::Expire {
            key: key.into(),
            ttl_ms,
        })? {
            Response::Bool(existed) => Ok(existed),
            other => Err(ClientError::unexpected(other)),
        }
    }

    /// Removes the key's expiry; whether there was one.
    pub fn persist(&self, key: impl Into<Bytes>) -> Result<bool, ClientError> {
        match self.execute(Request::Persist { key: key.into() })? {
            Response::Bool(removed) => Ok(removed),
            other => Err(ClientError::unexpected(other)),
        }
    }

    pub fn ttl(&self, key: impl Into<Bytes>) -> Result<Ttl, ClientError> {
        match self.execute(Request::Ttl { key: key.into() })? {
            Response::Ttl(ttl) => Ok(ttl),
            other => Err(ClientError::unexpected(other)),
        }
    }

    /// The value and version of each key, in order (`None` where missing).
    pub fn mget(&self, keys: Vec<Bytes>) -> Result<Vec<Option<(Bytes, u64)>>, ClientError> {
        let count = keys.len();
        match self.execute(Request::MGet { keys })? {
            Response::Values(values) if values.len() == count => Ok(values),
            other => Err(ClientError::unexpected(other)),
        }
    }

    /// Writes every pair; atomic per shard, not across shards (see the MSET rationale in
    /// docs/ARCHITECTURE.md).
    pub fn mset(&self, pairs: Vec<(Bytes, Bytes)>) -> Result<(), ClientError> {
        match self.execute(Request::MSet { pairs })? {
            Response::Ok => Ok(()),
            other => Err(ClientError::unexpected(other)),
        }
    }

    /// One page of the keys after `cursor` (empty: from the start) that start with `prefix`, at
    /// most `count` (0: the server's default), in byte order; and the cursor of the next page,
    /// empty when the scan is complete.
    pub fn scan(
        &self,
        cursor: impl Into<Bytes>,
        prefix: impl Into<Bytes>,
        count: u32,
    ) -> Result<(Vec<Bytes>, Bytes), ClientError> {
        match self.execute(Request::Scan {
            cursor: cursor.into(),
            prefix: prefix.into(),
            count,
        })? {
            Response::Keys { keys, cursor } => Ok((keys, cursor)),
            other => Err(ClientError::unexpected(other)),
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
            other => Err(ClientError::unexpected(other)),
        }
    }

    /// Statistics of every shard.
    pub fn info(&self) -> Result<Info, ClientError> {
        match self.execute(Request::Info)? {
            Response::Info(info) => Ok(info),
            other => Err(ClientError::unexpected(other)),
        }
    }

    /// Writes a snapshot of every shard to the server's data directory (SNAPSHOT); returns
    /// once every shard's snapshot is durable. Errors are [`ClientError::Status`]:
    /// FAILED_PRECONDITION when the server runs without `--data-dir`, INTERNAL for a disk
    /// error (the message names the file), UNAVAILABLE when busy or stopping (retry later).
    pub fn snapshot(&self) -> Result<(), ClientError> {
        match self.execute(Request::Snapshot)? {
            Response::Ok => Ok(()),
            other => Err(ClientError::unexpected(other)),
        }
    }

    /// Subscribes to `topic`; returns once the subscription is in place. Iterate the result
    /// for messages, or wait with a timeout through [`BlockingSubscription::receive`].
    pub fn subscribe(
        &self,
        topic: impl Into<Bytes>,
    ) -> Result<BlockingSubscription<'_>, ClientError> {
        Ok(BlockingSubscription {
            inner: self.transport.subscribe(topic.into())?,
        })
    }
}

/// How long one wait of [`BlockingSubscription`]'s iterator lasts before it waits again.
const ITERATOR_WAIT: Duration = Duration::from_secs(60);

/// A subscription read by blocking calls; dropping it unsubscribes.
///
/// As an iterator it yields [`SubscribeEvent::Message`] for every message and ends when the
/// server ends the subscription. (`SubscribeEvent::Subscribed` is never yielded: the
/// subscription is in place once [`Client::subscribe`] returns.)
pub struct BlockingSubscription<'a> {
    inner: Box<dyn TransportSubscription + 'a>,
}

impl BlockingSubscription<'_> {
    /// Waits up to `timeout` for the next message.
    pub fn receive(&mut self, timeout: Duration) -> Result<Received, ClientError> {
        self.inner.receive(timeout)
    }
}

impl fmt::Debug for BlockingSubscription<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlockingSubscription")
            .finish_non_exhaustive()
    }
}

impl Iterator for BlockingSubscription<'_> {
    type Item = Result<SubscribeEvent, ClientError>;

    /// The next message, blocking; `None` when the server ended the subscription.
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match self.inner.receive(ITERATOR_WAIT) {
                Ok(Received::Message { message, dropped }) => {
                    return Some(Ok(SubscribeEvent::Message { message, dropped }))
                }
                Ok(Received::Timeout) => {}
                Ok(Received::Ended) => return None,
                Err(error) => return Some(Err(error)),
            }
        }
    }
}
