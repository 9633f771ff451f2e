//! `clinic audit list`: the append-only trail, newest first.
//!
//! Details are sealed with the patient's data key. `list` opens an entry's details only with
//! that patient's own key: the envelope's key id must be the patient's data key id, or the
//! entry is shown as unreadable (a copied envelope must not open under another patient's
//! name, even when that other patient's key is in the keyring for its own entries). An
//! unreadable entry is listed with the reason and the rest of the log still lists; the
//! command fails at the end if any entry was damaged. An erased patient's entries are
//! unreadable by design and are not a failure.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use encrypted_columns::{EncryptedString, Keyring};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde::Serialize;

use crate::clinic::{Clinic, Unbound, bound_to, data_key_id, db_err, seal_err};
use crate::commands::patient::fit;
use crate::commands::{Global, print_json};
use crate::entities::audit_entry;
use crate::entities::{patient, patient_key};
use crate::output::{say, shown};

/// Ids named in a one-line summary; more are counted.
const IDS_NAMED: usize = 20;
/// An audit entry as shown.
#[derive(Debug, Serialize)]
struct EntryView {
    id: i64,
    /// Place in the hash chain; `None` for entries written before the chain.
    seq: Option<i64>,
    at: DateTime<Utc>,
    actor: String,
    action: String,
    record: String,
    patient_id: Option<i32>,
    summary: String,
    /// Opened details, or `(unreadable: …)`; `None` when the entry has none.
    details: Option<String>,
    /// Why the details could not be opened, if they could not.
    unreadable: Option<Unreadable>,
}

/// Why an entry's details cannot be read.
#[derive(Debug, Clone, Serialize)]
struct Unreadable {
    reason: Reason,
    message: String,
}

/// The kinds of unreadable details.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Reason {
    /// The patient was erased (no row, and the log records the erasure): expected, not damage.
    PatientErased,
    /// The patient's row is there but its `patient_keys` row is gone.
    KeyRowMissing,
    /// No patient row, and no erasure recorded for it.
    PatientRowMissing,
    /// The envelope names a key that is not this patient's data key.
    SealedWithOtherKey,
    /// Sealed details on an entry about no patient: nothing to open them with.
    NoPatient,
    /// A malformed envelope, a damaged key row, or an envelope that fails to open.
    Damaged,
}

impl Unreadable {
    fn new(reason: Reason, message: impl Into<String>) -> Self {
        Unreadable {
            reason,
            message: message.into(),
        }
    }
}
/// The patients and keys that entries' details need, read once for the whole listing.
struct Keys {
    /// Patient id → its `patient_keys` row, for patients that still have a row.
    key_row_of: BTreeMap<i32, i32>,
    /// `patient_keys` rows that exist.
    present: BTreeSet<i32>,
    /// Patients without a row whose erasure the log records.
    erased: BTreeSet<i32>,
    /// Keyring(s) holding the present data keys.
    rings: Rings,
}

/// One keyring for every present key, or, when one key row is damaged, one per key row so
/// that the damage only makes that patient's entries unreadable.
enum Rings {
    All(Arc<Keyring>),
    PerRow(BTreeMap<i32, Result<Arc<Keyring>, String>>),
}

impl Keys {
    async fn load(clinic: &Clinic, patient_ids: BTreeSet<i32>) -> Result<Keys, String> {
        let db = &clinic.db;
        let ids: Vec<i32> = patient_ids.iter().copied().collect();
        let rows: Vec<(i32, i32)> = patient::Entity::find()
            .select_only()
            .column(patient::Column::Id)
            .column(patient::Column::KeyId)
            .filter(patient::Column::Id.is_in(ids))
            .into_tuple()
            .all(db)
            .await
            .map_err(db_err)?;
        let key_row_of: BTreeMap<i32, i32> = rows.into_iter().collect();
        let missing: Vec<i32> = patient_ids
            .iter()
            .copied()
            .filter(|id| !key_row_of.contains_key(id))
            .collect();
        let erased: Vec<Option<i32>> = if missing.is_empty() {
            Vec::new()
        } else {
            audit_entry::Entity::find()
                .select_only()
                .column(audit_entry::Column::PatientId)
                .filter(audit_entry::Column::Action.eq("erase"))
                .filter(audit_entry::Column::PatientId.is_in(missing))
                .distinct()
                .into_tuple()
                .all(db)
                .await
                .map_err(db_err)?
        };
        let wanted: BTreeSet<i32> = key_row_of.values().copied().collect();
        let present: Vec<i32> = patient_key::Entity::find()
            .select_only()
            .column(patient_key::Column::Id)
            .filter(patient_key::Column::Id.is_in(wanted))
            .into_tuple()
            .all(db)
            .await
            .map_err(db_err)?;
        let rings = match clinic.reading_ring(db, present.iter().copied()).await {
            Ok(ring) => Rings::All(ring),
            Err(_) => {
                let mut per_row = BTreeMap::new();
                for row in &present {
                    per_row.insert(*row, clinic.reading_ring(db, [*row]).await);
                }
                Rings::PerRow(per_row)
            }
        };
        Ok(Keys {
            key_row_of,
            present: present.into_iter().collect(),
            erased: erased.into_iter().flatten().collect(),
            rings,
        })
    }

