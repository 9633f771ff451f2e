// An optional field gives a NULL index: its companion must be optional too.
use encrypted_columns::{DeriveEncrypted, EncryptedString};
use sea_orm::entity::prelude::*;

mod patient {
    use super::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, DeriveEncrypted)]
    #[sea_orm(table_name = "patients")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        #[encrypted(blind_index(name = "phone_bidx", transform = "digits"))]
        pub phone: Option<EncryptedString<ctx::Phone>>,
        pub phone_bidx: Vec<u8>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

fn main() {}
