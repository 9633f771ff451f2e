//! The entities under test, one per file, and the DDL that creates them.

pub mod document;
pub mod patient;
pub mod vital;

use sea_orm::{ConnectionTrait, DbErr, Schema};

/// Creates every test table in an empty database.
pub async fn create_tables(conn: &impl ConnectionTrait) -> Result<(), DbErr> {
    let backend = conn.get_database_backend();
    let schema = Schema::new(backend);
    conn.execute(&schema.create_table_from_entity(patient::Entity))
        .await?;
    conn.execute(&schema.create_table_from_entity(vital::Entity))
        .await?;
    conn.execute(&document::create_table(backend)).await?;
    Ok(())
}
