//! Schema migrations of the example clinic, one per file, applied in order.
//!
//! Encrypted fields are binary envelope columns (`bytea` / `blob`); the column type comes from
//! `encrypted_columns::schema::envelope_column_type` so large fields get `mediumblob` on MySQL.

pub use sea_orm_migration::prelude::*;

mod m20261122_000001_create_patients;
mod m20261122_000002_create_legacy_patients;
mod m20261122_000003_encrypt_legacy_patients;
mod m20261123_000004_create_patient_keys;
mod m20261123_000005_create_consent_records;
mod m20261123_000006_create_transcripts;
mod m20261123_000007_create_clinical_notes;
mod m20261123_000008_create_audit_log;
mod m20261129_000009_bind_patient_keys;
mod m20261129_000010_chain_audit_log;
mod m20261129_000011_create_key_store;
mod m20261129_000012_subject_key_columns;

/// Runs the clinic's migrations.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261122_000001_create_patients::Migration),
            Box::new(m20261122_000002_create_legacy_patients::Migration),
            Box::new(m20261122_000003_encrypt_legacy_patients::Migration),
            Box::new(m20261123_000004_create_patient_keys::Migration),
            Box::new(m20261123_000005_create_consent_records::Migration),
            Box::new(m20261123_000006_create_transcripts::Migration),
            Box::new(m20261123_000007_create_clinical_notes::Migration),
            Box::new(m20261123_000008_create_audit_log::Migration),
            Box::new(m20261129_000009_bind_patient_keys::Migration),
            Box::new(m20261129_000010_chain_audit_log::Migration),
            Box::new(m20261129_000011_create_key_store::Migration),
            Box::new(m20261129_000012_subject_key_columns::Migration),
        ]
    }
}
