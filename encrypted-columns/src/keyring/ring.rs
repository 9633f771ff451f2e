//! The keyring itself: versioned encryption and blind-index root keys, which is active, and
//! adding, promoting and removing them.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, RwLock};

use zeroize::Zeroizing;

use super::cache::{CipherCache, FxBuildHasher, IndexMac};
use super::material::{KEY_LEN, RootKey, generate_key};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::key_id::KeyId;

/// A versioned set of root keys plus a cache of per-column ciphers.
///
/// ```
/// use encrypted_columns::{Keyring, KeyId};
///
/// let mut keyring = Keyring::new(KeyId(1), [7u8; 32]);
/// keyring.add_key(KeyId(2), [9u8; 32])?;   // decrypt-only for now
/// assert_eq!(keyring.active_key_id(), KeyId(1));
/// keyring.promote(KeyId(2))?;             // new values now seal with key 2
/// assert_eq!(keyring.active_key_id(), KeyId(2));
/// assert!(!format!("{keyring:?}").contains("7, 7"));
/// # Ok::<(), encrypted_columns::Error>(())
/// ```
pub struct Keyring {
    pub(super) keys: BTreeMap<KeyId, RootKey>,
    pub(super) active: KeyId,
    pub(super) blind_index_keys: BTreeMap<KeyId, RootKey>,
    pub(super) active_blind_index: Option<KeyId>,
    pub(super) ciphers: RwLock<CipherCache>,
    /// Keyed HMAC states per (blind-index key, table, index): deriving a key costs more than
    /// computing an index value, so each is derived once.
    pub(super) index_macs: RwLock<HashMap<(KeyId, Context), Arc<IndexMac>, FxBuildHasher>>,
}

