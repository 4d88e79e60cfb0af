//! Listener, connections and streams of the gRPC frontend.

use std::cell::Cell;
use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::seam::{self, Started, Subscriptions};

use bytes::{Bytes, BytesMut};
use compio::net::{TcpListener, TcpSocket, TcpStream};
use futures_util::future::{select, Either};
use futures_util::FutureExt;
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};
use http::{HeaderMap, HeaderName, HeaderValue, Method as HttpMethod, StatusCode};
use tokio_util::compat::{FuturesAsyncReadCompatExt, TokioAsyncReadCompatExt};
use veddb_engine::CoreContext;
use veddb_h2io::TcpIo;
use veddb_wire::grpc::{self as map, Deframer, Method};
use veddb_wire::{Code, Status};
use veddb_wire::{Request, Response};

use super::GrpcConfig;

/// Messages one FETCH of a Subscribe stream takes at most.
const SUBSCRIBE_FETCH_MESSAGES_MAX: u32 = 256;
/// How long one FETCH of a Subscribe stream waits at the topic's core before asking again.
const SUBSCRIBE_FETCH_WAIT_MS: u64 = 10_000;
/// How often a health Watch looks at the serving state.
const HEALTH_WATCH_INTERVAL: Duration = Duration::from_millis(500);

struct Shared {
    config: GrpcConfig,
    shutting_down: Arc<AtomicBool>,
    connections: Cell<usize>,
    /// True while a connection runs the calls of one read in place, having refreshed the
    /// core's clock just before: those calls need not read the clock again.
    clock_fresh: Cell<bool>,
}

/// Binds this core's listener (SO_REUSEPORT), reports the address, then accepts forever.
pub(super) async fn listen(
    context: CoreContext,
    address: SocketAddr,
    config: GrpcConfig,
    shutting_down: Arc<AtomicBool>,
    report: SyncSender<io::Result<SocketAddr>>,
) {
    let listener = match bind(address).await {
        Ok(listener) => listener,
        Err(error) => {
            let _ = report.send(Err(io::Error::new(
                error.kind(),
                format!("cannot listen on {address}: {error}"),
            )));
            return;
        }
    };
    let local = listener.local_addr().unwrap_or(address);
    let _ = report.send(Ok(local));
    tracing::debug!(core = context.index(), %local, "gRPC listening");
    let shared = Rc::new(Shared {
        config,
        shutting_down,
        connections: Cell::new(0),
        clock_fresh: Cell::new(false),
    });
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: log, breathe, go on.
                tracing::warn!(core = context.index(), %error, "accept failed");
                compio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if shared.connections.get() >= shared.config.connections_per_core_max {
            tracing::warn!(%peer, limit = shared.config.connections_per_core_max, "too many connections; closing");
            drop(stream);
            continue;
        }
        shared.connections.set(shared.connections.get() + 1);
        let context = context.clone();
        let shared = shared.clone();
        compio::runtime::spawn(async move {
            if let Err(error) = serve_connection(context, stream, &shared).await {
                tracing::debug!(%peer, %error, "gRPC connection ended");
            }
            shared.connections.set(shared.connections.get() - 1);
        })
        .detach();
    }
}

async fn bind(address: SocketAddr) -> io::Result<TcpListener> {
    let socket = if address.is_ipv4() {
        TcpSocket::new_v4().await?
    } else {
        TcpSocket::new_v6().await?
    };
    socket.set_reuseaddr(true)?;
    // Every core binds the port: SO_REUSEPORT spreads connections over them. (Windows has no
    // SO_REUSEPORT; there SO_REUSEADDR lets every core bind, without the spreading.)
    #[cfg(unix)]
    socket.set_reuseport(true)?;
    socket.bind(address).await?;
    socket.listen(1024).await
}

async fn serve_connection(
    context: CoreContext,
    stream: TcpStream,
    shared: &Rc<Shared>,
) -> Result<(), h2::Error> {
    let _ = stream.set_nodelay(true);
    let io = TcpIo::new(stream);
    match shared.config.tls.clone() {
        None => serve_h2(context, io, shared).await,
        Some(tls) => {
            let accept = futures_rustls::TlsAcceptor::from(tls).accept(io.compat());
            match compio::time::timeout(shared.config.handshake_timeout, accept).await {
                Ok(Ok(tls_stream)) => serve_h2(context, tls_stream.compat(), shared).await,
                Ok(Err(error)) => {
                    tracing::debug!(%error, "TLS handshake failed");
                    Ok(())
                }
                Err(_) => Ok(()),
            }
        }
    }
}

