//! Makes `patient_keys` the library's subject-key table (`encrypted_columns::subject_keys`):
//! adds `provider` (existing rows: `keyring`, the clinic keyring that sealed them), `kek_id`
//! (NULL: any KEK of the provider) and `check_value` (NULL until the clinic fills it on first
//! use; new rows get theirs when created). Existing wrapped keys are not touched, so the
//! clinic reads them exactly as before. Re-runnable: columns already added are skipped.

use encrypted_columns::subject_keys::table::migration::{add_key_columns, drop_key_columns};
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const TABLE: &str = "patient_keys";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        add_key_columns(manager, TABLE).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        drop_key_columns(manager, TABLE).await
    }
}
