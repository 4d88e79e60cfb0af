//! Values of every size up to `--value-bytes-max` over gRPC, through the Rust client, against
//! the real `veddb-server` binary; and what a message over `--grpc-message-bytes-max` gets:
//! RESOURCE_EXHAUSTED naming the limit, with the connection still serving.
//!
//! Each test starts its own server (`--port 0`, two cores) with the flags it is about; limits
//! that are not the test's subject stay at their defaults.

use std::future::{poll_fn, Future};
use std::pin::pin;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message;
use veddb_client::grpc::GrpcTransport;
use veddb_client::{CasOutcome, Client, ClientError, Received};
use veddb_wire::grpc::{message_bytes_max_for, Code, Status};
use veddb_wire::{limits, proto, Request, Response, SetOptions};

mod common;
use common::{capture_stderr, listening_address};

const SERVER: &str = env!("CARGO_BIN_EXE_veddb-server");
/// Generous: debug builds on small, busy machines.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const MESSAGE_TIMEOUT: Duration = Duration::from_secs(30);
const MIB: usize = 1 << 20;
/// `--grpc-message-bytes-max` when it is not given, with the default key and value limits:
/// 16 MiB + 64 KiB + 64 KiB.
const DEFAULT_MESSAGE_BYTES_MAX: usize = 16_908_288;

/// A `veddb-server` of this test's own; killed when dropped.
struct Server {
    address: String,
    child: Option<Child>,
    log: Arc<Mutex<String>>,
    reader: Option<JoinHandle<()>>,
}

