//! Opening the database named by `--database-url`, with errors that name the problem and
//! never echo a password.

use std::time::Duration;

use sea_orm::{ConnectOptions, Database, DatabaseConnection};

/// Connects with a message that names the problem; never echoes a password.
pub async fn connect(url: &str) -> Result<DatabaseConnection, String> {
    let scheme = url.split_once(':').map(|(s, _)| s).unwrap_or("");
    if !matches!(
        scheme,
        "sqlite" | "postgres" | "postgresql" | "mysql" | "mariadb"
    ) {
        return Err(format!(
            "unsupported database URL scheme {scheme:?}: use sqlite://FILE?mode=rwc, \
             postgres://USER@HOST/DB or mysql://USER@HOST/DB (--database-url or DATABASE_URL)"
        ));
    }
    let mut options = ConnectOptions::new(url);
    // sqlx statement logging would print bound values: envelopes only, but keep logs quiet.
    options
        .sqlx_logging(false)
        .connect_timeout(Duration::from_secs(10))
        .acquire_timeout(Duration::from_secs(10));
    Database::connect(options).await.map_err(|e| {
        format!(
            "cannot connect to the {scheme} database at {}: {e} (is the server running, and \
             are the URL's host, port, user and database right?)",
            where_to(url)
        )
    })
}

/// The location part of a URL, without user name or password.
fn where_to(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    rest.split(['?', '#']).next().unwrap_or(rest)
}

#[cfg(test)]
mod tests {
    use super::where_to;

    #[test]
    fn location_never_shows_credentials() {
        assert_eq!(
            where_to("postgres://u:secret@db:5432/app?x=1"),
            "db:5432/app"
        );
        assert_eq!(where_to("sqlite://clinic.db?mode=rwc"), "clinic.db");
        assert_eq!(where_to("mysql://root@127.0.0.1/test"), "127.0.0.1/test");
    }
}
