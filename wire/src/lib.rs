//! `veddb-wire`: the vocabulary every part of VedDB shares.
//!
//! This crate owns the request and response model ([`Request`], [`Response`], [`Error`]),
//! the status codes clients see ([`Status`]), the default limits ([`limits`]) and the fixed
//! key-to-shard hash ([`hash`]) that the server and every client library must compute the same way.
//!
//! It must not depend on any runtime, socket, thread or clock: it is pure data.
#![forbid(unsafe_code)]

pub mod fuzzing;
pub mod grpc;
pub mod grpc_client;
pub mod hash;
pub mod limits;
mod model;
pub mod proto;
pub mod shm;
mod status;

pub use hash::{key_hash, shard_for_key};
pub use model::*;
pub use status::{Code, Status};
