//! The `redis` scenario: the KV workloads of `local` and `grpc` against a Redis server, through
//! its own protocol (RESP2), with a minimal client written here over a blocking
//! `std::net::TcpStream` (`--addr`) or `std::os::unix::net::UnixStream` (`--unix`).
//!
//! `--clients` threads each own one connection. Each writes `--depth` commands in one `write`,
//! then reads `--depth` replies (pipelining as `redis-benchmark -P` does), so `--depth 1` measures
//! the round trip of one request and larger depths the round trip of a pipelined batch. The keys
//! are preloaded with MSET before measuring, so a GET that finds nothing counts as an error.
//!
//! The RESP encoder, decoder and connection are shared with the `pubsub` scenario (Redis
//! PUBLISH/SUBSCRIBE).

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argh::FromArgs;
use hdrhistogram::Histogram;

use crate::report::{histogram, Series};
use crate::workload::{parse_duration, Op, Rng, Workload};

/// Key/value pairs per MSET while preloading.
const PRELOAD_CHUNK: usize = 1000;

/// Closed-loop KV load on a running Redis server (RESP2, hand-written client).
#[derive(FromArgs)]
#[argh(subcommand, name = "redis")]
pub struct RedisArgs {
    #[argh(option, default = "String::from(\"127.0.0.1:6379\")")]
    /// server address, HOST:PORT (default 127.0.0.1:6379; ignored with --unix)
    pub addr: String,
    #[argh(option)]
    /// unix socket path of the server (instead of --addr)
    pub unix: Option<String>,
    #[argh(option, default = "String::from(\"get,set\")")]
    /// operations, comma-separated to measure several in turn: get, set, mix (default get,set)
    pub op: String,
    #[argh(option, default = "0.8")]
    /// share of GETs in `mix` (default 0.8)
    pub get_ratio: f64,
    #[argh(option, default = "100_000")]
    /// number of distinct keys, preloaded before measuring (default 100000)
    pub keys: usize,
    #[argh(option, default = "16")]
    /// key size in bytes (default 16)
    pub key_size: usize,
    #[argh(option, default = "64")]
    /// value size in bytes (default 64)
    pub value_size: usize,
    #[argh(option, default = "1")]
    /// client threads, one connection each (default 1)
    pub clients: usize,
    #[argh(option, default = "1")]
    /// requests pipelined per client: written together, then their replies read (default 1)
    pub depth: usize,
    #[argh(option, default = "String::from(\"3s\")")]
    /// measured time per operation (default 3s)
    pub duration: String,
    #[argh(option, default = "String::from(\"500ms\")")]
    /// warm-up time per operation (default 500ms)
    pub warmup: String,
    #[argh(option)]
    /// CPU to pin the client threads to (each thread pins itself; default: not pinned)
    pub pin: Option<usize>,
    #[argh(option)]
    /// write the results as JSON to this file
    pub json: Option<String>,
    #[argh(option)]
    /// plot the latency percentiles as SVG to this file
    pub svg: Option<String>,
}

pub fn settings(args: &RedisArgs) -> serde_json::Value {
    serde_json::json!({
        "scenario": "redis", "addr": args.addr, "unix": args.unix, "op": args.op,
        "get_ratio": args.get_ratio, "keys": args.keys, "key_size": args.key_size,
        "value_size": args.value_size, "clients": args.clients, "depth": args.depth,
        "duration": args.duration, "warmup": args.warmup, "pin": args.pin, "svg": args.svg,
    })
}

// ---------------------------------------------------------------------------------------------
// RESP2

