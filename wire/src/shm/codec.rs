//! The payloads of ring frames.
//!
//! A request payload is `u32 request id, u8 opcode` and the fields of the
//! [`Request`] variant; a response payload is `u32 request id, u8 kind` and the fields of
//! the [`Response`] variant. Byte strings are `u32 length` then the bytes; counts are u32;
//! integers are little-endian; there is no padding. The encoding is canonical: every
//! payload that decodes re-encodes to the same bytes (booleans are 0 or 1, reserved bits
//! and absent optional fields are zero, and nothing may follow the last field).
//!
//! Values of [`Response::Value`] and [`Response::Values`] travel either inline or as a
//! reference into a core's data segment ([`ValueRef`]).

use crate::limits;
use crate::{
    Error, Info, Request, Response, SetCondition, SetOptions, ShardStats, SubscriberId, Ttl,
};
use bytes::Bytes;
use std::fmt;

/// Request opcodes (the byte after the request id).
pub mod opcode {
    pub const PING: u8 = 1;
    pub const GET: u8 = 2;
    pub const SET: u8 = 3;
    pub const DELETE: u8 = 4;
    pub const EXISTS: u8 = 5;
    pub const CAS: u8 = 6;
    pub const INCR: u8 = 7;
    pub const EXPIRE: u8 = 8;
    pub const TTL: u8 = 9;
    pub const PERSIST: u8 = 10;
    pub const MGET: u8 = 11;
    pub const MSET: u8 = 12;
    pub const SCAN: u8 = 13;
    pub const SUBSCRIBE: u8 = 14;
    pub const UNSUBSCRIBE: u8 = 15;
    pub const PUBLISH: u8 = 16;
    pub const FETCH: u8 = 17;
    pub const INFO: u8 = 18;
    pub const SNAPSHOT: u8 = 19;
    /// A subscription whose messages the core pushes as [`DELIVERY`](super::kind::DELIVERY)
    /// frames (rings only: no [`Request`](crate::Request) of its own; see
    /// [`push_subscribe_request`](super::push_subscribe_request)).
    pub const SUBSCRIBE_PUSH: u8 = 20;
    /// A part of a large value sent ahead of the request that uses it (rings only, never
    /// answered: see [`upload_chunk`](super::upload_chunk) and [`UPLOADED_LENGTH`](super::UPLOADED_LENGTH)).
    pub const UPLOAD: u8 = 21;
}

/// Response kinds (the byte after the request id).
pub mod kind {
    pub const PONG: u8 = 1;
    pub const VALUE: u8 = 2;
    pub const NOT_FOUND: u8 = 3;
    pub const STORED: u8 = 4;
    pub const NOT_STORED: u8 = 5;
    pub const VERSION_MISMATCH: u8 = 6;
    pub const INTEGER: u8 = 7;
    pub const BOOL: u8 = 8;
    pub const TTL: u8 = 9;
    pub const VALUES: u8 = 10;
    pub const OK: u8 = 11;
    pub const KEYS: u8 = 12;
    pub const SUBSCRIBED: u8 = 13;
    pub const PUBLISHED: u8 = 14;
    pub const MESSAGES: u8 = 15;
    pub const INFO: u8 = 16;
    pub const ERROR: u8 = 17;
    /// Messages of a pushed subscription, sent unasked with request id
    /// [`DELIVERY_ID`](super::DELIVERY_ID) (see [`delivery`](super::delivery)).
    pub const DELIVERY: u8 = 18;
    /// A part of one message of a pushed subscription too large for a frame, sent unasked
    /// with request id [`DELIVERY_ID`](super::DELIVERY_ID) (see
    /// [`delivery_part`](super::delivery_part)).
    pub const DELIVERY_PART: u8 = 19;
}

/// [`Error`] variant tags (the byte after [`kind::ERROR`]).
pub mod error_tag {
    pub const OUT_OF_MEMORY: u8 = 1;
    pub const KEY_TOO_LARGE: u8 = 2;
    pub const VALUE_TOO_LARGE: u8 = 3;
    pub const NOT_AN_INTEGER: u8 = 4;
    pub const OVERFLOW: u8 = 5;
    pub const INVALID_ARGUMENT: u8 = 6;
    pub const UNKNOWN_SUBSCRIBER: u8 = 7;
    pub const TOO_MANY_SUBSCRIBERS: u8 = 8;
    pub const SHUTTING_DOWN: u8 = 9;
    pub const PERSISTENCE_OFF: u8 = 10;
    pub const STORAGE: u8 = 11;
    pub const BUSY: u8 = 12;
}

/// Forms of a value slot (the byte before a value in VALUE and VALUES).
pub mod value_form {
    /// No value (a missing key in VALUES; invalid in VALUE).
    pub const MISSING: u8 = 0;
    /// u64 version, u32 length, the bytes.
    pub const INLINE: u8 = 1;
    /// u64 version, u32 core, u64 offset, u32 length, u64 generation.
    pub const SHARED: u8 = 2;
}

/// [`SetCondition`] bytes.
pub mod condition {
    pub const ALWAYS: u8 = 0;
    pub const IF_ABSENT: u8 = 1;
    pub const IF_PRESENT: u8 = 2;
}

/// [`Ttl`] tags.
pub mod ttl_tag {
    pub const MISSING: u8 = 0;
    pub const PERSISTENT: u8 = 1;
    pub const REMAINING: u8 = 2;
}

/// SET and CAS flags bit: a TTL is given (the u64 TTL field is zero otherwise).
pub const FLAG_TTL: u8 = 0x01;
/// SET flags bit: KEEPTTL.
pub const FLAG_KEEP_TTL: u8 = 0x02;

/// Bytes before the fields of every payload: request id and opcode (or kind).
pub const PAYLOAD_HEADER_BYTES: usize = 5;
/// Bytes of one [`ShardStats`] record in an INFO response.
pub const SHARD_STATS_BYTES: usize = 4 + 15 * 8;
/// Bytes of a shared value slot after its form byte.
pub const SHARED_VALUE_BYTES: usize = 8 + 4 + 8 + 4 + 8;

/// The length of a value field (SET's and CAS's value, each MSET value, PUBLISH's message)
/// that carries no bytes but stands for the session's next uploaded value on that core: sent
/// ahead as UPLOAD frames ([`opcode::UPLOAD`]), for values larger than a ring's frames. Decoded
/// as [`uploaded_value_mark`], which the server replaces ([`fill_uploaded_values`]) before
/// running the request; encoded back from that mark.
pub const UPLOADED_LENGTH: u32 = u32::MAX;

/// The bytes behind [`uploaded_value_mark`]: only their address matters.
static UPLOADED_MARK: [u8; 16] = *b"<uploaded value>";

/// A value that stands for an uploaded one (see [`UPLOADED_LENGTH`]): encoded as that length,
/// recognised by [`is_uploaded_value_mark`] (by address, not by its bytes).
pub fn uploaded_value_mark() -> Bytes {
    Bytes::from_static(&UPLOADED_MARK)
}

/// Whether `value` is [`uploaded_value_mark`] (a clone of it; never a value with equal bytes).
#[inline]
pub fn is_uploaded_value_mark(value: &[u8]) -> bool {
    std::ptr::eq(value.as_ptr(), UPLOADED_MARK.as_ptr()) && value.len() == UPLOADED_MARK.len()
}

/// The value fields of `request` that may be uploaded, in the order of the encoding (the order
/// the uploaded values are consumed in).
fn value_fields_mut(request: &mut Request) -> Vec<&mut Bytes> {
    match request {
        Request::Set { value, .. } | Request::Cas { value, .. } => vec![value],
        Request::Publish { message, .. } => vec![message],
        Request::MSet { pairs } => pairs.iter_mut().map(|(_, value)| value).collect(),
        _ => Vec::new(),
    }
}

/// Replaces every [`uploaded_value_mark`] in `request`'s value fields, in order, with what
/// `take` returns (the session's next uploaded value); how many it replaced.
pub fn fill_uploaded_values(request: &mut Request, mut take: impl FnMut() -> Bytes) -> usize {
    let mut filled = 0;
    for value in value_fields_mut(request) {
        if is_uploaded_value_mark(value) {
            *value = take();
            filled += 1;
        }
    }
    filled
}

/// Whether any value field of `request` is an [`uploaded_value_mark`].
pub fn has_uploaded_values(request: &Request) -> bool {
    match request {
        Request::Set { value, .. } | Request::Cas { value, .. } => is_uploaded_value_mark(value),
        Request::Publish { message, .. } => is_uploaded_value_mark(message),
        Request::MSet { pairs } => pairs.iter().any(|(_, value)| is_uploaded_value_mark(value)),
        _ => false,
    }
}

/// For a client: `request` with each value field of at least `min_bytes` replaced by an
/// [`uploaded_value_mark`], and those values in order (to send first as UPLOAD frames, see
/// [`encode_upload_header`]). `None` when no value is that large.
pub fn split_uploaded_values(request: &Request, min_bytes: usize) -> Option<(Request, Vec<Bytes>)> {
    let mut marked = request.clone();
    let mut uploads = Vec::new();
    for value in value_fields_mut(&mut marked) {
        if value.len() >= min_bytes {
            uploads.push(std::mem::replace(value, uploaded_value_mark()));
        }
    }
    (!uploads.is_empty()).then_some((marked, uploads))
}

/// Bytes of an UPLOAD frame before its chunk: request id (of the request that will name the
/// value; an UPLOAD itself is never answered), opcode, the value's total length (u64), the
/// chunk's offset in it (u64), the chunk's length (u32).
pub const UPLOAD_HEADER_BYTES: usize = PAYLOAD_HEADER_BYTES + 8 + 8 + 4;

