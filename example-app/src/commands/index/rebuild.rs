//! `clinic index rebuild`: recompute every patient's blind indexes with the active
//! blind-index key and the current index sizes.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr as _;
use std::sync::Arc;

use encrypted_columns::{Keyring, keyring};
use indicatif::{ProgressBar, ProgressStyle};
use sea_orm::sea_query::{Expr, IntoCondition as _};
use sea_orm::{
    ActiveModelTrait, ActiveValue, ColumnTrait, Condition, ConnectionTrait, EntityTrait,
    IntoActiveModel, Iterable as _, QueryFilter, QueryOrder, QuerySelect, TransactionTrait, Value,
};
use serde::Serialize;

use super::key_usage::{audit_mac_usage, blind_index_usage, retirable_blind_index_keys};
use crate::clinic::{Clinic, db_err, duplicate_or_db_err};
use crate::commands::{Global, print_json};
use crate::entities::patient;
use crate::output::{join_ids, say};

/// A patient `index rebuild` could not bring up to date, and why (one line, no data).
#[derive(Debug, Serialize)]
struct Skipped {
    id: i32,
    reason: String,
}

/// What `clinic index rebuild` did.
#[derive(Debug, Serialize)]
struct RebuildSummary {
    /// The blind-index key every rebuilt value is computed with.
    active_blind_index_key: u32,
    /// Bits kept per index of `patients`.
    bits: BTreeMap<String, u16>,
    /// Patients looked at.
    patients: u64,
    /// Patients whose index values were rewritten.
    rebuilt: u64,
    /// Patients whose index values were already what the active key and sizes give.
    already_current: u64,
    /// Patients changed by another writer while the rebuild ran (that write recomputed
    /// their indexes), left as that writer stored them.
    changed_meanwhile: u64,
    /// Patients that could not be opened or saved; the run goes on without them.
    skipped: Vec<Skipped>,
    /// Per `table.column`: stored index values per blind-index key id, after the run.
    index_values_by_key: BTreeMap<String, BTreeMap<u32, u64>>,
    /// Audit entries whose chain MAC each blind-index key id made (never recomputed: the
    /// log is append-only, and `clinic audit verify` needs those keys).
    audit_macs_by_key: BTreeMap<u32, u64>,
    /// Loaded blind-index keys, other than the active one, that neither a stored index value
    /// nor an audit MAC uses: they can be removed.
    retirable_blind_index_keys: Vec<u32>,
}

