//! `documents`: a large encrypted JSON column, declared with
//! `encrypted_columns::schema::envelope_column_type` (MySQL `blob` stops at 64 KiB).

use encrypted_columns::schema::envelope_column_type;
use encrypted_columns::{EncryptedJson, column_context};
use sea_orm::DbBackend;
use sea_orm::entity::prelude::*;
use sea_orm::sea_query::{ColumnDef, Table, TableCreateStatement};

column_context!(pub DocumentBody, table = "documents", column = "body");

/// Largest plaintext the `body` column is declared for.
pub const BODY_MAX_PLAINTEXT: usize = 200_000;

/// A transcript: many segments of text.
pub type Transcript = Vec<String>;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "documents")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: i32,
    pub body: EncryptedJson<Transcript, DocumentBody>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

/// The table as a migration would declare it: `body` sized for `BODY_MAX_PLAINTEXT`, rather
/// than the `Blob` the entity's field type implies.
pub fn create_table(backend: DbBackend) -> TableCreateStatement {
    Table::create()
        .table(Entity)
        .col(
            ColumnDef::new(Column::Id)
                .integer()
                .not_null()
                .primary_key(),
        )
        .col(
            ColumnDef::new_with_type(
                Column::Body,
                envelope_column_type(backend, BODY_MAX_PLAINTEXT),
            )
            .not_null(),
        )
        .to_owned()
}
