//! Steps 2 and 4: what the database stores for a patient, seen without keys: envelopes that
//! hold none of the plaintext, each bound to its column.

use encrypted_columns::envelope::{HEADER_LEN, NONCE_LEN, OVERHEAD};
use sea_orm::sea_query::{Expr, Query};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter, QuerySelect, Value,
};

use super::people::FakePatient;
use crate::clinic::{Clinic, db_err};
use crate::entities::patient::{self, Column};
use crate::output::say;

/// Step 4: a ciphertext moved to another column does not open there.
pub(super) async fn moved_ciphertext(clinic: &Clinic, id: i32) -> Result<(), String> {
    say!("\n4. A ciphertext moved to another column does not open there:");
    let db = &clinic.db;
    let saved: Option<Vec<u8>> = patient::Entity::find_by_id(id)
        .select_only()
        .column(Column::Phone)
        .into_tuple::<Option<Vec<u8>>>()
        .one(db)
        .await
        .map_err(db_err)?
        .flatten();
    patient::Entity::update_many()
        .col_expr(Column::Phone, Expr::col(Column::Email))
        .filter(Column::Id.eq(id))
        .exec(db)
        .await
        .map_err(db_err)?;
    match clinic.load_patient(db, id).await {
        Err(err) => say!(
            "   Copied #{id}'s e-mail envelope into its phone column; reading it fails:\n   {err}"
        ),
        Ok(_) => return Err("a moved ciphertext opened in another column".into()),
    }
    patient::Entity::update_many()
        .col_expr(Column::Phone, Expr::value(Value::Bytes(saved)))
        .filter(Column::Id.eq(id))
        .exec(db)
        .await
        .map_err(db_err)?;
    say!("   (Its phone envelope is put back.)");
    Ok(())
}

/// Prints the stored bytes of patient `id` and checks that none of its plaintext is there.
pub(super) async fn show_raw(
    db: &DatabaseConnection,
    id: i32,
    p: &FakePatient,
) -> Result<(), String> {
    let fields: [(Column, &str, Option<Vec<u8>>); 4] = [
        (
            Column::FirstName,
            "first_name",
            Some(p.first_name.as_bytes().to_vec()),
        ),
        (
            Column::LastName,
            "last_name",
            Some(p.last_name.as_bytes().to_vec()),
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
        .column(Column::Address)
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
    for name in ["address", "date_of_birth", "medical_history"] {
        if let Some(raw) = row.try_get::<Option<Vec<u8>>>("", name).map_err(db_err)? {
            everything.extend_from_slice(&raw);
        }
    }
    let leaked = fields
        .iter()
        .filter_map(|(_, _, pt)| pt.as_ref())
        .chain(p.history.map(str::as_bytes).map(<[u8]>::to_vec).as_ref())
        .chain(p.address.map(str::as_bytes).map(<[u8]>::to_vec).as_ref())
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
