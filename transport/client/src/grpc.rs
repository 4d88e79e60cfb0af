//! gRPC to a VedDB server, on h2 over compio: [`GrpcConnection`] (async, for programs that
//! run on compio) and [`GrpcTransport`] (the same connection on a private runtime: the blocking
//! [`Transport`] behind [`crate::Client::connect_grpc`]).

use std::future::poll_fn;
use std::net::{SocketAddr, ToSocketAddrs};
use std::pin::pin;
use std::time::{Duration, Instant};

use bytes::Bytes;
use compio::net::TcpStream;
use h2::client::SendRequest;
use h2::{RecvStream, SendStream};
use http::{HeaderMap, HeaderValue};
use veddb_h2io::TcpIo;
use veddb_wire::grpc::{self as map, Code, Deframer, FrameError, Method, Status};
use veddb_wire::grpc_client::{self as client_map, SubscribeEvent};
use veddb_wire::{Info, Request, Response};

use crate::{ClientError, Received, Transport, TransportSubscription};

/// `messages` one after another, each with its gRPC prefix.
fn framed(messages: &[Vec<u8>]) -> Vec<u8> {
    let mut framed = Vec::with_capacity(messages.iter().map(|m| m.len() + 5).sum());
    for message in messages {
        map::frame(message, &mut framed);
    }
    framed
}

/// Requests up to this size (framed) are handed to h2 whole (see `send_framed`).
const SMALL_REQUEST_BYTES: usize = 16 << 10;

/// The largest response message a [`GrpcConnection`] takes by default: the largest value any
/// server can hold (`--value-bytes-max` is at most 1 GiB) plus
/// [`map::MESSAGE_FRAMING_BYTES`], so that this client never refuses a value a server allows.
/// Nothing is reserved for it up front: a message's buffer grows as its bytes arrive (see
/// [`Deframer`]). Lower it with [`GrpcConnection::set_receive_message_bytes_max`].
pub const RECEIVE_MESSAGE_BYTES_MAX_DEFAULT: usize =
    veddb_wire::limits::VALUE_BYTES_MAX_UPPER + map::MESSAGE_FRAMING_BYTES;

/// The error for a response message longer than this client takes (`limit`), or for another
/// broken response stream.
fn response_frame_error(error: FrameError) -> ClientError {
    match error {
        FrameError::TooLarge { length, limit } => {
            ClientError::Status(Status::resource_exhausted(format!(
                "a response message of {length} bytes is over this client's limit of {limit} \
                 bytes (GrpcConnection::set_receive_message_bytes_max)"
            )))
        }
        other => ClientError::Status(other.status()),
    }
}

/// One HTTP/2 connection. Cheap to clone; calls from several tasks run concurrently as
/// separate streams.
#[derive(Clone)]
pub struct GrpcConnection {
    send: SendRequest<Bytes>,
    /// The `:authority` of every request (the server's address), parsed once.
    authority: http::uri::Authority,
    /// Longest response message taken; see [`RECEIVE_MESSAGE_BYTES_MAX_DEFAULT`].
    receive_message_bytes_max: usize,
}

impl GrpcConnection {
    /// Connects and completes the HTTP/2 handshake. Must be called inside a compio runtime,
    /// which then drives the connection.
    pub async fn connect(address: SocketAddr) -> Result<GrpcConnection, ClientError> {
        let stream = TcpStream::connect(address).await.map_err(ClientError::Io)?;
        let _ = stream.set_nodelay(true);
        let io = TcpIo::new(stream);
        let (send, connection) = h2::client::Builder::new()
            .initial_window_size(1 << 20)
            .initial_connection_window_size(8 << 20)
            .max_frame_size(1 << 16)
            .handshake::<_, Bytes>(io)
            .await
            .map_err(ClientError::from_h2)?;
        compio::runtime::spawn(async move {
            let _ = connection.await;
        })
        .detach();
        Ok(GrpcConnection {
            send,
            authority: http::uri::Authority::try_from(address.to_string())
                .map_err(|error| ClientError::Protocol(error.to_string()))?,
            receive_message_bytes_max: RECEIVE_MESSAGE_BYTES_MAX_DEFAULT,
        })
    }

    /// The longest response message this connection takes (default
    /// [`RECEIVE_MESSAGE_BYTES_MAX_DEFAULT`]).
    pub fn receive_message_bytes_max(&self) -> usize {
        self.receive_message_bytes_max
    }

