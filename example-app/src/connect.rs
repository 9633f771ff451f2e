//! Opening the database named by `--database-url`, with errors that name the problem and
//! never echo a password (or the user name) from the URL.
//!
//! SeaORM and sqlx put the whole URL into some of their errors ("The connection string
//! 'postgres://u:pw@…' cannot be parsed.") and the server's own messages name the user, so
//! every error text is scrubbed of the URL's credentials before it is shown; SeaORM's
//! connector also records its options, URL included, in a trace-level span, so the connect
//! runs with logging off.

use std::time::Duration;

use sea_orm::{ConnectOptions, Database, DatabaseConnection};
use tracing::instrument::WithSubscriber as _;

use crate::output::shown;

/// Connects with a message that names the problem; never echoes a password or user name.
pub async fn connect(typed: &str) -> Result<DatabaseConnection, String> {
    let secrets = Secrets::of(typed);
    let (scheme, rest) = typed.split_once(':').unwrap_or(("", typed));
    let scheme = scheme.to_ascii_lowercase();
    let url = match scheme.as_str() {
        "sqlite" | "postgres" | "postgresql" | "mysql" => typed.to_owned(),
        // MariaDB speaks MySQL's protocol; SeaORM only knows the `mysql` scheme.
        "mariadb" => format!("mysql:{rest}"),
        _ => return Err(unsupported_scheme(&scheme, rest)),
    };
    let mut options = ConnectOptions::new(url.as_str());
    // sqlx statement logging would print bound values: envelopes only, but keep logs quiet.
    options
        .sqlx_logging(false)
        .connect_timeout(Duration::from_secs(10))
        .acquire_timeout(Duration::from_secs(10));
    // Logging off for the connect itself: SeaORM's `connect` span carries the options' Debug
    // form, URL and password included, and would print it with any event inside it.
    let connected = Database::connect(options)
        .with_subscriber(tracing::subscriber::NoSubscriber::default())
        .await;
    connected.map_err(|e| {
        let detail = e.to_string();
        // SeaORM's parse error is only the URL itself: say what to look for instead.
        let (detail, hint) = if detail.contains("cannot be parsed") {
            (
                "the URL cannot be parsed: is the port a number, an IPv6 host in [brackets], \
                 and every special character of the user name and password percent-encoded \
                 (e.g. %40 for @)?"
                    .to_owned(),
                "",
            )
        } else {
            (
                secrets.scrub(&detail.replace(&url, typed)),
                " (is the server running, and are the URL's host, port, user and database \
                 right?)",
            )
        };
        let message = format!(
            "cannot connect to the {scheme} database at {}: {detail}{hint}",
            secrets.scrub_passwords(where_to(typed)),
        );
        shown(&message).into_owned()
    })
}

/// The refusal of a scheme we do not support. The "scheme" is only named when it looks like
/// one (`name://`): without the `//`, what precedes the first `:` may be a user name
/// (`user:password@host/db` typed without a scheme).
fn unsupported_scheme(scheme: &str, rest: &str) -> String {
    let looks_like_scheme = rest.starts_with("//")
        && scheme.len() <= 20
        && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    let what = if looks_like_scheme {
        format!("unsupported database URL scheme {scheme:?}")
    } else {
        "the database URL does not start with a supported scheme".to_owned()
    };
    format!(
        "{what}: use sqlite://FILE?mode=rwc, postgres://USER@HOST/DB or mysql://USER@HOST/DB \
         (--database-url or DATABASE_URL)"
    )
}

/// The location part of a URL, without user name, password, query or fragment.
fn where_to(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.split(['?', '#']).next().unwrap_or(rest);
    rest.rsplit_once('@').map_or(rest, |(_, host)| host)
}

/// The credentials in a database URL, in every form an error text may quote them.
struct Secrets {
    /// The URL as typed.
    url: String,
    /// Password forms: as typed (percent-encoded), decoded, and from query parameters.
    passwords: Vec<String>,
    /// User name forms: as typed and decoded.
    users: Vec<String>,
}

/// Query parameters whose values are passwords (PostgreSQL's `password`, `sslpassword`, and
/// common spellings).
const PASSWORD_PARAMETERS: [&str; 5] = ["password", "sslpassword", "pass", "passwd", "pwd"];

/// Passwords shorter than this are scrubbed only where they stand alone: replacing every
/// occurrence of a one- or two-letter password would shred the whole message.
const SHORT_PASSWORD: usize = 4;

impl Secrets {
    fn of(url: &str) -> Secrets {
        let mut passwords = Vec::new();
        let mut users = Vec::new();
        let rest = url.split_once("://").map_or("", |(_, rest)| rest);
        // The user information is what precedes the last `@` before the path or query (what
        // the URL parser uses), and also, more generously, before the last `@` of the part
        // before the query: a password with an unencoded `/` moves the `@` into the path.
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        let before_query = rest.split(['?', '#']).next().unwrap_or("");
        for candidate in [authority, before_query] {
            if let Some((userinfo, _)) = candidate.rsplit_once('@') {
                let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                users.push(user.to_owned());
                passwords.push(password.to_owned());
            }
        }
        if let Some((_, query)) = rest.split_once('?') {
            for pair in query.split(['&', '#']) {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                let key = percent_decode(key).to_ascii_lowercase();
                if PASSWORD_PARAMETERS.contains(&key.as_str()) {
                    passwords.push(value.to_owned());
                    passwords.push(value.replace('+', " "));
                } else if key == "user" {
                    users.push(value.to_owned());
                }
            }
        }
        let with_decoded = |forms: Vec<String>| {
            let mut out: Vec<String> = forms
                .iter()
                .flat_map(|f| [f.clone(), percent_decode(f)])
                .filter(|f| !f.is_empty())
                .collect();
            // Longest first, so a form that contains another is replaced whole.
            out.sort_by_key(|f| std::cmp::Reverse(f.len()));
            out.dedup();
            out
        };
        Secrets {
            url: url.to_owned(),
            passwords: with_decoded(passwords),
            users: with_decoded(users),
        }
    }

