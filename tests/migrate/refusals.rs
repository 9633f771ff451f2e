//! Refused input: steps out of order, moves that only a checking step may make, no keyring
//! or a malformed one, unknown tables and columns. Each is a clear error naming the column,
//! the phase or the missing piece, and leaves the state row, the transition log and the data
//! exactly as they were.

use std::sync::Arc;

use encrypted_columns::keyring::{
    self, ENV_BLIND_INDEX_KEYS, ENV_KEYS, generate_key, generate_key_entry,
};
use encrypted_columns::migrate::{self, EncryptColumn, Phase, RotateColumn, state};
use encrypted_columns::{Error, KeyId, Keyring};
use encrypted_columns_tests::backend_tests;
use sea_orm::{ConnectionTrait, DbErr};

use crate::child::{ChildKeys, child_command};
use crate::email_table::{
    check_envelopes, create_table, email_spec, seed_plaintext, seeded_emails, snapshot,
    started_table,
};
use crate::expect::{crate_error, expect_phase_error_of};
use crate::support::{Res, batches, phase_of};

email_context!(BadEmail, BAD_BIDX, "mig_bad");
email_context!(TransEmail, TRANS_BIDX, "mig_trans");

/// Checks that `err` is the phase error of `mig_bad.email` for `from → to` containing each
/// of `words` (see [`expect_phase_error_of`]).
fn expect_phase_error(err: DbErr, from: &str, to: &str, words: &[&str]) -> Res<String> {
    expect_phase_error_of(&err, ("mig_bad", "email"), from, to, words)
}

