//! The single-column data-loss defects of issue 10, each driven through the library API and
//! plain SQL the way an old application instance (one that writes plaintext only) does: a
//! failing re-verify demotes and cut-over re-checks; drop refuses plaintext no envelope
//! carries; a restarted backfill leaves finished columns alone; duplicate normalized values
//! under a UNIQUE blind index are refused before anything is written.

use encrypted_columns::Error;
use encrypted_columns::keyring;
use encrypted_columns::migrate::dual::ReadPolicy;
use encrypted_columns::migrate::{self, Phase, schema, state};
use encrypted_columns_tests::{backend_tests, raw};
use sea_orm::ConnectionTrait;
use sea_orm::sea_query::{Expr, ExprTrait, Index};
use sea_orm_migration::SchemaManager;

use crate::email_table::{
    check_envelopes, check_table, create_table, email_spec, policy_write, read_rows, seed_email,
    seed_plaintext, seeded_emails, snapshot, started_table,
};
use crate::expect::{crate_error, expect_phase_error_of, expect_refused, leaks};
use crate::support::{
    a, batches, count_where, dropped_exactly, log_moves, old_instance_write, phase_of,
};

email_context!(DemoteEmail, DEMOTE_BIDX, "mig_demote");
email_context!(DropEmail, DROP_BIDX, "mig_drop");
email_context!(RestartEmail, RESTART_BIDX, "mig_restart");
// UNIQUE: the backfill pre-checks it for colliding plaintexts.
email_context!(DupEmail, DUP_BIDX, "mig_dup", unique);

backend_tests!(
    /// Defect 1: a verify that fails after passing demotes the column to `backfilled`, and
    /// cut-over re-checks every row itself. dual_write → backfill → verify (passes) → an old
    /// instance moves row 10's e-mail in plain SQL → verify reports row 10 and the column is
    /// back in `backfilled` → cut-over is refused (`Error::Phase`) → repair re-seals row 10 →
    /// verify passes. Then the old instance writes row 10 again and cut-over is called with
    /// the column still `verified`: it refuses (`Error::Refused` naming row 10, no plaintext
    /// in the message) and demotes. Repair, verify, cut-over: row 10's envelope and index
    /// hold the last e-mail, and every other row its own.
    failing_reverify_demotes_and_cut_over_rechecks,
    |db: &TestDb| async move {
        let conn = &db.conn;
        let spec = started_table::<DemoteEmail>(conn, "mig_demote", 300, &DEMOTE_BIDX).await?;
        let opts = batches(64);
        assert_eq!(migrate::dual_write(conn, &spec).await?, ["email"]);
        let filled = migrate::backfill(conn, &spec, &opts, |_| {}).await?;
        ensure!(
            filled.finished && filled.sealed == 297 && filled.remaining == 0,
            "{filled:?}"
        );
        assert_eq!(phase_of(conn, "mig_demote").await?, Phase::Backfilled);
        let first = migrate::verify(conn, &spec, &opts).await?;
        ensure!(first.passed() && first.rows == 300, "{first:?}");
        assert_eq!(phase_of(conn, "mig_demote").await?, Phase::Verified);

        // An old instance moves row 10's e-mail: plaintext only.
        conn.execute_unprepared(
            "UPDATE mig_demote SET email = 'moved-10@example.net' WHERE id = 10",
        )
        .await?;
        let failed = migrate::verify(conn, &spec, &opts).await?;
        ensure!(
            !failed.passed()
                && failed.problem_rows == 1
                && failed.problem_ids == [10]
                && failed.mismatched == 1
                && failed.index_mismatched == 1
                && failed.missing == 0,
            "{failed:?}"
        );
        assert_eq!(failed.columns[0].phase, Some(Phase::Verified));
        assert_eq!(phase_of(conn, "mig_demote").await?, Phase::Backfilled);
        assert_eq!(
            ReadPolicy::load(conn, "mig_demote", "email").await?,
            ReadPolicy::EncryptedFirst
        );
        let err = migrate::cut_over(conn, &spec, &opts).await.unwrap_err();
        expect_phase_error_of(
            &err,
            ("mig_demote", "email"),
            "backfilled",
            "cut_over",
            &["passing verify"],
        )?;
        assert_eq!(phase_of(conn, "mig_demote").await?, Phase::Backfilled);

        let repaired = migrate::repair(conn, &spec, &opts, |_| {}).await?;
        ensure!(
            repaired.repaired == 1
                && repaired.rows == 1
                && repaired.skipped == 0
                && repaired.finished
                && repaired.by_column == [("email".to_owned(), 1)],
            "{repaired:?}"
        );
        ensure!(
            migrate::verify(conn, &spec, &opts).await?.passed(),
            "verify after repair"
        );
        assert_eq!(phase_of(conn, "mig_demote").await?, Phase::Verified);

        // Verify passed; the old instance writes row 10 again; cut-over straight away.
        conn.execute_unprepared(
            "UPDATE mig_demote SET email = 'moved-again-10@example.net' WHERE id = 10",
        )
        .await?;
        let err = migrate::cut_over(conn, &spec, &opts).await.unwrap_err();
        let message = expect_refused(&err, "mig_demote", "cut-over", &[10])?;
        ensure!(
            !leaks(&message, &["moved-again-10@example.net", "moved-10@example.net"]),
            "the cut-over refusal carries plaintext"
        );
        ensure!(message.contains("repair"), "no way out named: {message}");
        assert_eq!(phase_of(conn, "mig_demote").await?, Phase::Backfilled);
        assert_eq!(
            ReadPolicy::load(conn, "mig_demote", "email").await?,
            ReadPolicy::EncryptedFirst
        );
        // Both demotions are in the transition log.
        assert_eq!(
            log_moves(conn, "mig_demote", Phase::Verified, Phase::Backfilled).await?,
            2
        );

        // The way out the refusal names: repair, verify, cut-over.
        let repaired = migrate::repair(conn, &spec, &opts, |_| {}).await?;
        ensure!(repaired.repaired == 1, "{repaired:?}");
        ensure!(
            migrate::verify(conn, &spec, &opts).await?.passed(),
            "verify after the second repair"
        );
        let cut = migrate::cut_over(conn, &spec, &opts).await?;
        ensure!(
            cut.moved == ["email"] && cut.already.is_empty() && cut.check.passed(),
            "{cut:?}"
        );
        assert_eq!(cut.check.rows, 300);
        assert_eq!(phase_of(conn, "mig_demote").await?, Phase::CutOver);

        // Nothing lost: row 10 holds the last e-mail, in its envelope and its index.
        let mut expected = seeded_emails(300);
        expected.insert(10, Some("moved-again-10@example.net".into()));
        assert_eq!(expected.len(), 300);
        let ring = keyring::current()?;
        check_table::<DemoteEmail>(conn, ("mig_demote", &DEMOTE_BIDX), &ring, &expected).await
    }
);

