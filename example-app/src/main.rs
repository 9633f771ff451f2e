//! `clinic`: the encrypted-columns example app.

mod cli;
mod commands;
mod entities;
mod keys;
mod output;

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let result = match cli.command {
        cli::Command::Demo => commands::demo::run(cli.database_url.as_deref()).await,
        cli::Command::Init => commands::init::run(cli.database_url.as_deref()).await,
        cli::Command::MigrateLegacy(step) => {
            use cli::LegacyCommand as L;
            use commands::legacy::Step;
            let step = match step {
                L::Status => Step::Status,
                L::Seed { rows } => Step::Seed { rows },
                L::DualWrite => Step::DualWrite,
                L::Backfill {
                    batch_size,
                    throttle_ms,
                } => Step::Backfill {
                    batch_size,
                    throttle_ms,
                },
                L::Verify => Step::Verify,
                L::Cutover => Step::Cutover,
                L::Drop => Step::Drop,
            };
            commands::legacy::run(cli.database_url.as_deref(), step).await
        }
        cli::Command::Keys(cli::KeysCommand::Generate) => {
            output::say!("{}", keys::generate_env_lines().trim_end());
            Ok(())
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
