//! A log segment file as recovery reads it: the header, then records until the end, a torn
//! tail or corruption. Never a panic; the decoder always makes progress and ends; every record
//! it returns encodes back to exactly the bytes it was read from; and replay (the recovery
//! step over one segment, newest or not) agrees with the decoder.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| veddb_persist::fuzzing::wal_segment(data));
