//! The audit log as a hash chain (issue 11 item 5, and the audit parts of items 2, 7, 8):
//! `clinic audit verify` on untouched, edited, forged and truncated logs; `REPLACE` refused on
//! SQLite and MariaDB; concurrent appenders that never fork the chain; the PostgreSQL role
//! split that keeps the application from disabling the triggers; `clinic audit list` that
//! opens details only with their own patient's key and lists around damaged entries.

use std::path::Path;
use std::process::Output;
use std::sync::atomic::{AtomicU32, Ordering};

use sea_orm::DatabaseConnection;

use super::*;

/// `clinic --json audit verify`: its exit status and report.
fn verify_json(s: &Session) -> (bool, serde_json::Value) {
    let out = s.run(&["--json", "audit", "verify"]);
    let report = serde_json::from_str(&text(&out.stdout))
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}{}", text(&out.stdout), text(&out.stderr)));
    (out.status.success(), report)
}

/// The (id, kind) of every problem in a verify report.
fn problems(report: &serde_json::Value) -> Vec<(i64, String)> {
    report["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .map(|p| {
            (
                p["id"].as_i64().expect("id"),
                p["kind"].as_str().expect("kind").to_owned(),
            )
        })
        .collect()
}

/// Adds a patient; returns its id.
fn add_patient(s: &Session, first: &str, email: &str) -> i64 {
    s.add_patient(first, "Chainwood", email, &["--phone", "+1 555 0199"])
}

/// A clinic with two patients and some history: creates, an update (sealed details), reads.
fn used_clinic(tag: &str) -> (Session, i64, i64) {
    let s = Session::new(tag);
    s.ok(&["init"]);
    let ada = add_patient(&s, "Ada", "ada@example.org");
    let ben = add_patient(&s, "Ben", "ben@example.org");
    s.ok(&[
        "patient",
        "update",
        &ada.to_string(),
        "--email",
        "ada.t@example.org",
    ]);
    s.ok(&["patient", "show", &ben.to_string()]);
    s.ok(&["patient", "list"]);
    (s, ada, ben)
}

fn entries(db: &Path) -> i64 {
    sql_count(db, "SELECT count(*) FROM audit_log")
}

/// A row for `audit_log` made outside the clinic, `extra` naming more columns and values.
fn forged(extra_columns: &str, extra_values: &str) -> String {
    format!(
        "INSERT INTO audit_log (at, actor, action, record, patient_id, summary{extra_columns}) \
         VALUES ('2026-01-01T00:00:00+00:00', 'mallory', 'read', 'patients#1', 1, \
         'nothing happened'{extra_values})"
    )
}

