//! What a gRPC server decodes from a client: every method's request message, a Batch stream's
//! request, Subscribe and health requests, the grpc-timeout header and percent-encoded text.
//! The first byte picks the method; none may panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| veddb_wire::fuzzing::grpc_server_messages(data));
