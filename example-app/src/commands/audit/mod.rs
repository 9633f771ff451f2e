//! `clinic audit list`: the append-only trail, newest first, and `clinic audit verify`: its
//! hash chain, end to end.

mod list;
mod verify;

use crate::cli::AuditCommand;
use crate::commands::Global;

/// Runs one audit command.
pub async fn run(global: &Global, command: AuditCommand) -> Result<(), String> {
    match command {
        AuditCommand::List { patient, limit } => list::list(global, patient, limit).await,
        AuditCommand::Verify => verify::verify(global).await,
    }
}
