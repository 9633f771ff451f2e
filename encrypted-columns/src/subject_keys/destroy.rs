//! Destroying a subject key (crypto-shredding), and proving it is gone.

use sea_orm::sea_query::{Alias, Expr, ExprTrait, Query};
use sea_orm::{ConnectionTrait, TransactionSession, TransactionTrait};

use super::SubjectKeys;
use super::error::SubjectKeyError;
use super::open::row_id;
use super::table::{CHECK_VALUE, ID, WRAPPED_KEY};
use crate::keyring::{CheckValue, KeyId, KeyPurpose, check_value};

/// What [`SubjectKeys::destroy`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestroyReport {
    /// The row.
    pub row: i64,
    /// Its envelope key id: values sealed with it no longer open here.
    pub key_id: KeyId,
    /// Rows deleted: 1, or 0 when the row was already gone (a re-run after an interrupted
    /// destroy, or a subject erased before).
    pub deleted: u64,
    /// The provider and KEK that wrapped the key (`None` when the row was already gone).
    /// Backups taken before the destroy hold the wrapped key, and open with this KEK for as
    /// long as it exists.
    pub wrapped_by: Option<(String, Option<String>)>,
    /// The destroyed key's check value, with which the copy check ran (`None` when the row
    /// was already gone, or had none and its key could not be unwrapped to compute it; the
    /// copy check then compared wrapped bytes only).
    pub check_value: Option<CheckValue>,
}

impl SubjectKeys {
    /// Destroys subject key `row`: in a transaction (a savepoint when `db` is one), locks the
    /// row, deletes it, then verifies before committing that no row with that id remains and
    /// that no other row holds a copy of the key (the same wrapped bytes or check value);
    /// either failure rolls back ([`SubjectKeyError::NotDestroyed`],
    /// [`SubjectKeyError::CopiesRemain`] with the copies' ids). Evicts the cached key.
    /// Re-runnable: a row already gone is reported with `deleted: 0`.
    pub async fn destroy<C: TransactionTrait>(
        &self,
        db: &C,
        row: i64,
    ) -> Result<DestroyReport, SubjectKeyError> {
        let key_id = self.ids.key_id(row)?;
        // Evicted first: from now on this process never serves the key, whatever happens.
        self.cache.evict(row);
        let txn = db.begin().await.map_err(self.db_err())?;
        let Some(stored) = self.read_rows(&txn, &[row], true).await?.pop() else {
            txn.commit().await.map_err(self.db_err())?;
            return Ok(DestroyReport {
                row,
                key_id,
                deleted: 0,
                wrapped_by: None,
                check_value: None,
            });
        };
        let kcv = match stored.check_value.as_deref() {
            Some(bytes) => {
                Some(
                    CheckValue::from_bytes(bytes).ok_or_else(|| SubjectKeyError::Damaged {
                        row,
                        problem: format!("its check value is {} bytes, not 16", bytes.len()),
                    })?,
                )
            }
            // No stored check value: compute it if the key still unwraps, so copies written
            // with one are still found; if not, wrapped bytes are compared alone.
            None => self
                .unwrap_stored(&stored)
                .await
                .ok()
                .map(|(id, key)| check_value(KeyPurpose::Subject, id, &key)),
        };
        let table = Alias::new(&self.table);
        let deleted = txn
            .execute(
                &Query::delete()
                    .from_table(table.clone())
                    .and_where(Expr::col(Alias::new(ID)).eq(row))
                    .to_owned(),
            )
            .await
            .map_err(self.db_err())?
            .rows_affected();
        let remaining = txn
            .query_all(
                &Query::select()
                    .column(Alias::new(ID))
                    .from(table.clone())
                    .and_where(Expr::col(Alias::new(ID)).eq(row))
                    .to_owned(),
            )
            .await
            .map_err(self.db_err())?
            .len() as u64;
        if deleted != 1 || remaining != 0 {
            return Err(SubjectKeyError::NotDestroyed {
                row,
                deleted,
                remaining,
            });
        }
        let mut copy = Expr::col(Alias::new(WRAPPED_KEY)).eq(stored.wrapped.clone());
        if let Some(kcv) = kcv {
            copy = copy.or(Expr::col(Alias::new(CHECK_VALUE)).eq(kcv.as_bytes().to_vec()));
        }
        let mut copies = Vec::new();
        for result in txn
            .query_all(
                &Query::select()
                    .column(Alias::new(ID))
                    .from(table)
                    .and_where(Expr::col(Alias::new(ID)).ne(row))
                    .and_where(copy)
                    .order_by(Alias::new(ID), sea_orm::sea_query::Order::Asc)
                    .to_owned(),
            )
            .await
            .map_err(self.db_err())?
        {
            copies.push(row_id(&result, &self.table).map_err(self.db_err())?);
        }
        if !copies.is_empty() {
            return Err(SubjectKeyError::CopiesRemain { row, copies });
        }
        txn.commit().await.map_err(self.db_err())?;
        // A reader that cached the key while the transaction ran is dropped too.
        self.cache.evict(row);
        Ok(DestroyReport {
            row,
            key_id,
            deleted,
            wrapped_by: Some((stored.provider, stored.kek_id)),
            check_value: kcv,
        })
    }
}
