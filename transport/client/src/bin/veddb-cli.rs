//! `veddb-cli`: a command-line client, like `redis-cli`.
//!
//! `veddb-cli --local NAME <command> [args]` (shared memory, same machine) or
//! `veddb-cli --grpc HOST:PORT <command> [args]`; no command: an interactive prompt. Values can
//! come from a file or standard input (`set KEY --file PATH`, `--file -`) and go to one
//! (`get KEY --file PATH`), byte for byte. Exit status: 0 success, 1 the key was not found or a
//! condition did not hold, 2 usage error (or a `--file` that cannot be read or written), 3 the
//! server refused (with its message), 4 could not connect.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use argh::FromArgs;
use bytes::Bytes;
use veddb_client::veddb_wire::grpc_client::SubscribeEvent;
use veddb_client::veddb_wire::{Request, Response, SetCondition, SetOptions, Ttl};
use veddb_client::{Client, ClientError};

/// VedDB command-line client.
#[derive(FromArgs)]
#[argh(
    note = "Commands:
  ping
  get KEY
  get KEY --file PATH write the value's bytes, exactly, to PATH (- for standard output);
                      --output PATH is the same
  set KEY VALUE [--ttl MS] [--nx|--xx] [--keepttl]
  set KEY --file PATH [--ttl MS] [--nx|--xx] [--keepttl]
                      the value is PATH's bytes, exactly (- for standard input)
  del KEY
  cas KEY VERSION VALUE
  incr KEY [DELTA]
  decr KEY [DELTA]
  expire KEY MS
  ttl KEY
  persist KEY
  mget KEY...
  mset KEY VALUE...
  scan [PREFIX] [--count N]
  publish TOPIC MESSAGE
  publish TOPIC --file PATH
                      the message is PATH's bytes, exactly (- for standard input)
  subscribe TOPIC
  info
  snapshot            write every shard to the server's --data-dir; OK once durable",
    note = "Exit status: 0 success, 1 the key was not found or a condition did not hold,
2 usage error (or a --file that cannot be read or written), 3 the server refused (with its
message), 4 could not connect."
)]
struct Args {
    /// attach to the local instance NAME through shared memory (veddb-server --create --name NAME)
    #[argh(option)]
    local: Option<String>,

    /// server gRPC address, HOST:PORT (default 127.0.0.1:50051; ignored with --local)
    #[argh(option, default = "String::from(\"127.0.0.1:50051\")")]
    grpc: String,

    /// the command and its arguments: ping | get KEY [--file PATH] |
    /// set KEY (VALUE | --file PATH) [--ttl MS] [--nx|--xx] |
    /// del KEY | cas KEY VERSION VALUE | incr KEY [DELTA] | decr KEY [DELTA] | expire KEY MS |
    /// ttl KEY | persist KEY | mget KEY... | mset KEY VALUE... | scan [PREFIX] [--count N] |
    /// publish TOPIC (MESSAGE | --file PATH) | subscribe TOPIC | info | snapshot (see Commands
    /// in --help)
    #[argh(positional, greedy)]
    command: Vec<String>,
}

/// Prints bytes safely: printable ASCII as is, everything else escaped (\n, \xNN).
fn show(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 2);
    out.push('"');
    for &byte in bytes {
        match byte {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x20..=0x7e => out.push(byte as char),
            _ => out.push_str(&format!("\\x{byte:02x}")),
        }
    }
    out.push('"');
    out
}

enum Outcome {
    Done,
    Negative,
}

fn usage(message: &str) -> Result<Outcome, (u8, String)> {
    Err((2, format!("usage: {message}")))
}

fn number<T: std::str::FromStr>(text: &str, what: &str) -> Result<T, (u8, String)> {
    text.parse()
        .map_err(|_| (2, format!("{what} must be a number, not {text:?}")))
}

/// What a command ends with: success, a negative answer (exit 1), or an error with its exit
/// status and message.
type CommandResult = Result<Outcome, (u8, String)>;

