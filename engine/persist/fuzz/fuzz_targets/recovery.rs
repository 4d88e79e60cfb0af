//! Recovery as a whole over a data directory of arbitrary files: names from a set that covers
//! every kind (layout markers, segments, snapshots, temporary files, other generations, other
//! shards, foreign files) and arbitrary contents, often built from valid pieces. Recovery may
//! refuse with an error but never panics, and when it succeeds, it has left the directory in a
//! state that a second recovery reads to the same data with no further repair.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| veddb_persist::fuzzing::recovery(data));
