//! `bi_wards`: SeaORM 2's `#[sea_orm::model]` format (relations as fields, a generated
//! `ModelEx`), the parent of [`nurse`](super::nurse).

use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "bi_wards")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i32,
    pub name: String,
    #[sea_orm(has_many)]
    pub nurses: HasMany<super::nurse::Entity>,
}

impl ActiveModelBehavior for ActiveModel {}
