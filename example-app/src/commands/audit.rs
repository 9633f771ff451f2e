//! `clinic audit list`: the append-only trail, newest first, and `clinic audit verify`: its
//! hash chain, end to end.
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
use encrypted_columns::envelope::key_id_of;
use encrypted_columns::{EncryptedString, Keyring};
use sea_orm::sea_query::Condition;
use sea_orm::{
    ColumnTrait, DatabaseConnection, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect,
};
use serde::Serialize;

use crate::cli::AuditCommand;
use crate::clinic::{Clinic, data_key_id, db_err, seal_err};
use crate::commands::patient::fit;
use crate::commands::{Global, print_json};
use crate::entities::audit_entry::{self, GENESIS_MAC, MAC_LEN};
use crate::entities::{patient, patient_key};
use crate::output::{say, shown};

/// Ids named in a one-line summary; more are counted.
const IDS_NAMED: usize = 20;

/// Problems printed by `verify`; the JSON holds up to [`MAX_PROBLEMS`].
const PROBLEMS_SHOWN: usize = 20;

/// Rows read per query when walking the chain.
const PAGE: u64 = 1_000;

/// Problems kept in full; more are only counted.
const MAX_PROBLEMS: usize = 1_000;

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

/// Runs one audit command.
pub async fn run(global: &Global, command: AuditCommand) -> Result<(), String> {
    match command {
        AuditCommand::List { patient, limit } => list(global, patient, limit).await,
        AuditCommand::Verify => verify(global).await,
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
        let sealed_with =
            key_id_of(&bytes).map_err(|e| damaged(format!("damaged envelope: {e}")))?;
        if sealed_with != expected {
            return Err(Unreadable::new(
                Reason::SealedWithOtherKey,
                format!(
                    "sealed with another patient's key (key id {sealed_with}, not patient \
                     #{patient_id}'s {expected})"
                ),
            ));
        }
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

async fn list(global: &Global, patient: Option<i32>, limit: u64) -> Result<(), String> {
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

async fn verify(global: &Global) -> Result<(), String> {
    let clinic = global.open().await?;
    let report = verify_chain(&clinic.db, clinic.master()).await?;
    if global.json {
        print_json(&report)?;
    } else {
        print_report(&report);
    }
    if report.intact {
        return Ok(());
    }
    let first = report.problems.first();
    Err(match first {
        Some(p) => format!(
            "audit log broken at entry #{} ({}): {}; {} problem(s) in all",
            p.id,
            p.seq.map_or("no seq".to_owned(), |s| format!("seq {s}")),
            p.kind.words(),
            report.problem_count
        ),
        None => format!("audit log broken: {} problem(s)", report.problem_count),
    })
}

fn print_report(report: &ChainReport) {
    let entries = |n: u64| format!("{n} entr{}", if n == 1 { "y" } else { "ies" });
    match (&report.head, report.intact) {
        (None, _) => say!("audit log intact: no chained entries yet"),
        (Some(head), true) => say!(
            "audit log intact: {} (seq 1..{}), head MAC {}",
            entries(report.chained),
            head.seq,
            &head.mac[..head.mac.len().min(8)]
        ),
        (Some(_), false) => {
            say!(
                "audit log BROKEN: {} problem(s); {} in the chain checked",
                report.problem_count,
                entries(report.chained)
            );
            for p in report.problems.iter().take(PROBLEMS_SHOWN) {
                say!(
                    "  entry #{} ({}): {}: {}",
                    p.id,
                    p.seq.map_or("no seq".to_owned(), |s| format!("seq {s}")),
                    p.kind.words(),
                    p.detail
                );
            }
            let more = report.problem_count.saturating_sub(PROBLEMS_SHOWN as u64);
            if more > 0 {
                say!("  … and {more} more (--json lists up to 1000)");
            }
        }
    }
    if report.before_chain > 0 {
        say!(
            "{} written before the chain (unverifiable){}.",
            entries(report.before_chain),
            report
                .first_chained_id
                .map_or(String::new(), |id| format!(": ids below #{id}"))
        );
    }
    if let Some(head) = &report.head {
        say!(
            "Head: entry #{}, seq {}, MAC {}.\nThe chain shows entries changed, removed or \
             inserted up to the head; it cannot show entries cut off after it. Record the \
             head outside the database and check later that seq {} still has this MAC.",
            head.id,
            head.seq,
            head.mac,
            head.seq
        );
    }
}

/// What is wrong with a chained entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum ProblemKind {
    /// The stored MAC is not the MAC of the entry as stored: it was changed, or forged.
    MacMismatch,
    /// No MAC (or no MAC key) where the chain needs one: an insert that did not go through
    /// the clinic.
    MissingMac,
    /// Entries before this one are missing from the chain.
    Gap,
    /// Another entry has the same `seq`.
    Duplicate,
    /// The blind-index key that made this MAC is not loaded, so it cannot be checked.
    KeyNotLoaded,
}

impl ProblemKind {
    /// In words, for the one-line summary.
    fn words(self) -> &'static str {
        match self {
            ProblemKind::MacMismatch => "MAC mismatch",
            ProblemKind::MissingMac => "missing MAC",
            ProblemKind::Gap => "gap",
            ProblemKind::Duplicate => "duplicate",
            ProblemKind::KeyNotLoaded => "MAC key not loaded",
        }
    }
}

/// A broken or uncheckable entry.
#[derive(Debug, Clone, Serialize)]
struct ChainProblem {
    id: i64,
    seq: Option<i64>,
    kind: ProblemKind,
    /// What is wrong, in words: ids, seq numbers and key ids only.
    detail: String,
}

/// The newest chained entry.
#[derive(Debug, Clone, Serialize)]
struct ChainHead {
    id: i64,
    seq: i64,
    /// Hex of its MAC: record it outside the database to detect a cut-off tail later.
    mac: String,
}

/// What `verify` found.
#[derive(Debug, Clone, Serialize)]
struct ChainReport {
    intact: bool,
    /// Entries in the chain (with a `seq`).
    chained: u64,
    /// Entries written before the chain existed (no MAC, ids below its first entry): they
    /// cannot be verified.
    before_chain: u64,
    /// The id of the first chained entry.
    first_chained_id: Option<i64>,
    head: Option<ChainHead>,
    /// Every problem found (up to 1000), in id order; the first is the first broken entry.
    problems: Vec<ChainProblem>,
    /// How many problems there are in all.
    problem_count: u64,
}

/// Walks the chain in `seq` order and checks every link with the blind-index keys of `ring`;
/// also finds entries without a MAC written after the chain began.
async fn verify_chain(db: &DatabaseConnection, ring: &Keyring) -> Result<ChainReport, String> {
    let first: Option<i64> = audit_entry::Entity::find()
        .select_only()
        .column(audit_entry::Column::Id)
        .filter(audit_entry::Column::Seq.is_not_null())
        .order_by_asc(audit_entry::Column::Id)
        .into_tuple()
        .one(db)
        .await
        .map_err(db_err)?;
    let mut problems = Problems::default();

    // Entries outside the chain: before it began they are history nobody can check; after
    // it began they were inserted behind the clinic's back.
    let unchained = audit_entry::Entity::find().filter(audit_entry::Column::Seq.is_null());
    let before_chain = match first {
        None => unchained.count(db).await.map_err(db_err)?,
        Some(first) => {
            let before = unchained
                .clone()
                .filter(audit_entry::Column::Id.lt(first))
                .count(db)
                .await
                .map_err(db_err)?;
            let mut after = 0;
            loop {
                let rows: Vec<i64> = unchained
                    .clone()
                    .select_only()
                    .column(audit_entry::Column::Id)
                    .filter(audit_entry::Column::Id.gt(after.max(first)))
                    .order_by_asc(audit_entry::Column::Id)
                    .limit(PAGE)
                    .into_tuple()
                    .all(db)
                    .await
                    .map_err(db_err)?;
                let Some(&last) = rows.last() else { break };
                for id in rows {
                    problems.push(ChainProblem {
                        id,
                        seq: None,
                        kind: ProblemKind::MissingMac,
                        detail: format!(
                            "no seq and no MAC, but written after the chain began (entry \
                             #{first}): inserted outside the clinic"
                        ),
                    });
                }
                after = last;
            }
            before
        }
    };

    // The chain itself, page by page in (seq, id) order.
    let mut chained = 0u64;
    let mut prev: Option<Link> = None;
    loop {
        let mut page = audit_entry::Entity::find()
            .filter(audit_entry::Column::Seq.is_not_null())
            .order_by_asc(audit_entry::Column::Seq)
            .order_by_asc(audit_entry::Column::Id)
            .limit(PAGE);
        if let Some((id, seq, _)) = &prev {
            page = page.filter(
                Condition::any().add(audit_entry::Column::Seq.gt(*seq)).add(
                    Condition::all()
                        .add(audit_entry::Column::Seq.eq(*seq))
                        .add(audit_entry::Column::Id.gt(*id)),
                ),
            );
        }
        let rows = page.all(db).await.map_err(db_err)?;
        if rows.is_empty() {
            break;
        }
        for row in rows {
            chained += 1;
            if let Some(problem) = check_link(ring, &row, prev.as_ref()) {
                problems.push(problem);
            }
            prev = Some((
                row.id,
                row.seq.unwrap_or_default(),
                row.mac.unwrap_or_default(),
            ));
        }
    }
    let head = prev.map(|(id, seq, mac)| ChainHead {
        id,
        seq,
        mac: hex::encode(mac),
    });
    let (problems, problem_count) = problems.finish();
    Ok(ChainReport {
        intact: problem_count == 0,
        chained,
        before_chain,
        first_chained_id: first,
        head,
        problems,
        problem_count,
    })
}

/// The last entry walked: its id, seq and stored MAC.
type Link = (i64, i64, Vec<u8>);

/// The problem with chained entry `row` after `prev` (`None` for the first), if any. One
/// problem per entry: a gap or duplicate also breaks the MAC link, and saying so twice would
/// hide which came first.
fn check_link(
    ring: &Keyring,
    row: &audit_entry::Model,
    prev: Option<&Link>,
) -> Option<ChainProblem> {
    let seq = row.seq.unwrap_or_default();
    let problem = |kind, detail: String| {
        Some(ChainProblem {
            id: row.id,
            seq: Some(seq),
            kind,
            detail,
        })
    };
    let (prev_seq, prev_mac) = prev.map_or((0, &GENESIS_MAC[..]), |(_, s, m)| (*s, m.as_slice()));
    if let Some((prev_id, _, _)) = prev
        && seq == prev_seq
    {
        return problem(
            ProblemKind::Duplicate,
            format!("seq {seq} is also entry #{prev_id}'s"),
        );
    }
    // Checked: a forged seq may sit at the end of i64's range.
    if prev_seq.checked_add(1) != Some(seq) {
        let detail = if prev.is_none() {
            format!("the chain starts at seq {seq}, not 1: entries before it are missing")
        } else {
            let missing = seq.saturating_sub(prev_seq).saturating_sub(1);
            format!(
                "seq jumps from {prev_seq} to {seq}: {missing} entr{} missing",
                if missing == 1 { "y is" } else { "ies are" }
            )
        };
        return problem(ProblemKind::Gap, detail);
    }
    let (Some(stored), Some(mac_key)) = (&row.mac, row.mac_key) else {
        return problem(
            ProblemKind::MissingMac,
            "has a seq but no MAC or MAC key: inserted outside the clinic".to_owned(),
        );
    };
    match row.chain_mac(ring, seq, mac_key, prev_mac) {
        Err(e) => problem(ProblemKind::KeyNotLoaded, format!("cannot check: {e}")),
        Ok(mac) if stored.len() == MAC_LEN && stored.as_slice() == mac.as_slice() => None,
        Ok(_) => problem(
            ProblemKind::MacMismatch,
            format!(
                "its MAC does not match its content and the previous entry's MAC: changed or \
                 forged (or blind-index key {mac_key} is not the key that wrote it)"
            ),
        ),
    }
}

/// Problems collected while walking, kept in id order at the end.
#[derive(Default)]
struct Problems {
    list: Vec<ChainProblem>,
    count: u64,
}

impl Problems {
    fn push(&mut self, problem: ChainProblem) {
        self.count += 1;
        if self.list.len() < MAX_PROBLEMS {
            self.list.push(problem);
        }
    }

    fn finish(mut self) -> (Vec<ChainProblem>, u64) {
        self.list.sort_by_key(|p| p.id);
        (self.list, self.count)
    }
}