backend_tests!(
    /// Steps out of order, a missing keyring or blind-index key, unknown tables and columns:
    /// each is refused with a message naming the column, the phase or the missing piece, and
    /// leaves the state row, the transition log and the data exactly as they were.
    refused_steps_change_nothing,
    |db: &TestDb| async move {
        let conn = &db.conn;
        create_table(conn, "mig_bad", true, &BAD_BIDX).await?;
        seed_plaintext(conn, "mig_bad", 300).await?;
        state::ensure_tables(conn).await?;
        let spec = email_spec::<BadEmail>("mig_bad", &BAD_BIDX);
        let opts = batches(50);

        // Nothing started: every step and every transition is refused.
        let snap = snapshot(conn, "mig_bad", true).await?;
        assert_eq!(snap.state, None);
        let err = migrate::backfill(conn, &spec, &opts, |_| {})
            .await
            .unwrap_err();
        expect_phase_error(err, "none", "-", &["migrate::start"])?;
        let err = migrate::verify(conn, &spec, &opts).await.unwrap_err();
        expect_phase_error(err, "none", "-", &["migrate::start"])?;
        let err = migrate::dual_write(conn, &spec).await.unwrap_err();
        expect_phase_error(err, "none", "-", &["migrate::start"])?;
        let err = migrate::cut_over(conn, &spec, &opts).await.unwrap_err();
        expect_phase_error(err, "none", "-", &["migrate::start"])?;
        let err = state::transition(conn, "mig_bad", "email", Phase::DualWrite, None)
            .await
            .unwrap_err();
        expect_phase_error(err, "none", "-", &["migrate::start"])?;
        assert_eq!(snapshot(conn, "mig_bad", true).await?, snap);

        // `added`: writers are not dual-writing yet.
        state::start(conn, "mig_bad", "email").await?;
        let snap = snapshot(conn, "mig_bad", true).await?;
        assert_eq!(snap.state.as_ref().map(|s| s.phase), Some(Phase::Added));
        let err = migrate::backfill(conn, &spec, &opts, |_| {})
            .await
            .unwrap_err();
        expect_phase_error(err, "added", "backfilling", &["dual_write"])?;
        for to in [
            Phase::CutOver,
            Phase::Verified,
            Phase::Dropped,
            Phase::Backfilled,
        ] {
            let err = state::transition(conn, "mig_bad", "email", to, None)
                .await
                .unwrap_err();
            expect_phase_error(err, "added", to.as_str(), &["dual-write first"])?;
        }
        assert_eq!(snapshot(conn, "mig_bad", true).await?, snap);

        // `dual_write`: verify, repair, cut-over, drop and purge need a finished backfill.
        state::transition(conn, "mig_bad", "email", Phase::DualWrite, None).await?;
        let snap = snapshot(conn, "mig_bad", true).await?;
        let err = migrate::verify(conn, &spec, &opts).await.unwrap_err();
        expect_phase_error(err, "dual_write", "verified", &["backfill has not run"])?;
        let err = migrate::repair(conn, &spec, &opts, |_| {})
            .await
            .unwrap_err();
        expect_phase_error(err, "dual_write", "repaired", &["finished backfills"])?;
        let err = migrate::cut_over(conn, &spec, &opts).await.unwrap_err();
        expect_phase_error(err, "dual_write", "cut_over", &["backfill has not run"])?;
        let err = migrate::drop_plaintext(conn, &spec, &[], &opts)
            .await
            .unwrap_err();
        expect_phase_error(err, "dual_write", "dropped", &["backfill has not run"])?;
        let err = migrate::purge(conn, &spec).await.unwrap_err();
        expect_phase_error(err, "dual_write", "purged", &["backfill has not run"])?;
        let err = state::transition(conn, "mig_bad", "email", Phase::CutOver, None)
            .await
            .unwrap_err();
        expect_phase_error(err, "dual_write", "cut_over", &["backfill has not run"])?;
        let err = state::transition(conn, "mig_bad", "email", Phase::Added, None)
            .await
            .unwrap_err();
        expect_phase_error(err, "dual_write", "added", &["cannot go back"])?;
        // `dual_write` again is refused by `transition` (no move to itself) and a no-op for
        // the table step.
        let err = state::transition(conn, "mig_bad", "email", Phase::DualWrite, None)
            .await
            .unwrap_err();
        expect_phase_error(err, "dual_write", "dual_write", &["already"])?;
        assert_eq!(
            migrate::dual_write(conn, &spec).await?,
            Vec::<String>::new()
        );
        assert_eq!(snapshot(conn, "mig_bad", true).await?, snap);

        // Unknown table, unknown columns: the backfill names them, touches nothing, and
        // creates no state row for the misspelt names. A misspelt table or plaintext column
        // has no migration state (so it is refused as not started, or as unreadable, naming
        // it); a misspelt envelope or index column of a started column cannot be read.
        let misspelt = [
            ("mig_nope", "email", "email_enc", "email_bidx", "mig_nope.email"),
            ("mig_bad", "emial", "email_enc", "email_bidx", "mig_bad.emial"),
            ("mig_bad", "email", "email_encc", "email_bidx", "email_encc"),
            (
                "mig_bad",
                "email",
                "email_enc",
                "email_bidxx",
                "email_bidxx",
            ),
        ];
        for (table, plain, enc, bidx, named) in misspelt {
            let wrong = EncryptColumn::<String, BadEmail>::new(table, "id", plain, enc)
                .with_index(bidx, &BAD_BIDX);
            let mut errors = vec![
                migrate::backfill(conn, &wrong, &opts, |_| {})
                    .await
                    .unwrap_err(),
            ];
            if (table, plain) != ("mig_bad", "email") {
                errors.push(migrate::verify(conn, &wrong, &opts).await.unwrap_err());
                errors.push(migrate::dual_write(conn, &wrong).await.unwrap_err());
            }
            for err in errors {
                let (inner, message) = crate_error(&err)?;
                let explained = match inner {
                    Error::Migration { .. } => message.contains("check the table and column names"),
                    Error::Phase { from: "none", .. } => {
                        message.contains("no migration was started")
                    }
                    _ => false,
                };
                ensure!(
                    explained && message.contains(named),
                    "expected an error naming {named:?} as unknown, got {message}"
                );
            }
            if (table, plain) != ("mig_bad", "email") {
                ensure!(
                    state::load(conn, table, plain).await?.is_none(),
                    "a state row was created for {table}.{plain}"
                );
            }
        }
        let rot = RotateColumn::<String, BadEmail>::new("mig_bad", "id", "email_nope");
        let err = migrate::rotate(conn, &rot, &opts, |_| {})
            .await
            .unwrap_err();
        let (_, message) = crate_error(&err)?;
        ensure!(message.contains("email_nope"), "{message}");
        assert_eq!(snapshot(conn, "mig_bad", true).await?, snap);

        // A keyring without a blind-index key cannot fill the index.
        let no_index_key = Arc::new(Keyring::new(KeyId(1), *generate_key()));
        let err = keyring::scope(no_index_key, migrate::backfill(conn, &spec, &opts, |_| {}))
            .await
            .unwrap_err();
        let (inner, message) = crate_error(&err)?;
        ensure!(inner == Error::NoBlindIndexKey, "{inner:?}");
        ensure!(message.contains(ENV_BLIND_INDEX_KEYS), "{message}");
        assert_eq!(snapshot(conn, "mig_bad", true).await?, snap);

        // No keyring at all (a process that never installed one): the child reports the
        // library's `NoKeyring` and changes nothing.
        let out = child_command(db, None, &["--no-keyring"]).output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            out.status.code() == Some(2) && stderr.contains("no keyring is installed"),
            "child without keyring: {} {stderr}",
            out.status
        );
        // Keys given but malformed: refused at start-up, naming the variable.
        let bad_keys = ChildKeys {
            ring: Arc::new(Keyring::generate()),
            keys: "1:c2hvcnQ=".into(),
            blind_index_keys: generate_key_entry(KeyId(1)).to_string(),
        };
        let out = child_command(db, Some(&bad_keys), &[]).output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            out.status.code() == Some(2)
                && stderr.contains(ENV_KEYS)
                && !stderr.contains("c2hvcnQ"),
            "child with a short key: {} {stderr}",
            out.status
        );
        assert_eq!(snapshot(conn, "mig_bad", true).await?, snap);

        // The real thing still works afterwards, and steps after it are checked too.
        let report = migrate::backfill(conn, &spec, &opts, |_| {}).await?;
        ensure!(
            report.finished && report.sealed == 297 && report.rows == 297,
            "{report:?}"
        );
        assert_eq!(phase_of(conn, "mig_bad").await?, Phase::Backfilled);
        let snap = snapshot(conn, "mig_bad", true).await?;
        let err = state::transition(conn, "mig_bad", "email", Phase::CutOver, None)
            .await
            .unwrap_err();
        expect_phase_error(err, "backfilled", "cut_over", &["passing verify"])?;
        let err = migrate::cut_over(conn, &spec, &opts).await.unwrap_err();
        expect_phase_error(err, "backfilled", "cut_over", &["passing verify"])?;
        let err = migrate::drop_plaintext(conn, &spec, &[], &opts)
            .await
            .unwrap_err();
        expect_phase_error(err, "backfilled", "dropped", &["after cut-over"])?;
        // Verify and repair with a misspelt envelope or index column: named, nothing changed.
        for (enc, bidx, named) in [
            ("email_encc", "email_bidx", "email_encc"),
            ("email_enc", "email_bidxx", "email_bidxx"),
        ] {
            let wrong = EncryptColumn::<String, BadEmail>::new("mig_bad", "id", "email", enc)
                .with_index(bidx, &BAD_BIDX);
            for err in [
                migrate::verify(conn, &wrong, &opts).await.unwrap_err(),
                migrate::repair(conn, &wrong, &opts, |_| {})
                    .await
                    .unwrap_err(),
            ] {
                let (inner, message) = crate_error(&err)?;
                ensure!(
                    matches!(inner, Error::Migration { .. })
                        && message.contains(named)
                        && message.contains("check the table and column names"),
                    "expected a migration error naming {named:?}: {message}"
                );
            }
        }
        assert_eq!(snapshot(conn, "mig_bad", true).await?, snap);

        // A failing verify stays in `backfilled`, so cut-over is still refused.
        conn.execute_unprepared("UPDATE mig_bad SET email = 'changed@example.org' WHERE id = 5")
            .await?;
        let failed = migrate::verify(conn, &spec, &opts).await?;
        ensure!(
            !failed.passed() && failed.problem_ids == vec![5],
            "{failed:?}"
        );
        assert_eq!(phase_of(conn, "mig_bad").await?, Phase::Backfilled);
        let err = migrate::cut_over(conn, &spec, &opts).await.unwrap_err();
        expect_phase_error(err, "backfilled", "cut_over", &["passing verify"])?;
        assert_eq!(phase_of(conn, "mig_bad").await?, Phase::Backfilled);
        Ok(())
    }
);

