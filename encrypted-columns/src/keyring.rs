//! The keyring: versioned root keys, their loading, per-column subkeys, and the process-wide
//! (or task-scoped) installation that SeaORM's conversion traits read from.
//!
//! # Key hierarchy
//! * **Encryption root keys**, one per [`KeyId`]. Exactly one is *active*: new values are
//!   sealed with it. The others stay decrypt-only until you remove them, so rotation is "add
//!   the new key everywhere, then promote it" (see [`Keyring::add_key`], [`Keyring::promote`]).
//! * **Per-column subkeys**: HKDF-SHA256 of the root key with the logical (table, column) in
//!   `info`, so each column has its own key and a ciphertext copied between columns fails.
//! * **Blind-index root keys**: a separate, versioned set, never used for encryption; per-index
//!   keys derive from them with their own HKDF label ([`Keyring::blind_index_key`]).
//!
//! All key bytes live in [`Zeroizing`] buffers and are wiped on drop; `Debug` prints key ids
//! only. `FORMAT.md` documents the derivations byte for byte.
//!
//! # Environment
//! | variable | meaning |
//! |---|---|
//! | `ENCRYPTED_COLUMNS_KEYS` | required: comma-separated `<id>:<base64 of 32 bytes>`, e.g. `1:q83v…=,2:7Xk…=` |
//! | `ENCRYPTED_COLUMNS_ACTIVE_KEY` | id that seals new values; required when more than one key is listed |
//! | `ENCRYPTED_COLUMNS_BLIND_INDEX_KEYS` | optional: blind-index root keys, same format |
//! | `ENCRYPTED_COLUMNS_ACTIVE_BLIND_INDEX_KEY` | active blind-index key id; required when more than one is listed |

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, RwLock};

use base64::Engine as _;
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::blind_index::IndexMac;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::seal::ColumnCipher;

/// Length of every root key, in bytes (256 bits).
pub const KEY_LEN: usize = 32;

/// Variable holding the encryption root keys.
pub const ENV_KEYS: &str = "ENCRYPTED_COLUMNS_KEYS";
/// Variable naming the active encryption key id.
pub const ENV_ACTIVE_KEY: &str = "ENCRYPTED_COLUMNS_ACTIVE_KEY";
/// Variable holding the blind-index root keys.
pub const ENV_BLIND_INDEX_KEYS: &str = "ENCRYPTED_COLUMNS_BLIND_INDEX_KEYS";
/// Variable naming the active blind-index key id.
pub const ENV_ACTIVE_BLIND_INDEX_KEY: &str = "ENCRYPTED_COLUMNS_ACTIVE_BLIND_INDEX_KEY";

/// HKDF salt shared by every derivation of format version 1.
pub(crate) const HKDF_SALT: &[u8] = b"encrypted-columns/v1";
const LABEL_COLUMN_KEY: &[u8] = b"column-key";
const LABEL_BLIND_INDEX_KEY: &[u8] = b"blind-index-key";

/// Identifies a root key. Recorded in every envelope (big-endian `u32`) so old values stay
/// readable after rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub u32);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl From<u32> for KeyId {
    fn from(id: u32) -> Self {
        KeyId(id)
    }
}

/// 32 bytes of root key material, wiped on drop, never printed.
#[derive(Clone)]
struct RootKey(Zeroizing<[u8; KEY_LEN]>);

impl RootKey {
    fn from_slice(bytes: &[u8], origin: &str) -> Result<Self> {
        let array: [u8; KEY_LEN] = bytes.try_into().map_err(|_| {
            Error::key_config(
                origin,
                format!(
                    "key is {} bytes; keys must be exactly {KEY_LEN} bytes (256 bits) of random data",
                    bytes.len()
                ),
            )
        })?;
        Ok(RootKey(Zeroizing::new(array)))
    }

    fn derive(&self, label: &[u8], names: &[&str]) -> Zeroizing<[u8; KEY_LEN]> {
        let hk = Hkdf::<Sha256>::new(Some(HKDF_SALT), self.0.as_slice());
        let info = derivation_info(label, names);
        let mut okm = Zeroizing::new([0u8; KEY_LEN]);
        match hk.expand(&info, okm.as_mut_slice()) {
            Ok(()) => okm,
            // HKDF-SHA256 can expand up to 8160 bytes; 32 never fails.
            Err(_) => unreachable!("HKDF-SHA256 output of 32 bytes is always valid"),
        }
    }
}