/// One RESP2 value, borrowing its bytes from the buffer it was parsed from.
#[derive(Debug, PartialEq)]
pub enum Value<'a> {
    /// `+OK`
    Simple(&'a [u8]),
    /// `-ERR ...`
    Error(&'a [u8]),
    /// `:42`
    Integer(i64),
    /// `$3\r\nabc` (`None`: the null bulk string `$-1`)
    Bulk(Option<&'a [u8]>),
    /// `*2\r\n...` (`None`: the null array `*-1`)
    Array(Option<Vec<Value<'a>>>),
}

impl Value<'_> {
    /// The text of an error reply, for messages.
    pub fn describe(&self) -> String {
        match self {
            Value::Error(text) => String::from_utf8_lossy(text).into_owned(),
            other => format!("{other:?}"),
        }
    }
}

/// Arrays nested deeper than this are refused (no reply of a command used here nests at all).
const MAX_NESTING: usize = 8;
/// The longest bulk string accepted (Redis' own `proto-max-bulk-len` default).
const MAX_BULK: i64 = 512 << 20;
/// The most elements accepted in one array.
const MAX_ARRAY: i64 = 1 << 24;
/// A line (simple string, error, header) longer than this without its CRLF is refused.
const MAX_LINE: usize = 1 << 20;

fn push_decimal(out: &mut Vec<u8>, mut n: usize) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Appends one command, an array of bulk strings (`*N\r\n$len\r\narg\r\n...`), to `out`.
pub fn encode_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.push(b'*');
    push_decimal(out, args.len());
    out.extend_from_slice(b"\r\n");
    for arg in args {
        out.push(b'$');
        push_decimal(out, arg.len());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// The line starting at `from` (without its CRLF) and the index after the CRLF; `None` when the
/// CRLF has not arrived yet.
fn line_at(buf: &[u8], from: usize) -> Result<Option<(&[u8], usize)>, String> {
    let rest = buf.get(from..).unwrap_or_default();
    match rest.iter().position(|&b| b == b'\n') {
        Some(0) => Err("RESP line ends in a bare LF".into()),
        Some(lf) if rest[lf - 1] == b'\r' => Ok(Some((&rest[..lf - 1], from + lf + 1))),
        Some(_) => Err("RESP line ends in a bare LF".into()),
        None if rest.len() > MAX_LINE => Err("RESP line too long".into()),
        None => Ok(None),
    }
}

fn parse_integer(text: &[u8]) -> Result<i64, String> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| format!("bad RESP integer {:?}", String::from_utf8_lossy(text)))
}

/// Parses one complete value from the start of `buf`: the value and the bytes it took, `None`
/// when more bytes are needed, or an error for bytes that are not RESP2.
pub fn parse(buf: &[u8]) -> Result<Option<(Value<'_>, usize)>, String> {
    parse_at(buf, 0, 0)
}

fn parse_at(buf: &[u8], at: usize, nesting: usize) -> Result<Option<(Value<'_>, usize)>, String> {
    let Some(&kind) = buf.get(at) else {
        return Ok(None);
    };
    let Some((text, next)) = line_at(buf, at + 1)? else {
        return Ok(None);
    };
    Ok(Some(match kind {
        b'+' => (Value::Simple(text), next),
        b'-' => (Value::Error(text), next),
        b':' => (Value::Integer(parse_integer(text)?), next),
        b'$' => match parse_integer(text)? {
            -1 => (Value::Bulk(None), next),
            len if (0..=MAX_BULK).contains(&len) => {
                let end = next + len as usize;
                if buf.len() < end + 2 {
                    return Ok(None);
                }
                if &buf[end..end + 2] != b"\r\n" {
                    return Err("RESP bulk string not followed by CRLF".into());
                }
                (Value::Bulk(Some(&buf[next..end])), end + 2)
            }
            len => return Err(format!("bad RESP bulk length {len}")),
        },
        b'*' => match parse_integer(text)? {
            -1 => (Value::Array(None), next),
            len if (0..=MAX_ARRAY).contains(&len) => {
                if nesting >= MAX_NESTING {
                    return Err("RESP arrays nested too deep".into());
                }
                let mut items = Vec::with_capacity((len as usize).min(64));
                let mut next = next;
                for _ in 0..len {
                    let Some((item, after)) = parse_at(buf, next, nesting + 1)? else {
                        return Ok(None);
                    };
                    items.push(item);
                    next = after;
                }
                (Value::Array(Some(items)), next)
            }
            len => return Err(format!("bad RESP array length {len}")),
        },
        other => return Err(format!("unexpected RESP type byte {other:#04x}")),
    }))
}

// ---------------------------------------------------------------------------------------------
// Connection

/// A blocking byte stream: TCP or a Unix socket.
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    /// Connects to `unix` when given, else to `addr`; TCP gets `TCP_NODELAY`.
    pub fn connect(addr: &str, unix: Option<&str>) -> Result<Stream, String> {
        match unix {
            Some(path) => UnixStream::connect(path)
                .map(Stream::Unix)
                .map_err(|error| format!("cannot connect to {path}: {error}")),
            None => {
                let stream = TcpStream::connect(addr)
                    .map_err(|error| format!("cannot connect to {addr}: {error}"))?;
                stream
                    .set_nodelay(true)
                    .map_err(|error| format!("TCP_NODELAY: {error}"))?;
                Ok(Stream::Tcp(stream))
            }
        }
    }

    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(stream) => stream.set_read_timeout(timeout),
            Stream::Unix(stream) => stream.set_read_timeout(timeout),
        }
    }

    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        match self {
            Stream::Tcp(stream) => stream.set_nonblocking(nonblocking),
            Stream::Unix(stream) => stream.set_nonblocking(nonblocking),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(stream) => stream.read(buf),
            Stream::Unix(stream) => stream.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(stream) => stream.write(buf),
            Stream::Unix(stream) => stream.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A receive buffer over a stream: bytes arrive at `end`, frames are consumed from `start`.
pub struct InBuffer {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl InBuffer {
    pub fn new() -> InBuffer {
        InBuffer {
            buf: vec![0; 64 * 1024],
            start: 0,
            end: 0,
        }
    }

    /// The bytes received and not consumed yet.
    pub fn pending(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Consumes `len` bytes; returns where they start, for [`InBuffer::slice`].
    pub fn consume(&mut self, len: usize) -> usize {
        let from = self.start;
        self.start += len;
        from
    }

    pub fn slice(&self, from: usize, len: usize) -> &[u8] {
        &self.buf[from..from + len]
    }

    /// Reads more bytes from `stream` (at least one; end of stream is an error).
    pub fn fill(&mut self, stream: &mut impl Read) -> io::Result<()> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() && self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            let grown = self.buf.len() * 2;
            self.buf.resize(grown, 0);
        }
        let read = loop {
            // A signal (for example after `--pin` set the thread's affinity) interrupts a
            // blocking read: try again.
            match stream.read(&mut self.buf[self.end..]) {
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                other => break other?,
            }
        };
        match read {
            0 => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            )),
            n => {
                self.end += n;
                Ok(())
            }
        }
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// A RESP2 connection: commands are queued in `out` and written by `flush`; replies are read one
/// at a time.
pub struct RespConnection {
    pub stream: Stream,
    input: InBuffer,
    out: Vec<u8>,
}

impl RespConnection {
    pub fn connect(addr: &str, unix: Option<&str>) -> Result<RespConnection, String> {
        Ok(RespConnection::new(Stream::connect(addr, unix)?))
    }

    pub fn new(stream: Stream) -> RespConnection {
        RespConnection {
            stream,
            input: InBuffer::new(),
            out: Vec::with_capacity(64 * 1024),
        }
    }

    /// Queues one command (written by the next `flush`).
    pub fn queue(&mut self, args: &[&[u8]]) {
        encode_command(&mut self.out, args);
    }

    /// Writes every queued command.
    pub fn flush(&mut self) -> io::Result<()> {
        self.stream.write_all(&self.out)?;
        self.out.clear();
        Ok(())
    }

    /// The next reply, blocking until it is complete.
    pub fn read_value(&mut self) -> io::Result<Value<'_>> {
        let len = loop {
            match parse(self.input.pending()) {
                Ok(Some((_, len))) => break len,
                Ok(None) => {}
                Err(message) => return Err(invalid(message)),
            }
            self.input.fill(&mut self.stream)?;
        };
        let from = self.input.consume(len);
        match parse(self.input.slice(from, len)) {
            Ok(Some((value, _))) => Ok(value),
            _ => Err(invalid("a RESP reply parsed differently twice".into())),
        }
    }

    /// Sends one command and reads its reply.
    pub fn command(&mut self, args: &[&[u8]]) -> io::Result<Value<'_>> {
        self.queue(args);
        self.flush()?;
        self.read_value()
    }
}

