//! What a table-wide migration step works on: the table, its integer primary key, and every
//! plaintext column being encrypted, each with its own plaintext type and column context.
//!
//! The steps move a table's columns together (all or none), and the backfill and repair seal
//! every column of a row in the same pass. So the columns, each generic over its own `T` and
//! `C`, are held behind one small object-safe trait ([`ColumnJob`]) that reads a column's cells
//! from a row, checks them, and seals them.

use std::sync::Arc;

use sea_orm::sea_query::Nullable;
use sea_orm::{DbErr, QueryResult, TryGetable, Value};

use super::EncryptColumn;
use crate::blind_index::{BlindIndex, IndexArg};
use crate::context::ColumnContext;
use crate::envelope::{HEADER_LEN, NONCE_LEN};
use crate::keyring::{KeyId, Keyring};
use crate::types::{Encrypted, Plaintext};

/// Every plaintext column of one table to encrypt, moved through the phases together.
///
/// Build it from [`EncryptColumn`]s of the same table and primary key; a single
/// `&EncryptColumn` converts into a one-column plan wherever a step takes
/// `impl Into<EncryptTable>`.
///
/// ```
/// use encrypted_columns::{column_context, migrate::{EncryptColumn, EncryptTable}};
///
/// column_context!(pub Name, table = "legacy_patients", column = "full_name");
/// column_context!(pub Email, table = "legacy_patients", column = "email");
/// let plan = EncryptTable::new("legacy_patients", "id")
///     .column(EncryptColumn::<String, Name>::new("legacy_patients", "id", "full_name", "full_name_enc"))
///     .column(EncryptColumn::<String, Email>::new("legacy_patients", "id", "email", "email_enc"));
/// assert_eq!(plan.plaintext_columns(), ["full_name", "email"]);
/// ```
#[derive(Clone)]
pub struct EncryptTable {
    pub(crate) table: String,
    pub(crate) primary_key: String,
    pub(crate) columns: Vec<Arc<dyn ColumnJob>>,
    /// Set when a column was added whose table or primary key differs: reported by every
    /// step instead of panicking in a builder.
    pub(crate) mismatch: Option<String>,
}

impl std::fmt::Debug for EncryptTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptTable")
            .field("table", &self.table)
            .field("primary_key", &self.primary_key)
            .field("columns", &self.plaintext_columns())
            .finish()
    }
}

impl EncryptTable {
    /// An empty plan for `table` with integer primary key `primary_key`.
    pub fn new(table: &str, primary_key: &str) -> Self {
        EncryptTable {
            table: table.to_owned(),
            primary_key: primary_key.to_owned(),
            columns: Vec::new(),
            mismatch: None,
        }
    }

    /// Adds a column. It must name the same table and primary key as the plan (a step
    /// refuses the plan otherwise, with nothing changed).
    pub fn column<T, C>(mut self, spec: EncryptColumn<T, C>) -> Self
    where
        T: Plaintext + TryGetable + Into<Value> + IndexArg<T> + Nullable,
        C: ColumnContext,
    {
        if spec.table != self.table || spec.primary_key != self.primary_key {
            self.mismatch.get_or_insert_with(|| {
                format!(
                    "column {}.{} (primary key {}) does not belong to a plan for {} (primary \
                     key {})",
                    spec.table, spec.plaintext, spec.primary_key, self.table, self.primary_key
                )
            });
        } else if self
            .columns
            .iter()
            .any(|c| c.plaintext() == spec.plaintext || c.encrypted() == spec.encrypted)
        {
            self.mismatch
                .get_or_insert_with(|| format!("column {} is in the plan twice", spec.plaintext));
        }
        self.columns.push(Arc::new(spec));
        self
    }

    /// The physical table.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The integer primary key column.
    pub fn primary_key(&self) -> &str {
        &self.primary_key
    }

    /// The plaintext columns, in the order they were added.
    pub fn plaintext_columns(&self) -> Vec<&str> {
        self.columns.iter().map(|c| c.plaintext()).collect()
    }

    /// Every physical column a step reads: the key, then each column's plaintext, envelope
    /// and index columns.
    pub(crate) fn physical_columns(&self) -> Vec<&str> {
        let mut out = vec![self.primary_key.as_str()];
        for c in &self.columns {
            out.push(c.plaintext());
            out.push(c.encrypted());
            out.extend(c.indexes().iter().map(|(name, _)| name.as_str()));
        }
        out
    }

    pub(crate) fn check(&self) -> Result<(), DbErr> {
        let problem = match (&self.mismatch, self.columns.is_empty()) {
            (Some(problem), _) => problem.clone(),
            (None, true) => "the plan has no column".to_owned(),
            (None, false) => return Ok(()),
        };
        Err(crate::Error::Migration {
            table: self.table.clone(),
            column: self.plaintext_columns().join(", "),
            problem,
        }
        .into())
    }

