//! Key-store rows: their states, the metadata [`StoredKey`] shows, and reading and checking
//! rows (a damaged row is an error naming it, never a panic).

use std::fmt;

use sea_orm::sea_query::{Expr, ExprTrait, LockType, OnConflict, Order, Query, SelectStatement};
use sea_orm::{ConnectionTrait, QueryResult};

use super::error::KeyStoreError;
use super::schema::a;
use super::store::KeyStore;
use crate::kek::WrappedKey;
use crate::keyring::{CheckValue, KeyId, KeyPurpose};

/// A stored key's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyState {
    /// Seals new values (encryption) or computes new index values (blind index). One per
    /// purpose.
    Active,
    /// Loaded to open (or look up) older values; seals nothing new.
    DecryptOnly,
    /// Kept for the record; not loaded.
    Retired,
}

impl KeyState {
    /// The state as stored: `"active"`, `"decrypt-only"`, `"retired"`.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Active => "active",
            KeyState::DecryptOnly => "decrypt-only",
            KeyState::Retired => "retired",
        }
    }

    /// Parses [`as_str`](Self::as_str)'s output.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "active" => Some(KeyState::Active),
            "decrypt-only" => Some(KeyState::DecryptOnly),
            "retired" => Some(KeyState::Retired),
            _ => None,
        }
    }
}

impl fmt::Display for KeyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A key-store row's metadata: no key bytes, wrapped or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    /// Encryption or blind index.
    pub purpose: KeyPurpose,
    /// The key id.
    pub key_id: KeyId,
    /// Active, decrypt-only or retired.
    pub state: KeyState,
    /// `"env"` for keys supplied by environment variables, else the KEK provider's name.
    pub provider: String,
    /// The KEK id the key is wrapped under (`None` for environment keys).
    pub kek_id: Option<String>,
    /// The key's check value (FORMAT.md §10); its `Display` is hex.
    pub check_value: CheckValue,
    /// Whether the row holds a wrapped key (false for environment keys).
    pub wrapped: bool,
}

impl StoredKey {
    /// `"<purpose> key <id>"`, as errors and reports name a key.
    pub fn label(&self) -> String {
        format!("{} key {}", self.purpose, self.key_id)
    }
}

/// A row as read: metadata plus the wrapped bytes.
pub(super) struct Row {
    pub(super) meta: StoredKey,
    pub(super) wrapped_key: Option<WrappedKey>,
}

impl Row {
    /// Whether the row is wrapped under this provider and KEK id.
    pub(super) fn under(&self, provider: &str, kek_id: &str) -> bool {
        self.wrapped_key.is_some()
            && self.meta.provider == provider
            && self.meta.kek_id.as_deref() == Some(kek_id)
    }
}

const COLUMNS: [&str; 7] = [
    "purpose",
    "key_id",
    "state",
    "provider",
    "kek_id",
    "wrapped_key",
    "check_value",
];

fn select(store: &KeyStore) -> SelectStatement {
    Query::select()
        .columns(COLUMNS.map(a))
        .from(store.t())
        .and_where(Expr::col(a("scope")).eq(store.scope()))
        .order_by(a("purpose"), Order::Asc)
        .order_by(a("key_id"), Order::Asc)
        .to_owned()
}

fn parse(store: &KeyStore, row: &QueryResult) -> Result<Row, KeyStoreError> {
    let purpose_text: String = row.try_get("", "purpose")?;
    let raw_id: i64 = row.try_get("", "key_id")?;
    let damaged = |problem: String| KeyStoreError::DamagedRow {
        scope: store.scope().to_owned(),
        purpose: purpose_text.clone(),
        key_id: raw_id,
        problem,
    };
    let purpose = match KeyPurpose::parse(&purpose_text) {
        Some(p @ (KeyPurpose::Encryption | KeyPurpose::BlindIndex)) => p,
        _ => {
            return Err(damaged(
                "purpose must be \"encryption\" or \"blind-index\"".into(),
            ));
        }
    };
    let key_id = check_id(purpose, raw_id).ok_or_else(|| {
        damaged(match purpose {
            KeyPurpose::BlindIndex => "blind-index key ids are 1 to 255".into(),
            _ => "key ids are 0 to 4294967295".into(),
        })
    })?;
    let state_text: String = row.try_get("", "state")?;
    let state = KeyState::parse(&state_text).ok_or_else(|| {
        damaged("state must be \"active\", \"decrypt-only\" or \"retired\"".into())
    })?;
    let kcv: Vec<u8> = row.try_get("", "check_value")?;
    let check_value = CheckValue::from_bytes(&kcv)
        .ok_or_else(|| damaged(format!("check value is {} bytes, not 16", kcv.len())))?;
    let wrapped: Option<Vec<u8>> = row.try_get("", "wrapped_key")?;
    Ok(Row {
        meta: StoredKey {
            purpose,
            key_id,
            state,
            provider: row.try_get("", "provider")?,
            kek_id: row.try_get("", "kek_id")?,
            check_value,
            wrapped: wrapped.is_some(),
        },
        wrapped_key: wrapped.map(WrappedKey::from_bytes),
    })
}

