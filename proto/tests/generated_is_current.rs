//! Regenerates the checked-in protocol code and fails when it differs, so the
//! `.proto` files and `src/generated/` never drift apart. On a difference the
//! checked-in file is rewritten: re-run the tests and commit the result.

use std::path::{Path, PathBuf};

#[test]
fn generated_code_is_current() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let proto_dir = root.join("proto");
    let files = [proto_dir.join("reachmap/v1/reachmap.proto")];
    let fds = protox::compile(&files, [&proto_dir]).expect("proto files compile");

    let out = std::env::temp_dir().join(format!("reachmap-proto-gen-{}", std::process::id()));
    std::fs::create_dir_all(&out).expect("temp dir");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // No `connect` helper: it would clash with the `Connect` rpc; callers
        // build a `Channel` themselves (and choose its timeouts).
        .build_transport(false)
        .out_dir(&out)
        .compile_fds(fds)
        .expect("code generation");

    let generated = std::fs::read_to_string(out.join("reachmap.v1.rs")).expect("generated file");
    let _ = std::fs::remove_dir_all(&out);
    let checked_in: PathBuf = root.join("src/generated/reachmap.v1.rs");
    let current = std::fs::read_to_string(&checked_in).unwrap_or_default();
    if generated != current {
        std::fs::write(&checked_in, &generated).expect("rewrite generated code");
        panic!(
            "{} was out of date with the .proto files; it has been rewritten — commit it",
            checked_in.display()
        );
    }
}
