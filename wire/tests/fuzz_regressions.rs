//! Replays every input the fuzzers keep, through the same checks the fuzz targets run
//! (`veddb_wire::fuzzing`): the seed corpus (`fuzz/corpus/<target>/`) and every input that
//! once failed (`fuzz/regressions/<target>/`, named after what it found). Runs on stable Rust,
//! in the README's test command, without the fuzzer.

use std::path::Path;

use veddb_wire::fuzzing::{self, replay_kept_inputs, FuzzCheck};

#[test]
fn every_kept_input_of_every_target_passes() {
    let fuzz_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let targets: [(&str, FuzzCheck); 6] = [
        ("shm_request", fuzzing::shm_request),
        ("shm_response", fuzzing::shm_response),
        ("shm_headers", fuzzing::shm_headers),
        ("grpc_deframer", fuzzing::grpc_deframer),
        ("grpc_server_messages", fuzzing::grpc_server_messages),
        ("grpc_client_messages", fuzzing::grpc_client_messages),
    ];
    for (target, check) in targets {
        let inputs = replay_kept_inputs(&fuzz_dir, target, check);
        assert!(inputs > 0, "{target}: no seed corpus");
    }
}
