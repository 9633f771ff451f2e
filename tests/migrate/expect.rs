//! What a refusal must be: the crate error inside a `DbErr`, the phase error or
//! `Error::Refused` a step returns, and no plaintext in its message.

use encrypted_columns::Error;
use sea_orm::DbErr;

use crate::support::Res;

/// The crate error inside `err`, and its message.
pub fn crate_error(err: &DbErr) -> Res<(Error, String)> {
    let inner = Error::from_db_err(err).ok_or_else(|| format!("not a crate error: {err}"))?;
    Ok((inner.clone(), inner.to_string()))
}

/// Checks that `err` is the phase error of `table.column` for `from → to`, naming the column
/// and containing each of `words`.
pub fn expect_phase_error_of(
    err: &DbErr,
    (table, column): (&str, &str),
    from: &str,
    to: &str,
    words: &[&str],
) -> Res<String> {
    let (inner, message) = crate_error(err)?;
    match inner {
        Error::Phase {
            table: tb,
            column: c,
            from: f,
            to: t,
            ..
        } => {
            ensure!(
                (tb.as_str(), c.as_str(), f, t) == (table, column, from, to),
                "wrong phase error: {message}"
            );
        }
        other => return Err(format!("expected a phase error, got {other:?}").into()),
    }
    ensure!(
        message.contains(&format!("{table}.{column}")),
        "message does not name the column: {message}"
    );
    for word in words {
        ensure!(message.contains(word), "message lacks {word:?}: {message}");
    }
    Ok(message)
}

/// Checks that `err` is `Error::Refused` of `table`'s step `step`, counting and listing
/// exactly `ids`, and that its message names them. Returns the message.
pub fn expect_refused(err: &DbErr, table: &str, step: &str, ids: &[i64]) -> Res<String> {
    let (inner, message) = crate_error(err)?;
    match inner {
        Error::Refused {
            table: t,
            step: s,
            count,
            ids: listed,
            ..
        } => ensure!(
            t == table && s == step && count == ids.len() as u64 && listed == ids,
            "expected {step} of {table} refused for ids {ids:?}, got {message}"
        ),
        other => return Err(format!("expected Error::Refused, got {other:?}").into()),
    }
    for id in ids {
        ensure!(
            message.contains(&id.to_string()),
            "message does not name id {id}: {message}"
        );
    }
    Ok(message)
}

/// Whether `message` holds any of `values` (plaintexts the test wrote), ignoring case.
pub fn leaks(message: &str, values: &[&str]) -> bool {
    let message = message.to_lowercase();
    values
        .iter()
        .any(|v| message.contains(&v.trim().to_lowercase()))
}