/// `label || 0x00 || for each name: u16-be length || bytes`.
fn derivation_info(label: &[u8], names: &[&str]) -> Vec<u8> {
    let mut info =
        Vec::with_capacity(label.len() + 1 + names.iter().map(|n| n.len() + 2).sum::<usize>());
    info.extend_from_slice(label);
    info.push(0);
    for name in names {
        push_length_prefixed(&mut info, name.as_bytes());
    }
    info
}

pub(crate) fn push_length_prefixed(out: &mut Vec<u8>, bytes: &[u8]) {
    // Context names are validated to fit in u16 before any derivation.
    let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Per-column ciphers by (key id, context).
type CipherCache = HashMap<(KeyId, Context), Arc<ColumnCipher>, FxBuildHasher>;

/// The hasher of the keyring's caches: FxHash (rustc's multiply-rotate hash) instead of the
/// standard SipHash. Every seal and open looks up its column's cipher, hashing the table and
/// column names; with SipHash that lookup was about 4% of sealing a 1 KiB value (callgrind,
/// BENCHMARKS.md). SipHash's resistance to collision flooding buys nothing here: the keys
/// are the application's own (key id, table, column) names, never input from users, and
/// there are as many as the schema has encrypted columns.
#[derive(Default, Clone, Copy)]
struct FxHasher(u64);

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

type FxBuildHasher = BuildHasherDefault<FxHasher>;

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
    keys: BTreeMap<KeyId, RootKey>,
    active: KeyId,
    blind_index_keys: BTreeMap<KeyId, RootKey>,
    active_blind_index: Option<KeyId>,
    ciphers: RwLock<CipherCache>,
    /// Keyed HMAC states per (blind-index key, table, index): deriving a key costs more than
    /// computing an index value, so each is derived once.
    index_macs: RwLock<HashMap<(KeyId, Context), Arc<IndexMac>, FxBuildHasher>>,
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
    /// to read several tenants' rows in one query.
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

    /// The HMAC key of one blind index: HKDF-SHA256 of blind-index root key `version` with
    /// `info = "blind-index-key" 0x00 lp(table) lp(index)` (see FORMAT.md).
    pub fn blind_index_key(
        &self,
        version: KeyId,
        table: &str,
        index: &str,
    ) -> Result<Zeroizing<[u8; KEY_LEN]>> {
        let root = self.blind_index_keys.get(&version).ok_or_else(|| {
            Error::key_config(
                ENV_BLIND_INDEX_KEYS,
                format!(
                    "no blind-index key with id {version}; set {ENV_BLIND_INDEX_KEYS} to \
                     `<id>:<base64 of 32 bytes>`"
                ),
            )
        })?;
        Ok(root.derive(LABEL_BLIND_INDEX_KEY, &[table, index]))
    }

    /// Loads keys from the process environment (see the [module docs](self) for variables).
    ///
    /// Errors name the variable and what is wrong with it, never the key bytes.
    pub fn from_env() -> Result<Self> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// Like [`Keyring::from_env`], reading variables through `lookup` (for tests, or
    /// configuration systems other than the environment).
    ///
    /// ```
    /// use encrypted_columns::{Keyring, KeyId};
    /// let keys = "1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    /// let ring = Keyring::from_vars(|name| (name == "ENCRYPTED_COLUMNS_KEYS").then(|| keys.to_string()))?;
    /// assert_eq!(ring.active_key_id(), KeyId(1));
    ///
    /// let err = Keyring::from_vars(|_| None).unwrap_err();
    /// assert!(err.to_string().contains("ENCRYPTED_COLUMNS_KEYS is not set"));
    /// # Ok::<(), encrypted_columns::Error>(())
    /// ```
    pub fn from_vars(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let keys_var = lookup(ENV_KEYS).map(Zeroizing::new);
        let keys_var = keys_var
            .as_deref()
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| {
                Error::key_config(
                    ENV_KEYS,
                    format!(
                        "{ENV_KEYS} is not set: set it to `<id>:<base64 of 32 random bytes>`, e.g. \
                     `{ENV_KEYS}=1:$(head -c 32 /dev/urandom | base64)`"
                    ),
                )
            })?;
        let keys = parse_key_list(ENV_KEYS, keys_var)?;
        let active = pick_active(ENV_KEYS, ENV_ACTIVE_KEY, &keys, lookup(ENV_ACTIVE_KEY))?;

        let blind = lookup(ENV_BLIND_INDEX_KEYS).map(Zeroizing::new);
        let blind_index_keys = match blind.as_deref().filter(|v| !v.trim().is_empty()) {
            Some(v) => parse_key_list(ENV_BLIND_INDEX_KEYS, v)?,
            None => BTreeMap::new(),
        };
        for id in blind_index_keys.keys() {
            check_blind_index_id(ENV_BLIND_INDEX_KEYS, *id)?;
        }
        let active_blind_index = if blind_index_keys.is_empty() {
            None
        } else {
            Some(pick_active(
                ENV_BLIND_INDEX_KEYS,
                ENV_ACTIVE_BLIND_INDEX_KEY,
                &blind_index_keys,
                lookup(ENV_ACTIVE_BLIND_INDEX_KEY),
            )?)
        };
        // Load-time check, not on a hot path, so a plain comparison is fine: one secret
        // serving two purposes would defeat the separation between ciphertexts and indexes.
        for (bid, bkey) in &blind_index_keys {
            for (eid, ekey) in &keys {
                if bkey.0 == ekey.0 {
                    return Err(Error::key_config(
                        ENV_BLIND_INDEX_KEYS,
                        format!(
                            "blind-index key {bid} equals encryption key {eid}; generate a \
                             separate random key for blind indexes"
                        ),
                    ));
                }
            }
        }
        Ok(Keyring {
            keys,
            active,
            blind_index_keys,
            active_blind_index,
            ciphers: RwLock::default(),
            index_macs: RwLock::default(),
        })
    }

    /// The cached cipher for `(key_id, context)`, deriving it on first use.
    pub(crate) fn cipher(&self, key_id: KeyId, ctx: Context) -> Result<Arc<ColumnCipher>> {
        if let Some(cipher) = self.cache_read().get(&(key_id, ctx)) {
            return Ok(Arc::clone(cipher));
        }
        let root = self
            .keys
            .get(&key_id)
            .ok_or(Error::UnknownKeyId { id: key_id })?;
        ctx.validate()?;
        let subkey = root.derive(LABEL_COLUMN_KEY, &[ctx.table(), ctx.column()]);
        let cipher = Arc::new(ColumnCipher::new(&subkey, key_id, ctx));
        Ok(Arc::clone(
            self.cache_write().entry((key_id, ctx)).or_insert(cipher),
        ))
    }

    /// The keyed HMAC state for blind index `index` of `table` under blind-index key
    /// `version`, deriving it on first use (FORMAT.md, "Blind indexes").
    pub(crate) fn index_mac(&self, version: KeyId, index: Context) -> Result<Arc<IndexMac>> {
        let cached = self
            .index_macs
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(version, index))
            .cloned();
        if let Some(mac) = cached {
            return Ok(mac);
        }
        index.validate()?;
        let key = self.blind_index_key(version, index.table(), index.column())?;
        let mac = Arc::new(IndexMac::new(&key));
        Ok(Arc::clone(
            self.index_macs
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .entry((version, index))
                .or_insert(mac),
        ))
    }

    fn cache_read(&self) -> std::sync::RwLockReadGuard<'_, CipherCache> {
        // The cache holds derived values only; a panic elsewhere cannot leave it inconsistent.
        self.ciphers.read().unwrap_or_else(|p| p.into_inner())
    }

    fn cache_write(&self) -> std::sync::RwLockWriteGuard<'_, CipherCache> {
        self.ciphers.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// Blind-index values start with their key id as one byte (FORMAT.md), so ids are 1..=255.
