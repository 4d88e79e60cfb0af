//! Where answers go: standard output, in one of three formats, and what a failure to write
//! there means (a reader that closed the pipe ends the program quietly).

use std::io::{self, IsTerminal, Write};

use serde_json::{json, Map, Value};
use veddb_client::veddb_wire::ShardStats;

use crate::words::show;
use crate::Failure;

/// How answers are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// For a person: values in double quotes with escapes (they can be typed back at the
    /// prompt), versions and notes in parentheses.
    Human,
    /// For scripts (`--raw`): each value as its bytes followed by a newline, numbers as
    /// numbers, nothing else.
    Raw,
    /// One JSON document per line (`--json`); bytes are a string when they are UTF-8, else
    /// `{"base64": "..."}`.
    Json,
}

/// Standard output, buffered; flushed after each command and each message of a subscription.
pub struct Out {
    pub format: Format,
    stdout: io::BufWriter<io::Stdout>,
    /// Whether standard output is a terminal (the live `--latency` line rewrites itself there).
    pub terminal: bool,
}

impl From<io::Error> for Failure {
    /// A write to standard output that failed: a closed pipe ends the program quietly (exit
    /// 141, as if killed by SIGPIPE); anything else is reported.
    fn from(error: io::Error) -> Failure {
        if error.kind() == io::ErrorKind::BrokenPipe {
            Failure::ClosedPipe
        } else {
            Failure::Io(format!("cannot write to standard output: {error}"))
        }
    }
}

impl Out {
    pub fn new(format: Format) -> Out {
        let stdout = io::stdout();
        Out {
            format,
            terminal: stdout.is_terminal(),
            stdout: io::BufWriter::with_capacity(64 << 10, stdout),
        }
    }

    /// A line of text.
    pub fn line(&mut self, text: &str) -> Result<(), Failure> {
        self.stdout.write_all(text.as_bytes())?;
        self.stdout.write_all(b"\n")?;
        Ok(())
    }

    /// Bytes as they are, then a newline (`--raw`).
    pub fn bytes_line(&mut self, bytes: &[u8]) -> Result<(), Failure> {
        self.stdout.write_all(bytes)?;
        self.stdout.write_all(b"\n")?;
        Ok(())
    }

    /// Bytes as they are, nothing added (`get KEY --file -`).
    pub fn bytes(&mut self, bytes: &[u8]) -> Result<(), Failure> {
        self.stdout.write_all(bytes)?;
        Ok(())
    }

    /// One JSON document on a line.
    pub fn json(&mut self, value: &Value) -> Result<(), Failure> {
        self.line(&value.to_string())
    }

    /// A value: quoted for a person (with `suffix`, such as its version), its bytes for a
    /// script, `json` for JSON.
    pub fn value(&mut self, bytes: &[u8], suffix: &str, json: Value) -> Result<(), Failure> {
        match self.format {
            Format::Human => self.line(&format!("{}{suffix}", show(bytes))),
            Format::Raw => self.bytes_line(bytes),
            Format::Json => self.json(&json),
        }
    }

    /// An answer that is a number (a count, a counter).
    pub fn integer(&mut self, number: i64) -> Result<(), Failure> {
        self.line(&number.to_string())
    }

    /// An answer with no data ("OK", "PONG"): the word, or the word as a JSON string.
    pub fn word(&mut self, word: &str) -> Result<(), Failure> {
        match self.format {
            Format::Human | Format::Raw => self.line(word),
            Format::Json => self.json(&Value::from(word)),
        }
    }

    /// A live line, rewritten in place on a terminal (`\r`, then clear to the end of it).
    pub fn rewrite_line(&mut self, text: &str) -> Result<(), Failure> {
        self.stdout.write_all(b"\r")?;
        self.stdout.write_all(text.as_bytes())?;
        self.stdout.write_all(b"\x1b[K")?;
        self.flush()
    }

    pub fn flush(&mut self) -> Result<(), Failure> {
        self.stdout.flush()?;
        Ok(())
    }
}

/// Bytes in JSON: a string when they are UTF-8, else `{"base64": "..."}` (standard alphabet,
/// padded), so that every value survives.
pub fn json_bytes(bytes: &[u8]) -> Value {
    match std::str::from_utf8(bytes) {
        Ok(text) => Value::from(text),
        Err(_) => json!({ "base64": base64(bytes) }),
    }
}

/// Standard base64 with padding (RFC 4648 section 4).
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let group = (u32::from(chunk[0]) << 16)
            | (u32::from(chunk.get(1).copied().unwrap_or(0)) << 8)
            | u32::from(chunk.get(2).copied().unwrap_or(0));
        for index in 0..4 {
            if index <= chunk.len() {
                out.push(ALPHABET[((group >> (18 - 6 * index)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The counters of a shard (or of the total), by name, in the order INFO shows them.
pub fn stats_fields(stats: &ShardStats) -> [(&'static str, u64); 15] {
    [
        ("ops", stats.ops),
        ("hits", stats.hits),
        ("misses", stats.misses),
        ("keys", stats.keys),
        ("memory_bytes_used", stats.memory_bytes_used),
        ("memory_bytes_limit", stats.memory_bytes_limit),
        ("expired_keys", stats.expired_keys),
        ("evicted_keys", stats.evicted_keys),
        ("out_of_memory_errors", stats.out_of_memory_errors),
        ("topics", stats.topics),
        ("subscribers", stats.subscribers),
        ("messages_published", stats.messages_published),
        ("messages_delivered", stats.messages_delivered),
        ("messages_dropped", stats.messages_dropped),
        ("forwarded_in", stats.forwarded_in),
    ]
}

/// The counters of a shard as a JSON object.
pub fn stats_json(stats: &ShardStats, shard: Option<u32>) -> Value {
    let mut object = Map::new();
    if let Some(shard) = shard {
        object.insert("shard".into(), Value::from(shard));
    }
    for (name, value) in stats_fields(stats) {
        object.insert(name.into(), Value::from(value));
    }
    Value::Object(object)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_test_vectors() {
        for (input, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), encoded, "{input:?}");
        }
        assert_eq!(base64(&[0xff, 0xfe, 0x00]), "//4A");
    }

    #[test]
    fn json_bytes_is_text_when_it_can_be() {
        assert_eq!(json_bytes(b"hello"), Value::from("hello"));
        assert_eq!(json_bytes(b"a\x00\n"), Value::from("a\u{0}\n"));
        assert_eq!(json_bytes(b"\xff"), json!({ "base64": "/w==" }));
    }
}
