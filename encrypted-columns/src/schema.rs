//! Column types for envelope and blind-index columns, per backend.
//!
//! `Encrypted<T, C>` declares `ColumnType::Blob`: `bytea` on PostgreSQL, `blob` on SQLite, and
//! `blob` on MySQL/MariaDB — which holds at most 65,535 bytes. On MySQL a longer envelope is
//! rejected by strict mode (or truncated without it, and then fails to open with a typed
//! error: never wrong plaintext). Columns that may hold more (transcripts, large JSON) should
//! be declared with [`envelope_column_type`] in migrations.
//!
//! [`unique_index`] builds the UNIQUE index of a unique blind index: table-wide, or per tenant
//! (composite over its scope columns) for an index declared with a scope.

use sea_orm::DbBackend;
use sea_orm::sea_query::{Alias, ColumnType, Index, IndexCreateStatement};

use crate::blind_index::BlindIndex;
use crate::envelope::OVERHEAD;

/// Largest envelope a MySQL `blob` holds.
pub const MYSQL_BLOB_MAX: usize = 65_535;
/// Largest envelope a MySQL `mediumblob` holds.
pub const MYSQL_MEDIUMBLOB_MAX: usize = 16_777_215;

/// The column type that holds envelopes of plaintexts up to `max_plaintext_len` bytes.
///
/// ```
/// use encrypted_columns::schema::envelope_column_type;
/// use sea_orm::{DbBackend, sea_query::ColumnType};
/// assert_eq!(envelope_column_type(DbBackend::Postgres, 10_000_000), ColumnType::Blob);
/// assert_eq!(envelope_column_type(DbBackend::MySql, 1_000), ColumnType::Blob);
/// assert_eq!(
///     envelope_column_type(DbBackend::MySql, 100_000),
///     ColumnType::custom("mediumblob")
/// );
/// ```
pub fn envelope_column_type(backend: DbBackend, max_plaintext_len: usize) -> ColumnType {
    let envelope_len = max_plaintext_len.saturating_add(OVERHEAD);
    match backend {
        DbBackend::MySql if envelope_len > MYSQL_MEDIUMBLOB_MAX => {
            ColumnType::custom(Alias::new("longblob"))
        }
        DbBackend::MySql if envelope_len > MYSQL_BLOB_MAX => {
            ColumnType::custom(Alias::new("mediumblob"))
        }
        _ => ColumnType::Blob,
    }
}

/// The column type of a blind-index companion column: fixed-size binary of
/// [`BlindIndex::value_len`] bytes (`binary(n)` on MySQL, where a BLOB could not carry a
/// UNIQUE index; `bytea` on PostgreSQL; `blob` on SQLite).
///
/// ```
/// use encrypted_columns::blind_index::{BlindIndex, Pipeline};
/// use encrypted_columns::schema::blind_index_column_type;
/// use sea_orm::sea_query::ColumnType;
///
/// let email = BlindIndex::new("patients", "email_bidx").field(Pipeline::identity());
/// assert_eq!(blind_index_column_type(&email), ColumnType::Binary(33));
/// assert_eq!(blind_index_column_type(&email.bits(16)), ColumnType::Binary(3));
/// ```
pub fn blind_index_column_type(index: &BlindIndex) -> ColumnType {
    // value_len is at most 33.
    ColumnType::Binary(index.value_len() as u32)
}

/// The name the helpers give a blind-index column's index: `{table}_{column}`. It carries the
/// column name, so [`unique_violation`](crate::blind_index::unique_violation) (and the
/// derived `Entity::unique_violation`) can tell which index refused a row.
pub fn blind_index_name(table: &str, column: &str) -> String {
    format!("{table}_{column}")
}

/// The UNIQUE index behind unique blind index `index`, stored in `column` of physical table
/// `table`, or `None` if the index is not unique. It is named [`blind_index_name`]; it spans
/// `column` alone, or, for an index with a [`scope`](BlindIndex::scope), the scope columns
/// then `column`, so a value is unique within each tenant rather than across the table.
///
/// For an entity created with SeaORM's `Schema`, run these after the table (the derive
/// generates `Entity::scoped_unique_indexes()` for its scoped indexes); a table-wide unique
/// index can equally be `#[sea_orm(unique)]` on the column.
///
/// ```
/// use encrypted_columns::blind_index::{BlindIndex, Pipeline};
/// use encrypted_columns::schema::unique_index;
/// use sea_orm::sea_query::PostgresQueryBuilder;
///
/// let email = BlindIndex::new("accounts", "email_bidx")
///     .field(Pipeline::identity())
///     .unique()
///     .scoped_by("tenant_id");
/// let sql = unique_index("accounts", "email_bidx", &email).unwrap().to_string(PostgresQueryBuilder);
/// assert_eq!(
///     sql,
///     r#"CREATE UNIQUE INDEX "accounts_email_bidx" ON "accounts" ("tenant_id", "email_bidx")"#
/// );
/// assert!(unique_index("accounts", "phone_bidx", &BlindIndex::new("accounts", "phone_bidx")).is_none());
/// ```
pub fn unique_index(table: &str, column: &str, index: &BlindIndex) -> Option<IndexCreateStatement> {
    if !index.is_unique() {
        return None;
    }
    let mut create = Index::create();
    create
        .name(blind_index_name(table, column))
        .table(Alias::new(table))
        .unique();
    for scope in index.scope() {
        create.col(Alias::new(*scope));
    }
    create.col(Alias::new(column));
    Some(create.to_owned())
}