fn check_blind_index_id(origin: &str, id: KeyId) -> Result<()> {
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

fn parse_key_list(var: &str, value: &str) -> Result<BTreeMap<KeyId, RootKey>> {
    let mut keys = BTreeMap::new();
    for (index, entry) in value.split(',').map(str::trim).enumerate() {
        let position = index + 1;
        if entry.is_empty() {
            return Err(Error::key_config(
                var,
                format!(
                    "entry {position} is empty; expected `<id>:<base64 key>` entries separated by commas"
                ),
            ));
        }
        let (id, b64) = entry.split_once(':').ok_or_else(|| {
            Error::key_config(
                var,
                format!("entry {position} has no `:`; expected `<id>:<base64 key>`, e.g. `1:<44 base64 characters>`"),
            )
        })?;
        let id = parse_id(var, &format!("entry {position}"), id)?;
        let bytes = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|_| {
                    Error::key_config(
                        var,
                        format!("key {id} is not valid base64 (standard alphabet, e.g. the output of `base64`)"),
                    )
                })?,
        );
        let key = RootKey::from_slice(&bytes, &format!("{var}: key {id}"))
            .map_err(|_| {
                Error::key_config(
                    var,
                    format!(
                        "key {id} decodes to {} bytes; keys must be exactly {KEY_LEN} bytes (generate one with `head -c 32 /dev/urandom | base64`)",
                        bytes.len()
                    ),
                )
            })?;
        if keys.insert(id, key).is_some() {
            return Err(Error::key_config(var, format!("key id {id} appears twice")));
        }
    }
    Ok(keys)
}