    /// Sets the longest response message this connection (this clone of it) takes, for calls
    /// started from now on: a longer answer fails the call with RESOURCE_EXHAUSTED naming this
    /// limit, and the connection goes on. Lower it to bound what one answer may make this client
    /// hold; a value over `--value-bytes-max` of the server needs no more than the default.
    pub fn set_receive_message_bytes_max(&mut self, bytes: usize) {
        self.receive_message_bytes_max = bytes;
    }

    async fn start(
        &self,
        path: &str,
    ) -> Result<(h2::client::ResponseFuture, SendStream<Bytes>), ClientError> {
        let mut send = self
            .send
            .clone()
            .ready()
            .await
            .map_err(ClientError::from_h2)?;
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(http::uri::Scheme::HTTP);
        uri.authority = Some(self.authority.clone());
        uri.path_and_query = Some(
            http::uri::PathAndQuery::try_from(path)
                .map_err(|error| ClientError::Protocol(error.to_string()))?,
        );
        let uri =
            http::Uri::from_parts(uri).map_err(|error| ClientError::Protocol(error.to_string()))?;
        let request = http::Request::builder()
            .method("POST")
            .uri(uri)
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .header("te", "trailers")
            .body(())
            .map_err(|error| ClientError::Protocol(error.to_string()))?;
        send.send_request(request, false)
            .map_err(ClientError::from_h2)
    }

    /// Sends messages already framed (prefixes included), optionally ending the request.
    async fn send_framed(
        stream: &mut SendStream<Bytes>,
        framed: Vec<u8>,
        end: bool,
    ) -> Result<(), ClientError> {
        let mut data = Bytes::from(framed);
        if end && data.len() <= SMALL_REQUEST_BYTES {
            // A small request goes whole, ending the stream in the same DATA frame, without
            // reserving send window first: h2 keeps it until the server's window allows.
            return stream.send_data(data, true).map_err(ClientError::from_h2);
        }
        while !data.is_empty() {
            stream.reserve_capacity(data.len());
            match poll_fn(|cx| stream.poll_capacity(cx)).await {
                None => return Err(ClientError::Protocol("the server closed the stream".into())),
                Some(Err(error)) => return Err(ClientError::from_h2(error)),
                Some(Ok(0)) => {}
                Some(Ok(n)) => {
                    let chunk = data.split_to(n.min(data.len()));
                    let last = end && data.is_empty();
                    stream
                        .send_data(chunk, last)
                        .map_err(ClientError::from_h2)?;
                    if last {
                        return Ok(());
                    }
                }
            }
        }
        if end {
            stream
                .send_data(Bytes::new(), true)
                .map_err(ClientError::from_h2)?;
        }
        Ok(())
    }

    /// Runs one call with `messages` as its request stream; returns the response messages.
    async fn call(&self, method: Method, messages: &[Vec<u8>]) -> Result<Vec<Bytes>, ClientError> {
        self.call_path(method.path(), messages).await
    }

    /// Runs one unary call of any method, by its path (`/package.Service/Method`): sends
    /// `message` (an encoded protobuf request) and returns the single encoded response
    /// message. A status other than OK is [`ClientError::Status`]. For talking to servers
    /// other than VedDB (the benchmark's tonic peer) and for methods this client does not wrap.
    pub async fn unary_raw(&self, path: &str, message: Vec<u8>) -> Result<Bytes, ClientError> {
        let mut answers = self.call_path(path, &[message]).await?;
        match (answers.pop(), answers.is_empty()) {
            (Some(answer), true) => Ok(answer),
            (None, _) => Err(ClientError::Protocol("no response message".into())),
            (Some(_), false) => Err(ClientError::Protocol(
                "more than one response message to a unary call".into(),
            )),
        }
    }

    async fn call_path(&self, path: &str, messages: &[Vec<u8>]) -> Result<Vec<Bytes>, ClientError> {
        self.call_framed(path, framed(messages)).await
    }

    /// Runs one call whose whole request stream is `framed` (messages with their prefixes).
    async fn call_framed(&self, path: &str, framed: Vec<u8>) -> Result<Vec<Bytes>, ClientError> {
        let (response, mut stream) = self.start(path).await?;
        let sent = Self::send_framed(&mut stream, framed, true).await;
        let received = self.receive_response(response).await;
        match (sent, received) {
            // The server may end the call before reading the whole request (a message over its
            // limit): its status says why, better than the failed send.
            (_, Err(ClientError::Status(status))) => Err(ClientError::Status(status)),
            (Err(error), _) => Err(error),
            (Ok(()), received) => received,
        }
    }