#[test]
fn chain_is_intact_after_normal_use_on_sqlite() {
    let (s, ada, _) = used_clinic("chain-intact");
    let db = s.dir.join("clinic.db");
    s.ok(&[
        "note",
        "add",
        &ada.to_string(),
        "--author",
        "dr.x",
        "--subjective",
        "s",
        "--objective",
        "o",
        "--assessment",
        "a",
        "--plan",
        "p",
    ]);
    let n = entries(&db);
    assert!(n >= 7, "{n} entries");
    // Every entry is in the chain: seq 1..n without gaps, a 32-byte MAC, the key that made it.
    assert_eq!(
        sql_count(
            &db,
            "SELECT count(*) FROM audit_log WHERE length(mac) = 32 AND mac_key = 1"
        ),
        n
    );
    assert_eq!(
        sql_count(&db, "SELECT count(DISTINCT seq) FROM audit_log"),
        n
    );
    assert_eq!(sql_count(&db, "SELECT max(seq) FROM audit_log"), n);

    let out = s.ok(&["audit", "verify"]);
    assert!(
        out.contains(&format!(
            "audit log intact: {n} entries (seq 1..{n}), head MAC "
        )),
        "{out}"
    );
    assert!(
        out.contains("cannot show entries cut off after it"),
        "{out}"
    );
    assert!(!out.contains("before the chain"), "{out}");
    let report = s.json(&["audit", "verify"]);
    assert_eq!(report["intact"], true);
    assert_eq!(report["chained"], n);
    assert_eq!(report["before_chain"], 0);
    assert_eq!(report["head"]["seq"], n);
    let head = report["head"]["mac"].as_str().expect("head MAC");
    assert_eq!(head.len(), 64);
    // The head printed is the stored MAC of the last entry: what an operator records.
    let stored: String = {
        let url = format!("sqlite://{}?mode=ro", db.display());
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(async {
                let conn = Database::connect(&url).await.expect("opens");
                let row = conn
                    .query_one_raw(sea_orm::Statement::from_string(
                        conn.get_database_backend(),
                        "SELECT lower(hex(mac)) FROM audit_log ORDER BY seq DESC LIMIT 1",
                    ))
                    .await
                    .expect("query")
                    .expect("row");
                row.try_get_by_index(0).expect("text")
            })
    };
    assert_eq!(head, stored);
    assert!(out.contains(&format!("head MAC {}", &head[..8])), "{out}");

    // Keys the chain cannot be checked with: a blind-index key under another id is "not
    // loaded"; other bytes under the same id are a MAC mismatch from the very first entry.
    let blind = s
        .env
        .iter()
        .find(|(k, _)| k == "ENCRYPTED_COLUMNS_BLIND_INDEX_KEYS")
        .map(|(_, v)| v.clone())
        .expect("blind-index key");
    let mut other_id = s.env.clone();
    for (k, v) in &mut other_id {
        if k == "ENCRYPTED_COLUMNS_BLIND_INDEX_KEYS" {
            *v = format!("2:{}", blind.split_once(':').expect("id:key").1);
        }
    }
    let out = s.with_env(other_id).run(&["audit", "verify"]);
    assert_one_line_failure(
        &out,
        "audit log broken at entry #1 (seq 1): MAC key not loaded",
    );
    assert!(
        text(&out.stdout).contains("blind-index key 1 is not loaded"),
        "{}",
        text(&out.stdout)
    );
    let mut other_key = s.env.clone();
    let fresh = generated_keys();
    for (k, v) in &mut other_key {
        if k == "ENCRYPTED_COLUMNS_BLIND_INDEX_KEYS" {
            *v = fresh
                .iter()
                .find(|(fk, _)| fk == k)
                .map(|(_, fv)| fv.clone())
                .expect("fresh blind-index key");
        }
    }
    // Another key under the registered id never reaches the verifier: the key store's check
    // value refuses it first (issue 12), so it cannot report a sound chain as forged.
    let out = s.with_env(other_key).run(&["audit", "verify"]);
    assert_one_line_failure(
        &out,
        "key 1 in ENCRYPTED_COLUMNS_BLIND_INDEX_KEYS is not the key this database registered",
    );
    // The untouched log with the right keys is still intact.
    assert!(s.ok(&["audit", "verify"]).contains("audit log intact"));
}

#[test]
fn entries_from_before_the_chain_are_reported_not_failed() {
    let s = Session::new("chain-before");
    s.ok(&["init"]);
    let db = s.dir.join("clinic.db");
    // What a database upgraded from before the chain holds: entries without seq or MAC.
    sql(&db, &forged("", ""));
    sql(&db, &forged("", ""));
    add_patient(&s, "Ada", "ada@example.org");
    let out = s.ok(&["audit", "verify"]);
    assert!(
        out.contains("audit log intact: 1 entry (seq 1..1)"),
        "{out}"
    );
    assert!(
        out.contains("2 entries written before the chain (unverifiable): ids below #3"),
        "{out}"
    );
    let report = s.json(&["audit", "verify"]);
    assert_eq!(report["before_chain"], 2);
    assert_eq!(report["first_chained_id"], 3);
    // One written without a MAC after the chain began is a forged insert, not history.
    sql(&db, &forged("", ""));
    let (ok, report) = verify_json(&s);
    assert!(!ok);
    assert_eq!(problems(&report), [(4, "missing_mac".to_owned())]);
    assert_eq!(report["before_chain"], 2);
}

#[test]
fn forged_inserts_are_named_by_verify_on_sqlite() {
    let (s, _, _) = used_clinic("chain-forged");
    let db = s.dir.join("clinic.db");
    let n = entries(&db);
    // Without a MAC, with a made-up MAC in the next place of the chain, and in the chain's next
    // place without a MAC: each named, the first by id in the one-line error.
    sql(&db, &forged("", ""));
    sql(
        &db,
        &forged(
            ", seq, mac, mac_key",
            &format!(", {}, randomblob(32), 1", n + 1),
        ),
    );
    sql(&db, &forged(", seq", &format!(", {}", n + 2)));
    let out = s.run(&["audit", "verify"]);
    assert_one_line_failure(
        &out,
        &format!(
            "audit log broken at entry #{} (no seq): missing MAC; 3 problem(s) in all",
            n + 1
        ),
    );
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!("entry #{} (seq {}): MAC mismatch", n + 2, n + 1)),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("entry #{} (seq {}): missing MAC", n + 3, n + 2)),
        "{stdout}"
    );
    // The clinic keeps appending after a forged head; its own entries verify.
    s.ok(&["patient", "list"]);
    let (ok, report) = verify_json(&s);
    assert!(!ok);
    assert_eq!(
        problems(&report),
        [
            (n + 1, "missing_mac".to_owned()),
            (n + 2, "mac_mismatch".to_owned()),
            (n + 3, "missing_mac".to_owned()),
        ]
    );
    assert_eq!(report["chained"], n + 2 + 2);
}