impl Server {
    /// Starts a server with two cores, a free port and `extra` flags; returns once a gRPC PING
    /// is answered.
    fn start(extra: &[&str]) -> Server {
        let mut child = Command::new(SERVER)
            .args(["--cores", "2", "--port", "0", "--spin-us", "0"])
            .args(extra)
            .env_remove("VEDDB_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start veddb-server");
        let (log, reader) = capture_stderr(&mut child);
        let mut server = Server {
            address: String::new(),
            child: Some(child),
            log,
            reader: Some(reader),
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = server.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("the server exited with {status}:\n{}", server.log());
            }
            if server.address.is_empty() {
                server.address = listening_address(&server.log()).unwrap_or_default();
            }
            if !server.address.is_empty()
                && GrpcTransport::connect(&server.address)
                    .is_ok_and(|transport| Client::from_transport(transport).ping().is_ok())
            {
                return server;
            }
            assert!(
                Instant::now() < deadline,
                "the server was not ready within {READY_TIMEOUT:?}:\n{}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn transport(&self) -> GrpcTransport {
        GrpcTransport::connect(&self.address).expect("connect over gRPC")
    }

    fn client(&self) -> Client {
        Client::from_transport(self.transport())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        if std::thread::panicking() {
            eprintln!("server log:\n{}", self.log());
        }
    }
}

/// `length` bytes that differ from position to position (and between `seed`s), zeros and
/// 0xFF included.
fn value(length: usize, seed: u8) -> Bytes {
    Bytes::from(
        (0..length)
            .map(|i| (i % 251) as u8 ^ seed)
            .collect::<Vec<u8>>(),
    )
}

/// The status of a refused call (panics on success or another kind of failure).
#[track_caller]
fn status<T: std::fmt::Debug>(result: Result<T, ClientError>) -> Status {
    match result {
        Err(ClientError::Status(status)) => status,
        other => panic!("expected a status, got {other:?}"),
    }
}

/// The status of one refused answer of a pipeline.
#[track_caller]
fn answer_status(answer: &Result<Response, ClientError>) -> Status {
    match answer {
        Err(ClientError::Status(status)) => status.clone(),
        other => panic!("expected a status, got {other:?}"),
    }
}

/// Asserts RESOURCE_EXHAUSTED whose message contains every one of `parts`.
#[track_caller]
fn assert_exhausted(status: &Status, parts: &[&str]) {
    assert_eq!(status.code, Code::ResourceExhausted, "{status}");
    for part in parts {
        assert!(status.message.contains(part), "{part:?} in {status}");
    }
}

/// SET, GET (the same bytes back), DEL of `value` under `key`.
#[track_caller]
fn round_trip(client: &Client, key: &'static str, value: &Bytes) {
    let version = client
        .set(key, value.clone(), SetOptions::default())
        .unwrap_or_else(|error| panic!("SET of {} bytes: {error}", value.len()))
        .expect("stored");
    let (got, got_version) = client
        .get(key)
        .unwrap_or_else(|error| panic!("GET of {} bytes: {error}", value.len()))
        .expect("found");
    assert_eq!(got.len(), value.len());
    assert!(got == value, "the {} bytes read back differ", value.len());
    assert_eq!(got_version, version);
    assert!(client.delete(key).unwrap());
}

/// Both futures to completion, polled together (the requests share one connection).
async fn both<A: Future, B: Future>(a: A, b: B) -> (A::Output, B::Output) {
    let (mut a, mut b) = (pin!(a), pin!(b));
    let (mut a_out, mut b_out) = (None, None);
    poll_fn(|cx| {
        if a_out.is_none() {
            if let Poll::Ready(out) = a.as_mut().poll(cx) {
                a_out = Some(out);
            }
        }
        if b_out.is_none() {
            if let Poll::Ready(out) = b.as_mut().poll(cx) {
                b_out = Some(out);
            }
        }
        if a_out.is_some() && b_out.is_some() {
            Poll::Ready((a_out.take().unwrap(), b_out.take().unwrap()))
        } else {
            Poll::Pending
        }
    })
    .await
}

// ---------------------------------------------------------------------------------------------

/// Default flags: every size up to the default `--value-bytes-max` (16 MiB) round-trips, one
/// more byte is the engine's RESOURCE_EXHAUSTED naming that limit, and a message over the
/// default `--grpc-message-bytes-max` (which follows `--value-bytes-max`) is RESOURCE_EXHAUSTED
/// naming its limit, on the same connection that then goes on.
#[test]
fn every_value_up_to_the_default_limit_round_trips() {
    let server = Server::start(&[]);
    assert!(
        server.log().contains(&format!(
            "grpc_message_bytes_max={DEFAULT_MESSAGE_BYTES_MAX}"
        )),
        "{}",
        server.log()
    );
    assert_eq!(
        DEFAULT_MESSAGE_BYTES_MAX,
        message_bytes_max_for(
            limits::KEY_BYTES_MAX_DEFAULT,
            limits::VALUE_BYTES_MAX_DEFAULT
        )
    );
    let client = server.client();
    for length in [0, 1, MIB, 6_000_000, limits::VALUE_BYTES_MAX_DEFAULT] {
        round_trip(&client, "value", &value(length, 1));
    }
    let one_over = value(limits::VALUE_BYTES_MAX_DEFAULT + 1, 2);
    assert_exhausted(
        &status(client.set("value", one_over, SetOptions::default())),
        &["16777217", "16777216", "--value-bytes-max"],
    );
    assert_eq!(client.get("value").unwrap(), None);

    // Over the message limit: refused as soon as the length prefix arrives.
    let over = value(DEFAULT_MESSAGE_BYTES_MAX, 3);
    assert_exhausted(
        &status(client.set("value", over, SetOptions::default())),
        &[
            &format!("this server's limit of {DEFAULT_MESSAGE_BYTES_MAX} bytes"),
            "--grpc-message-bytes-max",
        ],
    );
    // The same connection goes on.
    client.ping().unwrap();
    assert_eq!(client.get("value").unwrap(), None);
    round_trip(&client, "after", &value(6_000_000, 4));
}

/// A smaller `--value-bytes-max` (5 MiB): exactly it round-trips on every way a value goes in
/// (SET, CAS, MSET, a Batch) and comes out (GET, MGET); one more byte is refused with that
/// limit; the message limit still follows it (5 MiB + 128 KiB), and an answer over it (an MGET
/// of two largest values) is that request's RESOURCE_EXHAUSTED, naming the limit.
#[test]
fn values_up_to_a_smaller_limit_round_trip() {
    const VALUE_BYTES_MAX: usize = 5 * MIB;
    let message_bytes_max = message_bytes_max_for(limits::KEY_BYTES_MAX_DEFAULT, VALUE_BYTES_MAX);
    let server = Server::start(&["--value-bytes-max", &VALUE_BYTES_MAX.to_string()]);
    let client = server.client();
    for length in [0, 1, MIB - 1, MIB, MIB + 1, VALUE_BYTES_MAX] {
        round_trip(&client, "v", &value(length, 5));
    }
    let largest = value(VALUE_BYTES_MAX, 6);
    let one_over = value(VALUE_BYTES_MAX + 1, 7);
    let limit_parts = ["5242881", "5242880", "--value-bytes-max"];
    assert_exhausted(
        &status(client.set("v", one_over.clone(), SetOptions::default())),
        &limit_parts,
    );
    assert_exhausted(
        &status(client.publish("topic", one_over.clone())),
        &limit_parts,
    );
    assert_exhausted(
        &status(client.mset(vec![(Bytes::from_static(b"v"), one_over)])),
        &limit_parts,
    );

    // CAS and MSET of the largest value; GET and MGET give it back.
    let CasOutcome::Stored { version } = client.cas("v", 0, largest.clone(), None).unwrap() else {
        panic!("CAS with expected version 0 of a missing key stores");
    };
    assert_eq!(client.get("v").unwrap(), Some((largest.clone(), version)));
    client
        .mset(vec![(Bytes::from_static(b"w"), largest.clone())])
        .unwrap();
    let values = client.mget(vec![Bytes::from_static(b"w")]).unwrap();
    assert_eq!(values[0].as_ref().map(|(value, _)| value), Some(&largest));

    // Two largest values in one answer: over the message limit, that request's error alone.
    let keys = || vec![Bytes::from_static(b"v"), Bytes::from_static(b"w")];
    let answers = client
        .execute_many(vec![
            Request::MGet { keys: keys() },
            Request::Get {
                key: Bytes::from_static(b"w"),
            },
        ])
        .unwrap();
    assert_exhausted(
        &answer_status(&answers[0]),
        &[
            &format!("this server's limit of {message_bytes_max} bytes"),
            "--grpc-message-bytes-max",
        ],
    );
    match &answers[1] {
        Ok(Response::Value { value, .. }) => assert_eq!(value, &largest),
        other => panic!("{other:?}"),
    }
    // The same through the unary MGet RPC: a status instead of the answer.
    let transport = server.transport();
    let request = proto::v1::MGetRequest { keys: keys() }.encode_to_vec();
    let refused = transport.block_on(
        transport
            .connection()
            .unary_raw("/veddb.v1.VedDb/MGet", request),
    );
    assert_exhausted(
        &status(refused),
        &[&format!("this server's limit of {message_bytes_max} bytes")],
    );
    let ping = proto::v1::PingRequest {}.encode_to_vec();
    transport
        .block_on(
            transport
                .connection()
                .unary_raw("/veddb.v1.VedDb/Ping", ping),
        )
        .unwrap();
}

/// A request over `--grpc-message-bytes-max` is answered with RESOURCE_EXHAUSTED naming the
/// limit on every kind of call (unary, Batch), while other calls on the same connection are
/// served; and many such requests in a row do not wear the connection out (h2 remembers the
/// streams it ended early, so the DATA the client had in flight on them is dropped quietly).
#[test]
fn a_message_over_the_limit_is_resource_exhausted_and_the_connection_goes_on() {
    const MESSAGE_BYTES_MAX: usize = 64 * 1024;
    let server = Server::start(&["--grpc-message-bytes-max", &MESSAGE_BYTES_MAX.to_string()]);
    let limit_parts = [
        "this server's limit of 65536 bytes",
        "--grpc-message-bytes-max",
    ];
    let transport = server.transport();
    let connection = transport.connection();
    let stored = transport.block_on(connection.execute(Request::Set {
        key: Bytes::from_static(b"small"),
        value: Bytes::from_static(b"v"),
        options: SetOptions::default(),
    }));
    assert!(matches!(stored, Ok(Response::Stored { .. })), "{stored:?}");

    // Unary: a SetRequest of 2 MiB (more than the stream window, so the client is still sending
    // when the answer comes).
    let set = proto::v1::SetRequest {
        key: Bytes::from_static(b"big"),
        value: value(2 * MIB, 8),
        ..Default::default()
    }
    .encode_to_vec();
    let refused = transport.block_on(connection.unary_raw("/veddb.v1.VedDb/Set", set.clone()));
    assert_exhausted(&status(refused), &limit_parts);

    // Batch, with a GET on the same connection at the same time.
    let big = Request::Set {
        key: Bytes::from_static(b"big"),
        value: value(2 * MIB, 9),
        options: SetOptions::default(),
    };
    let get = Request::Get {
        key: Bytes::from_static(b"small"),
    };
    let (refused, got) = transport.block_on(both(
        connection.execute(big.clone()),
        connection.execute(get.clone()),
    ));
    assert_exhausted(&status(refused), &limit_parts);
    match got {
        Ok(Response::Value { value, .. }) => assert_eq!(value, "v"),
        other => panic!("{other:?}"),
    }

    // Many in a row, then the connection still answers.
    for round in 0..300 {
        let refused = if round % 2 == 0 {
            transport.block_on(connection.execute(big.clone()))
        } else {
            transport
                .block_on(connection.unary_raw("/veddb.v1.VedDb/Set", set.clone()))
                .map(|_| Response::Ok)
        };
        match refused {
            Err(ClientError::Status(status)) if status.code == Code::ResourceExhausted => {}
            other => panic!("over-limit request {round}: {other:?}"),
        }
    }
    match transport.block_on(connection.execute(get)) {
        Ok(Response::Value { value, .. }) => assert_eq!(value, "v"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        transport
            .block_on(connection.execute(Request::Get {
                key: Bytes::from_static(b"big")
            }))
            .unwrap(),
        Response::NotFound,
        "nothing over the limit was stored"
    );
}

/// Pub/sub with default flags: a 6 MB message reaches a gRPC subscriber whole, and so does one
/// larger than a subscriber queue's byte limit (8 MiB): a queue always keeps its newest message,
/// dropping older ones (counted) to make room. Nothing is dropped here: the subscriber keeps up.
#[test]
fn large_messages_reach_a_grpc_subscriber() {
    let server = Server::start(&[]);
    let subscriber = server.client();
    let publisher = server.client();
    let mut subscription = subscriber.subscribe("large").unwrap();
    let six = value(6_000_000, 10);
    let over_queue = value(limits::SUBSCRIBER_QUEUE_BYTES_DEFAULT + MIB, 11);
    let largest = value(limits::VALUE_BYTES_MAX_DEFAULT, 12);
    for message in [&six, &over_queue, &largest] {
        assert_eq!(publisher.publish("large", message.clone()).unwrap(), 1);
        match subscription.receive(MESSAGE_TIMEOUT).unwrap() {
            Received::Message {
                message: got,
                dropped,
            } => {
                assert_eq!(dropped, 0);
                assert_eq!(got.len(), message.len());
                assert!(
                    got == message,
                    "the {} bytes received differ",
                    message.len()
                );
            }
            other => panic!("expected the {}-byte message, got {other:?}", message.len()),
        }
    }
    let total = publisher.info().unwrap().total();
    assert_eq!(total.messages_dropped, 0, "{total:?}");
    // One byte over --value-bytes-max is refused to the publisher, naming the limit.
    let one_over = value(limits::VALUE_BYTES_MAX_DEFAULT + 1, 13);
    assert_exhausted(
        &status(publisher.publish("large", one_over)),
        &["--value-bytes-max"],
    );
}