/// Runs `clinic index rebuild`: for every patient in id order, `batch_size` per transaction,
/// open the row with its own data key, recompute every blind index with the active
/// blind-index key and the current sizes, and write the values that differ (guarded, so a
/// concurrent change of the row is never overwritten with indexes of its old values). A
/// patient that cannot be opened or saved is skipped and named at the end (non-zero exit);
/// re-running redoes nothing that is already current.
pub async fn rebuild(global: &Global, batch_size: u64) -> Result<(), String> {
    if !(1..=10_000).contains(&batch_size) {
        return Err("--batch-size must be from 1 to 10000".into());
    }
    let clinic = global.open().await?;
    let active = clinic
        .master()
        .active_blind_index_key_id()
        .ok_or("no blind-index key is loaded: set ENCRYPTED_COLUMNS_BLIND_INDEX_KEYS")?;
    let chatty = !global.json;
    let bits: BTreeMap<String, u16> = patient::Entity::blind_indexes()
        .iter()
        .map(|i| (i.name().to_owned(), i.bit_len()))
        .collect();
    if chatty {
        let sizes: Vec<String> = bits.iter().map(|(n, b)| format!("{n} {b} bits")).collect();
        say!(
            "Recomputing every patient's blind indexes with blind-index key {active} (the \
             active one) and the current sizes ({}), {batch_size} patient(s) per transaction:",
            sizes.join(", ")
        );
    }
    let total = clinic.count_patients().await?;
    let bar = if chatty {
        ProgressBar::new(total)
    } else {
        ProgressBar::hidden()
    };
    if let Ok(style) = ProgressStyle::with_template("{msg:>10} [{bar:30}] {pos}/{len} patients") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message("rebuild");

    let mut summary = RebuildSummary {
        active_blind_index_key: active.0,
        bits,
        patients: 0,
        rebuilt: 0,
        already_current: 0,
        changed_meanwhile: 0,
        skipped: Vec::new(),
        index_values_by_key: BTreeMap::new(),
        audit_macs_by_key: BTreeMap::new(),
        retirable_blind_index_keys: Vec::new(),
    };
    let mut after = None;
    loop {
        let mut page = patient::Entity::find()
            .select_only()
            .column(patient::Column::Id)
            .order_by_asc(patient::Column::Id)
            .limit(batch_size);
        if let Some(last) = after {
            page = page.filter(patient::Column::Id.gt(last));
        }
        let ids: Vec<i32> = page.into_tuple().all(&clinic.db).await.map_err(db_err)?;
        let Some(&last) = ids.last() else { break };
        let txn = clinic.db.begin().await.map_err(db_err)?;
        for id in ids {
            summary.patients += 1;
            // A savepoint per patient: one that fails (say, a UNIQUE clash its new e-mail
            // index reveals) is rolled back alone, and the batch goes on.
            let one = txn.begin().await.map_err(db_err)?;
            match rebuild_one(&clinic, &one, id).await {
                Ok(outcome) => {
                    one.commit().await.map_err(db_err)?;
                    match outcome {
                        Outcome::Rebuilt => summary.rebuilt += 1,
                        Outcome::Current => summary.already_current += 1,
                        Outcome::ChangedMeanwhile => summary.changed_meanwhile += 1,
                    }
                }
                Err(reason) => {
                    one.rollback().await.map_err(db_err)?;
                    summary.skipped.push(Skipped { id, reason });
                }
            }
            bar.inc(1);
        }
        txn.commit().await.map_err(db_err)?;
        after = Some(last);
    }
    bar.finish_and_clear();

    summary.index_values_by_key = blind_index_usage(&clinic.db).await?;
    summary.audit_macs_by_key = audit_mac_usage(&clinic.db).await?;
    summary.retirable_blind_index_keys = retirable_blind_index_keys(
        clinic.master(),
        &summary.index_values_by_key,
        &summary.audit_macs_by_key,
    );
    if global.json {
        print_json(&summary)?;
    } else {
        say_rebuild(&summary);
    }
    if summary.skipped.is_empty() {
        return Ok(());
    }
    let named: Vec<String> = summary
        .skipped
        .iter()
        .take(20)
        .map(|s| format!("#{} ({})", s.id, s.reason))
        .collect();
    Err(format!(
        "{} patient(s) could not be rebuilt and keep their old index values: {}{}; the \
         other {} were brought up to date",
        summary.skipped.len(),
        named.join("; "),
        if summary.skipped.len() > named.len() {
            "; …"
        } else {
            ""
        },
        summary.patients - summary.skipped.len() as u64
    ))
}

/// What happened to one patient.
enum Outcome {
    Rebuilt,
    Current,
    ChangedMeanwhile,
}

/// Recomputes patient `id`'s blind indexes through `db` (a savepoint of the batch).
async fn rebuild_one<C: ConnectionTrait>(
    clinic: &Clinic,
    db: &C,
    id: i32,
) -> Result<Outcome, String> {
    let (model, ring) = clinic.load_patient(db, id).await?;
    let ring: Arc<Keyring> = ring.into();
    let stored = model.into_active_model();
    // Every field marked as set, so `fill_blind_indexes` recomputes every index (it skips
    // indexes none of whose inputs changed), with the ring's active blind-index key: the
    // clinic's, which `load_patient`'s ring carries over.
    let mut fresh = stored.clone().reset_all();
    keyring::scope_sync(Arc::clone(&ring), || fresh.fill_blind_indexes())
        .map_err(|e| e.to_string())?;
    let mut changes = Vec::new();
    for index in patient::Entity::blind_indexes() {
        let column = patient::Column::from_str(index.name())
            .map_err(|_| format!("index {} has no column of that name", index.name()))?;
        let new = fresh.get(column).into_value();
        if stored.get(column).into_value() != new {
            changes.push((column, new.unwrap_or(Value::Bytes(None))));
        }
    }
    if changes.is_empty() {
        return Ok(Outcome::Current);
    }
    // Compare-and-set on every stored byte column (envelopes and indexes) as read: each seal
    // has a fresh nonce, so a concurrent change of any field fails the guard, and that
    // writer's own save recomputed the indexes with the active key.
    let mut guard = Condition::all().add(patient::Column::Id.eq(id));
    for column in patient::Column::iter() {
        if let ActiveValue::Unchanged(Value::Bytes(bytes)) = stored.get(column) {
            guard = guard.add(match bytes {
                Some(bytes) => column.eq(bytes.as_slice().to_vec()).into_condition(),
                None => column.is_null().into_condition(),
            });
        }
    }
    let mut update = patient::Entity::update_many().filter(guard);
    for (column, value) in changes {
        update = update.col_expr(column, Expr::value(value));
    }
    let result = update.exec(db).await.map_err(duplicate_or_db_err)?;
    if result.rows_affected == 0 {
        return Ok(Outcome::ChangedMeanwhile);
    }
    clinic
        .audit(
            db,
            "update",
            format!("patients#{id}"),
            Some(id),
            "blind indexes recomputed",
            None,
        )
        .await?;
    Ok(Outcome::Rebuilt)
}

