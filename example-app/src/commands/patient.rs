//! `clinic patient add|show|list|find|update|erase`.

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

use crate::cli::{PatientCommand, PatientFields};
use crate::clinic::{Clinic, Listing, NewPatient, PatientChanges};
use crate::commands::{Global, print_json};
use crate::entities::patient;
use crate::output::{say, shown};
use crate::validate;

/// A patient as the CLI shows it (opened values).
#[derive(Debug, Serialize)]
pub struct PatientView {
    pub id: i32,
    pub first_name: String,
    pub last_name: String,
    pub email: String,
    pub phone: Option<String>,
    pub address: Option<String>,
    pub date_of_birth: NaiveDate,
    pub medical_history: Option<String>,
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<&patient::Model> for PatientView {
    fn from(m: &patient::Model) -> Self {
        PatientView {
            id: m.id,
            first_name: m.first_name.expose().clone(),
            last_name: m.last_name.expose().clone(),
            email: m.email.expose().clone(),
            phone: m.phone.as_ref().map(|v| v.expose().clone()),
            address: m.address.as_ref().map(|v| v.expose().clone()),
            date_of_birth: *m.date_of_birth.expose(),
            medical_history: m.medical_history.as_ref().map(|v| v.expose().clone()),
            active: m.active,
            created_at: m.created_at,
            updated_at: m.updated_at,
        }
    }
}

/// Runs one patient command.
pub async fn run(global: &Global, command: PatientCommand) -> Result<(), String> {
    // Input is checked before keys or the database are touched: a typo costs nothing.
    match command {
        PatientCommand::Add(fields) => {
            let new = new_patient(fields)?;
            let clinic = global.open().await?;
            let id = clinic.add_patient(new).await?;
            if global.json {
                print_json(&serde_json::json!({ "id": id }))
            } else {
                say!("Added patient #{id}.");
                Ok(())
            }
        }
        PatientCommand::Show { id } => {
            let clinic = global.open().await?;
            let (model, _) = clinic.load_patient(&clinic.db, id).await?;
            clinic
                .audit_reads("patient record shown", [(format!("patients#{id}"), id)])
                .await?;
            let view = PatientView::from(&model);
            if global.json {
                return print_json(&view);
            }
            show(&view);
            Ok(())
        }
        PatientCommand::List { limit, offset } => {
            let clinic = global.open().await?;
            let listing = clinic.list_patients(limit, offset).await?;
            let total = clinic.count_patients().await?;
            let views = finish_reads(&clinic, &listing, "listed in patient list").await?;
            if global.json {
                print_json(&views)?;
                return listing.finish();
            }
            table(&views);
            report_unreadable(&listing);
            let seen = (views.len() + listing.unreadable.len()) as u64;
            say!(
                "{} of {total} patient(s){}",
                views.len(),
                if offset.saturating_add(seen) < total {
                    format!("; more with --offset {}", offset.saturating_add(seen))
                } else {
                    String::new()
                }
            );
            listing.finish()
        }
        PatientCommand::Find {
            email,
            phone_last4,
            name_dob,
        } => {
            let (listing, clinic, summary, by) = match (email, phone_last4, name_dob) {
                (Some(email), None, None) => {
                    let email = validate::email(&email)?;
                    let clinic = global.open().await?;
                    let condition = patient::Entity::email_bidx_condition(email.as_str())
                        .map_err(|e| e.to_string())?;
                    let listing = clinic
                        .find_patients(condition, |m| m.matches_email_bidx(email.as_str()))
                        .await?;
                    (listing, clinic, "found by e-mail", "e-mail")
                }
                (None, Some(last4), None) => {
                    let last4 = validate::last4(&last4)?;
                    let clinic = global.open().await?;
                    let condition = patient::Entity::phone_last4_bidx_condition(last4.as_str())
                        .map_err(|e| e.to_string())?;
                    let listing = clinic
                        .find_patients(condition, |m| m.matches_phone_last4_bidx(last4.as_str()))
                        .await?;
                    (listing, clinic, "found by phone last 4", "phone last 4")
                }
                (None, None, Some(pair)) => {
                    let [last, dob] = <[String; 2]>::try_from(pair)
                        .map_err(|_| "--name-dob takes LAST_NAME DOB".to_string())?;
                    let dob = validate::date_of_birth(&dob)?;
                    let clinic = global.open().await?;
                    let condition = patient::Entity::name_dob_bidx_condition(last.as_str(), dob)
                        .map_err(|e| e.to_string())?;
                    let listing = clinic
                        .find_patients(condition, |m| m.matches_name_dob_bidx(last.as_str(), dob))
                        .await?;
                    (
                        listing,
                        clinic,
                        "found by name and date of birth",
                        "last name and date of birth",
                    )
                }
                _ => {
                    return Err(
                        "say what to search by: --email ADDRESS, --phone-last4 NNNN or \
                         --name-dob LAST_NAME YYYY-MM-DD"
                            .into(),
                    );
                }
            };
            let rows = finish_reads(&clinic, &listing, summary).await?;
            if global.json {
                print_json(&rows)?;
                return listing.finish();
            }
            if rows.is_empty() && listing.unreadable.is_empty() {
                say!("No patient matches that {by}.");
            } else {
                table(&rows);
                report_unreadable(&listing);
                say!("{} patient(s) match by {by}.", rows.len());
            }
            listing.finish()
        }
        PatientCommand::Update { id, fields, active } => {
            let changes = changes(fields, active)?;
            let clinic = global.open().await?;
            let model = clinic.update_patient(id, changes).await?;
            if global.json {
                return print_json(&PatientView::from(&model));
            }
            say!("Updated patient #{id}.");
            Ok(())
        }
        PatientCommand::Erase { id, yes } => {
            if !yes {
                return Err(format!(
                    "erasing patient {id} destroys its key and deletes its records for good; \
                     run again with --yes to confirm"
                ));
            }
            let clinic = global.open().await?;
            let report = clinic.erase_patient(id).await?;
            if global.json {
                return print_json(&report);
            }
            say!(
                "Erased patient #{id}: its data key (patient_keys row {}, key {}) is destroyed \
                 in this database.\n  deleted: 1 patient row, {} note(s), {} consent \
                 record(s), {} transcript(s), 1 key row\n  verified: {} row(s) left; a stored \
                 copy of its e-mail envelope no longer opens here: {}",
                report.key_row,
                report.data_key_id,
                report.notes,
                report.consents,
                report.transcripts,
                report.remaining_rows,
                report.backup_copy_error
            );
            say!("  not reached by this erase:");
            for limit in &report.not_reached {
                say!("  - {limit}");
            }
            Ok(())
        }
    }
}

/// Audits the reads of the rows that opened (nothing was shown of the others) and turns
/// them into views.
async fn finish_reads(
    clinic: &Clinic,
    listing: &Listing,
    summary: &str,
) -> Result<Vec<PatientView>, String> {
    clinic
        .audit_reads(
            summary,
            listing
                .rows
                .iter()
                .map(|m| (format!("patients#{}", m.id), m.id)),
        )
        .await?;
    Ok(listing.rows.iter().map(PatientView::from).collect())
}

/// One line per row that could not be shown, on stderr (stdout stays the table).
fn report_unreadable(listing: &Listing) {
    for u in &listing.unreadable {
        eprintln!("clinic: unreadable: {}", shown(&u.reason));
    }
}

fn new_patient(f: PatientFields) -> Result<NewPatient, String> {
    Ok(NewPatient {
        first_name: validate::required("first-name", f.first_name)?,
        last_name: validate::required("last-name", f.last_name)?,
        email: validate::email(&validate::required("email", f.email)?)?,
        phone: f.phone.as_deref().map(validate::phone).transpose()?,
        address: f.address.filter(|a| !a.trim().is_empty()),
        date_of_birth: validate::date_of_birth(&validate::required("dob", f.dob)?)?,
        medical_history: f.history.filter(|h| !h.trim().is_empty()),
    })
}

fn changes(f: PatientFields, active: Option<bool>) -> Result<PatientChanges, String> {
    let nonblank = |name: &str, v: Option<String>| -> Result<Option<String>, String> {
        v.map(|v| validate::required(name, Some(v))).transpose()
    };
    Ok(PatientChanges {
        first_name: nonblank("first-name", f.first_name)?,
        last_name: nonblank("last-name", f.last_name)?,
        email: f.email.as_deref().map(validate::email).transpose()?,
        phone: f.phone.as_deref().map(validate::phone).transpose()?,
        address: nonblank("address", f.address)?,
        date_of_birth: f.dob.as_deref().map(validate::date_of_birth).transpose()?,
        medical_history: nonblank("history", f.history)?,
        active,
    })
}

fn show(p: &PatientView) {
    // Stored text is shown escaped: a value must not be able to drive the terminal.
    let opt = |v: &Option<String>| shown(v.as_deref().unwrap_or("-")).into_owned();
    say!(
        "Patient #{}{}",
        p.id,
        if p.active { "" } else { " (inactive)" }
    );
    say!(
        "  name           {} {}",
        shown(&p.first_name),
        shown(&p.last_name)
    );
    say!("  e-mail         {}", shown(&p.email));
    say!("  phone          {}", opt(&p.phone));
    say!("  address        {}", opt(&p.address));
    say!("  date of birth  {}", p.date_of_birth);
    say!("  history        {}", opt(&p.medical_history));
    say!(
        "  registered     {}   updated {}",
        p.created_at.format("%Y-%m-%d %H:%M"),
        p.updated_at.format("%Y-%m-%d %H:%M")
    );
}

/// Cuts `s` to `width` characters, marking the cut.
pub fn fit(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(width.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

fn table(rows: &[PatientView]) {
    say!(
        "{:>6}  {:<24}  {:<32}  {:<16}  {:<10}  {}",
        "ID",
        "NAME",
        "E-MAIL",
        "PHONE",
        "BORN",
        "ACTIVE"
    );
    for p in rows {
        say!(
            "{:>6}  {:<24}  {:<32}  {:<16}  {:<10}  {}",
            p.id,
            fit(&shown(&format!("{} {}", p.first_name, p.last_name)), 24),
            fit(&shown(&p.email), 32),
            fit(&shown(p.phone.as_deref().unwrap_or("-")), 16),
            p.date_of_birth,
            if p.active { "yes" } else { "no" }
        );
    }
}