/// The server refused (exit 3).
fn refused(error: ClientError) -> (u8, String) {
    (3, error.to_string())
}

fn b(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}

/// Prints a negative answer (exit status 1).
fn negative(text: &str) -> CommandResult {
    println!("{text}");
    Ok(Outcome::Negative)
}

fn unexpected(answer: Response) -> CommandResult {
    Err((3, format!("unexpected answer {answer:?}")))
}

/// Where a command may read a value from (`--file`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Input {
    /// Files, and standard input (`--file -`).
    FilesAndStdin,
    /// Files only: standard input carries the commands (the prompt).
    FilesOnly,
}

/// Runs one command line (already split into words).
fn run(client: &Client, words: &[String], input: Input) -> CommandResult {
    let Some((command, rest)) = words.split_first() else {
        return usage("veddb-cli [--grpc HOST:PORT] <command> [args]; see --help");
    };
    match (command.to_ascii_lowercase().as_str(), rest) {
        ("ping", []) => ping(client),
        ("get", [key]) => get(client, key),
        ("get", [key, flag, path]) if flag == "--file" || flag == "--output" => {
            get_to_file(client, key, path)
        }
        ("set", [key, flag, path, flags @ ..]) if flag == "--file" => {
            let value = read_input(path, input)?;
            set(client, key, value, flags)
        }
        ("set", [_, flag]) if flag == "--file" => {
            usage("set KEY --file PATH (- for standard input)")
        }
        ("set", [key, value, flags @ ..]) => set(client, key, b(value), flags),
        ("del", [key]) => del(client, key),
        ("cas", [key, version, value]) => cas(client, key, version, value),
        (verb @ ("incr" | "decr"), [key, delta @ ..]) => incr(client, verb == "decr", key, delta),
        ("expire", [key, ms]) => {
            let request = Request::Expire {
                key: b(key),
                ttl_ms: number(ms, "MS")?,
            };
            flag_answer(client, request)
        }
        ("persist", [key]) => flag_answer(client, Request::Persist { key: b(key) }),
        ("ttl", [key]) => ttl(client, key),
        ("mget", keys) if !keys.is_empty() => mget(client, keys),
        ("mset", pairs) if !pairs.is_empty() && pairs.len() % 2 == 0 => mset(client, pairs),
        ("scan", args) => scan(client, args),
        ("publish", [topic, flag, path]) if flag == "--file" => {
            let message = read_input(path, input)?;
            println!("{}", client.publish(b(topic), message).map_err(refused)?);
            Ok(Outcome::Done)
        }
        ("publish", [topic, message]) => {
            println!("{}", client.publish(b(topic), b(message)).map_err(refused)?);
            Ok(Outcome::Done)
        }
        ("subscribe", [topic]) => subscribe(client, topic),
        ("info", []) => info(client),
        ("snapshot", []) => {
            client.snapshot().map_err(refused)?;
            println!("OK");
            Ok(Outcome::Done)
        }
        (other, _) => usage(&format!(
            "unknown command or wrong arguments: {other}; see veddb-cli --help"
        )),
    }
}

fn ping(client: &Client) -> CommandResult {
    client.ping().map_err(refused)?;
    println!("PONG");
    Ok(Outcome::Done)
}

fn get(client: &Client, key: &str) -> CommandResult {
    match client.get(b(key)).map_err(refused)? {
        Some((value, version)) => println!("{} (version {version})", show(&value)),
        None => return negative("(not found)"),
    }
    Ok(Outcome::Done)
}