    /// The response messages of a call, or its status.
    async fn receive_response(
        &self,
        response: h2::client::ResponseFuture,
    ) -> Result<Vec<Bytes>, ClientError> {
        let response = response.await.map_err(ClientError::from_h2)?;
        let (parts, mut body) = response.into_parts();
        check_http(&parts)?;
        if let Some(status) = status_of(&parts.headers) {
            // Trailers-only response.
            return if status.code == Code::Ok {
                Ok(Vec::new())
            } else {
                Err(ClientError::Status(status))
            };
        }
        let mut deframer = Deframer::new(self.receive_message_bytes_max);
        let mut out = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.map_err(ClientError::from_h2)?;
            let _ = body.flow_control().release_capacity(chunk.len());
            // Copied into a buffer per message: answers handed to the application must not
            // keep h2's whole read buffer alive (values are slices of their message).
            deframer.push(&chunk);
            while let Some(message) = deframer.next().map_err(response_frame_error)? {
                out.push(message);
            }
        }
        let trailers = body
            .trailers()
            .await
            .map_err(ClientError::from_h2)?
            .unwrap_or_default();
        match status_of(&trailers) {
            Some(status) if status.code == Code::Ok => Ok(out),
            Some(status) => Err(ClientError::Status(status)),
            None => Err(ClientError::Protocol(
                "the response has no grpc-status".into(),
            )),
        }
    }

    /// Runs one request (through a one-message `Batch` call; INFO and SNAPSHOT through their
    /// own RPCs).
    pub async fn execute(&self, request: Request) -> Result<Response, ClientError> {
        let mut answers = self.execute_many(vec![request]).await?;
        answers
            .pop()
            .unwrap_or_else(|| Err(ClientError::Protocol("no answer".into())))
    }

    /// Runs several requests pipelined on one `Batch` stream; answers come back in order,
    /// each with its own result. INFO or SNAPSHOT alone runs through its own RPC; among other
    /// requests they are refused (UNIMPLEMENTED: not a batch operation), and the whole batch
    /// with them. A request the engine would refuse that the wire cannot carry (a SET or CAS
    /// with a TTL of 0 ms: [`client_map::refusal_before_sending`]) is not sent: its result is
    /// the engine's error, as over shared memory, and the others run.
    pub async fn execute_many(
        &self,
        requests: Vec<Request>,
    ) -> Result<Vec<Result<Response, ClientError>>, ClientError> {
        match requests.as_slice() {
            [Request::Info] => return Ok(vec![self.info().await.map(Response::Info)]),
            [Request::Snapshot] => return Ok(vec![self.snapshot().await.map(|()| Response::Ok)]),
            _ => {}
        }
        let mut framed = Vec::new();
        let mut refusals = Vec::with_capacity(requests.len());
        for request in &requests {
            let refusal = client_map::refusal_before_sending(request);
            if refusal.is_none() {
                client_map::encode_batch_request_framed(request, &mut framed)
                    .map_err(ClientError::Status)?;
            }
            refusals.push(refusal);
        }
        let sent = refusals.iter().filter(|refusal| refusal.is_none()).count();
        let answers = if sent == 0 {
            Vec::new()
        } else {
            self.call_framed(Method::Batch.path(), framed).await?
        };
        if answers.len() != sent {
            return Err(ClientError::Protocol(format!(
                "{} answers to {sent} requests",
                answers.len(),
            )));
        }
        let mut answers = answers.into_iter();
        Ok(requests
            .iter()
            .zip(refusals)
            .map(|(request, refusal)| match refusal {
                Some(error) => Err(ClientError::from(error)),
                // One answer per request sent (counted above), in order.
                None => match answers.next() {
                    Some(answer) => client_map::decode_batch_response(request, answer)
                        .map_err(ClientError::Status),
                    None => Err(ClientError::Protocol("no answer".into())),
                },
            })
            .collect())
    }

    /// Statistics of every shard.
    pub async fn info(&self) -> Result<Info, ClientError> {
        let answers = self.call(Method::Info, &[Vec::new()]).await?;
        let answer = answers
            .into_iter()
            .next()
            .ok_or_else(|| ClientError::Protocol("no answer".into()))?;
        client_map::decode_info(answer).map_err(ClientError::Status)
    }

    /// Writes a snapshot of every shard to the server's data directory; returns once all of
    /// them are durable. A server without `--data-dir` answers FAILED_PRECONDITION
    /// ([`veddb_wire::Error::PersistenceOff`]); a disk error is INTERNAL; UNAVAILABLE means
    /// busy (or stopping): nothing was changed, retry later.
    pub async fn snapshot(&self) -> Result<(), ClientError> {
        let answers = self
            .call(Method::Snapshot, &[client_map::encode_snapshot_request()])
            .await?;
        let answer = answers
            .into_iter()
            .next()
            .ok_or_else(|| ClientError::Protocol("no answer".into()))?;
        client_map::decode_snapshot(answer)
            .map(|_| ())
            .map_err(ClientError::Status)
    }

    /// Subscribes to `topic`; the subscription lasts until the [`Subscription`] is dropped.
    pub async fn subscribe(&self, topic: Bytes) -> Result<Subscription, ClientError> {
        let (response, mut stream) = self.start(Method::Subscribe.path()).await?;
        let request = framed(&[client_map::encode_subscribe_request(topic)]);
        let sent = Self::send_framed(&mut stream, request, true).await;
        let response = match (sent, response.await.map_err(ClientError::from_h2)) {
            (_, Ok(response)) => response,
            // The server ended the call before reading the request (over its message limit):
            // its answer says why, better than the failed send.
            (Err(error), Err(_)) | (Ok(()), Err(error)) => return Err(error),
        };
        let (parts, body) = response.into_parts();
        check_http(&parts)?;
        if let Some(status) = status_of(&parts.headers) {
            return Err(ClientError::Status(status));
        }
        let mut subscription = Subscription {
            body,
            deframer: Deframer::new(self.receive_message_bytes_max),
            _stream: stream,
        };
        match subscription.next().await {
            Some(Ok(SubscribeEvent::Subscribed)) => Ok(subscription),
            Some(Ok(other)) => Err(ClientError::Protocol(format!(
                "expected the subscription confirmation, got {other:?}"
            ))),
            Some(Err(error)) => Err(error),
            None => Err(ClientError::Protocol(
                "the subscription ended at once".into(),
            )),
        }
    }
}