async fn serve_h2<IO>(context: CoreContext, io: IO, shared: &Rc<Shared>) -> Result<(), h2::Error>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + 'static,
{
    let config = &shared.config;
    let builder = h2_builder(config);
    let handshake =
        compio::time::timeout(config.handshake_timeout, builder.handshake::<_, Bytes>(io)).await;
    let mut connection = match handshake {
        Ok(Ok(connection)) => connection,
        Ok(Err(error)) => return Err(error),
        Err(_) => return Ok(()),
    };
    let ping_pong = connection.ping_pong();
    let keepalive = async {
        let Some(mut ping_pong) = ping_pong else {
            return std::future::pending::<()>().await;
        };
        loop {
            compio::time::sleep(config.keepalive_interval).await;
            match compio::time::timeout(
                config.keepalive_timeout,
                ping_pong.ping(h2::Ping::opaque()),
            )
            .await
            {
                Ok(Ok(_)) => {}
                _ => {
                    tracing::debug!("gRPC client did not answer a keepalive ping; closing");
                    return;
                }
            }
        }
    };
    let accept = async move {
        let mut accepted = Vec::new();
        loop {
            // Every stream whose request h2 has read by now, then the calls together: their
            // answers are encoded and written in one go when the connection is polled next.
            let open = poll_fn(|cx| accept_ready(&mut connection, cx, &mut accepted)).await?;
            // One clock read for the calls of this read (nothing below yields). The guard
            // clears the mark however the loop ends, a panicking call included.
            context.refresh_clock();
            let fresh = ClockFresh::mark(&shared.clock_fresh);
            for (request, respond) in accepted.drain(..) {
                // A call runs here first: most unary calls finish in this one poll, with no
                // task of their own. One that waits (for another core, the log, more request
                // messages, a subscription) goes on in its own task. Boxed so that it can move
                // there after this poll.
                let mut call = Box::pin(handle_stream(
                    context.clone(),
                    request,
                    respond,
                    shared.clone(),
                ));
                if futures_util::poll!(call.as_mut()).is_pending() {
                    compio::runtime::spawn(call).detach();
                }
            }
            drop(fresh);
            if !open {
                break;
            }
        }
        Ok::<(), h2::Error>(())
    };
    match select(pin!(accept), pin!(keepalive)).await {
        Either::Left((result, _)) => result,
        Either::Right(((), _)) => Ok(()),
    }
}

/// HTTP/2 settings: windows sized for pipelined calls, bounded headers, streams and resets.
fn h2_builder(config: &GrpcConfig) -> h2::server::Builder {
    let mut builder = h2::server::Builder::new();
    builder
        .initial_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(8 << 20)
        .max_frame_size(1 << 16)
        .max_concurrent_streams(config.streams_per_connection_max)
        .max_header_list_size(16 << 10)
        .max_send_buffer_size(1 << 20)
        .max_pending_accept_reset_streams(64)
        .max_local_error_reset_streams(Some(256))
        .max_concurrent_reset_streams(RESET_STREAMS_REMEMBERED_MAX)
        .reset_stream_duration(RESET_STREAM_REMEMBERED);
    builder
}

/// Initial HTTP/2 window of each stream: what a client may send on a call before the server
/// has read any of it.
const STREAM_WINDOW_BYTES: u32 = 1 << 20;

/// Streams this server ended early (a request over `--grpc-message-bytes-max`) that h2 keeps
/// in mind after their RST_STREAM(NO_ERROR), and for how long: DATA the client had already sent
/// on such a stream (up to its window) is then dropped quietly. A DATA frame for a stream h2
/// no longer remembers gets a STREAM_CLOSED reset that counts against
/// `max_local_error_reset_streams` (256 in a connection's life); with h2's default (50
/// streams), about 80 over-limit requests in one second, each with up to
/// [`STREAM_WINDOW_BYTES`] in flight, used it up and the connection was closed
/// (GOAWAY, "too_many_internal_resets"). Each remembered stream costs a few hundred bytes.
const RESET_STREAMS_REMEMBERED_MAX: usize = 1024;
const RESET_STREAM_REMEMBERED: Duration = Duration::from_secs(2);

