//! Blind indexes: keyed hashes of normalized plaintext in companion columns, so encrypted
//! fields can be searched for exact matches and made unique without storing plaintext.
//!
//! A blind index value is `version || truncate(HMAC-SHA256(index key, encode(normalized
//! inputs)), bits)` where `version` is the blind-index root key id (one byte) and the index
//! key is derived per (logical table, index name) with HKDF (FORMAT.md, "Blind indexes").
//!
//! * **Normalize** with a [`Pipeline`] of [`Transform`]s so equivalent inputs match.
//! * **Compound** indexes hash several fields; each part is length-prefixed, so
//!   ("ab", "c") and ("a", "bc") never collide by construction.
//! * **Truncate** to `bits` to make distinct values share index values (less leakage, some
//!   false positives, which lookups filter by decrypting). [`plan`] recommends `bits`.
//!   Unique indexes must keep all 256 bits.
//! * **Rotate** without a new column: the version byte tells which key computed a value, so
//!   while an old blind-index key is still in the keyring lookups query every version
//!   ([`BlindIndex::lookup_values`]), writes use the active one, and a backfill recomputes
//!   old rows; then the old key is removed. Rows of one version form one contiguous key
//!   range ([`BlindIndex::version_range`]), so finding rows left to recompute is an index
//!   range scan.
//! * **Measure** what an index reveals with [`leakage_report`].
//! * **Several tenants** in one table: per-tenant index keys
//!   ([`Keyring::for_tenant`]), UNIQUE per tenant ([`BlindIndex::scoped_by`], or
//!   `unique, scope(tenant_id)` in the derive), and the derived `find_all_by_<index>_where`
//!   lookups, which take the tenant filter in SQL and never name another tenant's key
//!   ([`Error::LookupKeyMissing`]).
//!
//! Most users never call this module directly: `#[derive(DeriveEncrypted)]` generates the
//! specs, `fill_blind_indexes` and typed `find_by_…` helpers from field attributes:
//!
//! ```
//! use encrypted_columns::{DeriveEncrypted, EncryptedString, Error, Keyring, keyring};
//! use sea_orm::{entity::prelude::*, ActiveValue::Set, Database, Schema};
//!
//! mod patient {
//!     use super::*;
//!
//!     #[derive(Clone, Debug, PartialEq, DeriveEntityModel, DeriveEncrypted)]
//!     #[sea_orm(table_name = "patients")]
//!     #[encrypted(active_model_behavior)] // fill indexes in before_save
//!     pub struct Model {
//!         #[sea_orm(primary_key)]
//!         pub id: i32,
//!         // `ctx::Email` is generated: it binds the envelope to patients.email.
//!         #[encrypted(blind_index(name = "email_bidx", normalize = "email", unique))]
//!         pub email: EncryptedString<ctx::Email>,
//!         #[sea_orm(unique)]
//!         pub email_bidx: Vec<u8>,
//!         #[encrypted(blind_index(name = "phone_last4", transform = "digits, last(4)", bits = 16))]
//!         pub phone: Option<EncryptedString<ctx::Phone>>,
//!         pub phone_last4: Option<Vec<u8>>,
//!     }
//!
//!     #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
//!     pub enum Relation {}
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! keyring::install(Keyring::generate());
//! let db = Database::connect("sqlite::memory:").await?;
//! db.get_schema_builder().register(patient::Entity).apply(&db).await?;
//!
//! let ada = patient::ActiveModel {
//!     email: Set(EncryptedString::new("Ada@Example.org".into())?),
//!     phone: Set(Some(EncryptedString::new("+1 555 010 0199".into())?)),
//!     ..Default::default()
//! };
//! ada.insert(&db).await?;
//!
//! let found = patient::Entity::find_one_by_email_bidx(&db, " ada@example.ORG").await?;
//! assert_eq!(found.map(|p| p.email.expose().clone()), Some("Ada@Example.org".to_string()));
//! assert_eq!(patient::Entity::find_all_by_phone_last4(&db, "0199").await?.len(), 1);
//!
//! let twin = patient::ActiveModel {
//!     email: Set(EncryptedString::new("ada@example.org".into())?),
//!     ..Default::default()
//! };
//! let err = twin.insert(&db).await.unwrap_err();
//! assert!(matches!(patient::Entity::unique_violation(&err), Some(Error::Duplicate { .. })));
//! # Ok(())
//! # }
//! ```
//!
//! Lower level, without the derive:
//!
//! ```
//! use encrypted_columns::blind_index::{BlindIndex, IndexInput, Pipeline};
//! use encrypted_columns::Keyring;
//!
//! let keyring = Keyring::generate();
//! let email = BlindIndex::new("patients", "email_bidx").field(Pipeline::parse("email")?);
//! let a = email.compute(&keyring, &[Some(IndexInput::Text("Ada@Example.org "))])?;
//! let b = email.compute(&keyring, &[Some(IndexInput::Text("ada@example.org"))])?;
//! assert_eq!(a, b);
//! assert_eq!(a.as_ref().map(Vec::len), Some(33)); // version byte + 256 bits
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod input;
mod leakage;
mod planner;
pub mod transform;

