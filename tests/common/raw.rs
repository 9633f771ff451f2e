//! Plain SQL on stored bytes, bypassing the encrypted types: what an attacker with database
//! access (or a backup) sees and can change.

use sea_orm::sea_query::{Alias, Expr, ExprTrait, Query};
use sea_orm::{ConnectionTrait, DbErr, Value};

/// The bytes stored in `table.column` for row `id` (`None` for SQL NULL).
pub async fn get_bytes(
    conn: &impl ConnectionTrait,
    table: &str,
    column: &str,
    id: i32,
) -> Result<Option<Vec<u8>>, DbErr> {
    let select = Query::select()
        .column(Alias::new(column))
        .from(Alias::new(table))
        .and_where(Expr::col(Alias::new("id")).eq(id))
        .to_owned();
    let row = conn
        .query_one(&select)
        .await?
        .ok_or_else(|| DbErr::RecordNotFound(format!("{table} row {id}")))?;
    row.try_get_by_index::<Option<Vec<u8>>>(0)
}

/// Like [`get_bytes`], failing on NULL.
pub async fn get_envelope(
    conn: &impl ConnectionTrait,
    table: &str,
    column: &str,
    id: i32,
) -> Result<Vec<u8>, DbErr> {
    get_bytes(conn, table, column, id)
        .await?
        .ok_or_else(|| DbErr::Custom(format!("{table}.{column} of row {id} is NULL")))
}

/// Overwrites `table.column` of row `id` with `bytes` (NULL for `None`).
pub async fn set_bytes(
    conn: &impl ConnectionTrait,
    table: &str,
    column: &str,
    id: i32,
    bytes: Option<Vec<u8>>,
) -> Result<(), DbErr> {
    let update = Query::update()
        .table(Alias::new(table))
        .value(Alias::new(column), Value::Bytes(bytes))
        .and_where(Expr::col(Alias::new("id")).eq(id))
        .to_owned();
    let result = conn.execute(&update).await?;
    if result.rows_affected() == 1 {
        Ok(())
    } else {
        Err(DbErr::RecordNotUpdated)
    }
}

/// Ids of the rows of `table` whose `column` IS NULL, ascending.
pub async fn ids_where_null(
    conn: &impl ConnectionTrait,
    table: &str,
    column: &str,
) -> Result<Vec<i32>, DbErr> {
    let select = Query::select()
        .column(Alias::new("id"))
        .from(Alias::new(table))
        .and_where(Expr::col(Alias::new(column)).is_null())
        .order_by(Alias::new("id"), sea_orm::sea_query::Order::Asc)
        .to_owned();
    conn.query_all(&select)
        .await?
        .iter()
        .map(|row| row.try_get_by_index::<i32>(0))
        .collect()
}

/// Whether `needle` occurs anywhere in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}