backend_tests!(
    /// Defect 2: after cut-over, drop refuses while any row holds plaintext that no envelope
    /// carries. Old instances write in plain SQL: a new row with plaintext only, a NULL e-mail
    /// set without an envelope, and an e-mail changed so that it disagrees with its envelope
    /// (a row the new code wrote encrypted-only is fine). Drop fails with `Error::Refused`
    /// whose count and ids are exactly those three rows, and the plaintext column still holds
    /// them; repair seals them, drop succeeds, and every row's envelope opens to its last
    /// plaintext: no value lost.
    drop_refuses_plaintext_no_envelope_carries,
    |db: &TestDb| async move {
        let conn = &db.conn;
        let manager = SchemaManager::new(conn);
        let spec = started_table::<DropEmail>(conn, "mig_drop", 200, &DROP_BIDX).await?;
        let opts = batches(50);
        migrate::dual_write(conn, &spec).await?;
        ensure!(
            migrate::backfill(conn, &spec, &opts, |_| {})
                .await?
                .finished,
            "backfill"
        );
        ensure!(migrate::verify(conn, &spec, &opts).await?.passed(), "verify");
        assert_eq!(migrate::cut_over(conn, &spec, &opts).await?.moved, ["email"]);
        let policy = ReadPolicy::load(conn, "mig_drop", "email").await?;
        assert_eq!(policy, ReadPolicy::EncryptedOnly);

        // The new code after cut-over: envelope and index, NULL plaintext.
        let ring = keyring::current()?;
        let value = Some("new-30@example.org".to_owned());
        policy_write::<DropEmail>(conn, "mig_drop", &DROP_BIDX, policy, 30, value.clone()).await?;
        // Old instances, plain SQL.
        conn.execute_unprepared(
            "INSERT INTO mig_drop (id, email) VALUES (1001, 'late-1001@example.org')",
        )
        .await?;
        ensure!(seed_email(97).is_none(), "row 97 should start NULL");
        old_instance_write(conn, "mig_drop", "email", 97, Some("late-97@example.org")).await?;
        old_instance_write(conn, "mig_drop", "email", 20, Some("changed-20@example.org")).await?;

        let before = read_rows(conn, "mig_drop", true).await?;
        let err = migrate::drop_plaintext(conn, &spec, &[], &opts)
            .await
            .unwrap_err();
        let message = expect_refused(&err, "mig_drop", "drop", &[20, 97, 1001])?;
        ensure!(
            !leaks(
                &message,
                &["late-1001@", "late-97@", "changed-20@", "p000020@"]
            ),
            "the drop refusal carries plaintext"
        );
        ensure!(
            manager.has_column("mig_drop", "email").await?,
            "a refused drop dropped the column"
        );
        ensure!(
            read_rows(conn, "mig_drop", true).await? == before,
            "a refused drop changed rows"
        );
        assert_eq!(phase_of(conn, "mig_drop").await?, Phase::CutOver);
        // Verify of a cut-over column reports the same rows, and moves nothing.
        let seen = migrate::verify(conn, &spec, &opts).await?;
        ensure!(
            seen.problem_ids == [20, 97, 1001] && seen.encrypted_only == 1 && seen.missing == 2,
            "{seen:?}"
        );
        assert_eq!(phase_of(conn, "mig_drop").await?, Phase::CutOver);

        let repaired = migrate::repair(conn, &spec, &opts, |_| {}).await?;
        ensure!(
            repaired.repaired == 3 && repaired.rows == 3 && repaired.skipped == 0,
            "{repaired:?}"
        );
        let dropped = migrate::drop_plaintext(conn, &spec, &[], &opts).await?;
        dropped_exactly(&manager, ("mig_drop", &["email"]), &dropped, 201).await?;
        assert_eq!(phase_of(conn, "mig_drop").await?, Phase::Dropped);

        // Zero lost values: every row opens to its last plaintext (or the new code's value).
        let mut expected = seeded_emails(200);
        expected.insert(20, Some("changed-20@example.org".into()));
        expected.insert(97, Some("late-97@example.org".into()));
        expected.insert(1001, Some("late-1001@example.org".into()));
        expected.insert(30, value);
        check_table::<DropEmail>(conn, ("mig_drop", &DROP_BIDX), &ring, &expected).await
    }
);

