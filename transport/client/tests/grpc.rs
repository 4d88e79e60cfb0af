//! The Rust client, and the `veddb-cli` binary, against an in-process engine with the gRPC
//! frontend on two cores (no `--data-dir`: persistence is off).

use std::time::Duration;

use bytes::Bytes;
use veddb_client::veddb_wire::grpc::Code;
use veddb_client::veddb_wire::grpc_client::SubscribeEvent;
use veddb_client::veddb_wire::{Request, Response, SetCondition, SetOptions, Ttl};
use veddb_client::{Client, ClientError};
use veddb_engine::{Engine, EngineConfig};

fn server() -> (Engine, String) {
    let engine = Engine::start(EngineConfig {
        cores: 2,
        spin: Duration::from_micros(10),
        ..EngineConfig::default()
    })
    .expect("engine");
    let grpc = veddb_transport::grpc::start(
        &engine,
        veddb_transport::grpc::GrpcConfig {
            port: 0,
            ..Default::default()
        },
    )
    .expect("gRPC frontend");
    let address = grpc.local_addr().to_string();
    (engine, address)
}

#[test]
fn typed_calls_pipelines_and_errors() {
    let (engine, address) = server();
    let client = Client::connect_grpc(&address).expect("connect");
    client.ping().unwrap();
    let version = client
        .set("k", "v", SetOptions::default())
        .unwrap()
        .expect("stored");
    assert_eq!(
        client.get("k").unwrap(),
        Some((Bytes::from_static(b"v"), version))
    );
    assert_eq!(client.get("missing").unwrap(), None);
    let nx = SetOptions {
        condition: SetCondition::IfAbsent,
        ..SetOptions::default()
    };
    assert_eq!(client.set("k", "other", nx).unwrap(), None);
    assert_eq!(client.incr("n", 5).unwrap(), 5);
    assert_eq!(client.incr("n", -7).unwrap(), -2);
    assert_eq!(client.ttl("k").unwrap(), Ttl::Persistent);
    assert!(client.delete("k").unwrap());
    assert!(!client.delete("k").unwrap());
    // CAS mismatch comes back as the model's answer, with the current version.
    let version = client
        .set("c", "1", SetOptions::default())
        .unwrap()
        .unwrap();
    let answer = client
        .execute(Request::Cas {
            key: Bytes::from_static(b"c"),
            expected_version: version + 100,
            value: Bytes::new(),
            ttl_ms: None,
        })
        .unwrap();
    assert_eq!(answer, Response::VersionMismatch { current: version });
    // A server-side error is a status with its message.
    client.set("text", "abc", SetOptions::default()).unwrap();
    match client.incr("text", 1) {
        Err(ClientError::Status(status)) => {
            assert_eq!(status.code, Code::InvalidArgument);
            assert!(status.message.contains("integer"), "{}", status.message);
        }
        other => panic!("{other:?}"),
    }
    // Pipelining: 500 requests on one Batch stream, answers in order, an error in the middle.
    let mut requests: Vec<Request> = (0..500)
        .map(|i| Request::Set {
            key: Bytes::from(format!("p{i}")),
            value: Bytes::from(format!("{i}")),
            options: SetOptions::default(),
        })
        .collect();
    requests.insert(
        250,
        Request::Incr {
            key: Bytes::from_static(b"text"),
            delta: 1,
        },
    );
    let answers = client.execute_many(requests).unwrap();
    assert_eq!(answers.len(), 501);
    assert!(matches!(answers[250], Err(ClientError::Status(_))));
    assert!(answers
        .iter()
        .enumerate()
        .all(|(i, a)| i == 250 || matches!(a, Ok(Response::Stored { .. }))));
    let answers = client
        .execute_many(
            (0..500)
                .map(|i| Request::Get {
                    key: Bytes::from(format!("p{i}")),
                })
                .collect(),
        )
        .unwrap();
    for (i, answer) in answers.into_iter().enumerate() {
        let version = answer_version(&client, i);
        assert_eq!(
            answer.unwrap(),
            Response::Value {
                value: Bytes::from(format!("{i}")),
                version,
            }
        );
    }
    let info = client.info().unwrap();
    assert_eq!(info.shards.len(), 2);
    assert!(info.total().keys >= 500);
    drop(client);
    engine.shutdown();
}

fn answer_version(client: &Client, i: usize) -> u64 {
    client.get(Bytes::from(format!("p{i}"))).unwrap().unwrap().1
}

#[test]
fn subscriptions_deliver_in_order_and_end_with_the_client() {
    let (engine, address) = server();
    let subscriber = Client::connect_grpc(&address).expect("connect");
    let publisher = Client::connect_grpc(&address).expect("connect");
    {
        let mut subscription = subscriber.subscribe("news").unwrap();
        for i in 0..20 {
            assert_eq!(publisher.publish("news", format!("m{i}")).unwrap(), 1);
        }
        for i in 0..20 {
            match subscription.next() {
                Some(Ok(SubscribeEvent::Message {
                    message,
                    dropped: 0,
                })) => assert_eq!(message, Bytes::from(format!("m{i}"))),
                other => panic!("{other:?}"),
            }
        }
    }
    // The subscription was dropped: the server unsubscribes (soon; poll generously).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while publisher.publish("news", "late").unwrap() != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the subscription outlived its stream"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop((subscriber, publisher));
    engine.shutdown();
}

