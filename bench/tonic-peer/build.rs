//! Server code for veddb.v1.VedDb from ../../wire/proto/veddb.proto, compiled with protox (no
//! system protoc).

fn main() {
    let proto = "../../wire/proto/veddb.proto";
    println!("cargo:rerun-if-changed={proto}");
    println!("cargo:rerun-if-changed=build.rs");
    let descriptors = match protox::compile([proto], ["../../wire/proto"]) {
        Ok(descriptors) => descriptors,
        Err(error) => panic!("cannot compile {proto}: {error:?}"),
    };
    if let Err(error) = tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .build_transport(false)
        .generate_default_stubs(true)
        .bytes(".")
        .compile_fds(descriptors)
    {
        panic!("cannot generate the tonic server: {error}");
    }
}