backend_tests!(
    /// A restart leaves a finished backfill alone: run again (twice), it reports the column
    /// as already done, seals nothing, and changes neither the state row, the transition
    /// log nor any row. A row an old instance inserts afterwards is not the backfill's to
    /// seal either: verify reports it, repair seals it, and a later backfill still leaves the
    /// (now verified) column where it is.
    backfill_restart_leaves_finished_columns_alone,
    |db: &TestDb| async move {
        let conn = &db.conn;
        let spec = started_table::<RestartEmail>(conn, "mig_restart", 150, &RESTART_BIDX).await?;
        let opts = batches(40);
        migrate::dual_write(conn, &spec).await?;
        let first = migrate::backfill(conn, &spec, &opts, |_| {}).await?;
        ensure!(first.finished && first.sealed == 149, "{first:?}");
        assert_eq!(phase_of(conn, "mig_restart").await?, Phase::Backfilled);

        let nothing = migrate::BackfillReport {
            finished: true,
            already_done: vec!["email".to_owned()],
            ..Default::default()
        };
        let snap = snapshot(conn, "mig_restart", true).await?;
        for _ in 0..2 {
            let mut calls = 0;
            let again = migrate::backfill(conn, &spec, &opts, |_| calls += 1).await?;
            assert_eq!(again, nothing);
            assert_eq!(calls, 0, "progress reported for a finished backfill");
        }
        assert_eq!(snapshot(conn, "mig_restart", true).await?, snap);
        assert_eq!(
            log_moves(conn, "mig_restart", Phase::Backfilled, Phase::Backfilling).await?,
            0
        );

        conn.execute_unprepared(
            "INSERT INTO mig_restart (id, email) VALUES (151, 'late-151@example.org')",
        )
        .await?;
        assert_eq!(migrate::backfill(conn, &spec, &opts, |_| {}).await?, nothing);
        assert_eq!(raw::get_bytes(conn, "mig_restart", "email_enc", 151).await?, None);
        let failed = migrate::verify(conn, &spec, &opts).await?;
        ensure!(
            failed.problem_ids == [151] && failed.missing == 1,
            "{failed:?}"
        );
        let repaired = migrate::repair(conn, &spec, &opts, |_| {}).await?;
        ensure!(repaired.repaired == 1, "{repaired:?}");
        ensure!(migrate::verify(conn, &spec, &opts).await?.passed(), "verify");
        assert_eq!(migrate::backfill(conn, &spec, &opts, |_| {}).await?, nothing);
        assert_eq!(phase_of(conn, "mig_restart").await?, Phase::Verified);

        let mut expected = seeded_emails(150);
        expected.insert(151, Some("late-151@example.org".into()));
        check_envelopes::<RestartEmail>(conn, "mig_restart", "email_enc", &expected).await
    }
);