/// A live subscription. Dropping it cancels the stream (the server unsubscribes).
pub struct Subscription {
    body: RecvStream,
    deframer: Deframer,
    _stream: SendStream<Bytes>,
}

impl Subscription {
    /// The next event; `None` when the server ended the stream normally.
    pub async fn next(&mut self) -> Option<Result<SubscribeEvent, ClientError>> {
        loop {
            match self.deframer.next() {
                Ok(Some(message)) => {
                    return Some(
                        client_map::decode_subscribe_event(message).map_err(ClientError::Status),
                    )
                }
                Ok(None) => {}
                Err(error) => return Some(Err(response_frame_error(error))),
            }
            match self.body.data().await {
                Some(Ok(chunk)) => {
                    let _ = self.body.flow_control().release_capacity(chunk.len());
                    self.deframer.push(&chunk);
                }
                Some(Err(error)) => return Some(Err(ClientError::from_h2(error))),
                None => {
                    let trailers = match self.body.trailers().await {
                        Ok(trailers) => trailers.unwrap_or_default(),
                        Err(error) => return Some(Err(ClientError::from_h2(error))),
                    };
                    return match status_of(&trailers) {
                        Some(status) if status.code != Code::Ok => {
                            Some(Err(ClientError::Status(status)))
                        }
                        _ => None,
                    };
                }
            }
        }
    }
}

fn check_http(parts: &http::response::Parts) -> Result<(), ClientError> {
    if parts.status != http::StatusCode::OK {
        return Err(ClientError::Protocol(format!(
            "HTTP status {}",
            parts.status
        )));
    }
    Ok(())
}

fn status_of(headers: &HeaderMap<HeaderValue>) -> Option<Status> {
    let code = headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .parse::<i32>()
        .ok()?;
    let message = headers
        .get("grpc-message")
        .map(|value| map::percent_decode_message(value.as_bytes()))
        .unwrap_or_default();
    Some(Status::new(
        Code::from_i32(code).unwrap_or(Code::Unknown),
        message,
    ))
}

