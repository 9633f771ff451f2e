//! `clinic demo`: a guided tour of what is stored and what the application sees.

use std::time::Duration;

use chrono::{NaiveDate, Utc};
use encrypted_columns::envelope::{HEADER_LEN, NONCE_LEN, OVERHEAD};
use encrypted_columns::{EncryptedString, Error as SealError, keyring};
use migration::{Migrator, MigratorTrait};
use sea_orm::sea_query::{Expr, Query};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectOptions, ConnectionTrait, Database,
    DatabaseConnection, EntityTrait, QueryFilter, QueryTrait, Value,
};

use crate::entities::patient::{self, Column};
use crate::keys::{self, KeySource};
use crate::output::say;

/// SQLite file the demo starts afresh when no database URL is given.
pub const DEFAULT_DEMO_FILE: &str = "clinic-demo.db";

/// Clearly fictional people (555 numbers are reserved for fiction).
struct FakePatient {
    first: &'static str,
    last: &'static str,
    email: &'static str,
    phone: Option<&'static str>,
    born: (i32, u32, u32),
    history: Option<&'static str>,
}

const PATIENTS: [FakePatient; 2] = [
    FakePatient {
        first: "Alba",
        last: "Examplewood",
        email: "alba.examplewood@example.org",
        phone: Some("+1 555 0100"),
        born: (1984, 3, 9),
        history: Some("Seasonal allergies; penicillin intolerance noted 2019."),
    },
    FakePatient {
        first: "Bram",
        last: "Samplesson",
        email: "bram.samplesson@example.org",
        phone: None,
        born: (1991, 11, 30),
        history: None,
    },
];

/// Runs the tour against `database_url`, or a fresh SQLite file.
pub async fn run(database_url: Option<&str>) -> Result<(), String> {
    let (ring, source) = keys::load(true)?;
    match source {
        KeySource::Ephemeral => say!(
            "No ENCRYPTED_COLUMNS_KEYS is set, so this run uses throwaway keys generated just now:\n\
             what it writes cannot be read after it exits. For lasting keys run `clinic keys generate`."
        ),
        KeySource::Environment => say!(
            "Keys loaded from ENCRYPTED_COLUMNS_KEYS; new values are sealed with key {}.",
            ring.active_key_id()
        ),
    }
    keyring::install(ring);

    let url = match database_url {
        Some(url) => url.to_string(),
        None => {
            match std::fs::remove_file(DEFAULT_DEMO_FILE) {
                Ok(()) => {
                    say!("Starting from a fresh {DEFAULT_DEMO_FILE} (the old one was removed).")
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    say!("Creating {DEFAULT_DEMO_FILE} (embedded SQLite, no server needed).")
                }
                Err(e) => return Err(format!("cannot remove the old {DEFAULT_DEMO_FILE}: {e}")),
            }
            format!("sqlite://{DEFAULT_DEMO_FILE}?mode=rwc")
        }
    };
    let db = connect(&url).await?;
    Migrator::up(&db, None)
        .await
        .map_err(|e| format!("cannot create the clinic's tables: {e}"))?;

    say!(
        "\n1. Storing {} fake patients through SeaORM.",
        PATIENTS.len()
    );
    let mut ids = Vec::new();
    for p in &PATIENTS {
        ids.push(insert(&db, p).await?);
    }
    say!("   Each field was sealed (XAES-256-GCM) when its value was built, before any SQL ran.");

    say!("\n2. What the database holds (read with plain SQL, no keys):");
    for (id, p) in ids.iter().zip(&PATIENTS) {
        show_raw(&db, *id, p).await?;
    }

    say!("\n3. What the application reads back (SeaORM opens each value on read):");
    for id in &ids {
        let row = patient::Entity::find_by_id(*id)
            .one(&db)
            .await
            .map_err(db_err)?
            .ok_or_else(|| format!("patient {id} vanished"))?;
        let (f, l, e) = (
            row.first_name.expose(),
            row.last_name.expose(),
            row.email.expose(),
        );
        let phone = row
            .phone
            .as_ref()
            .map_or("no phone", |p| p.expose().as_str());
        let history = row
            .medical_history
            .as_ref()
            .map_or("none", |h| h.expose().as_str());
        say!(
            "   #{id}: {f} {l} <{e}>, {phone}, born {}; history: {history}",
            row.date_of_birth.expose()
        );
        if *id == ids[0] {
            say!("   Logging a field prints no data: {:?}", row.email);
        }
    }

    say!("\n4. A ciphertext moved to another column does not open there:");
    let victim = ids[ids.len() - 1];
    patient::Entity::update_many()
        .col_expr(Column::Phone, Expr::col(Column::Email))
        .filter(Column::Id.eq(victim))
        .exec(&db)
        .await
        .map_err(db_err)?;
    match patient::Entity::find_by_id(victim).one(&db).await {
        Err(err) => match SealError::from_db_err(&err) {
            Some(typed) => say!(
                "   Copied #{victim}'s email envelope into its phone column; reading it fails:\n   {typed}"
            ),
            None => return Err(format!("expected a decryption error, got: {err}")),
        },
        Ok(_) => return Err("a moved ciphertext opened in another column".into()),
    }
    patient::Entity::update_many()
        .col_expr(Column::Phone, Expr::value(Value::Bytes(None)))
        .filter(Column::Id.eq(victim))
        .exec(&db)
        .await
        .map_err(db_err)?;
    say!("   (Its phone is set back to NULL.)");

    search(&db, &PATIENTS[0]).await?;

    if database_url.is_none() {
        say!(
            "\nDone. Look for yourself: sqlite3 {DEFAULT_DEMO_FILE} 'select hex(email) from patients'"
        );
    } else {
        say!("\nDone.");
    }
    Ok(())
}

