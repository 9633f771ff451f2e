//! `patient_keys`: one data key per patient, stored wrapped (sealed) under the clinic's
//! keyring. Deleting a row makes everything sealed with that key unreadable: in this
//! database, its replicas and its backups (crypto-shredding).

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{blob, pk_auto, timestamp_with_time_zone};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(PatientKeys::Table)
                    .col(pk_auto(PatientKeys::Id))
                    .col(blob(PatientKeys::WrappedKey))
                    .col(timestamp_with_time_zone(PatientKeys::CreatedAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(PatientKeys::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum PatientKeys {
    Table,
    Id,
    WrappedKey,
    CreatedAt,
}
