//! The key-store table as a sea-orm-migration step (feature `migration`).

use sea_orm::DbErr;
use sea_orm::sea_query::Table;
use sea_orm_migration::{MigrationName, MigrationTrait, SchemaManager};

use super::schema::a;
use super::schema::create_table_statement;
use super::store::DEFAULT_TABLE;

/// Creates the key-store table: add it to your `Migrator`'s list (or call its `up` from a
/// migration of your own, as the example clinic does).
///
/// ```no_run
/// use encrypted_columns::keystore::migration::CreateKeyStore;
/// use sea_orm_migration::prelude::*;
///
/// pub struct Migrator;
///
/// #[sea_orm_migration::async_trait::async_trait]
/// impl MigratorTrait for Migrator {
///     fn migrations() -> Vec<Box<dyn MigrationTrait>> {
///         vec![Box::new(CreateKeyStore::default())]
///     }
/// }
/// ```
#[derive(Debug, Clone)]
pub struct CreateKeyStore {
    table: String,
}

impl Default for CreateKeyStore {
    fn default() -> Self {
        CreateKeyStore {
            table: DEFAULT_TABLE.to_owned(),
        }
    }
}

impl CreateKeyStore {
    /// The migration for a table named `table` instead of the default.
    pub fn with_table(table: impl Into<String>) -> Self {
        CreateKeyStore {
            table: table.into(),
        }
    }
}

impl MigrationName for CreateKeyStore {
    fn name(&self) -> &str {
        "m20261129_000000_encrypted_columns_create_key_store"
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for CreateKeyStore {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(create_table_statement(&self.table))
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(a(&self.table)).if_exists().to_owned())
            .await
    }
}
