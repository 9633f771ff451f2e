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
    /// "Last 4 digits of the phone": 10,000 possible values, so the index keeps the 12 bits
    /// the library's planner gives for them (`blind_index::plan(rows, 10_000)`; a test in
    /// `commands::index` checks it). What that reveals: 4,096 index values for 10,000
    /// last-4s, ~2.4 last-4s per index value, so rows with equal index values have one of a
    /// few last-4s, not necessarily the same one; lookups drop the look-alikes after
    /// decrypting. Except for the ~9% of last-4s alone in their bucket (880 of 10,000 in that
    /// test; expected (1 − 2^-12)^9999 ≈ 8.7%): rows sharing their index value do share their
    /// last 4 digits. At 16 bits ~86% were alone, so equal index values meant equal digits.
    /// Changing `bits` changes every stored value: run `clinic index rebuild`.
    #[encrypted(blind_index(name = "phone_last4_bidx", transform = "digits, last(4)", bits = 12))]
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