    /// Refuses a keyring that cannot seal this plan: one without a blind-index key when a
    /// column fills a blind index.
    pub(crate) fn check_keys(&self, keyring: &Keyring) -> Result<(), DbErr> {
        let has_indexes = self.columns.iter().any(|c| !c.indexes().is_empty());
        if has_indexes && keyring.active_blind_index_key_id().is_none() {
            return Err(crate::Error::NoBlindIndexKey.into());
        }
        Ok(())
    }
}

impl<T, C> From<EncryptColumn<T, C>> for EncryptTable
where
    T: Plaintext + TryGetable + Into<Value> + IndexArg<T> + Nullable,
    C: ColumnContext,
{
    fn from(spec: EncryptColumn<T, C>) -> Self {
        EncryptTable::new(&spec.table, &spec.primary_key).column(spec)
    }
}

impl<T, C> From<&EncryptColumn<T, C>> for EncryptTable
where
    T: Plaintext + TryGetable + Into<Value> + IndexArg<T> + Nullable,
    C: ColumnContext,
{
    fn from(spec: &EncryptColumn<T, C>) -> Self {
        spec.clone().into()
    }
}

impl From<&EncryptTable> for EncryptTable {
    fn from(plan: &EncryptTable) -> Self {
        plan.clone()
    }
}

/// What a step found in one cell (one column of one row).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CellStatus {
    /// Neither plaintext nor envelope.
    BothNull,
    /// Plaintext without an envelope.
    Missing,
    /// The envelope opens to exactly the plaintext.
    Matching,
    /// The envelope does not open, or opens to another value.
    Mismatched,
    /// An envelope without plaintext before cut-over (an old instance cleared the value).
    Orphan,
    /// After cut-over: an envelope and no plaintext, the normal state of a row written since.
    EncryptedOnly,
    /// Not inspected (the backfill only looks for missing envelopes).
    Unchecked,
}

impl CellStatus {
    /// Whether the envelope fails to carry the plaintext.
    pub(crate) fn is_problem(self) -> bool {
        matches!(
            self,
            CellStatus::Missing | CellStatus::Mismatched | CellStatus::Orphan
        )
    }
}

/// How deeply to look at a cell, and what counts as a problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Inspect {
    /// Seal cells with plaintext and no envelope; open nothing.
    Backfill,
    /// Open every envelope and compare. `cut_over`: the plaintext is no longer written by
    /// the application, so only cells that still hold plaintext are compared.
    Check { cut_over: bool, repair: bool },
}

/// A cell's new contents.
pub(crate) struct Write {
    /// The new envelope (`None`: clear it, when the plaintext was cleared).
    pub envelope: Option<Vec<u8>>,
    /// New value of each index column, in the column's index order.
    pub indexes: Vec<Option<Vec<u8>>>,
}

/// One cell as read and judged.
pub(crate) struct Cell {
    /// The plaintext as read, for the write guard (a typed NULL when NULL).
    pub plain: Value,
    /// Nonce of the stored envelope, the fingerprint the write guard compares.
    pub old_nonce: Option<Vec<u8>>,
    pub status: CellStatus,
    /// Whether every index value matches its recomputation (true when not checked).
    pub index_ok: bool,
    /// What to write, if anything.
    pub write: Option<Write>,
}

/// The nonce of an envelope (bytes 6..=29), compared in SQL as `substr(col, 6, 24)`.
pub(crate) fn nonce_of(envelope: &[u8]) -> Vec<u8> {
    envelope
        .iter()
        .skip(HEADER_LEN)
        .take(NONCE_LEN)
        .copied()
        .collect()
}