#[test]
fn replace_is_refused_on_sqlite() {
    let (s, _, _) = used_clinic("chain-replace");
    let db = s.dir.join("clinic.db");
    let n = entries(&db);
    let summary_of_2 =
        "SELECT count(*) FROM audit_log WHERE id = 2 AND summary = 'patient registered'";
    assert_eq!(sql_count(&db, summary_of_2), 1);
    // SQLite deletes the row a REPLACE collides with without firing DELETE triggers; the
    // BEFORE INSERT trigger runs first and refuses it, by id or by seq.
    for statement in [
        "INSERT OR REPLACE INTO audit_log (id, at, actor, action, record, summary) \
             VALUES (2, '2026-01-01T00:00:00+00:00', 'mallory', 'read', 'patients#1', 'x')"
            .to_owned(),
        "REPLACE INTO audit_log (id, at, actor, action, record, summary) \
             VALUES (2, '2026-01-01T00:00:00+00:00', 'mallory', 'read', 'patients#1', 'x')"
            .to_owned(),
        forged(", seq, mac, mac_key", ", 2, randomblob(32), 1").replace("INSERT", "REPLACE"),
        format!(
            "{} ON CONFLICT(id) DO UPDATE SET summary = 'x'",
            forged(", id", ", 2")
        ),
    ] {
        let err = try_sql(&db, &statement).expect_err(&statement);
        assert!(
            err.contains("audit_log is append-only"),
            "{statement}: {err}"
        );
    }
    assert_eq!(sql_count(&db, summary_of_2), 1, "entry 2 untouched");
    assert_eq!(entries(&db), n);
    assert!(
        s.ok(&["audit", "verify"])
            .contains(&format!("audit log intact: {n} entries"))
    );
}

#[test]
fn edited_and_deleted_entries_are_named_on_sqlite() {
    let (s, _, _) = used_clinic("chain-edited");
    let db = s.dir.join("clinic.db");
    let n = entries(&db);
    assert!(n >= 6, "{n}");
    // The triggers refuse edits…
    let err =
        try_sql(&db, "UPDATE audit_log SET summary = 'nothing' WHERE id = 3").expect_err("refused");
    assert!(err.contains("audit_log is append-only"), "{err}");
    // …but whoever can drop them can edit: the chain names the entry.
    sql(&db, "DROP TRIGGER audit_log_no_update");
    sql(
        &db,
        "UPDATE audit_log SET actor = 'someone else' WHERE id = 3",
    );
    let out = s.run(&["audit", "verify"]);
    assert_one_line_failure(
        &out,
        "audit log broken at entry #3 (seq 3): MAC mismatch; 1 problem(s)",
    );
    // Deleting entry 5 leaves a gap, named at the entry after it.
    sql(&db, "DROP TRIGGER audit_log_no_delete");
    sql(&db, "DELETE FROM audit_log WHERE id = 5");
    let (ok, report) = verify_json(&s);
    assert!(!ok);
    assert_eq!(
        problems(&report),
        [(3, "mac_mismatch".to_owned()), (6, "gap".to_owned())]
    );
    assert!(
        report["problems"][1]["detail"]
            .as_str()
            .expect("detail")
            .contains("seq jumps from 4 to 6: 1 entry is missing"),
        "{report}"
    );
    // Cutting off the tail is invisible to the chain alone (here it even takes the gap with
    // it): only a head recorded elsewhere shows it.
    assert_eq!(report["head"]["seq"], 6);
    sql(&db, "DELETE FROM audit_log WHERE seq = 6");
    let (_, report) = verify_json(&s);
    assert_eq!(report["head"]["seq"], 4);
    assert_eq!(problems(&report), [(3, "mac_mismatch".to_owned())]);
}