/// Step 5: blind-index lookups and the unique e-mail constraint.
async fn search(db: &DatabaseConnection, p: &FakePatient) -> Result<(), String> {
    say!(
        "\n5. Searching encrypted fields through blind indexes (keyed hashes, no decryption of the table):"
    );
    let typed = format!("  {}  ", p.email.to_uppercase());
    let query = patient::Entity::find_by_email_bidx(typed.as_str()).map_err(|e| e.to_string())?;
    let sql = query.build(db.get_database_backend()).to_string();
    if sql.to_lowercase().contains(&p.email.to_lowercase()) {
        return Err("the lookup's SQL contains the plaintext e-mail".into());
    }
    let found = patient::Entity::find_one_by_email_bidx(db, typed.as_str())
        .await
        .map_err(db_err)?
        .ok_or("the e-mail lookup found nobody")?;
    say!(
        "   find_one_by_email_bidx({typed:?}) found #{} ({} {}):\n   \
         the e-mail was normalized (trim, lowercase) and hashed; the query compared {} bytes \
         of email_bidx ({}…), never the address.",
        found.id,
        found.first_name.expose(),
        found.last_name.expose(),
        found.email_bidx.len(),
        hex::encode(&found.email_bidx[..8])
    );
    if let Some(phone) = p.phone {
        let last4: String = phone.chars().filter(char::is_ascii_digit).collect();
        let last4 = &last4[last4.len().saturating_sub(4)..];
        let by_phone = patient::Entity::find_all_by_phone_last4_bidx(db, last4)
            .await
            .map_err(db_err)?;
        say!(
            "   find_all_by_phone_last4_bidx(\"{last4}\"): {} patient(s). That index keeps 16 bits, so \
             other numbers share its values; those rows are dropped after decrypting.",
            by_phone.len()
        );
    }
    let (y, m, d) = p.born;
    let born = NaiveDate::from_ymd_opt(y, m, d).ok_or("bad demo date")?;
    let by_name = patient::Entity::find_all_by_name_dob_bidx(db, p.last.to_lowercase(), born)
        .await
        .map_err(db_err)?;
    say!(
        "   find_all_by_name_dob_bidx(\"{}\", {born}): {} patient(s) (a compound index, case-insensitive).",
        p.last.to_lowercase(),
        by_name.len()
    );

    let twin = FakePatient {
        first: "Alba",
        last: "Doublewood",
        email: "Alba.Examplewood@Example.org",
        phone: None,
        born: (1990, 1, 1),
        history: None,
    };
    match insert_raw(db, &twin).await {
        Err(err) => match patient::Entity::unique_violation(&err) {
            Some(typed) => say!(
                "   Registering {:?} again is refused by the database's UNIQUE index:\n   {typed}",
                twin.email
            ),
            None => return Err(format!("expected a duplicate e-mail error, got: {err}")),
        },
        Ok(_) => return Err("a duplicate e-mail was accepted".into()),
    }
    Ok(())
}

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

fn db_err(err: sea_orm::DbErr) -> String {
    match SealError::from_db_err(&err) {
        Some(typed) => typed.to_string(),
        None => format!("database error: {err}"),
    }
}

async fn insert(db: &DatabaseConnection, p: &FakePatient) -> Result<i32, String> {
    match insert_raw(db, p).await {
        Ok(id) => Ok(id),
        Err(err) => Err(match patient::Entity::unique_violation(&err) {
            Some(typed) => typed.to_string(),
            None => db_err(err),
        }),
    }
}

