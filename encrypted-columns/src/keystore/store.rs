//! [`KeyStore`]: which table, which scope. The operations live in the sibling modules, each an
//! `impl KeyStore` block.

use sea_orm::ConnectionTrait;
use sea_orm::sea_query::Alias;

use super::error::KeyStoreError;
use super::schema::create_table_statement;
use crate::kek::WrapContext;
use crate::keyring::{KeyId, KeyPurpose};

/// The key store table's default name.
pub const DEFAULT_TABLE: &str = "encrypted_columns_keys";

/// The `provider` of rows registered from environment variables (no wrapped key).
pub const ENV_PROVIDER: &str = "env";

/// One scope (an application or tenant) of a key-store table.
///
/// The scope is also the subject of every [`WrapContext`], so a wrapped key copied into another
/// scope's rows does not unwrap.
///
/// ```
/// use encrypted_columns::keystore::KeyStore;
///
/// let store = KeyStore::new("clinic");
/// assert_eq!((store.scope(), store.table()), ("clinic", "encrypted_columns_keys"));
/// let tenant = KeyStore::new("tenant-7").with_table("app_keys");
/// assert_eq!(tenant.table(), "app_keys");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyStore {
    scope: String,
    table: String,
}

impl KeyStore {
    /// The keys of `scope` in the [`DEFAULT_TABLE`].
    pub fn new(scope: impl Into<String>) -> Self {
        KeyStore {
            scope: scope.into(),
            table: DEFAULT_TABLE.to_owned(),
        }
    }

    /// The same scope in table `table` (created with [`create_table_statement`]`(table)`).
    pub fn with_table(mut self, table: impl Into<String>) -> Self {
        self.table = table.into();
        self
    }

    /// The scope.
    pub fn scope(&self) -> &str {
        &self.scope
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Creates the table if it does not exist: for applications without sea-orm-migration
    /// (with it, add `keystore::migration::CreateKeyStore`, feature `migration`, to the
    /// migrator).
    pub async fn create_table<C: ConnectionTrait>(&self, db: &C) -> Result<(), KeyStoreError> {
        db.execute(&create_table_statement(&self.table)).await?;
        Ok(())
    }

    pub(super) fn t(&self) -> Alias {
        Alias::new(&self.table)
    }

    /// What a stored key's wrapping is bound to: its id, purpose and this scope.
    pub(super) fn context(&self, purpose: KeyPurpose, id: KeyId) -> WrapContext {
        WrapContext::new(id.0, purpose.as_str(), self.scope.clone())
    }
}
