//! Per-column and per-index subkeys: HKDF of a root key, derived on first use and cached as the
//! cipher or MAC that sealing and blind indexes use (FORMAT.md).

use std::sync::Arc;

use zeroize::Zeroizing;

use super::cache::{ColumnCipher, IndexMac};
use super::env::ENV_BLIND_INDEX_KEYS;
use super::material::{KEY_LEN, LABEL_BLIND_INDEX_KEY, LABEL_COLUMN_KEY};
use super::ring::Keyring;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::key_id::KeyId;

impl Keyring {
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
}
