//! A patient: identifying fields and medical history encrypted, bookkeeping in plaintext.
//!
//! Every envelope of a patient is sealed with that patient's own data key (`key_id`, see
//! [`crate::clinic`]); the blind indexes use the clinic's shared blind-index key, so lookups
//! work across patients.
//!
//! `DeriveEncrypted` generates the `ctx` column markers, the blind indexes' upkeep (in
//! `before_save`, via `active_model_behavior`) and lookups such as
//! `Entity::find_one_by_email_bidx(db, "ada@example.org")`.

use chrono::{DateTime, NaiveDate, Utc};
use encrypted_columns::{DeriveEncrypted, Encrypted, EncryptedString};
use sea_orm::entity::prelude::*;

/// A row of `patients`.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel, DeriveEncrypted)]
#[sea_orm(table_name = "patients")]
#[encrypted(active_model_behavior)]
#[encrypted(compound_index(
    name = "name_dob_bidx",
    field(name = "last_name", transform = "casefold, collapse_spaces, trim"),
    field = "date_of_birth",
    bits = 32
))]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i32,
    /// The row of `patient_keys` holding this patient's (wrapped) data key.
    pub key_id: i32,
    pub first_name: EncryptedString<ctx::FirstName>,
    pub last_name: EncryptedString<ctx::LastName>,
    /// One patient per e-mail: a full-width unique index on the canonical form.
    #[encrypted(blind_index(name = "email_bidx", normalize = "email", unique))]
    pub email: EncryptedString<ctx::Email>,
    pub email_bidx: Vec<u8>,
    /// "Last 4 digits of the phone", truncated to 16 bits: many patients share a value.
    #[encrypted(blind_index(name = "phone_last4_bidx", transform = "digits, last(4)", bits = 16))]
    pub phone: Option<EncryptedString<ctx::Phone>>,
    pub phone_last4_bidx: Option<Vec<u8>>,
    pub address: Option<EncryptedString<ctx::Address>>,
    pub date_of_birth: Encrypted<NaiveDate, ctx::DateOfBirth>,
    pub name_dob_bidx: Vec<u8>,
    pub medical_history: Option<EncryptedString<ctx::MedicalHistory>>,
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The clinic's relations (none yet).
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}
