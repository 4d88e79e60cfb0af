//! The `nats` scenario: pub/sub fan-out against a NATS server, with a minimal client of the NATS
//! text protocol written here (CONNECT, PUB, SUB, MSG, PING/PONG) over a blocking TCP stream.
//!
//! One publisher, `--subscribers` subscribers each on its own connection and thread; the
//! workload and the way latency, throughput and losses are measured are those of the `pubsub`
//! scenario (see `pubsub_bench`), which runs the same thing with `--transport nats`.

use std::io::{self, Write};
use std::sync::Arc;

use argh::FromArgs;
use bytes::Bytes;

use crate::pubsub_bench::{
    default_topic, fan_out_config, run_fan_out, FanOut, Publisher, Recorder, SubscriberBody,
    SUBSCRIBER_IDLE_TIMEOUT,
};
use crate::redis_bench::{InBuffer, Stream};
use crate::report::Series;

/// A control line (INFO can carry cluster URLs) longer than this is refused.
const MAX_CONTROL_LINE: usize = 64 * 1024;
/// The largest MSG payload accepted.
const MAX_PAYLOAD: usize = 64 << 20;
/// The subscription id this client uses.
const SID: &[u8] = b"1";

/// Pub/sub fan-out against a NATS server: 1 publisher to N subscribers.
#[derive(FromArgs)]
#[argh(subcommand, name = "nats")]
pub struct NatsArgs {
    #[argh(option, default = "String::from(\"127.0.0.1:4222\")")]
    /// server address, HOST:PORT (default 127.0.0.1:4222)
    pub addr: String,
    #[argh(option)]
    /// subject (default veddb-bench.fanout.PID)
    pub subject: Option<String>,
    #[argh(option, default = "4")]
    /// subscribers, each on its own connection and thread (default 4)
    pub subscribers: usize,
    #[argh(option, default = "16")]
    /// message size in bytes, at least 16 (default 16)
    pub message_size: usize,
    #[argh(option)]
    /// measure this many messages instead of --duration
    pub messages: Option<u64>,
    #[argh(option, default = "String::from(\"3s\")")]
    /// measured time (default 3s)
    pub duration: String,
    #[argh(option, default = "String::from(\"500ms\")")]
    /// warm-up time (default 500ms)
    pub warmup: String,
    #[argh(option, default = "1024")]
    /// most messages the publisher may be ahead of the slowest subscriber (default 1024)
    pub window: u64,
    #[argh(option, default = "64")]
    /// messages per publish burst, one write (default 64)
    pub burst: usize,
    #[argh(option)]
    /// CPU to pin the publisher and subscriber threads to (default: not pinned)
    pub pin: Option<usize>,
    #[argh(option)]
    /// write the results as JSON to this file
    pub json: Option<String>,
    #[argh(option)]
    /// plot the latency percentiles as SVG to this file
    pub svg: Option<String>,
}

pub fn settings(args: &NatsArgs) -> serde_json::Value {
    serde_json::json!({
        "scenario": "nats", "addr": args.addr, "subject": args.subject,
        "subscribers": args.subscribers, "message_size": args.message_size,
        "messages": args.messages, "duration": args.duration, "warmup": args.warmup,
        "window": args.window, "burst": args.burst, "pin": args.pin, "svg": args.svg,
    })
}

pub fn run(args: &NatsArgs) -> Result<Vec<Series>, String> {
    let config = fan_out_config(
        "nats",
        "nats",
        args.subscribers,
        args.message_size,
        args.messages,
        &args.duration,
        &args.warmup,
        args.window,
        args.burst,
        args.pin,
    )?;
    let subject = args.subject.clone().unwrap_or_else(default_topic);
    run_fan_out_nats(&config, &args.addr, &subject)
}

// ---------------------------------------------------------------------------------------------
// Protocol

