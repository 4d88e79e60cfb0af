//! What the gRPC client decodes from a server: a Batch answer for each kind of request, INFO,
//! SNAPSHOT and subscription events. The first byte picks the decoder; none may panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| veddb_wire::fuzzing::grpc_client_messages(data));
