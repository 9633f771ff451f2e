//! Compile-time checks of `#[derive(DeriveEncrypted)]`: every mistake in `tests/ui/fail` must
//! be refused with the error in its `.stderr` snapshot (pointing at the offending token), and
//! the entities in `tests/ui/pass` must compile.
//!
//! `cargo test -p encrypted-columns-tests --test derive_ui`; after changing a message,
//! regenerate the snapshots with `TRYBUILD=overwrite` and read every diff.

#[test]
fn derive_ui() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("ui/fail/*.rs");
    cases.pass("ui/pass/*.rs");
}