backend_tests!(
    /// `state::transition` makes only the move that checks nothing (`added → dual_write`):
    /// every later move, even where it would be legal from the column's phase, is refused
    /// with the name of the step that checks the rows (`migrate::backfill`, `migrate::verify`,
    /// `migrate::cut_over`, `migrate::drop_plaintext`, `migrate::purge`), and changes neither
    /// the state row, the transition log nor the data. The steps themselves then make them.
    transition_refuses_moves_a_step_must_check,
    |db: &TestDb| async move {
        let conn = &db.conn;
        let spec = started_table::<TransEmail>(conn, "mig_trans", 120, &TRANS_BIDX).await?;
        let opts = batches(40);
        let moved = state::transition(conn, "mig_trans", "email", Phase::DualWrite, None).await?;
        assert_eq!(moved.phase, Phase::DualWrite);

        // (phase the column is in, move asked for, the step the refusal must name, and how
        // to get the column to the next phase for the next round)
        let refuse = async |from: Phase, to: Phase, step: &str, plaintext: bool| -> Res<()> {
            assert_eq!(phase_of(conn, "mig_trans").await?, from);
            let snap = snapshot(conn, "mig_trans", plaintext).await?;
            let err = state::transition(conn, "mig_trans", "email", to, None)
                .await
                .unwrap_err();
            let message = expect_phase_error_of(
                &err,
                ("mig_trans", "email"),
                from.as_str(),
                to.as_str(),
                &[step],
            )?;
            ensure!(
                message.contains("moved only by"),
                "{from} → {to}: {message}"
            );
            assert_eq!(snapshot(conn, "mig_trans", plaintext).await?, snap);
            Ok(())
        };
        refuse(Phase::DualWrite, Phase::Backfilling, "migrate::backfill", true).await?;
        ensure!(
            migrate::backfill(conn, &spec, &opts, |_| {})
                .await?
                .finished,
            "backfill"
        );
        refuse(Phase::Backfilled, Phase::Verified, "migrate::verify", true).await?;
        ensure!(migrate::verify(conn, &spec, &opts).await?.passed(), "verify");
        refuse(Phase::Verified, Phase::CutOver, "migrate::cut_over", true).await?;
        assert_eq!(migrate::cut_over(conn, &spec, &opts).await?.moved, ["email"]);
        refuse(Phase::CutOver, Phase::Dropped, "migrate::drop_plaintext", true).await?;
        assert_eq!(
            migrate::drop_plaintext(conn, &spec, &[], &opts)
                .await?
                .dropped,
            ["email"]
        );
        refuse(Phase::Dropped, Phase::Purged, "migrate::purge", false).await?;
        assert_eq!(migrate::purge(conn, &spec).await?, ["email"]);
        assert_eq!(phase_of(conn, "mig_trans").await?, Phase::Purged);
        // The envelopes carry every value through.
        check_envelopes::<TransEmail>(conn, "mig_trans", "email_enc", &seeded_emails(120)).await
    }
);
