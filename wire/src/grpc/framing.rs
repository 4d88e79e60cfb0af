//! gRPC length-prefixed message framing: the 5-byte prefix, whole messages taken as slices,
//! and the [`Deframer`] for messages cut across DATA frames.

use super::*;

// ---------------------------------------------------------------------------------------------
// Framing

/// Appends one length-prefixed message: compressed flag 0, big-endian `u32` length, the bytes.
///
/// # Panics
/// If the message is longer than `u32::MAX` bytes (the framing cannot express it).
pub fn frame(message: &[u8], out: &mut Vec<u8>) {
    let length = u32::try_from(message.len()).expect("a gRPC message is at most u32::MAX bytes");
    out.reserve(FRAME_PREFIX_BYTES + message.len());
    out.push(0);
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(message);
}

/// Appends `message` encoded and framed to `out`: the prefix is written first, from the
/// message's encoded length, then the message straight after it (no intermediate buffer).
///
/// # Panics
/// If the message is longer than `u32::MAX` bytes (the framing cannot express it).
pub fn frame_message(message: &impl Message, out: &mut impl BufMut) {
    frame_message_of_length(message, message.encoded_len(), out);
}

/// [`frame_message`] with the message's encoded length already known (`encoded_len`).
pub(super) fn frame_message_of_length(
    message: &impl Message,
    length: usize,
    out: &mut impl BufMut,
) {
    debug_assert_eq!(length, message.encoded_len());
    let prefix = u32::try_from(length).expect("a gRPC message is at most u32::MAX bytes");
    out.put_u8(0);
    out.put_u32(prefix);
    message.encode_raw(out);
}

/// Why a stream of length-prefixed messages cannot be read further.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// Compressed flag 1: only the identity encoding is supported.
    Compressed,
    /// A compressed flag other than 0 or 1.
    BadFlag(u8),
    /// The prefix announces a message longer than the limit.
    TooLarge { length: u64, limit: usize },
    /// The stream ended inside a message.
    Truncated,
}

impl FrameError {
    /// The status to end the call with.
    pub fn status(&self) -> Status {
        let code = match self {
            FrameError::Compressed => Code::Unimplemented,
            FrameError::TooLarge { .. } => Code::ResourceExhausted,
            FrameError::BadFlag(_) | FrameError::Truncated => Code::Internal,
        };
        Status::new(code, self.to_string())
    }

    /// The status a server ends a call with when the call's request stream fails: as
    /// [`status`](FrameError::status), with a message over the limit named as the server's
    /// ([`request_too_large`]).
    pub fn request_status(&self) -> Status {
        match self {
            FrameError::TooLarge { length, limit } => request_too_large(*length, *limit),
            other => other.status(),
        }
    }
}

/// RESOURCE_EXHAUSTED for a request message of `length` bytes over a server's `limit`
/// (`--grpc-message-bytes-max`); the message names both.
pub fn request_too_large(length: u64, limit: usize) -> Status {
    Status::resource_exhausted(format!(
        "a request message of {length} bytes is over this server's limit of {limit} bytes \
         (--grpc-message-bytes-max)"
    ))
}

/// RESOURCE_EXHAUSTED for an answer of `length` bytes that a server cannot send because it is
/// over its `limit` (`--grpc-message-bytes-max`): ask for less (fewer keys), or raise the limit.
pub fn response_too_large(length: usize, limit: usize) -> Status {
    Status::resource_exhausted(format!(
        "a response message of {length} bytes is over this server's limit of {limit} bytes \
         (--grpc-message-bytes-max); ask for less in one call"
    ))
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Compressed => f.write_str(
                "compressed messages are not supported: send with grpc-encoding identity (no compression)",
            ),
            FrameError::BadFlag(flag) => write!(f, "invalid compressed-flag byte {flag} in a message prefix"),
            FrameError::TooLarge { length, limit } => write!(
                f,
                "a message of {length} bytes is over the limit of {limit} bytes"
            ),
            FrameError::Truncated => f.write_str("the stream ended inside a message"),
        }
    }
}

impl std::error::Error for FrameError {}

impl From<FrameError> for Status {
    fn from(error: FrameError) -> Status {
        error.status()
    }
}

/// The message of `chunk` when it holds exactly one whole, uncompressed message within `limit`
/// (prefix included), as a slice of it: no copy. `None` for anything else (part of a message,
/// several, a compressed or bad flag, over the limit), which a [`Deframer`] then takes apart or
/// refuses. The common unary request arrives this way, in one DATA frame.
pub fn whole_message(chunk: &Bytes, limit: usize) -> Option<Bytes> {
    (whole_message_length(chunk, limit)? + FRAME_PREFIX_BYTES == chunk.len())
        .then(|| chunk.slice(FRAME_PREFIX_BYTES..))
}

/// The length of the message `bytes` starts with, when it is whole there, uncompressed and
/// within `limit`; `None` for anything else (left to the [`Deframer`]'s general path).
fn whole_message_length(bytes: &[u8], limit: usize) -> Option<usize> {
    let (&[flag, l0, l1, l2, l3], rest) = bytes.split_first_chunk::<FRAME_PREFIX_BYTES>()?;
    let length = usize::try_from(u32::from_be_bytes([l0, l1, l2, l3])).ok()?;
    (flag == 0 && length <= limit && rest.len() >= length).then_some(length)
}

