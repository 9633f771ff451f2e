//! `audit_log`: who did what to which record, when. `summary` is fixed text written by the
//! application (never PHI); `details`, when present, is sealed with the patient's data key.
//! Append-only: triggers
//! refuse UPDATE and DELETE on every backend, so not even the application can rewrite
//! history (HIPAA §164.312(b) audit controls).
//!
//! No foreign key to `patients`: the trail of an erased patient stays (its details become
//! unreadable with the patient's key).

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{
    big_pk_auto, blob_null, integer_null, string_len, timestamp_with_time_zone,
};
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The message every backend's trigger raises; the CLI tests look for it.
const REFUSAL: &str = "audit_log is append-only";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(AuditLog::Table)
                    .col(big_pk_auto(AuditLog::Id))
                    .col(timestamp_with_time_zone(AuditLog::At))
                    .col(string_len(AuditLog::Actor, 100))
                    .col(string_len(AuditLog::Action, 32))
                    .col(string_len(AuditLog::Record, 64))
                    .col(integer_null(AuditLog::PatientId))
                    .col(string_len(AuditLog::Summary, 200))
                    .col(blob_null(AuditLog::Details))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("audit_log_patient_id")
                    .table(AuditLog::Table)
                    .col(AuditLog::PatientId)
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        let statements: Vec<String> = match manager.get_database_backend() {
            DbBackend::Sqlite => ["UPDATE", "DELETE"]
                .iter()
                .map(|op| {
                    format!(
                        "CREATE TRIGGER audit_log_no_{} BEFORE {op} ON audit_log \
                         BEGIN SELECT RAISE(ABORT, '{REFUSAL}'); END",
                        op.to_lowercase()
                    )
                })
                .collect(),
            DbBackend::Postgres => vec![
                format!(
                    "CREATE FUNCTION audit_log_refuse() RETURNS trigger LANGUAGE plpgsql AS \
                     $$ BEGIN RAISE EXCEPTION '{REFUSAL}'; END $$"
                ),
                "CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log \
                 FOR EACH ROW EXECUTE FUNCTION audit_log_refuse()"
                    .to_owned(),
                // TRUNCATE bypasses row triggers.
                "CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log \
                 FOR EACH STATEMENT EXECUTE FUNCTION audit_log_refuse()"
                    .to_owned(),
            ],
            _ => ["UPDATE", "DELETE"]
                .iter()
                .map(|op| {
                    format!(
                        "CREATE TRIGGER audit_log_no_{} BEFORE {op} ON audit_log FOR EACH ROW \
                         SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = '{REFUSAL}'",
                        op.to_lowercase()
                    )
                })
                .collect(),
        };
        for sql in statements {
            db.execute_unprepared(&sql).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() == DbBackend::Postgres {
            manager
                .drop_table(Table::drop().table(AuditLog::Table).to_owned())
                .await?;
            return manager
                .get_connection()
                .execute_unprepared("DROP FUNCTION IF EXISTS audit_log_refuse()")
                .await
                .map(|_| ());
        }
        // Triggers go with the table on SQLite and MySQL.
        manager
            .drop_table(Table::drop().table(AuditLog::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum AuditLog {
    Table,
    Id,
    At,
    Actor,
    Action,
    Record,
    PatientId,
    Summary,
    Details,
}