fn parse_id(var: &str, what: &str, raw: &str) -> Result<KeyId> {
    raw.trim().parse::<u32>().map(KeyId).map_err(|_| {
        Error::key_config(
            var,
            format!(
                "{what}: key id {:?} is not a whole number from 0 to 4294967295",
                raw.trim()
            ),
        )
    })
}

fn pick_active(
    keys_var: &str,
    active_var: &str,
    keys: &BTreeMap<KeyId, RootKey>,
    active: Option<String>,
) -> Result<KeyId> {
    match active.as_deref().map(str::trim).filter(|v| !v.is_empty()) {
        Some(raw) => {
            let id = parse_id(active_var, "value", raw)?;
            if keys.contains_key(&id) {
                Ok(id)
            } else {
                Err(Error::key_config(
                    active_var,
                    format!(
                        "names key {id}, but {keys_var} holds only {}",
                        list_ids(keys)
                    ),
                ))
            }
        }
        None => match keys.keys().copied().collect::<Vec<_>>().as_slice() {
            [only] => Ok(*only),
            _ => Err(Error::key_config(
                active_var,
                format!(
                    "{active_var} is not set but {keys_var} holds {} keys ({}); set it to the id new values are sealed with",
                    keys.len(),
                    list_ids(keys)
                ),
            )),
        },
    }
}