backend_tests!(
    /// Legacy data that collides under a UNIQUE blind index (`Ada@Example.org` and
    /// ` ada@example.org `, plus another pair differing in case): the backfill fails before
    /// writing anything with `Error::DuplicateValues` naming the index column and exactly the
    /// four ids, grouped by pair, without any plaintext in the message; no row got an
    /// envelope or an index value and the phase did not move. After one row of each pair is
    /// fixed in plain SQL, the backfill succeeds and verify passes.
    duplicate_normalized_values_refused_before_any_write,
    |db: &TestDb| async move {
        let conn = &db.conn;
        let rows = 60;
        create_table(conn, "mig_dup", true, &DUP_BIDX).await?;
        conn.execute(
            &Index::create()
                .name(schema::index_name("mig_dup", "email_bidx"))
                .table(a("mig_dup"))
                .col(a("email_bidx"))
                .unique()
                .to_owned(),
        )
        .await?;
        seed_plaintext(conn, "mig_dup", rows).await?;
        let mut expected = seeded_emails(rows);
        for (id, value) in [
            (12, "Ada@Example.org"),
            (40, " ada@example.org "),
            (5, "Bob.Jones@Example.org"),
            (33, "bob.jones@example.org"),
        ] {
            old_instance_write(conn, "mig_dup", "email", id, Some(value)).await?;
            expected.insert(id, Some(value.to_owned()));
        }
        state::start(conn, "mig_dup", "email").await?;
        let spec = email_spec::<DupEmail>("mig_dup", &DUP_BIDX);
        // Small batches: the pre-check pages through the table.
        let opts = batches(16);
        migrate::dual_write(conn, &spec).await?;

        let err = migrate::backfill(conn, &spec, &opts, |_| {})
            .await
            .unwrap_err();
        let (inner, message) = crate_error(&err)?;
        match inner {
            Error::DuplicateValues {
                table,
                column,
                index,
                count,
                ids,
            } => {
                ensure!(
                    (table.as_str(), column.as_str(), index.as_str(), count)
                        == ("mig_dup", "email", "email_bidx", 4),
                    "{message}"
                );
                let mut sorted = ids.clone();
                sorted.sort_unstable();
                ensure!(sorted == [5, 12, 33, 40], "ids {ids:?}");
                // Grouped by shared value: each pair is listed together.
                let pair = |i: usize| {
                    let mut p = [ids[i], ids[i + 1]];
                    p.sort_unstable();
                    p
                };
                ensure!(
                    [pair(0), pair(2)] == [[5, 33], [12, 40]]
                        || [pair(0), pair(2)] == [[12, 40], [5, 33]],
                    "ids not grouped by value: {ids:?}"
                );
            }
            other => return Err(format!("expected DuplicateValues, got {other:?}").into()),
        }
        ensure!(message.contains("email_bidx"), "{message}");
        ensure!(
            !leaks(&message, &["ada@example.org", "bob.jones@example.org"]),
            "the duplicate error carries plaintext"
        );
        for column in ["email_enc", "email_bidx"] {
            assert_eq!(
                count_where(conn, "mig_dup", [Expr::col(a(column)).is_not_null()]).await?,
                0,
                "{column} written before the pre-check refused"
            );
        }
        assert_eq!(phase_of(conn, "mig_dup").await?, Phase::DualWrite);

        // The documented way out: make the values distinct in the plaintext column.
        for (id, value) in [(40, "ada.second@example.org"), (33, "bob.second@example.org")] {
            old_instance_write(conn, "mig_dup", "email", id, Some(value)).await?;
            expected.insert(id, Some(value.to_owned()));
        }
        let filled = migrate::backfill(conn, &spec, &opts, |_| {}).await?;
        ensure!(
            filled.finished && filled.sealed == rows as u64,
            "{filled:?}"
        );
        ensure!(migrate::verify(conn, &spec, &opts).await?.passed(), "verify");
        let ring = keyring::current()?;
        check_table::<DupEmail>(conn, ("mig_dup", &DUP_BIDX), &ring, &expected).await
    }
);
