//! What the keyring derives from root keys and keeps: per-column ciphers (the XAES key
//! schedule and associated data that sealing uses) and per-index HMAC states (that blind
//! indexes use), in maps keyed by (key id, context).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use xaes_256_gcm::Xaes256Gcm;
use zeroize::Zeroizing;

use super::material::{KEY_LEN, push_length_prefixed};
use crate::context::Context;
use crate::envelope;
use crate::key_id::KeyId;

/// A per-column cipher: the XAES key schedule (wiped on drop) and the associated data for
/// envelopes sealed with it.
pub(crate) struct ColumnCipher {
    pub(crate) aead: Xaes256Gcm,
    pub(crate) aad: Box<[u8]>,
    pub(crate) key_id: KeyId,
    pub(crate) ctx: Context,
}

impl ColumnCipher {
    pub(crate) fn new(subkey: &Zeroizing<[u8; KEY_LEN]>, key_id: KeyId, ctx: Context) -> Self {
        ColumnCipher {
            aead: Xaes256Gcm::new(&(**subkey).into()),
            aad: associated_data(key_id, ctx).into_boxed_slice(),
            key_id,
            ctx,
        }
    }
}

/// `header || lp(table) || lp(column)`, where `lp` is a u16 big-endian length prefix.
pub(crate) fn associated_data(key_id: KeyId, ctx: Context) -> Vec<u8> {
    let mut aad =
        Vec::with_capacity(envelope::HEADER_LEN + 4 + ctx.table().len() + ctx.column().len());
    aad.extend_from_slice(&envelope::header(key_id));
    push_length_prefixed(&mut aad, ctx.table().as_bytes());
    push_length_prefixed(&mut aad, ctx.column().as_bytes());
    aad
}

/// A keyed HMAC-SHA256 state for one (blind-index key, table, index), cloned per value so
/// the key schedule runs once. The `hmac` crate's `zeroize` feature wipes it on drop.
pub(crate) struct IndexMac(Hmac<Sha256>);

impl IndexMac {
    pub(crate) fn new(key: &Zeroizing<[u8; KEY_LEN]>) -> Self {
        match Hmac::<Sha256>::new_from_slice(key.as_slice()) {
            Ok(mac) => IndexMac(mac),
            // HMAC takes keys of any length.
            Err(_) => unreachable!("HMAC accepts 32-byte keys"),
        }
    }

    pub(crate) fn tag(&self, message: &[u8]) -> [u8; 32] {
        let mut mac = self.0.clone();
        mac.update(message);
        mac.finalize().into_bytes().into()
    }
}

/// Per-column ciphers by (key id, context).
pub(super) type CipherCache = HashMap<(KeyId, Context), Arc<ColumnCipher>, FxBuildHasher>;

/// The hasher of the keyring's caches: FxHash (rustc's multiply-rotate hash) instead of the
/// standard SipHash. Every seal and open looks up its column's cipher, hashing the table and
/// column names; with SipHash that lookup was about 4% of sealing a 1 KiB value (callgrind,
/// BENCHMARKS.md). SipHash's resistance to collision flooding buys nothing here: the keys
/// are the application's own (key id, table, column) names, never input from users, and
/// there are as many as the schema has encrypted columns.
#[derive(Default, Clone, Copy)]
pub(super) struct FxHasher(u64);

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

pub(super) type FxBuildHasher = BuildHasherDefault<FxHasher>;