/// The server ends a call whose message is over its limit before reading the rest: the client
/// reports the server's status, not the failed send, and the connection goes on.
#[test]
fn a_request_over_the_message_limit_is_resource_exhausted() {
    let (engine, address) = server();
    let client = Client::connect_grpc(&address).expect("connect");
    let huge = Bytes::from(vec![1u8; 5 << 20]);
    match client.set("huge", huge, SetOptions::default()) {
        Err(ClientError::Status(status)) => {
            assert_eq!(status.code, Code::ResourceExhausted, "{status}");
        }
        other => panic!("{other:?}"),
    }
    client.ping().unwrap();
    assert_eq!(client.get("huge").unwrap(), None);
    drop(client);
    engine.shutdown();
}

/// The FAILED_PRECONDITION that SNAPSHOT gets from a server without persistence.
fn assert_persistence_off(result: Result<impl std::fmt::Debug, ClientError>) {
    match result {
        Err(ClientError::Status(status)) => {
            assert_eq!(status.code, Code::FailedPrecondition, "{status}");
            assert!(status.message.contains("--data-dir"), "{}", status.message);
        }
        other => panic!("expected FAILED_PRECONDITION, got {other:?}"),
    }
}

#[test]
fn snapshot_without_data_dir_is_failed_precondition() {
    let (engine, address) = server();
    let client = Client::connect_grpc(&address).expect("connect");
    client.set("k", "v", SetOptions::default()).unwrap();
    assert_persistence_off(client.snapshot());
    // The same through the generic entry point, which uses the Snapshot RPC too.
    assert_persistence_off(client.execute(Request::Snapshot));
    // SNAPSHOT is not a batch operation: refused before anything is sent.
    match client.execute_many(vec![Request::Ping, Request::Snapshot]) {
        Err(ClientError::Status(status)) => {
            assert_eq!(status.code, Code::Unimplemented, "{status}");
            assert!(status.message.contains("SNAPSHOT"), "{}", status.message);
        }
        other => panic!("{other:?}"),
    }
    // The connection and the data are fine afterwards.
    assert_eq!(
        client.get("k").unwrap().map(|(value, _)| value),
        Some(Bytes::from_static(b"v"))
    );
    drop(client);
    engine.shutdown();
}

/// Runs `veddb-cli --grpc ADDRESS words...`: exit code, stdout, stderr.
fn cli(address: &str, words: &[&str]) -> (i32, String, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_veddb-cli"))
        .arg("--grpc")
        .arg(address)
        .args(words)
        .output()
        .expect("veddb-cli runs");
    (
        output.status.code().expect("exited, not killed"),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn cli_snapshot_reports_persistence_off() {
    let (engine, address) = server();
    let (code, stdout, _) = cli(&address, &["ping"]);
    assert_eq!((code, stdout.as_str()), (0, "PONG\n"));
    // The server refused: exit status 3 and its message on stderr, nothing on stdout.
    let (code, stdout, stderr) = cli(&address, &["snapshot"]);
    assert_eq!(code, 3, "stdout {stdout:?} stderr {stderr:?}");
    assert_eq!(stdout, "");
    assert!(stderr.contains("FAILED_PRECONDITION"), "{stderr}");
    assert!(stderr.contains("--data-dir"), "{stderr}");
    // Arguments are a usage error (2).
    let (code, _, stderr) = cli(&address, &["snapshot", "now"]);
    assert_eq!(code, 2, "{stderr}");
    engine.shutdown();
}

#[test]
fn connecting_to_nothing_is_a_clear_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    drop(listener);
    match Client::connect_grpc(&address) {
        Err(ClientError::Io(error)) => {
            assert_eq!(error.kind(), std::io::ErrorKind::ConnectionRefused)
        }
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("connected to a closed port"),
    }
}

#[test]
fn cli_prompt_runs_one_command_per_line() {
    use std::io::Write;
    let (engine, address) = server();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_veddb-cli"))
        .arg("--grpc")
        .arg(&address)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("veddb-cli runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"ping\nset \"a b\" \"x\\x00y\"\nget 'a b'\nbogus\n\nget missing\nquit\nping\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    // Errors are reported and the prompt goes on; `quit` ends it (the last ping never runs).
    assert_eq!(
        stdout, "PONG\nOK (version 1)\n\"x\\x00y\" (version 1)\n(not found)\n",
        "{stderr}"
    );
    assert!(
        stderr.contains("unknown command or wrong arguments: bogus"),
        "{stderr}"
    );
    engine.shutdown();
}
