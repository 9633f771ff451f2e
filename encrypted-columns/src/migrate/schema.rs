//! One-line schema steps for a user's `sea-orm-migration` migrations, correct on SQLite (one
//! change per `ALTER TABLE`, indexes dropped before their columns), PostgreSQL and MariaDB.
//! They also record the column's migration phase, so the steps cannot run out of order.
//!
//! ```no_run
//! # use encrypted_columns::blind_index::BlindIndex;
//! # use encrypted_columns::migrate::schema;
//! # use sea_orm_migration::prelude::*;
//! // In m20261201_000001_encrypt_legacy_email.rs's `MigrationTrait::up`; `email_bidx` is the
//! // entity's `legacy_patient::Entity::email_bidx_index()`.
//! async fn up(manager: &SchemaManager<'_>, email_bidx: &BlindIndex) -> Result<(), DbErr> {
//!     schema::add_encrypted_column(manager, "legacy_patients", "email", "email_enc", 320).await?;
//!     schema::add_blind_index_column(manager, "legacy_patients", "email_bidx", email_bidx).await
//! }
//! ```

use sea_orm::DbErr;
use sea_orm::sea_query::{ColumnDef, Index, Table};
use sea_orm_migration::SchemaManager;

use super::sql::a;
use super::{EncryptTable, RunOptions, state};
use crate::blind_index::BlindIndex;
use crate::schema::{
    blind_index_column_type, blind_index_name, envelope_column_type, unique_index,
};

/// The index name the helpers give a blind-index column: `{table}_{column}`, which carries
/// the column name so [`unique_violation`](crate::blind_index::unique_violation) can report it.
pub fn index_name(table: &str, column: &str) -> String {
    blind_index_name(table, column)
}

/// Adds nullable envelope column `encrypted` next to plaintext column `plaintext` (sized for
/// plaintexts up to `max_plaintext_len` bytes on MySQL) and records phase `added`.
pub async fn add_encrypted_column(
    manager: &SchemaManager<'_>,
    table: &str,
    plaintext: &str,
    encrypted: &str,
    max_plaintext_len: usize,
) -> Result<(), DbErr> {
    let column_type = envelope_column_type(manager.get_database_backend(), max_plaintext_len);
    manager
        .alter_table(
            Table::alter()
                .table(a(table))
                .add_column(ColumnDef::new_with_type(a(encrypted), column_type).null())
                .to_owned(),
        )
        .await?;
    state::start(manager.get_connection(), table, plaintext).await?;
    Ok(())
}

/// Adds nullable blind-index column `column` sized for `index`, with an index named
/// [`index_name`] (UNIQUE if the index is; over its scope columns and `column` if it has a
/// [`scope`](BlindIndex::scope), see [`unique_index`]). NULLs do not collide in a UNIQUE
/// index on any of the three databases, so rows can be filled gradually.
pub async fn add_blind_index_column(
    manager: &SchemaManager<'_>,
    table: &str,
    column: &str,
    index: &BlindIndex,
) -> Result<(), DbErr> {
    manager
        .alter_table(
            Table::alter()
                .table(a(table))
                .add_column(
                    ColumnDef::new_with_type(a(column), blind_index_column_type(index)).null(),
                )
                .to_owned(),
        )
        .await?;
    let create = match unique_index(table, column, index) {
        Some(unique) => unique,
        None => Index::create()
            .name(index_name(table, column))
            .table(a(table))
            .col(a(column))
            .to_owned(),
    };
    manager.create_index(create).await
}

/// Drops the plaintext columns of `plan` after cut-over, in a migration: the same step as
/// [`drop_plaintext`](super::drop_plaintext), which re-checks every row under an exclusive
/// lock and refuses, with nothing dropped, while any row holds plaintext that no envelope
/// carries. `indexes` on the plaintext columns are dropped first (SQLite's are also found).
/// Refused before cut-over; columns already dropped are left alone.
pub async fn drop_plaintext_column(
    manager: &SchemaManager<'_>,
    plan: impl Into<EncryptTable>,
    indexes: &[&str],
) -> Result<super::DropReport, DbErr> {
    super::drop_plaintext(
        manager.get_connection(),
        plan,
        indexes,
        &RunOptions::default(),
    )
    .await
}

/// Rewrites `table` so the bytes of dropped or overwritten plaintext leave the database
/// files. Dropping a column does not erase its data: SQLite keeps freed pages, PostgreSQL
/// only marks the column dropped, MariaDB may drop it instantly. This runs `VACUUM` (SQLite,
/// whole file), `ALTER TABLE … FORCE` (MySQL/MariaDB, an online rebuild) or `VACUUM FULL`
/// (PostgreSQL: takes an exclusive lock on the table for the rewrite; use `pg_repack` where
/// that is too long). Run it outside a transaction. Backups and replicas taken earlier still
/// hold plaintext: expire them on your retention schedule. [`purge`](super::purge) does the
/// same and records phase `purged`.
pub async fn purge_dropped_data(manager: &SchemaManager<'_>, table: &str) -> Result<(), DbErr> {
    super::dropping::rewrite_table(manager.get_connection(), table).await
}

/// Renames a column (e.g. `email_enc` → `email` once the plaintext `email` is gone). The
/// envelope binds the *logical* column name, so renaming the physical column is safe.
pub async fn rename_column(
    manager: &SchemaManager<'_>,
    table: &str,
    from: &str,
    to: &str,
) -> Result<(), DbErr> {
    manager
        .alter_table(
            Table::alter()
                .table(a(table))
                .rename_column(a(from), a(to))
                .to_owned(),
        )
        .await
}
