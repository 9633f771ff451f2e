//! `clinic audit verify`: the audit log's hash chain, end to end.

use encrypted_columns::Keyring;
use sea_orm::sea_query::Condition;
use sea_orm::{
    ColumnTrait, DatabaseConnection, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect,
};
use serde::Serialize;

use crate::clinic::db_err;
use crate::commands::{Global, print_json};
use crate::entities::audit_entry::{self, GENESIS_MAC, MAC_LEN};
use crate::output::say;

/// Problems printed by `verify`; the JSON holds up to [`MAX_PROBLEMS`].
const PROBLEMS_SHOWN: usize = 20;

/// Rows read per query when walking the chain.
const PAGE: u64 = 1_000;

/// Problems kept in full; more are only counted.
const MAX_PROBLEMS: usize = 1_000;
pub(super) async fn verify(global: &Global) -> Result<(), String> {
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
