//! Zero-downtime column migration (`encrypted_columns::migrate`) on every backend, one module
//! per subject:
//!
//! * `concurrent`: the backfill over 20,000 rows while four tasks keep dual-writing random
//!   rows, and key rotation while four tasks keep writing through the encrypted path — every
//!   row ends up opening to its final value, blind indexes included; and the SQLite backfill
//!   under ~150 outside writes per second;
//! * `crash`: a `migrate_child` process SIGKILLed at random moments of the backfill, with the
//!   parent writing meanwhile (dual writes, and plaintext-only writes of an old instance) — no
//!   chunk a claim records as done is lost, no envelope is stale, and backfill → verify →
//!   repair → verify ends with every value sealed; and SIGKILLed during drop or purge, then
//!   resumed by a fresh child — phases end `purged`, the plaintext columns are gone and every
//!   envelope opens to the value its plaintext had;
//! * `workers`: cooperating backfill and repair processes over one three-column table —
//!   exact counts, shared work, a killed worker's chunk taken over after its lease;
//! * `old_instance`: an old application instance writing plaintext only (updates and inserts)
//!   during the backfill — verify → repair → verify converges once it stops;
//! * `refusals`: steps out of order, moves that only a checking step may make, no keyring,
//!   unknown tables and columns — clear errors, state and data unchanged;
//! * `fail_closed`: reads after cut-over fail closed (`Error::FallbackRefused`);
//! * `schema`: the `migrate::schema` helpers through a `SchemaManager`;
//! * `regressions` and `table_plans`: the data-loss defects of issue 10, each driven through
//!   the library API and plain SQL the way an old application instance writes — a failing
//!   re-verify demotes and cut-over re-checks; drop refuses plaintext no envelope carries; a
//!   restarted backfill leaves finished columns alone; duplicate normalized values under a
//!   UNIQUE blind index are refused before anything is written; a table's columns move
//!   together (and a step skips columns already past it); drop and purge resume at the phase
//!   level;
//! * `rotate`: `migrate::rotate` with blind indexes when only the data key, only the
//!   blind-index key, or both changed.
//!
//! The shared helpers: `support` (results, names, pools, phases, counts, claims), `rng`
//! (seeded random choices), `keys` (keyrings for rotation), `expect` (the errors a refusal
//! must be), `email_table` (the one-column tables and their independent check), `work_table`
//! (the three-column table of the child processes), `child` (running `migrate_child`) and
//! `plans` (what the child runs; compiled into it too).
//!
//! Random choices come from a seed printed by each test; set `MIGRATE_TEST_SEED` to repeat
//! a run.

/// Fails the enclosing test body with a message.
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+).into());
        }
    };
}

/// A one-column table's context `$name` for `$table.email` and its blind index `$index`
/// (`email_bidx` over the e-mail; `unique` makes it UNIQUE).
macro_rules! email_context {
    ($name:ident, $index:ident, $table:literal $(, $unique:ident)?) => {
        encrypted_columns::column_context!($name, table = $table, column = "email");
        static $index: std::sync::LazyLock<encrypted_columns::blind_index::BlindIndex> =
            std::sync::LazyLock::new(|| crate::plans::email_index($table)$(.$unique())?);
    };
}

mod child;
mod email_table;
mod expect;
mod keys;
mod plans;
mod rng;
mod support;
mod work_table;

mod concurrent;
mod crash;
mod fail_closed;
mod old_instance;
mod refusals;
mod regressions;
mod rotate;
mod schema;
mod table_plans;
mod workers;