/// Inserts a patient; `before_save` fills the blind indexes.
async fn insert_raw(db: &DatabaseConnection, p: &FakePatient) -> Result<i32, sea_orm::DbErr> {
    let seal_err = sea_orm::DbErr::from;
    let (y, m, d) = p.born;
    let born = NaiveDate::from_ymd_opt(y, m, d)
        .ok_or_else(|| sea_orm::DbErr::Custom("bad demo date".into()))?;
    let row = patient::ActiveModel {
        first_name: Set(EncryptedString::new(p.first.into()).map_err(seal_err)?),
        last_name: Set(EncryptedString::new(p.last.into()).map_err(seal_err)?),
        email: Set(EncryptedString::new(p.email.into()).map_err(seal_err)?),
        phone: Set(p
            .phone
            .map(|v| EncryptedString::new(v.into()))
            .transpose()
            .map_err(seal_err)?),
        date_of_birth: Set(encrypted_columns::Encrypted::new(born).map_err(seal_err)?),
        medical_history: Set(p
            .history
            .map(|v| EncryptedString::new(v.into()))
            .transpose()
            .map_err(seal_err)?),
        active: Set(true),
        created_at: Set(Utc::now()),
        ..Default::default()
    };
    let saved = row.insert(db).await?;
    Ok(saved.id)
}

async fn show_raw(db: &DatabaseConnection, id: i32, p: &FakePatient) -> Result<(), String> {
    let fields: [(Column, &str, Option<Vec<u8>>); 4] = [
        (
            Column::FirstName,
            "first_name",
            Some(p.first.as_bytes().to_vec()),
        ),
        (
            Column::LastName,
            "last_name",
            Some(p.last.as_bytes().to_vec()),
        ),
        (Column::Email, "email", Some(p.email.as_bytes().to_vec())),
        (
            Column::Phone,
            "phone",
            p.phone.map(|v| v.as_bytes().to_vec()),
        ),
    ];
    let query = Query::select()
        .columns(fields.iter().map(|(c, _, _)| *c))
        .column(Column::DateOfBirth)
        .column(Column::MedicalHistory)
        .from(patient::Entity)
        .and_where(Column::Id.eq(id))
        .to_owned();
    let row = db
        .query_one(&query)
        .await
        .map_err(db_err)?
        .ok_or_else(|| format!("patient {id} vanished"))?;
    say!("   patient #{id}:");
    let mut everything = Vec::new();
    for (_, name, plaintext) in &fields {
        let raw: Option<Vec<u8>> = row.try_get("", name).map_err(db_err)?;
        match raw {
            None => say!("     {name:<11} NULL (NULL stays NULL; nothing is sealed)"),
            Some(raw) => {
                let len = plaintext.as_ref().map_or(0, Vec::len);
                say!(
                    "     {name:<11} {} bytes = {len} plaintext + {OVERHEAD}: {}",
                    raw.len(),
                    describe(&raw)
                );
                everything.extend_from_slice(&raw);
            }
        }
    }
    for name in ["date_of_birth", "medical_history"] {
        if let Some(raw) = row.try_get::<Option<Vec<u8>>>("", name).map_err(db_err)? {
            everything.extend_from_slice(&raw);
        }
    }
    let leaked = fields
        .iter()
        .filter_map(|(_, _, pt)| pt.as_ref())
        .chain(p.history.map(str::as_bytes).map(<[u8]>::to_vec).as_ref())
        .any(|pt| everything.windows(pt.len()).any(|w| w == pt.as_slice()));
    if leaked {
        return Err(format!(
            "plaintext of patient {id} found in the stored bytes"
        ));
    }
    say!("     none of this patient's plaintext appears in the stored bytes.");
    Ok(())
}

/// `01 | key 00000001 | nonce 3f9a0c… | ciphertext+tag 8c2e…`
fn describe(raw: &[u8]) -> String {
    if raw.len() < OVERHEAD {
        return format!("{} (not an envelope)", hex::encode(raw));
    }
    let nonce_end = HEADER_LEN + NONCE_LEN;
    format!(
        "version {:02x} | key id {} | nonce {}… | ciphertext+tag {}…",
        raw[0],
        hex::encode(&raw[1..HEADER_LEN]),
        hex::encode(&raw[HEADER_LEN..HEADER_LEN + 6]),
        hex::encode(&raw[nonce_end..nonce_end + 6.min(raw.len() - nonce_end)]),
    )
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