use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, Condition, DbErr};
use zeroize::Zeroizing;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::keyring::{KeyId, Keyring};

pub use input::{IndexArg, IndexInput};
pub use leakage::{LeakageReport, leakage_report};
pub use planner::{Plan, plan};
pub use transform::{Pipeline, Transform};

/// Largest (and default) index width: the full HMAC-SHA256 output.
pub const MAX_BITS: u16 = 256;

/// The definition of one blind index: where it lives, how each input is normalized, and how
/// many bits are kept.
#[derive(Clone, Debug)]
pub struct BlindIndex {
    context: Context,
    parts: Vec<Pipeline>,
    bits: u16,
    unique: bool,
    scope: Vec<&'static str>,
}

impl BlindIndex {
    /// An index named `name` (its companion column's logical name) on logical table `table`,
    /// with no inputs yet: add one [`field`](Self::field) per input, in order.
    pub const fn new(table: &'static str, name: &'static str) -> Self {
        BlindIndex {
            context: Context::new(table, name),
            parts: Vec::new(),
            bits: MAX_BITS,
            unique: false,
            scope: Vec::new(),
        }
    }

    /// Like [`BlindIndex::new`] for names known only at run time (interned once).
    pub fn named(table: &str, name: &str) -> Result<Self> {
        Ok(BlindIndex {
            context: Context::intern(table, name)?,
            parts: Vec::new(),
            bits: MAX_BITS,
            unique: false,
            scope: Vec::new(),
        })
    }

    /// Adds an input (a field of the row) normalized by `pipeline`.
    pub fn field(mut self, pipeline: Pipeline) -> Self {
        self.parts.push(pipeline);
        self
    }

    /// Keeps only the first `bits` bits of the HMAC (1–256). See [`plan`] for how to choose.
    pub fn bits(mut self, bits: u16) -> Self {
        self.bits = bits;
        self
    }

    /// Marks the index as backing a UNIQUE constraint; it must keep all 256 bits.
    pub fn unique(mut self) -> Self {
        self.unique = true;
        self
    }

