//! `legacy_patients`: how a clinic's table looks before encryption, PII in plaintext. The
//! next migration starts moving it to encrypted columns without downtime. Columns are
//! nullable: after cut-over, writers leave plaintext NULL until the columns are dropped.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{pk_auto, string_null};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(LegacyPatients::Table)
                    .col(pk_auto(LegacyPatients::Id))
                    .col(string_null(LegacyPatients::FullName))
                    .col(string_null(LegacyPatients::Email))
                    .col(string_null(LegacyPatients::Phone))
                    .to_owned(),
            )
            .await?;
        // The legacy app searched by e-mail with an ordinary index; it must go before the
        // plaintext column can be dropped (SQLite refuses to drop an indexed column).
        manager
            .create_index(
                Index::create()
                    .name("legacy_patients_email")
                    .table(LegacyPatients::Table)
                    .col(LegacyPatients::Email)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(LegacyPatients::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum LegacyPatients {
    Table,
    Id,
    FullName,
    Email,
    Phone,
}
