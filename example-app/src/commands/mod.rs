//! One module per `clinic` command group.

pub mod audit;
pub mod demo;
pub mod index;
pub mod init;
pub mod key_lifecycle;
pub mod key_store;
pub mod keys;
pub mod legacy;
pub mod patient;
pub mod records;

use std::sync::Arc;

use encrypted_columns::keyring;

use crate::clinic::Clinic;
use crate::connect::connect;

/// Database used by every command but `demo` when no URL is given.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://clinic.db?mode=rwc";

/// Global options every command gets.
pub struct Global {
    /// `--database-url` / `DATABASE_URL`.
    pub database_url: Option<String>,
    /// `--json`.
    pub json: bool,
    /// `--actor` / `CLINIC_ACTOR`.
    pub actor: String,
}

impl Global {
    /// The database URL to use.
    pub fn url(&self) -> &str {
        self.database_url.as_deref().unwrap_or(DEFAULT_DATABASE_URL)
    }

    /// Keys, a connection, and a schema check: what every data command needs. Key settings
    /// are read (and a KEK provider reached) before the database is opened; environment keys
    /// are then checked against the key store, or the store's keys unwrapped by the KEK.
    /// Fails before writing anything if one is missing or wrong.
    pub async fn open(&self) -> Result<Clinic, String> {
        let source = crate::keys::source().await?;
        // With a KEK provider configured, it also wraps new patients' data keys; rows wrapped
        // by the clinic keyring before stay readable.
        let subject_kek = match &source {
            crate::keys::Source::Kek(kek) => Some(Arc::clone(kek)),
            crate::keys::Source::Environment(_) => None,
        };
        let db = connect(self.url()).await?;
        Clinic::check_schema(&db).await?;
        let ring = Arc::new(crate::keys::resolve(source, &db).await?);
        keyring::install(Arc::clone(&ring));
        let clinic = Clinic::new(db, ring, self.actor.clone());
        Ok(match subject_kek {
            Some(kek) => clinic.with_subject_kek(kek),
            None => clinic,
        })
    }
}

/// Prints `value` as pretty JSON.
pub fn print_json<T: serde::Serialize>(value: &T) -> Result<(), String> {
    let text =
        serde_json::to_string_pretty(value).map_err(|e| format!("cannot print JSON: {e}"))?;
    crate::output::say!("{text}");
    Ok(())
}
