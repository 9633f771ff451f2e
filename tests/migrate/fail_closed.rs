//! Reads after cut-over fail closed: a row with plaintext but no envelope is an
//! `Error::FallbackRefused`, never its plaintext, until repair seals it.

use encrypted_columns::migrate::dual::ReadPolicy;
use encrypted_columns::migrate::{self, EncryptColumn, Phase, RunOptions, state};
use encrypted_columns::{Encrypted, Error, column_context};
use encrypted_columns_tests::backend_tests;
use sea_orm::ConnectionTrait;

use crate::email_table::{create_table, read_rows, seed_email, seed_plaintext, write_update};
use crate::plans::email_index;
use crate::support::{Res, phase_of};

column_context!(CutEmail, table = "mig_cut", column = "email");

/// Reads row `id` of `mig_cut` under `policy`.
async fn read_cut(
    conn: &impl ConnectionTrait,
    policy: ReadPolicy,
    id: i32,
) -> Res<Result<Option<String>, Error>> {
    let rows = read_rows(conn, "mig_cut", true).await?;
    let row = rows.into_iter().find(|r| r.id == id).ok_or("no such row")?;
    let enc = row
        .enc
        .map(Encrypted::<String, CutEmail>::from_envelope)
        .transpose()?;
    Ok(policy.read("mig_cut", "email", row.email, enc.as_ref()))
}

backend_tests!(
    /// After cut-over the policy loaded from the state table is encrypted-only: a row that
    /// has plaintext but no envelope (written by a stale writer, or missed) is an
    /// `Error::FallbackRefused`, never its plaintext; before cut-over the same row falls back.
    /// Writes after cut-over put NULL in the plaintext column. A backfill after cut-over
    /// leaves the column alone; repair seals such a row.
    fallback_refused_after_cut_over,
    |db: &TestDb| async move {
        let conn = &db.conn;
        // `email_bidx` stays NULL: this plan has no blind index.
        create_table(conn, "mig_cut", true, &email_index("mig_cut")).await?;
        seed_plaintext(conn, "mig_cut", 100).await?;
        let spec = EncryptColumn::<String, CutEmail>::new("mig_cut", "id", "email", "email_enc");
        assert_eq!(
            ReadPolicy::load(conn, "mig_cut", "email").await?,
            ReadPolicy::PlaintextOnly
        );
        state::start(conn, "mig_cut", "email").await?;
        assert_eq!(
            ReadPolicy::load(conn, "mig_cut", "email").await?,
            ReadPolicy::PlaintextOnly
        );
        state::transition(conn, "mig_cut", "email", Phase::DualWrite, None).await?;
        migrate::backfill(conn, &spec, &RunOptions::default(), |_| {}).await?;
        ensure!(
            migrate::verify(conn, &spec, &RunOptions::default())
                .await?
                .passed(),
            "verify"
        );
        let cut = migrate::cut_over(conn, &spec, &RunOptions::default()).await?;
        assert_eq!(cut.moved, ["email"]);
        let policy = ReadPolicy::load(conn, "mig_cut", "email").await?;
        assert_eq!(policy, ReadPolicy::EncryptedOnly);

        // A sealed row reads; a NULL row reads as NULL.
        assert_eq!(read_cut(conn, policy, 1).await??, seed_email(1));
        assert_eq!(read_cut(conn, policy, 97).await??, None);
        // A row that lost its envelope: refused, naming the column; plaintext not returned.
        conn.execute_unprepared("UPDATE mig_cut SET email_enc = NULL WHERE id = 7")
            .await?;
        match read_cut(conn, policy, 7).await? {
            Err(err @ Error::FallbackRefused { .. }) => {
                assert_eq!(
                    err,
                    Error::FallbackRefused {
                        table: "mig_cut".into(),
                        column: "email".into()
                    }
                );
                let message = err.to_string();
                ensure!(
                    message.contains("mig_cut.email") && message.contains("refusing to fall back"),
                    "{message}"
                );
                // The advice must be the step that seals such a row after cut-over: the
                // backfill leaves cut-over columns alone, verify seals nothing.
                ensure!(message.contains("repair"), "the advice does not name repair: {message}");
                ensure!(
                    !message.contains("p000007"),
                    "the message carries plaintext"
                );
            }
            other => return Err(format!("expected FallbackRefused, got {other:?}").into()),
        }
        // The same row under the dual-write policy falls back to the plaintext.
        assert_eq!(
            read_cut(conn, ReadPolicy::EncryptedFirst, 7).await??,
            seed_email(7)
        );
        // Writes after cut-over: envelope only, NULL plaintext.
        let write = policy.write::<String, CutEmail>(Some("new@example.org".into()))?;
        ensure!(
            write.plaintext.is_none(),
            "plaintext written after cut-over"
        );
        conn.execute(&write_update("mig_cut", 7, write)).await?;
        assert_eq!(
            read_cut(conn, policy, 7).await??,
            Some("new@example.org".into())
        );
        // Row 8 loses its envelope too. A backfill after cut-over leaves the column alone
        // (it reports it as already done and seals nothing): the read still fails closed.
        conn.execute_unprepared("UPDATE mig_cut SET email_enc = NULL WHERE id = 8")
            .await?;
        let again = migrate::backfill(conn, &spec, &RunOptions::default(), |_| {}).await?;
        ensure!(
            again.finished && again.sealed == 0 && again.already_done == ["email"],
            "{again:?}"
        );
        assert_eq!(phase_of(conn, "mig_cut").await?, Phase::CutOver);
        ensure!(
            matches!(
                read_cut(conn, policy, 8).await?,
                Err(Error::FallbackRefused { .. })
            ),
            "row 8 read after a backfill that should have left it alone"
        );
        // Repair is the step that seals it from the plaintext; then it reads again.
        let repaired = migrate::repair(conn, &spec, &RunOptions::default(), |_| {}).await?;
        ensure!(repaired.repaired == 1 && repaired.rows == 1, "{repaired:?}");
        assert_eq!(read_cut(conn, policy, 8).await??, seed_email(8));
        assert_eq!(phase_of(conn, "mig_cut").await?, Phase::CutOver);
        Ok(())
    }
);
