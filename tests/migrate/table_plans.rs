//! Issue 10's defects of multi-column plans, on a people table (full name; e-mail with a blind
//! index, some NULL; phone, a third NULL): a table's columns move together, all or none; a
//! table step skips columns an earlier one-column plan already took further; drop and purge
//! resume at the phase level.

use std::collections::BTreeMap;

use encrypted_columns::blind_index::BlindIndex;
use encrypted_columns::migrate::{self, EncryptColumn, EncryptTable, Phase, schema, state};
use encrypted_columns::schema::blind_index_column_type;
use encrypted_columns::{ColumnContext, column_context, keyring};
use encrypted_columns_tests::{TestResult, backend_tests, raw};
use sea_orm::sea_query::{ColumnDef, Expr, ExprTrait, Query, Table};
use sea_orm::{ConnectionTrait, DatabaseConnection};
use sea_orm_migration::SchemaManager;

use crate::email_table::{check_envelopes, email_spec, index_of};
use crate::expect::{expect_phase_error_of, expect_refused};
use crate::support::{
    Res, a, batches, count_where, dropped_exactly, log_moves, old_instance_write, phases_of,
};

column_context!(MultiName, table = "mig_multi", column = "full_name");
email_context!(MultiEmail, MULTI_BIDX, "mig_multi");
column_context!(MultiPhone, table = "mig_multi", column = "phone");
column_context!(SplitName, table = "mig_split", column = "full_name");
email_context!(SplitEmail, SPLIT_BIDX, "mig_split");
email_context!(PurgeEmail, PURGE_BIDX, "mig_purge");
column_context!(PurgePhone, table = "mig_purge", column = "phone");

/// `CREATE TABLE table (id int primary key, full_name varchar(200), email varchar(320),
/// phone varchar(40), full_name_enc blob, email_enc blob, email_bidx binary(33), phone_enc
/// blob)`: three plaintext columns moved as one plan.
async fn create_people_table(
    conn: &DatabaseConnection,
    table: &str,
    index: &BlindIndex,
) -> TestResult {
    let create = Table::create()
        .table(a(table))
        .col(ColumnDef::new(a("id")).integer().not_null().primary_key())
        .col(ColumnDef::new(a("full_name")).string_len(200).null())
        .col(ColumnDef::new(a("email")).string_len(320).null())
        .col(ColumnDef::new(a("phone")).string_len(40).null())
        .col(ColumnDef::new(a("full_name_enc")).blob().null())
        .col(ColumnDef::new(a("email_enc")).blob().null())
        .col(ColumnDef::new_with_type(a("email_bidx"), blind_index_column_type(index)).null())
        .col(ColumnDef::new(a("phone_enc")).blob().null())
        .to_owned();
    conn.execute(&create).await?;
    Ok(())
}

/// The seeded `column` (of [`PEOPLE`]) of row `id`: a full name always, an e-mail but for
/// every 13th row, a phone but for every 3rd.
fn person(column: &str, id: i32) -> Option<String> {
    match column {
        "full_name" => Some(format!("Patient {id:04}")),
        "email" => (id % 13 != 0).then(|| format!("person{id:04}@example.org")),
        _ => (id % 3 != 0).then(|| format!("+1 555 01{id:04}")),
    }
}

/// `id → person(column, id)` for rows `1..=rows`.
fn people(rows: i32, column: &str) -> BTreeMap<i32, Option<String>> {
    (1..=rows).map(|id| (id, person(column, id))).collect()
}

/// Values (non-NULL entries) of a column.
fn values_in(column: &BTreeMap<i32, Option<String>>) -> u64 {
    column.values().filter(|v| v.is_some()).count() as u64
}

async fn seed_people(conn: &DatabaseConnection, table: &str, rows: i32) -> TestResult {
    let mut insert = Query::insert();
    insert
        .into_table(a(table))
        .columns(std::iter::once("id").chain(PEOPLE).map(a));
    for id in 1..=rows {
        let values = PEOPLE.map(|column| person(column, id).into());
        insert.values_panic(std::iter::once(id.into()).chain(values));
    }
    conn.execute(&insert).await?;
    Ok(())
}