/// Splits a byte stream (HTTP/2 DATA payloads) into messages.
///
/// Feed each chunk to [`push`](Deframer::push), then take messages with
/// [`next`](Deframer::next) until it returns `Ok(None)`; at the end of the stream call
/// [`finish`](Deframer::finish). A message's announced length is checked against the limit
/// before anything is reserved for it; its buffer then starts at no more than
/// [`DEFRAMER_FIRST_CAPACITY_BYTES`] and doubles as its bytes arrive, never past the announced
/// length: one message never takes more than its own size (at most `limit`), and a prefix alone
/// reserves little, so a large limit costs nothing until a large message actually arrives. After an error, further input is ignored and the error is sticky (it is
/// reported after the messages completed before it).
#[derive(Debug)]
pub struct Deframer {
    limit: usize,
    prefix: [u8; FRAME_PREFIX_BYTES],
    prefix_len: usize,
    /// The message being received.
    pub(super) body: Option<Vec<u8>>,
    /// The announced length of the message being received.
    body_length: usize,
    ready: VecDeque<Bytes>,
    failed: Option<FrameError>,
}

impl Default for Deframer {
    fn default() -> Self {
        Deframer::new(MESSAGE_BYTES_MAX_DEFAULT)
    }
}

impl Deframer {
    /// A deframer that refuses messages longer than `limit` bytes.
    pub fn new(limit: usize) -> Deframer {
        Deframer {
            limit,
            prefix: [0; FRAME_PREFIX_BYTES],
            prefix_len: 0,
            body: None,
            body_length: 0,
            ready: VecDeque::new(),
            failed: None,
        }
    }

    /// The message size limit.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes held: completed messages not yet taken plus the partial message.
    pub fn buffered(&self) -> usize {
        self.ready.iter().map(Bytes::len).sum::<usize>()
            + self.prefix_len
            + self.body.as_ref().map_or(0, Vec::len)
    }

    /// Appends received bytes.
    pub fn push(&mut self, mut chunk: &[u8]) {
        while !chunk.is_empty() && self.failed.is_none() {
            match &mut self.body {
                None => {
                    let take = (FRAME_PREFIX_BYTES - self.prefix_len).min(chunk.len());
                    self.prefix[self.prefix_len..self.prefix_len + take]
                        .copy_from_slice(&chunk[..take]);
                    self.prefix_len += take;
                    chunk = &chunk[take..];
                    if self.prefix_len == FRAME_PREFIX_BYTES {
                        self.start_message();
                    }
                }
                Some(body) => {
                    let take = (self.body_length - body.len()).min(chunk.len());
                    if body.capacity() - body.len() < take {
                        // Double as the bytes arrive (few copies), but never past the announced
                        // length: a message never holds more than its own size.
                        let wanted = (body.capacity() * 2)
                            .max(body.len() + take)
                            .min(self.body_length);
                        body.reserve_exact(wanted - body.len());
                    }
                    body.extend_from_slice(&chunk[..take]);
                    chunk = &chunk[take..];
                    if body.len() == self.body_length {
                        self.complete_message();
                    }
                }
            }
        }
    }

    /// Appends a received chunk, taking each whole message inside it as a slice of it (no
    /// copy, no allocation); only a message cut across chunks is assembled in its own buffer,
    /// as [`push`](Deframer::push) does. Same messages and errors as `push`. A slice keeps its
    /// chunk (one HTTP/2 DATA frame, at most 16 MiB by the protocol and 64 KiB as VedDB sets
    /// it) alive while it is held.
    pub fn push_bytes(&mut self, chunk: &Bytes) {
        let mut at = 0;
        while self.failed.is_none() && self.prefix_len == 0 && self.body.is_none() {
            // Anything unusual (a flag, over the limit, cut short) goes the general way.
            let Some(length) = whole_message_length(&chunk[at..], self.limit) else {
                break;
            };
            let start = at + FRAME_PREFIX_BYTES;
            self.ready.push_back(chunk.slice(start..start + length));
            at = start + length;
        }
        self.push(&chunk[at..]);
    }

    /// Called with a full prefix: checks it and starts the body (or completes an empty message).
    fn start_message(&mut self) {
        let [flag, l0, l1, l2, l3] = self.prefix;
        let length = u32::from_be_bytes([l0, l1, l2, l3]);
        let error = match flag {
            0 => None,
            1 => Some(FrameError::Compressed),
            other => Some(FrameError::BadFlag(other)),
        };
        if let Some(error) = error {
            self.fail(error);
            return;
        }
        match usize::try_from(length) {
            Ok(length) if length <= self.limit => {
                // Room for what a prefix claims is taken as the bytes arrive: a peer that
                // sends only prefixes claiming large messages holds no more memory than it sent
                // (plus this first step).
                self.body = Some(Vec::with_capacity(
                    length.min(DEFRAMER_FIRST_CAPACITY_BYTES),
                ));
                self.body_length = length;
                if length == 0 {
                    self.complete_message();
                }
            }
            _ => self.fail(FrameError::TooLarge {
                length: u64::from(length),
                limit: self.limit,
            }),
        }
    }

    /// Stops the stream: the partial message is dropped and later input ignored.
    fn fail(&mut self, error: FrameError) {
        self.prefix_len = 0;
        self.body = None;
        self.failed = Some(error);
    }

    fn complete_message(&mut self) {
        if let Some(body) = self.body.take() {
            self.ready.push_back(Bytes::from(body));
        }
        self.prefix_len = 0;
    }

    /// The next complete message, `Ok(None)` when more bytes are needed, or the error that
    /// ended the stream (once every message completed before it was taken).
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Bytes>, FrameError> {
        if let Some(message) = self.ready.pop_front() {
            return Ok(Some(message));
        }
        match &self.failed {
            Some(error) => Err(error.clone()),
            None => Ok(None),
        }
    }

    /// To call at the end of the stream: [`FrameError::Truncated`] when it ended inside a
    /// message (or the error that stopped the stream earlier).
    pub fn finish(&self) -> Result<(), FrameError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        if self.prefix_len > 0 || self.body.is_some() {
            return Err(FrameError::Truncated);
        }
        Ok(())
    }
}
