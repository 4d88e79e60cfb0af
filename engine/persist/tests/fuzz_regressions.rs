//! Replays every input the fuzzers keep, through the same checks the fuzz targets run
//! (`veddb_persist::fuzzing`): the seed corpus (`fuzz/corpus/<target>/`) and every input that
//! once failed (`fuzz/regressions/<target>/`, named after what it found). Runs on stable Rust,
//! in the README's test command, without the fuzzer.

use std::path::Path;

use veddb_persist::fuzzing;
use veddb_wire::fuzzing::{replay_kept_inputs, FuzzCheck};

#[test]
fn every_kept_input_of_every_target_passes() {
    let fuzz_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let targets: [(&str, FuzzCheck); 4] = [
        ("wal_segment", fuzzing::wal_segment),
        ("snapshot", fuzzing::snapshot),
        ("headers_and_names", fuzzing::headers_and_names),
        ("recovery", fuzzing::recovery),
    ];
    for (target, check) in targets {
        let inputs = replay_kept_inputs(&fuzz_dir, target, check);
        assert!(inputs > 0, "{target}: no seed corpus");
    }
}
