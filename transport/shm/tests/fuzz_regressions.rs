//! Replays every input the fuzzers keep, through the same checks the fuzz targets run
//! (`veddb_shm::fuzzing`): the seed corpus (`fuzz/corpus/<target>/`) and every input that
//! once failed (`fuzz/regressions/<target>/`, named after what it found). Runs on stable Rust,
//! in the README's test command, without the fuzzer.

use std::path::Path;

use veddb_shm::fuzzing;
use veddb_wire::fuzzing::{replay_kept_inputs, FuzzCheck};

#[test]
fn every_kept_input_of_every_target_passes() {
    let fuzz_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let targets: [(&str, FuzzCheck); 2] = [
        ("ring_consumer", fuzzing::ring_consumer),
        ("ring_producer", fuzzing::ring_producer),
    ];
    for (target, check) in targets {
        let inputs = replay_kept_inputs(&fuzz_dir, target, check);
        assert!(inputs > 0, "{target}: no seed corpus");
    }
}
