//! A request frame's payload as a core reads it from a client's ring: decoding must never
//! panic, and whatever decodes must encode back to a payload that decodes to the same request.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| veddb_wire::fuzzing::shm_request(data));
