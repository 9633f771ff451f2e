//! Step 1 of encrypting `legacy_patients` without downtime: add the encrypted companions and
//! the e-mail blind index next to the plaintext columns (phase `added` for each). The rest —
//! dual write, backfill, verify, cut-over, drop — is driven by `clinic migrate-legacy`.

use encrypted_columns::blind_index::{BlindIndex, Pipeline};
use encrypted_columns::migrate::schema;
use sea_orm_migration::prelude::*;

/// The patients table's longest plaintext we plan for (bytes).
const MAX_FIELD_BYTES: usize = 1024;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let t = "legacy_patients";
        schema::add_encrypted_column(manager, t, "full_name", "full_name_enc", MAX_FIELD_BYTES)
            .await?;
        schema::add_encrypted_column(manager, t, "email", "email_enc", MAX_FIELD_BYTES).await?;
        schema::add_encrypted_column(manager, t, "phone", "phone_enc", MAX_FIELD_BYTES).await?;
        // Only width and uniqueness matter for the column; the entity holds the full spec.
        let email_bidx = BlindIndex::new(t, "email_bidx")
            .field(Pipeline::identity())
            .unique();
        schema::add_blind_index_column(manager, t, "email_bidx", &email_bidx).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let t = Alias::new("legacy_patients");
        manager
            .drop_index(
                Index::drop()
                    .name(schema::index_name("legacy_patients", "email_bidx"))
                    .table(t.clone())
                    .to_owned(),
            )
            .await?;
        for column in ["email_bidx", "phone_enc", "email_enc", "full_name_enc"] {
            manager
                .alter_table(
                    Table::alter()
                        .table(t.clone())
                        .drop_column(Alias::new(column))
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
