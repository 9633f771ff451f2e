//! Verify: every row's envelope opens to exactly its plaintext, and its blind indexes match.

use sea_orm::sea_query::{Expr, ExprTrait, Order, Query};
use sea_orm::{ConnectionTrait, DbErr, TryGetable, Value};
use tracing::{Instrument, info, info_span};

use super::sql::{a, check_columns, pk_of};
use super::state;
use super::{EncryptColumn, Phase, RunOptions};
use crate::blind_index::IndexArg;
use crate::context::ColumnContext;
use crate::keyring::{self, KeyId};
use crate::types::{Encrypted, Plaintext};

/// At most this many ids are listed per kind of problem (counts are always complete).
pub const MAX_LISTED_IDS: usize = 1000;

/// What verify found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Rows checked.
    pub rows: u64,
    /// Rows whose envelope opened to exactly their plaintext.
    pub matching: u64,
    /// Rows with neither plaintext nor envelope (NULL stays NULL).
    pub both_null: u64,
    /// Rows with plaintext but no envelope (not backfilled).
    pub missing: u64,
    /// Rows whose envelope does not open, or opens to something else, or exists without
    /// plaintext.
    pub mismatched: u64,
    /// Rows whose blind-index value differs from its recomputation.
    pub index_mismatched: u64,
    /// Ids of problem rows (missing, mismatched or index-mismatched), up to
    /// [`MAX_LISTED_IDS`].
    pub problem_ids: Vec<i64>,
}

impl VerifyReport {
    /// Whether every row checked out.
    pub fn passed(&self) -> bool {
        self.missing == 0 && self.mismatched == 0 && self.index_mismatched == 0
    }
}

/// Checks every row of `spec.table`. Needs phase `backfilled` (or `verified`, to re-check);
/// moves to `verified` when every row passes, and stays put otherwise.
pub async fn verify<T, C, D>(
    db: &D,
    spec: &EncryptColumn<T, C>,
    options: &RunOptions,
) -> Result<VerifyReport, DbErr>
where
    T: Plaintext + TryGetable + Into<Value> + IndexArg<T>,
    C: ColumnContext,
    D: ConnectionTrait,
{
    let span = info_span!("verify", table = %spec.table, column = %spec.plaintext);
    async move {
        let (table, pk, plain, enc) = (
            &spec.table,
            &spec.primary_key,
            &spec.plaintext,
            &spec.encrypted,
        );
        let keyring = keyring::current()?;
        let mut columns = vec![pk.as_str(), plain.as_str(), enc.as_str()];
        columns.extend(spec.indexes.iter().map(|(c, _)| c.as_str()));
        check_columns(db, table, &columns).await?;
        let current = state::load(db, table, plain)
            .await?
            .ok_or_else(|| state::not_started(table, plain))?;
        if let Some(problem) = current.phase.check_transition(Phase::Verified) {
            return Err(crate::Error::Phase {
                table: table.clone(),
                column: plain.clone(),
                from: current.phase.as_str(),
                to: Phase::Verified.as_str(),
                problem,
            }
            .into());
        }

        let mut report = VerifyReport::default();
        let mut cursor = i64::MIN;
        loop {
            let mut select = Query::select();
            select
                .columns(columns.iter().map(|c| a(c)))
                .from(a(table))
                .and_where(Expr::col(a(pk)).gt(cursor))
                .order_by(a(pk), Order::Asc)
                .limit(Ord::max(options.batch_size, 1));
            let rows = db.query_all(&select).await?;
            if rows.is_empty() {
                break;
            }
            for row in &rows {
                let id = pk_of(row, table, pk)?;
                cursor = id;
                report.rows += 1;
                let value: Option<T> = row.try_get("", plain)?;
                let envelope: Option<Vec<u8>> = row.try_get("", enc)?;
                let mut problem = false;
                match (&value, envelope) {
                    (None, None) => report.both_null += 1,
                    (Some(_), None) => {
                        report.missing += 1;
                        problem = true;
                    }
                    (None, Some(_)) => {
                        report.mismatched += 1;
                        problem = true;
                    }
                    (Some(value), Some(envelope)) => {
                        match Encrypted::<T, C>::from_envelope_with(&keyring, envelope) {
                            Ok(opened) if same_encoding(opened.expose(), value) => {
                                report.matching += 1
                            }
                            _ => {
                                report.mismatched += 1;
                                problem = true;
                            }
                        }
                    }
                }
                for (column, index) in &spec.indexes {
                    let stored: Option<Vec<u8>> = row.try_get("", column)?;
                    let expected = match (&value, &stored) {
                        (Some(v), Some(s)) => {
                            let version = KeyId(u32::from(s.first().copied().unwrap_or(0)));
                            index
                                .compute_version(&keyring, version, &[Some(v.index_input()?)])
                                .ok()
                                .flatten()
                        }
                        _ => None,
                    };
                    let ok = match (&value, &stored) {
                        (None, None) => true,
                        (Some(_), Some(s)) => expected.as_deref() == Some(s.as_slice()),
                        _ => false,
                    };
                    if !ok {
                        report.index_mismatched += 1;
                        problem = true;
                    }
                }
                if problem && report.problem_ids.len() < MAX_LISTED_IDS {
                    report.problem_ids.push(id);
                }
            }
        }
        if report.passed() {
            state::transition(db, table, plain, Phase::Verified, Some(report.rows as i64)).await?;
        }
        info!(
            rows = report.rows,
            passed = report.passed(),
            "verify finished"
        );
        Ok(report)
    }
    .instrument(span)
    .await
}

/// Exact comparison through the stored encoding (no float or collation surprises).
fn same_encoding<T: Plaintext>(a: &T, b: &T) -> bool {
    let (mut x, mut y) = (Vec::new(), Vec::new());
    let equal = a.encode(&mut x).is_ok() && b.encode(&mut y).is_ok() && x == y;
    zeroize::Zeroize::zeroize(&mut x);
    zeroize::Zeroize::zeroize(&mut y);
    equal
}