fn list_ids(keys: &BTreeMap<KeyId, RootKey>) -> String {
    keys.keys()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// 32 bytes from the operating system's CSPRNG, for a new root key.
pub fn generate_key() -> Zeroizing<[u8; KEY_LEN]> {
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    rand::Rng::fill_bytes(&mut rand::rng(), key.as_mut_slice());
    key
}

/// A fresh key as `<id>:<base64>`, the format of `ENCRYPTED_COLUMNS_KEYS` entries.
pub fn generate_key_entry(id: KeyId) -> Zeroizing<String> {
    let key = generate_key();
    Zeroizing::new(format!(
        "{id}:{}",
        base64::engine::general_purpose::STANDARD.encode(key.as_slice())
    ))
}

// ---------------------------------------------------------------------------------------------
// Installation: SeaORM's `Into<Value>` and `TryGetable` get no connection or context, so the
// keyring they use must be reachable without arguments.

static GLOBAL: RwLock<Option<Arc<Keyring>>> = RwLock::new(None);

tokio::task_local! {
    static SCOPED: Arc<Keyring>;
}

/// Installs `keyring` for the whole process, replacing any earlier one (which is returned).
///
/// ```
/// use encrypted_columns::{keyring, Keyring};
/// keyring::install(Keyring::generate());
/// assert!(keyring::current().is_ok());
/// ```
pub fn install(keyring: impl Into<Arc<Keyring>>) -> Option<Arc<Keyring>> {
    let mut global = GLOBAL.write().unwrap_or_else(|p| p.into_inner());
    global.replace(keyring.into())
}

/// Removes the process-wide keyring, returning it.
pub fn uninstall() -> Option<Arc<Keyring>> {
    GLOBAL.write().unwrap_or_else(|p| p.into_inner()).take()
}

/// The keyring in force here: the task's [`scope`] if any, else the installed one.
pub fn current() -> Result<Arc<Keyring>> {
    if let Ok(scoped) = SCOPED.try_with(Arc::clone) {
        return Ok(scoped);
    }
    GLOBAL
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .ok_or(Error::NoKeyring)
}

/// Runs `future` with `keyring` in force for it (and only it), e.g. per tenant or per test.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::sync::Arc;
/// use encrypted_columns::{keyring, Keyring, KeyId};
/// let tenant = Arc::new(Keyring::new(KeyId(42), [1u8; 32]));
/// let id = keyring::scope(tenant, async { keyring::current().unwrap().active_key_id() }).await;
/// assert_eq!(id, KeyId(42));
/// # }
/// ```
pub async fn scope<F: Future>(keyring: Arc<Keyring>, future: F) -> F::Output {
    SCOPED.scope(keyring, future).await
}

/// Runs `f` with `keyring` in force, synchronously.
pub fn scope_sync<R>(keyring: Arc<Keyring>, f: impl FnOnce() -> R) -> R {
    SCOPED.sync_scope(keyring, f)
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    fn vars<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    fn err(pairs: &[(&str, &str)]) -> String {
        Keyring::from_vars(vars(pairs)).unwrap_err().to_string()
    }

    #[test]
    fn loads_keys_and_active() {
        let two = format!(
            "1:{K1}, 2:{}",
            base64::engine::general_purpose::STANDARD.encode([9u8; 32])
        );
        let ring =
            Keyring::from_vars(vars(&[(ENV_KEYS, &two), (ENV_ACTIVE_KEY, "2")])).expect("loads");
        assert_eq!(ring.active_key_id(), KeyId(2));
        assert_eq!(ring.key_ids().collect::<Vec<_>>(), vec![KeyId(1), KeyId(2)]);
        assert_eq!(ring.active_blind_index_key_id(), None);
    }

    #[test]
    fn bad_configuration_names_variable_and_problem() {
        assert!(err(&[]).contains("ENCRYPTED_COLUMNS_KEYS is not set"));
        assert!(err(&[(ENV_KEYS, K1)]).contains("entry 1 has no `:`"));
        assert!(err(&[(ENV_KEYS, "x:AAAA")]).contains("key id \"x\" is not a whole number"));
        assert!(err(&[(ENV_KEYS, "1:not base64!")]).contains("key 1 is not valid base64"));
        assert!(err(&[(ENV_KEYS, "1:AAAA")]).contains("key 1 decodes to 3 bytes"));
        let dup = format!("1:{K1},1:{K1}");
        assert!(err(&[(ENV_KEYS, &dup)]).contains("key id 1 appears twice"));
        let two = format!(
            "1:{K1},2:{}",
            base64::engine::general_purpose::STANDARD.encode([9u8; 32])
        );
        assert!(err(&[(ENV_KEYS, &two)]).contains("ENCRYPTED_COLUMNS_ACTIVE_KEY is not set"));
        assert!(
            err(&[(ENV_KEYS, &two), (ENV_ACTIVE_KEY, "3")])
                .contains("names key 3, but ENCRYPTED_COLUMNS_KEYS holds only 1, 2")
        );
        let same = format!("7:{K1}");
        let reuse = err(&[
            (ENV_KEYS, &format!("1:{K1}")),
            (ENV_BLIND_INDEX_KEYS, &same),
        ]);
        assert!(
            reuse.contains("blind-index key 7 equals encryption key 1"),
            "{reuse}"
        );
    }

    #[test]
    fn errors_and_debug_never_show_key_material() {
        let ring = Keyring::from_vars(vars(&[(ENV_KEYS, &format!("1:{K1}"))])).expect("loads");
        let debug = format!("{ring:?}");
        assert!(!debug.contains(K1) && !debug.contains("0, 1, 2"), "{debug}");
        let short = err(&[(ENV_KEYS, "1:AAECAwQFBgcI")]);
        assert!(!short.contains("AAECAwQFBgcI"), "{short}");
    }

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

    #[test]
    fn generated_entry_round_trips_through_env_format() {
        let entry = generate_key_entry(KeyId(5));
        let ring = Keyring::from_vars(vars(&[(ENV_KEYS, entry.as_str())])).expect("loads");
        assert_eq!(ring.active_key_id(), KeyId(5));
    }

    #[test]
    fn scope_overrides_global_only_inside() {
        let scoped = Arc::new(Keyring::new(KeyId(99), [5u8; 32]));
        let inside = scope_sync(Arc::clone(&scoped), || current().map(|k| k.active_key_id()));
        assert_eq!(inside, Ok(KeyId(99)));
        let outside = current().map(|k| k.active_key_id());
        assert_ne!(outside, Ok(KeyId(99)));
    }
}