/// Pins the calling thread to `cpu` (a compio runtime builder sets the thread's affinity).
pub fn pin_thread(cpu: usize) {
    let _ = compio::runtime::RuntimeBuilder::new()
        .thread_affinity(std::collections::HashSet::from([cpu]))
        .build();
}

// ---------------------------------------------------------------------------------------------
// The KV scenario

const WARMING: u8 = 0;
const MEASURING: u8 = 1;
const STOPPING: u8 = 2;

struct Outcome {
    histogram: Histogram<u64>,
    operations: u64,
    errors: u64,
    seconds: f64,
    first_error: Option<String>,
}

fn preload(args: &RedisArgs, workload: &Workload) -> Result<(), String> {
    let mut connection = RespConnection::connect(&args.addr, args.unix.as_deref())?;
    for chunk in workload
        .keys
        .chunks(workload.preload_keys_per_chunk(PRELOAD_CHUNK))
    {
        let mut command: Vec<&[u8]> = Vec::with_capacity(1 + 2 * chunk.len());
        command.push(b"MSET");
        for key in chunk {
            command.push(key);
            command.push(&workload.value);
        }
        match connection.command(&command) {
            Ok(Value::Simple(b"OK")) => {}
            Ok(other) => return Err(format!("preload: MSET answered {}", other.describe())),
            Err(error) => return Err(format!("preload: {error}")),
        }
    }
    Ok(())
}

