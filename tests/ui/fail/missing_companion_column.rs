// The blind index names a companion column the struct does not have.
use encrypted_columns::{DeriveEncrypted, EncryptedString};
use sea_orm::entity::prelude::*;

mod patient {
    use super::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, DeriveEncrypted)]
    #[sea_orm(table_name = "patients")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        #[encrypted(blind_index(name = "email_bidx", normalize = "email"))]
        pub email: EncryptedString<ctx::Email>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

fn main() {}
