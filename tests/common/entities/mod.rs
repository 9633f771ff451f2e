//! The entities under test, one per file, and the DDL that creates them.

pub mod account;
pub mod document;
pub mod nurse;
pub mod patient;
pub mod person;
pub mod subscriber;
pub mod tenant_account;
pub mod vital;
pub mod ward;

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
    // Blind-index entities (tests/blind_index.rs). `bi_wards` before `bi_nurses`: the
    // nurses' foreign key names it.
    for statement in [
        schema.create_table_from_entity(subscriber::Entity),
        schema.create_table_from_entity(account::Entity),
        schema.create_table_from_entity(person::Entity),
        schema.create_table_from_entity(ward::Entity),
        schema.create_table_from_entity(nurse::Entity),
    ] {
        conn.execute(&statement).await?;
    }
    for statement in schema.create_index_from_entity(nurse::Entity) {
        conn.execute(&statement).await?;
    }
    // Multi-tenant accounts (tests/tenant_blind_index.rs): the e-mail is unique per tenant,
    // through a composite index that `Schema` does not know about.
    conn.execute(&schema.create_table_from_entity(tenant_account::Entity))
        .await?;
    for statement in tenant_account::Entity::scoped_unique_indexes() {
        conn.execute(&statement).await?;
    }
    Ok(())
}
