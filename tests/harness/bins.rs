//! Locating the reachmap binaries built by `cargo build --bins`.

use std::path::PathBuf;

/// The directory holding the reachmap binaries: `REACHMAP_BIN_DIR` if set,
/// otherwise the cargo target directory this test executable was built into
/// (`target/debug/deps/<test>` gives `target/debug`).
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("REACHMAP_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("cannot determine the test executable's path");
    let mut dir = exe
        .parent()
        .expect("test executable has no parent directory")
        .to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    dir
}

/// Absolute path of a reachmap binary (`reachmap-agent`, `reachmap-collector`,
/// `reachmap`). Panics with instructions when it has not been built.
pub fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    if !path.is_file() {
        panic!(
            "{name} not found at {}: run `cargo build --bins` first \
             (or point REACHMAP_BIN_DIR at the directory holding it)",
            path.display()
        );
    }
    path
}