/// `get KEY --file PATH`: the value's bytes, exactly, into PATH (created or truncated; `-`:
/// standard output, with nothing else written there). A missing key writes nothing.
fn get_to_file(client: &Client, key: &str, path: &str) -> CommandResult {
    use std::io::Write;
    let Some((value, version)) = client.get(b(key)).map_err(refused)? else {
        return negative("(not found)");
    };
    if path == "-" {
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(&value)
            .and_then(|()| stdout.flush())
            .map_err(|error| {
                (
                    2,
                    format!("cannot write the value to standard output: {error}"),
                )
            })?;
        return Ok(Outcome::Done);
    }
    std::fs::write(path, &value)
        .map_err(|error| (2, format!("cannot write the value to {path}: {error}")))?;
    println!(
        "OK ({} bytes written to {path}, version {version})",
        value.len()
    );
    Ok(Outcome::Done)
}

/// The bytes of `--file PATH`, exactly: the file's, or standard input's to its end for `-`.
fn read_input(path: &str, input: Input) -> Result<Bytes, (u8, String)> {
    use std::io::Read;
    if path == "-" {
        if input == Input::FilesOnly {
            return Err((
                2,
                "usage: --file - reads standard input, which carries the commands at the \
                 prompt; name a file"
                    .to_string(),
            ));
        }
        let mut bytes = Vec::new();
        std::io::stdin()
            .lock()
            .read_to_end(&mut bytes)
            .map_err(|error| (2, format!("cannot read standard input: {error}")))?;
        return Ok(Bytes::from(bytes));
    }
    std::fs::read(path)
        .map(Bytes::from)
        .map_err(|error| (2, format!("cannot read {path}: {error}")))
}

/// `set KEY VALUE [--ttl MS] [--nx|--xx] [--keepttl]`, the value given or read from `--file`.
fn set(client: &Client, key: &str, value: Bytes, flags: &[String]) -> CommandResult {
    let mut options = SetOptions::default();
    let mut flags = flags.iter();
    while let Some(flag) = flags.next() {
        match flag.as_str() {
            "--nx" => options.condition = SetCondition::IfAbsent,
            "--xx" => options.condition = SetCondition::IfPresent,
            "--keepttl" => options.keep_ttl = true,
            "--ttl" => {
                let Some(ms) = flags.next() else {
                    return usage("set KEY VALUE --ttl MILLISECONDS");
                };
                options.ttl_ms = Some(number(ms, "--ttl")?);
            }
            "--file" => {
                return usage(
                    "set KEY VALUE or set KEY --file PATH: the value is given once, \
                     --file right after the key",
                )
            }
            other => {
                return usage(&format!(
                    "unknown set flag {other}; use --ttl MS, --nx, --xx, --keepttl"
                ))
            }
        }
    }
    match client.set(b(key), value, options).map_err(refused)? {
        Some(version) => println!("OK (version {version})"),
        None => return negative("(not stored: condition not met)"),
    }
    Ok(Outcome::Done)
}

fn del(client: &Client, key: &str) -> CommandResult {
    if client.delete(b(key)).map_err(refused)? {
        println!("1");
        Ok(Outcome::Done)
    } else {
        negative("0")
    }
}

fn cas(client: &Client, key: &str, version: &str, value: &str) -> CommandResult {
    let request = Request::Cas {
        key: b(key),
        expected_version: number(version, "VERSION")?,
        value: b(value),
        ttl_ms: None,
    };
    match client.execute(request).map_err(refused)? {
        Response::Stored { version } => println!("OK (version {version})"),
        Response::VersionMismatch { current } => {
            return negative(&format!("(version mismatch: current version {current})"))
        }
        Response::NotFound => return negative("(not found)"),
        other => return unexpected(other),
    }
    Ok(Outcome::Done)
}

/// `incr KEY [DELTA]`, `decr KEY [DELTA]`.
fn incr(client: &Client, decrement: bool, key: &str, delta: &[String]) -> CommandResult {
    let delta: i64 = match delta {
        [] => 1,
        [delta] => number(delta, "DELTA")?,
        _ => return usage("incr KEY [DELTA]"),
    };
    let delta = if decrement {
        delta
            .checked_neg()
            .ok_or((2, "DELTA out of range".to_string()))?
    } else {
        delta
    };
    println!("{}", client.incr(b(key), delta).map_err(refused)?);
    Ok(Outcome::Done)
}