/// One UPLOAD frame's header fields (its chunk follows, `len` bytes, to the end of the frame).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UploadChunk {
    /// The id of the request that will name this value (never 0): the server gives a request
    /// only the values uploaded for it, so values a client uploaded for a request it then never
    /// sent are never taken by another.
    pub request: u32,
    /// The whole value's length.
    pub total: u64,
    /// Where this chunk goes in it: 0 starts a new value.
    pub offset: u64,
    /// The chunk's length.
    pub len: u32,
}

/// The header of an UPLOAD frame for `chunk` (its bytes follow it in the frame).
pub fn encode_upload_header(chunk: UploadChunk) -> [u8; UPLOAD_HEADER_BYTES] {
    let mut out = [0u8; UPLOAD_HEADER_BYTES];
    let mut w = Writer {
        out: &mut out,
        pos: 0,
    };
    w.u32(chunk.request);
    w.u8(opcode::UPLOAD);
    w.u64(chunk.total);
    w.u64(chunk.offset);
    w.u32(chunk.len);
    out
}

/// Reads an UPLOAD frame's header from the first bytes of a payload of `payload_len` bytes:
/// `None` when the payload is not an UPLOAD (its opcode byte is another, or it is shorter than
/// an opcode); an error when it is one but malformed (a request id of 0, a header cut short, a
/// chunk length that does not cover exactly the rest of the frame, a chunk past the value's
/// total).
pub fn upload_chunk(
    header: &[u8],
    payload_len: usize,
) -> Option<std::result::Result<UploadChunk, DecodeError>> {
    if header.get(4) != Some(&opcode::UPLOAD) {
        return None;
    }
    let mut r = Reader::new(header, None);
    Some((|| {
        let request = r.u32("request id")?;
        if request == 0 {
            return Err(r.error(
                0,
                DecodeErrorKind::BadByte {
                    what: "UPLOAD request id (0 is no request's)",
                    value: 0,
                },
            ));
        }
        r.u8("opcode")?;
        let total = r.u64("upload total")?;
        let offset = r.u64("upload offset")?;
        let len_at = r.pos;
        let len = r.u32("upload chunk length")?;
        let rest = payload_len.saturating_sub(UPLOAD_HEADER_BYTES);
        if payload_len < UPLOAD_HEADER_BYTES || len as usize != rest {
            return Err(r.error(
                len_at,
                DecodeErrorKind::LengthPastEnd {
                    what: "upload chunk",
                    length: len.into(),
                    remaining: rest,
                },
            ));
        }
        if offset.checked_add(len.into()).is_none_or(|end| end > total) {
            return Err(r.error(
                len_at,
                DecodeErrorKind::LengthPastEnd {
                    what: "upload chunk (past the value's total)",
                    length: len.into(),
                    remaining: total.saturating_sub(offset) as usize,
                },
            ));
        }
        Ok(UploadChunk {
            request,
            total,
            offset,
            len,
        })
    })())
}

// -----------------------------------------------------------------------------------------
// Errors

/// Why a payload could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError {
    /// Byte offset in the payload where the problem starts.
    pub offset: usize,
    /// The request id, when the payload was long enough to hold one (the server may
    /// answer a [`DecodeErrorKind::TooMany`] with an error to it instead of disconnecting).
    pub request_id: Option<u32>,
    pub kind: DecodeErrorKind,
}

/// What was wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeErrorKind {
    /// The payload ends inside a fixed-width field.
    Truncated {
        what: &'static str,
        needed: usize,
        available: usize,
    },
    /// A byte-string length runs past the end of the payload.
    LengthPastEnd {
        what: &'static str,
        length: u64,
        remaining: usize,
    },
    /// A count whose items cannot fit in the rest of the payload.
    CountPastEnd {
        what: &'static str,
        count: u64,
        min_bytes: u64,
        remaining: usize,
    },
    /// A count over its protocol limit.
    TooMany {
        what: &'static str,
        count: u64,
        limit: u64,
    },
    UnknownOpcode(u8),
    UnknownKind(u8),
    UnknownErrorTag(u8),
    /// A tag, flag or boolean byte with a value the format does not allow.
    BadByte {
        what: &'static str,
        value: u8,
    },
    /// A field that must be zero is not.
    NonZero {
        what: &'static str,
        value: u64,
    },
    /// A string that is not UTF-8.
    InvalidUtf8 {
        what: &'static str,
    },
    /// A number too large for this platform's `usize`.
    Unrepresentable {
        what: &'static str,
        value: u64,
    },
    /// Bytes after the last field.
    TrailingBytes {
        count: usize,
    },
}

impl fmt::Display for DecodeErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeErrorKind::Truncated {
                what,
                needed,
                available,
            } => write!(
                f,
                "payload ends inside {what}: {needed} bytes needed, {available} left"
            ),
            DecodeErrorKind::LengthPastEnd {
                what,
                length,
                remaining,
            } => write!(
                f,
                "{what} of {length} bytes runs past the end of the payload ({remaining} bytes left)"
            ),
            DecodeErrorKind::CountPastEnd {
                what,
                count,
                min_bytes,
                remaining,
            } => write!(
                f,
                "{count} {what} need at least {min_bytes} bytes, only {remaining} left in the payload"
            ),
            DecodeErrorKind::TooMany { what, count, limit } => {
                write!(f, "{count} {what}: the maximum is {limit}")
            }
            DecodeErrorKind::UnknownOpcode(op) => write!(f, "unknown request opcode {op}"),
            DecodeErrorKind::UnknownKind(k) => write!(f, "unknown response kind {k}"),
            DecodeErrorKind::UnknownErrorTag(t) => write!(f, "unknown error tag {t}"),
            DecodeErrorKind::BadByte { what, value } => {
                write!(f, "invalid {what} byte {value:#04x}")
            }
            DecodeErrorKind::NonZero { what, value } => {
                write!(f, "{what} must be zero, found {value}")
            }
            DecodeErrorKind::InvalidUtf8 { what } => write!(f, "{what} is not valid UTF-8"),
            DecodeErrorKind::Unrepresentable { what, value } => {
                write!(f, "{what} {value} does not fit this platform's usize")
            }
            DecodeErrorKind::TrailingBytes { count } => {
                write!(f, "{count} unexpected bytes after the last field")
            }
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad shm payload at byte {}: {}", self.offset, self.kind)?;
        if let Some(id) = self.request_id {
            write!(f, " (request id {id})")?;
        }
        Ok(())
    }
}

impl std::error::Error for DecodeError {}

// -----------------------------------------------------------------------------------------
// Writer and reader

/// Writes into a slice; panics when it is too short (the documented contract of the
/// `encode_*` functions).
struct Writer<'a> {
    out: &'a mut [u8],
    pos: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) {
        let end = self.pos + bytes.len();
        assert!(
            end <= self.out.len(),
            "shm codec: output buffer of {} bytes is too short (encode into at least the *_len bytes)",
            self.out.len()
        );
        self.out[self.pos..end].copy_from_slice(bytes);
        self.pos = end;
    }
    fn u8(&mut self, v: u8) {
        self.put(&[v]);
    }
    fn u32(&mut self, v: u32) {
        self.put(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.put(&v.to_le_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.put(&v.to_le_bytes());
    }
    fn len32(&mut self, len: usize) {
        let len = u32::try_from(len)
            .unwrap_or_else(|_| panic!("shm codec: length {len} does not fit in a u32"));
        self.u32(len);
    }
    /// A value field: its bytes, or [`UPLOADED_LENGTH`] for an [`uploaded_value_mark`].
    fn value(&mut self, b: &[u8]) {
        if is_uploaded_value_mark(b) {
            self.u32(UPLOADED_LENGTH);
        } else {
            self.bytes(b);
        }
    }
    fn bytes(&mut self, b: &[u8]) {
        self.len32(b.len());
        self.put(b);
    }
}

/// Reads from a payload; every read is bounds-checked and reports its offset.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// When decoding from a `Bytes`, byte strings are slices of it instead of copies.
    owner: Option<&'a Bytes>,
    request_id: Option<u32>,
}

