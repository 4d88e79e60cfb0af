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

use veddb_engine::{CoreSetup, Engine};

/// A way into the engine, as the server binary drives it. Every frontend (shared memory,
/// gRPC, QUIC to come) goes through the same steps, so the binary knows frontends only by this
/// trait: a new transport implements it, frames its bytes, and calls the [`seam`] for the rest.
///
/// The order: [`core_setup`](Self::core_setup) of every frontend goes into the engine's
/// configuration, the engine starts, [`start`](Self::start) each frontend, and at the end
/// [`shutdown`](Self::shutdown) each before the engine stops.
pub trait Frontend {
    /// Its name, for logs ("gRPC", "shared memory").
    fn name(&self) -> &'static str;

    /// What it brings into each core before the engine starts (a value store, a
    /// [`CoreSource`](veddb_engine::CoreSource) for its core's loop), if anything.
    fn core_setup(&self) -> Option<CoreSetup> {
        None
    }

    /// Starts serving on the running engine, and logs where clients reach it.
    fn start(&mut self, engine: &Engine) -> Result<(), String>;

    /// Stops taking new work and tells its clients (calls in progress finish). Called before
    /// the engine stops; a frontend never started ignores it.
    fn shutdown(&mut self);
}