/// EXPIRE and PERSIST: 1 when the key's TTL changed, else 0 (negative).
fn flag_answer(client: &Client, request: Request) -> CommandResult {
    match client.execute(request).map_err(refused)? {
        Response::Bool(true) => {
            println!("1");
            Ok(Outcome::Done)
        }
        _ => negative("0"),
    }
}

fn ttl(client: &Client, key: &str) -> CommandResult {
    match client.ttl(b(key)).map_err(refused)? {
        Ttl::Missing => return negative("(not found)"),
        Ttl::Persistent => println!("(no expiry)"),
        Ttl::Remaining(ms) => println!("{ms} ms"),
    }
    Ok(Outcome::Done)
}

fn mget(client: &Client, keys: &[String]) -> CommandResult {
    let request = Request::MGet {
        keys: keys.iter().map(|key| b(key)).collect(),
    };
    let values = match client.execute(request).map_err(refused)? {
        Response::Values(values) => values,
        other => return unexpected(other),
    };
    for (key, value) in keys.iter().zip(values) {
        match value {
            Some((value, version)) => println!(
                "{} = {} (version {version})",
                show(key.as_bytes()),
                show(&value)
            ),
            None => println!("{} = (not found)", show(key.as_bytes())),
        }
    }
    Ok(Outcome::Done)
}

fn mset(client: &Client, pairs: &[String]) -> CommandResult {
    let pairs = pairs
        .chunks(2)
        .map(|pair| (b(&pair[0]), b(&pair[1])))
        .collect();
    client.execute(Request::MSet { pairs }).map_err(refused)?;
    println!("OK");
    Ok(Outcome::Done)
}

/// `scan [PREFIX] [--count N]`: every page, to the end.
fn scan(client: &Client, args: &[String]) -> CommandResult {
    let mut prefix = Bytes::new();
    let mut count = 0u32;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if arg == "--count" {
            let Some(n) = args.next() else {
                return usage("scan [PREFIX] [--count N]");
            };
            count = number(n, "--count")?;
        } else {
            prefix = b(arg);
        }
    }
    let mut cursor = Bytes::new();
    loop {
        let request = Request::Scan {
            cursor: cursor.clone(),
            prefix: prefix.clone(),
            count,
        };
        let (keys, next) = match client.execute(request).map_err(refused)? {
            Response::Keys { keys, cursor } => (keys, cursor),
            other => return unexpected(other),
        };
        for key in keys {
            println!("{}", show(&key));
        }
        if next.is_empty() {
            return Ok(Outcome::Done);
        }
        cursor = next;
    }
}

fn subscribe(client: &Client, topic: &str) -> CommandResult {
    let subscription = client.subscribe(b(topic)).map_err(refused)?;
    eprintln!("subscribed to {}; Ctrl-C to stop", show(topic.as_bytes()));
    for event in subscription {
        match event.map_err(refused)? {
            SubscribeEvent::Message { message, dropped } => {
                if dropped > 0 {
                    println!("(dropped {dropped} messages: this subscriber was too slow)");
                }
                println!("{}", show(&message));
            }
            SubscribeEvent::Subscribed => {}
        }
    }
    Ok(Outcome::Done)
}

fn info(client: &Client) -> CommandResult {
    let info = client.info().map_err(refused)?;
    let total = info.total();
    println!("shards: {}", info.shards.len());
    println!(
        "ops: {}  hits: {}  misses: {}  keys: {}  memory: {} / {} bytes",
        total.ops,
        total.hits,
        total.misses,
        total.keys,
        total.memory_bytes_used,
        total.memory_bytes_limit
    );
    println!(
        "expired: {}  evicted: {}  out-of-memory errors: {}  topics: {}  subscribers: {}  published: {}  delivered: {}  dropped: {}",
        total.expired_keys, total.evicted_keys, total.out_of_memory_errors, total.topics, total.subscribers,
        total.messages_published, total.messages_delivered, total.messages_dropped
    );
    for shard in &info.shards {
        println!(
            "  shard {}: ops {} keys {} memory {} forwarded-in {}",
            shard.shard, shard.ops, shard.keys, shard.memory_bytes_used, shard.forwarded_in
        );
    }
    Ok(Outcome::Done)
}