    /// Scopes the UNIQUE constraint of a [`unique`](Self::unique) index by plain column
    /// `column` (e.g. `tenant_id`); call once per column. The same value may then appear once
    /// per scope (per tenant) instead of once per table:
    /// [`schema::unique_index`](crate::schema::unique_index) and the migration helper build a
    /// composite UNIQUE index over the scope columns and the index column. Index values are
    /// computed as without a scope.
    ///
    /// ```
    /// use encrypted_columns::blind_index::{BlindIndex, Pipeline};
    /// let email = BlindIndex::new("accounts", "email_bidx")
    ///     .field(Pipeline::parse("email")?)
    ///     .unique()
    ///     .scoped_by("tenant_id");
    /// assert_eq!(email.scope(), ["tenant_id"]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn scoped_by(mut self, column: &'static str) -> Self {
        self.scope.push(column);
        self
    }

    /// The plain columns that scope the UNIQUE constraint, in order; empty for a table-wide
    /// constraint (or a non-unique index).
    pub fn scope(&self) -> &[&'static str] {
        &self.scope
    }

    /// The logical table.
    pub fn table(&self) -> &'static str {
        self.context.table()
    }

    /// The index's logical name.
    pub fn name(&self) -> &'static str {
        self.context.column()
    }

    /// The bits kept.
    pub fn bit_len(&self) -> u16 {
        self.bits
    }

    /// Whether the index backs a UNIQUE constraint.
    pub fn is_unique(&self) -> bool {
        self.unique
    }

    /// The pipelines, one per input.
    pub fn parts(&self) -> &[Pipeline] {
        &self.parts
    }

    /// Length in bytes of every stored value: one version byte plus `ceil(bits / 8)`.
    pub fn value_len(&self) -> usize {
        1 + usize::from(self.bits).div_ceil(8)
    }

    fn problem(&self, problem: impl Into<String>) -> Error {
        Error::BlindIndex {
            table: self.table(),
            index: self.name(),
            problem: problem.into(),
        }
    }

    fn check(&self, inputs: usize) -> Result<()> {
        if self.bits == 0 || self.bits > MAX_BITS {
            return Err(self.problem(format!(
                "bits = {} is out of range; choose 1 to 256",
                self.bits
            )));
        }
        if self.unique && self.bits != MAX_BITS {
            return Err(self.problem(
                "a unique index must keep all 256 bits: truncated values collide, and a \
                 collision would reject a legitimate row",
            ));
        }
        if !self.scope.is_empty() && !self.unique {
            return Err(self.problem(
                "a scope only applies to a unique index: add `.unique()` or drop `.scoped_by(..)`",
            ));
        }
        if self.parts.is_empty() {
            return Err(self.problem("the index has no fields; add one with `.field(..)`"));
        }
        if inputs != self.parts.len() {
            return Err(self.problem(format!(
                "got {inputs} input(s) for an index over {} field(s)",
                self.parts.len()
            )));
        }
        Ok(())
    }

    /// The exact bytes that are hashed: for each input, its normalized form as a u32
    /// big-endian length and the bytes (FORMAT.md). Wiped on drop: it is plaintext.
    pub fn message(&self, inputs: &[IndexInput<'_>]) -> Result<Zeroizing<Vec<u8>>> {
        self.check(inputs.len())?;
        let mut message = Zeroizing::new(Vec::new());
        for (i, (pipeline, input)) in self.parts.iter().zip(inputs).enumerate() {
            match input {
                IndexInput::Text(text) => {
                    let normalized = Zeroizing::new(pipeline.apply(text).into_owned());
                    push_part(&mut message, normalized.as_bytes());
                }
                IndexInput::Bytes(bytes) => {
                    if !pipeline.is_identity() {
                        return Err(self.problem(format!(
                            "input {} is not text, so its transforms ({}) cannot apply; \
                             remove them for this field",
                            i + 1,
                            pipeline.spec()
                        )));
                    }
                    push_part(&mut message, bytes);
                }
            }
        }
        Ok(message)
    }

    /// The value to store for these inputs, computed with the active blind-index key.
    /// `None` if any input is `None` (a NULL field gives a NULL index).
    pub fn compute(
        &self,
        keyring: &Keyring,
        inputs: &[Option<IndexInput<'_>>],
    ) -> Result<Option<Vec<u8>>> {
        let version = keyring
            .active_blind_index_key_id()
            .ok_or(Error::NoBlindIndexKey)?;
        self.compute_version(keyring, version, inputs)
    }

    /// The value for these inputs under blind-index key `version` (used by rotation).
    pub fn compute_version(
        &self,
        keyring: &Keyring,
        version: KeyId,
        inputs: &[Option<IndexInput<'_>>],
    ) -> Result<Option<Vec<u8>>> {
        self.check(inputs.len())?;
        let mut present = Vec::with_capacity(inputs.len());
        for input in inputs {
            match input {
                Some(input) => present.push(input.clone()),
                None => return Ok(None),
            }
        }
        let message = self.message(&present)?;
        self.value_for_message(keyring, version, &message).map(Some)
    }

    fn value_for_message(
        &self,
        keyring: &Keyring,
        version: KeyId,
        message: &[u8],
    ) -> Result<Vec<u8>> {
        let version_byte = u8::try_from(version.0).map_err(|_| {
            self.problem(format!(
                "blind-index key id {version} does not fit in one byte"
            ))
        })?;
        let mac = keyring.index_mac(version, self.context)?;
        let tag = mac.tag(message);
        Ok(encode_value(version_byte, &tag, self.bits))
    }

    /// Every value a lookup must match: one per blind-index key in the keyring, the active
    /// key's first. During an index-key rotation both old and new values are queried.
    pub fn lookup_values(
        &self,
        keyring: &Keyring,
        inputs: &[IndexInput<'_>],
    ) -> Result<Vec<Vec<u8>>> {
        let active = keyring
            .active_blind_index_key_id()
            .ok_or(Error::NoBlindIndexKey)?;
        let message = self.message(inputs)?;
        let mut values = vec![self.value_for_message(keyring, active, &message)?];
        for version in keyring.blind_index_key_ids().filter(|v| *v != active) {
            values.push(self.value_for_message(keyring, version, &message)?);
        }
        Ok(values)
    }

    /// A SeaORM condition matching rows whose `column` holds an index value of `inputs`,
    /// to combine with other filters. Candidates may include false positives when the index
    /// is truncated: compare the decrypted fields (see [`BlindIndex::matches`]).
    pub fn condition<Col: ColumnTrait>(
        &self,
        keyring: &Keyring,
        column: Col,
        inputs: &[IndexInput<'_>],
    ) -> Result<Condition> {
        let mut values = self.lookup_values(keyring, inputs)?;
        let expr: Expr = if values.len() == 1 {
            column.eq(values.remove(0))
        } else {
            column.is_in(values)
        };
        Ok(Condition::all().add(expr))
    }

    /// Whether two sets of inputs normalize to the same message: the exact test behind a
    /// lookup's false-positive filter.
    pub fn matches(&self, stored: &[IndexInput<'_>], wanted: &[IndexInput<'_>]) -> Result<bool> {
        Ok(*self.message(stored)? == *self.message(wanted)?)
    }

    /// The half-open byte range `[start, end)` holding every value of blind-index key
    /// `version`: `WHERE col >= start AND col < end` finds rows still to recompute.
    pub fn version_range(version: KeyId) -> Option<(Vec<u8>, Vec<u8>)> {
        let v = u8::try_from(version.0).ok()?;
        Some(match v.checked_add(1) {
            Some(next) => (vec![v], vec![next]),
            None => (vec![v], vec![0xff; 34]),
        })
    }
}

fn push_part(message: &mut Vec<u8>, bytes: &[u8]) {
    // Inputs are database fields; anything near 4 GiB is refused by the databases first.
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    message.extend_from_slice(&len.to_be_bytes());
    message.extend_from_slice(bytes);
}

/// `version || first ceil(bits/8) bytes of tag`, unused low bits of the last byte zeroed.
fn encode_value(version: u8, tag: &[u8; 32], bits: u16) -> Vec<u8> {
    let bytes = usize::from(bits).div_ceil(8);
    let mut value = Vec::with_capacity(1 + bytes);
    value.push(version);
    value.extend_from_slice(&tag[..bytes]);
    let spare = (bytes * 8) as u16 - bits;
    if spare > 0
        && let Some(last) = value.last_mut()
    {
        *last &= 0xffu8 << spare;
    }
    value
}

/// If `err` is a unique-constraint violation on one of `columns` of `table` (the blind-index
/// companion columns of an entity), the typed [`Error::Duplicate`] naming it.
///
/// The derive generates `Entity::unique_violation(&err)` that calls this with the entity's
/// unique indexes. Matching uses the constraint name in the driver's message, so name unique
/// indexes after their column (SeaORM's `unique` and the migration helpers do).
pub fn unique_violation(
    err: &DbErr,
    table: &'static str,
    columns: &[&'static str],
) -> Option<Error> {
    let message = match err.sql_err()? {
        sea_orm::SqlErr::UniqueConstraintViolation(message) => message,
        _ => return None,
    };
    // MySQL quotes the duplicate bytes before the key name: look only after "for key".
    let haystack = match message.rfind("for key") {
        Some(at) => &message[at..],
        None => message.as_str(),
    };
    columns
        .iter()
        .filter(|column| haystack.contains(*column))
        .max_by_key(|column| column.len())
        .map(|index| Error::Duplicate { table, index })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> Keyring {
        let mut k = Keyring::new(KeyId(1), [1; 32]);
        k.add_blind_index_key(KeyId(1), [2; 32]).unwrap();
        k
    }

    #[test]
    fn truncation_masks_spare_bits() {
        let tag = [0xff; 32];
        assert_eq!(encode_value(3, &tag, 12), vec![3, 0xff, 0xf0]);
        assert_eq!(encode_value(3, &tag, 8), vec![3, 0xff]);
        assert_eq!(encode_value(3, &tag, 1), vec![3, 0x80]);
        assert_eq!(encode_value(3, &tag, 256).len(), 33);
    }

    #[test]
    fn compound_parts_are_unambiguous() {
        let idx = BlindIndex::new("t", "i")
            .field(Pipeline::identity())
            .field(Pipeline::identity());
        let k = ring();
        let a = idx
            .compute(
                &k,
                &[Some(IndexInput::Text("ab")), Some(IndexInput::Text("c"))],
            )
            .unwrap();
        let b = idx
            .compute(
                &k,
                &[Some(IndexInput::Text("a")), Some(IndexInput::Text("bc"))],
            )
            .unwrap();
        assert_ne!(a, b);
        let null = idx
            .compute(&k, &[Some(IndexInput::Text("a")), None])
            .unwrap();
        assert_eq!(null, None);
    }

    #[test]
    fn misuse_is_a_typed_error() {
        let k = ring();
        let idx = BlindIndex::new("t", "i").field(Pipeline::parse("trim").unwrap());
        let two = [Some(IndexInput::Text("a")), Some(IndexInput::Text("b"))];
        assert!(matches!(
            idx.compute(&k, &two),
            Err(Error::BlindIndex { .. })
        ));
        let bytes = [Some(IndexInput::Bytes(vec![1].into()))];
        assert!(matches!(
            idx.compute(&k, &bytes),
            Err(Error::BlindIndex { .. })
        ));
        let unique_short = BlindIndex::new("t", "i")
            .field(Pipeline::identity())
            .bits(16)
            .unique();
        assert!(matches!(
            unique_short.compute(&k, &[Some(IndexInput::Text("a"))]),
            Err(Error::BlindIndex { .. })
        ));
        let scoped_not_unique = BlindIndex::new("t", "i")
            .field(Pipeline::identity())
            .scoped_by("tenant_id");
        assert!(matches!(
            scoped_not_unique.compute(&k, &[Some(IndexInput::Text("a"))]),
            Err(Error::BlindIndex { .. })
        ));
        assert!(
            scoped_not_unique
                .unique()
                .compute(&k, &[Some(IndexInput::Text("a"))])
                .is_ok()
        );
        let no_keys = Keyring::new(KeyId(1), [1; 32]);
        assert_eq!(
            BlindIndex::new("t", "i")
                .field(Pipeline::identity())
                .compute(&no_keys, &[Some(IndexInput::Text("a"))]),
            Err(Error::NoBlindIndexKey)
        );
    }

    #[test]
    fn rotation_queries_every_version_active_first() {
        let mut k = ring();
        let idx = BlindIndex::new("t", "i").field(Pipeline::identity());
        let input = [IndexInput::Text("x")];
        let v1 = idx.lookup_values(&k, &input).unwrap();
        assert_eq!(v1.len(), 1);
        k.add_blind_index_key(KeyId(2), [3; 32]).unwrap();
        k.promote_blind_index_key(KeyId(2)).unwrap();
        let both = idx.lookup_values(&k, &input).unwrap();
        assert_eq!(both.len(), 2);
        assert_eq!(both[0][0], 2);
        assert_eq!(both[1], v1[0]);
        k.remove_blind_index_key(KeyId(1)).unwrap();
        assert_eq!(
            idx.lookup_values(&k, &input).unwrap(),
            vec![both[0].clone()]
        );
        let (lo, hi) = BlindIndex::version_range(KeyId(2)).unwrap();
        assert!(both[0] >= lo && both[0] < hi && v1[0] < lo);
    }
}