/// `raw` as a key id of `purpose`, if in range (blind-index values store their id in a byte).
pub(super) fn check_id(purpose: KeyPurpose, raw: i64) -> Option<KeyId> {
    let id = u32::try_from(raw).ok()?;
    match purpose {
        KeyPurpose::BlindIndex if !(1..=255).contains(&id) => None,
        _ => Some(KeyId(id)),
    }
}

/// A key row to insert ([`KeyStore::insert_if_free`]).
pub(super) struct NewRow<'a> {
    pub(super) purpose: KeyPurpose,
    pub(super) id: KeyId,
    pub(super) state: KeyState,
    pub(super) provider: &'a str,
    /// The KEK id and the wrapped key; `None` for an environment key.
    pub(super) wrapping: Option<(&'a str, &'a WrappedKey)>,
    pub(super) check_value: &'a CheckValue,
}

impl KeyStore {
    /// Every row of the scope, by purpose then id.
    pub(super) async fn read_all<C: ConnectionTrait>(
        &self,
        db: &C,
    ) -> Result<Vec<Row>, KeyStoreError> {
        let rows = db.query_all(&select(self)).await?;
        rows.iter().map(|r| parse(self, r)).collect()
    }

    /// One row; with `lock`, a locking read (`FOR UPDATE` on the servers: it sees the latest
    /// committed row and holds it until the transaction ends; SQLite's transaction already
    /// holds the database's write lock once it has written).
    pub(super) async fn read_one<C: ConnectionTrait>(
        &self,
        db: &C,
        purpose: KeyPurpose,
        id: KeyId,
        lock: bool,
    ) -> Result<Option<Row>, KeyStoreError> {
        let mut q = select(self);
        q.and_where(Expr::col(a("purpose")).eq(purpose.as_str()))
            .and_where(Expr::col(a("key_id")).eq(i64::from(id.0)));
        if lock {
            q.lock(LockType::Update);
        }
        match db.query_one(&q).await? {
            Some(row) => parse(self, &row).map(Some),
            None => Ok(None),
        }
    }

    /// Inserts the row of key `id` unless the id is taken (`ON CONFLICT DO NOTHING`; MariaDB has
    /// no DO NOTHING, so it renders a no-op `ON DUPLICATE KEY UPDATE`). The primary key decides
    /// between two processes inserting one id: callers re-read the row (locking) to learn
    /// whose it is. `wrapping` is the KEK id and wrapped key, `None` for an environment key.
    pub(super) async fn insert_if_free<C: ConnectionTrait>(
        &self,
        db: &C,
        key: NewRow<'_>,
    ) -> Result<(), KeyStoreError> {
        let (kek_id, wrapped) = match key.wrapping {
            Some((kek_id, wrapped)) => (Some(kek_id), Some(wrapped.as_bytes().to_vec())),
            None => (None, None),
        };
        let insert = Query::insert()
            .into_table(self.t())
            .columns(
                [
                    "scope",
                    "purpose",
                    "key_id",
                    "state",
                    "provider",
                    "kek_id",
                    "wrapped_key",
                    "check_value",
                ]
                .map(a),
            )
            .values([
                self.scope().into(),
                key.purpose.as_str().into(),
                i64::from(key.id.0).into(),
                key.state.as_str().into(),
                key.provider.into(),
                kek_id.into(),
                wrapped.into(),
                key.check_value.as_bytes().to_vec().into(),
            ])
            .map_err(|e| KeyStoreError::Database(e.to_string()))?
            .on_conflict(
                OnConflict::columns(["scope", "purpose", "key_id"].map(a))
                    .do_nothing_on([a("scope")])
                    .to_owned(),
            )
            .to_owned();
        db.execute(&insert).await?;
        Ok(())
    }

    /// Ids of the active keys of `purpose`.
    pub(super) async fn active_ids<C: ConnectionTrait>(
        &self,
        db: &C,
        purpose: KeyPurpose,
    ) -> Result<Vec<u32>, KeyStoreError> {
        Ok(self
            .read_all(db)
            .await?
            .into_iter()
            .filter(|r| r.meta.purpose == purpose && r.meta.state == KeyState::Active)
            .map(|r| r.meta.key_id.0)
            .collect())
    }

    /// The metadata of every key of the scope (no key bytes), by purpose then id.
    pub async fn list<C: ConnectionTrait>(&self, db: &C) -> Result<Vec<StoredKey>, KeyStoreError> {
        Ok(self
            .read_all(db)
            .await?
            .into_iter()
            .map(|r| r.meta)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keystore_states_round_trip_and_ids_are_range_checked() {
        for state in [KeyState::Active, KeyState::DecryptOnly, KeyState::Retired] {
            assert_eq!(KeyState::parse(state.as_str()), Some(state));
        }
        assert_eq!(KeyState::parse("enabled"), None);
        assert_eq!(check_id(KeyPurpose::BlindIndex, 255), Some(KeyId(255)));
        assert_eq!(check_id(KeyPurpose::BlindIndex, 256), None);
        assert_eq!(check_id(KeyPurpose::BlindIndex, 0), None);
        assert_eq!(check_id(KeyPurpose::Encryption, -1), None);
        assert_eq!(
            check_id(KeyPurpose::Encryption, i64::from(u32::MAX)),
            Some(KeyId(u32::MAX))
        );
        assert_eq!(
            check_id(KeyPurpose::Encryption, i64::from(u32::MAX) + 1),
            None
        );
    }
}