fn say_rebuild(s: &RebuildSummary) {
    say!(
        "Checked {} patient(s): {} rebuilt, {} already current, {} changed by another writer \
         meanwhile (whose save recomputed them), {} skipped.",
        s.patients,
        s.rebuilt,
        s.already_current,
        s.changed_meanwhile,
        s.skipped.len()
    );
    say!("Index values per blind-index key:");
    for (column, by_key) in &s.index_values_by_key {
        let parts: Vec<String> = by_key
            .iter()
            .map(|(k, n)| {
                let mark = if *k == s.active_blind_index_key {
                    ""
                } else {
                    " (old)"
                };
                format!("key {k}{mark}: {n}")
            })
            .collect();
        let parts = if parts.is_empty() {
            "none stored".to_owned()
        } else {
            parts.join(", ")
        };
        say!("  {column:<34} {parts}");
    }
    say!("{}", retirement_advice(s));
}

/// What to do next about older blind-index keys, in a sentence or three.
fn retirement_advice(s: &RebuildSummary) -> String {
    let active = s.active_blind_index_key;
    let old = |k: &u32| *k != active;
    // Older keys some index value still uses: of skipped patients, or the legacy table's.
    let mut still_indexing = BTreeSet::new();
    let mut legacy_behind = Vec::new();
    for (column, by_key) in &s.index_values_by_key {
        let keys: Vec<u32> = by_key.keys().copied().filter(old).collect();
        if !keys.is_empty() && !column.starts_with("patients.") {
            legacy_behind.push(column.as_str());
        }
        still_indexing.extend(keys);
    }
    // Older keys only the (never rewritten) audit chain still needs.
    let only_audit: Vec<u32> = s
        .audit_macs_by_key
        .keys()
        .copied()
        .filter(old)
        .filter(|k| !still_indexing.contains(k))
        .collect();
    let mut out = Vec::new();
    if !still_indexing.is_empty() {
        let still: Vec<u32> = still_indexing.into_iter().collect();
        out.push(format!(
            "Index values under older blind-index key(s) {} remain{}: keep those keys loaded.",
            join_ids(&still),
            if legacy_behind.is_empty() {
                String::new()
            } else {
                format!(
                    " (in {}: `clinic keys rotate` recomputes them)",
                    legacy_behind.join(", ")
                )
            }
        ));
    }
    if !only_audit.is_empty() {
        out.push(format!(
            "Blind-index key(s) {} compute no stored index value any more, but made the chain \
             MACs of audit entries, which `clinic audit verify` checks with them: keep them \
             loaded (not active) for as long as the audit log must verify.",
            join_ids(&only_audit)
        ));
    }
    if !s.retirable_blind_index_keys.is_empty() {
        out.push(format!(
            "Blind-index key(s) {} compute no stored index value and made no audit MAC: \
             remove them from ENCRYPTED_COLUMNS_BLIND_INDEX_KEYS once every process runs with \
             key {active} active.",
            join_ids(&s.retirable_blind_index_keys)
        ));
    }
    if out.is_empty() {
        out.push(format!(
            "Every index value uses blind-index key {active}. To rotate it: add a new key to \
             ENCRYPTED_COLUMNS_BLIND_INDEX_KEYS, make it active with \
             ENCRYPTED_COLUMNS_ACTIVE_BLIND_INDEX_KEY, run `clinic index rebuild` (and \
             `clinic keys rotate` for the legacy table); then the old key can be retired."
        ));
    }
    out.join(" ")
}
