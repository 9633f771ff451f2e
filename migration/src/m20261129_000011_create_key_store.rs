//! The key store (`encrypted_columns_keys`): one row per clinic key with its check value, and,
//! with a KEK provider configured (`CLINIC_KEK`), the key wrapped under it. Created by the
//! library's own migration step, so the clinic's table is exactly the one the library reads.
//!
//! Grants: the application role needs `SELECT, INSERT, UPDATE` on it (INSERT registers a new
//! environment key's check value at first sight; UPDATE is `clinic keys rewrap`). PostgreSQL's
//! `GRANT … ON ALL TABLES` in the README covers it once re-run after this migration; MariaDB's
//! per-table list names it (README, "The audit log").

use encrypted_columns::keystore::migration::CreateKeyStore;
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        CreateKeyStore::default().up(manager).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        CreateKeyStore::default().down(manager).await
    }
}
