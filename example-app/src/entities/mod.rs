//! SeaORM entities of the clinic.

pub mod audit_entry;
pub mod clinical_note;
pub mod consent_record;
pub mod legacy_patient;
pub mod patient;
pub mod patient_key;
pub mod transcript;