type Result<T> = std::result::Result<T, DecodeError>;

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], owner: Option<&'a Bytes>) -> Self {
        Reader {
            buf,
            pos: 0,
            owner,
            request_id: None,
        }
    }
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    fn error(&self, offset: usize, kind: DecodeErrorKind) -> DecodeError {
        DecodeError {
            offset,
            request_id: self.request_id,
            kind,
        }
    }
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(self.error(
                self.pos,
                DecodeErrorKind::Truncated {
                    what,
                    needed: n,
                    available: self.remaining(),
                },
            ));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8> {
        Ok(self.array::<1>(what)?[0])
    }
    fn u32(&mut self, what: &'static str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
    fn i64(&mut self, what: &'static str) -> Result<i64> {
        Ok(i64::from_le_bytes(self.array(what)?))
    }
    fn bool(&mut self, what: &'static str) -> Result<bool> {
        let at = self.pos;
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            value => Err(self.error(at, DecodeErrorKind::BadByte { what, value })),
        }
    }
    fn usize(&mut self, what: &'static str) -> Result<usize> {
        let at = self.pos;
        let value = self.u64(what)?;
        usize::try_from(value)
            .map_err(|_| self.error(at, DecodeErrorKind::Unrepresentable { what, value }))
    }
    /// A u64 field that must be zero.
    fn zero_u64(&mut self, what: &'static str) -> Result<()> {
        let at = self.pos;
        match self.u64(what)? {
            0 => Ok(()),
            value => Err(self.error(at, DecodeErrorKind::NonZero { what, value })),
        }
    }
    /// A u32 length and that many bytes, borrowed.
    fn slice(&mut self, what: &'static str) -> Result<(usize, &'a [u8])> {
        let at = self.pos;
        let length = self.u32(what)?;
        if length as usize > self.remaining() {
            return Err(self.error(
                at,
                DecodeErrorKind::LengthPastEnd {
                    what,
                    length: length.into(),
                    remaining: self.remaining(),
                },
            ));
        }
        let start = self.pos;
        Ok((start, self.take(length as usize, what)?))
    }
    /// A u32 length and that many bytes, as `Bytes` (a slice of the owner, or a copy).
    fn bytes(&mut self, what: &'static str) -> Result<Bytes> {
        let (start, s) = self.slice(what)?;
        Ok(match self.owner {
            Some(owner) => owner.slice(start..start + s.len()),
            None => Bytes::copy_from_slice(s),
        })
    }
    /// A value field: a byte string, or [`UPLOADED_LENGTH`] for an [`uploaded_value_mark`].
    fn value(&mut self, what: &'static str) -> Result<Bytes> {
        if self.buf.get(self.pos..self.pos + 4) == Some(&UPLOADED_LENGTH.to_le_bytes()[..]) {
            self.pos += 4;
            return Ok(uploaded_value_mark());
        }
        self.bytes(what)
    }
    fn string(&mut self, what: &'static str) -> Result<String> {
        let (start, s) = self.slice(what)?;
        match std::str::from_utf8(s) {
            Ok(text) => Ok(text.to_owned()),
            Err(_) => Err(self.error(start, DecodeErrorKind::InvalidUtf8 { what })),
        }
    }
    /// A u32 count of items of at least `min_item_bytes` each, checked against `limit`
    /// and against the bytes left, so that a capacity of `count` is safe to reserve.
    fn count(
        &mut self,
        what: &'static str,
        min_item_bytes: usize,
        limit: Option<usize>,
    ) -> Result<usize> {
        let at = self.pos;
        let count = self.u32(what)? as usize;
        if let Some(limit) = limit {
            if count > limit {
                return Err(self.error(
                    at,
                    DecodeErrorKind::TooMany {
                        what,
                        count: count as u64,
                        limit: limit as u64,
                    },
                ));
            }
        }
        let min_bytes = (count as u64).saturating_mul(min_item_bytes as u64);
        if min_bytes > self.remaining() as u64 {
            return Err(self.error(
                at,
                DecodeErrorKind::CountPastEnd {
                    what,
                    count: count as u64,
                    min_bytes,
                    remaining: self.remaining(),
                },
            ));
        }
        Ok(count)
    }
    fn finish(&self) -> Result<()> {
        if self.remaining() != 0 {
            return Err(self.error(
                self.pos,
                DecodeErrorKind::TrailingBytes {
                    count: self.remaining(),
                },
            ));
        }
        Ok(())
    }
}

/// Bytes of a length-prefixed byte string.
const fn lp(len: usize) -> usize {
    4 + len
}

/// Bytes of a value field: a byte string, or only the length for an uploaded value.
fn value_len(value: &[u8]) -> usize {
    if is_uploaded_value_mark(value) {
        4
    } else {
        lp(value.len())
    }
}

// -----------------------------------------------------------------------------------------
// Requests

/// Bytes [`encode_request`] writes for `request`.
pub fn request_len(request: &Request) -> usize {
    PAYLOAD_HEADER_BYTES
        + match request {
            Request::Ping | Request::Info | Request::Snapshot => 0,
            Request::Get { key }
            | Request::Delete { key }
            | Request::Exists { key }
            | Request::Ttl { key }
            | Request::Persist { key } => lp(key.len()),
            Request::Set { key, value, .. } => 1 + 1 + 8 + lp(key.len()) + value_len(value),
            Request::Cas { key, value, .. } => 8 + 1 + 8 + lp(key.len()) + value_len(value),
            Request::Incr { key, .. } | Request::Expire { key, .. } => 8 + lp(key.len()),
            Request::MGet { keys } => 4 + keys.iter().map(|k| lp(k.len())).sum::<usize>(),
            Request::MSet { pairs } => {
                4 + pairs
                    .iter()
                    .map(|(k, v)| lp(k.len()) + value_len(v))
                    .sum::<usize>()
            }
            Request::Scan { cursor, prefix, .. } => 4 + lp(cursor.len()) + lp(prefix.len()),
            Request::Subscribe { topic } => lp(topic.len()),
            Request::Unsubscribe { .. } => 8,
            Request::Publish { topic, message } => lp(topic.len()) + value_len(message),
            Request::Fetch { .. } => 8 + 4 + 8,
        }
}

/// The opcode of a request.
pub fn request_opcode(request: &Request) -> u8 {
    match request {
        Request::Ping => opcode::PING,
        Request::Get { .. } => opcode::GET,
        Request::Set { .. } => opcode::SET,
        Request::Delete { .. } => opcode::DELETE,
        Request::Exists { .. } => opcode::EXISTS,
        Request::Cas { .. } => opcode::CAS,
        Request::Incr { .. } => opcode::INCR,
        Request::Expire { .. } => opcode::EXPIRE,
        Request::Ttl { .. } => opcode::TTL,
        Request::Persist { .. } => opcode::PERSIST,
        Request::MGet { .. } => opcode::MGET,
        Request::MSet { .. } => opcode::MSET,
        Request::Scan { .. } => opcode::SCAN,
        Request::Subscribe { .. } => opcode::SUBSCRIBE,
        Request::Unsubscribe { .. } => opcode::UNSUBSCRIBE,
        Request::Publish { .. } => opcode::PUBLISH,
        Request::Fetch { .. } => opcode::FETCH,
        Request::Info => opcode::INFO,
        Request::Snapshot => opcode::SNAPSHOT,
    }
}

/// Encodes `request` with `id` into the start of `out` and returns the bytes written,
/// always exactly [`request_len`].
///
/// # Panics
///
/// If `out` is shorter than [`request_len`], or if a key, value or count does not fit in
/// a u32 (impossible for a request whose [`request_len`] is at most
/// [`MAX_FRAME_PAYLOAD`](super::layout::ring::MAX_FRAME_PAYLOAD), which the caller must
/// check anyway before writing it into a ring).
pub fn encode_request(id: u32, request: &Request, out: &mut [u8]) -> usize {
    let mut w = Writer { out, pos: 0 };
    w.u32(id);
    w.u8(request_opcode(request));
    match request {
        Request::Ping | Request::Info | Request::Snapshot => {}
        Request::Get { key }
        | Request::Delete { key }
        | Request::Exists { key }
        | Request::Ttl { key }
        | Request::Persist { key } => w.bytes(key),
        Request::Set {
            key,
            value,
            options:
                SetOptions {
                    ttl_ms,
                    condition: cond,
                    keep_ttl,
                },
        } => {
            w.u8(match cond {
                SetCondition::Always => condition::ALWAYS,
                SetCondition::IfAbsent => condition::IF_ABSENT,
                SetCondition::IfPresent => condition::IF_PRESENT,
            });
            let mut flags = 0;
            if ttl_ms.is_some() {
                flags |= FLAG_TTL;
            }
            if *keep_ttl {
                flags |= FLAG_KEEP_TTL;
            }
            w.u8(flags);
            w.u64(ttl_ms.unwrap_or(0));
            w.bytes(key);
            w.value(value);
        }
        Request::Cas {
            key,
            expected_version,
            value,
            ttl_ms,
        } => {
            w.u64(*expected_version);
            w.u8(if ttl_ms.is_some() { FLAG_TTL } else { 0 });
            w.u64(ttl_ms.unwrap_or(0));
            w.bytes(key);
            w.value(value);
        }
        Request::Incr { key, delta } => {
            w.i64(*delta);
            w.bytes(key);
        }
        Request::Expire { key, ttl_ms } => {
            w.u64(*ttl_ms);
            w.bytes(key);
        }
        Request::MGet { keys } => {
            w.len32(keys.len());
            for key in keys {
                w.bytes(key);
            }
        }
        Request::MSet { pairs } => {
            w.len32(pairs.len());
            for (key, value) in pairs {
                w.bytes(key);
                w.value(value);
            }
        }
        Request::Scan {
            cursor,
            prefix,
            count,
        } => {
            w.u32(*count);
            w.bytes(cursor);
            w.bytes(prefix);
        }
        Request::Subscribe { topic } => w.bytes(topic),
        Request::Unsubscribe { subscriber } => w.u64(subscriber.0),
        Request::Publish { topic, message } => {
            w.bytes(topic);
            w.value(message);
        }
        Request::Fetch {
            subscriber,
            max,
            wait_ms,
        } => {
            w.u64(subscriber.0);
            w.u32(*max);
            w.u64(*wait_ms);
        }
    }
    w.pos
}

/// [`encode_request`] into a new vector of exactly [`request_len`] bytes.
pub fn encode_request_vec(id: u32, request: &Request) -> Vec<u8> {
    let mut out = Vec::new();
    encode_request_into(id, request, &mut out);
    out
}

/// [`encode_request`] into `out`, which it first clears and then holds exactly the
/// [`request_len`] bytes of the encoding (a buffer kept between requests allocates nothing).
pub fn encode_request_into(id: u32, request: &Request, out: &mut Vec<u8>) {
    out.clear();
    // The most common request, a GET: appended field by field, no length pass.
    if let Request::Get { key } = request {
        out.resize(get_request_len(key.len()), 0);
        encode_get_request(id, key, out);
        return;
    }
    out.resize(request_len(request), 0);
    let n = encode_request(id, request, out);
    debug_assert_eq!(n, out.len());
}

/// Decodes a request payload (copied out of the ring first: never decode from the shared
/// mapping, whose bytes the client may change underneath). Keys and values are copied
/// into new `Bytes`; see [`decode_request_bytes`] to slice them instead.
///
/// Never panics. Refuses truncated payloads, lengths and counts beyond the payload,
/// unknown opcodes and tags, non-canonical bytes, trailing bytes, and MGET/MSET with more
/// than [`BATCH_KEYS_MAX`](limits::BATCH_KEYS_MAX) keys. Key and value sizes, TTLs, SCAN
/// counts and FETCH limits are left to the shard, which answers them with the same
/// errors as on every other transport.
pub fn decode_request(payload: &[u8]) -> std::result::Result<(u32, Request), DecodeError> {
    decode_request_from(Reader::new(payload, None))
}

