//! `consent_records`: what a patient agreed to, how, and when; the signature data sealed.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{
    blob, boolean, integer, pk_auto, string_len, timestamp_with_time_zone,
};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ConsentRecords::Table)
                    .col(pk_auto(ConsentRecords::Id))
                    .col(integer(ConsentRecords::PatientId))
                    .col(string_len(ConsentRecords::Scope, 32))
                    .col(string_len(ConsentRecords::Method, 16))
                    .col(boolean(ConsentRecords::Granted))
                    .col(blob(ConsentRecords::Signature))
                    .col(timestamp_with_time_zone(ConsentRecords::RecordedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(ConsentRecords::Table, ConsentRecords::PatientId)
                            .to(Patients::Table, Patients::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("consent_records_patient_id")
                    .table(ConsentRecords::Table)
                    .col(ConsentRecords::PatientId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ConsentRecords::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum ConsentRecords {
    Table,
    Id,
    PatientId,
    Scope,
    Method,
    Granted,
    Signature,
    RecordedAt,
}

#[derive(DeriveIden)]
enum Patients {
    Table,
    Id,
}
