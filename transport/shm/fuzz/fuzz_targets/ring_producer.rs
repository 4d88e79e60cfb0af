//! The core producing into a client's response ring while the client writes anything into its
//! head counter and the ring's data between pushes (veddb_shm::fuzzing).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| veddb_shm::fuzzing::ring_producer(data));
