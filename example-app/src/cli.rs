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
    /// Key material.
    #[command(subcommand)]
    Keys(KeysCommand),
}

/// Key commands.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Print fresh random keys as environment variable lines.
    Generate,
}
