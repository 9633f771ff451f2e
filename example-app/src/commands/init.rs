//! `clinic init`: apply the clinic's migrations.

use migration::{Migrator, MigratorTrait};

use crate::connect::connect;
use crate::output::say;

/// Connects and applies pending migrations.
pub async fn run(database_url: Option<&str>) -> Result<(), String> {
    let url = database_url.unwrap_or(crate::commands::DEFAULT_DATABASE_URL);
    let db = connect(url).await?;
    let pending = Migrator::get_pending_migrations(&db)
        .await
        .map_err(|e| format!("cannot read the migration table: {e}"))?
        .len();
    Migrator::up(&db, None)
        .await
        .map_err(|e| format!("cannot create the clinic's tables: {e}"))?;
    say!("Applied {pending} migration(s); the database is up to date.");
    Ok(())
}
