//! Generates the gRPC message types from `proto/*.proto` with `protox` (a pure-Rust protobuf
//! compiler, so no system `protoc` is needed) and `prost-build`.

use std::path::PathBuf;

fn main() {
    let protos = ["proto/veddb.proto", "proto/health.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    println!("cargo:rerun-if-changed=build.rs");

    let descriptors = match protox::compile(protos, ["proto"]) {
        Ok(descriptors) => descriptors,
        Err(error) => panic!("cannot compile the protobuf files: {error:?}"),
    };
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let mut config = prost_build::Config::new();
    config.out_dir(&out_dir).bytes(["."]);
    if let Err(error) = config.compile_fds(descriptors) {
        panic!("cannot generate Rust code from the protobuf files: {error}");
    }
}
