// A compound index over a single field.
use encrypted_columns::{DeriveEncrypted, EncryptedString};
use sea_orm::entity::prelude::*;

mod patient {
    use super::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, DeriveEncrypted)]
    #[sea_orm(table_name = "patients")]
    #[encrypted(compound_index(name = "name_bidx", field = "name"))]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        pub name: EncryptedString<ctx::Name>,
        pub name_bidx: Vec<u8>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

fn main() {}