/// A people table `table` ([`create_people_table`], [`seed_people`]) of `rows` rows whose
/// `columns` have their migrations started (`added`).
async fn people_table(
    conn: &DatabaseConnection,
    (table, index): (&str, &BlindIndex),
    rows: i32,
    columns: &[&str],
) -> TestResult {
    create_people_table(conn, table, index).await?;
    seed_people(conn, table, rows).await?;
    for column in columns {
        state::start(conn, table, column).await?;
    }
    Ok(())
}

/// `table.column` → `<column>_enc`, without a blind index.
fn spec<C: ColumnContext>(table: &str, column: &str) -> EncryptColumn<String, C> {
    EncryptColumn::new(table, "id", column, &format!("{column}_enc"))
}

const MULTI_ROWS: i32 = 120;
const PEOPLE: [&str; 3] = ["full_name", "email", "phone"];

backend_tests!(
    /// Defect 3: a table's columns (full name; e-mail with a blind index, some NULL; phone,
    /// a third NULL) move as one plan, all or none. The backfill refuses the table while one
    /// column is still `added`, writing nothing. With one bad value in one column (an old
    /// instance's phone write), cut-over is refused and every column is left in the same
    /// phase (`backfilled`, none cut over); after cut-over, a bad e-mail makes drop refuse
    /// and every plaintext column stays. Re-running each step after it succeeded is a no-op
    /// that reports the columns as already done, never an error. Every value survives.
    table_columns_move_together,
    |db: &TestDb| async move {
        let conn = &db.conn;
        let manager = SchemaManager::new(conn);
        people_table(conn, ("mig_multi", &MULTI_BIDX), MULTI_ROWS, &PEOPLE).await?;
        let plan = EncryptTable::new("mig_multi", "id")
            .column(spec::<MultiName>("mig_multi", "full_name"))
            .column(email_spec::<MultiEmail>("mig_multi", &MULTI_BIDX))
            .column(spec::<MultiPhone>("mig_multi", "phone"));
        let opts = batches(25);
        let phases = async || phases_of(conn, "mig_multi", &PEOPLE).await;
        let all = |p: Phase| vec![p; 3];
        let names_done = || PEOPLE.map(str::to_owned).to_vec();
        let sealed_cells = async || -> Res<i64> {
            let mut n = 0;
            for enc in ["full_name_enc", "email_enc", "phone_enc"] {
                n += count_where(conn, "mig_multi", [Expr::col(a(enc)).is_not_null()]).await?;
            }
            Ok(n)
        };

        // One column dual-writes, two do not yet: the table's backfill is refused, naming the
        // first column still `added`, and nothing is written or moved.
        state::transition(conn, "mig_multi", "full_name", Phase::DualWrite, None).await?;
        let err = migrate::backfill(conn, &plan, &opts, |_| {})
            .await
            .unwrap_err();
        expect_phase_error_of(
            &err,
            ("mig_multi", "email"),
            "added",
            "backfilling",
            &["dual-write first"],
        )?;
        assert_eq!(
            phases().await?,
            [Phase::DualWrite, Phase::Added, Phase::Added]
        );
        assert_eq!(sealed_cells().await?, 0);
        assert_eq!(migrate::dual_write(conn, &plan).await?, ["email", "phone"]);
        assert_eq!(migrate::dual_write(conn, &plan).await?, Vec::<String>::new());
        assert_eq!(phases().await?, all(Phase::DualWrite));

        let (names, mut emails, mut phones) = (
            people(MULTI_ROWS, "full_name"),
            people(MULTI_ROWS, "email"),
            people(MULTI_ROWS, "phone"),
        );
        let filled = migrate::backfill(conn, &plan, &opts, |_| {}).await?;
        ensure!(
            filled.finished
                && filled.remaining == 0
                && filled.rows == MULTI_ROWS as u64
                && filled.already_done.is_empty(),
            "{filled:?}"
        );
        assert_eq!(
            filled.by_column,
            vec![
                ("full_name".to_owned(), values_in(&names)),
                ("email".to_owned(), values_in(&emails)),
                ("phone".to_owned(), values_in(&phones)),
            ]
        );
        assert_eq!(
            filled.sealed,
            values_in(&names) + values_in(&emails) + values_in(&phones)
        );
        assert_eq!(phases().await?, all(Phase::Backfilled));
        // Re-run: nothing to do, the columns are reported as done.
        let again = migrate::backfill(conn, &plan, &opts, |_| {}).await?;
        ensure!(
            again.finished && again.sealed == 0 && again.already_done == names_done(),
            "{again:?}"
        );

        let verified = migrate::verify(conn, &plan, &opts).await?;
        ensure!(verified.passed() && verified.columns.len() == 3, "{verified:?}");
        let both_null: Vec<u64> = verified.columns.iter().map(|c| c.both_null).collect();
        assert_eq!(both_null, [0, 9, 40]);
        assert_eq!(phases().await?, all(Phase::Verified));
        // Re-run: passes again, moves nothing.
        ensure!(
            migrate::verify(conn, &plan, &opts).await?.passed(),
            "second verify"
        );
        assert_eq!(phases().await?, all(Phase::Verified));

        // Cut-over, all or none: an old instance changes the phone of row 7 only.
        old_instance_write(conn, "mig_multi", "phone", 7, Some("+1 555 0199999")).await?;
        phones.insert(7, Some("+1 555 0199999".into()));
        let err = migrate::cut_over(conn, &plan, &opts).await.unwrap_err();
        expect_refused(&err, "mig_multi", "cut-over", &[7])?;
        assert_eq!(phases().await?, all(Phase::Backfilled));
        let fixed = migrate::repair(conn, &plan, &opts, |_| {}).await?;
        assert_eq!(
            fixed.by_column,
            vec![
                ("full_name".to_owned(), 0),
                ("email".to_owned(), 0),
                ("phone".to_owned(), 1),
            ]
        );
        ensure!(
            migrate::verify(conn, &plan, &opts).await?.passed(),
            "verify after repair"
        );
        let cut = migrate::cut_over(conn, &plan, &opts).await?;
        ensure!(
            cut.moved == names_done() && cut.already.is_empty(),
            "{cut:?}"
        );
        assert_eq!(cut.check.rows, MULTI_ROWS as u64);
        assert_eq!(phases().await?, all(Phase::CutOver));
        let again = migrate::cut_over(conn, &plan, &opts).await?;
        ensure!(
            again.moved.is_empty() && again.already == names_done(),
            "{again:?}"
        );
        assert_eq!(phases().await?, all(Phase::CutOver));

        // Drop, all or none: after cut-over an old instance changes row 9's e-mail.
        old_instance_write(conn, "mig_multi", "email", 9, Some("late-9@example.org")).await?;
        emails.insert(9, Some("late-9@example.org".into()));
        let err = migrate::drop_plaintext(conn, &plan, &[], &opts)
            .await
            .unwrap_err();
        expect_refused(&err, "mig_multi", "drop", &[9])?;
        for column in PEOPLE {
            ensure!(
                manager.has_column("mig_multi", column).await?,
                "a refused drop dropped {column}"
            );
        }
        assert_eq!(phases().await?, all(Phase::CutOver));
        let fixed = migrate::repair(conn, &plan, &opts, |_| {}).await?;
        ensure!(fixed.repaired == 1, "{fixed:?}");
        let dropped = migrate::drop_plaintext(conn, &plan, &[], &opts).await?;
        dropped_exactly(&manager, ("mig_multi", &PEOPLE), &dropped, MULTI_ROWS as u64).await?;
        assert_eq!(phases().await?, all(Phase::Dropped));

        // Every step, re-run after success: a no-op naming the columns as done.
        let again = migrate::drop_plaintext(conn, &plan, &[], &opts).await?;
        ensure!(
            again.already == names_done() && again.dropped.is_empty() && again.recorded.is_empty(),
            "{again:?}"
        );
        assert_eq!(migrate::dual_write(conn, &plan).await?, Vec::<String>::new());
        let refilled = migrate::backfill(conn, &plan, &opts, |_| {}).await?;
        ensure!(refilled.sealed == 0 && refilled.already_done == names_done(), "{refilled:?}");
        let verified = migrate::verify(conn, &plan, &opts).await?;
        ensure!(verified.skipped == names_done() && verified.rows == 0, "{verified:?}");
        let repaired = migrate::repair(conn, &plan, &opts, |_| {}).await?;
        ensure!(repaired.repaired == 0 && repaired.skipped_columns == names_done(), "{repaired:?}");
        let cut = migrate::cut_over(conn, &plan, &opts).await?;
        ensure!(cut.moved.is_empty() && cut.already == names_done(), "{cut:?}");
        assert_eq!(phases().await?, all(Phase::Dropped));

        // Every value, including both late writes, is in its envelope, and row 9's index
        // follows its repaired e-mail.
        let ring = keyring::current()?;
        assert_eq!(
            raw::get_bytes(conn, "mig_multi", "email_bidx", 9).await?,
            index_of(&MULTI_BIDX, &ring, &emails[&9])?,
            "row 9's blind index does not follow its repaired e-mail"
        );
        check_envelopes::<MultiName>(conn, "mig_multi", "full_name_enc", &names).await?;
        check_envelopes::<MultiEmail>(conn, "mig_multi", "email_enc", &emails).await?;
        check_envelopes::<MultiPhone>(conn, "mig_multi", "phone_enc", &phones).await
    }
);

