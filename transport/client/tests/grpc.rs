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
    server_with(veddb_transport::grpc::GrpcConfig::default())
}

/// A server with `config` (on a free port).
fn server_with(config: veddb_transport::grpc::GrpcConfig) -> (Engine, String) {
    let engine = Engine::start(EngineConfig {
        cores: 2,
        spin: Duration::from_micros(10),
        ..EngineConfig::default()
    })
    .expect("engine");
    let grpc = veddb_transport::grpc::start(
        &engine,
        veddb_transport::grpc::GrpcConfig { port: 0, ..config },
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
/// reports the server's status, naming its limit, not the failed send, and the connection goes
/// on.
#[test]
fn a_request_over_the_message_limit_is_resource_exhausted() {
    const LIMIT: usize = 4 << 20;
    let (engine, address) = server_with(veddb_transport::grpc::GrpcConfig {
        message_bytes_max: LIMIT,
        ..Default::default()
    });
    let client = Client::connect_grpc(&address).expect("connect");
    let huge = Bytes::from(vec![1u8; 5 << 20]);
    match client.set("huge", huge, SetOptions::default()) {
        Err(ClientError::Status(status)) => {
            assert_eq!(status.code, Code::ResourceExhausted, "{status}");
            assert!(
                status.message.contains(&format!(
                    "over this server's limit of {LIMIT} bytes (--grpc-message-bytes-max)"
                )),
                "{status}"
            );
        }
        other => panic!("{other:?}"),
    }
    client.ping().unwrap();
    assert_eq!(client.get("huge").unwrap(), None);
    drop(client);
    engine.shutdown();
}

/// An answer over the server's limit (an MGET of two values that fit one by one) is that
/// request's RESOURCE_EXHAUSTED in a pipeline, not a broken stream; the others are answered.
#[test]
fn an_answer_over_the_message_limit_is_resource_exhausted() {
    const LIMIT: usize = 4 << 20;
    let (engine, address) = server_with(veddb_transport::grpc::GrpcConfig {
        message_bytes_max: LIMIT,
        ..Default::default()
    });
    let client = Client::connect_grpc(&address).expect("connect");
    let value = Bytes::from(vec![3u8; 3 << 20]);
    for key in ["a", "b"] {
        client
            .set(key, value.clone(), SetOptions::default())
            .unwrap();
    }
    let mget = |keys: &[&str]| Request::MGet {
        keys: keys
            .iter()
            .map(|key| Bytes::copy_from_slice(key.as_bytes()))
            .collect(),
    };
    let answers = client
        .execute_many(vec![mget(&["a", "b"]), mget(&["a"]), Request::Ping])
        .unwrap();
    match &answers[0] {
        Err(ClientError::Status(status)) => {
            assert_eq!(status.code, Code::ResourceExhausted, "{status}");
            assert!(
                status
                    .message
                    .contains(&format!("over this server's limit of {LIMIT} bytes")),
                "{status}"
            );
        }
        other => panic!("{other:?}"),
    }
    match &answers[1] {
        Ok(Response::Values(values)) => assert_eq!(values[0].as_ref().unwrap().0, value),
        other => panic!("{other:?}"),
    }
    assert!(matches!(answers[2], Ok(Response::Pong)), "{:?}", answers[2]);
    drop(client);
    engine.shutdown();
}

/// The client takes any value a server allows (default: 1 GiB plus framing); a lower receive
/// limit, set on the transport, refuses a longer answer with RESOURCE_EXHAUSTED naming it, and
/// the connection goes on.
#[test]
fn the_client_receive_limit_is_large_by_default_and_can_be_lowered() {
    let (engine, address) = server();
    let value = Bytes::from(vec![4u8; 6_000_000]);
    let client = Client::connect_grpc(&address).expect("connect");
    client
        .set("six", value.clone(), SetOptions::default())
        .unwrap();
    assert_eq!(client.get("six").unwrap().unwrap().0, value);

    let mut transport = veddb_client::grpc::GrpcTransport::connect(&address).expect("connect");
    assert_eq!(
        transport.connection().receive_message_bytes_max(),
        veddb_client::grpc::RECEIVE_MESSAGE_BYTES_MAX_DEFAULT
    );
    transport.set_receive_message_bytes_max(1 << 20);
    let small = Client::from_transport(transport);
    match small.get("six") {
        Err(ClientError::Status(status)) => {
            assert_eq!(status.code, Code::ResourceExhausted, "{status}");
            assert!(
                status
                    .message
                    .contains("over this client's limit of 1048576 bytes"),
                "{status}"
            );
        }
        other => panic!("{other:?}"),
    }
    small.ping().unwrap();
    small.set("small", "v", SetOptions::default()).unwrap();
    assert_eq!(small.get("small").unwrap().unwrap().0, "v");
    drop((client, small));
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
        stderr.contains("(error) unknown command \"bogus\"; `help` lists the commands"),
        "{stderr}"
    );
    engine.shutdown();
}

/// Runs `veddb-cli --grpc ADDRESS ARGS...` with `stdin` as its standard input.
fn cli_with_input(address: &str, args: &[&str], stdin: &[u8]) -> std::process::Output {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_veddb-cli"))
        .arg("--grpc")
        .arg(address)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("veddb-cli runs");
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    // Written from a thread: a large input must not block while the child writes its output.
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap();
    output
}

/// `set KEY --file PATH` and `--file -` (standard input) store a file's bytes exactly (zeros,
/// 0xFF, a newline at the end, 6 MB), `get KEY --file PATH` / `--output -` give them back
/// exactly; a missing file is a clear usage error (exit 2) and stores nothing; a missing key
/// writes no file (exit 1).
#[test]
fn cli_values_from_and_to_files_and_standard_streams() {
    let (engine, address) = server();
    let directory = std::env::temp_dir().join(format!("veddb-cli-files-{}", std::process::id()));
    std::fs::create_dir_all(&directory).unwrap();
    let path = |name: &str| directory.join(name).to_string_lossy().into_owned();
    let binary: Vec<u8> = vec![0, 0xFF, b'a', 0, 0xFE, b'\r', 0xFF, 0, b'\n'];
    std::fs::write(path("binary"), &binary).unwrap();
    let large: Vec<u8> = (0..6_000_000u32).map(|i| (i % 256) as u8).collect();

    let stdout =
        |output: &std::process::Output| String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr =
        |output: &std::process::Output| String::from_utf8_lossy(&output.stderr).into_owned();

    // From a file, with the usual flags after it.
    let set = cli_with_input(
        &address,
        &["set", "bin", "--file", &path("binary"), "--ttl", "60000"],
        b"",
    );
    assert_eq!(set.status.code(), Some(0), "{}", stderr(&set));
    assert_eq!(stdout(&set), "OK (version 1)\n");
    let get = cli_with_input(&address, &["get", "bin"], b"");
    assert_eq!(
        stdout(&get),
        "\"\\x00\\xffa\\x00\\xfe\\r\\xff\\x00\\n\" (version 1)\n"
    );
    let written = cli_with_input(&address, &["get", "bin", "--file", &path("out")], b"");
    assert_eq!(written.status.code(), Some(0), "{}", stderr(&written));
    assert_eq!(std::fs::read(path("out")).unwrap(), binary);

    // From standard input, to standard output: 6 MB, byte for byte.
    let set = cli_with_input(&address, &["set", "large", "--file", "-"], &large);
    assert_eq!(set.status.code(), Some(0), "{}", stderr(&set));
    let get = cli_with_input(&address, &["get", "large", "--output", "-"], b"");
    assert_eq!(get.status.code(), Some(0), "{}", stderr(&get));
    assert!(get.stdout == large, "{} bytes back", get.stdout.len());
    let publish = cli_with_input(
        &address,
        &["publish", "topic", "--file", &path("binary")],
        b"",
    );
    assert_eq!(
        (publish.status.code(), stdout(&publish)),
        (Some(0), "0\n".to_string())
    );

    // A missing file: exit 2, the path and the reason, nothing stored.
    let missing = path("no-such-file");
    let failed = cli_with_input(&address, &["set", "other", "--file", &missing], b"");
    assert_eq!(failed.status.code(), Some(2));
    assert!(
        stderr(&failed).contains(&format!("cannot read {missing}: ")),
        "{}",
        stderr(&failed)
    );
    let failed = cli_with_input(&address, &["set", "other", "--file"], b"");
    assert_eq!(failed.status.code(), Some(2), "{}", stderr(&failed));
    let client = Client::connect_grpc(&address).unwrap();
    assert_eq!(client.get("other").unwrap(), None);
    // A missing key: exit 1, no file.
    let absent = cli_with_input(&address, &["get", "absent", "--file", &path("absent")], b"");
    assert_eq!(absent.status.code(), Some(1));
    assert!(!std::path::Path::new(&path("absent")).exists());

    // At the prompt, standard input carries the commands: a file works, `-` is refused.
    let prompt = format!("set p --file {}\nset q --file -\nget q\n", path("binary"));
    let session = cli_with_input(&address, &[], prompt.as_bytes());
    assert_eq!(session.status.code(), Some(0));
    assert!(
        stderr(&session).contains("name a file"),
        "{}",
        stderr(&session)
    );
    assert_eq!(client.get("p").unwrap().unwrap().0, binary);
    assert_eq!(client.get("q").unwrap(), None);

    drop(client);
    let _ = std::fs::remove_dir_all(&directory);
    engine.shutdown();
}