pub fn run(args: &RedisArgs) -> Result<Vec<Series>, String> {
    let ops = Op::parse_list(&args.op, args.get_ratio)?;
    if args.clients == 0 || args.clients > 256 {
        return Err("--clients must be between 1 and 256".into());
    }
    if args.depth == 0 || args.depth > 4096 {
        return Err("--depth must be between 1 and 4096".into());
    }
    let duration = parse_duration(&args.duration)?;
    let warmup = parse_duration(&args.warmup)?;
    let workload = Arc::new(Workload::new(args.keys, args.key_size, args.value_size)?);
    preload(args, &workload)?;
    let mut results = Vec::new();
    for op in ops {
        let phase = Arc::new(AtomicU8::new(WARMING));
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        let mut threads = Vec::new();
        for client in 0..args.clients {
            let (phase, outcomes, workload) = (phase.clone(), outcomes.clone(), workload.clone());
            let (addr, unix, depth, pin) =
                (args.addr.clone(), args.unix.clone(), args.depth, args.pin);
            threads.push(std::thread::spawn(move || -> Result<(), String> {
                if let Some(cpu) = pin {
                    pin_thread(cpu);
                }
                let mut connection = RespConnection::connect(&addr, unix.as_deref())
                    .map_err(|error| format!("client {client}: {error}"))?;
                let outcome = client_loop(&mut connection, &workload, op, depth, client, &phase);
                outcomes.lock().unwrap().push(outcome);
                Ok(())
            }));
        }
        std::thread::sleep(warmup);
        phase.store(MEASURING, Ordering::SeqCst);
        std::thread::sleep(duration);
        phase.store(STOPPING, Ordering::SeqCst);
        for thread in threads {
            thread
                .join()
                .map_err(|_| "a client thread panicked".to_string())??;
        }
        let outcomes = std::mem::take(&mut *outcomes.lock().unwrap());
        let mut merged = histogram();
        let (mut operations, mut errors, mut seconds) = (0, 0, 0.0f64);
        for outcome in &outcomes {
            merged
                .add(&outcome.histogram)
                .map_err(|error| error.to_string())?;
            operations += outcome.operations;
            errors += outcome.errors;
            seconds = seconds.max(outcome.seconds);
            if let Some(error) = &outcome.first_error {
                eprintln!("redis {}: first error: {error}", op.name());
            }
        }
        let latency_of = if args.depth == 1 {
            "one request, write to reply read".to_string()
        } else {
            format!(
                "a pipelined batch of {} requests (one write, then every reply read)",
                args.depth
            )
        };
        results.push(
            Series::new(
                "redis",
                &op.name(),
                &latency_of,
                &merged,
                operations,
                seconds,
                errors,
            )
            .with_value_bytes(workload.value_size.mean()),
        );
    }
    Ok(results)
}

