//! A row of the append-only `audit_log`. `summary` is fixed text from the application, never
//! PHI, readable forever. `details` stays raw bytes here: an envelope sealed with the
//! patient's data key, opened row by row so that an erased patient's entries still list
//! (their details as "unreadable: patient erased"). Nothing in the log is sealed with the
//! clinic key, so rotating that key never has to rewrite this append-only table.
//!
//! Entries form a hash chain (`seq`, `mac`, `mac_key`; see `clinic::audit`): a changed,
//! removed or forged entry breaks it, and `clinic audit verify` names where. Entries written
//! before the chain existed have NULL in all three.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use encrypted_columns::blind_index::{BlindIndex, IndexInput, Pipeline};
use encrypted_columns::{KeyId, Keyring, column_context};
use sea_orm::entity::prelude::*;

column_context!(pub Details, table = "audit_log", column = "details");

/// A row of `audit_log`.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "audit_log")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    /// `read`, `create`, `update`, `erase`, `rotate`, `search`.
    pub action: String,
    /// Which record, e.g. `patients#12`, `clinical_notes#7`.
    pub record: String,
    pub patient_id: Option<i32>,
    /// What happened, in words fixed by the application.
    pub summary: String,
    /// Envelope of a short description; never plaintext.
    pub details: Option<Vec<u8>>,
    /// Place in the chain, 1, 2, 3, … without gaps (UNIQUE); NULL before the chain.
    pub seq: Option<i64>,
    /// HMAC-SHA256 over this entry and the previous entry's `mac` (32 bytes).
    pub mac: Option<Vec<u8>>,
    /// The blind-index key id whose derived key made `mac`.
    pub mac_key: Option<i32>,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

/// Length of a chain MAC (HMAC-SHA256).
pub const MAC_LEN: usize = 32;

/// What the first chained entry links to in place of a previous MAC.
pub const GENESIS_MAC: [u8; MAC_LEN] = [0; MAC_LEN];

/// Tells a chain message apart from anything else ever MACed with this key, and lets a later
/// encoding change its version.
const CHAIN_DOMAIN: &[u8] = b"clinic audit chain v1";

/// The chain's MAC, through the library's blind-index machinery: HMAC-SHA256 under an HKDF
/// subkey of a blind-index root key bound to ("audit_log", "chain_mac"), all 256 bits kept.
/// The blind-index key is the clinic's long-lived MAC key: the clinic key rotates and patient
/// keys are erased, and either would leave old entries unverifiable.
fn chain_index() -> BlindIndex {
    BlindIndex::new("audit_log", "chain_mac").field(Pipeline::identity())
}

