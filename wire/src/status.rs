//! The status a client sees: one [`Status`] (a [`Code`] and a message) for every transport.
//!
//! The codes are gRPC's canonical status codes (grpc/grpc `doc/statuscodes.md`; the numbers
//! are their wire values): the gRPC frontend sends them as `grpc-status`, the shared-memory
//! codec carries the engine's [`Error`] itself and clients map it with [`Error::status`], and
//! a future QUIC frontend sends the same codes. What each engine error maps to is decided
//! here, once.

use std::fmt;

use crate::grpc::percent_encode_message;
use crate::Error;

/// The gRPC status codes (grpc/grpc doc/statuscodes.md); the numbers are the wire values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(i32)]
pub enum Code {
    Ok = 0,
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

impl Code {
    /// Every code, in numeric order.
    pub const ALL: [Code; 17] = [
        Code::Ok,
        Code::Cancelled,
        Code::Unknown,
        Code::InvalidArgument,
        Code::DeadlineExceeded,
        Code::NotFound,
        Code::AlreadyExists,
        Code::PermissionDenied,
        Code::ResourceExhausted,
        Code::FailedPrecondition,
        Code::Aborted,
        Code::OutOfRange,
        Code::Unimplemented,
        Code::Internal,
        Code::Unavailable,
        Code::DataLoss,
        Code::Unauthenticated,
    ];

    /// The wire number (the `grpc-status` value).
    pub fn as_i32(self) -> i32 {
        self as i32
    }

    /// The code with this wire number, if any.
    pub fn from_i32(value: i32) -> Option<Code> {
        usize::try_from(value)
            .ok()
            .and_then(|index| Code::ALL.get(index).copied())
    }

    /// The canonical upper-case name, e.g. `NOT_FOUND`.
    pub fn name(self) -> &'static str {
        match self {
            Code::Ok => "OK",
            Code::Cancelled => "CANCELLED",
            Code::Unknown => "UNKNOWN",
            Code::InvalidArgument => "INVALID_ARGUMENT",
            Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Code::NotFound => "NOT_FOUND",
            Code::AlreadyExists => "ALREADY_EXISTS",
            Code::PermissionDenied => "PERMISSION_DENIED",
            Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Code::FailedPrecondition => "FAILED_PRECONDITION",
            Code::Aborted => "ABORTED",
            Code::OutOfRange => "OUT_OF_RANGE",
            Code::Unimplemented => "UNIMPLEMENTED",
            Code::Internal => "INTERNAL",
            Code::Unavailable => "UNAVAILABLE",
            Code::DataLoss => "DATA_LOSS",
            Code::Unauthenticated => "UNAUTHENTICATED",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A gRPC status: the code and the (not yet percent-encoded) message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub code: Code,
    pub message: String,
}

impl Status {
    pub fn new(code: Code, message: impl Into<String>) -> Status {
        Status {
            code,
            message: message.into(),
        }
    }
    /// Code OK, empty message.
    pub fn ok() -> Status {
        Status::new(Code::Ok, String::new())
    }
    pub fn cancelled(message: impl Into<String>) -> Status {
        Status::new(Code::Cancelled, message)
    }
    pub fn invalid_argument(message: impl Into<String>) -> Status {
        Status::new(Code::InvalidArgument, message)
    }
    pub fn deadline_exceeded(message: impl Into<String>) -> Status {
        Status::new(Code::DeadlineExceeded, message)
    }
    pub fn not_found(message: impl Into<String>) -> Status {
        Status::new(Code::NotFound, message)
    }
    pub fn resource_exhausted(message: impl Into<String>) -> Status {
        Status::new(Code::ResourceExhausted, message)
    }
    pub fn failed_precondition(message: impl Into<String>) -> Status {
        Status::new(Code::FailedPrecondition, message)
    }
    pub fn unimplemented(message: impl Into<String>) -> Status {
        Status::new(Code::Unimplemented, message)
    }
    pub fn internal(message: impl Into<String>) -> Status {
        Status::new(Code::Internal, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Status {
        Status::new(Code::Unavailable, message)
    }
    /// The `grpc-message` header value: the message percent-encoded.
    pub fn encoded_message(&self) -> String {
        percent_encode_message(&self.message)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for Status {}

impl Error {
    /// The status a client sees for this error, on every transport; the message is the
    /// error's `Display` text.
    pub fn status(&self) -> Status {
        let code = match self {
            // An empty key is a malformed argument, not a size limit.
            Error::KeyTooLarge { length: 0, .. } => Code::InvalidArgument,
            Error::OutOfMemory { .. }
            | Error::KeyTooLarge { .. }
            | Error::ValueTooLarge { .. }
            | Error::TooManySubscribers { .. } => Code::ResourceExhausted,
            Error::InvalidArgument(_) | Error::NotAnInteger | Error::Overflow => {
                Code::InvalidArgument
            }
            Error::UnknownSubscriber(_) => Code::NotFound,
            Error::ShuttingDown | Error::Busy(_) => Code::Unavailable,
            Error::PersistenceOff => Code::FailedPrecondition,
            Error::Storage(_) => Code::Internal,
        };
        Status::new(code, self.to_string())
    }
}