/// Marks the core's clock as just refreshed while it lives (see `Shared::clock_fresh`).
struct ClockFresh<'a>(&'a Cell<bool>);

impl<'a> ClockFresh<'a> {
    fn mark(fresh: &'a Cell<bool>) -> ClockFresh<'a> {
        fresh.set(true);
        ClockFresh(fresh)
    }
}

impl Drop for ClockFresh<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

/// Moves every stream h2 can hand out now into `accepted`: Ready(Ok(true)) once at least one
/// was accepted and the connection is still open, Ready(Ok(false)) when the connection closed
/// (with any streams accepted before), Pending while nothing came in.
fn accept_ready(
    connection: &mut h2::server::Connection<
        impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
        Bytes,
    >,
    cx: &mut Context<'_>,
    accepted: &mut Vec<(http::Request<RecvStream>, SendResponse<Bytes>)>,
) -> Poll<Result<bool, h2::Error>> {
    loop {
        match connection.poll_accept(cx) {
            Poll::Ready(Some(Ok(stream))) => accepted.push(stream),
            Poll::Ready(Some(Err(error))) => return Poll::Ready(Err(error)),
            Poll::Ready(None) => return Poll::Ready(Ok(false)),
            Poll::Pending if accepted.is_empty() => return Poll::Pending,
            Poll::Pending => return Poll::Ready(Ok(true)),
        }
    }
}

const GRPC_ACCEPT_ENCODING: HeaderName = HeaderName::from_static("grpc-accept-encoding");
const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
/// `grpc-status` values of the 17 codes, by number (no integer formatting per call).
const STATUS_VALUES: [&str; 17] = [
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
];

fn grpc_headers() -> http::Response<()> {
    let mut response = http::Response::new(());
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    response
}

fn status_headers(headers: &mut HeaderMap, status: &Status) {
    let value = match STATUS_VALUES.get(status.code as usize) {
        Some(text) => HeaderValue::from_static(text),
        None => HeaderValue::from(status.code as i32),
    };
    headers.insert(GRPC_STATUS, value);
    if status.code == Code::Unimplemented {
        // What the client may use instead of a compression (or of anything) it tried.
        headers.insert(GRPC_ACCEPT_ENCODING, HeaderValue::from_static("identity"));
    }
    if !status.message.is_empty() {
        if let Ok(value) = HeaderValue::from_str(&map::percent_encode_message(&status.message)) {
            headers.insert(GRPC_MESSAGE, value);
        }
    }
}

/// An immediate error: one HEADERS frame carrying the status, ending the stream.
///
/// The client may still be sending its request (one over the message limit). If it is, h2
/// sends RST_STREAM(NO_ERROR) when the call's handles are dropped after this, *after* the
/// queued HEADERS (RFC 9113 §8.1: a complete response, then "stop sending, no error"), so the
/// client gets the status and stops sending. Never `send_reset` here: it would discard the
/// queued HEADERS and the client would see a bare reset.
fn trailers_only(respond: &mut SendResponse<Bytes>, status: &Status) {
    let mut response = grpc_headers();
    status_headers(response.headers_mut(), status);
    let _ = respond.send_response(response, true);
}

fn finish(stream: &mut SendStream<Bytes>, status: &Status) {
    let mut trailers = HeaderMap::new();
    status_headers(&mut trailers, status);
    let _ = stream.send_trailers(trailers);
}

/// Sends `data`, waiting for HTTP/2 send window as needed (a client that does not read stalls
/// only its own stream).
async fn send_all(stream: &mut SendStream<Bytes>, mut data: Bytes) -> Result<(), h2::Error> {
    while !data.is_empty() {
        stream.reserve_capacity(data.len());
        match poll_fn(|cx| stream.poll_capacity(cx)).await {
            None => return Err(h2::Error::from(h2::Reason::CANCEL)),
            Some(Err(error)) => return Err(error),
            Some(Ok(0)) => continue,
            Some(Ok(capacity)) => {
                let chunk = data.split_to(capacity.min(data.len()));
                stream.send_data(chunk, false)?;
            }
        }
    }
    Ok(())
}

/// Runs `future` until `deadline` (if any). `Err(())` when the deadline passed first.
///
/// Not an `async fn`: that would hold `future` twice (as its argument and as what it awaits),
/// and compio's timeout future (over 2 KiB) inline; this holds `future` once, and the timer only
/// when there is a deadline, boxed.
fn until<F: Future>(
    deadline: Option<Instant>,
    future: F,
) -> impl Future<Output = Result<F::Output, ()>> {
    match deadline {
        None => Either::Left(future.map(Ok as fn(F::Output) -> Result<F::Output, ()>)),
        Some(deadline) => Either::Right(
            Box::pin(compio::time::timeout_at(deadline, future))
                .map(|result| result.map_err(|_| ())),
        ),
    }
}

fn deadline_status() -> Status {
    Status::new(
        Code::DeadlineExceeded,
        "the deadline (grpc-timeout) expired",
    )
}

/// Reads the single request message of a unary or server-streaming call.
async fn read_one(body: &mut RecvStream, limit: usize) -> Result<Bytes, Option<Status>> {
    let mut deframer = Deframer::new(limit);
    let mut message = None;
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|_| None)?;
        let _ = body.flow_control().release_capacity(chunk.len());
        if message.is_none() && deframer.buffered() == 0 {
            if let Some(whole) = map::whole_message(&chunk, limit) {
                message = Some(whole);
                continue;
            }
        }
        deframer.push_bytes(&chunk);
        while let Some(next) = deframer.next().map_err(|e| Some(e.request_status()))? {
            if message.is_some() {
                return Err(Some(Status::new(
                    Code::Internal,
                    "more than one request message for a unary call",
                )));
            }
            message = Some(next);
        }
    }
    deframer.finish().map_err(|e| Some(e.request_status()))?;
    message.ok_or_else(|| Some(Status::new(Code::Internal, "no request message")))
}

