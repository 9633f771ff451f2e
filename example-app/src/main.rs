//! `clinic`: the encrypted-columns example app.

mod cli;
mod clinic;
mod commands;
mod connect;
mod entities;
mod fake;
mod kek;
mod keys;
mod output;
mod validate;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::Command;
use crate::commands::Global;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    init_tracing();
    let global = Global {
        database_url: cli.database_url,
        json: cli.json,
        actor: cli.actor,
    };
    let result = match cli.command {
        Command::Demo { patients } => {
            commands::demo::run(global.database_url.as_deref(), patients).await
        }
        Command::Init => commands::init::run(global.database_url.as_deref()).await,
        Command::MigrateLegacy(step) => {
            use cli::LegacyCommand as L;
            use commands::legacy::Step;
            let step = match step {
                L::Status => Step::Status,
                L::Seed { rows } => Step::Seed { rows },
                L::DualWrite => Step::DualWrite,
                L::Backfill {
                    batch_size,
                    throttle_ms,
                    lease_secs,
                } => Step::Backfill {
                    batch_size,
                    throttle_ms,
                    lease_secs,
                },
                L::Verify => Step::Verify,
                L::Repair {
                    batch_size,
                    lease_secs,
                } => Step::Repair {
                    batch_size,
                    lease_secs,
                },
                L::Cutover => Step::Cutover,
                L::Drop => Step::Drop,
            };
            commands::legacy::run(global.database_url.as_deref(), step).await
        }
        Command::Keys(cli::KeysCommand::Generate) => {
            output::say!("{}", keys::generate_env_lines().trim_end());
            Ok(())
        }
        Command::Keys(cli::KeysCommand::Status) => commands::keys::status(&global).await,
        Command::Keys(cli::KeysCommand::Rotate { batch_size }) => {
            commands::keys::rotate(&global, batch_size).await
        }
        Command::Keys(cli::KeysCommand::New { purpose }) => {
            commands::key_lifecycle::new(&global, purpose).await
        }
        Command::Keys(cli::KeysCommand::Promote { purpose, id }) => {
            commands::key_lifecycle::promote(&global, purpose, id).await
        }
        Command::Keys(cli::KeysCommand::Retire { purpose, id }) => {
            commands::key_lifecycle::retire(&global, purpose, id).await
        }
        Command::Keys(cli::KeysCommand::Init { provider }) => {
            commands::key_store::init(&global, provider).await
        }
        Command::Keys(cli::KeysCommand::Rewrap {
            to_static_env,
            to_pkcs11_key,
            to_aws_kms_key,
        }) => {
            let target = commands::key_store::RewrapTarget {
                static_env: to_static_env,
                pkcs11_key: to_pkcs11_key,
                aws_kms_key: to_aws_kms_key,
            };
            commands::key_store::rewrap(&global, target).await
        }
        Command::Patient(command) => commands::patient::run(&global, command).await,
        Command::Note(command) => commands::records::note(&global, command).await,
        Command::Consent(command) => commands::records::consent(&global, command).await,
        Command::Transcript(command) => commands::records::transcript(&global, command).await,
        Command::Audit(command) => commands::audit::run(&global, command).await,
        Command::Index(cli::IndexCommand::Report) => commands::index::report(&global).await,
        Command::Index(cli::IndexCommand::Rebuild { batch_size }) => {
            commands::index::rebuild(&global, batch_size).await
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            // One line a person can act on; never a Debug dump (it could carry data).
            eprintln!("clinic: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default: warnings). Our spans and events carry ids
/// and counts, never field values; SQL statement logging is off (see `connect`).
fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(true)
        .try_init();
}