backend_tests!(
    /// Defect 3, the other half: a table step skips a column that an earlier one-column plan
    /// already took further, and moves the others. The name column is backfilled alone, then
    /// the table's backfill seals only the e-mails; the e-mail column is cut over alone, then
    /// the table's cut-over moves only the name (verify in between checks each column as its
    /// phase requires); likewise drop and purge.
    table_step_skips_columns_already_past_it,
    |db: &TestDb| async move {
        let conn = &db.conn;
        let rows = 60;
        let cols = ["full_name", "email"];
        people_table(conn, ("mig_split", &SPLIT_BIDX), rows, &cols).await?;
        let name = spec::<SplitName>("mig_split", "full_name");
        let email = email_spec::<SplitEmail>("mig_split", &SPLIT_BIDX);
        let plan = EncryptTable::new("mig_split", "id")
            .column(name.clone())
            .column(email.clone());
        let opts = batches(16);
        let phases = async || phases_of(conn, "mig_split", &cols).await;
        let (names, emails) = (people(rows, "full_name"), people(rows, "email"));
        assert_eq!(migrate::dual_write(conn, &plan).await?, cols);

        let first = migrate::backfill(conn, &name, &opts, |_| {}).await?;
        ensure!(
            first.finished && first.by_column == [("full_name".to_owned(), values_in(&names))],
            "{first:?}"
        );
        assert_eq!(phases().await?, [Phase::Backfilled, Phase::DualWrite]);
        assert_eq!(
            count_where(conn, "mig_split", [Expr::col(a("email_enc")).is_not_null()]).await?,
            0
        );
        let rest = migrate::backfill(conn, &plan, &opts, |_| {}).await?;
        ensure!(
            rest.finished
                && rest.already_done == ["full_name"]
                && rest.by_column == [("email".to_owned(), values_in(&emails))],
            "{rest:?}"
        );
        assert_eq!(phases().await?, [Phase::Backfilled, Phase::Backfilled]);
        ensure!(
            migrate::verify(conn, &plan, &opts).await?.passed(),
            "verify"
        );
        assert_eq!(phases().await?, [Phase::Verified, Phase::Verified]);

        let cut = migrate::cut_over(conn, &email, &opts).await?;
        ensure!(cut.moved == ["email"], "{cut:?}");
        assert_eq!(phases().await?, [Phase::Verified, Phase::CutOver]);
        let mixed = migrate::verify(conn, &plan, &opts).await?;
        ensure!(mixed.passed(), "{mixed:?}");
        let checked: Vec<Option<Phase>> = mixed.columns.iter().map(|c| c.phase).collect();
        assert_eq!(checked, [Some(Phase::Verified), Some(Phase::CutOver)]);
        assert_eq!(phases().await?, [Phase::Verified, Phase::CutOver]);
        let cut = migrate::cut_over(conn, &plan, &opts).await?;
        ensure!(
            cut.moved == ["full_name"] && cut.already == ["email"],
            "{cut:?}"
        );
        assert_eq!(phases().await?, [Phase::CutOver, Phase::CutOver]);

        let dropped = migrate::drop_plaintext(conn, &email, &[], &opts).await?;
        ensure!(dropped.dropped == ["email"], "{dropped:?}");
        assert_eq!(phases().await?, [Phase::CutOver, Phase::Dropped]);
        let dropped = migrate::drop_plaintext(conn, &plan, &[], &opts).await?;
        ensure!(
            dropped.dropped == ["full_name"] && dropped.already == ["email"],
            "{dropped:?}"
        );
        assert_eq!(phases().await?, [Phase::Dropped, Phase::Dropped]);
        assert_eq!(migrate::purge(conn, &name).await?, ["full_name"]);
        assert_eq!(phases().await?, [Phase::Purged, Phase::Dropped]);
        assert_eq!(migrate::purge(conn, &plan).await?, ["email"]);
        assert_eq!(phases().await?, [Phase::Purged, Phase::Purged]);

        check_envelopes::<SplitName>(conn, "mig_split", "full_name_enc", &names).await?;
        check_envelopes::<SplitEmail>(conn, "mig_split", "email_enc", &emails).await
    }
);