#[test]
fn audit_list_opens_details_only_with_their_patients_key() {
    let s = Session::new("chain-list");
    s.ok(&["init"]);
    let db = s.dir.join("clinic.db");
    let ada = add_patient(&s, "Ada", "ada@example.org");
    let ben = add_patient(&s, "Ben", "ben@example.org");
    let cy = add_patient(&s, "Cy", "cy@example.org");
    let dee = add_patient(&s, "Dee", "dee@example.org");
    let eve = add_patient(&s, "Eve", "eve@example.org");
    for (id, email) in [
        (ada, "ada2@example.org"),
        (ben, "ben2@example.org"),
        (cy, "cy2@example.org"),
        (dee, "dee2@example.org"),
        (eve, "eve2@example.org"),
    ] {
        s.ok(&["patient", "update", &id.to_string(), "--email", email]);
    }
    // Terminal control characters in a stored field are shown escaped.
    sql(
        &db,
        &forged("", "").replace("'mallory'", "'nurse' || char(27) || '[2J'"),
    );

    // Ben's sealed details copied into a new entry about Ada: both keys are in the ring for
    // the listing, so only the key-id check keeps Ben's details from showing as Ada's.
    sql(
        &db,
        &format!(
            "INSERT INTO audit_log (at, actor, action, record, patient_id, summary, details) \
             SELECT at, actor, action, 'patients#{ada}', {ada}, summary, details FROM audit_log \
             WHERE patient_id = {ben} AND details IS NOT NULL"
        ),
    );
    let copied = sql_count(&db, "SELECT max(id) FROM audit_log");
    // Cy erased (expected, not a failure); Dee's key row gone; Eve's patient row gone without
    // an erasure.
    s.ok(&["patient", "erase", &cy.to_string(), "--yes"]);
    sql(&db, "DROP TRIGGER patient_keys_in_use");
    sql(
        &db,
        &format!(
            "DELETE FROM patient_keys WHERE id = (SELECT key_id FROM patients WHERE id = {dee})"
        ),
    );
    sql(&db, &format!("DELETE FROM patients WHERE id = {eve}"));
    let update_of = |p: i64| {
        sql_count(
            &db,
            &format!("SELECT id FROM audit_log WHERE action = 'update' AND patient_id = {p}"),
        )
    };

    let out = s.run(&["--json", "audit", "list", "--limit", "500"]);
    let listed: serde_json::Value = serde_json::from_str(&text(&out.stdout)).expect("JSON");
    let listed = listed.as_array().expect("array");
    assert_eq!(listed.len() as i64, entries(&db), "every entry listed");
    let find = |id: i64| {
        listed
            .iter()
            .find(|e| e["id"] == id)
            .unwrap_or_else(|| panic!("entry {id} not listed"))
    };
    assert_eq!(find(update_of(ada))["details"], "changed: e-mail");
    assert_eq!(find(update_of(ben))["details"], "changed: e-mail");
    assert!(find(update_of(ada))["unreadable"].is_null());
    let reason = |id: i64| find(id)["unreadable"]["reason"].as_str().map(str::to_owned);
    assert_eq!(reason(copied).as_deref(), Some("sealed_with_other_key"));
    assert!(
        find(copied)["details"]
            .as_str()
            .expect("details")
            .starts_with("(unreadable: sealed with another patient's key"),
        "{}",
        find(copied)
    );
    assert_eq!(reason(update_of(cy)).as_deref(), Some("patient_erased"));
    assert_eq!(
        find(update_of(cy))["details"],
        "(unreadable: the patient's key was destroyed)"
    );
    assert_eq!(reason(update_of(dee)).as_deref(), Some("key_row_missing"));
    assert_eq!(
        reason(update_of(eve)).as_deref(),
        Some("patient_row_missing")
    );
    // Named newest first, like the listing; the first one's reason in words.
    assert_one_line_failure(
        &out,
        &format!(
            "3 audit entries could not be read (ids {copied}, {}, {}); entry #{copied}: sealed \
             with another patient's key",
            update_of(eve),
            update_of(dee)
        ),
    );

    // The table: the same entries, the reasons, escaped text, and the same failure.
    let out = s.run(&["audit", "list", "--limit", "500"]);
    let table = text(&out.stdout);
    assert!(!out.status.success());
    assert_eq!(table.lines().count() as i64, entries(&db) + 1, "{table}");
    assert!(
        table.contains("(unreadable: sealed with another patient's key"),
        "{table}"
    );
    assert!(
        table.contains("has no row and no erasure record"),
        "{table}"
    );
    assert!(table.contains("is missing from patient_keys"), "{table}");
    assert!(
        table.contains("patient record changed: changed: e-mail"),
        "{table}"
    );
    assert!(table.contains("nurse\\u{1b}[2J"), "{table}");
    assert!(!table.contains('\u{1b}'), "raw escape printed: {table:?}");

    // Only Ada's entries, with only Ada's key: the copy is still named for what it is.
    let out = s.run(&["--json", "audit", "list", "--patient", &ada.to_string()]);
    assert_one_line_failure(
        &out,
        &format!("1 audit entry could not be read (ids {copied})"),
    );
    // Cy's trail alone is readable as far as it goes: erasure is not damage.
    let trail = s.json(&["audit", "list", "--patient", &cy.to_string()]);
    assert!(
        trail
            .as_array()
            .expect("array")
            .iter()
            .any(|e| e["action"] == "erase")
    );
}

