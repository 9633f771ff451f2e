//! `migrate_child` processes: their keys, their command lines, what they print, and a handle
//! that kills a child the test lets go of.

use std::collections::HashMap;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;

use encrypted_columns::keyring::{self, ENV_BLIND_INDEX_KEYS, ENV_KEYS, generate_key_entry};
use encrypted_columns::{KeyId, Keyring};
use encrypted_columns_tests::TestDb;

use crate::support::Res;

/// A keyring for the children, with the two `<id>:<base64>` entries that give it to them
/// through their environment.
pub struct ChildKeys {
    pub ring: Arc<Keyring>,
    pub keys: String,
    pub blind_index_keys: String,
}

pub fn child_keys() -> Res<ChildKeys> {
    let keys = generate_key_entry(KeyId(1)).to_string();
    let blind_index_keys = generate_key_entry(KeyId(1)).to_string();
    let ring = Keyring::from_vars(|name| match name {
        n if n == ENV_KEYS => Some(keys.clone()),
        n if n == ENV_BLIND_INDEX_KEYS => Some(blind_index_keys.clone()),
        _ => None,
    })?;
    Ok(ChildKeys {
        ring: Arc::new(ring),
        keys,
        blind_index_keys,
    })
}

/// `migrate_child` on this test's database, with `keys` in its environment (or none).
pub fn child_command(db: &TestDb, keys: Option<&ChildKeys>, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_migrate_child"));
    command
        .arg("--url")
        .arg(db.url())
        .args(args)
        .env_remove(ENV_KEYS)
        .env_remove(ENV_BLIND_INDEX_KEYS)
        .env_remove(keyring::ENV_ACTIVE_KEY)
        .env_remove(keyring::ENV_ACTIVE_BLIND_INDEX_KEY)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(keys) = keys {
        command
            .env(ENV_KEYS, &keys.keys)
            .env(ENV_BLIND_INDEX_KEYS, &keys.blind_index_keys);
    }
    command
}

/// `migrate_child --table <table>` (the work plan over `table`) with `keys`.
pub fn work_child(db: &TestDb, keys: &ChildKeys, table: &str, args: &[&str]) -> Command {
    let mut command = child_command(db, Some(keys), &["--table", table]);
    command.args(args);
    command
}

/// What a child printed as its last `step=…` line, as `key → value`.
pub fn counts(out: &Output) -> HashMap<String, String> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .rev()
        .find(|l| l.starts_with("step="))
        .map(|line| {
            line.split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

pub fn count(counts: &HashMap<String, String>, key: &str) -> Res<u64> {
    counts
        .get(key)
        .ok_or_else(|| format!("no {key} in {counts:?}"))?
        .parse()
        .map_err(|e| format!("{key} in {counts:?}: {e}").into())
}

pub fn describe(out: &Output) -> String {
    format!(
        "{} stdout {:?} stderr {:?}",
        out.status,
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    )
}

/// A child process, killed if the test lets go of it before it exited: a failing test leaves
/// no worker (or a frozen one holding locks) behind.
pub struct Proc(Option<Child>);

impl Proc {
    pub fn spawn(mut command: Command) -> Res<Proc> {
        Ok(Proc(Some(command.spawn()?)))
    }

    pub fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("not waited for yet")
    }

    /// Waits for the exit without blocking the test's runtime (the database pool runs on it).
    pub async fn wait(mut self) -> Res<Output> {
        let child = self.0.take().expect("not waited for yet");
        Ok(tokio::task::spawn_blocking(move || child.wait_with_output()).await??)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