/// One stream: its headers checked, then the call run by its method.
async fn handle_stream(
    context: CoreContext,
    request: http::Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    shared: Rc<Shared>,
) {
    let shared = &*shared;
    let (parts, body) = request.into_parts();
    let call = match check_call(&context, &parts, shared) {
        Ok(call) => call,
        Err(refusal) => return refusal.send(&mut respond),
    };
    let Call { method, deadline } = call;
    let limit = shared.config.message_bytes_max;
    match method {
        // Boxed: the streaming calls' futures are large, and inline they would make every
        // unary call's task as large as the largest of them.
        Method::Batch => Box::pin(batch(&context, body, respond, deadline, limit)).await,
        Method::Subscribe => Box::pin(subscribe(&context, body, respond, deadline, limit)).await,
        Method::HealthWatch => Box::pin(health_watch(body, respond, deadline, limit, shared)).await,
        Method::HealthCheck => health_check(body, respond, deadline, limit, shared).await,
        _ => {
            let clock_fresh = &shared.clock_fresh;
            unary(
                &context,
                method,
                body,
                respond,
                deadline,
                limit,
                clock_fresh,
            )
            .await
        }
    }
}

/// A call whose headers passed: what to run, and until when.
struct Call {
    method: Method,
    deadline: Option<Instant>,
}

/// Why a stream is refused before its call runs.
enum Refusal {
    /// An HTTP status (not a gRPC request at all), with a gRPC status when one helps.
    Http(StatusCode, Option<Status>),
    /// A trailers-only gRPC answer.
    Grpc(Status),
}

impl Refusal {
    fn send(self, respond: &mut SendResponse<Bytes>) {
        match self {
            Refusal::Http(code, status) => {
                let mut response = http::Response::new(());
                *response.status_mut() = code;
                if let Some(status) = status {
                    status_headers(response.headers_mut(), &status);
                }
                let _ = respond.send_response(response, true);
            }
            Refusal::Grpc(status) => trailers_only(respond, &status),
        }
    }
}

