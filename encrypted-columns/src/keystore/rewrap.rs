//! KEK rotation: moving each wrapped key of a scope from one KEK to another. Only the small
//! wrapped keys change; no column value or blind index is touched, because the keys
//! themselves stay the same.

use std::ops::ControlFlow;

use sea_orm::ConnectionTrait;
use sea_orm::sea_query::{Expr, ExprTrait, Query};

use super::error::KeyStoreError;
use super::row::{Row, StoredKey};
use super::schema::a;
use super::store::KeyStore;
use crate::kek::KeyEncryptionKey;
use crate::keyring::{KeyId, KeyPurpose, check_value};

/// Where a [`KeyStore::rewrap`] run is, passed to its progress callback after each key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RewrapProgress {
    /// Keys of the scope under the source or destination KEK.
    pub total: usize,
    /// Keys rewrapped by this run so far.
    pub rewrapped: usize,
    /// Keys found already under the destination KEK (an earlier, interrupted run).
    pub already_done: usize,
    /// The key just handled.
    pub last: (KeyPurpose, KeyId),
}

/// What a [`KeyStore::rewrap`] run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RewrapReport {
    /// Keys this run moved to the destination KEK.
    pub rewrapped: Vec<(KeyPurpose, KeyId)>,
    /// Keys already under the destination KEK.
    pub already_done: Vec<(KeyPurpose, KeyId)>,
    /// Keys under neither KEK (a third KEK, or environment keys): reported, not touched.
    pub untouched: Vec<StoredKey>,
    /// Keys another process changed while this run worked on them: re-read, not overwritten.
    pub changed_concurrently: Vec<(KeyPurpose, KeyId)>,
    /// The progress callback stopped the run before every key was handled.
    pub stopped: bool,
}

impl RewrapReport {
    /// Whether every key of the source KEK is now under the destination.
    pub fn finished(&self) -> bool {
        !self.stopped && self.changed_concurrently.is_empty()
    }
}

impl KeyStore {
    /// Rewraps every key of the scope wrapped by `from` under `to` with
    /// [`KeyEncryptionKey::rewrap_key`], retired keys included.
    ///
    /// Before writing, the new wrapping is unwrapped with `to` and checked against the stored
    /// check value, so a row is never left holding a wrapping that does not open. Each row is
    /// written with a compare-and-set on its old wrapped bytes: a row another process changed
    /// meanwhile is re-read and reported, not overwritten. Resumable: keys already under `to`
    /// count as done, so a run interrupted (killed, or stopped by `progress` returning
    /// [`ControlFlow::Break`]) finishes when run again. Data and blind indexes are untouched.
    pub async fn rewrap<C: ConnectionTrait>(
        &self,
        db: &C,
        from: &dyn KeyEncryptionKey,
        to: &dyn KeyEncryptionKey,
        mut progress: impl FnMut(&RewrapProgress) -> ControlFlow<()>,
    ) -> Result<RewrapReport, KeyStoreError> {
        let rows = self.read_all(db).await?;
        let mut report = RewrapReport::default();
        let mut work: Vec<Row> = Vec::new();
        for row in rows {
            let key = (row.meta.purpose, row.meta.key_id);
            if row.under(to.provider(), to.kek_id()) {
                report.already_done.push(key);
            } else if row.under(from.provider(), from.kek_id()) {
                work.push(row);
            } else {
                report.untouched.push(row.meta);
            }
        }
        let total = work.len() + report.already_done.len();
        for row in work {
            let (purpose, id) = (row.meta.purpose, row.meta.key_id);
            let Some(old) = row.wrapped_key.as_ref() else {
                continue;
            };
            let ctx = self.context(purpose, id);
            let kek_err = |source| KeyStoreError::KeyKek {
                scope: self.scope().to_owned(),
                purpose,
                key_id: id.0,
                source,
            };
            let new = from.rewrap_key(old, &ctx, to).await.map_err(kek_err)?;
            let key = to.unwrap_key(&new, &ctx).await.map_err(kek_err)?;
            if check_value(purpose, id, &key) != row.meta.check_value {
                return Err(KeyStoreError::CheckValueMismatch {
                    scope: self.scope().to_owned(),
                    purpose,
                    key_id: id.0,
                });
            }
            drop(key);
            let update = Query::update()
                .table(self.t())
                .value(a("provider"), to.provider())
                .value(a("kek_id"), to.kek_id())
                .value(a("wrapped_key"), new.as_bytes().to_vec())
                .value(a("updated_at"), Expr::current_timestamp())
                .and_where(Expr::col(a("scope")).eq(self.scope()))
                .and_where(Expr::col(a("purpose")).eq(purpose.as_str()))
                .and_where(Expr::col(a("key_id")).eq(i64::from(id.0)))
                .and_where(Expr::col(a("provider")).eq(from.provider()))
                .and_where(Expr::col(a("kek_id")).eq(from.kek_id()))
                .and_where(Expr::col(a("wrapped_key")).eq(old.as_bytes().to_vec()))
                .to_owned();
            let written = db.execute(&update).await?.rows_affected();
            if written == 1 {
                report.rewrapped.push((purpose, id));
            } else {
                // Someone else changed the row: another rewrap that got there first is done
                // work; anything else is left for the operator.
                match self.read_one(db, purpose, id, false).await? {
                    Some(now) if now.under(to.provider(), to.kek_id()) => {
                        report.already_done.push((purpose, id));
                    }
                    _ => report.changed_concurrently.push((purpose, id)),
                }
            }
            let step = RewrapProgress {
                total,
                rewrapped: report.rewrapped.len(),
                already_done: report.already_done.len(),
                last: (purpose, id),
            };
            if progress(&step).is_break() {
                report.stopped = report.rewrapped.len() + report.already_done.len() < total;
                break;
            }
        }
        Ok(report)
    }
}
