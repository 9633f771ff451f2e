//! Retrying a transaction that lost a race for a lock: SQLite's `database is locked` (a
//! busy application writing at the same moment), PostgreSQL's deadlock and serialization
//! failures, MariaDB's deadlock and lock-wait timeout. Each attempt is a whole transaction
//! that rolled back, so running it again is safe.

use std::time::Duration;

use sea_orm::DbErr;
use tracing::debug;

/// Attempts before giving up: with the backoff below, about 20 seconds of contention.
const ATTEMPTS: u32 = 24;

/// Whether `err` is a lock conflict that a retry of the same transaction can resolve.
pub(crate) fn is_transient(err: &DbErr) -> bool {
    let text = err.to_string();
    [
        "database is locked",
        "database table is locked",
        "database is busy",
        "deadlock detected",
        "could not serialize access",
        "Deadlock found",
        "Lock wait timeout exceeded",
    ]
    .iter()
    .any(|needle| text.contains(needle))
}

/// Runs `attempt` until it succeeds, fails with a non-transient error, or has failed
/// [`ATTEMPTS`] times; `what` names it in the log.
pub(crate) async fn retrying<T>(
    what: &str,
    mut attempt: impl AsyncFnMut() -> Result<T, DbErr>,
) -> Result<T, DbErr> {
    let mut pause = Duration::from_millis(10);
    let mut tries = 0;
    loop {
        match attempt().await {
            Err(err) if is_transient(&err) && tries + 1 < ATTEMPTS => {
                tries += 1;
                debug!(what, tries, error = %err, "lock conflict; retrying");
                // Jitter so that workers which collided do not collide again in lockstep.
                let jitter = Duration::from_millis(rand::random::<u64>() % 10);
                tokio::time::sleep(pause + jitter).await;
                pause = Ord::min(pause * 2, Duration::from_secs(1));
            }
            other => return other,
        }
    }
}
