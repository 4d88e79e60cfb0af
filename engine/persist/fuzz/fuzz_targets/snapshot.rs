//! A snapshot file as recovery reads it, whole and frame by frame: never a panic, no
//! allocation beyond what the input's size justifies, and a snapshot that decodes holds
//! entries in strictly increasing key order, as many as its trailer says.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| veddb_persist::fuzzing::snapshot(data));