    /// `text` with the whole URL replaced by `<the database URL>`, and every password form
    /// and every user name form by `***` (user names only where they stand alone, so the
    /// rest of the message survives).
    fn scrub(&self, text: &str) -> String {
        let text = if self.url.is_empty() {
            text.to_owned()
        } else {
            text.replace(&self.url, "<the database URL>")
        };
        let text = self.scrub_passwords(&text);
        self.users
            .iter()
            .fold(text, |text, user| replace_standalone(&text, user))
    }

    /// `text` with every password form replaced by `***`.
    fn scrub_passwords(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for password in &self.passwords {
            text = if password.chars().count() < SHORT_PASSWORD {
                replace_standalone(&text, password)
            } else {
                text.replace(password.as_str(), "***")
            };
        }
        text
    }
}

/// `text` with each occurrence of `word` that is not part of a longer word (letters, digits,
/// `_`, `-`, `.` on either side) replaced by `***`.
fn replace_standalone(text: &str, word: &str) -> String {
    if word.is_empty() {
        return text.to_owned();
    }
    let wordy = |c: char| c.is_alphanumeric() || "_-.".contains(c);
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for (at, _) in text.match_indices(word) {
        if at < last {
            continue;
        }
        let end = at + word.len();
        let before = text[..at].chars().next_back();
        let after = text[end..].chars().next();
        if before.is_some_and(wordy) || after.is_some_and(wordy) {
            continue;
        }
        out.push_str(&text[last..at]);
        out.push_str("***");
        last = end;
    }
    out.push_str(&text[last..]);
    out
}

/// Percent-decoding as URL parsers do it (`%XX` to a byte; anything else kept), lossy UTF-8.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(Some(hi)), Some(Some(lo))) = (
                bytes.get(i + 1).map(|b| hex(*b)),
                bytes.get(i + 2).map(|b| hex(*b)),
            )
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_never_shows_credentials() {
        assert_eq!(
            where_to("postgres://u:secret@db:5432/app?x=1"),
            "db:5432/app"
        );
        assert_eq!(where_to("sqlite://clinic.db?mode=rwc"), "clinic.db");
        assert_eq!(where_to("mysql://root@127.0.0.1/test"), "127.0.0.1/test");
        assert_eq!(where_to("postgres://u:pa/ss@db/app"), "db/app");
        assert_eq!(
            where_to("postgres://db/app?password=S3cretPw&user=x@y"),
            "db/app"
        );
    }

    #[test]
    fn every_form_of_the_password_is_scrubbed() {
        let url = "postgres://ada.admin:S3cret%40Pw%2F1@db:5432/app?sslpassword=Other+Pw%21";
        let s = Secrets::of(url);
        let text = format!(
            "The connection string '{url}' failed; password S3cret%40Pw%2F1 or \
             S3cret@Pw/1, role \"ada.admin\" does not exist, ssl Other Pw! / Other+Pw%21"
        );
        let scrubbed = s.scrub(&text);
        for leak in ["S3cret", "Other", "ada.admin", "Pw%21"] {
            assert!(!scrubbed.contains(leak), "{leak} in {scrubbed}");
        }
        assert!(
            scrubbed.contains("role \"***\" does not exist"),
            "{scrubbed}"
        );
        assert!(scrubbed.contains("<the database URL>"), "{scrubbed}");
    }

    #[test]
    fn a_password_with_an_unencoded_slash_is_still_found() {
        let s = Secrets::of("postgres://u:pa/ss@db/app");
        assert_eq!(s.scrub_passwords("bad pa/ss here"), "bad *** here");
    }

    #[test]
    fn short_passwords_and_user_names_are_scrubbed_where_they_stand_alone() {
        let s = Secrets::of("mysql://u:pw@127.0.0.1/test");
        assert_eq!(
            s.scrub("Access denied for user 'u'@'127.0.0.1' (using pw: YES), password 'pw'"),
            "Access denied for user '***'@'127.0.0.1' (using ***: YES), password '***'"
        );
        assert_eq!(replace_standalone("rootroot root", "root"), "rootroot ***");
    }

    #[test]
    fn a_scheme_is_only_named_when_it_looks_like_one() {
        assert!(unsupported_scheme("nosuch", "//x").contains("scheme \"nosuch\""));
        let typed_without_scheme = unsupported_scheme("ada", "S3cretPw@db/app");
        assert!(
            !typed_without_scheme.contains("ada"),
            "{typed_without_scheme}"
        );
        assert!(typed_without_scheme.contains("does not start with a supported scheme"));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%40b%2f%zz%4"), "a@b/%zz%4");
        assert_eq!(percent_decode("%C3%A9"), "é");
    }
}