backend_tests!(
    /// Defect 5: drop and purge resume at the phase level. A drop interrupted after one
    /// column's `ALTER TABLE` had committed (as on MySQL, where it commits on its own) leaves
    /// that column gone and its phase `cut_over`: the next drop records it and drops the
    /// other. A purge interrupted after its rewrite but before recording leaves the phases
    /// `dropped`; drop again reports them done; purge moves them to `purged`; purge again is
    /// a no-op, and so is drop.
    drop_and_purge_resume_at_the_phase_level,
    |db: &TestDb| async move {
        let conn = &db.conn;
        let manager = SchemaManager::new(conn);
        let rows = 90;
        let cols = ["email", "phone"];
        people_table(conn, ("mig_purge", &PURGE_BIDX), rows, &cols).await?;
        let plan = EncryptTable::new("mig_purge", "id")
            .column(email_spec::<PurgeEmail>("mig_purge", &PURGE_BIDX))
            .column(spec::<PurgePhone>("mig_purge", "phone"));
        let opts = batches(30);
        let phases = async || phases_of(conn, "mig_purge", &cols).await;
        migrate::dual_write(conn, &plan).await?;
        ensure!(
            migrate::backfill(conn, &plan, &opts, |_| {})
                .await?
                .finished,
            "backfill"
        );
        ensure!(migrate::verify(conn, &plan, &opts).await?.passed(), "verify");
        assert_eq!(migrate::cut_over(conn, &plan, &opts).await?.moved, cols);

        // The interrupted drop: `phone` is gone, both phases still `cut_over`.
        conn.execute_unprepared("ALTER TABLE mig_purge DROP COLUMN phone")
            .await?;
        assert_eq!(phases().await?, [Phase::CutOver, Phase::CutOver]);
        let dropped = migrate::drop_plaintext(conn, &plan, &[], &opts).await?;
        ensure!(
            dropped.recorded == ["phone"] && dropped.dropped == ["email"] && dropped.already.is_empty(),
            "{dropped:?}"
        );
        ensure!(
            !manager.has_column("mig_purge", "email").await?,
            "email survived the drop"
        );
        assert_eq!(phases().await?, [Phase::Dropped, Phase::Dropped]);

        // The interrupted purge: the table was rewritten, nothing recorded.
        schema::purge_dropped_data(&manager, "mig_purge").await?;
        assert_eq!(phases().await?, [Phase::Dropped, Phase::Dropped]);
        let again = migrate::drop_plaintext(conn, &plan, &[], &opts).await?;
        ensure!(
            again.already == cols && again.dropped.is_empty() && again.recorded.is_empty(),
            "{again:?}"
        );
        assert_eq!(migrate::purge(conn, &plan).await?, cols);
        assert_eq!(phases().await?, [Phase::Purged, Phase::Purged]);
        assert_eq!(migrate::purge(conn, &plan).await?, Vec::<String>::new());
        assert_eq!(phases().await?, [Phase::Purged, Phase::Purged]);
        let again = migrate::drop_plaintext(conn, &plan, &[], &opts).await?;
        ensure!(
            again.already == cols && again.dropped.is_empty(),
            "{again:?}"
        );
        assert_eq!(log_moves(conn, "mig_purge", Phase::Dropped, Phase::Purged).await?, 2);

        check_envelopes::<PurgeEmail>(conn, "mig_purge", "email_enc", &people(rows, "email"))
            .await?;
        check_envelopes::<PurgePhone>(conn, "mig_purge", "phone_enc", &people(rows, "phone"))
            .await
    }
);
