//! What every CLI test needs: running the built `clinic`, key sets, a directory per test,
//! SQL on a SQLite file behind the clinic's back, and a server schema or database of a test's
//! own.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use sea_orm::{ConnectionTrait, Database, TryGetable};

/// The built `clinic`, with none of the caller's keys or database in its environment.
pub fn clinic() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_clinic"));
    cmd.env_remove("ENCRYPTED_COLUMNS_KEYS")
        .env_remove("ENCRYPTED_COLUMNS_ACTIVE_KEY")
        .env_remove("ENCRYPTED_COLUMNS_BLIND_INDEX_KEYS")
        .env_remove("ENCRYPTED_COLUMNS_ACTIVE_BLIND_INDEX_KEY")
        .env_remove("DATABASE_URL")
        .env_remove("CLINIC_KEK")
        .env_remove("CLINIC_KEK_STATIC")
        .env_remove("CLINIC_PKCS11_MODULE")
        .env_remove("CLINIC_PKCS11_TOKEN")
        .env_remove("CLINIC_PKCS11_PIN")
        .env_remove("CLINIC_PKCS11_KEY");
    cmd
}

/// An empty directory of this test's own.
pub fn fresh_dir(tag: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "clinic-cli-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A refusal: non-zero exit, one `clinic: ` line on stderr containing `needle`, no panic.
pub fn assert_one_line_failure(out: &Output, needle: &str) {
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "should fail; stderr: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.starts_with("clinic: "), "{stderr}");
    assert!(stderr.contains(needle), "{needle:?} not in {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// `clinic keys generate` output as (name, value) pairs.
pub fn generated_keys() -> Vec<(String, String)> {
    let out = clinic().args(["keys", "generate"]).output().expect("runs");
    assert!(out.status.success());
    text(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The value of `name` in an environment.
pub fn env_value<'e>(env: &'e [(String, String)], name: &str) -> &'e str {
    env.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("{name} not set"))
}

/// `env` with `name` set to `value` (added if missing).
pub fn with_var(env: &[(String, String)], name: &str, value: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = env.iter().filter(|(k, _)| k != name).cloned().collect();
    out.push((name.to_owned(), value.to_owned()));
    out
}

/// Runs `f` to completion on a runtime of its own (for sync tests).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// Runs one statement on a SQLite file, as an old app instance or an attacker with SQL
/// access would (no envelopes, no keys); the database's refusal as `Err`.
pub fn try_sql(path: &Path, statement: &str) -> Result<(), String> {
    let url = format!("sqlite://{}?mode=rw", path.display());
    block_on(async {
        let db = Database::connect(&url).await.expect("opens the file");
        let result = db
            .execute_unprepared(statement)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string());
        db.close().await.expect("closes");
        result
    })
}

/// [`try_sql`] that must succeed.
pub fn sql(path: &Path, statement: &str) {
    if let Err(e) = try_sql(path, statement) {
        panic!("{statement}: {e}");
    }
}

/// The first column of the one row `query` returns, from a SQLite file.
pub fn sql_value<T: TryGetable>(path: &Path, query: &str) -> T {
    let url = format!("sqlite://{}?mode=ro", path.display());
    block_on(async {
        let db = Database::connect(&url).await.expect("opens the file");
        let row = db
            .query_one_raw(sea_orm::Statement::from_string(
                db.get_database_backend(),
                query,
            ))
            .await
            .expect("query runs")
            .expect("one row");
        let value = row.try_get_by_index(0).expect("a value of the asked type");
        db.close().await.expect("closes");
        value
    })
}

/// `SELECT count(*) …` (or any integer) on a SQLite file.
pub fn sql_count(path: &Path, query: &str) -> i64 {
    sql_value(path, query)
}

/// A `clinic` runner bound to one directory (so `clinic.db` is its own) and one key set.
pub struct Session {
    pub dir: PathBuf,
    pub env: Vec<(String, String)>,
    /// Removes `dir` when dropped.
    owned: bool,
}

impl Session {
    pub fn new(tag: &str) -> Session {
        Session::with_keys(tag, generated_keys())
    }

    /// A fresh directory with the keys in `env`.
    pub fn with_keys(tag: &str, env: Vec<(String, String)>) -> Session {
        Session {
            dir: fresh_dir(tag),
            env,
            owned: true,
        }
    }

    /// The same directory with other keys.
    pub fn with_env(&self, env: Vec<(String, String)>) -> Session {
        Session {
            dir: self.dir.clone(),
            env,
            owned: false,
        }
    }

    /// The session's `clinic.db`.
    pub fn db(&self) -> PathBuf {
        self.dir.join("clinic.db")
    }

    pub fn run(&self, args: &[&str]) -> Output {
        let mut cmd = clinic();
        cmd.args(args).current_dir(&self.dir);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.output().expect("runs")
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?} failed: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut with = vec!["--json"];
        with.extend_from_slice(args);
        let out = self.ok(&with);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {out}"))
    }

    /// Fails with one line containing `needle`.
    pub fn refused(&self, args: &[&str], needle: &str) {
        let out = self.run(args);
        assert_one_line_failure(&out, needle);
    }

    /// `clinic patient add` with these names and e-mail, born 1980-05-06, plus `more`
    /// options; returns the new id.
    pub fn add_patient(&self, first: &str, last: &str, email: &str, more: &[&str]) -> i64 {
        let mut args = vec![
            "patient",
            "add",
            "--first-name",
            first,
            "--last-name",
            last,
            "--email",
            email,
            "--dob",
            "1980-05-06",
        ];
        args.extend_from_slice(more);
        self.json(&args)["id"].as_i64().expect("id")
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if self.owned {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A PostgreSQL schema or MariaDB database of one test's own, dropped when the test ends
/// (also when it fails). For sync tests: it runs its statements on runtimes of its own.
pub struct ServerDb {
    /// The server URL from the environment (its user may create schemas and databases).
    pub admin: String,
    pub name: String,
    /// What the clinic connects to.
    pub url: String,
    postgres: bool,
}

impl ServerDb {
    /// `None` (the test is skipped) when `var` is not set.
    pub fn new(var: &str, tag: &str) -> Option<ServerDb> {
        static N: AtomicU32 = AtomicU32::new(0);
        let Ok(admin) = std::env::var(var) else {
            eprintln!("skipped: {var} not set");
            return None;
        };
        let postgres = var.contains("POSTGRES");
        let name = format!(
            "clinic_{tag}_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let url = if postgres {
            let sep = if admin.contains('?') { '&' } else { '?' };
            format!("{admin}{sep}options=-c%20search_path%3D{name}")
        } else {
            let (server, _) = admin.rsplit_once('/').expect("URL with a database");
            format!("{server}/{name}")
        };
        let db = ServerDb {
            admin,
            name,
            url,
            postgres,
        };
        if db.postgres {
            db.exec(&format!(
                "DROP SCHEMA IF EXISTS {0} CASCADE; CREATE SCHEMA {0}",
                db.name
            ));
        } else {
            db.exec(&format!("DROP DATABASE IF EXISTS {}", db.name));
            db.exec(&format!("CREATE DATABASE {}", db.name));
        }
        Some(db)
    }

    /// Runs `statement` on the admin URL (outside the test's schema or database); panics
    /// if it fails.
    pub fn exec(&self, statement: &str) {
        if let Err(e) = exec_on(&self.admin, statement) {
            panic!("{statement}: {e}");
        }
    }

    /// Runs `statement` inside the test's schema or database, as the clinic sees it.
    pub fn try_exec_in(&self, statement: &str) -> Result<(), String> {
        exec_on(&self.url, statement)
    }

    /// The first column of the one row `query` returns on the admin URL, as an integer.
    pub fn count(&self, query: &str) -> i64 {
        count_on(&self.admin, query)
    }

    /// Like [`ServerDb::count`], inside the test's schema or database.
    pub fn count_in(&self, query: &str) -> i64 {
        count_on(&self.url, query)
    }

    /// How many tables the schema / database holds.
    pub fn tables(&self) -> i64 {
        self.count(&format!(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = '{}'",
            self.name
        ))
    }
}

impl Drop for ServerDb {
    fn drop(&mut self) {
        let statement = if self.postgres {
            format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name)
        } else {
            format!("DROP DATABASE IF EXISTS {}", self.name)
        };
        let admin = self.admin.clone();
        let _ = block_on(async move {
            let db = Database::connect(&admin).await?;
            db.execute_unprepared(&statement).await?;
            db.close().await
        });
    }
}

fn exec_on(url: &str, statement: &str) -> Result<(), String> {
    block_on(async {
        let db = Database::connect(url).await.expect("connect");
        let result = db
            .execute_unprepared(statement)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string());
        db.close().await.expect("close");
        result
    })
}

fn count_on(url: &str, query: &str) -> i64 {
    block_on(async {
        let db = Database::connect(url).await.expect("connect");
        let row = db
            .query_one_raw(sea_orm::Statement::from_string(
                db.get_database_backend(),
                query,
            ))
            .await
            .expect(query)
            .expect("one row");
        // PostgreSQL keeps `integer` and `bigint` apart.
        let n = row
            .try_get_by_index::<i64>(0)
            .or_else(|_| row.try_get_by_index::<i32>(0).map(i64::from))
            .expect("an integer");
        db.close().await.expect("close");
        n
    })
}

/// A random KEK as base64 of 32 bytes (from a generated key entry `1:<base64>`).
pub fn random_kek() -> String {
    let keys = generated_keys();
    env_value(&keys, "ENCRYPTED_COLUMNS_KEYS")
        .split_once(':')
        .expect("id:key")
        .1
        .to_owned()
}

/// `args` after `--database-url url`, when a server URL is given.
pub fn with_url<'a>(url: Option<&'a str>, args: &[&'a str]) -> Vec<&'a str> {
    let mut out = Vec::new();
    if let Some(url) = url {
        out.extend(["--database-url", url]);
    }
    out.extend_from_slice(args);
    out
}
