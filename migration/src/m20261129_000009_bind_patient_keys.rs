//! Binds each `patient_keys` row to exactly one patient.
//!
//! Erasure destroys the key row that `patients.key_id` names. If two patients could name the
//! same row, or a patient could name a row that does not exist, a tampered or buggy `key_id`
//! would make erasure destroy another patient's key and keep the erased patient's. So:
//!
//! * `patients.key_id` is UNIQUE: one key row per patient;
//! * it must name an existing `patient_keys` row, and a key row still named by a patient cannot
//!   be deleted: a foreign key on PostgreSQL and MySQL/MariaDB; triggers on SQLite, whose
//!   `ALTER TABLE` cannot add a foreign key to an existing table.
//!
//! On a database that already breaks these rules (two patients sharing a key row, a dangling
//! `key_id`), this migration fails with the database's error and changes nothing: that data
//! needs a person to look at it before anything is erased.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UNIQUE_INDEX: &str = "patients_key_id_unique";
const FOREIGN_KEY: &str = "patients_key_id_fk";
/// What the SQLite triggers raise, in the words of the other backends' foreign key.
const REFUSAL: &str = "patients.key_id must name an existing patient_keys row";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name(UNIQUE_INDEX)
                    .table(Patients::Table)
                    .col(Patients::KeyId)
                    .unique()
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        if manager.get_database_backend() == DbBackend::Sqlite {
            for sql in [
                format!(
                    "CREATE TRIGGER patients_key_id_insert BEFORE INSERT ON patients \
                     WHEN NOT EXISTS (SELECT 1 FROM patient_keys WHERE id = NEW.key_id) \
                     BEGIN SELECT RAISE(ABORT, '{REFUSAL}'); END"
                ),
                format!(
                    "CREATE TRIGGER patients_key_id_update BEFORE UPDATE OF key_id ON patients \
                     WHEN NOT EXISTS (SELECT 1 FROM patient_keys WHERE id = NEW.key_id) \
                     BEGIN SELECT RAISE(ABORT, '{REFUSAL}'); END"
                ),
                format!(
                    "CREATE TRIGGER patient_keys_in_use BEFORE DELETE ON patient_keys \
                     WHEN EXISTS (SELECT 1 FROM patients WHERE key_id = OLD.id) \
                     BEGIN SELECT RAISE(ABORT, '{REFUSAL}'); END"
                ),
                format!(
                    "CREATE TRIGGER patient_keys_id_in_use BEFORE UPDATE OF id ON patient_keys \
                     WHEN EXISTS (SELECT 1 FROM patients WHERE key_id = OLD.id) \
                     BEGIN SELECT RAISE(ABORT, '{REFUSAL}'); END"
                ),
            ] {
                db.execute_unprepared(&sql).await?;
            }
            // Rows written before this migration are checked once, here.
            let dangling = db
                .query_one_raw(sea_orm_migration::sea_orm::Statement::from_string(
                    DbBackend::Sqlite,
                    "SELECT COUNT(*) AS n FROM patients \
                     WHERE key_id NOT IN (SELECT id FROM patient_keys)",
                ))
                .await?
                .map(|row| row.try_get::<i64>("", "n"))
                .transpose()?
                .unwrap_or(0);
            if dangling > 0 {
                return Err(DbErr::Migration(format!(
                    "{dangling} patient row(s) name a patient_keys row that does not exist; \
                     repair them before migrating"
                )));
            }
            return Ok(());
        }
        manager
            .create_foreign_key(
                ForeignKey::create()
                    .name(FOREIGN_KEY)
                    .from(Patients::Table, Patients::KeyId)
                    .to(PatientKeys::Table, PatientKeys::Id)
                    .on_delete(ForeignKeyAction::Restrict)
                    .on_update(ForeignKeyAction::Restrict)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() == DbBackend::Sqlite {
            let db = manager.get_connection();
            for trigger in [
                "patients_key_id_insert",
                "patients_key_id_update",
                "patient_keys_in_use",
                "patient_keys_id_in_use",
            ] {
                db.execute_unprepared(&format!("DROP TRIGGER IF EXISTS {trigger}"))
                    .await?;
            }
        } else {
            manager
                .drop_foreign_key(
                    ForeignKey::drop()
                        .name(FOREIGN_KEY)
                        .table(Patients::Table)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .drop_index(
                Index::drop()
                    .name(UNIQUE_INDEX)
                    .table(Patients::Table)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum Patients {
    Table,
    KeyId,
}

#[derive(DeriveIden)]
enum PatientKeys {
    Table,
    Id,
}
