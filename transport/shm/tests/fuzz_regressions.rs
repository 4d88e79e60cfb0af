//! Replays every input the fuzzers keep, through the same checks the fuzz targets run
//! (`veddb_shm::fuzzing`): the seed corpus (`fuzz/corpus/<target>/`) and every input that
//! once failed (`fuzz/regressions/<target>/`, named after what it found). Runs on stable Rust,
//! in the README's test command, without the fuzzer.

use std::path::Path;

use veddb_shm::fuzzing;

/// One fuzz target's check.
type Check = fn(&[u8]);

fn replay(target: &str, check: Check) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut inputs = 0;
    for folder in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(folder).join(target)) else {
            continue;
        };
        let mut paths: Vec<_> = entries.map(|entry| entry.unwrap().path()).collect();
        paths.sort();
        for path in paths {
            let data = std::fs::read(&path).unwrap();
            let outcome = std::panic::catch_unwind(|| check(&data));
            assert!(outcome.is_ok(), "{target}: {} fails", path.display());
            inputs += 1;
        }
    }
    inputs
}

#[test]
fn every_kept_input_of_every_target_passes() {
    let targets: [(&str, Check); 2] = [
        ("ring_consumer", fuzzing::ring_consumer),
        ("ring_producer", fuzzing::ring_producer),
    ];
    for (target, check) in targets {
        let inputs = replay(target, check);
        assert!(inputs > 0, "{target}: no seed corpus");
    }
}