/// [`decode_request`] from a `Bytes` holding the payload: keys and values are slices of
/// it (no copy).
pub fn decode_request_bytes(payload: &Bytes) -> std::result::Result<(u32, Request), DecodeError> {
    // The most common request, a well-formed GET, read directly (anything else, and a GET with
    // a wrong length, goes through the checked reader and its errors).
    if let Some((id, key)) = well_formed_get(payload) {
        return Ok((
            id,
            Request::Get {
                key: payload.slice(key),
            },
        ));
    }
    decode_request_from(Reader::new(payload, Some(payload)))
}

/// The id and the key's range of a GET whose key length covers exactly the rest of the payload.
#[inline]
fn well_formed_get(payload: &[u8]) -> Option<(u32, std::ops::Range<usize>)> {
    one_string_request(payload, opcode::GET)
}

/// The id and the range of the one byte string of a request with `opcode` whose length covers
/// exactly the rest of the payload (GET, SUBSCRIBE_PUSH).
#[inline]
fn one_string_request(payload: &[u8], opcode: u8) -> Option<(u32, std::ops::Range<usize>)> {
    let header: &[u8; 9] = payload.get(..9)?.try_into().ok()?;
    if header[4] != opcode {
        return None;
    }
    let id = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let length = u32::from_le_bytes([header[5], header[6], header[7], header[8]]) as usize;
    (payload.len() - 9 == length).then_some((id, 9..payload.len()))
}

/// What decoding the request in `payload` leaves behind once it is answered, for a server
/// that wants to decode it as slices of a buffer it reuses (see [`decode_request_bytes`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retains<'a> {
    /// A read of one key (GET, EXISTS, TTL): nothing outlives the answer, but if another shard
    /// owns the key the request travels there and lives until that shard answers.
    OneKey(&'a [u8]),
    /// A read of several keys (MGET): as `OneKey`, for keys that may belong to several shards.
    Keys,
    /// PING or INFO: nothing of the payload.
    Nothing,
    /// Anything else (or a payload too short to say): parts of it may be kept (a stored key, a
    /// message, a journal entry), so it should own its bytes.
    Maybe,
}

/// See [`Retains`]. Reads only the opcode and, for one-key reads, the key (unchecked beyond
/// its bounds: the decoder checks the rest).
pub fn retains(payload: &[u8]) -> Retains<'_> {
    match payload.get(4) {
        Some(&(opcode::GET | opcode::EXISTS | opcode::TTL)) => {
            let key = payload.get(5..9).and_then(|length| {
                let length = u32::from_le_bytes(length.try_into().ok()?) as usize;
                payload.get(9..9usize.checked_add(length)?)
            });
            match key {
                Some(key) => Retains::OneKey(key),
                None => Retains::Maybe,
            }
        }
        Some(&opcode::MGET) => Retains::Keys,
        Some(&(opcode::PING | opcode::INFO)) => Retains::Nothing,
        _ => Retains::Maybe,
    }
}

/// The request id of a payload, if it is long enough to hold one.
pub fn payload_id(payload: &[u8]) -> Option<u32> {
    payload
        .get(..4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Decodes a request: the id and opcode, the opcode's fields, then nothing more.
fn decode_request_from(mut r: Reader<'_>) -> Result<(u32, Request)> {
    let id = r.u32("request id")?;
    r.request_id = Some(id);
    let op_at = r.pos;
    let request = match r.u8("opcode")? {
        opcode::PING => Request::Ping,
        opcode::INFO => Request::Info,
        opcode::SNAPSHOT => Request::Snapshot,
        opcode::GET => Request::Get { key: key(&mut r)? },
        opcode::DELETE => Request::Delete { key: key(&mut r)? },
        opcode::EXISTS => Request::Exists { key: key(&mut r)? },
        opcode::TTL => Request::Ttl { key: key(&mut r)? },
        opcode::PERSIST => Request::Persist { key: key(&mut r)? },
        opcode::SET => set_fields(&mut r)?,
        opcode::CAS => cas_request(&mut r)?,
        opcode::INCR => incr_request(&mut r)?,
        opcode::EXPIRE => expire_request(&mut r)?,
        opcode::MGET => mget_request(&mut r)?,
        opcode::MSET => mset_request(&mut r)?,
        opcode::SCAN => scan_request(&mut r)?,
        opcode::SUBSCRIBE => Request::Subscribe {
            topic: r.bytes("topic")?,
        },
        opcode::UNSUBSCRIBE => Request::Unsubscribe {
            subscriber: subscriber_id(&mut r)?,
        },
        opcode::PUBLISH => publish_request(&mut r)?,
        opcode::FETCH => fetch_request(&mut r)?,
        other => return Err(r.error(op_at, DecodeErrorKind::UnknownOpcode(other))),
    };
    r.finish()?;
    Ok((id, request))
}

// Shared fields of requests.

/// Reads a key (a byte string).
#[inline]
fn key(r: &mut Reader<'_>) -> Result<Bytes> {
    r.bytes("key")
}

/// Reads a key then its value (the tail of SET and CAS, and each MSET pair).
#[inline]
fn key_value(r: &mut Reader<'_>) -> Result<(Bytes, Bytes)> {
    let key = r.bytes("key")?;
    let value = r.value("value")?;
    Ok((key, value))
}

/// Reads a flags byte, refusing any bit outside `allowed`.
#[inline]
fn checked_flags(r: &mut Reader<'_>, what: &'static str, allowed: u8) -> Result<u8> {
    let at = r.pos;
    let flags = r.u8(what)?;
    if flags & !allowed != 0 {
        return Err(r.error(at, DecodeErrorKind::BadByte { what, value: flags }));
    }
    Ok(flags)
}

/// Reads the u64 TTL field: the TTL when `present`, else a zero.
fn optional_ttl(r: &mut Reader<'_>, present: bool) -> Result<Option<u64>> {
    if present {
        Ok(Some(r.u64("TTL")?))
    } else {
        r.zero_u64("TTL (no TTL flag)")?;
        Ok(None)
    }
}

/// Reads a subscriber id (UNSUBSCRIBE, FETCH).
#[inline]
fn subscriber_id(r: &mut Reader<'_>) -> Result<SubscriberId> {
    Ok(SubscriberId(r.u64("subscriber id")?))
}

// Writes: SET, CAS, INCR, EXPIRE.

/// Reads the fields of SET: condition, flags, TTL, key, value.
#[inline]
fn set_fields(r: &mut Reader<'_>) -> Result<Request> {
    let condition = set_condition(r)?;
    let flags = checked_flags(r, "SET flags", FLAG_TTL | FLAG_KEEP_TTL)?;
    let ttl_ms = optional_ttl(r, flags & FLAG_TTL != 0)?;
    let (key, value) = key_value(r)?;
    Ok(Request::Set {
        key,
        value,
        options: SetOptions {
            ttl_ms,
            condition,
            keep_ttl: flags & FLAG_KEEP_TTL != 0,
        },
    })
}

/// Reads the condition byte of SET.
#[inline]
fn set_condition(r: &mut Reader<'_>) -> Result<SetCondition> {
    let at = r.pos;
    match r.u8("SET condition")? {
        condition::ALWAYS => Ok(SetCondition::Always),
        condition::IF_ABSENT => Ok(SetCondition::IfAbsent),
        condition::IF_PRESENT => Ok(SetCondition::IfPresent),
        value => Err(r.error(
            at,
            DecodeErrorKind::BadByte {
                what: "SET condition",
                value,
            },
        )),
    }
}

/// Reads the fields of CAS: expected version, flags, TTL, key, value.
#[inline]
fn cas_request(r: &mut Reader<'_>) -> Result<Request> {
    let expected_version = r.u64("expected version")?;
    let flags = checked_flags(r, "CAS flags", FLAG_TTL)?;
    let ttl_ms = optional_ttl(r, flags & FLAG_TTL != 0)?;
    let (key, value) = key_value(r)?;
    Ok(Request::Cas {
        key,
        expected_version,
        value,
        ttl_ms,
    })
}

/// Reads the fields of INCR: delta, key.
#[inline]
fn incr_request(r: &mut Reader<'_>) -> Result<Request> {
    let delta = r.i64("delta")?;
    let key = key(r)?;
    Ok(Request::Incr { key, delta })
}

/// Reads the fields of EXPIRE: TTL, key.
#[inline]
fn expire_request(r: &mut Reader<'_>) -> Result<Request> {
    let ttl_ms = r.u64("TTL")?;
    let key = key(r)?;
    Ok(Request::Expire { key, ttl_ms })
}

// Batches and scans: MGET, MSET, SCAN.

/// Reads the fields of MGET: a count (at most `BATCH_KEYS_MAX`), then the keys.
#[inline]
fn mget_request(r: &mut Reader<'_>) -> Result<Request> {
    let n = r.count("MGET keys", 4, Some(limits::BATCH_KEYS_MAX))?;
    let mut keys = Vec::with_capacity(n);
    for _ in 0..n {
        keys.push(key(r)?);
    }
    Ok(Request::MGet { keys })
}

/// Reads the fields of MSET: a count (at most `BATCH_KEYS_MAX`), then the key-value pairs.
#[inline]
fn mset_request(r: &mut Reader<'_>) -> Result<Request> {
    let n = r.count("MSET pairs", 8, Some(limits::BATCH_KEYS_MAX))?;
    let mut pairs = Vec::with_capacity(n);
    for _ in 0..n {
        pairs.push(key_value(r)?);
    }
    Ok(Request::MSet { pairs })
}

/// Reads the fields of SCAN: count, cursor, prefix.
#[inline]
fn scan_request(r: &mut Reader<'_>) -> Result<Request> {
    let count = r.u32("SCAN count")?;
    let cursor = r.bytes("cursor")?;
    let prefix = r.bytes("prefix")?;
    Ok(Request::Scan {
        cursor,
        prefix,
        count,
    })
}

// Pub/sub: PUBLISH, FETCH (SUBSCRIBE and UNSUBSCRIBE have one field each).

/// Reads the fields of PUBLISH: topic, message.
#[inline]
fn publish_request(r: &mut Reader<'_>) -> Result<Request> {
    let topic = r.bytes("topic")?;
    let message = r.value("message")?;
    Ok(Request::Publish { topic, message })
}

/// Reads the fields of FETCH: subscriber id, max, wait.
#[inline]
fn fetch_request(r: &mut Reader<'_>) -> Result<Request> {
    let subscriber = subscriber_id(r)?;
    let max = r.u32("FETCH max")?;
    let wait_ms = r.u64("FETCH wait")?;
    Ok(Request::Fetch {
        subscriber,
        max,
        wait_ms,
    })
}

// -----------------------------------------------------------------------------------------
// Responses

/// Where the server placed a value: `(core, offset of the value bytes in that core's data
/// segment, block generation)`, or `None` to send it inline.
pub type SharedPlacement = Option<(u32, u64, u64)>;

/// The placement callback that sends every value inline.
pub fn all_inline(_: &Bytes) -> SharedPlacement {
    None
}

/// A value in a decoded response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueRef<'a> {
    /// The value bytes, borrowed from the payload.
    Inline(&'a [u8]),
    /// The value lives in the data segment of `core`, `len` bytes at `offset` (from the
    /// start of the segment), in a block of generation `generation`.
    Shared {
        core: u32,
        offset: u64,
        len: u32,
        generation: u64,
    },
}

/// The fields of [`ValueRef::Shared`], as one value (what the resolver receives).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SharedValue {
    pub core: u32,
    pub offset: u64,
    pub len: u32,
    pub generation: u64,
}

impl ValueRef<'_> {
    /// Length of the value in bytes.
    pub fn len(&self) -> usize {
        match self {
            ValueRef::Inline(bytes) => bytes.len(),
            ValueRef::Shared { len, .. } => *len as usize,
        }
    }

    /// Whether the value is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The shared reference, if the value is shared.
    pub fn shared(&self) -> Option<SharedValue> {
        match *self {
            ValueRef::Inline(_) => None,
            ValueRef::Shared {
                core,
                offset,
                len,
                generation,
            } => Some(SharedValue {
                core,
                offset,
                len,
                generation,
            }),
        }
    }

    /// The value as `Bytes`: inline bytes are copied, shared ones asked of `resolve`;
    /// the error is the shared value it could not resolve.
    pub fn resolve(
        &self,
        resolve: &mut impl FnMut(SharedValue) -> Option<Bytes>,
    ) -> std::result::Result<Bytes, SharedValue> {
        match *self {
            ValueRef::Inline(bytes) => Ok(Bytes::copy_from_slice(bytes)),
            ValueRef::Shared {
                core,
                offset,
                len,
                generation,
            } => {
                let shared = SharedValue {
                    core,
                    offset,
                    len,
                    generation,
                };
                resolve(shared).ok_or(shared)
            }
        }
    }
}

