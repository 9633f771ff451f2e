//! SoftHSM2 tokens for the PKCS#11 tests (`TEST_SOFTHSM2_MODULE`, installed by
//! `scripts/softhsm2.sh`): a token directory of the test binary's own, under Cargo's target tmp
//! dir, with one initialised token per label.
//!
//! SoftHSM2 reads `SOFTHSM2_CONF` once per process, when the module is first loaded, so each
//! binary calls [`create_tokens`] once (behind a `OnceLock`) and sets the variable to the path
//! it returns before any test loads the module.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The security officer PIN of every test token.
pub const SO_PIN: &str = "so-pin-1234";
/// The user PIN of every test token.
pub const PIN: &str = "user-pin-5678";

/// Creates `dir` afresh with a token per label in `labels`, and returns its `softhsm2.conf`.
/// Panics (failing the test) if `softhsm2-util` is missing or refuses.
pub fn create_tokens(dir: &Path, labels: &[&str]) -> PathBuf {
    let _ = std::fs::remove_dir_all(dir);
    let tokens = dir.join("tokens");
    std::fs::create_dir_all(&tokens).expect("create the token directory");
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .expect("write softhsm2.conf");
    for label in labels {
        let out = Command::new("softhsm2-util")
            .args(["--init-token", "--free", "--label", label])
            .args(["--so-pin", SO_PIN, "--pin", PIN])
            .env("SOFTHSM2_CONF", &conf)
            .output()
            .expect("run softhsm2-util (package softhsm2)");
        assert!(
            out.status.success(),
            "softhsm2-util --init-token {label}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    conf
}