/// A [`GrpcConnection`] with a compio runtime of its own, which runs each call to completion:
/// the blocking gRPC [`Transport`]. The connection makes progress only inside a call.
pub struct GrpcTransport {
    runtime: compio::runtime::Runtime,
    connection: GrpcConnection,
}

impl GrpcTransport {
    /// Connects to a server's gRPC port (`host:port`).
    pub fn connect(address: &str) -> Result<GrpcTransport, ClientError> {
        let address: SocketAddr = address
            .to_socket_addrs()
            .map_err(ClientError::Io)?
            .next()
            .ok_or_else(|| ClientError::Protocol(format!("{address} resolves to no address")))?;
        let runtime = compio::runtime::Runtime::new().map_err(ClientError::Io)?;
        let connection = runtime.block_on(GrpcConnection::connect(address))?;
        Ok(GrpcTransport {
            runtime,
            connection,
        })
    }

    /// The async connection underneath (its calls run only inside [`GrpcTransport::block_on`]).
    pub fn connection(&self) -> &GrpcConnection {
        &self.connection
    }

    /// Sets the longest response message this transport takes
    /// ([`GrpcConnection::set_receive_message_bytes_max`]); then hand it to
    /// [`crate::Client::from_transport`].
    pub fn set_receive_message_bytes_max(&mut self, bytes: usize) {
        self.connection.set_receive_message_bytes_max(bytes);
    }

    /// Runs `future` on this transport's runtime, which also drives the connection meanwhile.
    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }
}

impl Transport for GrpcTransport {
    fn execute(&self, request: Request) -> Result<Response, ClientError> {
        self.block_on(self.connection.execute(request))
    }

    fn execute_many(
        &self,
        requests: Vec<Request>,
    ) -> Result<Vec<Result<Response, ClientError>>, ClientError> {
        self.block_on(self.connection.execute_many(requests))
    }

    fn subscribe(&self, topic: Bytes) -> Result<Box<dyn TransportSubscription + '_>, ClientError> {
        let subscription = self.block_on(self.connection.subscribe(topic))?;
        Ok(Box::new(BlockingSubscription {
            transport: self,
            subscription: Some(subscription),
        }))
    }
}

/// A [`Subscription`] read by blocking calls on its [`GrpcTransport`]'s runtime.
struct BlockingSubscription<'a> {
    transport: &'a GrpcTransport,
    /// `None` once the server ended the stream.
    subscription: Option<Subscription>,
}

impl TransportSubscription for BlockingSubscription<'_> {
    fn receive(&mut self, timeout: Duration) -> Result<Received, ClientError> {
        let Some(subscription) = self.subscription.as_mut() else {
            return Ok(Received::Ended);
        };
        // `Subscription::next` may be abandoned at its awaits (h2 keeps what was not read; the
        // deframer holds only whole chunks), so a timeout loses nothing.
        let event = match Instant::now().checked_add(timeout) {
            // Too far away to be a deadline: no timeout.
            None => Some(self.transport.block_on(subscription.next())),
            Some(_) => self.transport.block_on(async {
                let next = pin!(subscription.next());
                let sleep = pin!(compio::time::sleep(timeout));
                // `select` polls `next` first: a message already here wins over a zero timeout.
                match futures_util::future::select(next, sleep).await {
                    futures_util::future::Either::Left((event, _)) => Some(event),
                    futures_util::future::Either::Right(_) => None,
                }
            }),
        };
        match event {
            None => Ok(Received::Timeout),
            Some(None) => {
                self.subscription = None;
                Ok(Received::Ended)
            }
            Some(Some(Ok(SubscribeEvent::Message { message, dropped }))) => {
                Ok(Received::Message { message, dropped })
            }
            Some(Some(Ok(SubscribeEvent::Subscribed))) => Err(ClientError::Protocol(
                "a second subscription confirmation on one stream".into(),
            )),
            Some(Some(Err(error))) => Err(error),
        }
    }
}

impl Drop for BlockingSubscription<'_> {
    /// Cancels the stream (the server unsubscribes). The connection only runs inside a call, so
    /// make one (a ping, whose frames follow the cancellation) to get the cancellation to the
    /// server now.
    fn drop(&mut self) {
        if let Some(subscription) = self.subscription.take() {
            drop(subscription);
            let _ = self
                .transport
                .block_on(self.transport.connection.execute(Request::Ping));
        }
    }
}
