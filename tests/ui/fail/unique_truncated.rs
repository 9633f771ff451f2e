// A unique index cannot be truncated: collisions would reject legitimate rows.
use encrypted_columns::{DeriveEncrypted, EncryptedString};
use sea_orm::entity::prelude::*;

mod patient {
    use super::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, DeriveEncrypted)]
    #[sea_orm(table_name = "patients")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        #[encrypted(blind_index(name = "email_bidx", normalize = "email", unique, bits = 16))]
        pub email: EncryptedString<ctx::Email>,
        pub email_bidx: Vec<u8>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

fn main() {}