impl Clone for Keyring {
    fn clone(&self) -> Self {
        Keyring {
            keys: self.keys.clone(),
            active: self.active,
            blind_index_keys: self.blind_index_keys.clone(),
            active_blind_index: self.active_blind_index,
            ciphers: RwLock::default(),
            index_macs: RwLock::default(),
        }
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("active", &self.active)
            .field("keys", &self.keys.keys().collect::<Vec<_>>())
            .field("active_blind_index", &self.active_blind_index)
            .field(
                "blind_index_keys",
                &self.blind_index_keys.keys().collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Keyring {
    /// A keyring holding one key, which is active. The keyring wipes its own copy of the key
    /// on drop; wipe yours too (or pass a temporary).
    pub fn new(id: KeyId, key: [u8; KEY_LEN]) -> Self {
        let mut keys = BTreeMap::new();
        keys.insert(id, RootKey(Zeroizing::new(key)));
        Keyring {
            keys,
            active: id,
            blind_index_keys: BTreeMap::new(),
            active_blind_index: None,
            ciphers: RwLock::default(),
            index_macs: RwLock::default(),
        }
    }

    /// Like [`Keyring::new`] from a byte slice, failing unless it is exactly 32 bytes.
    pub fn from_slice(id: KeyId, key: &[u8]) -> Result<Self> {
        let root = RootKey::from_slice(key, &format!("key {id}"))?;
        let mut ring = Keyring::new(id, [0u8; KEY_LEN]);
        ring.keys.insert(id, root);
        Ok(ring)
    }

    /// A keyring with one fresh random key (id 1) and one fresh blind-index key (id 1):
    /// for tests and demos. Real deployments load keys with [`Keyring::from_env`].
    pub fn generate() -> Self {
        let mut ring = Keyring::new(KeyId(1), *generate_key());
        ring.blind_index_keys
            .insert(KeyId(1), RootKey(generate_key()));
        ring.active_blind_index = Some(KeyId(1));
        ring
    }

    /// A keyring whose only encryption key is `key` (active, as `id`) and whose blind-index
    /// keys are this keyring's: for data sealed under a per-tenant or per-person data key
    /// (envelope encryption, crypto-shredding) that must stay searchable through blind
    /// indexes shared by all tenants. Add further data keys with [`add_key`](Keyring::add_key)
    /// to read several tenants' rows in one query. For tenants whose index values must not be
    /// shared, use [`for_tenant`](Keyring::for_tenant) instead.
    ///
    /// ```
    /// use encrypted_columns::{KeyId, Keyring};
    ///
    /// let master = Keyring::generate();
    /// let tenant = master.with_data_key(KeyId(1_000_001), [3u8; 32]);
    /// assert_eq!(tenant.active_key_id(), KeyId(1_000_001));
    /// assert_eq!(tenant.active_blind_index_key_id(), master.active_blind_index_key_id());
    /// assert_eq!(tenant.key_ids().count(), 1);
    /// ```
    pub fn with_data_key(&self, id: KeyId, key: [u8; KEY_LEN]) -> Keyring {
        let mut ring = Keyring::new(id, key);
        ring.blind_index_keys = self.blind_index_keys.clone();
        ring.active_blind_index = self.active_blind_index;
        ring
    }

    /// Adds a decrypt-only encryption key. Deploy it to every process first, then
    /// [`promote`](Keyring::promote) it, so no process meets a value it cannot open.
    pub fn add_key(&mut self, id: KeyId, key: [u8; KEY_LEN]) -> Result<()> {
        self.insert_key(id, RootKey(Zeroizing::new(key)))
    }

    /// [`with_data_key`](Keyring::with_data_key) from a wiped buffer.
    pub(crate) fn with_data_key_zeroizing(
        &self,
        id: KeyId,
        key: &Zeroizing<[u8; KEY_LEN]>,
    ) -> Keyring {
        let mut ring = Keyring {
            keys: BTreeMap::new(),
            active: id,
            blind_index_keys: self.blind_index_keys.clone(),
            active_blind_index: self.active_blind_index,
            ciphers: RwLock::default(),
            index_macs: RwLock::default(),
        };
        ring.keys.insert(id, RootKey(key.clone()));
        ring
    }

    /// [`add_key`](Keyring::add_key) from a wiped buffer, leaving no copy of the key behind
    /// on the stack (subject keys, added by the thousand).
    pub(crate) fn add_key_zeroizing(
        &mut self,
        id: KeyId,
        key: &Zeroizing<[u8; KEY_LEN]>,
    ) -> Result<()> {
        self.insert_key(id, RootKey(key.clone()))
    }

    fn insert_key(&mut self, id: KeyId, key: RootKey) -> Result<()> {
        if self.keys.contains_key(&id) {
            return Err(Error::key_config(
                format!("key {id}"),
                "the keyring already holds this key id; key ids must be unique",
            ));
        }
        self.keys.insert(id, key);
        Ok(())
    }

    /// Makes `id` the key new values are sealed with.
    pub fn promote(&mut self, id: KeyId) -> Result<()> {
        if !self.keys.contains_key(&id) {
            return Err(Error::UnknownKeyId { id });
        }
        self.active = id;
        Ok(())
    }

    /// Removes a retired key. Values still sealed with it become unreadable, so re-encrypt
    /// them first. The active key cannot be removed.
    pub fn remove_key(&mut self, id: KeyId) -> Result<()> {
        if id == self.active {
            return Err(Error::key_config(
                format!("key {id}"),
                "cannot remove the active key; promote another key first",
            ));
        }
        if self.keys.remove(&id).is_none() {
            return Err(Error::UnknownKeyId { id });
        }
        self.cache_write().retain(|(key_id, _), _| *key_id != id);
        Ok(())
    }

    /// The id new values are sealed with.
    pub fn active_key_id(&self) -> KeyId {
        self.active
    }

    /// Every encryption key id held, ascending.
    pub fn key_ids(&self) -> impl Iterator<Item = KeyId> + '_ {
        self.keys.keys().copied()
    }

    /// Adds a blind-index root key. The first one added becomes active.
    pub fn add_blind_index_key(&mut self, id: KeyId, key: [u8; KEY_LEN]) -> Result<()> {
        self.insert_blind_index_key(id, RootKey(Zeroizing::new(key)))
    }

    fn insert_blind_index_key(&mut self, id: KeyId, key: RootKey) -> Result<()> {
        check_blind_index_id(&format!("blind-index key {id}"), id)?;
        if self.blind_index_keys.contains_key(&id) {
            return Err(Error::key_config(
                format!("blind-index key {id}"),
                "the keyring already holds this blind-index key id",
            ));
        }
        self.blind_index_keys.insert(id, key);
        self.active_blind_index.get_or_insert(id);
        Ok(())
    }

    /// Makes `id` the blind-index key new index values are computed with.
    pub fn promote_blind_index_key(&mut self, id: KeyId) -> Result<()> {
        if !self.blind_index_keys.contains_key(&id) {
            return Err(Error::key_config(
                format!("blind-index key {id}"),
                "no blind-index key with this id; add it first",
            ));
        }
        self.active_blind_index = Some(id);
        Ok(())
    }

    /// Retires blind-index key `id`: lookups stop querying index values of that version. Run
    /// the index backfill first so no row still holds one. The active key cannot be removed.
    pub fn remove_blind_index_key(&mut self, id: KeyId) -> Result<()> {
        if Some(id) == self.active_blind_index {
            return Err(Error::key_config(
                format!("blind-index key {id}"),
                "cannot remove the active blind-index key; promote another one first",
            ));
        }
        if self.blind_index_keys.remove(&id).is_none() {
            return Err(Error::key_config(
                format!("blind-index key {id}"),
                "no blind-index key with this id",
            ));
        }
        self.index_macs
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(version, _), _| *version != id);
        Ok(())
    }

    /// The active blind-index key id, if any blind-index key is loaded.
    pub fn active_blind_index_key_id(&self) -> Option<KeyId> {
        self.active_blind_index
    }

    /// Every blind-index key id held, ascending.
    pub fn blind_index_key_ids(&self) -> impl Iterator<Item = KeyId> + '_ {
        self.blind_index_keys.keys().copied()
    }

    pub(super) fn cache_read(&self) -> std::sync::RwLockReadGuard<'_, CipherCache> {
        // The cache holds derived values only; a panic elsewhere cannot leave it inconsistent.
        self.ciphers.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn cache_write(&self) -> std::sync::RwLockWriteGuard<'_, CipherCache> {
        self.ciphers.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// Blind-index values start with their key id as one byte (FORMAT.md), so ids are 1..=255.
pub(super) fn check_blind_index_id(origin: &str, id: KeyId) -> Result<()> {
    if (1..=255).contains(&id.0) {
        Ok(())
    } else {
        Err(Error::key_config(
            origin,
            format!(
                "blind-index key id {id} is out of range: blind-index key ids are 1 to 255 \
                 (each index value records its key id in one byte)"
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn promote_and_remove() {
        let mut ring = Keyring::new(KeyId(1), [1u8; 32]);
        assert!(matches!(
            ring.promote(KeyId(2)),
            Err(Error::UnknownKeyId { id: KeyId(2) })
        ));
        ring.add_key(KeyId(2), [2u8; 32]).expect("add");
        assert!(ring.add_key(KeyId(2), [3u8; 32]).is_err());
        ring.promote(KeyId(2)).expect("promote");
        assert!(
            ring.remove_key(KeyId(2)).is_err(),
            "active key cannot be removed"
        );
        ring.remove_key(KeyId(1)).expect("remove old");
        assert_eq!(ring.key_ids().collect::<Vec<_>>(), vec![KeyId(2)]);
    }
}
