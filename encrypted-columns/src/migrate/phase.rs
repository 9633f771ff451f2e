//! The phases of encrypting a live plaintext column, and which moves between them are legal.

use std::fmt;
use std::str::FromStr;

/// Where one column's migration stands. Phases only move forward, except that a failing
/// verify (or a cut-over whose re-check fails) moves a `verified` column back to `backfilled`,
/// from where cut-over is refused until verify passes again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Phase {
    /// The encrypted (and blind-index) companion columns exist; the app still reads plaintext.
    Added,
    /// Every app instance writes plaintext and encrypted columns together and reads
    /// encrypted-first, with plaintext fallback for rows not yet backfilled.
    DualWrite,
    /// The backfill is running, or stopped part-way (it resumes from its cursor).
    Backfilling,
    /// The backfill reached the end of the table.
    Backfilled,
    /// Verify checked every row: encrypted opens to exactly the plaintext, indexes match.
    Verified,
    /// Reads are encrypted-only (no plaintext fallback: fail closed); writes stop filling
    /// the plaintext column.
    CutOver,
    /// The plaintext column is gone from the schema; its bytes may still sit in free pages
    /// of the database files until the table is purged.
    Dropped,
    /// The table was rewritten after the drop, so the dropped plaintext is gone from the
    /// live database files (not from backups or replicas taken earlier).
    Purged,
}

impl Phase {
    /// Every phase, in order.
    pub const ALL: [Phase; 8] = [
        Phase::Added,
        Phase::DualWrite,
        Phase::Backfilling,
        Phase::Backfilled,
        Phase::Verified,
        Phase::CutOver,
        Phase::Dropped,
        Phase::Purged,
    ];

    /// The name stored in the state table.
    pub const fn as_str(self) -> &'static str {
        match self {
            Phase::Added => "added",
            Phase::DualWrite => "dual_write",
            Phase::Backfilling => "backfilling",
            Phase::Backfilled => "backfilled",
            Phase::Verified => "verified",
            Phase::CutOver => "cut_over",
            Phase::Dropped => "dropped",
            Phase::Purged => "purged",
        }
    }

    /// Every legal move, as `(from, to)`. Nothing else is allowed; in particular no phase
    /// moves to itself, so a refused step never reports success it did not have.
    pub const LEGAL: [(Phase, Phase); 8] = [
        (Phase::Added, Phase::DualWrite),
        (Phase::DualWrite, Phase::Backfilling),
        (Phase::Backfilling, Phase::Backfilled),
        (Phase::Backfilled, Phase::Verified),
        // A failing verify (or cut-over re-check) demotes: cut-over is refused again.
        (Phase::Verified, Phase::Backfilled),
        (Phase::Verified, Phase::CutOver),
        (Phase::CutOver, Phase::Dropped),
        (Phase::Dropped, Phase::Purged),
    ];

    /// Whether `self → to` is a legal move. `None` if it is; otherwise why not, in words
    /// that tell the operator the real reason and what to run first.
    pub fn check_transition(self, to: Phase) -> Option<&'static str> {
        use Phase::*;
        if Self::LEGAL.contains(&(self, to)) {
            return None;
        }
        if self == to {
            return Some("the column is already in that phase; nothing to do");
        }
        Some(match (self, to) {
            (_, Added) => "a migration cannot go back to `added`",
            (Added, _) => {
                "every writer must dual-write first: deploy the dual-writing code, then move the \
                 column to `dual_write`"
            }
            (_, DualWrite) => "the column is already past `dual_write`",
            (CutOver | Dropped | Purged, Backfilling | Backfilled | Verified) => {
                "the column is cut over: reads are encrypted-only and there is nothing left to \
                 backfill or verify against (use repair for rows an old instance wrote)"
            }
            (_, Backfilling) => "the backfill already finished for this column",
            (Backfilling, Verified | CutOver) => {
                "the backfill has not finished: run the backfill to the end first"
            }
            (_, Backfilled) => "only a running backfill can finish",
            (DualWrite, _) => "the backfill has not run yet: run the backfill, then verify",
            (Backfilled | Verified, CutOver) => {
                "cut-over needs a passing verify (run verify; repair what it reports)"
            }
            (Dropped | Purged, CutOver) => "the plaintext column is already dropped",
            (_, CutOver) => "the column is already cut over",
            (_, Verified) => "verify needs a finished backfill",
            (Purged, Dropped) => "the plaintext column was already dropped and purged",
            (_, Dropped) => "the plaintext column can only be dropped after cut-over",
            (_, Purged) => "the table can only be purged after the plaintext column is dropped",
        })
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Phase {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Phase::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("unknown migration phase {s:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_documented_path_is_legal() {
        use Phase::*;
        let legal: Vec<(Phase, Phase)> = Phase::ALL
            .into_iter()
            .flat_map(|a| Phase::ALL.into_iter().map(move |b| (a, b)))
            .filter(|(a, b)| a.check_transition(*b).is_none())
            .collect();
        // The exact list, so a widened rule cannot slip in unnoticed.
        let expected = vec![
            (Added, DualWrite),
            (DualWrite, Backfilling),
            (Backfilling, Backfilled),
            (Backfilled, Verified),
            (Verified, Backfilled),
            (Verified, CutOver),
            (CutOver, Dropped),
            (Dropped, Purged),
        ];
        assert_eq!(legal, expected);
        for p in Phase::ALL {
            assert_eq!(p.as_str().parse::<Phase>(), Ok(p));
        }
    }

    #[test]
    fn refusals_name_the_real_reason() {
        use Phase::*;
        assert!(
            CutOver
                .check_transition(CutOver)
                .unwrap()
                .contains("already")
        );
        assert!(
            Backfilled
                .check_transition(CutOver)
                .unwrap()
                .contains("passing verify")
        );
        assert!(
            Backfilling
                .check_transition(Verified)
                .unwrap()
                .contains("not finished")
        );
        assert!(
            Verified
                .check_transition(Dropped)
                .unwrap()
                .contains("after cut-over")
        );
        assert!(
            Dropped
                .check_transition(Dropped)
                .unwrap()
                .contains("already")
        );
    }
}
