//! An answer frame's payload as a client reads it from its response ring (the server wrote it,
//! but a client must survive a damaged or foreign ring): decoding must never panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| veddb_wire::fuzzing::shm_response(data));
