//! gRPC length-prefixed messages as they arrive in HTTP/2 DATA frames, cut at arbitrary places:
//! the deframer must never panic, never hold more than its limit plus one frame prefix, give
//! every message whole, and end with a clear error for a message over the limit or cut short.
//! The input's first byte picks the limit, each later pair of bytes the length of the next
//! chunk.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| veddb_wire::fuzzing::grpc_deframer(data));