fn client_loop(
    connection: &mut RespConnection,
    workload: &Workload,
    op: Op,
    depth: usize,
    client: usize,
    phase: &AtomicU8,
) -> Outcome {
    let mut rng = Rng::new(0x5eed ^ (client as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut histogram = histogram();
    let (mut operations, mut errors) = (0u64, 0u64);
    let mut first_error = None;
    let mut started: Option<Instant> = None;
    let mut gets = Vec::with_capacity(depth);
    'run: loop {
        let now_phase = phase.load(Ordering::Relaxed);
        if now_phase == STOPPING {
            break;
        }
        if now_phase == MEASURING && started.is_none() {
            started = Some(Instant::now());
        }
        gets.clear();
        for _ in 0..depth {
            let key = &workload.keys[rng.below(workload.keys.len())];
            match op.pick(&mut rng) {
                Op::Get => {
                    connection.queue(&[b"GET", key]);
                    gets.push(true);
                }
                _ => {
                    connection.queue(&[b"SET", key, &workload.value]);
                    gets.push(false);
                }
            }
        }
        let t0 = Instant::now();
        let mut failed = 0u64;
        if let Err(error) = connection.flush() {
            first_error.get_or_insert_with(|| error.to_string());
            errors += depth as u64;
            break;
        }
        for &get in &gets {
            let problem = match connection.read_value() {
                Ok(Value::Bulk(Some(_))) if get => None,
                Ok(Value::Bulk(None)) if get => Some("GET found no value".to_string()),
                Ok(Value::Simple(b"OK")) if !get => None,
                Ok(other) => Some(other.describe()),
                Err(error) => {
                    first_error.get_or_insert_with(|| error.to_string());
                    errors += depth as u64;
                    break 'run;
                }
            };
            if let Some(problem) = problem {
                failed += 1;
                first_error.get_or_insert(problem);
            }
        }
        let elapsed = t0.elapsed();
        if started.is_some() {
            histogram.saturating_record(elapsed.as_nanos().max(1) as u64);
            operations += depth as u64;
            errors += failed;
        }
    }
    Outcome {
        histogram,
        operations,
        errors,
        seconds: started.map_or(0.0, |s| s.elapsed().as_secs_f64()),
        first_error,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn command(args: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_command(&mut out, args);
        out
    }

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        assert_eq!(
            command(&[b"SET", b"key", b"v\r\nalue"]),
            b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$7\r\nv\r\nalue\r\n"
        );
        assert_eq!(command(&[b"GET", b""]), b"*2\r\n$3\r\nGET\r\n$0\r\n\r\n");
        let long = vec![b'x'; 1234];
        let encoded = command(&[&long]);
        assert!(encoded.starts_with(b"*1\r\n$1234\r\nxxx"));
        // What we encode, we decode (a command is also a valid RESP value).
        let (value, used) = parse(&encoded).unwrap().unwrap();
        assert_eq!(used, encoded.len());
        assert_eq!(
            value,
            Value::Array(Some(vec![Value::Bulk(Some(&long[..]))]))
        );
    }

    #[test]
    fn every_reply_type() {
        let cases: &[(&[u8], Value)] = &[
            (b"+OK\r\n", Value::Simple(b"OK")),
            (
                b"-ERR unknown command\r\n",
                Value::Error(b"ERR unknown command"),
            ),
            (b":0\r\n", Value::Integer(0)),
            (b":-42\r\n", Value::Integer(-42)),
            (b":9223372036854775807\r\n", Value::Integer(i64::MAX)),
            (b"$5\r\nhello\r\n", Value::Bulk(Some(b"hello"))),
            (b"$0\r\n\r\n", Value::Bulk(Some(b""))),
            (b"$4\r\na\r\nb\r\n", Value::Bulk(Some(b"a\r\nb"))),
            (b"$-1\r\n", Value::Bulk(None)),
            (b"*-1\r\n", Value::Array(None)),
            (b"*0\r\n", Value::Array(Some(vec![]))),
            (
                b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$3\r\n\x00\x01\x02\r\n",
                Value::Array(Some(vec![
                    Value::Bulk(Some(b"message")),
                    Value::Bulk(Some(b"ch")),
                    Value::Bulk(Some(b"\x00\x01\x02")),
                ])),
            ),
            (
                b"*2\r\n*2\r\n:1\r\n$-1\r\n-E\r\n",
                Value::Array(Some(vec![
                    Value::Array(Some(vec![Value::Integer(1), Value::Bulk(None)])),
                    Value::Error(b"E"),
                ])),
            ),
        ];
        for (bytes, expected) in cases {
            let (value, used) = parse(bytes)
                .unwrap()
                .unwrap_or_else(|| panic!("{bytes:?} incomplete"));
            assert_eq!(&value, expected, "{bytes:?}");
            assert_eq!(used, bytes.len(), "{bytes:?}");
            // A following value is left alone.
            let mut two = bytes.to_vec();
            two.extend_from_slice(b"+next\r\n");
            assert_eq!(parse(&two).unwrap().unwrap().1, bytes.len());
        }
    }

    #[test]
    fn every_prefix_of_a_reply_is_incomplete() {
        let replies: &[&[u8]] = &[
            b"+OK\r\n",
            b":123\r\n",
            b"$5\r\nhello\r\n",
            b"$-1\r\n",
            b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$4\r\nab\r\n\r\n",
            b"*2\r\n*1\r\n:1\r\n-ERR x\r\n",
        ];
        for reply in replies {
            for cut in 0..reply.len() {
                assert_eq!(parse(&reply[..cut]), Ok(None), "{reply:?} cut at {cut}");
            }
        }
    }

    #[test]
    fn garbage_is_an_error() {
        for bytes in [
            &b"?x\r\n"[..],
            b":12a\r\n",
            b"$-2\r\n",
            b"$3\r\nabcd\r\n",
            b"*-5\r\n",
            b"+OK\n",
            b"$99999999999\r\n",
        ] {
            assert!(parse(bytes).is_err(), "{bytes:?}");
        }
        let deep = b"*1\r\n".repeat(MAX_NESTING + 1);
        assert!(parse(&deep).is_err());
    }

    /// A reader that hands out its bytes a few at a time: replies (or messages) split across
    /// reads. Also used by the NATS parser's tests.
    pub(crate) struct Trickle {
        pub bytes: Vec<u8>,
        pub at: usize,
        pub step: usize,
    }

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.bytes.len() - self.at);
            buf[..n].copy_from_slice(&self.bytes[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    #[test]
    fn replies_split_across_reads() {
        let mut stream = Vec::new();
        for i in 0..500 {
            stream.extend_from_slice(format!("${}\r\n", 3 + i % 7).as_bytes());
            stream.extend(std::iter::repeat_n(b'a' + (i % 26) as u8, 3 + i % 7));
            stream.extend_from_slice(b"\r\n:7\r\n");
        }
        for step in [1, 2, 3, 7, 100] {
            let mut reader = Trickle {
                bytes: stream.clone(),
                at: 0,
                step,
            };
            let mut input = InBuffer {
                buf: vec![0; 8],
                start: 0,
                end: 0,
            };
            for i in 0..500 {
                for expected in [
                    Value::Bulk(Some(&vec![b'a' + (i % 26) as u8; 3 + i % 7][..])),
                    Value::Integer(7),
                ] {
                    let len = loop {
                        if let Some((_, len)) = parse(input.pending()).unwrap() {
                            break len;
                        }
                        input.fill(&mut reader).unwrap();
                    };
                    let from = input.consume(len);
                    let (value, _) = parse(input.slice(from, len)).unwrap().unwrap();
                    assert_eq!(value, expected, "step {step}, reply {i}");
                }
            }
            assert!(input.fill(&mut reader).is_err(), "the end is an error");
        }
    }

    #[test]
    fn arguments_are_checked_before_connecting() {
        let args = |extra: &[&str]| {
            let mut all = vec!["--unix", "/nonexistent/redis.sock"];
            all.extend_from_slice(extra);
            RedisArgs::from_args(&["redis"], &all).expect("parses")
        };
        assert!(run(&args(&["--clients", "0"]))
            .unwrap_err()
            .contains("--clients"));
        assert!(run(&args(&["--depth", "0"]))
            .unwrap_err()
            .contains("--depth"));
        assert!(run(&args(&["--op", "nope"])).unwrap_err().contains("--op"));
        let error = run(&args(&["--keys", "10"])).unwrap_err();
        assert!(error.contains("/nonexistent/redis.sock"), "{error}");
    }
}
