//! A patient: identifying fields and medical history encrypted, bookkeeping in plaintext.

use chrono::{DateTime, NaiveDate, Utc};
use encrypted_columns::{Encrypted, EncryptedString, column_context};
use sea_orm::entity::prelude::*;

column_context!(pub FirstName, table = "patients", column = "first_name");
column_context!(pub LastName, table = "patients", column = "last_name");
column_context!(pub Email, table = "patients", column = "email");
column_context!(pub Phone, table = "patients", column = "phone");
column_context!(pub DateOfBirth, table = "patients", column = "date_of_birth");
column_context!(pub MedicalHistory, table = "patients", column = "medical_history");

/// A row of `patients`.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "patients")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i32,
    pub first_name: EncryptedString<FirstName>,
    pub last_name: EncryptedString<LastName>,
    pub email: EncryptedString<Email>,
    pub phone: Option<EncryptedString<Phone>>,
    pub date_of_birth: Encrypted<NaiveDate, DateOfBirth>,
    pub medical_history: Option<EncryptedString<MedicalHistory>>,
    pub active: bool,
    pub created_at: DateTime<Utc>,
}

/// The clinic's relations (none yet).
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
