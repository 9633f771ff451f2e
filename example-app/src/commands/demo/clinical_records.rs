//! Steps 6–7: a patient's clinical records, stored through the same API as `clinic note`,
//! `consent` and `transcript`, and the audit entry a read of them leaves.

use crate::clinic::Clinic;
use crate::commands::records::{self, TranscriptFile};
use crate::entities::consent_record::Method;
use crate::entities::transcript::Segment;
use crate::output::say;

/// Steps 6–7: clinical records sealed with the patient's key.
pub(super) async fn records(clinic: &Clinic, alba: i32) -> Result<(), String> {
    say!("\n6. Clinical records, each sealed with the patient's own key:");
    let note = records::add_note(
        clinic,
        alba,
        "dr.placeholder",
        [
            "Sneezing and itchy eyes for two weeks, worse outdoors.".into(),
            "Temp 36.8 C; nasal mucosa pale and swollen; chest clear.".into(),
            "Seasonal allergic rhinitis.".into(),
            "Non-sedating antihistamine daily; review in four weeks.".into(),
        ],
    )
    .await?;
    let consent = records::record_consent(
        clinic,
        alba,
        "recording",
        Method::Electronic,
        true,
        "Signed on tablet: Alba Examplewood".into(),
    )
    .await?;
    let transcript = records::import_transcript(
        clinic,
        alba,
        TranscriptFile {
            text: "How have you been? Sneezing a lot since the trees bloomed.".into(),
            segments: vec![
                Segment {
                    speaker: "clinician".into(),
                    start_ms: 0,
                    end_ms: 1_800,
                    text: "How have you been?".into(),
                },
                Segment {
                    speaker: "patient".into(),
                    start_ms: 1_900,
                    end_ms: 5_200,
                    text: "Sneezing a lot since the trees bloomed.".into(),
                },
            ],
        },
    )
    .await?;
    say!(
        "   SOAP note #{note} (4 sealed sections), consent #{consent} (signature sealed), \
         transcript #{transcript} (text and diarized segments sealed as JSON)."
    );
    say!(
        "\n7. Every read of PHI through the app is audited: `clinic patient show {alba}` adds an entry."
    );
    clinic
        .audit_reads("patient record shown", [(format!("patients#{alba}"), alba)])
        .await?;
    Ok(())
}
