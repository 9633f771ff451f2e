//! Appending to the audit log: a hash chain (`clinic audit verify` checks it).
//!
//! Every entry carries `seq` (1, 2, 3, … without gaps) and a MAC over its content and the
//! previous entry's MAC, keyed from the active blind-index key (see
//! [`audit_entry::Model::chain_mac`]). Triggers keep the database from changing or deleting
//! entries; the chain catches what gets past them (a role that can drop triggers, a forged
//! insert, a restored old file): anything changed, removed or inserted between the first
//! entry and the head breaks a link. Cutting off the tail does not; only a head recorded
//! elsewhere shows it.

use chrono::{SubsecRound, Utc};
use encrypted_columns::{EncryptedString, Keyring};
use sea_orm::ActiveValue::NotSet;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, IntoActiveModel,
    QueryFilter, QueryOrder, QuerySelect, TransactionTrait,
};
use tracing::debug;

use super::{Clinic, Res, db_err};
use crate::entities::audit_entry::{self, GENESIS_MAC};

/// The PostgreSQL advisory lock that serializes appenders: any constant every clinic process
/// agrees on ("clinAUDT"). Taking it needs no privilege on any table.
const PG_CHAIN_LOCK: i64 = 0x636c_696e_4155_4454;

/// One entry to append: the caller's part of it.
struct NewEntry {
    action: String,
    record: String,
    patient_id: Option<i32>,
    summary: String,
    details: Option<Vec<u8>>,
}

impl Clinic {
    /// Appends an audit entry, chained to the current head. `summary` is fixed text (never
    /// PHI); `details`, if any, is sealed with `ring`'s active key, which must be the
    /// patient's data key, so it becomes unreadable when the patient is erased.
    ///
    /// Call it inside a transaction (every caller does): the lock that keeps concurrent
    /// appenders from reading the same head is held until that transaction ends. Outside one,
    /// a racing append fails on the UNIQUE `seq` rather than forking the chain.
    #[allow(clippy::too_many_arguments)]
    pub async fn audit<C: ConnectionTrait>(
        &self,
        db: &C,
        action: &str,
        record: String,
        patient_id: Option<i32>,
        summary: &str,
        details: Option<(&Keyring, &str)>,
    ) -> Res<()> {
        let details = match details {
            None => None,
            Some((ring, text)) => Some(
                EncryptedString::<audit_entry::Details>::new_with(ring, text.to_owned())
                    .map_err(|e| e.to_string())?
                    .envelope()
                    .to_vec(),
            ),
        };
        self.append(
            db,
            vec![NewEntry {
                action: action.to_owned(),
                record,
                patient_id,
                summary: summary.to_owned(),
                details,
            }],
        )
        .await?;
        debug!(action, patient_id, "audit entry appended");
        Ok(())
    }

    /// Records reads of several patients' records: one entry per record, in one transaction
    /// and under one lock.
    pub async fn audit_reads(
        &self,
        summary: &str,
        rows: impl IntoIterator<Item = (String, i32)>,
    ) -> Res<()> {
        let entries: Vec<NewEntry> = rows
            .into_iter()
            .map(|(record, patient_id)| NewEntry {
                action: "read".to_owned(),
                record,
                patient_id: Some(patient_id),
                summary: summary.to_owned(),
                details: None,
            })
            .collect();
        if entries.is_empty() {
            return Ok(());
        }
        let txn = self.db.begin().await.map_err(db_err)?;
        let count = entries.len();
        self.append(&txn, entries).await?;
        txn.commit().await.map_err(db_err)?;
        debug!(count, "audit reads appended");
        Ok(())
    }

    /// Appends `entries` after the head, one link each.
    async fn append<C: ConnectionTrait>(&self, db: &C, entries: Vec<NewEntry>) -> Res<()> {
        let mac_key = self.master.active_blind_index_key_id().ok_or(
            "cannot write the audit log: no blind-index key is loaded (it keys the chain)",
        )?;
        let mac_key = i32::try_from(mac_key.0).map_err(|_| {
            format!("cannot write the audit log: blind-index key id {mac_key} is too large")
        })?;
        let backend = db.get_database_backend();
        // Serialize appenders until the caller's transaction ends, so no two read the same
        // head. On the servers this needs no privilege beyond SELECT on `audit_log`, so the
        // application role of the README's role split can do it.
        match backend {
            DbBackend::Postgres => {
                db.execute_unprepared(&format!("SELECT pg_advisory_xact_lock({PG_CHAIN_LOCK})"))
                    .await
                    .map_err(db_err)?;
            }
            DbBackend::MySql => {
                // InnoDB: locking the head itself deadlocks (each appender's descending scan
                // also gap-locks past the head, which blocks the other's insert). Entry 1 is
                // a row every appender locks first instead, a plain record lock; only the
                // very first append of a new chain races, and then one of them fails.
                db.execute_unprepared("SELECT id FROM audit_log WHERE seq = 1 FOR UPDATE")
                    .await
                    .map_err(db_err)?;
            }
            _ => {
                // SQLite: take the write lock before reading the head. A deferred
                // transaction that read first could not upgrade once another writer had
                // committed, and would fail instead of waiting its turn. Deletes nothing.
                db.execute_unprepared("DELETE FROM audit_log WHERE 0")
                    .await
                    .map_err(db_err)?;
            }
        }
        let mut head = audit_entry::Entity::find()
            .filter(audit_entry::Column::Seq.is_not_null())
            .order_by_desc(audit_entry::Column::Seq);
        if backend == DbBackend::MySql {
            // A current read: REPEATABLE READ would otherwise show the transaction's snapshot.
            head = head.lock_exclusive();
        }
        let head = head.one(db).await.map_err(db_err)?;
        let (mut seq, mut prev) = match head {
            Some(h) => (
                h.seq.unwrap_or(0),
                // A damaged head still gets linked to, as stored: verify reports it.
                h.mac.unwrap_or_default(),
            ),
            None => (0, GENESIS_MAC.to_vec()),
        };
        // Microseconds: what PostgreSQL and MySQL's timestamp(6) keep, so the MAC computed now
        // matches the entry read back.
        let at = Utc::now().trunc_subsecs(6);
        for entry in entries {
            // Checked: the head's seq is whatever the database holds, damaged or not.
            seq = seq.checked_add(1).ok_or(
                "cannot write the audit log: its head has the largest possible seq; the log \
                 is damaged (see `clinic audit verify`)",
            )?;
            let mut row = audit_entry::Model {
                id: 0,
                at,
                actor: self.actor.clone(),
                action: entry.action,
                record: entry.record,
                patient_id: entry.patient_id,
                summary: entry.summary,
                details: entry.details,
                seq: Some(seq),
                mac: None,
                mac_key: Some(mac_key),
            };
            let mac = row.chain_mac(&self.master, seq, mac_key, &prev)?;
            row.mac = Some(mac.to_vec());
            let mut active = row.into_active_model();
            active.id = NotSet;
            active.insert(db).await.map_err(db_err)?;
            prev = mac.to_vec();
        }
        Ok(())
    }
}
