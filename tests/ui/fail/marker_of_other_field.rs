// A copy-pasted marker: `phone` sealed with `email`'s key and associated data.
use encrypted_columns::{DeriveEncrypted, EncryptedString};
use sea_orm::entity::prelude::*;

mod patient {
    use super::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, DeriveEncrypted)]
    #[sea_orm(table_name = "patients")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        pub email: EncryptedString<ctx::Email>,
        pub phone: EncryptedString<ctx::Email>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

fn main() {}
