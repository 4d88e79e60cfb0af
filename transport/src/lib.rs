//! `veddb-transport`: the ways into the engine from outside the process.
//!
//! - [`grpc`]: a gRPC server hand-rolled on `h2` (no tonic, no hyper), running on every core's
//!   compio runtime, with the service `veddb.v1.VedDb` and the standard health service.
//! - [`local`]: shared memory for clients on the same machine (Linux): per-core rings per
//!   session, values read in place from each core's sealed data segment.
//!
//! A frontend frames bytes into requests and answers, and calls the [`seam`] for everything
//! between: dispatch into the engine, the subscription lifecycle and the client-visible
//! status of an error. It owns the protocol, never the data. Message mapping lives in
//! `veddb_wire` (pure functions).
#![forbid(unsafe_code)]

pub mod grpc;
pub mod local;
pub mod seam;
