//! `veddb-cli` as a user drives it, against an in-process engine with the gRPC frontend on two
//! cores: the command line through pipes (escapes, `--raw` and `--json` round trips of every
//! byte, usage errors, a closed pipe, `--repeat`, `--latency`, Ctrl-C out of `subscribe`), and
//! the prompt through a real terminal (tmux: `send-keys` to type, `capture-pane` to read the
//! screen) for history, line editing, completion, escaping and Ctrl-C.
//!
//! The shared-memory path of the same commands is in `transport/server/tests/conformance.rs`
//! (`cli_commands_on_every_transport`), which starts the real server.
#![cfg(unix)]

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use veddb_client::veddb_wire::SetOptions;
use veddb_client::Client;
use veddb_engine::{Engine, EngineConfig};

const CLI: &str = env!("CARGO_BIN_EXE_veddb-cli");
/// How long something that must happen may take (debug builds on a busy 2-CPU machine):
/// never a bound that is asserted, only how long to wait before giving up.
const PATIENCE: Duration = Duration::from_secs(30);

/// An in-process engine serving gRPC on a free port; shut down when dropped.
struct Server {
    engine: Option<Engine>,
    address: String,
}

impl Server {
    fn start() -> Server {
        Server::with_memory(EngineConfig::default().memory_bytes_limit)
    }

    fn with_memory(memory_bytes_limit: u64) -> Server {
        let engine = Engine::start(EngineConfig {
            cores: 2,
            spin: Duration::from_micros(10),
            memory_bytes_limit,
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
        Server {
            address: grpc.local_addr().to_string(),
            engine: Some(engine),
        }
    }

    fn client(&self) -> Client {
        Client::connect_grpc(&self.address).expect("connect")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(engine) = self.engine.take() {
            engine.shutdown();
        }
    }
}

/// What a run of `veddb-cli` left.
struct Run {
    code: i32,
    stdout: Vec<u8>,
    stderr: String,
}

impl Run {
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {} stdout {:?} stderr {:?}",
            self.code,
            self.stdout(),
            self.stderr
        )
    }
}

/// `veddb-cli --grpc ADDRESS ARGS...` with `stdin` as its standard input.
fn cli_in(address: &str, args: &[&str], stdin: &[u8]) -> Run {
    let mut child = Command::new(CLI)
        .arg("--grpc")
        .arg(address)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("veddb-cli runs");
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    // From a thread: a large input must not block while the child writes its output.
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap();
    Run {
        code: output.status.code().expect("exited, not killed"),
        stdout: output.stdout,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn cli(address: &str, args: &[&str]) -> Run {
    cli_in(address, args, b"")
}

/// `bytes` written with the command line's escapes, every byte as `\xHH`.
fn escaped(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("\\x{byte:02x}")).collect()
}

/// Standard base64 decoding (what `--json` uses for bytes that are not UTF-8).
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            other => panic!("not base64: {other}"),
        }
    };
    let mut out = Vec::new();
    for group in text.as_bytes().chunks(4) {
        let digits: Vec<u8> = group.iter().copied().filter(|&c| c != b'=').collect();
        let mut bits = 0u32;
        for (i, &c) in digits.iter().enumerate() {
            bits |= value(c) << (18 - 6 * i);
        }
        out.extend_from_slice(&bits.to_be_bytes()[1..digits.len()]);
    }
    out
}