/// One message from the server, borrowing from the receive buffer.
#[derive(Debug, PartialEq)]
pub enum ServerOp<'a> {
    /// `INFO {json}`
    Info(&'a [u8]),
    /// `MSG <subject> <sid> [reply-to] <#bytes>\r\n<payload>\r\n`
    Msg {
        subject: &'a [u8],
        sid: &'a [u8],
        payload: &'a [u8],
    },
    Ping,
    Pong,
    /// `+OK` (only in verbose mode)
    Ok,
    /// `-ERR 'message'`
    Err(&'a [u8]),
}

fn is_space(byte: &u8) -> bool {
    *byte == b' ' || *byte == b'\t'
}

fn parse_size(text: &[u8]) -> Option<usize> {
    if text.is_empty() || text.len() > 12 || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// Parses one complete server message from the start of `buf`: the message and the bytes it
/// took, `None` when more bytes are needed, or an error for bytes that are not the protocol.
pub fn parse_op(buf: &[u8]) -> Result<Option<(ServerOp<'_>, usize)>, String> {
    let Some(lf) = buf.iter().position(|&b| b == b'\n') else {
        return if buf.len() > MAX_CONTROL_LINE {
            Err("NATS control line too long".into())
        } else {
            Ok(None)
        };
    };
    if lf == 0 || buf[lf - 1] != b'\r' {
        return Err("NATS control line not ended by CRLF".into());
    }
    let line = &buf[..lf - 1];
    let next = lf + 1;
    let name_end = line.iter().position(is_space).unwrap_or(line.len());
    let (name, rest) = line.split_at(name_end);
    let rest = &rest[rest.iter().position(|b| !is_space(b)).unwrap_or(rest.len())..];
    let op = if name.eq_ignore_ascii_case(b"MSG") {
        let mut fields = [&b""[..]; 4];
        let mut count = 0;
        for field in rest.split(is_space).filter(|field| !field.is_empty()) {
            if count == fields.len() {
                return Err("NATS MSG with too many fields".into());
            }
            fields[count] = field;
            count += 1;
        }
        let (subject, sid, size) = match count {
            3 => (fields[0], fields[1], fields[2]),
            4 => (fields[0], fields[1], fields[3]),
            _ => return Err("NATS MSG with a wrong number of fields".into()),
        };
        let size = parse_size(size)
            .filter(|&size| size <= MAX_PAYLOAD)
            .ok_or_else(|| format!("bad NATS MSG size {:?}", String::from_utf8_lossy(size)))?;
        let end = next + size;
        if buf.len() < end + 2 {
            return Ok(None);
        }
        if &buf[end..end + 2] != b"\r\n" {
            return Err("NATS MSG payload not followed by CRLF".into());
        }
        return Ok(Some((
            ServerOp::Msg {
                subject,
                sid,
                payload: &buf[next..end],
            },
            end + 2,
        )));
    } else if name.eq_ignore_ascii_case(b"PING") {
        ServerOp::Ping
    } else if name.eq_ignore_ascii_case(b"PONG") {
        ServerOp::Pong
    } else if name.eq_ignore_ascii_case(b"+OK") {
        ServerOp::Ok
    } else if name.eq_ignore_ascii_case(b"-ERR") {
        ServerOp::Err(rest)
    } else if name.eq_ignore_ascii_case(b"INFO") {
        ServerOp::Info(rest)
    } else {
        return Err(format!(
            "unexpected NATS operation {:?}",
            String::from_utf8_lossy(name)
        ));
    };
    Ok(Some((op, next)))
}

/// Appends `PUB <subject> <#bytes>\r\n<payload>\r\n` to `out`.
pub fn encode_pub(out: &mut Vec<u8>, subject: &[u8], payload: &[u8]) {
    out.extend_from_slice(b"PUB ");
    out.extend_from_slice(subject);
    out.push(b' ');
    out.extend_from_slice(payload.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
}

/// What a connection does with one parsed message (owned, so the buffer can be refilled).
enum Action {
    Message,
    Pong,
    AnswerPing,
    Nothing,
}

fn protocol_error(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// A NATS client connection (no verbose acks, no headers).
pub struct NatsConnection {
    stream: Stream,
    input: InBuffer,
    out: Vec<u8>,
    /// The subject of this connection's subscription.
    subscribed: Vec<u8>,
    /// The server's `max_payload` (from INFO).
    pub max_payload: usize,
}

impl NatsConnection {
    /// Connects, reads INFO, sends CONNECT and waits for the PONG of a PING (so the server
    /// has accepted the connection).
    pub fn connect(addr: &str) -> Result<NatsConnection, String> {
        let stream = Stream::connect(addr, None)?;
        stream
            .set_read_timeout(Some(SUBSCRIBER_IDLE_TIMEOUT))
            .map_err(|error| error.to_string())?;
        let mut connection = NatsConnection {
            stream,
            input: InBuffer::new(),
            out: Vec::with_capacity(64 * 1024),
            subscribed: Vec::new(),
            max_payload: usize::MAX,
        };
        let (from, len) = connection
            .next_frame()
            .map_err(|error| format!("{addr}: {error}"))?;
        match parse_op(connection.input.slice(from, len)) {
            Ok(Some((ServerOp::Info(json), _))) => {
                let info: serde_json::Value = serde_json::from_slice(json)
                    .map_err(|error| format!("{addr}: bad INFO: {error}"))?;
                if let Some(max) = info["max_payload"].as_u64() {
                    connection.max_payload = max as usize;
                }
            }
            _ => return Err(format!("{addr}: the server did not start with INFO")),
        }
        connection.out.extend_from_slice(
            b"CONNECT {\"verbose\":false,\"pedantic\":false,\"name\":\"veddb-bench\"}\r\nPING\r\n",
        );
        connection
            .flush()
            .and_then(|()| connection.wait_pong())
            .map_err(|error| format!("{addr}: {error}"))?;
        Ok(connection)
    }

    /// Subscribes and waits for the PONG that follows, so the subscription is in place.
    pub fn subscribe(&mut self, subject: &[u8]) -> io::Result<()> {
        self.subscribed = subject.to_vec();
        self.out.extend_from_slice(b"SUB ");
        self.out.extend_from_slice(subject);
        self.out.push(b' ');
        self.out.extend_from_slice(SID);
        self.out.extend_from_slice(b"\r\nPING\r\n");
        self.flush()?;
        self.wait_pong()
    }

    /// Queues one PUB (written by the next `flush`).
    pub fn queue_publish(&mut self, subject: &[u8], payload: &[u8]) {
        encode_pub(&mut self.out, subject, payload);
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.stream.write_all(&self.out)?;
        self.out.clear();
        Ok(())
    }

    /// The place and length of the next complete message in the receive buffer.
    fn next_frame(&mut self) -> io::Result<(usize, usize)> {
        let len = loop {
            match parse_op(self.input.pending()) {
                Ok(Some((_, len))) => break len,
                Ok(None) => {}
                Err(message) => return Err(protocol_error(message)),
            }
            self.input.fill(&mut self.stream)?;
        };
        Ok((self.input.consume(len), len))
    }

    /// What to do with the message at `from`.
    fn action(&self, from: usize, len: usize) -> io::Result<Action> {
        match parse_op(self.input.slice(from, len)) {
            Ok(Some((ServerOp::Msg { subject, sid, .. }, _))) => {
                if sid == SID && subject == self.subscribed {
                    Ok(Action::Message)
                } else {
                    Err(protocol_error(format!(
                        "MSG on {:?} for an unknown subscription {:?}",
                        String::from_utf8_lossy(subject),
                        String::from_utf8_lossy(sid)
                    )))
                }
            }
            Ok(Some((ServerOp::Ping, _))) => Ok(Action::AnswerPing),
            Ok(Some((ServerOp::Pong, _))) => Ok(Action::Pong),
            Ok(Some((ServerOp::Err(text), _))) => Err(protocol_error(format!(
                "the server said -ERR {}",
                String::from_utf8_lossy(text)
            ))),
            Ok(Some((ServerOp::Info(_) | ServerOp::Ok, _))) => Ok(Action::Nothing),
            _ => Err(protocol_error("a message parsed differently twice".into())),
        }
    }

    fn answer_ping(&mut self) -> io::Result<()> {
        self.out.extend_from_slice(b"PONG\r\n");
        self.flush()
    }

    /// Reads until a PONG (answering PINGs; messages before it are ignored).
    pub fn wait_pong(&mut self) -> io::Result<()> {
        loop {
            let (from, len) = self.next_frame()?;
            match self.action(from, len)? {
                Action::Pong => return Ok(()),
                Action::AnswerPing => self.answer_ping()?,
                Action::Message | Action::Nothing => {}
            }
        }
    }

    /// The payload of the next MSG (answering PINGs on the way).
    pub fn next_message(&mut self) -> io::Result<&[u8]> {
        let (from, len) = loop {
            let (from, len) = self.next_frame()?;
            match self.action(from, len)? {
                Action::Message => break (from, len),
                Action::AnswerPing => self.answer_ping()?,
                Action::Pong | Action::Nothing => {}
            }
        };
        match parse_op(self.input.slice(from, len)) {
            Ok(Some((ServerOp::Msg { payload, .. }, _))) => Ok(payload),
            _ => Err(protocol_error("a message parsed differently twice".into())),
        }
    }

    /// Handles whatever the server sent without blocking (a publisher reads nothing otherwise):
    /// answers PINGs, fails on -ERR.
    pub fn poll(&mut self) -> io::Result<()> {
        self.stream.set_nonblocking(true)?;
        let read = loop {
            match self.input.fill(&mut self.stream) {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break Ok(()),
                Err(error) => break Err(error),
            }
        };
        self.stream.set_nonblocking(false)?;
        read?;
        while let Ok(Some((_, len))) = parse_op(self.input.pending()) {
            let from = self.input.consume(len);
            if let Action::AnswerPing = self.action(from, len)? {
                self.answer_ping()?;
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Fan-out transport

struct NatsPublisher {
    connection: NatsConnection,
    subject: Vec<u8>,
}

impl Publisher for NatsPublisher {
    fn publish(&mut self, burst: &Bytes, message_size: usize) -> Result<Option<u64>, String> {
        for message in burst.chunks_exact(message_size) {
            self.connection.queue_publish(&self.subject, message);
        }
        self.connection
            .flush()
            .map_err(|error| format!("PUB: {error}"))?;
        Ok(None)
    }

    fn idle(&mut self) -> Result<(), String> {
        self.connection
            .poll()
            .map_err(|error| format!("publisher: {error}"))
    }

    /// PING and wait for its PONG: the server has processed every PUB before it.
    fn finish(&mut self) -> Result<(), String> {
        self.connection.out.extend_from_slice(b"PING\r\n");
        self.connection
            .flush()
            .and_then(|()| self.connection.wait_pong())
            .map_err(|error| format!("publisher: {error}"))
    }
}

/// Runs the fan-out of `config` on the NATS server at `addr`.
pub fn run_fan_out_nats(config: &FanOut, addr: &str, subject: &str) -> Result<Vec<Series>, String> {
    if subject.is_empty() || subject.bytes().any(|b| b.is_ascii_whitespace()) {
        return Err(format!("bad NATS subject {subject:?}"));
    }
    let subscriber: SubscriberBody = {
        let (addr, subject) = (addr.to_string(), subject.to_string());
        Arc::new(move |recorder: &mut Recorder| {
            let mut connection = NatsConnection::connect(&addr)?;
            connection
                .subscribe(subject.as_bytes())
                .map_err(|error| format!("SUB: {error}"))?;
            recorder.ready();
            loop {
                let message = connection
                    .next_message()
                    .map_err(|error| error.to_string())?;
                if !recorder.on_message(message, 0) {
                    return Ok(());
                }
            }
        })
    };
    let message_size = config.message_size;
    run_fan_out(
        config,
        || {
            let connection = NatsConnection::connect(addr)?;
            if message_size > connection.max_payload {
                return Err(format!(
                    "--message-size {message_size} is above the server's max_payload {}",
                    connection.max_payload
                ));
            }
            Ok(Box::new(NatsPublisher {
                connection,
                subject: subject.as_bytes().to_vec(),
            }) as Box<dyn Publisher>)
        },
        subscriber,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg<'a>(subject: &'a [u8], sid: &'a [u8], payload: &'a [u8]) -> ServerOp<'a> {
        ServerOp::Msg {
            subject,
            sid,
            payload,
        }
    }

    #[test]
    fn every_server_operation() {
        let cases: &[(&[u8], ServerOp)] = &[
            (
                b"INFO {\"max_payload\":1048576}\r\n",
                ServerOp::Info(b"{\"max_payload\":1048576}"),
            ),
            (b"PING\r\n", ServerOp::Ping),
            (b"PONG\r\n", ServerOp::Pong),
            (b"ping\r\n", ServerOp::Ping),
            (b"+OK\r\n", ServerOp::Ok),
            (
                b"-ERR 'Unknown Protocol Operation'\r\n",
                ServerOp::Err(b"'Unknown Protocol Operation'"),
            ),
            (b"MSG a.b 1 5\r\nhello\r\n", msg(b"a.b", b"1", b"hello")),
            (
                b"MSG a.b 1 inbox.9 5\r\nhello\r\n",
                msg(b"a.b", b"1", b"hello"),
            ),
            (b"MSG  a\t1   0\r\n\r\n", msg(b"a", b"1", b"")),
            // Payloads are counted, never scanned: CRLF and MSG inside one are data.
            (
                b"MSG s 1 13\r\n\r\nMSG s 1 2\r\n\r\n",
                msg(b"s", b"1", b"\r\nMSG s 1 2\r\n"),
            ),
        ];
        for (bytes, expected) in cases {
            let (op, used) = parse_op(bytes)
                .unwrap()
                .unwrap_or_else(|| panic!("{bytes:?} incomplete"));
            assert_eq!(&op, expected, "{bytes:?}");
            assert_eq!(used, bytes.len(), "{bytes:?}");
            let mut two = bytes.to_vec();
            two.extend_from_slice(b"PING\r\n");
            assert_eq!(parse_op(&two).unwrap().unwrap().1, bytes.len());
            for cut in 0..bytes.len() {
                assert_eq!(parse_op(&bytes[..cut]), Ok(None), "{bytes:?} cut at {cut}");
            }
        }
    }

    #[test]
    fn garbage_is_an_error() {
        for bytes in [
            &b"HELLO\r\n"[..],
            b"PING\n",
            b"MSG a 1\r\n",
            b"MSG a 1 b c d\r\n",
            b"MSG a 1 -3\r\n",
            b"MSG a 1 3\r\nabcd\r\n",
            b"MSG a 1 99999999999999\r\n",
        ] {
            assert!(parse_op(bytes).is_err(), "{bytes:?}");
        }
        assert!(parse_op(&vec![b'x'; MAX_CONTROL_LINE + 1]).is_err());
    }

    #[test]
    fn publishes_are_counted_payloads() {
        let mut out = Vec::new();
        encode_pub(&mut out, b"s.t", b"a\r\nb");
        encode_pub(&mut out, b"s.t", b"");
        assert_eq!(out, b"PUB s.t 4\r\na\r\nb\r\nPUB s.t 0\r\n\r\n");
    }

    use crate::redis_bench::tests::Trickle;

    #[test]
    fn messages_split_across_reads() {
        let payload = |i: usize| -> Vec<u8> {
            let mut payload = format!("{i}\r\nMSG x 1 3\r\n").into_bytes();
            payload.extend(std::iter::repeat_n(b'\n', i % 5));
            payload
        };
        let mut stream = Vec::new();
        for i in 0..300 {
            if i % 7 == 0 {
                stream.extend_from_slice(b"PING\r\n");
            }
            let payload = payload(i);
            stream.extend_from_slice(format!("MSG subj 1 {}\r\n", payload.len()).as_bytes());
            stream.extend_from_slice(&payload);
            stream.extend_from_slice(b"\r\n");
        }
        for step in [1, 2, 5, 13, 4096] {
            let mut reader = Trickle {
                bytes: stream.clone(),
                at: 0,
                step,
            };
            let mut input = InBuffer::new();
            let mut pings = 0;
            let mut messages = 0;
            loop {
                let len = loop {
                    if let Some((_, len)) = parse_op(input.pending()).unwrap() {
                        break Some(len);
                    }
                    if input.fill(&mut reader).is_err() {
                        break None;
                    }
                };
                let Some(len) = len else { break };
                let from = input.consume(len);
                match parse_op(input.slice(from, len)).unwrap().unwrap().0 {
                    ServerOp::Ping => pings += 1,
                    ServerOp::Msg {
                        subject,
                        payload: p,
                        ..
                    } => {
                        assert_eq!(subject, b"subj");
                        assert_eq!(p, &payload(messages)[..], "step {step}");
                        messages += 1;
                    }
                    other => panic!("{other:?}"),
                }
            }
            assert_eq!((messages, pings), (300, 43), "step {step}");
        }
    }
}
