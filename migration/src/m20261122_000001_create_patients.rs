//! The `patients` table: identifying fields and history as envelopes, bookkeeping in plaintext.

use encrypted_columns::schema::envelope_column_type;
use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{blob, blob_null, boolean, pk_auto, timestamp_with_time_zone};

/// Longest medical history we plan for. Sets the MySQL column to `mediumblob`; PostgreSQL and
/// SQLite have no such limit.
const MEDICAL_HISTORY_MAX_BYTES: usize = 1 << 20;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let history =
            envelope_column_type(manager.get_database_backend(), MEDICAL_HISTORY_MAX_BYTES);
        manager
            .create_table(
                Table::create()
                    .table(Patients::Table)
                    .col(pk_auto(Patients::Id))
                    .col(blob(Patients::FirstName))
                    .col(blob(Patients::LastName))
                    .col(blob(Patients::Email))
                    .col(blob_null(Patients::Phone))
                    .col(blob(Patients::DateOfBirth))
                    .col(ColumnDef::new_with_type(Patients::MedicalHistory, history).null())
                    .col(boolean(Patients::Active).default(true))
                    .col(timestamp_with_time_zone(Patients::CreatedAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Patients::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum Patients {
    Table,
    Id,
    FirstName,
    LastName,
    Email,
    Phone,
    DateOfBirth,
    MedicalHistory,
    Active,
    CreatedAt,
}