/// Checks a stream's request headers: POST, a gRPC content type, a known method, no
/// compression, a server not shutting down (health checks excepted); reads `grpc-timeout`.
fn check_call(
    context: &CoreContext,
    parts: &http::request::Parts,
    shared: &Shared,
) -> Result<Call, Refusal> {
    if parts.method != HttpMethod::POST {
        return Err(Refusal::Http(StatusCode::METHOD_NOT_ALLOWED, None));
    }
    // The three request headers a call looks at, in one pass (no hashing of names).
    let (mut content_type, mut encoding, mut timeout) = (None, None, None);
    for (name, value) in &parts.headers {
        match name.as_str() {
            "content-type" => content_type = content_type.or(Some(value)),
            "grpc-encoding" => encoding = encoding.or(Some(value)),
            "grpc-timeout" => timeout = timeout.or(Some(value)),
            _ => {}
        }
    }
    let content_type = content_type.and_then(|v| v.to_str().ok()).unwrap_or("");
    if !(content_type == "application/grpc"
        || content_type.starts_with("application/grpc+")
        || content_type.starts_with("application/grpc;"))
    {
        let status = Status::new(
            Code::Internal,
            format!("content-type {content_type:?} is not application/grpc"),
        );
        return Err(Refusal::Http(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Some(status),
        ));
    }
    let Some(method) = Method::from_path(parts.uri.path()) else {
        let message = format!("unknown method {}", parts.uri.path());
        return Err(Refusal::Grpc(Status::new(Code::Unimplemented, message)));
    };
    if let Some(encoding) = encoding.and_then(|v| v.to_str().ok()) {
        if encoding != "identity" {
            let message = format!("message encoding {encoding:?} is not supported; use identity");
            return Err(Refusal::Grpc(Status::new(Code::Unimplemented, message)));
        }
    }
    if shared.shutting_down.load(Ordering::Relaxed) && method != Method::HealthCheck {
        let status = Status::new(Code::Unavailable, "the server is shutting down");
        return Err(Refusal::Grpc(status));
    }
    let deadline = timeout
        .and_then(|v| v.to_str().ok())
        .and_then(map::grpc_timeout)
        .map(|timeout| context.monotonic() + timeout);
    Ok(Call { method, deadline })
}

/// `Health/Check`: SERVING unless the server is shutting down; unknown services NOT_FOUND.
async fn health_check(
    mut body: RecvStream,
    mut respond: SendResponse<Bytes>,
    deadline: Option<Instant>,
    limit: usize,
    shared: &Shared,
) {
    let message = match until(deadline, read_one(&mut body, limit)).await {
        Err(()) => return trailers_only(&mut respond, &deadline_status()),
        Ok(Err(None)) => return,
        Ok(Err(Some(error))) => return trailers_only(&mut respond, &error),
        Ok(Ok(message)) => message,
    };
    match map::decode_health(message) {
        Err(error) => trailers_only(&mut respond, &error),
        Ok(service) if !map::health_service_known(&service) => trailers_only(
            &mut respond,
            &Status::new(Code::NotFound, format!("unknown service {service:?}")),
        ),
        Ok(_) => {
            let serving = !shared.shutting_down.load(Ordering::Relaxed);
            respond_message(&mut respond, map::encode_health(serving), limit).await;
        }
    }
}

/// Sends one response message and OK trailers.
async fn respond_message(respond: &mut SendResponse<Bytes>, message: Vec<u8>, limit: usize) {
    if message.len() > limit {
        return trailers_only(respond, &map::response_too_large(message.len(), limit));
    }
    let mut framed = Vec::with_capacity(message.len() + 5);
    map::frame(&message, &mut framed);
    respond_framed(respond, framed).await;
}

/// Sends one response message, already framed (prefix included), and OK trailers.
async fn respond_framed(respond: &mut SendResponse<Bytes>, framed: Vec<u8>) {
    let Ok(mut stream) = respond.send_response(grpc_headers(), false) else {
        return;
    };
    if framed.len() <= SMALL_RESPONSE_BYTES {
        // A small answer is handed to h2 whole, without reserving send window first: h2 keeps
        // it until the client's window allows, and a stream holds at most this much.
        if stream.send_data(Bytes::from(framed), false).is_ok() {
            finish(&mut stream, &Status::ok());
        }
    } else if send_all(&mut stream, Bytes::from(framed)).await.is_ok() {
        finish(&mut stream, &Status::ok());
    }
}

/// Unary answers up to this size skip the send-window reservation (see `respond_framed`).
const SMALL_RESPONSE_BYTES: usize = 16 << 10;

