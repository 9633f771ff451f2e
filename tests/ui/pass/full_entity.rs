// Every feature of the derive on one entity: a unique full-width index, a truncated index on
// an optional field, a compound index (one part with its own transforms, one a date), a
// `transform_fn`, `active_model_behavior`, and a marker of the user's own from
// `column_context!`. `main` checks the generated definitions; `uses` (never run) pins the
// signatures of the generated functions.
use chrono::NaiveDate;
use encrypted_columns::blind_index::BlindIndex;
use encrypted_columns::{
    ColumnContext, DeriveEncrypted, Encrypted, EncryptedString, Keyring, column_context, keyring,
};
use sea_orm::ActiveValue::Set;
use sea_orm::entity::prelude::*;
use sea_orm::{Condition, DbBackend, QueryTrait, Select};

mod patient {
    use super::*;

    column_context!(pub MrnContext, table = "patients", column = "mrn");

    /// `MRN-0042`, `mrn 42`, `42`: the same record number.
    pub fn normalize_mrn(raw: &str) -> String {
        let digits: String = raw.chars().filter(char::is_ascii_digit).collect();
        digits.trim_start_matches('0').to_owned()
    }

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, DeriveEncrypted)]
    #[sea_orm(table_name = "patients")]
    #[encrypted(
        active_model_behavior,
        compound_index(
            name = "name_dob_bidx",
            field(name = "last_name", transform = "trim, casefold"),
            field = "birth_date",
        )
    )]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        #[encrypted(blind_index(name = "email_bidx", normalize = "email", unique))]
        pub email: EncryptedString<ctx::Email>,
        #[sea_orm(unique)]
        pub email_bidx: Vec<u8>,
        #[encrypted(blind_index(name = "phone_last4", transform = "digits, last(4)", bits = 16))]
        pub phone: Option<EncryptedString<ctx::Phone>>,
        pub phone_last4: Option<Vec<u8>>,
        pub last_name: EncryptedString<ctx::LastName>,
        pub birth_date: Encrypted<NaiveDate, ctx::BirthDate>,
        pub name_dob_bidx: Vec<u8>,
        #[encrypted(blind_index(
            name = "mrn_bidx",
            transform = "trim",
            transform_fn = "normalize_mrn"
        ))]
        pub mrn: EncryptedString<MrnContext>,
        pub mrn_bidx: Vec<u8>,
        /// Plaintext, not indexed by us.
        pub active: bool,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}
}

#[allow(dead_code)]
async fn uses(db: &DatabaseConnection) -> Result<(), Box<dyn std::error::Error>> {
    let dob = NaiveDate::from_ymd_opt(1815, 12, 10).ok_or("date")?;
    let one: Option<patient::Model> =
        patient::Entity::find_one_by_email_bidx(db, "ada@example.org").await?;
    let all: Vec<patient::Model> = patient::Entity::find_all_by_phone_last4(db, "0199").await?;
    let by_owned: Vec<patient::Model> =
        patient::Entity::find_all_by_email_bidx(db, String::from("ada@example.org")).await?;
    let compound: Vec<patient::Model> =
        patient::Entity::find_all_by_name_dob_bidx(db, "Lovelace", dob).await?;
    let custom: Option<patient::Model> =
        patient::Entity::find_one_by_mrn_bidx(db, "MRN-0042").await?;
    let select: Select<patient::Entity> = patient::Entity::find_by_phone_last4("0199")?;
    let condition: Condition = patient::Entity::name_dob_bidx_condition(" LOVELACE ", dob)?;
    let filtered: Vec<patient::Model> = select.filter(condition).all(db).await?;
    if let Some(row) = one {
        let matched: bool = row.matches_email_bidx("ADA@example.org")?;
        let matched_compound: bool = row.matches_name_dob_bidx("lovelace", dob)?;
        let _ = (matched, matched_compound);
    }
    let _ = (all, by_owned, compound, custom, filtered);

    let mut row = patient::ActiveModel {
        email: Set(EncryptedString::new("ada@example.org".into())?),
        last_name: Set(EncryptedString::new("Lovelace".into())?),
        birth_date: Set(Encrypted::new(dob)?),
        mrn: Set(EncryptedString::new("MRN-0042".into())?),
        phone: Set(None),
        active: Set(true),
        ..Default::default()
    };
    row.fill_blind_indexes()?;
    let row: patient::ActiveModel = row.with_blind_indexes()?;
    if let Err(err) = row.insert(db).await {
        let _: Option<encrypted_columns::Error> = patient::Entity::unique_violation(&err);
    }
    Ok(())
}

fn main() {
    // The generated marker binds the envelope to patients.email; the user's own is kept.
    assert_eq!(patient::ctx::Email::TABLE, "patients");
    assert_eq!(patient::ctx::LastName::COLUMN, "last_name");
    assert_eq!(patient::ctx::BirthDate::COLUMN, "birth_date");
    assert_eq!(patient::MrnContext::COLUMN, "mrn");

    let email: &'static BlindIndex = patient::Entity::email_bidx_index();
    assert_eq!((email.table(), email.name()), ("patients", "email_bidx"));
    assert!(email.is_unique() && email.bit_len() == 256);
    let phone = patient::Entity::phone_last4_index();
    assert!(!phone.is_unique() && phone.bit_len() == 16);
    assert_eq!(patient::Entity::name_dob_bidx_index().parts().len(), 2);
    assert_eq!(patient::Entity::blind_indexes().len(), 4);

    // The transform_fn runs after the string transforms.
    keyring::install(Keyring::generate());
    let mrn = patient::Entity::mrn_bidx_index().parts()[0].apply(" MRN-0042 ");
    assert_eq!(mrn, "42");
    let sql = |mrn: &str| {
        let select = patient::Entity::find_by_mrn_bidx(mrn).map_err(|e| e.to_string())?;
        Ok::<_, String>(format!("{:?}", select.build(DbBackend::Sqlite)))
    };
    assert_eq!(sql("MRN-0042"), sql(" 42"));
    assert_ne!(sql("MRN-0042"), sql("43"));
}
