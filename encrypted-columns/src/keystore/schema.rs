//! The key-store table, as a sea-query statement that works on SQLite, PostgreSQL and
//! MariaDB/MySQL.

use sea_orm::sea_query::{Alias, ColumnDef, Expr, Index, Table, TableCreateStatement};

/// An identifier (table or column name) for sea-query.
pub(super) fn a(name: &str) -> Alias {
    Alias::new(name)
}

/// `CREATE TABLE IF NOT EXISTS <table>`: one row per (scope, purpose, key id).
///
/// Text columns are `varchar`, not `text`: MariaDB cannot index `text` without a prefix length,
/// and `scope` is part of the primary key. `check_value` is a `blob`, not `binary(16)`, so a
/// truncated value is seen as truncated instead of being zero-padded by MariaDB.
///
/// ```
/// use encrypted_columns::keystore::create_table_statement;
/// use sea_orm::sea_query::PostgresQueryBuilder;
///
/// let sql = create_table_statement("encrypted_columns_keys").to_string(PostgresQueryBuilder);
/// assert!(sql.contains("PRIMARY KEY (\"scope\", \"purpose\", \"key_id\")"), "{sql}");
/// ```
pub fn create_table_statement(table: &str) -> TableCreateStatement {
    Table::create()
        .table(a(table))
        .if_not_exists()
        .col(
            ColumnDef::new(a("scope"))
                .string_len(190)
                .not_null()
                .default(""),
        )
        .col(ColumnDef::new(a("purpose")).string_len(16).not_null())
        .col(ColumnDef::new(a("key_id")).big_integer().not_null())
        .col(ColumnDef::new(a("state")).string_len(16).not_null())
        .col(ColumnDef::new(a("provider")).string_len(64).not_null())
        .col(ColumnDef::new(a("kek_id")).string_len(500).null())
        .col(ColumnDef::new(a("wrapped_key")).blob().null())
        .col(ColumnDef::new(a("check_value")).blob().not_null())
        .col(
            ColumnDef::new(a("created_at"))
                .timestamp()
                .not_null()
                .default(Expr::current_timestamp()),
        )
        .col(
            ColumnDef::new(a("updated_at"))
                .timestamp()
                .not_null()
                .default(Expr::current_timestamp()),
        )
        .primary_key(
            Index::create()
                .col(a("scope"))
                .col(a("purpose"))
                .col(a("key_id")),
        )
        .to_owned()
}