async fn unary(
    context: &CoreContext,
    method: Method,
    mut body: RecvStream,
    mut respond: SendResponse<Bytes>,
    deadline: Option<Instant>,
    limit: usize,
    clock_fresh: &Cell<bool>,
) {
    let message = match until(deadline, read_one(&mut body, limit)).await {
        Err(()) => return trailers_only(&mut respond, &deadline_status()),
        Ok(Err(None)) => return, // the client went away
        Ok(Err(Some(error))) => return trailers_only(&mut respond, &error),
        Ok(Ok(message)) => message,
    };
    let request = match map::decode_unary(method, message) {
        // The message may be a slice of the received frame: what the engine keeps gets its
        // own buffer.
        Ok(mut request) => {
            request.detach_kept();
            request
        }
        Err(error) => return trailers_only(&mut respond, &error),
    };
    let key = map::request_key(&request);
    // At once when this core can answer; else a boxed future (the engine's is large, and
    // inline it would weigh on every call's task).
    if !clock_fresh.get() {
        context.refresh_clock();
    }
    let mut request = Some(request);
    let started = poll_fn(|cx| {
        let request = request.take().expect("polled once: Ready at once");
        Poll::Ready(seam::start(context, request, cx))
    })
    .await;
    let response = match started {
        Started::Answered(response) => response,
        Started::Waiting(future) => match until(deadline, future).await {
            Ok(response) => response,
            Err(()) => return trailers_only(&mut respond, &deadline_status()),
        },
    };
    match map::encode_unary_framed(method, &key, response, limit) {
        Ok(framed) => respond_framed(&mut respond, framed).await,
        Err(error) => trailers_only(&mut respond, &error),
    }
}

/// `Batch`: requests in, answers out, in order. The complete messages of one received chunk
/// are answered together, in one write: those this core can answer at once run in place, in
/// order, and are encoded straight into the output buffer; the others (forwarded to another
/// core, scattered, or held for the log) become futures, polled once in their turn and then
/// together, and every answer after the first of them waits for it (answers stay in order).
async fn batch(
    context: &CoreContext,
    mut body: RecvStream,
    mut respond: SendResponse<Bytes>,
    deadline: Option<Instant>,
    limit: usize,
) {
    let Ok(mut stream) = respond.send_response(grpc_headers(), false) else {
        return;
    };
    let mut deframer = Deframer::new(limit);
    let mut out = BytesMut::new();
    let mut waiting: Vec<Answer<'_>> = Vec::new();
    let mut failed = None;
    loop {
        let chunk = match until(deadline, body.data()).await {
            Err(()) => return finish(&mut stream, &deadline_status()),
            Ok(None) => break,
            Ok(Some(Err(_))) => return, // reset by the client
            Ok(Some(Ok(chunk))) => chunk,
        };
        let _ = body.flow_control().release_capacity(chunk.len());
        deframer.push_bytes(&chunk);
        drop(chunk);
        // Run (or start) every complete message, in order, at the clock of their arrival.
        context.refresh_clock();
        poll_fn(|cx| {
            loop {
                match deframer.next() {
                    Ok(Some(message)) => {
                        start_batch_op(context, message, limit, &mut out, &mut waiting, cx)
                    }
                    Ok(None) => break,
                    Err(error) => {
                        failed = Some(error);
                        break;
                    }
                }
            }
            Poll::Ready(())
        })
        .await;
        if !waiting.is_empty() {
            let all = poll_fn(|cx| poll_answers(&mut waiting, cx));
            if until(deadline, all).await.is_err() {
                return finish(&mut stream, &deadline_status());
            }
            encode_answers(&mut waiting, limit, &mut out);
        }
        if !out.is_empty() && send_all(&mut stream, out.split().freeze()).await.is_err() {
            return;
        }
        if let Some(error) = failed {
            // Trailers now; the client may still be sending (see `trailers_only`).
            return finish(&mut stream, &error.request_status());
        }
    }
    match deframer.finish() {
        Ok(()) => finish(&mut stream, &Status::ok()),
        Err(error) => finish(&mut stream, &error.request_status()),
    }
}

/// Polls every answer still waiting; Ready once none is.
fn poll_answers(waiting: &mut [Answer<'_>], cx: &mut Context<'_>) -> Poll<()> {
    let mut done = true;
    for answer in waiting.iter_mut() {
        if let Answer::Waiting {
            future,
            method,
            key,
        } = answer
        {
            match future.as_mut().poll(cx) {
                Poll::Ready(response) => {
                    *answer = Answer::Ready {
                        method: *method,
                        key: std::mem::take(key),
                        response,
                    }
                }
                Poll::Pending => done = false,
            }
        }
    }
    if done {
        Poll::Ready(())
    } else {
        Poll::Pending
    }
}

/// Encodes the completed answers, in order, into `out` (each over `limit` as its
/// RESOURCE_EXHAUSTED status).
fn encode_answers(waiting: &mut Vec<Answer<'_>>, limit: usize, out: &mut BytesMut) {
    for answer in waiting.drain(..) {
        match answer {
            Answer::Ready {
                method,
                key,
                response,
            } => map::encode_batch_framed(method, &key, response, limit, out),
            Answer::Error(error) => map::encode_batch_error_framed(&error, out),
            Answer::Waiting { .. } => unreachable!("every waiting answer completed"),
        }
    }
}

/// A `Batch` answer that could not be encoded at once: it waits for an earlier one, or for
/// its own future.
enum Answer<'a> {
    Waiting {
        method: Method,
        key: Bytes,
        future: Pin<Box<dyn Future<Output = Response> + 'a>>,
    },
    Ready {
        method: Method,
        key: Bytes,
        response: Response,
    },
    Error(Status),
}