/// A decoded response: like [`Response`], but the values of VALUE and VALUES may be
/// references into a data segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResponseFrame<'a> {
    /// [`Response::Value`].
    Value { value: ValueRef<'a>, version: u64 },
    /// [`Response::Values`].
    Values(Vec<Option<(ValueRef<'a>, u64)>>),
    /// Every other response (never `Value` or `Values`), decoded in full.
    Other(Response),
}

impl ResponseFrame<'_> {
    /// Every shared value the frame refers to, in order.
    pub fn shared_values(&self) -> Vec<SharedValue> {
        match self {
            ResponseFrame::Value { value, .. } => value.shared().into_iter().collect(),
            ResponseFrame::Values(values) => values
                .iter()
                .flatten()
                .filter_map(|(value, _)| value.shared())
                .collect(),
            ResponseFrame::Other(_) => Vec::new(),
        }
    }

    /// Builds the owned [`Response`]: inline values are copied, shared ones are asked of
    /// `resolve` (which copies them out of the data segment, or builds a zero-copy
    /// `Bytes` over a guard). Fails with the first shared value `resolve` could not give.
    pub fn into_response(
        self,
        mut resolve: impl FnMut(SharedValue) -> Option<Bytes>,
    ) -> std::result::Result<Response, SharedValue> {
        match self {
            ResponseFrame::Value { value, version } => Ok(Response::Value {
                value: value.resolve(&mut resolve)?,
                version,
            }),
            ResponseFrame::Values(values) => {
                let mut out = Vec::with_capacity(values.len());
                for slot in values {
                    out.push(match slot {
                        None => None,
                        Some((value, version)) => Some((value.resolve(&mut resolve)?, version)),
                    });
                }
                Ok(Response::Values(out))
            }
            ResponseFrame::Other(response) => Ok(response),
        }
    }
}

fn value_slot_len(value: &Bytes, shared: &impl Fn(&Bytes) -> SharedPlacement) -> usize {
    1 + match shared(value) {
        Some(_) => SHARED_VALUE_BYTES,
        None => 8 + lp(value.len()),
    }
}

/// Bytes [`encode_response`] writes for `response` with the same `shared` decisions.
pub fn response_len(response: &Response, shared: impl Fn(&Bytes) -> SharedPlacement) -> usize {
    PAYLOAD_HEADER_BYTES
        + match response {
            Response::Pong | Response::NotFound | Response::NotStored | Response::Ok => 0,
            Response::Value { value, .. } => value_slot_len(value, &shared),
            Response::Stored { .. } | Response::VersionMismatch { .. } => 8,
            Response::Integer { .. } => 16,
            Response::Bool(_) => 1,
            Response::Ttl(_) => 9,
            Response::Values(values) => {
                4 + values
                    .iter()
                    .map(|slot| match slot {
                        None => 1,
                        Some((value, _)) => value_slot_len(value, &shared),
                    })
                    .sum::<usize>()
            }
            Response::Keys { keys, cursor } => {
                4 + keys.iter().map(|k| lp(k.len())).sum::<usize>() + lp(cursor.len())
            }
            Response::Subscribed { .. } => 8,
            Response::Published { .. } => 4,
            Response::Messages { messages, .. } => {
                8 + 4 + messages.iter().map(|m| lp(m.len())).sum::<usize>()
            }
            Response::Info(info) => 4 + info.shards.len() * SHARD_STATS_BYTES,
            Response::Error(error) => 1 + error_len(error),
        }
}

fn error_len(error: &Error) -> usize {
    match error {
        Error::OutOfMemory { .. } | Error::KeyTooLarge { .. } | Error::ValueTooLarge { .. } => 16,
        Error::NotAnInteger | Error::Overflow | Error::ShuttingDown | Error::PersistenceOff => 0,
        Error::InvalidArgument(text) | Error::Storage(text) | Error::Busy(text) => lp(text.len()),
        Error::UnknownSubscriber(_) | Error::TooManySubscribers { .. } => 8,
    }
}

/// The kind byte of a response.
pub fn response_kind(response: &Response) -> u8 {
    match response {
        Response::Pong => kind::PONG,
        Response::Value { .. } => kind::VALUE,
        Response::NotFound => kind::NOT_FOUND,
        Response::Stored { .. } => kind::STORED,
        Response::NotStored => kind::NOT_STORED,
        Response::VersionMismatch { .. } => kind::VERSION_MISMATCH,
        Response::Integer { .. } => kind::INTEGER,
        Response::Bool(_) => kind::BOOL,
        Response::Ttl(_) => kind::TTL,
        Response::Values(_) => kind::VALUES,
        Response::Ok => kind::OK,
        Response::Keys { .. } => kind::KEYS,
        Response::Subscribed { .. } => kind::SUBSCRIBED,
        Response::Published { .. } => kind::PUBLISHED,
        Response::Messages { .. } => kind::MESSAGES,
        Response::Info(_) => kind::INFO,
        Response::Error(_) => kind::ERROR,
    }
}

fn put_value(
    w: &mut Writer<'_>,
    value: &Bytes,
    version: u64,
    shared: &impl Fn(&Bytes) -> SharedPlacement,
) {
    match shared(value) {
        Some((core, offset, generation)) => {
            w.u8(value_form::SHARED);
            w.u64(version);
            w.u32(core);
            w.u64(offset);
            w.len32(value.len());
            w.u64(generation);
        }
        None => {
            w.u8(value_form::INLINE);
            w.u64(version);
            w.bytes(value);
        }
    }
}

/// Encodes `response` to request `id` into the start of `out` and returns the bytes
/// written, exactly [`response_len`] with the same `shared`. `shared` decides per value
/// of VALUE and VALUES whether it goes inline (`None`) or as a reference to where the
/// server holds it; it must answer the same for the same value in both calls.
///
/// # Panics
///
/// If `out` is shorter than the encoding, or a length or count does not fit in a u32
/// (impossible for a response whose [`response_len`] is at most
/// [`MAX_FRAME_PAYLOAD`](super::layout::ring::MAX_FRAME_PAYLOAD)).
pub fn encode_response(
    id: u32,
    response: &Response,
    shared: impl Fn(&Bytes) -> SharedPlacement,
    out: &mut [u8],
) -> usize {
    let mut w = Writer { out, pos: 0 };
    w.u32(id);
    w.u8(response_kind(response));
    match response {
        Response::Pong | Response::NotFound | Response::NotStored | Response::Ok => {}
        Response::Value { value, version } => put_value(&mut w, value, *version, &shared),
        Response::Stored { version } => w.u64(*version),
        Response::VersionMismatch { current } => w.u64(*current),
        Response::Integer { value, version } => {
            w.i64(*value);
            w.u64(*version);
        }
        Response::Bool(b) => w.u8(u8::from(*b)),
        Response::Ttl(ttl) => {
            let (tag, ms) = match ttl {
                Ttl::Missing => (ttl_tag::MISSING, 0),
                Ttl::Persistent => (ttl_tag::PERSISTENT, 0),
                Ttl::Remaining(ms) => (ttl_tag::REMAINING, *ms),
            };
            w.u8(tag);
            w.u64(ms);
        }
        Response::Values(values) => {
            w.len32(values.len());
            for slot in values {
                match slot {
                    None => w.u8(value_form::MISSING),
                    Some((value, version)) => put_value(&mut w, value, *version, &shared),
                }
            }
        }
        Response::Keys { keys, cursor } => {
            w.len32(keys.len());
            for key in keys {
                w.bytes(key);
            }
            w.bytes(cursor);
        }
        Response::Subscribed { subscriber } => w.u64(subscriber.0),
        Response::Published { receivers } => w.u32(*receivers),
        Response::Messages { messages, dropped } => {
            w.u64(*dropped);
            w.len32(messages.len());
            for message in messages {
                w.bytes(message);
            }
        }
        Response::Info(Info { shards }) => {
            w.len32(shards.len());
            for s in shards {
                put_shard_stats(&mut w, s);
            }
        }
        Response::Error(error) => put_error(&mut w, error),
    }
    w.pos
}

/// Bytes of the answer VALUE with a value held in shared memory (see
/// [`encode_shared_value_answer`]).
pub const SHARED_VALUE_ANSWER_BYTES: usize = PAYLOAD_HEADER_BYTES + 1 + SHARED_VALUE_BYTES;

/// Bytes of the answer NOT_FOUND (see [`encode_not_found_answer`]).
pub const NOT_FOUND_ANSWER_BYTES: usize = PAYLOAD_HEADER_BYTES;

/// The answer VALUE to request `id` for a value of `len` bytes held in shared memory at
/// `place` (core, offset, generation): exactly the bytes [`encode_response`] writes for
/// `Response::Value` when its `shared` callback answers `place`. For a server that writes a
/// GET's answer straight into a ring (no `Response`, no buffer).
///
/// # Panics
/// If `len` does not fit in a u32.
#[inline]
pub fn encode_shared_value_answer(
    id: u32,
    version: u64,
    (core, offset, generation): (u32, u64, u64),
    len: usize,
    out: &mut [u8; SHARED_VALUE_ANSWER_BYTES],
) {
    let len = u32::try_from(len)
        .unwrap_or_else(|_| panic!("shm codec: length {len} does not fit in a u32"));
    out[0..4].copy_from_slice(&id.to_le_bytes());
    out[4] = kind::VALUE;
    out[5] = value_form::SHARED;
    out[6..14].copy_from_slice(&version.to_le_bytes());
    out[14..18].copy_from_slice(&core.to_le_bytes());
    out[18..26].copy_from_slice(&offset.to_le_bytes());
    out[26..30].copy_from_slice(&len.to_le_bytes());
    out[30..38].copy_from_slice(&generation.to_le_bytes());
}

/// The answer NOT_FOUND to request `id`: exactly the bytes [`encode_response`] writes for
/// `Response::NotFound`.
#[inline]
pub fn encode_not_found_answer(id: u32) -> [u8; NOT_FOUND_ANSWER_BYTES] {
    let id = id.to_le_bytes();
    [id[0], id[1], id[2], id[3], kind::NOT_FOUND]
}

/// Bytes of the request GET of a `key_len`-byte key.
pub const fn get_request_len(key_len: usize) -> usize {
    PAYLOAD_HEADER_BYTES + 4 + key_len
}

/// Encodes the request GET of `key` with id `id` into the start of `out`; returns the bytes
/// written, [`get_request_len`] (the same bytes as [`encode_request`] of `Request::Get`).
///
/// # Panics
/// If `out` is shorter, or the key's length does not fit in a u32.
#[inline]
pub fn encode_get_request(id: u32, key: &[u8], out: &mut [u8]) -> usize {
    let len = u32::try_from(key.len())
        .unwrap_or_else(|_| panic!("shm codec: length {} does not fit in a u32", key.len()));
    let end = get_request_len(key.len());
    out[0..4].copy_from_slice(&id.to_le_bytes());
    out[4] = opcode::GET;
    out[5..9].copy_from_slice(&len.to_le_bytes());
    out[9..end].copy_from_slice(key);
    end
}

/// The id, version and place of an answer VALUE with a value in shared memory, read without
/// the checked reader: exactly what [`decode_response`] reads from such an answer (`None` for
/// any other answer, which then goes through it).
#[inline]
pub fn shared_value_answer(payload: &[u8]) -> Option<(u32, u64, SharedValue)> {
    let bytes: &[u8; SHARED_VALUE_ANSWER_BYTES] = payload.try_into().ok()?;
    if bytes[4] != kind::VALUE || bytes[5] != value_form::SHARED {
        return None;
    }
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    Some((
        u32_at(0),
        u64_at(6),
        SharedValue {
            core: u32_at(14),
            offset: u64_at(18),
            len: u32_at(26),
            generation: u64_at(30),
        },
    ))
}

/// A well-formed SET's id, key, value and options, as slices of `payload`: exactly what
/// [`decode_request`] decodes from it (`None` for anything else, including a malformed SET,
/// which then goes through [`decode_request`] and its errors). For a server that stores a
/// value from a copy of the frame on its stack, with no `Request` in between.
pub fn set_request(payload: &[u8]) -> Option<(u32, &[u8], &[u8], SetOptions)> {
    // Straight-line reads of the fixed fields: id, opcode, condition, flags, TTL, key length.
    const FIXED: usize = PAYLOAD_HEADER_BYTES + 1 + 1 + 8 + 4;
    let fixed: &[u8; FIXED] = payload.get(..FIXED)?.try_into().ok()?;
    if fixed[4] != opcode::SET {
        return None;
    }
    let condition = match fixed[5] {
        condition::ALWAYS => SetCondition::Always,
        condition::IF_ABSENT => SetCondition::IfAbsent,
        condition::IF_PRESENT => SetCondition::IfPresent,
        _ => return None,
    };
    let flags = fixed[6];
    if flags & !(FLAG_TTL | FLAG_KEEP_TTL) != 0 {
        return None;
    }
    let ttl = u64::from_le_bytes(fixed[7..15].try_into().ok()?);
    let ttl_ms = match (flags & FLAG_TTL != 0, ttl) {
        (true, ttl) => Some(ttl),
        (false, 0) => None,
        // A TTL without its flag is not canonical.
        (false, _) => return None,
    };
    let key_len = u32::from_le_bytes(fixed[15..19].try_into().ok()?) as usize;
    let rest = &payload[FIXED..];
    let key = rest.get(..key_len)?;
    let rest = &rest[key_len..];
    let value_len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let value = &rest[4..];
    // The value covers exactly the rest: no trailing bytes.
    if value.len() != value_len {
        return None;
    }
    Some((
        u32::from_le_bytes(fixed[0..4].try_into().ok()?),
        key,
        value,
        SetOptions {
            ttl_ms,
            condition,
            keep_ttl: flags & FLAG_KEEP_TTL != 0,
        },
    ))
}

/// Bytes of the answer STORED (see [`encode_stored_answer`]).
pub const STORED_ANSWER_BYTES: usize = PAYLOAD_HEADER_BYTES + 8;

/// The answer STORED to request `id` with `version`: exactly the bytes [`encode_response`]
/// writes for `Response::Stored`.
#[inline]
pub fn encode_stored_answer(id: u32, version: u64) -> [u8; STORED_ANSWER_BYTES] {
    let mut out = [0u8; STORED_ANSWER_BYTES];
    out[0..4].copy_from_slice(&id.to_le_bytes());
    out[4] = kind::STORED;
    out[5..13].copy_from_slice(&version.to_le_bytes());
    out
}

/// The id and version of an answer STORED, read without the checked reader: exactly what
/// [`decode_response`] reads from it (`None` for any other answer, which then goes through it).
#[inline]
pub fn stored_answer(payload: &[u8]) -> Option<(u32, u64)> {
    let bytes: &[u8; STORED_ANSWER_BYTES] = payload.try_into().ok()?;
    if bytes[4] != kind::STORED {
        return None;
    }
    Some((
        u32::from_le_bytes(bytes[0..4].try_into().ok()?),
        u64::from_le_bytes(bytes[5..13].try_into().ok()?),
    ))
}

/// A GET that decodes exactly as [`decode_request`] would decode it: its id and key, read
/// without the checked reader (`None` for anything else, which then goes through
/// [`decode_request`] and its errors). For a server that answers GETs from a copy of the
/// frame on its stack.
#[inline]
pub fn get_request(payload: &[u8]) -> Option<(u32, &[u8])> {
    well_formed_get(payload).map(|(id, key)| (id, &payload[key]))
}

// -----------------------------------------------------------------------------------------
// Pushed subscriptions (rings only)

/// Bytes of the request SUBSCRIBE_PUSH of a `topic_len`-byte topic.
pub const fn push_subscribe_request_len(topic_len: usize) -> usize {
    PAYLOAD_HEADER_BYTES + 4 + topic_len
}

/// The request SUBSCRIBE_PUSH of `topic` with id `id`, into `out` (cleared first): `u32 id,
/// u8 opcode 20, u32 topic length, topic`. Sent to the topic's core, it is answered
/// `Subscribed` like SUBSCRIBE, and from then on that core writes the subscription's
/// messages into the session's response ring as [`delivery`] frames, unasked.
///
/// # Panics
/// If the topic's length does not fit in a u32.
pub fn encode_push_subscribe_request(id: u32, topic: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(topic.len())
        .unwrap_or_else(|_| panic!("shm codec: length {} does not fit in a u32", topic.len()));
    out.clear();
    out.reserve(push_subscribe_request_len(topic.len()));
    out.extend_from_slice(&id.to_le_bytes());
    out.push(opcode::SUBSCRIBE_PUSH);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(topic);
}

/// The id and topic of a well-formed SUBSCRIBE_PUSH (its topic length covers exactly the rest
/// of the payload); `None` for anything else.
pub fn push_subscribe_request(payload: &[u8]) -> Option<(u32, &[u8])> {
    one_string_request(payload, opcode::SUBSCRIBE_PUSH).map(|(id, topic)| (id, &payload[topic]))
}

/// The request id of every [`delivery`] frame: never a request's (clients number their
/// requests from 1).
pub const DELIVERY_ID: u32 = 0;
/// Bytes of a delivery frame before its messages: id, kind, subscriber, dropped, count.
pub const DELIVERY_HEADER_BYTES: usize = PAYLOAD_HEADER_BYTES + 8 + 8 + 4;
/// Bytes a message adds to a delivery frame beyond its own: its length.
pub const DELIVERY_MESSAGE_OVERHEAD: usize = 4;

/// The start of a delivery frame of `count` messages of `subscriber`, `dropped` of its
/// messages having been dropped (by its queue's limits) before them. Each message follows as
/// `u32 length, bytes`; nothing follows the last.
pub fn encode_delivery_header(
    subscriber: SubscriberId,
    dropped: u64,
    count: u32,
) -> [u8; DELIVERY_HEADER_BYTES] {
    let mut out = [0u8; DELIVERY_HEADER_BYTES];
    out[0..4].copy_from_slice(&DELIVERY_ID.to_le_bytes());
    out[4] = kind::DELIVERY;
    out[5..13].copy_from_slice(&subscriber.0.to_le_bytes());
    out[13..21].copy_from_slice(&dropped.to_le_bytes());
    out[21..25].copy_from_slice(&count.to_le_bytes());
    out
}

/// A whole delivery frame in a new vector: [`encode_delivery_header`], then each message. (The
/// server writes frames straight into a ring; this is for tests, fuzzing and seeds.)
pub fn encode_delivery_vec<M: AsRef<[u8]>>(
    subscriber: SubscriberId,
    dropped: u64,
    messages: impl ExactSizeIterator<Item = M>,
) -> Vec<u8> {
    let count = u32::try_from(messages.len()).expect("a count that fits in a u32");
    let mut out = encode_delivery_header(subscriber, dropped, count).to_vec();
    for message in messages {
        let message = message.as_ref();
        let len = u32::try_from(message.len()).expect("a length that fits in a u32");
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(message);
    }
    out
}

/// A delivery frame, checked: its messages cover exactly the rest of the payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivery<'a> {
    pub subscriber: SubscriberId,
    /// Messages of the subscription dropped (by its queue's limits) before these.
    pub dropped: u64,
    count: u32,
    payload: &'a [u8],
}