#[test]
fn concurrent_appends_on_sqlite_keep_one_chain() {
    let s = Session::new("chain-concurrent");
    let url = format!("sqlite://{}?mode=rwc", s.dir.join("clinic.db").display());
    concurrent_appends(&url, &s.env);
}

/// Several `clinic` processes at once, each appending many entries: every command succeeds,
/// and the log is one unbroken chain with one seq per entry.
fn concurrent_appends(url: &str, keys: &[(String, String)]) {
    let run = |args: &[&str]| -> Output {
        let mut cmd = clinic();
        cmd.args(["--database-url", url]).args(args);
        for (k, v) in keys {
            cmd.env(k, v);
        }
        cmd.output().expect("runs")
    };
    let ok = |args: &[&str]| -> String {
        let out = run(args);
        assert!(
            out.status.success(),
            "{args:?}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    };
    ok(&["init"]);
    for n in 0..3 {
        ok(&[
            "patient",
            "add",
            "--first-name",
            "Pat",
            "--last-name",
            "Parallel",
            "--email",
            &format!("pat{n}@example.org"),
            "--dob",
            "1970-01-01",
        ]);
    }
    const WORKERS: usize = 5;
    const ROUNDS: usize = 4;
    std::thread::scope(|scope| {
        for w in 0..WORKERS {
            let ok = &ok;
            scope.spawn(move || {
                for r in 0..ROUNDS {
                    match r % 3 {
                        0 => ok(&["patient", "list"]),
                        1 => ok(&["patient", "show", "1"]),
                        _ => ok(&[
                            "patient",
                            "add",
                            "--first-name",
                            "Con",
                            "--last-name",
                            "Current",
                            "--email",
                            &format!("w{w}r{r}@example.org"),
                            "--dob",
                            "1971-02-03",
                        ]),
                    };
                }
            });
        }
    });
    let report: serde_json::Value =
        serde_json::from_str(&ok(&["--json", "audit", "verify"])).expect("JSON");
    assert_eq!(report["intact"], true, "{report}");
    let listed: serde_json::Value =
        serde_json::from_str(&ok(&["--json", "audit", "list", "--limit", "10000"])).expect("JSON");
    let listed = listed.as_array().expect("array");
    let mut seqs: Vec<i64> = listed
        .iter()
        .map(|e| e["seq"].as_i64().expect("seq"))
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=listed.len() as i64).collect::<Vec<_>>());
    assert_eq!(report["chained"], listed.len());
    // 3 creates, then per worker: 2 lists of ≥3 reads, 1 show, 1 add.
    assert!(
        listed.len() >= 3 + WORKERS * (2 * 3 + 1 + 1),
        "{}",
        listed.len()
    );
}

/// A whole server database of the test's own, with roles, for async tests (the role split
/// needs a database, not a schema: roles are granted on its `public` schema), dropped by
/// [`with_server_db`].
struct OwnDatabase {
    admin: DatabaseConnection,
    base: String,
    name: String,
    postgres: bool,
    roles: Vec<String>,
}

impl OwnDatabase {
    async fn create(var: &str, tag: &str) -> Option<OwnDatabase> {
        let Ok(base) = std::env::var(var) else {
            eprintln!("skipped: {var} not set");
            return None;
        };
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "clinic_audit_{tag}_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let admin = Database::connect(&base)
            .await
            .expect("connect to the test server");
        let postgres = var.contains("POSTGRES");
        let db = OwnDatabase {
            admin,
            base,
            name,
            postgres,
            roles: Vec::new(),
        };
        db.exec(&format!("DROP DATABASE IF EXISTS {}", db.name))
            .await;
        Some(db)
    }

