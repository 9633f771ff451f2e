//! SeaORM entities of the clinic.

pub mod patient;
