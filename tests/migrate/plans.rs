//! The plans `migrate_child` runs, with their column contexts and blind indexes. One file
//! for both sides: the test binary declares it as a module, tests/bin/migrate_child.rs
//! includes it with `#[path]`, so the child seals exactly what the tests open.

use std::sync::LazyLock;

use encrypted_columns::blind_index::{BlindIndex, Pipeline};
use encrypted_columns::column_context;
use encrypted_columns::migrate::{EncryptColumn, EncryptTable};

/// A blind index `email_bidx` over one e-mail field of `table`.
pub fn email_index(table: &'static str) -> BlindIndex {
    BlindIndex::new(table, "email_bidx")
        .field(Pipeline::parse("email").expect("the `email` pipeline exists"))
}

column_context!(pub CrashEmail, table = "mig_crash", column = "email");

pub static CRASH_BIDX: LazyLock<BlindIndex> = LazyLock::new(|| email_index("mig_crash"));

/// `mig_crash.email` → `email_enc` (+ `email_bidx`): what the child backfills without
/// `--table`.
pub fn crash_column() -> EncryptColumn<String, CrashEmail> {
    EncryptColumn::new("mig_crash", "id", "email", "email_enc")
        .with_index("email_bidx", &CRASH_BIDX)
}

// The work plan. A context is the logical name of a column: the same for every physical
// table a test creates.
column_context!(pub WorkEmail, table = "mig_work", column = "email");
column_context!(pub WorkPhone, table = "mig_work", column = "phone");
column_context!(pub WorkNotes, table = "mig_work", column = "notes");

pub static WORK_BIDX: LazyLock<BlindIndex> = LazyLock::new(|| email_index("mig_work"));

/// The first `columns` (1..=3) of `email` (+ blind index `email_bidx`), `phone` and `notes`
/// of physical table `table`, each sealed into `<column>_enc`: what the child runs with
/// `--table table --columns columns`.
pub fn work_plan(table: &str, columns: usize) -> EncryptTable {
    let email = EncryptColumn::<String, WorkEmail>::new(table, "id", "email", "email_enc")
        .with_index("email_bidx", &WORK_BIDX);
    let phone = EncryptColumn::<String, WorkPhone>::new(table, "id", "phone", "phone_enc");
    let notes = EncryptColumn::<String, WorkNotes>::new(table, "id", "notes", "notes_enc");
    let mut plan = EncryptTable::new(table, "id").column(email);
    if columns >= 2 {
        plan = plan.column(phone);
    }
    if columns >= 3 {
        plan = plan.column(notes);
    }
    plan
}
