// A compound index over a field the struct does not have.
use encrypted_columns::{DeriveEncrypted, EncryptedString};
use sea_orm::entity::prelude::*;

mod patient {
    use super::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, DeriveEncrypted)]
    #[sea_orm(table_name = "patients")]
    #[encrypted(compound_index(name = "name_dob_bidx", field = "name", field = "birth_date"))]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        pub name: EncryptedString<ctx::Name>,
        pub dob: EncryptedString<ctx::Dob>,
        pub name_dob_bidx: Vec<u8>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

fn main() {}
