//! KEK rotation for subject keys: every row one KEK wraps is re-wrapped under another, page by
//! page and resumable. The keys themselves do not change, so no sealed value, blind index or
//! cached key does either.

use std::collections::BTreeMap;
use std::ops::ControlFlow;

use sea_orm::ConnectionTrait;
use sea_orm::sea_query::{Alias, Expr, ExprTrait, Order};

use super::SubjectKeys;
use super::error::SubjectKeyError;
use super::open::StoredKey;
use super::table::{CHECK_VALUE, ID, KEK_ID, PROVIDER, WRAPPED_KEY};
use crate::kek::{KeyEncryptionKey, WrappedKey};
use crate::keyring::{KeyPurpose, check_value};

/// Rows read per page.
const PAGE: u64 = 500;

/// Where a [`SubjectKeys::rewrap`] run is, after each row it moved.
#[derive(Debug, Clone)]
pub struct SubjectRewrapProgress {
    /// The row just re-wrapped.
    pub row: i64,
    /// Rows re-wrapped so far in this run.
    pub rewrapped: usize,
    /// Rows found already under the destination KEK so far.
    pub already_done: usize,
}

/// What a [`SubjectKeys::rewrap`] run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubjectRewrapReport {
    /// Rows moved from the source KEK to the destination.
    pub rewrapped: usize,
    /// Rows already under the destination (moved by an earlier, interrupted run).
    pub already_done: usize,
    /// Rows under some third KEK, by (provider, KEK id): left as they are.
    pub untouched: BTreeMap<(String, String), usize>,
    /// Rows another process changed between our read and our write: not overwritten; run
    /// again to move them.
    pub changed_concurrently: Vec<i64>,
    /// The progress callback asked to stop; run again to finish.
    pub stopped: bool,
}

impl SubjectRewrapReport {
    /// Every row of the source KEK now lives under the destination.
    pub fn finished(&self) -> bool {
        !self.stopped && self.changed_concurrently.is_empty()
    }
}

impl SubjectKeys {
    /// Re-wraps every subject key that `from` wraps under `to` (KEK rotation, or a move to
    /// another provider), leaving the keys, and so all data, unchanged.
    ///
    /// For each row: [`rewrap_key`](KeyEncryptionKey::rewrap_key) (inside the KMS where the
    /// provider can), then the new wrapping is unwrapped with `to` and checked against the
    /// row's check value before anything is written (a row without one gets it now); the
    /// write is a compare-and-set on the old wrapped bytes, so a row another process changed
    /// meanwhile is reported, never overwritten. Re-running after an interruption finishes
    /// the job: rows already under `to` count as done. Rows of a third KEK are left alone and
    /// counted. `progress` is called after every moved row; returning `ControlFlow::Break`
    /// stops the run cleanly.
    ///
    /// Afterwards configure `to` (with [`with_kek`](Self::with_kek)) in every process: rows
    /// under `to` do not open with `from`.
    pub async fn rewrap<C: ConnectionTrait>(
        &self,
        db: &C,
        from: &dyn KeyEncryptionKey,
        to: &dyn KeyEncryptionKey,
        mut progress: impl FnMut(&SubjectRewrapProgress) -> ControlFlow<()>,
    ) -> Result<SubjectRewrapReport, SubjectKeyError> {
        let mut report = SubjectRewrapReport::default();
        let mut after = i64::MIN;
        loop {
            let mut select = self.select();
            select
                .and_where(Expr::col(Alias::new(ID)).gt(after))
                .order_by(Alias::new(ID), Order::Asc)
                .limit(PAGE);
            let rows = db.query_all(&select).await.map_err(self.db_err())?;
            if rows.is_empty() {
                return Ok(report);
            }
            for result in &rows {
                let stored = self.stored(result)?;
                after = stored.row;
                if wrapped_by(&stored, to) {
                    report.already_done += 1;
                    continue;
                }
                if !wrapped_by(&stored, from) {
                    let kek_id = stored.kek_id.clone().unwrap_or_else(|| "any".into());
                    *report
                        .untouched
                        .entry((stored.provider.clone(), kek_id))
                        .or_default() += 1;
                    continue;
                }
                if self.move_row(db, &stored, from, to).await? {
                    report.rewrapped += 1;
                } else {
                    report.changed_concurrently.push(stored.row);
                    continue;
                }
                let step = SubjectRewrapProgress {
                    row: stored.row,
                    rewrapped: report.rewrapped,
                    already_done: report.already_done,
                };
                if progress(&step).is_break() {
                    report.stopped = true;
                    return Ok(report);
                }
            }
        }
    }

    /// Moves one row; `false` when the compare-and-set found it changed.
    async fn move_row<C: ConnectionTrait>(
        &self,
        db: &C,
        stored: &StoredKey,
        from: &dyn KeyEncryptionKey,
        to: &dyn KeyEncryptionKey,
    ) -> Result<bool, SubjectKeyError> {
        let row = stored.row;
        let key_id = self.ids.key_id(row)?;
        let context = self.wrap_context(key_id);
        let expected = stored.expected_check_value()?;
        let moved = from
            .rewrap_key(
                &WrappedKey::from_bytes(stored.wrapped.as_slice()),
                &context,
                to,
            )
            .await
            .map_err(|source| SubjectKeyError::Kek { row, source })?;
        // Proof before writing: the destination opens the new wrapping, and it is this row's
        // key (its check value), not some other key a provider might have returned.
        let key = to
            .unwrap_key(&moved, &context)
            .await
            .map_err(|source| SubjectKeyError::Kek { row, source })?;
        let kcv = check_value(KeyPurpose::Subject, key_id, &key);
        if expected.is_some_and(|expected| expected != kcv) {
            return Err(SubjectKeyError::CheckValueMismatch { row });
        }
        let mut update = sea_orm::sea_query::Query::update();
        update
            .table(Alias::new(self.table()))
            .value(Alias::new(WRAPPED_KEY), moved.as_bytes().to_vec())
            .value(Alias::new(PROVIDER), to.provider())
            .value(Alias::new(KEK_ID), to.kek_id())
            .value(Alias::new(CHECK_VALUE), kcv.as_bytes().to_vec())
            .and_where(Expr::col(Alias::new(ID)).eq(row))
            .and_where(Expr::col(Alias::new(WRAPPED_KEY)).eq(stored.wrapped.clone()))
            .and_where(Expr::col(Alias::new(PROVIDER)).eq(stored.provider.as_str()));
        let updated = db.execute(&update).await.map_err(self.db_err())?;
        Ok(updated.rows_affected() == 1)
    }
}

/// Whether `kek` wraps `stored` (a NULL KEK id, from rows written before KEK ids were kept,
/// matches any KEK of the provider, as reading does).
fn wrapped_by(stored: &StoredKey, kek: &dyn KeyEncryptionKey) -> bool {
    stored.provider == kek.provider()
        && stored.kek_id.as_deref().is_none_or(|id| id == kek.kek_id())
}