/// One column of a plan, its plaintext type and context erased.
pub(crate) trait ColumnJob: Send + Sync {
    fn plaintext(&self) -> &str;
    fn encrypted(&self) -> &str;
    fn indexes(&self) -> &[(String, &'static BlindIndex)];
    /// Whether the plaintext is text (compared byte for byte on MySQL).
    fn is_text(&self) -> bool;
    /// A typed NULL of the plaintext column's type.
    fn null_plain(&self) -> Value;
    /// Reads this column's cells from `row` and judges them.
    fn inspect(&self, keyring: &Keyring, row: &QueryResult, how: Inspect) -> Result<Cell, DbErr>;
    /// The blind-index values this row's plaintext gives under the active key, for the
    /// duplicate pre-check (`None` where the plaintext is NULL).
    fn index_values(
        &self,
        keyring: &Keyring,
        row: &QueryResult,
    ) -> Result<Vec<Option<Vec<u8>>>, DbErr>;
}

impl<T, C> ColumnJob for EncryptColumn<T, C>
where
    T: Plaintext + TryGetable + Into<Value> + IndexArg<T> + Nullable,
    C: ColumnContext,
{
    fn plaintext(&self) -> &str {
        &self.plaintext
    }

    fn encrypted(&self) -> &str {
        &self.encrypted
    }

    fn indexes(&self) -> &[(String, &'static BlindIndex)] {
        &self.indexes
    }

    fn is_text(&self) -> bool {
        T::TYPE_NAME == "String"
    }

    fn null_plain(&self) -> Value {
        T::null()
    }

    fn inspect(&self, keyring: &Keyring, row: &QueryResult, how: Inspect) -> Result<Cell, DbErr> {
        let value: Option<T> = row.try_get("", &self.plaintext)?;
        let envelope: Option<Vec<u8>> = row.try_get("", &self.encrypted)?;
        let old_nonce = envelope.as_deref().map(nonce_of);
        let plain = value.clone().map_or_else(T::null, Into::into);
        let (cut_over, repair) = match how {
            Inspect::Backfill => {
                let write = match (&value, &envelope) {
                    (Some(v), None) => Some(self.seal(keyring, Some(v))?),
                    _ => None,
                };
                let status = if write.is_some() {
                    CellStatus::Missing
                } else {
                    CellStatus::Unchecked
                };
                return Ok(Cell {
                    plain,
                    old_nonce,
                    status,
                    index_ok: true,
                    write,
                });
            }
            Inspect::Check { cut_over, repair } => (cut_over, repair),
        };
        let status = match (&value, envelope) {
            (None, None) => CellStatus::BothNull,
            (Some(_), None) => CellStatus::Missing,
            (None, Some(_)) if cut_over => CellStatus::EncryptedOnly,
            (None, Some(_)) => CellStatus::Orphan,
            (Some(v), Some(envelope)) => {
                match Encrypted::<T, C>::from_envelope_with(keyring, envelope) {
                    Ok(opened) if same_encoding(opened.expose(), v) => CellStatus::Matching,
                    _ => CellStatus::Mismatched,
                }
            }
        };
        // Index values are checked wherever the plaintext says what they must be.
        let mut index_ok = true;
        if status != CellStatus::EncryptedOnly {
            for (column, index) in &self.indexes {
                let stored: Option<Vec<u8>> = row.try_get("", column)?;
                index_ok &= match (&value, &stored) {
                    (None, None) => true,
                    (Some(v), Some(s)) => {
                        let version = KeyId(u32::from(s.first().copied().unwrap_or(0)));
                        let expected = index
                            .compute_version(keyring, version, &[Some(v.index_input()?)])
                            .ok()
                            .flatten();
                        expected.as_deref() == Some(s.as_slice())
                    }
                    _ => false,
                };
            }
        }
        let write = if repair && (status.is_problem() || !index_ok) {
            Some(self.seal(keyring, value.as_ref())?)
        } else {
            None
        };
        Ok(Cell {
            plain,
            old_nonce,
            status,
            index_ok,
            write,
        })
    }

    fn index_values(
        &self,
        keyring: &Keyring,
        row: &QueryResult,
    ) -> Result<Vec<Option<Vec<u8>>>, DbErr> {
        let value: Option<T> = row.try_get("", &self.plaintext)?;
        let mut out = Vec::with_capacity(self.indexes.len());
        for (_, index) in &self.indexes {
            out.push(match &value {
                Some(v) => index.compute(keyring, &[Some(v.index_input()?)])?,
                None => None,
            });
        }
        Ok(out)
    }
}

impl<T, C> EncryptColumn<T, C>
where
    T: Plaintext + TryGetable + Into<Value> + IndexArg<T> + Nullable,
    C: ColumnContext,
{
    /// The envelope and index values for `value` under the active keys (all NULL for NULL).
    fn seal(&self, keyring: &Keyring, value: Option<&T>) -> Result<Write, DbErr> {
        let Some(value) = value else {
            return Ok(Write {
                envelope: None,
                indexes: vec![None; self.indexes.len()],
            });
        };
        let sealed = Encrypted::<T, C>::new_with(keyring, value.clone())?;
        let mut indexes = Vec::with_capacity(self.indexes.len());
        for (_, index) in &self.indexes {
            indexes.push(index.compute(keyring, &[Some(value.index_input()?)])?);
        }
        Ok(Write {
            envelope: Some(sealed.envelope().to_vec()),
            indexes,
        })
    }
}

/// Exact comparison through the stored encoding (no float or collation surprises).
fn same_encoding<T: Plaintext>(a: &T, b: &T) -> bool {
    let (mut x, mut y) = (Vec::new(), Vec::new());
    let equal = a.encode(&mut x).is_ok() && b.encode(&mut y).is_ok() && x == y;
    zeroize::Zeroize::zeroize(&mut x);
    zeroize::Zeroize::zeroize(&mut y);
    equal
}
