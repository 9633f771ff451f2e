//! Chains `audit_log` entries: each new entry carries its place in the chain (`seq`, UNIQUE),
//! a MAC over its content and the previous entry's MAC (`mac`), and the id of the
//! blind-index key the MAC was made with (`mac_key`). The application computes the MACs (the
//! keys never reach the database); `clinic audit verify` checks them.
//!
//! Rows written before this migration keep NULL in the three columns: they predate the chain
//! and cannot be verified. They are not filled in here because the migration has no keys, and
//! an `UPDATE` would be refused by the append-only triggers anyway.
//!
//! `REPLACE` must not rewrite history either:
//!
//! * SQLite: `INSERT OR REPLACE` / `REPLACE INTO` delete the conflicting row without firing
//!   DELETE triggers (unless `recursive_triggers` is on). A BEFORE INSERT trigger runs before
//!   the conflict is resolved, so it refuses any insert that would collide with an existing
//!   `id` or `seq`: nothing an honest append does.
//! * MariaDB/MySQL: `REPLACE INTO` fires the BEFORE DELETE trigger on the row it would delete
//!   and `INSERT … ON DUPLICATE KEY UPDATE` the BEFORE UPDATE trigger, so the triggers of
//!   `m20261123_000008` already refuse both.
//! * PostgreSQL has no `REPLACE`; `INSERT … ON CONFLICT DO UPDATE` fires the BEFORE UPDATE
//!   trigger and is refused.
//!
//! MySQL's `timestamp` keeps whole seconds and the MAC covers `at` to the microsecond, so `at`
//! becomes `timestamp(6)` there; PostgreSQL and SQLite already keep microseconds.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{big_integer_null, blob_null, integer_null};
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The message the triggers of `m20261123_000008` raise; the CLI tests look for it.
const REFUSAL: &str = "audit_log is append-only";
const SEQ_INDEX: &str = "audit_log_seq_unique";
const SQLITE_NO_REPLACE: &str = "audit_log_no_replace";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite's ALTER TABLE adds one at a time.
        for column in [
            big_integer_null(AuditLog::Seq),
            blob_null(AuditLog::Mac),
            integer_null(AuditLog::MacKey),
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(AuditLog::Table)
                        .add_column(column)
                        .to_owned(),
                )
                .await?;
        }
        // The backstop against a forked chain: two appenders that read the same head cannot
        // both store the next seq. NULLs (entries from before the chain) do not collide.
        manager
            .create_index(
                Index::create()
                    .name(SEQ_INDEX)
                    .table(AuditLog::Table)
                    .col(AuditLog::Seq)
                    .unique()
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        match manager.get_database_backend() {
            DbBackend::Sqlite => {
                db.execute_unprepared(&format!(
                    "CREATE TRIGGER {SQLITE_NO_REPLACE} BEFORE INSERT ON audit_log \
                     WHEN EXISTS (SELECT 1 FROM audit_log WHERE id = NEW.id OR seq = NEW.seq) \
                     BEGIN SELECT RAISE(ABORT, '{REFUSAL}'); END"
                ))
                .await?;
            }
            DbBackend::MySql => {
                db.execute_unprepared("ALTER TABLE audit_log MODIFY `at` TIMESTAMP(6) NOT NULL")
                    .await?;
            }
            _ => {}
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        match manager.get_database_backend() {
            DbBackend::Sqlite => {
                db.execute_unprepared(&format!("DROP TRIGGER IF EXISTS {SQLITE_NO_REPLACE}"))
                    .await?;
            }
            DbBackend::MySql => {
                // Back to whole seconds: MariaDB truncates the fractions.
                db.execute_unprepared("ALTER TABLE audit_log MODIFY `at` TIMESTAMP NOT NULL")
                    .await?;
            }
            _ => {}
        }
        // SQLite cannot drop a column that an index covers.
        manager
            .drop_index(
                Index::drop()
                    .name(SEQ_INDEX)
                    .table(AuditLog::Table)
                    .to_owned(),
            )
            .await?;
        for column in [AuditLog::Seq, AuditLog::Mac, AuditLog::MacKey] {
            manager
                .alter_table(
                    Table::alter()
                        .table(AuditLog::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum AuditLog {
    Table,
    Seq,
    Mac,
    MacKey,
}
