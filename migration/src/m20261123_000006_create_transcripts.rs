//! `transcripts`: a visit's recording transcribed; the raw text and the diarized segments
//! (JSON) sealed.

use encrypted_columns::schema::envelope_column_type;
use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{integer, pk_auto, timestamp_with_time_zone};

/// Longest transcript we plan for (an hour of speech is ~60 KiB of text; segments double
/// it). Sets the MySQL column to `mediumblob`.
const TRANSCRIPT_MAX_BYTES: usize = 4 << 20;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let big = envelope_column_type(manager.get_database_backend(), TRANSCRIPT_MAX_BYTES);
        manager
            .create_table(
                Table::create()
                    .table(Transcripts::Table)
                    .col(pk_auto(Transcripts::Id))
                    .col(integer(Transcripts::PatientId))
                    .col(ColumnDef::new_with_type(Transcripts::RawText, big.clone()).not_null())
                    .col(ColumnDef::new_with_type(Transcripts::Segments, big).not_null())
                    .col(timestamp_with_time_zone(Transcripts::RecordedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(Transcripts::Table, Transcripts::PatientId)
                            .to(Patients::Table, Patients::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("transcripts_patient_id")
                    .table(Transcripts::Table)
                    .col(Transcripts::PatientId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Transcripts::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum Transcripts {
    Table,
    Id,
    PatientId,
    RawText,
    Segments,
    RecordedAt,
}

#[derive(DeriveIden)]
enum Patients {
    Table,
    Id,
}