impl<'a> Delivery<'a> {
    /// How many messages the frame holds.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether it holds none (only a count of dropped messages).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Where each message lies in the payload, in order.
    pub fn messages(&self) -> impl Iterator<Item = std::ops::Range<usize>> + 'a {
        let payload = self.payload;
        let mut at = DELIVERY_HEADER_BYTES;
        (0..self.count).map(move |_| {
            let len = u32::from_le_bytes(payload[at..at + 4].try_into().expect("checked")) as usize;
            let start = at + 4;
            at = start + len;
            start..at
        })
    }
}

/// The delivery frame in `payload`: `Ok(None)` when it is not one (an answer to a request),
/// an error when it is one but malformed (a count or a length past the end, trailing bytes).
pub fn delivery(payload: &[u8]) -> std::result::Result<Option<Delivery<'_>>, DecodeError> {
    if payload.get(..5) != Some(&[0, 0, 0, 0, kind::DELIVERY][..]) {
        return Ok(None);
    }
    let mut r = Reader::new(payload, None);
    r.pos = PAYLOAD_HEADER_BYTES;
    r.request_id = Some(DELIVERY_ID);
    let subscriber = SubscriberId(r.u64("subscriber id")?);
    let dropped = r.u64("dropped")?;
    let count = r.count("messages", DELIVERY_MESSAGE_OVERHEAD, None)?;
    for _ in 0..count {
        r.slice("message")?;
    }
    r.finish()?;
    Ok(Some(Delivery {
        subscriber,
        dropped,
        count: count as u32,
        payload,
    }))
}

