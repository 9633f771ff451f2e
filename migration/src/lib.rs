//! Schema migrations of the example clinic, one per file, applied in order.
//!
//! Encrypted fields are binary envelope columns (`bytea` / `blob`); the column type comes from
//! `encrypted_columns::schema::envelope_column_type` so large fields get `mediumblob` on MySQL.

pub use sea_orm_migration::prelude::*;

mod m20261122_000001_create_patients;
mod m20261122_000002_create_legacy_patients;
mod m20261122_000003_encrypt_legacy_patients;

/// Runs the clinic's migrations.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261122_000001_create_patients::Migration),
            Box::new(m20261122_000002_create_legacy_patients::Migration),
            Box::new(m20261122_000003_encrypt_legacy_patients::Migration),
        ]
    }
}
