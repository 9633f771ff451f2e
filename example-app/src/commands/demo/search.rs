//! Step 5: searching encrypted fields through their blind indexes.

use chrono::NaiveDate;
use sea_orm::{EntityTrait, PaginatorTrait, QueryFilter, QueryTrait};

use super::people::ALBA;
use crate::clinic::{Clinic, NewPatient, db_err};
use crate::entities::patient;
use crate::output::say;

/// Step 5: blind-index lookups and the unique e-mail constraint.
pub(super) async fn search(clinic: &Clinic) -> Result<(), String> {
    say!(
        "\n5. Searching encrypted fields through blind indexes (keyed hashes; nothing is decrypted to search):"
    );
    let db = &clinic.db;
    let typed = format!("  {}  ", ALBA.email.to_uppercase());
    let query = patient::Entity::find_by_email_bidx(typed.as_str()).map_err(|e| e.to_string())?;
    let sql = query.build(db.get_database_backend()).to_string();
    if sql.to_lowercase().contains(&ALBA.email.to_lowercase()) {
        return Err("the lookup's SQL contains the plaintext e-mail".into());
    }
    let condition =
        patient::Entity::email_bidx_condition(typed.as_str()).map_err(|e| e.to_string())?;
    let found = clinic
        .find_patients(condition, |m| m.matches_email_bidx(typed.as_str()))
        .await?
        .rows;
    let found = found.first().ok_or("the e-mail lookup found nobody")?;
    say!(
        "   find by e-mail {typed:?} found #{} ({} {}):\n   the address was normalized \
         (trim, lowercase) and hashed; the query compared {} bytes of email_bidx ({}…), never \
         the address.",
        found.id,
        found.first_name.expose(),
        found.last_name.expose(),
        found.email_bidx.len(),
        hex::encode(&found.email_bidx[..8])
    );
    let last4 = "0142";
    let condition =
        patient::Entity::phone_last4_bidx_condition(last4).map_err(|e| e.to_string())?;
    let candidates = patient::Entity::find()
        .filter(condition.clone())
        .count(db)
        .await
        .map_err(db_err)?;
    let by_phone = clinic
        .find_patients(condition, |m| m.matches_phone_last4_bidx(last4))
        .await?
        .rows;
    say!(
        "   find by phone last 4 \"{last4}\": the {}-bit index matched {candidates} row(s); after \
         decrypting, {} really end in {last4}.\n   (Truncation makes unrelated numbers share \
         index values, so the index alone does not tell who shares a number.)",
        patient::Entity::phone_last4_bidx_index().bit_len(),
        by_phone.len()
    );
    let (y, m, d) = ALBA.born;
    let born = NaiveDate::from_ymd_opt(y, m, d).ok_or("bad demo date")?;
    let last = ALBA.last_name.to_uppercase();
    let condition =
        patient::Entity::name_dob_bidx_condition(last.as_str(), born).map_err(|e| e.to_string())?;
    let by_name = clinic
        .find_patients(condition, |m| m.matches_name_dob_bidx(last.as_str(), born))
        .await?
        .rows;
    say!(
        "   find by last name + date of birth (\"{last}\", {born}): {} patient(s) \
         (a compound index; case does not matter).",
        by_name.len()
    );

    let twin = NewPatient {
        first_name: "Alba".into(),
        last_name: "Doublewood".into(),
        email: "Alba.Examplewood@Example.org ".into(),
        phone: None,
        address: None,
        date_of_birth: NaiveDate::from_ymd_opt(1990, 1, 1).unwrap_or_default(),
        medical_history: None,
    };
    match clinic.add_patient(twin).await {
        Err(err) if err.contains("already has this e-mail") => say!(
            "   Registering \"Alba.Examplewood@Example.org \" again is refused by the database's \
             UNIQUE index on the blind index:\n   {err}"
        ),
        Err(err) => return Err(format!("expected a duplicate e-mail error, got: {err}")),
        Ok(_) => return Err("a duplicate e-mail was accepted".into()),
    }
    Ok(())
}