/// Bytes of a delivery part frame before its chunk: id, kind, subscriber, dropped, the
/// message's total length, the chunk's offset in it, the chunk's length.
pub const DELIVERY_PART_HEADER_BYTES: usize = PAYLOAD_HEADER_BYTES + 8 + 8 + 8 + 8 + 4;

/// A part of one message of a pushed subscription (kind [`kind::DELIVERY_PART`]): the message's
/// bytes `offset..offset + len` of `total`. The parts of a message come in order, with no other
/// message of that subscription between them; a part at offset 0 starts a message (a message
/// whose parts stopped before its end was dropped, and is counted in `dropped`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeliveryPart {
    pub subscriber: SubscriberId,
    /// Messages of the subscription dropped before this one (only in a part at offset 0;
    /// 0 in the others).
    pub dropped: u64,
    pub total: u64,
    pub offset: u64,
    pub len: u32,
}

/// The header of a delivery part frame (its chunk follows it, to the end of the frame).
pub fn encode_delivery_part_header(part: DeliveryPart) -> [u8; DELIVERY_PART_HEADER_BYTES] {
    let mut out = [0u8; DELIVERY_PART_HEADER_BYTES];
    let mut w = Writer {
        out: &mut out,
        pos: 0,
    };
    w.u32(DELIVERY_ID);
    w.u8(kind::DELIVERY_PART);
    w.u64(part.subscriber.0);
    w.u64(part.dropped);
    w.u64(part.total);
    w.u64(part.offset);
    w.u32(part.len);
    out
}

/// The delivery part in `payload` and where its chunk lies: `Ok(None)` when it is not one, an
/// error when it is one but malformed (the chunk not exactly the rest of the payload, or past
/// the message's total, a dropped count in a part after the first).
pub fn delivery_part(
    payload: &[u8],
) -> std::result::Result<Option<(DeliveryPart, std::ops::Range<usize>)>, DecodeError> {
    if payload.get(..5) != Some(&[0, 0, 0, 0, kind::DELIVERY_PART][..]) {
        return Ok(None);
    }
    let mut r = Reader::new(payload, None);
    r.pos = PAYLOAD_HEADER_BYTES;
    r.request_id = Some(DELIVERY_ID);
    let subscriber = SubscriberId(r.u64("subscriber id")?);
    let dropped_at = r.pos;
    let dropped = r.u64("dropped")?;
    let total = r.u64("message length")?;
    let offset = r.u64("part offset")?;
    let len_at = r.pos;
    let (start, chunk) = r.slice("message part")?;
    r.finish()?;
    let len = chunk.len() as u32;
    if offset.checked_add(len.into()).is_none_or(|end| end > total) {
        return Err(r.error(
            len_at,
            DecodeErrorKind::LengthPastEnd {
                what: "message part (past the message's length)",
                length: len.into(),
                remaining: total.saturating_sub(offset) as usize,
            },
        ));
    }
    if offset != 0 && dropped != 0 {
        return Err(r.error(
            dropped_at,
            DecodeErrorKind::NonZero {
                what: "dropped (in a part after the first)",
                value: dropped,
            },
        ));
    }
    Ok(Some((
        DeliveryPart {
            subscriber,
            dropped,
            total,
            offset,
            len,
        },
        start..start + chunk.len(),
    )))
}

/// [`encode_response`] into a new vector of exactly [`response_len`] bytes.
pub fn encode_response_vec(
    id: u32,
    response: &Response,
    shared: impl Fn(&Bytes) -> SharedPlacement,
) -> Vec<u8> {
    let mut out = Vec::new();
    encode_response_into(id, response, shared, &mut out);
    out
}

/// [`encode_response`] into `out`, which it first clears and then holds exactly the
/// [`response_len`] bytes of the encoding (a buffer kept between answers allocates nothing).
pub fn encode_response_into(
    id: u32,
    response: &Response,
    shared: impl Fn(&Bytes) -> SharedPlacement,
    out: &mut Vec<u8>,
) {
    out.clear();
    // The most common answer, a value the server holds in shared memory: written field by
    // field (the same bytes as `put_value`), its place asked for once, no length pass.
    if let Response::Value { value, version } = response {
        if let Some(place) = shared(value) {
            let mut answer = [0u8; SHARED_VALUE_ANSWER_BYTES];
            encode_shared_value_answer(id, *version, place, value.len(), &mut answer);
            out.extend_from_slice(&answer);
            return;
        }
    }
    out.resize(response_len(response, &shared), 0);
    let n = encode_response(id, response, &shared, out);
    assert_eq!(
        n,
        out.len(),
        "shm codec: the shared callback answered differently in response_len and encode_response"
    );
}

fn put_shard_stats(w: &mut Writer<'_>, s: &ShardStats) {
    // Destructured so that a new field fails to compile until it has a place here.
    let ShardStats {
        shard,
        ops,
        hits,
        misses,
        keys,
        memory_bytes_used,
        memory_bytes_limit,
        expired_keys,
        evicted_keys,
        out_of_memory_errors,
        topics,
        subscribers,
        messages_published,
        messages_delivered,
        messages_dropped,
        forwarded_in,
    } = s;
    w.u32(*shard);
    for v in [
        ops,
        hits,
        misses,
        keys,
        memory_bytes_used,
        memory_bytes_limit,
        expired_keys,
        evicted_keys,
        out_of_memory_errors,
        topics,
        subscribers,
        messages_published,
        messages_delivered,
        messages_dropped,
        forwarded_in,
    ] {
        w.u64(*v);
    }
}

