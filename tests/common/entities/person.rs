//! `bi_people`: a compound blind index over (last name, date of birth), the way a clinic
//! finds a patient at the front desk. `before_save` fills it.

use chrono::NaiveDate;
use encrypted_columns::{DeriveEncrypted, Encrypted, EncryptedString};
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel, DeriveEncrypted)]
#[sea_orm(table_name = "bi_people")]
#[encrypted(active_model_behavior)]
#[encrypted(compound_index(
    name = "name_dob_bidx",
    field(name = "last_name", transform = "casefold, trim"),
    field = "date_of_birth"
))]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i32,
    pub last_name: EncryptedString<ctx::LastName>,
    pub date_of_birth: Encrypted<NaiveDate, ctx::DateOfBirth>,
    pub name_dob_bidx: Vec<u8>,
    /// Plaintext, outside the index.
    pub ward: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}
