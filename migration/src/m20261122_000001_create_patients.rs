//! The `patients` table: identifying fields and history as envelopes, bookkeeping in plaintext.
//! Each patient's envelopes are sealed with that patient's own data key (`key_id`, a row of
//! `patient_keys`), so erasing the key erases the patient everywhere, backups included.

use encrypted_columns::schema::envelope_column_type;
use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{
    binary_len, binary_len_null, blob, blob_null, boolean, integer, pk_auto,
    timestamp_with_time_zone,
};

/// Longest medical history we plan for. Sets the MySQL column to `mediumblob`; PostgreSQL and
/// SQLite have no such limit.
const MEDICAL_HISTORY_MAX_BYTES: usize = 1 << 20;

/// Blind-index value sizes: one version byte plus the kept bits (FORMAT.md §8).
const FULL_INDEX_BYTES: u32 = 1 + 32;
const PHONE_LAST4_BYTES: u32 = 1 + 2;
const NAME_DOB_BYTES: u32 = 1 + 4;

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
                    .col(integer(Patients::KeyId))
                    .col(blob(Patients::FirstName))
                    .col(blob(Patients::LastName))
                    .col(blob(Patients::Email))
                    .col(binary_len(Patients::EmailBidx, FULL_INDEX_BYTES))
                    .col(blob_null(Patients::Phone))
                    .col(binary_len_null(Patients::PhoneLast4Bidx, PHONE_LAST4_BYTES))
                    .col(blob_null(Patients::Address))
                    .col(blob(Patients::DateOfBirth))
                    .col(binary_len(Patients::NameDobBidx, NAME_DOB_BYTES))
                    .col(ColumnDef::new_with_type(Patients::MedicalHistory, history).null())
                    .col(boolean(Patients::Active).default(true))
                    .col(timestamp_with_time_zone(Patients::CreatedAt))
                    .col(timestamp_with_time_zone(Patients::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        // Named after their columns, so a duplicate reports which blind index refused it.
        manager
            .create_index(
                Index::create()
                    .name("patients_email_bidx")
                    .table(Patients::Table)
                    .col(Patients::EmailBidx)
                    .unique()
                    .to_owned(),
            )
            .await?;
        for (name, column) in [
            ("patients_phone_last4_bidx", Patients::PhoneLast4Bidx),
            ("patients_name_dob_bidx", Patients::NameDobBidx),
            ("patients_key_id", Patients::KeyId),
        ] {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(Patients::Table)
                        .col(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
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
    KeyId,
    FirstName,
    LastName,
    Email,
    EmailBidx,
    Phone,
    PhoneLast4Bidx,
    Address,
    DateOfBirth,
    NameDobBidx,
    MedicalHistory,
    Active,
    CreatedAt,
    UpdatedAt,
}