/// Sends SIGINT (what Ctrl-C sends) to a child.
fn interrupt(child: &Child) {
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

/// Waits for `child` to exit (killing it after [`PATIENCE`]); its exit status.
fn wait(child: &mut Child) -> i32 {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().expect("exited, not killed by a signal");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("veddb-cli did not exit within {PATIENCE:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Polls `condition` until it holds (panics after [`PATIENCE`]).
fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        assert!(Instant::now() < deadline, "{what}: not within {PATIENCE:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------------
// The command line, through pipes.

/// Every byte value goes in through escapes and through `--file -`, and comes back exactly with
/// `--raw` (then a newline), `--output -` (nothing added), `--json` (base64, as it is not
/// UTF-8) and as the escaped form, which typed back at the prompt stores the same bytes.
#[test]
fn every_byte_round_trips_through_escapes_raw_json_and_the_prompt() {
    let server = Server::start();
    let client = server.client();
    let all: Vec<u8> = (0..=255u8).collect();

    // In through the command line's escapes.
    let set = cli(&server.address, &["set", "all", &escaped(&all)]);
    let version = |key: &str| client.get(key.to_string()).unwrap().expect(key).1;
    assert_eq!(
        (set.code, set.stdout()),
        (0, format!("OK (version {})\n", version("all"))),
        "{set:?}"
    );
    assert_eq!(client.get("all").unwrap().unwrap().0, all);
    // The issue's example: "a\x00b" is three bytes, not a backslash and friends.
    let set = cli(&server.address, &["set", "bin", r"a\x00b"]);
    assert_eq!(set.code, 0, "{set:?}");
    assert_eq!(client.get("bin").unwrap().unwrap().0, &b"a\x00b"[..]);

    // Out as bytes: --raw adds one newline, --output - nothing.
    let raw = cli(&server.address, &["--raw", "get", "all"]);
    assert_eq!(raw.code, 0, "{raw:?}");
    assert_eq!(raw.stdout, [&all[..], b"\n"].concat());
    let exact = cli(&server.address, &["get", "all", "--output", "-"]);
    assert_eq!(exact.stdout, all);

    // In through standard input: every byte, 4 times, a newline at the end.
    let input: Vec<u8> = all
        .iter()
        .cycle()
        .take(1024)
        .copied()
        .chain([b'\n'])
        .collect();
    let set = cli_in(&server.address, &["set", "stdin", "--file", "-"], &input);
    assert_eq!(set.code, 0, "{set:?}");
    let raw = cli(&server.address, &["--raw", "get", "stdin"]);
    assert_eq!(raw.stdout, [&input[..], b"\n"].concat());

    // --raw output piped into --file - stores the same bytes (less the newline --raw added).
    let piped = &raw.stdout[..raw.stdout.len() - 1];
    assert_eq!(
        cli_in(&server.address, &["set", "copy", "--file", "-"], piped).code,
        0
    );
    assert_eq!(client.get("copy").unwrap().unwrap().0, input);

    // JSON: base64 for bytes that are not UTF-8, a string for those that are.
    let json = cli(&server.address, &["--json", "get", "all"]);
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON");
    assert_eq!(value["version"], version("all"));
    assert_eq!(
        base64_decode(value["value"]["base64"].as_str().unwrap()),
        all
    );
    client
        .set("text", "héllo\n\"x\"", SetOptions::default())
        .unwrap();
    let json = cli(&server.address, &["--json", "get", "text"]);
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON");
    assert_eq!(value["value"], "héllo\n\"x\"");

    // The escaped form on a terminal is what the prompt reads back.
    let shown = cli(&server.address, &["get", "all"]).stdout();
    let quoted = shown
        .strip_suffix(&format!(" (version {})\n", version("all")))
        .expect("a version");
    assert!(quoted.starts_with("\"\\x00\\x01"), "{quoted}");
    assert!(quoted.contains("\\n") && quoted.contains("\\\"") && quoted.contains("\\\\"));
    let session = cli_in(
        &server.address,
        &[],
        format!("set typed {quoted}\nget typed\n").as_bytes(),
    );
    assert_eq!(session.code, 0, "{session:?}");
    assert_eq!(client.get("typed").unwrap().unwrap().0, all);
    assert_eq!(
        session.stdout(),
        format!(
            "OK (version {0})\n{quoted} (version {0})\n",
            version("typed")
        )
    );

    // mget --raw: one value per line, an empty line for a missing key.
    let mget = cli(
        &server.address,
        &["--raw", "mget", "bin", "missing", "text"],
    );
    assert_eq!(mget.stdout, b"a\x00b\n\nh\xc3\xa9llo\n\"x\"\n");

    // --literal takes arguments as they are; a backslash that is no escape is an error naming
    // it, and the way out.
    let literal = cli(
        &server.address,
        &["--literal", "set", "path", r"C:\dir\x00"],
    );
    assert_eq!(literal.code, 0, "{literal:?}");
    assert_eq!(client.get("path").unwrap().unwrap().0, &br"C:\dir\x00"[..]);
    let bad = cli(&server.address, &["set", "path", r"C:\dir"]);
    assert_eq!(bad.code, 2, "{bad:?}");
    assert!(bad.stderr.contains("unknown escape \\d"), "{bad:?}");
    assert!(bad.stderr.contains("--literal"), "{bad:?}");
}

/// A reader that goes away early (`| head`) ends the program quietly: status 141, as SIGPIPE
/// would, never a panic; a short output that was written in full exits 0.
#[test]
fn a_closed_pipe_exits_quietly() {
    let server = Server::start();
    let client = server.client();
    // More than a pipe holds (64 KiB), so that the writer is still writing when the reader
    // goes away.
    let pairs = (0..20_000)
        .map(|i| (Bytes::from(format!("key:{i:05}")), Bytes::from_static(b"v")))
        .collect();
    client.mset(pairs).unwrap();

    // The reader closes after one line of a long SCAN.
    let mut child = Command::new(CLI)
        .args(["--grpc", &server.address, "scan"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert_eq!(first, "\"key:00000\"\n");
    drop(stdout);
    let code = wait(&mut child);
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!((code, stderr.as_str()), (141, ""));

    // Through a shell, as the issue reported it: `veddb-cli info | head -2`, and a command
    // repeated until the reader goes away.
    for (command, allowed) in [
        ("info | head -n 2", &[0, 141][..]),
        ("scan | head -n 1", &[141][..]),
        ("--repeat -1 ping | head -n 1", &[141][..]),
    ] {
        let script = format!(
            "{CLI} --grpc {} {command}; echo \"exit ${{PIPESTATUS[0]}}\"",
            server.address
        );
        let output = Command::new("bash").args(["-c", &script]).output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr, "", "{command}: nothing on standard error");
        let status: i32 = stdout
            .lines()
            .last()
            .and_then(|line| line.strip_prefix("exit "))
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("{command}: {stdout}"));
        assert!(allowed.contains(&status), "{command}: exit {status}");
    }
}

/// The issue's list: conflicting options, `COMMAND --help`, numbers that are out of range:
/// usage errors (exit 2) that say what is wrong, before anything is sent.
#[test]
fn usage_errors_exit_2_and_say_why() {
    let server = Server::start();
    let client = server.client();
    for (args, expected) in [
        (
            &["set", "a", "b", "--nx", "--xx"][..],
            "--nx and --xx cannot be given together",
        ),
        (
            &["set", "a", "b", "--ttl", "-5"],
            "--ttl must be a whole number of milliseconds, 1 or more, not \"-5\"",
        ),
        (
            &["set", "a", "b", "--ttl", "5", "--keepttl"],
            "--ttl and --keepttl cannot be given together",
        ),
        (&["set", "a", "b", "--file", "x"], "give the value once"),
        (
            &["get", "a", "--file", "x", "--output", "y"],
            "--file and --output cannot be given together",
        ),
        (
            &["--raw", "--json", "get", "a"],
            "--raw and --json are two output formats",
        ),
        (
            &["--local", "x", "get", "a"],
            "--grpc and --local name two targets",
        ),
        (
            &["--latency", "get", "a"],
            "--latency measures PING round trips and takes no command",
        ),
        (
            &["--repeat", "2", "subscribe", "t"],
            "--repeat does not apply to subscribe",
        ),
        (
            &["--interval", "1", "get", "a"],
            "--interval needs --repeat N",
        ),
        (
            &["--json", "get", "a", "--file", "-"],
            "--json and get --file - cannot be given together",
        ),
        (
            &["get"],
            "get: wrong number of arguments (0 given); usage: get KEY [--file PATH]",
        ),
        (&["incr", "n", "x"], "DELTA must be a whole number"),
        (&["frobnicate"], "unknown command \"frobnicate\""),
    ] {
        let run = cli(&server.address, args);
        assert_eq!(run.code, 2, "{args:?}: {run:?}");
        assert!(run.stderr.contains(expected), "{args:?}: {run:?}");
        assert!(
            run.stderr.starts_with("veddb-cli: usage: "),
            "{args:?}: {run:?}"
        );
        assert_eq!(run.stdout(), "", "{args:?}");
    }
    assert_eq!(client.get("a").unwrap(), None, "nothing was written");

    // COMMAND --help prints that command's usage (the key is not `--help`); help COMMAND is the
    // same; neither needs a server.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nowhere = closed.local_addr().unwrap().to_string();
    drop(closed);
    let help = cli(&nowhere, &["get", "--help"]);
    assert_eq!(help.code, 0, "{help:?}");
    assert!(
        help.stdout().starts_with("usage: get KEY [--file PATH]\n"),
        "{help:?}"
    );
    assert_eq!(cli(&nowhere, &["help", "get"]).stdout, help.stdout);
    let set_help = cli(&nowhere, &["set", "k", "v", "--help"]).stdout();
    assert!(set_help.contains("--keepttl"), "{set_help}");
    let program = cli(&nowhere, &["--help"]);
    assert_eq!(program.code, 0);
    for command in [
        "exists KEY...",
        "subscribe TOPIC",
        "--latency",
        "--raw",
        "--repeat N",
    ] {
        assert!(program.stdout().contains(command), "{command}");
    }
    assert_eq!(cli(&nowhere, &["help"]).stdout, program.stdout);
    // A key named --help is given after --.
    client.set("--help", "x", SetOptions::default()).unwrap();
    let get = cli(&server.address, &["--raw", "get", "--", "--help"]);
    assert_eq!((get.code, get.stdout()), (0, "x\n".into()), "{get:?}");

    // Nothing to connect to: exit 4, and what to check.
    let refused = cli(&nowhere, &["ping"]);
    assert_eq!(refused.code, 4, "{refused:?}");
    assert!(
        refused.stderr.contains("is veddb-server running"),
        "{refused:?}"
    );
}

/// Every command of the engine, with its answers for a person, for a script and as JSON, and
/// the exit status of negative answers.
#[test]
fn every_command_in_three_formats() {
    let server = Server::start();
    let a = server.address.as_str();
    let client = server.client();
    // Versions are the server's to choose: `{v:KEY}` in an expected output is KEY's version.
    let version = |key: &str| client.get(key.to_string()).unwrap().expect(key).1;
    let expand = |text: &str| {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("{v:") {
            out.push_str(&rest[..start]);
            let end = start + rest[start..].find('}').expect("a closing }");
            out.push_str(&version(&rest[start + 3..end]).to_string());
            rest = &rest[end + 1..];
        }
        out + rest
    };
    let check = |args: &[&str], code: i32, stdout: &str| {
        let run = cli(a, args);
        assert_eq!(
            (run.code, run.stdout()),
            (code, expand(stdout)),
            "{args:?}: {run:?}"
        );
    };
    check(&["ping"], 0, "PONG\n");
    check(&["--json", "ping"], 0, "\"PONG\"\n");
    check(&["set", "k", "v"], 0, "OK (version {v:k})\n");
    check(&["--raw", "set", "k", "w", "--xx"], 0, "OK\n");
    check(
        &["--json", "set", "k", "v2", "--ttl", "600000"],
        0,
        "{\"stored\":true,\"version\":{v:k}}\n",
    );
    check(
        &["set", "k", "x", "--nx"],
        1,
        "(not stored: the key exists)\n",
    );
    check(
        &["set", "absent", "x", "--xx"],
        1,
        "(not stored: the key does not exist)\n",
    );
    check(&["--raw", "set", "k", "x", "--nx"], 1, "");
    check(
        &["--json", "set", "k", "x", "--nx"],
        1,
        "{\"stored\":false}\n",
    );
    check(&["get", "k"], 0, "\"v2\" (version {v:k})\n");
    check(&["get", "absent"], 1, "(not found)\n");
    check(&["--raw", "get", "absent"], 1, "");
    check(&["--json", "get", "absent"], 1, "null\n");
    check(&["exists", "k"], 0, "1\n");
    check(&["exists", "k", "absent", "k"], 0, "2\n");
    check(&["exists", "absent"], 1, "0\n");
    check(&["--json", "exists", "k"], 0, "1\n");
    let before = version("k").to_string();
    check(&["cas", "k", &before, "v4"], 0, "OK (version {v:k})\n");
    check(
        &["cas", "k", &before, "v5"],
        1,
        "(version mismatch: the current version is {v:k})\n",
    );
    check(
        &["--json", "cas", "k", &before, "v5"],
        1,
        "{\"current_version\":{v:k},\"stored\":false}\n",
    );
    check(&["cas", "absent", "3", "v"], 1, "(not found)\n");
    check(
        &["cas", "new", "0", "v", "--ttl", "600000"],
        0,
        "OK (version {v:new})\n",
    );
    check(&["incr", "n"], 0, "1\n");
    check(&["incr", "n", "10"], 0, "11\n");
    check(&["decr", "n", "-4"], 0, "15\n");
    check(&["--raw", "decr", "n"], 0, "14\n");
    check(&["ttl", "n"], 0, "(no expiry)\n");
    check(&["--raw", "ttl", "n"], 0, "-1\n");
    check(&["--raw", "ttl", "absent"], 1, "-2\n");
    check(&["ttl", "absent"], 1, "(not found)\n");
    check(
        &["--json", "ttl", "n"],
        0,
        "{\"exists\":true,\"persistent\":true,\"remaining_ms\":null}\n",
    );
    check(&["expire", "n", "600000"], 0, "1\n");
    check(&["expire", "absent", "5"], 1, "0\n");
    let ttl = cli(a, &["--raw", "ttl", "n"]).stdout();
    let remaining: u64 = ttl.trim().parse().unwrap();
    assert!(remaining > 0 && remaining <= 600_000, "{ttl}");
    assert!(cli(a, &["ttl", "n"]).stdout().ends_with(" ms\n"));
    check(&["persist", "n"], 0, "1\n");
    check(&["persist", "n"], 1, "0\n");
    check(&["--json", "persist", "n"], 1, "false\n");
    check(&["mset", "m:1", "one", "m:2", "two"], 0, "OK\n");
    check(
        &["mget", "m:1", "absent", "m:2"],
        0,
        "\"m:1\" = \"one\" (version {v:m:1})\n\"absent\" = (not found)\n\"m:2\" = \"two\" (version {v:m:2})\n",
    );
    check(
        &["--json", "mget", "m:1", "absent"],
        0,
        "[{\"key\":\"m:1\",\"value\":\"one\",\"version\":{v:m:1}},{\"key\":\"absent\",\"value\":null}]\n",
    );
    check(&["scan", "m:"], 0, "\"m:1\"\n\"m:2\"\n");
    check(&["scan", "m:", "--count", "1"], 0, "\"m:1\"\n\"m:2\"\n");
    check(&["--raw", "scan", "m:"], 0, "m:1\nm:2\n");
    check(&["--json", "scan", "m:"], 0, "\"m:1\"\n\"m:2\"\n");
    check(&["scan", "nothing:"], 0, "(no keys)\n");
    check(&["--raw", "scan", "nothing:"], 0, "");
    check(&["del", "m:1", "m:2", "absent"], 0, "2\n");
    check(&["del", "m:1"], 1, "0\n");
    check(&["publish", "news", "hello"], 0, "0\n");
    check(
        &["--json", "publish", "news", "hello"],
        0,
        "{\"receivers\":0}\n",
    );
    check(&["snapshot", "now"], 2, "");
    let snapshot = cli(a, &["snapshot"]);
    assert_eq!(snapshot.code, 3, "{snapshot:?}");
    assert!(
        snapshot
            .stderr
            .contains("FAILED_PRECONDITION: persistence is off"),
        "{snapshot:?}"
    );
    let info = cli(a, &["info"]).stdout();
    assert!(info.starts_with("shards: 2\nops: "), "{info}");
    let raw = cli(a, &["--raw", "info"]).stdout();
    assert!(raw.starts_with("shards:2\nops:"), "{raw}");
    assert!(raw.contains("\nshard1.forwarded_in:"), "{raw}");
    let json: serde_json::Value =
        serde_json::from_slice(&cli(a, &["--json", "info"]).stdout).unwrap();
    assert_eq!(json["shards"].as_array().unwrap().len(), 2);
    assert!(json["total"]["keys"].as_u64().unwrap() >= 3, "{json}");

    // get --file PATH in every format.
    let directory = std::env::temp_dir().join(format!("veddb-cli-formats-{}", std::process::id()));
    std::fs::create_dir_all(&directory).unwrap();
    let path = directory.join("value").to_string_lossy().into_owned();
    check(
        &["get", "k", "--file", &path],
        0,
        &format!("OK (2 bytes written to {path}, version {{v:k}})\n"),
    );
    check(&["--raw", "get", "k", "--file", &path], 0, "OK\n");
    check(
        &["--json", "get", "k", "--file", &path],
        0,
        &format!("{{\"bytes\":2,\"path\":\"{path}\",\"version\":{{v:k}}}}\n"),
    );
    assert_eq!(std::fs::read(&path).unwrap(), b"v4");
    let _ = std::fs::remove_dir_all(&directory);
}

/// An error names its status once: the engine's own name when its message has one
/// (OUT_OF_MEMORY, not "RESOURCE_EXHAUSTED: OUT_OF_MEMORY"), else the gRPC code's.
#[test]
fn errors_name_one_status() {
    let server = Server::with_memory(2 << 20);
    let names = [
        "OUT_OF_MEMORY",
        "RESOURCE_EXHAUSTED",
        "INVALID_ARGUMENT",
        "FAILED_PRECONDITION",
        "NOT_FOUND",
    ];
    let status_names = |stderr: &str| {
        names
            .iter()
            .map(|name| stderr.matches(name).count())
            .sum::<usize>()
    };
    let large = vec![7u8; 1_500_000];
    let cases: [(Vec<&str>, &[u8], &str); 3] = [
        (
            vec!["set", "big", "--file", "-"],
            &large,
            "veddb-cli: OUT_OF_MEMORY: the write needs",
        ),
        (vec!["set", "text", "abc"], b"", ""),
        (
            vec!["incr", "text"],
            b"",
            "veddb-cli: INVALID_ARGUMENT: value is not a decimal 64-bit integer\n",
        ),
    ];
    for (args, stdin, expected) in cases {
        let run = cli_in(&server.address, &args, stdin);
        if expected.is_empty() {
            assert_eq!(run.code, 0, "{run:?}");
            continue;
        }
        assert_eq!(run.code, 3, "{args:?}: {run:?}");
        assert!(run.stderr.starts_with(expected), "{args:?}: {run:?}");
        assert_eq!(status_names(&run.stderr), 1, "{args:?}: {run:?}");
    }
    let key = "k".repeat(70_000);
    let run = cli(&server.address, &["get", &key]);
    assert_eq!(run.code, 3, "{run:?}");
    assert!(
        run.stderr
            .starts_with("veddb-cli: RESOURCE_EXHAUSTED: key of 70000 bytes"),
        "{run:?}"
    );
    assert_eq!(status_names(&run.stderr), 1, "{run:?}");
}

/// `--repeat N` runs a command N times, `--interval S` apart; a refusal stops the runs; the
/// exit status is the last run's.
#[test]
fn repeat_and_interval() {
    let server = Server::start();
    let run = cli(&server.address, &["--repeat", "3", "incr", "n"]);
    assert_eq!((run.code, run.stdout()), (0, "1\n2\n3\n".into()), "{run:?}");
    let run = cli(
        &server.address,
        &["-r", "2", "-i", "0.05", "--raw", "incr", "n"],
    );
    assert_eq!((run.code, run.stdout()), (0, "4\n5\n".into()), "{run:?}");
    let run = cli(&server.address, &["--repeat", "2", "get", "absent"]);
    assert_eq!(
        (run.code, run.stdout()),
        (1, "(not found)\n(not found)\n".into())
    );
    server
        .client()
        .set("text", "abc", SetOptions::default())
        .unwrap();
    let run = cli(&server.address, &["--repeat", "5", "incr", "text"]);
    assert_eq!(run.code, 3, "{run:?}");
    assert_eq!(
        run.stderr.matches("INVALID_ARGUMENT").count(),
        1,
        "stops at the first refusal"
    );
    // Until Ctrl-C: exit 130.
    let mut child = Command::new(CLI)
        .args([
            "--grpc",
            &server.address,
            "--repeat",
            "-1",
            "--interval",
            "0.01",
            "incr",
            "forever",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "1\n");
    interrupt(&child);
    assert_eq!(wait(&mut child), 130);
}

/// `--latency`: a line with min, p50, p99 and max, in each format; `--repeat N` samples, or
/// until Ctrl-C (a line every second when not on a terminal, and a last one).
#[test]
fn latency_shows_percentiles() {
    let server = Server::start();
    let run = cli(
        &server.address,
        &["--latency", "--repeat", "20", "--interval", "0"],
    );
    assert_eq!(run.code, 0, "{run:?}");
    let line = run.stdout();
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        [words[0], words[3], words[6], words[9], words[12], words[13]],
        ["min", "p50", "p99", "max", "(20", "samples)"],
        "{line}"
    );
    let numbers: Vec<f64> = [1, 4, 7, 10]
        .iter()
        .map(|&i| words[i].parse().unwrap())
        .collect();
    assert!(numbers.windows(2).all(|pair| pair[0] <= pair[1]), "{line}");
    let run = cli(
        &server.address,
        &["--latency", "--json", "-r", "5", "-i", "0.001"],
    );
    let json: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(json["samples"], 5);
    assert!(json["p99_us"].as_f64().unwrap() >= json["p50_us"].as_f64().unwrap());
    let run = cli(&server.address, &["--latency", "--raw", "-r", "3"]);
    assert_eq!(run.stdout().split_whitespace().last(), Some("3"), "{run:?}");

    let mut child = Command::new(CLI)
        .args(["--grpc", &server.address, "--latency"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(line.starts_with("min ") && line.contains(" p99 "), "{line}");
    interrupt(&child);
    assert_eq!(wait(&mut child), 130);
    let mut last = String::new();
    stdout.read_to_string(&mut last).unwrap();
    assert!(
        last.ends_with("samples)\n"),
        "a last line after Ctrl-C: {last:?}"
    );
}

/// `subscribe`: messages as they come, escaped; `--count N` ends it after N; Ctrl-C ends it
/// with 130 and unsubscribes.
#[test]
fn subscribe_until_count_or_ctrl_c() {
    let server = Server::start();
    let publisher = server.client();
    let spawn = |args: &[&str]| {
        Command::new(CLI)
            .args(["--grpc", &server.address])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // Waits for the subscription to be in place (its note on standard error).
    let subscribed = |child: &mut Child| {
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        stderr.read_line(&mut line).unwrap();
        assert!(line.starts_with("subscribed to \"news\""), "{line}");
        stderr
    };

    let mut counted = spawn(&["--raw", "subscribe", "news", "--count", "2"]);
    let _stderr = subscribed(&mut counted);
    for message in ["one", "two\nlines"] {
        assert_eq!(publisher.publish("news", message).unwrap(), 1);
    }
    assert_eq!(wait(&mut counted), 0);
    let mut stdout = String::new();
    counted
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    assert_eq!(stdout, "one\ntwo\nlines\n");

    let mut endless = spawn(&["subscribe", "news"]);
    let mut stderr = subscribed(&mut endless);
    assert_eq!(publisher.publish("news", "a\x00b").unwrap(), 1);
    let mut stdout = BufReader::new(endless.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "\"a\\x00b\"\n");
    interrupt(&endless);
    assert_eq!(wait(&mut endless), 130);
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "unsubscribed from \"news\"\n");
    eventually("the subscription is gone", || {
        publisher.publish("news", "late").unwrap() == 0
    });
}

// ---------------------------------------------------------------------------------------------
// The prompt, through a real terminal.

/// A terminal of its own: a tmux server on a private socket (in the test's directory), one
/// session running one program; the server is killed when dropped.
struct Terminal {
    socket: std::path::PathBuf,
    /// Where the program's exit status is written when it exits.
    status: std::path::PathBuf,
}

impl Terminal {
    /// Runs `command` (a shell command line, in `directory`) in a new 200x50 terminal.
    fn start(command: &str, directory: &std::path::Path) -> Terminal {
        static SESSIONS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let number = SESSIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let terminal = Terminal {
            socket: directory.join(format!("tmux-{number}")),
            status: directory.join(format!("status-{number}")),
        };
        match Command::new("tmux").arg("-V").output() {
            Ok(output) if output.status.success() => {}
            _ => panic!(
                "tmux is not installed: the terminal tests of veddb-cli need it \
                 (apt-get install tmux; .ci/run installs it)"
            ),
        }
        // The program's exit status goes to a file: tmux may take its time to notice that a
        // pane's program has exited. The shell survives Ctrl-C (a trap that does nothing: the
        // program, started afresh, gets Ctrl-C's default action and handles it as it wants).
        let wrapped = format!(
            "bash -c 'trap : INT; {command}; echo $? > {}'",
            terminal.status.display()
        );
        terminal.tmux(&[
            "new-session",
            "-d",
            "-s",
            "t",
            "-x",
            "200",
            "-y",
            "50",
            &wrapped,
        ]);
        // Keep the pane once the program exits, to show its screen if a test fails then.
        terminal.tmux(&["set-option", "-t", "t", "remain-on-exit", "on"]);
        terminal
    }

    fn tmux(&self, args: &[&str]) -> String {
        let output = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(["-f", "/dev/null"])
            .args(args)
            .output()
            .expect("tmux runs");
        assert!(
            output.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Types `text` as it is.
    fn type_text(&self, text: &str) {
        self.tmux(&["send-keys", "-t", "t", "-l", text]);
    }

    /// Pastes `text` as a terminal does (bracketed paste).
    fn paste(&self, text: &str) {
        self.tmux(&["set-buffer", "--", text]);
        self.tmux(&["paste-buffer", "-p", "-t", "t"]);
    }

    /// Presses keys (tmux names: Enter, Up, Left, Tab, C-c, C-d, BSpace).
    fn press(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "t"];
        args.extend_from_slice(keys);
        self.tmux(&args);
    }

    /// The whole screen and its scrollback, wrapped lines joined.
    fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-J", "-t", "t", "-S", "-"])
    }

    /// Waits until `condition` holds for the screen; the screen.
    fn wait_until(&self, what: &str, condition: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let screen = self.screen();
            if condition(&screen) {
                return screen;
            }
            if Instant::now() > deadline {
                let lines: Vec<&str> = screen.trim_end().lines().collect();
                let tail = lines[lines.len().saturating_sub(20)..].join("\n");
                panic!("{what}: not on the screen within {PATIENCE:?}; its last lines:\n{tail}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the screen holds `text`; the screen.
    fn wait_for(&self, text: &str) -> String {
        self.wait_until(&format!("{text:?}"), |screen| screen.contains(text))
    }

    /// The exit status of the program, once it has exited.
    fn exit_status(&self) -> i32 {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(status) = std::fs::read_to_string(&self.status) {
                if let Ok(status) = status.trim().parse() {
                    return status;
                }
            }
            if Instant::now() > deadline {
                let screen = self.screen();
                let lines: Vec<&str> = screen.trim_end().lines().collect();
                let tail = lines[lines.len().saturating_sub(20)..].join("\n");
                panic!("the program did not exit; the last lines of the screen:\n{tail}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .arg("kill-server")
            .output();
    }
}

/// A prompt on a terminal, its history in `history`.
///
/// Keys are sent so that none is typed while the program is between two lines: the line
/// editor drops what it read past the end of a line. So a line is typed, its echo awaited, and
/// only then is the key that ends it pressed; and the next line waits for the next prompt.
struct Prompt {
    terminal: Terminal,
    /// The prompt as it is shown: the target, then "> " (a screen capture drops the space of
    /// an empty line).
    prompt: String,
}

impl Prompt {
    fn start(server: &Server, history: &std::path::Path) -> Prompt {
        let terminal = Terminal::start(
            &format!(
                "env VEDDB_HISTFILE={} {CLI} --grpc {}",
                history.display(),
                server.address
            ),
            history
                .parent()
                .expect("the history file is in a directory"),
        );
        let prompt = Prompt {
            terminal,
            prompt: format!("{}> ", server.address),
        };
        prompt.wait_for_prompts(1);
        prompt
    }

    /// Lines of `screen` that start with the prompt.
    fn prompt_lines<'s>(&self, screen: &'s str) -> Vec<&'s str> {
        let marker = self.prompt.trim_end();
        screen
            .lines()
            .filter(|line| line.starts_with(marker))
            .collect()
    }

    /// Prompts shown so far.
    fn prompts(&self) -> usize {
        self.prompt_lines(&self.terminal.screen()).len()
    }

    /// Waits until `count` prompts have been shown; the screen.
    fn wait_for_prompts(&self, count: usize) -> String {
        self.terminal
            .wait_until(&format!("{count} prompts"), |screen| {
                self.prompt_lines(screen).len() >= count
            })
    }

    /// Types `text` and waits until the line being edited ends with it.
    fn type_echoed(&self, text: &str) {
        self.terminal.type_text(text);
        self.wait_for_line(text);
    }

    /// Waits until the line being edited starts with `text` (a hint may follow it).
    fn wait_for_line(&self, text: &str) {
        let typed = format!("{}{text}", self.prompt);
        self.terminal
            .wait_until(&format!("the line {typed:?}"), |screen| {
                self.prompt_lines(screen)
                    .last()
                    .is_some_and(|line| line.starts_with(typed.trim_end()))
            });
    }

    /// Types `line`, presses Enter, waits for the next prompt; the screen.
    fn run(&self, line: &str) -> String {
        let before = self.prompts();
        self.type_echoed(line);
        self.terminal.press(&["Enter"]);
        self.wait_for_prompts(before + 1)
    }

    /// Presses keys that end the line (Enter, Ctrl-C), waits for the next prompt; the screen.
    fn press_and_wait(&self, keys: &[&str]) -> String {
        let before = self.prompts();
        self.terminal.press(keys);
        self.wait_for_prompts(before + 1)
    }
}

/// A temporary directory for a history file, removed when dropped.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("veddb-cli-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Up recalls earlier lines (this session's, and a previous session's from the history file);
/// Left and Backspace edit the line; Ctrl-C drops the line being typed; Ctrl-D leaves with 0.
#[test]
fn prompt_history_and_line_editing() {
    let server = Server::start();
    let client = server.client();
    let directory = TempDir::new("history");
    let history = directory.0.join("history");

    let first = Prompt::start(&server, &history);
    first.run("incr n");
    first.press_and_wait(&["Up", "Enter"]);
    assert_eq!(client.get("n").unwrap().unwrap().0, &b"2"[..]);
    // Editing: "png", two Lefts, "i" gives "ping" (cursor moves); "pinx", Backspace, "g".
    first.type_echoed("png");
    first.terminal.press(&["Left", "Left"]);
    first.terminal.type_text("i");
    let screen = first.press_and_wait(&["Enter"]);
    assert!(
        screen.contains(&format!("{}ping\nPONG\n", first.prompt)),
        "{screen}"
    );
    first.type_echoed("get nx");
    first.terminal.press(&["BSpace"]);
    let screen = first.press_and_wait(&["Enter"]);
    assert!(
        screen.contains(&format!("{}get n", first.prompt)) && screen.contains("\n\"2\" (version "),
        "{screen}"
    );
    // Ctrl-C drops the line being typed: nothing runs.
    first.type_echoed("incr n");
    first.press_and_wait(&["C-c"]);
    first.terminal.press(&["C-d"]);
    assert_eq!(first.terminal.exit_status(), 0);
    assert_eq!(
        client.get("n").unwrap().unwrap().0,
        &b"2"[..],
        "Ctrl-C ran nothing"
    );
    let saved = std::fs::read_to_string(&history).expect("the history file");
    assert!(
        saved.contains("incr n\n") && saved.contains("get n\n"),
        "{saved}"
    );

    // A new session recalls the last one's lines: Up gives "get n", Up again "ping".
    let second = Prompt::start(&server, &history);
    let screen = second.press_and_wait(&["Up", "Up", "Enter"]);
    assert!(
        screen.contains(&format!("{}ping\nPONG\n", second.prompt)),
        "{screen}"
    );
    second.type_echoed("quit");
    second.terminal.press(&["Enter"]);
    assert_eq!(second.terminal.exit_status(), 0);
}

/// At the prompt, "..." takes escapes (any byte), '...' takes everything as it is; values are
/// shown escaped, and what is shown can be typed back; bad quoting is an error and the prompt
/// goes on.
#[test]
fn prompt_escaping_both_ways() {
    let server = Server::start();
    let client = server.client();
    let directory = TempDir::new("escaping");
    let prompt = Prompt::start(&server, &directory.0.join("history"));

    prompt.run(r#"set bin "a\x00\xff\"b\n" --ttl 600000"#);
    assert_eq!(
        client.get("bin").unwrap().unwrap().0,
        &b"a\x00\xff\"b\n"[..]
    );
    let screen = prompt.run("get bin");
    let shown = r#""a\x00\xff\"b\n" (version "#;
    assert!(screen.contains(shown), "{screen}");
    // What was shown, typed back, is the same bytes.
    prompt.run(r#"set copy "a\x00\xff\"b\n""#);
    assert_eq!(
        client.get("copy").unwrap().unwrap().0,
        &b"a\x00\xff\"b\n"[..]
    );
    prompt.run(r"set literal 'a\x00 b'");
    assert_eq!(client.get("literal").unwrap().unwrap().0, &br"a\x00 b"[..]);
    // A quoted word is never an option.
    prompt.run(r#"set dashes "--nx""#);
    assert_eq!(client.get("dashes").unwrap().unwrap().0, &b"--nx"[..]);
    // UTF-8 is shown as it is.
    prompt.run("set word héllo");
    let screen = prompt.run("get word");
    assert!(screen.contains("\"héllo\" (version "), "{screen}");

    let screen = prompt.run(r#"set k "unterminated"#);
    assert!(
        screen.contains("(error) unbalanced quotes: a closing \" is missing"),
        "{screen}"
    );
    let screen = prompt.run(r#"set k "\q""#);
    assert!(screen.contains("(error) unknown escape \\q"), "{screen}");
    let screen = prompt.run("set k v --nx --xx");
    assert!(
        screen.contains("(error) --nx and --xx cannot be given together"),
        "{screen}"
    );
    assert_eq!(client.get("k").unwrap(), None);
    let screen = prompt.run("ping");
    assert!(
        screen.contains(&format!("{}ping\nPONG\n", prompt.prompt)),
        "{screen}"
    );

    // Lines pasted at once run one by one.
    let before = prompt.prompts();
    prompt
        .terminal
        .paste("incr pasted\nset \"pasted too\" \"\\x01\"\nincr pasted");
    prompt.terminal.wait_until("the pasted lines", |screen| {
        screen.matches("incr pasted").count() == 2
    });
    prompt.terminal.press(&["Enter"]);
    prompt.wait_for_prompts(before + 1);
    eventually("the pasted lines ran", || {
        client.get("pasted").unwrap().map(|(value, _)| value) == Some(Bytes::from_static(b"2"))
    });
    assert_eq!(client.get("pasted too").unwrap().unwrap().0, &b"\x01"[..]);
}

/// The target is in the prompt; Tab completes command names; `help` and `help COMMAND`;
/// Ctrl-C leaves a running subscribe back to the prompt, unsubscribed.
#[test]
fn prompt_completion_help_and_ctrl_c_out_of_subscribe() {
    let server = Server::start();
    let publisher = server.client();
    let directory = TempDir::new("subscribe");
    let prompt = Prompt::start(&server, &directory.0.join("history"));
    assert!(prompt
        .terminal
        .screen()
        .contains(&format!("connected to {}", server.address)));

    let screen = prompt.run("help");
    assert!(screen.contains("exists KEY..."), "{screen}");
    let screen = prompt.run("help set");
    assert!(
        screen.contains("usage: set KEY (VALUE | --file PATH)"),
        "{screen}"
    );
    let screen = prompt.run("get --help");
    assert!(screen.contains("usage: get KEY [--file PATH]"), "{screen}");

    // "sub", Tab: "subscribe ".
    prompt.type_echoed("sub");
    prompt.terminal.press(&["Tab"]);
    prompt.wait_for_line("subscribe");
    prompt.terminal.type_text("news");
    prompt.wait_for_line("subscribe news");
    prompt.terminal.press(&["Enter"]);
    prompt
        .terminal
        .wait_for("subscribed to \"news\"; Ctrl-C to stop");
    assert!(prompt
        .terminal
        .screen()
        .contains(&format!("{}subscribe news\n", prompt.prompt)));
    assert_eq!(publisher.publish("news", "hello\x01").unwrap(), 1);
    prompt.terminal.wait_for("\"hello\\x01\"");
    let before = prompt.prompts();
    prompt.terminal.press(&["C-c"]);
    prompt.terminal.wait_for("unsubscribed from \"news\"");
    prompt.wait_for_prompts(before + 1);
    eventually("the subscription is gone", || {
        publisher.publish("news", "late").unwrap() == 0
    });
    // The prompt goes on.
    let screen = prompt.run("ping");
    assert!(screen.contains("PONG"), "{screen}");
    // A second subscribe, a second Ctrl-C: still back to the prompt.
    prompt.type_echoed("subscribe other");
    prompt.terminal.press(&["Enter"]);
    prompt.terminal.wait_for("subscribed to \"other\"");
    prompt.press_and_wait(&["C-c"]);
    prompt.type_echoed("exit");
    prompt.terminal.press(&["Enter"]);
    assert_eq!(prompt.terminal.exit_status(), 0);
}
