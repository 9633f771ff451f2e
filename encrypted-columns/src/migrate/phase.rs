//! The phases of encrypting a live plaintext column, and which moves between them are legal.

use std::fmt;
use std::str::FromStr;

/// Where one column's migration stands. Phases only move forward, except that a backfill can
/// be re-run (after a crash, or when verify found rows to fix).
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
    /// The plaintext column is gone.
    Dropped,
}

impl Phase {
    /// Every phase, in order.
    pub const ALL: [Phase; 7] = [
        Phase::Added,
        Phase::DualWrite,
        Phase::Backfilling,
        Phase::Backfilled,
        Phase::Verified,
        Phase::CutOver,
        Phase::Dropped,
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
        }
    }

    /// Whether `self → to` is a legal move. `None` if it is; otherwise why not, in words
    /// that tell the operator what to run first.
    pub fn check_transition(self, to: Phase) -> Option<&'static str> {
        use Phase::*;
        let ok = matches!(
            (self, to),
            (Added, DualWrite)
                | (DualWrite, Backfilling)
                | (Backfilling, Backfilling)
                | (Backfilling, Backfilled)
                | (Backfilled, Backfilling)
                | (Backfilled, Verified)
                | (Verified, Backfilling)
                | (Verified, Verified)
                | (Verified, CutOver)
                | (CutOver, Dropped)
        );
        if ok {
            return None;
        }
        Some(match to {
            Added => "a migration cannot go back to `added`",
            DualWrite => "dual writing starts right after the columns are added",
            Backfilling => {
                "backfill needs every writer dual-writing first (phase `dual_write`), and \
                 cannot run after cut-over"
            }
            Backfilled => "only a running backfill can finish",
            Verified => "verify needs a finished backfill (run the backfill to the end first)",
            CutOver => "cut-over needs a passing verify (run verify; fix what it reports)",
            Dropped => "the plaintext column can only be dropped after cut-over",
        })
    }

    /// How the application reads the column in this phase.
    pub const fn read_policy(self) -> super::dual::ReadPolicy {
        use super::dual::ReadPolicy;
        match self {
            Phase::Added => ReadPolicy::PlaintextOnly,
            Phase::DualWrite | Phase::Backfilling | Phase::Backfilled | Phase::Verified => {
                ReadPolicy::EncryptedFirst
            }
            Phase::CutOver | Phase::Dropped => ReadPolicy::EncryptedOnly,
        }
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
        let legal: Vec<(Phase, Phase)> = Phase::ALL
            .into_iter()
            .flat_map(|a| Phase::ALL.into_iter().map(move |b| (a, b)))
            .filter(|(a, b)| a.check_transition(*b).is_none())
            .collect();
        assert_eq!(legal.len(), 10);
        assert!(Phase::Backfilled.check_transition(Phase::CutOver).is_some());
        assert!(Phase::Added.check_transition(Phase::Backfilling).is_some());
        assert!(
            Phase::CutOver
                .check_transition(Phase::Backfilling)
                .is_some()
        );
        for p in Phase::ALL {
            assert_eq!(p.as_str().parse::<Phase>(), Ok(p));
        }
    }
}