/// Decodes one `BatchRequest` and runs it: answered at once into `out` while nothing waits
/// before it, else queued in `waiting` (a future is polled once here, so that requests start
/// in the order they came, as they would in sequence).
fn start_batch_op<'a>(
    context: &'a CoreContext,
    message: Bytes,
    limit: usize,
    out: &mut BytesMut,
    waiting: &mut Vec<Answer<'a>>,
    cx: &mut Context<'_>,
) {
    let (method, request) = match map::decode_batch(message) {
        // The message is a slice of the received frame: what the engine keeps gets its own
        // buffer.
        Ok((method, mut request)) => {
            request.detach_kept();
            (method, request)
        }
        Err(error) => {
            if waiting.is_empty() {
                map::encode_batch_error_framed(&error, out);
            } else {
                waiting.push(Answer::Error(error));
            }
            return;
        }
    };
    let key = map::request_key(&request);
    let response = match seam::start(context, request, cx) {
        Started::Answered(response) => response,
        Started::Waiting(future) => {
            waiting.push(Answer::Waiting {
                method,
                key,
                future,
            });
            return;
        }
    };
    if waiting.is_empty() {
        map::encode_batch_framed(method, &key, response, limit, out);
    } else {
        waiting.push(Answer::Ready {
            method,
            key,
            response,
        });
    }
}

/// `Subscribe`: a subscription that lives as long as the stream, delivered by long-polling
/// FETCHes on the topic's core; cancelled streams unsubscribe.
async fn subscribe(
    context: &CoreContext,
    mut body: RecvStream,
    mut respond: SendResponse<Bytes>,
    deadline: Option<Instant>,
    limit: usize,
) {
    let message = match until(deadline, read_one(&mut body, limit)).await {
        Err(()) => return trailers_only(&mut respond, &deadline_status()),
        Ok(Err(None)) => return,
        Ok(Err(Some(error))) => return trailers_only(&mut respond, &error),
        Ok(Ok(message)) => message,
    };
    let topic = match map::decode_subscribe(message) {
        Ok(topic) => topic,
        Err(error) => return trailers_only(&mut respond, &error),
    };
    let mut subscribe = Request::Subscribe { topic };
    subscribe.detach_kept();
    // Whatever ends the stream (the client, the deadline, a dropped connection, which drops
    // this task), the subscription goes with it.
    let mut held = Subscriptions::new(context);
    let answer = context.execute(subscribe).await;
    held.note(&answer);
    let subscriber = match answer {
        Response::Subscribed { subscriber } => subscriber,
        Response::Error(error) => return trailers_only(&mut respond, &error.status()),
        other => {
            return trailers_only(
                &mut respond,
                &Status::new(Code::Internal, format!("unexpected answer {other:?}")),
            )
        }
    };
    let end = deliver(context, subscriber, respond, deadline, limit).await;
    held.close();
    if let Some((mut stream, status)) = end {
        finish(&mut stream, &status);
    }
}

