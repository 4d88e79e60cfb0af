//! File names and fixed headers: every data file's name (segment, snapshot, temporary files,
//! layout marker), the segment, snapshot and layout headers. A header that parses encodes back
//! to the same bytes; a name that parses formats back to the same name.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| veddb_persist::fuzzing::headers_and_names(data));
