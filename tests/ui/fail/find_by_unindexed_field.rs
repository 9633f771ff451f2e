// Querying an encrypted field without a blind index does not compile: there is no
// `find_by_medical_history`, and the database cannot compare ciphertexts.
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
        pub email_bidx: Vec<u8>,
        pub medical_history: EncryptedString<ctx::MedicalHistory>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

fn main() {
    let _ = patient::Entity::find_by_medical_history("asthma");
}
