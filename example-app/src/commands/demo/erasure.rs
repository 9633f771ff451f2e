//! Steps 10–11: erasing a patient by destroying its data key, and the append-only audit trail
//! that outlives it.

use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect};

use super::people::DEMO_ACTOR;
use crate::clinic::{Clinic, data_key_id, db_err};
use crate::commands::records;
use crate::entities::audit_entry;
use crate::output::say;

/// Step 10: crypto-shredding `victim`, a patient this run registered.
pub(super) async fn erasure(clinic: &Clinic, victim: i32) -> Result<(), String> {
    say!("\n10. Erasing a patient (`clinic patient erase ID --yes`, GDPR art. 17):");
    let key_row = clinic.key_row_of(&clinic.db, victim).await?;
    records::add_note(
        clinic,
        victim,
        "dr.placeholder",
        [
            "Follow-up.".into(),
            "Well.".into(),
            "Resolved.".into(),
            "None.".into(),
        ],
    )
    .await?;
    let report = clinic.erase_patient(victim).await?;
    say!(
        "   Patient #{victim} (registered in step 1): data key {} destroyed; deleted the patient \
         row, {} note(s), {} consent(s), {} transcript(s).\n   Verified: {} row(s) left, and a \
         copy of its e-mail envelope, as stored before, no longer opens with this database's keys:\n   {}",
        data_key_id(key_row)?,
        report.notes,
        report.consents,
        report.transcripts,
        report.remaining_rows,
        report.backup_copy_error
    );
    say!(
        "   Not reached yet: a backup taken before the erase still holds the wrapped data key, \
         which {} opens, until the backup expires or that key is rotated and the old one \
         destroyed (README, \"Erasure\").",
        report.wrapped_by
    );
    Ok(())
}

/// Step 11: the audit trail. The tamper attempt names one entry this run wrote, so even if
/// the trigger were missing it could not rewrite anyone else's history.
pub(super) async fn audit_trail(clinic: &Clinic, alba: i32, erased: i32) -> Result<(), String> {
    say!("\n11. The audit trail (`clinic audit list`), append-only:");
    let db = &clinic.db;
    let about = |id: i32| {
        audit_entry::Entity::find()
            .filter(audit_entry::Column::PatientId.eq(id))
            .filter(audit_entry::Column::Actor.eq(DEMO_ACTOR))
    };
    let about_alba = about(alba).count(db).await.map_err(db_err)?;
    let about_erased = about(erased).count(db).await.map_err(db_err)?;
    say!(
        "   {about_alba} entries about #{alba} (create, records added, reads); the {about_erased} \
         about erased #{erased} stay, their sealed details unreadable."
    );
    let own: i64 = about(alba)
        .select_only()
        .column(audit_entry::Column::Id)
        .order_by_desc(audit_entry::Column::Id)
        .into_tuple()
        .one(db)
        .await
        .map_err(db_err)?
        .ok_or("the demo's own audit entries are missing")?;
    let refused = audit_entry::Entity::update_many()
        .col_expr(audit_entry::Column::Actor, Expr::value("someone else"))
        .filter(audit_entry::Column::Id.eq(own))
        .exec(db)
        .await;
    match refused {
        Err(err) if err.to_string().contains("append-only") => say!(
            "   Rewriting history is refused by a trigger: UPDATE audit_log SET actor = … WHERE \
             id = {own} → \"audit_log is append-only\"."
        ),
        Err(err) => return Err(format!("expected the append-only trigger, got: {err}")),
        Ok(_) => return Err("the audit log accepted an UPDATE".into()),
    }
    Ok(())
}
