//! One module per `clinic` command.

pub mod demo;
pub mod init;
pub mod legacy;

/// Database used by every command but `demo` when no URL is given.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://clinic.db?mode=rwc";
