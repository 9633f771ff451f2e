//! The subject-key table: its columns, the statement that creates it, and the
//! `sea-orm-migration` steps (feature `migration`) that create it or add the key-store
//! columns to an existing table of wrapped keys.
//!
//! | column | type | meaning |
//! |---|---|---|
//! | `id` | integer, autoincrement primary key | the row the application references (e.g. `patients.key_id`) |
//! | `wrapped_key` | blob | the subject key wrapped by its provider |
//! | `provider` | varchar(64), default `'keyring'` | [`KeyEncryptionKey::provider`](crate::kek::KeyEncryptionKey::provider) of the wrapping KEK |
//! | `kek_id` | varchar(255), null | [`KeyEncryptionKey::kek_id`](crate::kek::KeyEncryptionKey::kek_id); NULL accepts any KEK of the provider |
//! | `check_value` | blob, null | the key's check value (purpose `subject`, its envelope key id; FORMAT.md §10); NULL on rows written before it existed |
//! | `created_at` | timestamp with time zone | when the key was created |

use sea_orm::sea_query::{Alias, ColumnDef, Expr, Table, TableCreateStatement};

/// Column `id`.
pub const ID: &str = "id";
/// Column `wrapped_key`.
pub const WRAPPED_KEY: &str = "wrapped_key";
/// Column `provider`.
pub const PROVIDER: &str = "provider";
/// Column `kek_id`.
pub const KEK_ID: &str = "kek_id";
/// Column `check_value`.
pub const CHECK_VALUE: &str = "check_value";
/// Column `created_at`.
pub const CREATED_AT: &str = "created_at";
/// The provider of rows written before the table had a `provider` column: the application
/// keyring sealed them as envelopes ([`KeyringKek`](crate::kek::KeyringKek)).
pub const LEGACY_PROVIDER: &str = "keyring";

fn a(name: &str) -> Alias {
    Alias::new(name)
}

fn provider_column() -> ColumnDef {
    // varchar, not text: MySQL refuses a literal DEFAULT on TEXT columns.
    ColumnDef::new(a(PROVIDER))
        .string_len(64)
        .not_null()
        .default(LEGACY_PROVIDER)
        .to_owned()
}

fn kek_id_column() -> ColumnDef {
    ColumnDef::new(a(KEK_ID)).string_len(255).null().to_owned()
}

fn check_value_column() -> ColumnDef {
    ColumnDef::new(a(CHECK_VALUE)).blob().null().to_owned()
}

/// `CREATE TABLE IF NOT EXISTS` for a subject-key table named `table`, on any backend.
///
/// ```
/// use encrypted_columns::subject_keys::table::create_table_statement;
/// use sea_orm::sea_query::SqliteQueryBuilder;
///
/// let sql = create_table_statement("tenant_keys").to_string(SqliteQueryBuilder);
/// assert!(sql.contains("\"tenant_keys\"") && sql.contains("\"check_value\""));
/// ```
pub fn create_table_statement(table: &str) -> TableCreateStatement {
    Table::create()
        .table(a(table))
        .if_not_exists()
        .col(
            ColumnDef::new(a(ID))
                .integer()
                .not_null()
                .auto_increment()
                .primary_key(),
        )
        .col(ColumnDef::new(a(WRAPPED_KEY)).blob().not_null())
        .col(provider_column())
        .col(kek_id_column())
        .col(check_value_column())
        .col(
            ColumnDef::new(a(CREATED_AT))
                .timestamp_with_time_zone()
                .not_null()
                .default(Expr::current_timestamp()),
        )
        .to_owned()
}

/// Migration steps for `sea-orm-migration`.
#[cfg(feature = "migration")]
pub mod migration {
    use sea_orm::sea_query::Table;
    use sea_orm::{ConnectionTrait, DbBackend, DbErr, Statement};
    use sea_orm_migration::SchemaManager;

    use super::{CHECK_VALUE, KEK_ID, PROVIDER, a};

    /// Creates the subject-key table `table` (see the [module docs](super)).
    pub async fn create_table(manager: &SchemaManager<'_>, table: &str) -> Result<(), DbErr> {
        manager
            .create_table(super::create_table_statement(table))
            .await
    }

    /// Adds `provider` (default `'keyring'`), `kek_id` and `check_value` to an existing table
    /// of wrapped keys that has `id`, `wrapped_key` and `created_at` (such as a table whose
    /// rows the application keyring sealed as envelopes). Existing rows become provider
    /// `keyring`, any KEK id, no check value yet. Columns already present are left alone, so
    /// the step can be re-run after an interruption (SQLite adds one column per statement).
    pub async fn add_key_columns(manager: &SchemaManager<'_>, table: &str) -> Result<(), DbErr> {
        for (name, column) in [
            (PROVIDER, super::provider_column()),
            (KEK_ID, super::kek_id_column()),
            (CHECK_VALUE, super::check_value_column()),
        ] {
            if column_exists(manager, table, name).await? {
                continue;
            }
            manager
                .alter_table(Table::alter().table(a(table)).add_column(column).to_owned())
                .await?;
        }
        Ok(())
    }

    /// Undoes [`add_key_columns`].
    pub async fn drop_key_columns(manager: &SchemaManager<'_>, table: &str) -> Result<(), DbErr> {
        for name in [CHECK_VALUE, KEK_ID, PROVIDER] {
            if !column_exists(manager, table, name).await? {
                continue;
            }
            manager
                .alter_table(
                    Table::alter()
                        .table(a(table))
                        .drop_column(a(name))
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    /// Whether `table` has `column`, from the catalog (sea-orm-migration's `has_column` needs
    /// its sqlx features, which a migration crate may not enable; a probing SELECT would abort
    /// PostgreSQL's migration transaction when the column is missing).
    async fn column_exists(
        manager: &SchemaManager<'_>,
        table: &str,
        column: &str,
    ) -> Result<bool, DbErr> {
        let backend = manager.get_database_backend();
        let sql = match backend {
            DbBackend::Sqlite => "SELECT 1 AS found FROM pragma_table_info(?) WHERE name = ?",
            DbBackend::Postgres => {
                "SELECT 1 AS found FROM information_schema.columns WHERE table_schema = \
                 current_schema() AND table_name = $1 AND column_name = $2"
            }
            _ => {
                "SELECT 1 AS found FROM information_schema.columns WHERE table_schema = \
                 DATABASE() AND table_name = ? AND column_name = ?"
            }
        };
        let found = manager
            .get_connection()
            .query_one_raw(Statement::from_sql_and_values(
                backend,
                sql,
                [table.into(), column.into()],
            ))
            .await?;
        Ok(found.is_some())
    }
}