/// Splits a line into words like a shell: whitespace separates, '...' is literal, "..." allows
/// \" \\ \n \t \xNN escapes (so binary keys and values can be typed).
fn split_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word: Vec<u8> = Vec::new();
    let mut in_word = false;
    let mut chars = line.chars().peekable();
    let finish = |word: &mut Vec<u8>| String::from_utf8_lossy(&std::mem::take(word)).into_owned();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(finish(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.extend_from_slice(c.to_string().as_bytes()),
                        None => return Err("unterminated '".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some('n') => word.push(b'\n'),
                            Some('t') => word.push(b'\t'),
                            Some('r') => word.push(b'\r'),
                            Some('x') => {
                                let hex: String = chars.by_ref().take(2).collect();
                                let byte = u8::from_str_radix(&hex, 16)
                                    .map_err(|_| format!("bad escape \\x{hex}"))?;
                                word.push(byte);
                            }
                            Some(c) => word.extend_from_slice(c.to_string().as_bytes()),
                            None => return Err("unterminated \"".into()),
                        },
                        Some(c) => word.extend_from_slice(c.to_string().as_bytes()),
                        None => return Err("unterminated \"".into()),
                    }
                }
            }
            c => {
                in_word = true;
                word.extend_from_slice(c.to_string().as_bytes());
            }
        }
    }
    if in_word {
        words.push(finish(&mut word));
    }
    Ok(words)
}

/// The prompt: one command per line until `quit` or end of input. Errors are printed and the
/// prompt goes on; the exit status is 0.
fn interactive(client: &Client, target: &str) -> ExitCode {
    use std::io::{BufRead, IsTerminal, Write};
    let terminal = std::io::stdin().is_terminal();
    if terminal {
        eprintln!("connected to {target}; type a command (help, quit)");
    }
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        if terminal {
            print!("veddb> ");
            let _ = std::io::stdout().flush();
        }
        let Some(Ok(line)) = lines.next() else {
            return ExitCode::SUCCESS;
        };
        let words = match split_words(&line) {
            Ok(words) => words,
            Err(error) => {
                eprintln!("(error) {error}");
                continue;
            }
        };
        match words
            .first()
            .map(|word| word.to_ascii_lowercase())
            .as_deref()
        {
            None => continue,
            Some("quit" | "exit") => return ExitCode::SUCCESS,
            Some("help") => {
                println!("commands: ping, get, set, del, cas, incr, decr, expire, ttl, persist, mget, mset, scan, publish, subscribe, info, snapshot, quit (veddb-cli --help for arguments)");
                continue;
            }
            Some(_) => {}
        }
        match run(client, &words, Input::FilesOnly) {
            Ok(_) => {}
            Err((_, message)) => eprintln!("(error) {message}"),
        }
    }
}

fn main() -> ExitCode {
    let args: Args = argh::from_env();
    let (connected, target) = match &args.local {
        Some(name) => (
            Client::connect_local(name),
            format!("local instance {name}"),
        ),
        None => (Client::connect_grpc(&args.grpc), args.grpc.clone()),
    };
    let client = match connected {
        Ok(client) => client,
        Err(error) => {
            eprintln!("veddb-cli: cannot connect to {target}: {error}");
            return ExitCode::from(4);
        }
    };
    if args.command.is_empty() {
        return interactive(&client, &target);
    }
    match run(&client, &args.command, Input::FilesAndStdin) {
        Ok(Outcome::Done) => ExitCode::SUCCESS,
        Ok(Outcome::Negative) => ExitCode::from(1),
        Err((code, message)) => {
            eprintln!("veddb-cli: {message}");
            ExitCode::from(code)
        }
    }
}