    /// Opens `bytes`, the details of an entry about `patient_id`, with that patient's own key
    /// and no other.
    fn open(&self, patient_id: Option<i32>, bytes: Vec<u8>) -> Result<String, Unreadable> {
        let Some(patient_id) = patient_id else {
            return Err(Unreadable::new(
                Reason::NoPatient,
                "sealed details on an entry about no patient",
            ));
        };
        let Some(&key_row) = self.key_row_of.get(&patient_id) else {
            return Err(if self.erased.contains(&patient_id) {
                Unreadable::new(Reason::PatientErased, "the patient's key was destroyed")
            } else {
                Unreadable::new(
                    Reason::PatientRowMissing,
                    format!("patient #{patient_id} has no row and no erasure record"),
                )
            });
        };
        if !self.present.contains(&key_row) {
            return Err(Unreadable::new(
                Reason::KeyRowMissing,
                format!("patient #{patient_id}'s key row {key_row} is missing from patient_keys"),
            ));
        }
        let damaged = |message: String| Unreadable::new(Reason::Damaged, message);
        let expected = data_key_id(key_row).map_err(damaged)?;
        bound_to(&bytes, expected).map_err(|unbound| match unbound {
            Unbound::NotAnEnvelope(e) => damaged(format!("damaged envelope: {e}")),
            Unbound::OtherKey(sealed_with) => Unreadable::new(
                Reason::SealedWithOtherKey,
                format!(
                    "sealed with another patient's key (key id {sealed_with}, not patient \
                     #{patient_id}'s {expected})"
                ),
            ),
        })?;
        let ring = match &self.rings {
            Rings::All(ring) => ring,
            Rings::PerRow(rings) => match rings.get(&key_row) {
                Some(Ok(ring)) => ring,
                Some(Err(e)) => return Err(damaged(e.clone())),
                None => return Err(damaged(format!("key row {key_row} could not be read"))),
            },
        };
        // The key id was checked above, so the ring's key for it is this patient's.
        EncryptedString::<audit_entry::Details>::from_envelope_with(ring, bytes)
            .map(|text| text.expose().clone())
            .map_err(|e| damaged(seal_err(&e)))
    }
}
pub(super) async fn list(global: &Global, patient: Option<i32>, limit: u64) -> Result<(), String> {
    let clinic = global.open().await?;
    let mut query = audit_entry::Entity::find()
        .order_by_desc(audit_entry::Column::Id)
        .limit(limit);
    if let Some(id) = patient {
        query = query.filter(audit_entry::Column::PatientId.eq(id));
    }
    let entries = query.all(&clinic.db).await.map_err(db_err)?;
    let with_details: BTreeSet<i32> = entries
        .iter()
        .filter(|e| e.details.is_some())
        .filter_map(|e| e.patient_id)
        .collect();
    let keys = Keys::load(&clinic, with_details).await?;
    let views: Vec<EntryView> = entries
        .into_iter()
        .map(|e| {
            let (details, unreadable) = match e.details {
                None => (None, None),
                Some(bytes) => match keys.open(e.patient_id, bytes) {
                    Ok(text) => (Some(text), None),
                    Err(why) => (Some(format!("(unreadable: {})", why.message)), Some(why)),
                },
            };
            EntryView {
                id: e.id,
                seq: e.seq,
                at: e.at,
                actor: e.actor,
                action: e.action,
                record: e.record,
                patient_id: e.patient_id,
                summary: e.summary,
                details,
                unreadable,
            }
        })
        .collect();
    if global.json {
        print_json(&views)?;
    } else if views.is_empty() {
        say!(
            "The audit log has no entries{}.",
            match patient {
                Some(id) => format!(" about patient #{id}"),
                None => String::new(),
            }
        );
    } else {
        table(&views);
    }
    // Listed first, failed after: one damaged entry must not hide the rest of the trail.
    let damaged: Vec<&EntryView> = views
        .iter()
        .filter(|v| {
            v.unreadable
                .as_ref()
                .is_some_and(|u| u.reason != Reason::PatientErased)
        })
        .collect();
    match damaged.first() {
        None => Ok(()),
        Some(first) => {
            let ids: Vec<String> = damaged
                .iter()
                .take(IDS_NAMED)
                .map(|v| v.id.to_string())
                .collect();
            let more = damaged.len().saturating_sub(IDS_NAMED);
            let why = first.unreadable.as_ref().map_or("", |u| u.message.as_str());
            Err(format!(
                "{} audit entr{} could not be read (ids {}{}); entry #{}: {}",
                damaged.len(),
                if damaged.len() == 1 { "y" } else { "ies" },
                ids.join(", "),
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                },
                first.id,
                shown(why)
            ))
        }
    }
}

/// The listing as a table; every stored text escaped for the terminal.
fn table(views: &[EntryView]) {
    say!(
        "{:>6}  {:<19}  {:<14}  {:<7}  {:<20}  WHAT",
        "ID",
        "WHEN (UTC)",
        "WHO",
        "ACTION",
        "RECORD"
    );
    for v in views {
        let what = match &v.details {
            Some(d) => format!("{}: {}", shown(&v.summary), shown(d)),
            None => shown(&v.summary).into_owned(),
        };
        say!(
            "{:>6}  {:<19}  {:<14}  {:<7}  {:<20}  {}",
            v.id,
            v.at.format("%Y-%m-%d %H:%M:%S"),
            fit(&shown(&v.actor), 14),
            shown(&v.action),
            fit(&shown(&v.record), 20),
            what
        );
    }
}
