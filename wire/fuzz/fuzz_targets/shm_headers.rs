//! What a process reads from files and messages another process wrote: the attach reply on
//! the instance's socket, the instance file, a ring segment's and a data segment's headers,
//! and the header of an arena block a zero-copy view points at. The first byte picks the
//! decoder; none may panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| veddb_wire::fuzzing::shm_headers(data));