    async fn exec(&self, sql: &str) {
        self.admin
            .execute_unprepared(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// The URL of this database as `user` (trust authentication: no password).
    fn url_as(&self, user: &str) -> String {
        let (scheme, rest) = self.base.split_once("://").expect("URL");
        let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
        let host = host.split('/').next().expect("host");
        format!("{scheme}://{user}@{host}/{}", self.name)
    }

    /// The URL of this database as the admin user of the base URL.
    fn url(&self) -> String {
        let (server, _) = self.base.rsplit_once('/').expect("URL with a database");
        format!("{server}/{}", self.name)
    }

    async fn drop_all(self) {
        let force = if self.postgres { " WITH (FORCE)" } else { "" };
        self.exec(&format!("DROP DATABASE IF EXISTS {}{force}", self.name))
            .await;
        for role in &self.roles {
            let role = if self.postgres {
                role.clone()
            } else {
                format!("'{role}'@'%'")
            };
            self.exec(&format!(
                "DROP {} IF EXISTS {role}",
                if self.postgres { "ROLE" } else { "USER" }
            ))
            .await;
        }
    }
}

/// Runs `body`, then drops the test's database and roles whether or not `body` panicked.
async fn with_server_db(db: OwnDatabase, body: impl Future<Output = ()> + Send + 'static) {
    let result = tokio::spawn(body).await;
    db.drop_all().await;
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// Runs `clinic` against `url` with `keys`.
fn clinic_at(url: &str, keys: &[(String, String)], args: &[&str]) -> Output {
    let mut cmd = clinic();
    cmd.args(["--database-url", url]).args(args);
    for (k, v) in keys {
        cmd.env(k, v);
    }
    cmd.output().expect("runs")
}

fn clinic_ok(url: &str, keys: &[(String, String)], args: &[&str]) -> String {
    let out = clinic_at(url, keys, args);
    assert!(
        out.status.success(),
        "{args:?}: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// The error `sql` gets, as text; panics if it succeeds.
async fn refused(db: &DatabaseConnection, sql: &str) -> String {
    match db.execute_unprepared(sql).await {
        Ok(_) => panic!("{sql} was allowed"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn concurrent_appends_on_postgres_keep_one_chain() {
    let Some(db) = OwnDatabase::create("TEST_POSTGRES_URL", "conc").await else {
        return;
    };
    db.exec(&format!("CREATE DATABASE {}", db.name)).await;
    let url = db.url();
    with_server_db(db, async move {
        tokio::task::spawn_blocking(move || concurrent_appends(&url, &generated_keys()))
            .await
            .expect("appends");
    })
    .await;
}

#[tokio::test]
async fn concurrent_appends_on_mariadb_keep_one_chain() {
    let Some(db) = OwnDatabase::create("TEST_MYSQL_URL", "conc").await else {
        return;
    };
    db.exec(&format!("CREATE DATABASE {}", db.name)).await;
    let url = db.url();
    with_server_db(db, async move {
        tokio::task::spawn_blocking(move || concurrent_appends(&url, &generated_keys()))
            .await
            .expect("appends");
    })
    .await;
}

/// The README's role split on PostgreSQL: the owner runs the migrations; the application's
/// role may only SELECT and INSERT on `audit_log`, so it can neither rewrite the log nor
/// switch its triggers off, and the clinic still works.
#[tokio::test]
async fn role_split_on_postgres_keeps_the_app_from_rewriting_the_log() {
    let Some(mut db) = OwnDatabase::create("TEST_POSTGRES_URL", "roles").await else {
        return;
    };
    let owner = format!("{}_owner", db.name);
    let app = format!("{}_app", db.name);
    for role in [&owner, &app] {
        db.exec(&format!("DROP ROLE IF EXISTS {role}")).await;
        db.exec(&format!("CREATE ROLE {role} LOGIN")).await;
        db.roles.push(role.clone());
    }
    db.exec(&format!("CREATE DATABASE {} OWNER {owner}", db.name))
        .await;
    let owner_url = db.url_as(&owner);
    let app_url = db.url_as(&app);
    with_server_db(db, async move {
        let keys = generated_keys();
        assert!(clinic_ok(&owner_url, &keys, &["init"]).contains("Applied"));
        let as_owner = Database::connect(&owner_url).await.expect("owner connects");
        // The README's grants, run by the owner.
        as_owner
            .execute_unprepared(&format!(
                "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {app};
                 REVOKE INSERT, UPDATE, DELETE ON seaql_migrations FROM {app};
                 REVOKE UPDATE, DELETE ON audit_log FROM {app};
                 GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {app};"
            ))
            .await
            .expect("grants");

        // The clinic works as the application role.
        let id = clinic_ok(
            &app_url,
            &keys,
            &[
                "--json",
                "patient",
                "add",
                "--first-name",
                "Ada",
                "--last-name",
                "Rolewood",
                "--email",
                "ada@example.org",
                "--dob",
                "1980-05-06",
            ],
        );
        let id = serde_json::from_str::<serde_json::Value>(&id).expect("JSON")["id"]
            .as_i64()
            .expect("id")
            .to_string();
        clinic_ok(
            &app_url,
            &keys,
            &["patient", "update", &id, "--email", "ada2@example.org"],
        );
        assert!(clinic_ok(&app_url, &keys, &["patient", "list"]).contains("Ada"));
        assert!(clinic_ok(&app_url, &keys, &["audit", "list"]).contains("changed: e-mail"));
        assert!(
            clinic_ok(&app_url, &keys, &["audit", "verify"])
                .contains("audit log intact: 3 entries")
        );

        // …and cannot rewrite the log, or switch its triggers off.
        let as_app = Database::connect(&app_url).await.expect("app connects");
        for sql in [
            "UPDATE audit_log SET summary = 'nothing'",
            "DELETE FROM audit_log",
            "TRUNCATE audit_log",
            "INSERT INTO audit_log (id, at, actor, action, record, summary) \
             VALUES (1, now(), 'x', 'read', 'x', 'x') ON CONFLICT (id) DO UPDATE SET summary = 'x'",
        ] {
            let err = refused(&as_app, sql).await;
            assert!(err.contains("permission denied"), "{sql}: {err}");
        }
        for sql in [
            "ALTER TABLE audit_log DISABLE TRIGGER ALL",
            "DROP TRIGGER audit_log_append_only ON audit_log",
            "ALTER TABLE audit_log DROP COLUMN mac",
        ] {
            let err = refused(&as_app, sql).await;
            assert!(err.contains("must be owner"), "{sql}: {err}");
        }
        // What it can do — insert a row of its own making — the chain names.
        as_app
            .execute_unprepared(
                "INSERT INTO audit_log (at, actor, action, record, summary) \
                 VALUES (now(), 'mallory', 'read', 'patients#1', 'nothing happened')",
            )
            .await
            .expect("the app role may insert");
        let out = clinic_at(&app_url, &keys, &["audit", "verify"]);
        assert_one_line_failure(&out, "audit log broken at entry #4 (no seq): missing MAC");

        // The owner's upsert is refused by the trigger; the owner could disable it, which is
        // why the application must not connect as the owner — and the chain still names it.
        let err = refused(
            &as_owner,
            "INSERT INTO audit_log (id, at, actor, action, record, summary) \
             VALUES (1, now(), 'x', 'read', 'x', 'x') ON CONFLICT (id) DO UPDATE SET summary = 'x'",
        )
        .await;
        assert!(err.contains("audit_log is append-only"), "{err}");
        as_owner
            .execute_unprepared(
                "ALTER TABLE audit_log DISABLE TRIGGER USER;
                 UPDATE audit_log SET summary = 'nothing happened' WHERE id = 2;
                 ALTER TABLE audit_log ENABLE TRIGGER USER;",
            )
            .await
            .expect("the owner can");
        let out = clinic_at(&app_url, &keys, &["audit", "verify"]);
        assert_one_line_failure(
            &out,
            "audit log broken at entry #2 (seq 2): MAC mismatch; 2 problem(s)",
        );
        as_app.close().await.expect("closes");
        as_owner.close().await.expect("closes");
    })
    .await;
}

/// MariaDB: `REPLACE INTO` and `INSERT … ON DUPLICATE KEY UPDATE` fire the DELETE and UPDATE
/// triggers, so both are refused; a plain forged insert is named by verify.
#[tokio::test]
async fn replace_into_is_refused_on_mariadb() {
    let Some(db) = OwnDatabase::create("TEST_MYSQL_URL", "replace").await else {
        return;
    };
    db.exec(&format!("CREATE DATABASE {}", db.name)).await;
    let url = db.url();
    with_server_db(db, async move {
        let keys = generated_keys();
        clinic_ok(&url, &keys, &["init"]);
        clinic_ok(
            &url,
            &keys,
            &[
                "patient",
                "add",
                "--first-name",
                "Ada",
                "--last-name",
                "Mariawood",
                "--email",
                "ada@example.org",
                "--dob",
                "1980-05-06",
            ],
        );
        clinic_ok(
            &url,
            &keys,
            &["patient", "update", "1", "--email", "ada2@example.org"],
        );
        clinic_ok(&url, &keys, &["patient", "show", "1"]);
        // The MAC covers `at` to the microsecond: intact only if MariaDB keeps them.
        assert!(
            clinic_ok(&url, &keys, &["audit", "verify"]).contains("audit log intact: 3 entries")
        );
        let conn = Database::connect(&url).await.expect("connects");
        for sql in [
            "REPLACE INTO audit_log (id, at, actor, action, record, summary) \
             VALUES (2, NOW(6), 'mallory', 'read', 'patients#1', 'nothing happened')",
            "REPLACE INTO audit_log (at, actor, action, record, summary, seq) \
             VALUES (NOW(6), 'mallory', 'read', 'patients#1', 'nothing happened', 2)",
            "INSERT INTO audit_log (id, at, actor, action, record, summary) \
             VALUES (2, NOW(6), 'mallory', 'read', 'patients#1', 'x') \
             ON DUPLICATE KEY UPDATE summary = 'nothing happened'",
        ] {
            let err = refused(&conn, sql).await;
            assert!(err.contains("audit_log is append-only"), "{sql}: {err}");
        }
        assert!(
            clinic_ok(&url, &keys, &["audit", "verify"]).contains("audit log intact: 3 entries")
        );
        conn.execute_unprepared(
            "INSERT INTO audit_log (at, actor, action, record, summary, seq, mac, mac_key) \
             VALUES (NOW(6), 'mallory', 'read', 'patients#1', 'x', 4, RANDOM_BYTES(32), 1)",
        )
        .await
        .expect("a plain insert");
        let out = clinic_at(&url, &keys, &["audit", "verify"]);
        // Named by seq: MariaDB spent auto-increment ids on the refused statements.
        assert_one_line_failure(&out, "(seq 4): MAC mismatch; 1 problem(s) in all");

        // Migration 10 rolls back and forward on MariaDB too (`at` back to whole seconds and
        // to microseconds again); the entries stay, as written before the chain.
        use migration::{Migrator, MigratorTrait};
        // Down to just before migration 10, however many came after it.
        let after_chain = Migrator::migrations()
            .iter()
            .rev()
            .position(|m| m.name() == "m20261129_000010_chain_audit_log")
            .expect("the chain migration");
        let steps = u32::try_from(after_chain + 1).expect("few migrations");
        Migrator::down(&conn, Some(steps)).await.expect("down");
        Migrator::up(&conn, None).await.expect("up");
        let out = clinic_ok(&url, &keys, &["audit", "verify"]);
        assert!(out.contains("4 entries written before the chain"), "{out}");
        conn.close().await.expect("closes");
    })
    .await;
}

/// Migration 10 rolls back (the chain's columns, index and trigger go; so does the chain)
/// and forward again, after which the old entries count as written before the chain.
#[test]
fn chain_migration_rolls_back_and_forward_on_sqlite() {
    use migration::{Migrator, MigratorTrait};
    let (s, _, _) = used_clinic("chain-down");
    let db = s.dir.join("clinic.db");
    let n = entries(&db);
    let chain_parts = |db: &Path| {
        sql_count(
            db,
            "SELECT (SELECT count(*) FROM pragma_table_info('audit_log') \
                     WHERE name IN ('seq', 'mac', 'mac_key')) \
                  + (SELECT count(*) FROM sqlite_master \
                     WHERE name IN ('audit_log_no_replace', 'audit_log_seq_unique'))",
        )
    };
    assert_eq!(chain_parts(&db), 5);
    // The helpers above run runtimes of their own; this one only drives the migrator.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let conn = rt
        .block_on(Database::connect(format!(
            "sqlite://{}?mode=rw",
            db.display()
        )))
        .expect("opens");
    // Down to just before the chain migration, however many came after it.
    let after_chain = Migrator::migrations()
        .iter()
        .rev()
        .position(|m| m.name() == "m20261129_000010_chain_audit_log")
        .expect("the chain migration");
    let steps = u32::try_from(after_chain + 1).expect("few migrations");
    rt.block_on(Migrator::down(&conn, Some(steps)))
        .expect("down");
    assert_eq!(chain_parts(&db), 0);
    // The append-only triggers of migration 8 are untouched.
    let err = rt
        .block_on(conn.execute_unprepared("DELETE FROM audit_log"))
        .expect_err("still append-only");
    assert!(
        err.to_string().contains("audit_log is append-only"),
        "{err}"
    );
    rt.block_on(Migrator::up(&conn, None)).expect("up");
    rt.block_on(conn.close()).expect("closes");
    assert_eq!(chain_parts(&db), 5);
    assert_eq!(entries(&db), n);
    let out = s.ok(&["audit", "verify"]);
    assert!(
        out.contains("audit log intact: no chained entries yet"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "{n} entries written before the chain (unverifiable)"
        )),
        "{out}"
    );
    s.ok(&["patient", "list"]);
    let out = s.ok(&["audit", "verify"]);
    assert!(
        out.contains("audit log intact: 2 entries (seq 1..2)"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "{n} entries written before the chain (unverifiable): ids below #{}",
            n + 1
        )),
        "{out}"
    );
}
