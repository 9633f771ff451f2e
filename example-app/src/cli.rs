//! Command-line interface of `clinic`.

use clap::{Parser, Subcommand};

/// A small clinic whose patient data is encrypted at rest with encrypted-columns.
///
/// Keys come from ENCRYPTED_COLUMNS_KEYS (`<id>:<base64 of 32 bytes>`, see `clinic keys
/// generate`). The database is SQLite by default; PostgreSQL and MySQL/MariaDB by URL.
#[derive(Debug, Parser)]
#[command(name = "clinic", version)]
pub struct Cli {
    /// Database URL, e.g. sqlite://clinic.db?mode=rwc, postgres://user@host/db,
    /// mysql://user@host/db.
    #[arg(long, env = "DATABASE_URL", global = true)]
    pub database_url: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Guided tour: store two fake patients encrypted, show the raw stored bytes and what
    /// SeaORM reads back. Uses a fresh `clinic-demo.db` SQLite file unless --database-url is
    /// given, and throwaway keys if ENCRYPTED_COLUMNS_KEYS is not set.
    Demo,
    /// Create or update the clinic's tables (runs the migrations).
    Init,
    /// Key material.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Encrypt the plaintext `legacy_patients` table without downtime, one checked phase at
    /// a time: dual-write → backfill → verify → cutover → drop.
    #[command(subcommand, name = "migrate-legacy")]
    MigrateLegacy(LegacyCommand),
}

/// Steps of the legacy-table migration.
#[derive(Debug, Subcommand)]
pub enum LegacyCommand {
    /// Show each column's phase, rows sealed and rows left.
    Status,
    /// Insert fake legacy patients, written the way the current phase requires.
    Seed {
        /// How many.
        #[arg(long, default_value_t = 1000)]
        rows: u32,
    },
    /// Record that every writer now writes plaintext and envelope together.
    DualWrite,
    /// Seal every remaining row in batches (resumable; safe while the app writes).
    Backfill {
        /// Rows per batch (one transaction each).
        #[arg(long, default_value_t = 500)]
        batch_size: u64,
        /// Pause between batches, in milliseconds.
        #[arg(long, default_value_t = 0)]
        throttle_ms: u64,
    },
    /// Check that every envelope opens to exactly its plaintext.
    Verify,
    /// Switch reads to encrypted-only (fails closed).
    Cutover,
    /// Drop the plaintext columns.
    Drop,
}

/// Key commands.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Print fresh random keys as environment variable lines.
    Generate,
}
