//! `clinical_notes`: SOAP notes, each section sealed; the author and time in plaintext.

use encrypted_columns::schema::envelope_column_type;
use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{integer, pk_auto, string_len, timestamp_with_time_zone};

/// Longest section we plan for; sets the MySQL column type.
const SECTION_MAX_BYTES: usize = 64 << 10;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let section = envelope_column_type(manager.get_database_backend(), SECTION_MAX_BYTES);
        let mut table = Table::create();
        table
            .table(ClinicalNotes::Table)
            .col(pk_auto(ClinicalNotes::Id))
            .col(integer(ClinicalNotes::PatientId))
            .col(string_len(ClinicalNotes::Author, 100));
        for col in [
            ClinicalNotes::Subjective,
            ClinicalNotes::Objective,
            ClinicalNotes::Assessment,
            ClinicalNotes::Plan,
        ] {
            table.col(ColumnDef::new_with_type(col, section.clone()).not_null());
        }
        table
            .col(timestamp_with_time_zone(ClinicalNotes::CreatedAt))
            .foreign_key(
                ForeignKey::create()
                    .from(ClinicalNotes::Table, ClinicalNotes::PatientId)
                    .to(Patients::Table, Patients::Id),
            );
        manager.create_table(table).await?;
        manager
            .create_index(
                Index::create()
                    .name("clinical_notes_patient_id")
                    .table(ClinicalNotes::Table)
                    .col(ClinicalNotes::PatientId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ClinicalNotes::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum ClinicalNotes {
    Table,
    Id,
    PatientId,
    Author,
    Subjective,
    Objective,
    Assessment,
    Plan,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Patients {
    Table,
    Id,
}