/// Appends `bytes` with a u32 big-endian length in front, so no two field sequences encode
/// to the same message.
fn push_lp(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

impl Model {
    /// The bytes the MAC of this entry covers, as entry `seq` of the chain MACed with
    /// blind-index key `mac_key`, after the entry whose MAC is `prev`: every column but `id`
    /// (assigned by the database) and `mac` itself, fixed-width or length-prefixed.
    fn chain_message(&self, seq: i64, mac_key: i32, prev: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + self.details.as_ref().map_or(0, Vec::len));
        push_lp(&mut out, CHAIN_DOMAIN);
        out.extend_from_slice(&seq.to_be_bytes());
        // Microseconds: what every backend stores (MySQL's column is timestamp(6)).
        out.extend_from_slice(&self.at.timestamp_micros().to_be_bytes());
        push_lp(&mut out, self.actor.as_bytes());
        push_lp(&mut out, self.action.as_bytes());
        push_lp(&mut out, self.record.as_bytes());
        match self.patient_id {
            None => out.push(0),
            Some(id) => {
                out.push(1);
                out.extend_from_slice(&id.to_be_bytes());
            }
        }
        push_lp(&mut out, self.summary.as_bytes());
        match &self.details {
            None => out.push(0),
            Some(bytes) => {
                out.push(1);
                push_lp(&mut out, bytes);
            }
        }
        out.extend_from_slice(&mac_key.to_be_bytes());
        push_lp(&mut out, prev);
        out
    }

    /// The MAC of this entry as entry `seq`, made with blind-index key `mac_key` of `ring`,
    /// linked to the previous entry's MAC `prev` ([`GENESIS_MAC`] for the first).
    pub fn chain_mac(
        &self,
        ring: &Keyring,
        seq: i64,
        mac_key: i32,
        prev: &[u8],
    ) -> Result<[u8; MAC_LEN], String> {
        let key = u32::try_from(mac_key)
            .ok()
            .map(KeyId)
            .filter(|id| ring.blind_index_key_ids().any(|held| held == *id))
            .ok_or_else(|| {
                format!(
                    "blind-index key {mac_key} is not loaded (ENCRYPTED_COLUMNS_BLIND_INDEX_KEYS)"
                )
            })?;
        let message = self.chain_message(seq, mac_key, prev);
        let value = chain_index()
            .compute_version(ring, key, &[Some(IndexInput::Bytes(Cow::Owned(message)))])
            .map_err(|e| e.to_string())?
            .ok_or("the chain MAC has no input")?;
        // A blind-index value is one version byte, then the kept bits: all 256 here.
        value
            .get(1..)
            .and_then(|tag| <[u8; MAC_LEN]>::try_from(tag).ok())
            .ok_or_else(|| "the chain MAC has an unexpected length".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn entry() -> Model {
        Model {
            id: 7,
            at: Utc.timestamp_opt(1_700_000_000, 123_456_000).unwrap(),
            actor: "ab".into(),
            action: "c".into(),
            record: "patients#1".into(),
            patient_id: Some(1),
            summary: "patient record shown".into(),
            details: Some(vec![1, 2, 3]),
            seq: Some(3),
            mac: None,
            mac_key: Some(1),
        }
    }

    #[test]
    fn the_mac_covers_every_field_and_the_link() {
        let ring = Keyring::generate();
        let base = entry();
        let mac = base.chain_mac(&ring, 3, 1, &GENESIS_MAC).unwrap();
        // Deterministic, and `id` (assigned by the database) is not covered.
        let same = Model { id: 99, ..entry() };
        assert_eq!(same.chain_mac(&ring, 3, 1, &GENESIS_MAC).unwrap(), mac);
        let changed = [
            Model {
                at: base.at + chrono::Duration::microseconds(1),
                ..entry()
            },
            // Field boundaries: "ab" + "c" is not "a" + "bc".
            Model {
                actor: "a".into(),
                action: "bc".into(),
                ..entry()
            },
            Model {
                record: "patients#2".into(),
                ..entry()
            },
            Model {
                patient_id: None,
                ..entry()
            },
            Model {
                summary: "patient record changed".into(),
                ..entry()
            },
            Model {
                details: None,
                ..entry()
            },
            Model {
                details: Some(vec![]),
                ..entry()
            },
        ];
        for other in &changed {
            assert_ne!(
                other.chain_mac(&ring, 3, 1, &GENESIS_MAC).unwrap(),
                mac,
                "{other:?}"
            );
        }
        assert_ne!(base.chain_mac(&ring, 4, 1, &GENESIS_MAC).unwrap(), mac);
        assert_ne!(base.chain_mac(&ring, 3, 1, &[1; MAC_LEN]).unwrap(), mac);
        // Another key: another MAC; a key that is not loaded: a typed refusal, no panic.
        assert_ne!(
            base.chain_mac(&Keyring::generate(), 3, 1, &GENESIS_MAC)
                .unwrap(),
            mac
        );
        for missing in [2, -1] {
            let err = base.chain_mac(&ring, 3, missing, &GENESIS_MAC).unwrap_err();
            assert!(err.contains("is not loaded"), "{err}");
        }
    }
}