/// Sends the subscription's messages until the client cancels (`None`) or the stream must end
/// with a status.
///
/// Each message carries the count of messages dropped just before it: those the queue dropped
/// (a FETCH's `dropped`) and those this stream could not send (over the gRPC message limit).
/// A count with no message to go with it waits for the next message sent, across FETCHes, as a
/// shared-memory subscriber is told it; it is never sent alone, since a message with only a
/// count would read as a published empty message.
async fn deliver(
    context: &CoreContext,
    subscriber: veddb_wire::SubscriberId,
    mut respond: SendResponse<Bytes>,
    deadline: Option<Instant>,
    limit: usize,
) -> Option<(SendStream<Bytes>, Status)> {
    let mut stream = respond.send_response(grpc_headers(), false).ok()?;
    let mut framed = Vec::new();
    map::frame(&map::encode_subscribed(), &mut framed);
    send_all(&mut stream, Bytes::from(framed)).await.ok()?;
    let mut backoff = Duration::ZERO;
    // Dropped and not yet told to the subscriber.
    let mut unreported: u64 = 0;
    loop {
        if !backoff.is_zero() {
            compio::time::sleep(backoff).await;
        }
        let asked = context.monotonic();
        let fetch = context.execute(Request::Fetch {
            subscriber,
            max: SUBSCRIBE_FETCH_MESSAGES_MAX,
            wait_ms: SUBSCRIBE_FETCH_WAIT_MS,
        });
        let reset = poll_fn(|cx| stream.poll_reset(cx));
        let response = match until(deadline, select(pin!(fetch), pin!(reset))).await {
            Err(()) => return Some((stream, deadline_status())),
            Ok(Either::Right(_)) => return None, // RST_STREAM from the client
            Ok(Either::Left((response, _))) => response,
        };
        match response {
            Response::Messages { messages, dropped } => {
                if messages.is_empty() && dropped == 0 {
                    // Answered at once with nothing (the long-poll cap was reached): back off a
                    // little instead of spinning; a real wait resets the back-off.
                    backoff = if context.monotonic().duration_since(asked)
                        < Duration::from_millis(SUBSCRIBE_FETCH_WAIT_MS / 2)
                    {
                        (backoff * 2).clamp(Duration::from_millis(1), Duration::from_millis(50))
                    } else {
                        Duration::ZERO
                    };
                    continue;
                }
                backoff = Duration::ZERO;
                unreported = unreported.saturating_add(dropped);
                let mut out = Vec::new();
                for message in messages {
                    let encoded = map::encode_message(message, unreported);
                    if encoded.len() > limit {
                        // Over --grpc-message-bytes-max, a limit of this transport only: the
                        // message cannot be sent here, so it counts as dropped and the next
                        // message sent says so.
                        unreported = unreported.saturating_add(1);
                        continue;
                    }
                    unreported = 0;
                    map::frame(&encoded, &mut out);
                }
                if out.is_empty() {
                    continue;
                }
                if send_all(&mut stream, Bytes::from(out)).await.is_err() {
                    return None;
                }
            }
            Response::Error(error) => return Some((stream, error.status())),
            other => {
                return Some((
                    stream,
                    Status::new(Code::Internal, format!("unexpected answer {other:?}")),
                ))
            }
        }
    }
}

/// `Health/Watch`: the serving state now, then whenever it changes, until the client cancels.
async fn health_watch(
    mut body: RecvStream,
    mut respond: SendResponse<Bytes>,
    deadline: Option<Instant>,
    limit: usize,
    shared: &Shared,
) {
    let message = match until(deadline, read_one(&mut body, limit)).await {
        Err(()) => return trailers_only(&mut respond, &deadline_status()),
        Ok(Err(None)) => return,
        Ok(Err(Some(error))) => return trailers_only(&mut respond, &error),
        Ok(Ok(message)) => message,
    };
    let service = match map::decode_health(message) {
        Ok(service) => service,
        Err(error) => return trailers_only(&mut respond, &error),
    };
    let Ok(mut stream) = respond.send_response(grpc_headers(), false) else {
        return;
    };
    let known = map::health_service_known(&service);
    let mut last = None;
    loop {
        let state = if !known {
            map::HealthState::ServiceUnknown
        } else if shared.shutting_down.load(Ordering::Relaxed) {
            map::HealthState::NotServing
        } else {
            map::HealthState::Serving
        };
        if last != Some(state) {
            let mut framed = Vec::new();
            map::frame(&map::encode_health_state(state), &mut framed);
            if send_all(&mut stream, Bytes::from(framed)).await.is_err() {
                return;
            }
            last = Some(state);
        }
        let reset = poll_fn(|cx| stream.poll_reset(cx));
        let tick = compio::time::sleep(HEALTH_WATCH_INTERVAL);
        match until(deadline, select(pin!(reset), pin!(tick))).await {
            Err(()) => return finish(&mut stream, &deadline_status()),
            Ok(Either::Left(_)) => return,
            Ok(Either::Right(_)) => {}
        }
    }
}
