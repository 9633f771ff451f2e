//! SeaORM entities of the clinic.

pub mod legacy_patient;
pub mod patient;
