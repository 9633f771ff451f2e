//! Step 9: rotating the clinic key forward and back, so that nothing is left sealed with a key
//! that dies with this process.

use std::sync::Arc;

use encrypted_columns::keyring::{self, generate_key};
use encrypted_columns::{KeyId, Keyring};

use super::people::DEMO_ACTOR;
use crate::clinic::{Clinic, DATA_KEY_ID_BASE};
use crate::keys::KeySource;
use crate::output::say;

/// The id of the key the demo rotates to: one above every loaded key, so it never collides
/// with a key the user holds (active + 1 would, with keys 1 and 2 and 1 active).
pub(super) fn rotation_key_id(ring: &Keyring) -> Result<KeyId, String> {
    let highest = ring.key_ids().map(|k| k.0).max().unwrap_or(0);
    match highest.checked_add(1) {
        Some(id) if id < DATA_KEY_ID_BASE => Ok(KeyId(id)),
        _ => Err(format!(
            "the demo rotates to a key one above your highest key id ({highest}), and none is \
             free below {DATA_KEY_ID_BASE}: use small key ids (1, 2, 3, …)"
        )),
    }
}

/// Step 9: rotate the clinic key (re-wrap the patient keys, re-seal the legacy table), then
/// rotate back: the new key lives only in this process, and data left sealed with it could
/// never be read again.
pub(super) async fn rotation(
    clinic: &Clinic,
    new: KeyId,
    alba: i32,
    source: &KeySource,
) -> Result<(), String> {
    say!("\n9. Rotating the clinic key (`clinic keys rotate`):");
    let ring = clinic.master();
    let old = ring.active_key_id();
    let mut there = (**ring).clone();
    there
        .add_key(new, *generate_key())
        .map_err(|e| e.to_string())?;
    // The same keys with the user's key still active: what the demo rotates back with.
    let back = Arc::new(there.clone());
    there.promote(new).map_err(|e| e.to_string())?;
    let there = Arc::new(there);
    keyring::install(Arc::clone(&there));
    say!(
        "   A new key {new} is added and made active (in production: added to \
         ENCRYPTED_COLUMNS_KEYS on every server, then ENCRYPTED_COLUMNS_ACTIVE_KEY={new})."
    );
    let forward = async {
        let forward =
            crate::commands::keys::rotate_all(&clinic.db, there.key_ids().collect(), 500, true)
                .await?;
        let rotating = Clinic::new(clinic.db.clone(), Arc::clone(&there), DEMO_ACTOR.to_owned());
        let (row, _) = rotating.load_patient(&clinic.db, alba).await?;
        say!(
            "   Patient data was not rewritten: only its {} wrapped keys were. #{alba} still \
             reads ({} {}), and key {old} {}.",
            wrapped_keys(&forward),
            row.first_name.expose(),
            row.last_name.expose(),
            if forward.retirable_keys.contains(&old.0) {
                "seals nothing any more (in production it could now be retired)"
            } else {
                "is still in use"
            }
        );
        Ok::<(), String>(())
    }
    .await;

    // Back to the user's key whatever happened above: a failure part-way through the forward
    // rotation leaves some values under the new key too, and they must not die with it.
    if forward.is_ok() {
        let yours = match source {
            KeySource::Environment => "your ENCRYPTED_COLUMNS_KEYS still opens everything",
            KeySource::Ephemeral => "everything stays under this run's throwaway keys",
        };
        say!(
            "   Key {new} existed only in this process, so the demo rotates back to key {old}: \
             {yours}."
        );
    }
    keyring::install(Arc::clone(&back));
    let backward =
        crate::commands::keys::rotate_all(&clinic.db, back.key_ids().collect(), 500, false).await;
    let backward = match (forward, backward) {
        (Err(first), Ok(_)) => return Err(first),
        (Err(first), Err(second)) => {
            return Err(format!(
                "{first}; rotating back to key {old} then failed too ({second}), so some values \
                 stay sealed with key {new}, which existed only in this process: start the demo \
                 afresh"
            ));
        }
        (Ok(()), backward) => backward?,
    };
    if !backward.retirable_keys.contains(&new.0) {
        // Never go on (and exit) with values only the dropped key opens.
        return Err(format!(
            "rotating back to key {old} left values sealed with key {new}, which existed only in \
             this process: start the demo afresh"
        ));
    }
    // From here on only the keys the run started with, as any later `clinic` command has.
    keyring::install(Arc::clone(ring));
    let (row, _) = clinic.load_patient(&clinic.db, alba).await?;
    let legacy: u64 = backward
        .resealed
        .iter()
        .filter(|(column, _)| column.starts_with("legacy_patients."))
        .map(|(_, n)| n)
        .sum();
    say!(
        "   Re-wrapped {} data keys and re-sealed {legacy} legacy value(s) under key {old} again; \
         key {new} seals nothing and is dropped. With only the keys the demo started with, \
         #{alba} reads ({} {}).",
        wrapped_keys(&backward),
        row.first_name.expose(),
        row.last_name.expose()
    );
    Ok(())
}

/// How many patient data keys a rotation re-wrapped.
fn wrapped_keys(summary: &crate::commands::keys::RotationSummary) -> u64 {
    summary
        .resealed
        .get("patient_keys.wrapped_key")
        .copied()
        .unwrap_or(0)
}
