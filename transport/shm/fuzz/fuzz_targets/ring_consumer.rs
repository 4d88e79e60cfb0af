//! The core consuming a client's request ring while the client writes anything into its tail
//! counter and the ring's data, before attach and between steps (veddb_shm::fuzzing).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| veddb_shm::fuzzing::ring_consumer(data));
