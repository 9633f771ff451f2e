// In a `#[sea_orm::model]` entity, `#[sea_orm(unique)]` on a blind-index column would make
// SeaORM generate its own `find_by_<column>` over raw bytes: refused, with the fix named.
use encrypted_columns::{DeriveEncrypted, EncryptedString};
use sea_orm::entity::prelude::*;

mod nurse {
    use super::*;

    #[sea_orm::model]
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, DeriveEncrypted)]
    #[sea_orm(table_name = "nurses")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        #[encrypted(blind_index(name = "badge_bidx", transform = "trim", unique))]
        pub badge: EncryptedString<ctx::Badge>,
        #[sea_orm(unique)]
        pub badge_bidx: Vec<u8>,
    }

    impl ActiveModelBehavior for ActiveModel {}
}

fn main() {}