fn put_error(w: &mut Writer<'_>, error: &Error) {
    match error {
        Error::OutOfMemory {
            needed_bytes,
            limit_bytes,
        } => {
            w.u8(error_tag::OUT_OF_MEMORY);
            w.u64(*needed_bytes);
            w.u64(*limit_bytes);
        }
        Error::KeyTooLarge { length, limit } => {
            w.u8(error_tag::KEY_TOO_LARGE);
            w.u64(*length as u64);
            w.u64(*limit as u64);
        }
        Error::ValueTooLarge { length, limit } => {
            w.u8(error_tag::VALUE_TOO_LARGE);
            w.u64(*length as u64);
            w.u64(*limit as u64);
        }
        Error::NotAnInteger => w.u8(error_tag::NOT_AN_INTEGER),
        Error::Overflow => w.u8(error_tag::OVERFLOW),
        Error::InvalidArgument(text) => {
            w.u8(error_tag::INVALID_ARGUMENT);
            w.bytes(text.as_bytes());
        }
        Error::UnknownSubscriber(id) => {
            w.u8(error_tag::UNKNOWN_SUBSCRIBER);
            w.u64(id.0);
        }
        Error::TooManySubscribers { limit } => {
            w.u8(error_tag::TOO_MANY_SUBSCRIBERS);
            w.u64(*limit as u64);
        }
        Error::ShuttingDown => w.u8(error_tag::SHUTTING_DOWN),
        Error::PersistenceOff => w.u8(error_tag::PERSISTENCE_OFF),
        Error::Storage(text) => {
            w.u8(error_tag::STORAGE);
            w.bytes(text.as_bytes());
        }
        Error::Busy(text) => {
            w.u8(error_tag::BUSY);
            w.bytes(text.as_bytes());
        }
    }
}

/// Decodes a response payload. Inline values borrow from `payload`; the byte strings of
/// every other response are copied. Never panics; refuses truncated payloads, lengths and
/// counts beyond the payload, unknown kinds and tags, non-canonical bytes and trailing
/// bytes. Shared references are not checked here: the client checks them against the
/// data segment ([`check_block`](super::layout::arena::check_block)).
pub fn decode_response(
    payload: &[u8],
) -> std::result::Result<(u32, ResponseFrame<'_>), DecodeError> {
    let mut r = Reader::new(payload, None);
    let id = r.u32("request id")?;
    r.request_id = Some(id);
    let kind_at = r.pos;
    let k = r.u8("kind")?;
    let frame = match k {
        kind::VALUE => {
            let at = r.pos;
            match value_slot(&mut r)? {
                Some((value, version)) => ResponseFrame::Value { value, version },
                None => {
                    return Err(r.error(
                        at,
                        DecodeErrorKind::BadByte {
                            what: "VALUE form",
                            value: value_form::MISSING,
                        },
                    ))
                }
            }
        }
        kind::VALUES => {
            let n = r.count("VALUES entries", 1, None)?;
            let mut values = Vec::with_capacity(n);
            for _ in 0..n {
                values.push(value_slot(&mut r)?);
            }
            ResponseFrame::Values(values)
        }
        kind::PONG => ResponseFrame::Other(Response::Pong),
        kind::NOT_FOUND => ResponseFrame::Other(Response::NotFound),
        kind::NOT_STORED => ResponseFrame::Other(Response::NotStored),
        kind::OK => ResponseFrame::Other(Response::Ok),
        kind::STORED => ResponseFrame::Other(Response::Stored {
            version: r.u64("version")?,
        }),
        kind::VERSION_MISMATCH => ResponseFrame::Other(Response::VersionMismatch {
            current: r.u64("current version")?,
        }),
        kind::INTEGER => {
            let value = r.i64("integer")?;
            let version = r.u64("version")?;
            ResponseFrame::Other(Response::Integer { value, version })
        }
        kind::BOOL => ResponseFrame::Other(Response::Bool(r.bool("BOOL")?)),
        kind::TTL => {
            let at = r.pos;
            let tag = r.u8("TTL tag")?;
            let ttl = match tag {
                ttl_tag::MISSING => Ttl::Missing,
                ttl_tag::PERSISTENT => Ttl::Persistent,
                ttl_tag::REMAINING => Ttl::Remaining(r.u64("TTL")?),
                value => {
                    return Err(r.error(
                        at,
                        DecodeErrorKind::BadByte {
                            what: "TTL tag",
                            value,
                        },
                    ))
                }
            };
            if tag != ttl_tag::REMAINING {
                r.zero_u64("TTL (not remaining)")?;
            }
            ResponseFrame::Other(Response::Ttl(ttl))
        }
        kind::KEYS => {
            let n = r.count("SCAN keys", 4, None)?;
            let mut keys = Vec::with_capacity(n);
            for _ in 0..n {
                keys.push(r.bytes("key")?);
            }
            let cursor = r.bytes("cursor")?;
            ResponseFrame::Other(Response::Keys { keys, cursor })
        }
        kind::SUBSCRIBED => ResponseFrame::Other(Response::Subscribed {
            subscriber: SubscriberId(r.u64("subscriber id")?),
        }),
        kind::PUBLISHED => ResponseFrame::Other(Response::Published {
            receivers: r.u32("receivers")?,
        }),
        kind::MESSAGES => {
            let dropped = r.u64("dropped")?;
            let n = r.count("messages", 4, None)?;
            let mut messages = Vec::with_capacity(n);
            for _ in 0..n {
                messages.push(r.bytes("message")?);
            }
            ResponseFrame::Other(Response::Messages { messages, dropped })
        }
        kind::INFO => {
            let n = r.count(
                "INFO shards",
                SHARD_STATS_BYTES,
                Some(limits::SHARDS_MAX as usize),
            )?;
            let mut shards = Vec::with_capacity(n);
            for _ in 0..n {
                shards.push(shard_stats(&mut r)?);
            }
            ResponseFrame::Other(Response::Info(Info { shards }))
        }
        kind::ERROR => ResponseFrame::Other(Response::Error(error(&mut r)?)),
        other => return Err(r.error(kind_at, DecodeErrorKind::UnknownKind(other))),
    };
    r.finish()?;
    Ok((id, frame))
}

fn value_slot<'a>(r: &mut Reader<'a>) -> Result<Option<(ValueRef<'a>, u64)>> {
    let at = r.pos;
    match r.u8("value form")? {
        value_form::MISSING => Ok(None),
        value_form::INLINE => {
            let version = r.u64("version")?;
            let (_, bytes) = r.slice("value")?;
            Ok(Some((ValueRef::Inline(bytes), version)))
        }
        value_form::SHARED => {
            let version = r.u64("version")?;
            let core = r.u32("core")?;
            let offset = r.u64("offset")?;
            let len = r.u32("length")?;
            let generation = r.u64("generation")?;
            Ok(Some((
                ValueRef::Shared {
                    core,
                    offset,
                    len,
                    generation,
                },
                version,
            )))
        }
        value => Err(r.error(
            at,
            DecodeErrorKind::BadByte {
                what: "value form",
                value,
            },
        )),
    }
}

fn shard_stats(r: &mut Reader<'_>) -> Result<ShardStats> {
    Ok(ShardStats {
        shard: r.u32("shard")?,
        ops: r.u64("ops")?,
        hits: r.u64("hits")?,
        misses: r.u64("misses")?,
        keys: r.u64("keys")?,
        memory_bytes_used: r.u64("memory bytes used")?,
        memory_bytes_limit: r.u64("memory bytes limit")?,
        expired_keys: r.u64("expired keys")?,
        evicted_keys: r.u64("evicted keys")?,
        out_of_memory_errors: r.u64("out of memory errors")?,
        topics: r.u64("topics")?,
        subscribers: r.u64("subscribers")?,
        messages_published: r.u64("messages published")?,
        messages_delivered: r.u64("messages delivered")?,
        messages_dropped: r.u64("messages dropped")?,
        forwarded_in: r.u64("forwarded in")?,
    })
}

fn error(r: &mut Reader<'_>) -> Result<Error> {
    let at = r.pos;
    Ok(match r.u8("error tag")? {
        error_tag::OUT_OF_MEMORY => Error::OutOfMemory {
            needed_bytes: r.u64("needed bytes")?,
            limit_bytes: r.u64("limit bytes")?,
        },
        error_tag::KEY_TOO_LARGE => Error::KeyTooLarge {
            length: r.usize("length")?,
            limit: r.usize("limit")?,
        },
        error_tag::VALUE_TOO_LARGE => Error::ValueTooLarge {
            length: r.usize("length")?,
            limit: r.usize("limit")?,
        },
        error_tag::NOT_AN_INTEGER => Error::NotAnInteger,
        error_tag::OVERFLOW => Error::Overflow,
        error_tag::INVALID_ARGUMENT => Error::InvalidArgument(r.string("error text")?),
        error_tag::UNKNOWN_SUBSCRIBER => {
            Error::UnknownSubscriber(SubscriberId(r.u64("subscriber id")?))
        }
        error_tag::TOO_MANY_SUBSCRIBERS => Error::TooManySubscribers {
            limit: r.usize("limit")?,
        },
        error_tag::SHUTTING_DOWN => Error::ShuttingDown,
        error_tag::PERSISTENCE_OFF => Error::PersistenceOff,
        error_tag::STORAGE => Error::Storage(r.string("error text")?),
        error_tag::BUSY => Error::Busy(r.string("error text")?),
        other => return Err(r.error(at, DecodeErrorKind::UnknownErrorTag(other))),
    })
}
