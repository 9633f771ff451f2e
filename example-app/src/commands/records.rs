//! `clinic note add|list`, `clinic consent record|show`, `clinic transcript import|show`:
//! a patient's clinical records, each sealed with the patient's own data key.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use encrypted_columns::{EncryptedJson, Json, Keyring, keyring};
use sea_orm::ActiveValue::Set;
use sea_orm::{
    ActiveModelBehavior, ActiveModelTrait, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter,
    QueryOrder, TransactionTrait,
};
use serde::Serialize;
use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::cli::{ConsentCommand, ConsentMethod, NoteCommand, TranscriptCommand};
use crate::clinic::{Clinic, db_err, seal};
use crate::commands::patient::fit;
use crate::commands::{Global, print_json};
use crate::entities::consent_record::{self, Method};
use crate::entities::transcript::Segment;
use crate::entities::{clinical_note, transcript};
use crate::output::{say, shown};

/// A note as shown.
#[derive(Debug, Serialize)]
struct NoteView {
    id: i32,
    patient_id: i32,
    author: String,
    subjective: String,
    objective: String,
    assessment: String,
    plan: String,
    created_at: DateTime<Utc>,
}

/// A consent as shown.
#[derive(Debug, Serialize)]
struct ConsentView {
    id: i32,
    patient_id: i32,
    scope: String,
    method: Method,
    granted: bool,
    signature: String,
    recorded_at: DateTime<Utc>,
}

/// A transcript as shown.
#[derive(Debug, Serialize)]
struct TranscriptView {
    id: i32,
    patient_id: i32,
    text: String,
    segments: Vec<Segment>,
    recorded_at: DateTime<Utc>,
}

/// The file `clinic transcript import` reads:
/// `{"text": "...", "segments": [{"speaker", "start_ms", "end_ms", "text"}]}`.
///
/// Deserialized by hand: serde's own messages quote the offending value (`invalid type:
/// string "patient says …"`), and every value in this file is what a patient said. Each
/// failure here says where (serde_json adds line and column) and what was expected, never
/// what was found.
#[derive(Debug)]
pub struct TranscriptFile {
    /// The whole text.
    pub text: String,
    /// Speaker turns.
    pub segments: Vec<Segment>,
}

/// The largest transcript file read (a day of speech is well under 2 MiB of text).
const MAX_TRANSCRIPT_BYTES: u64 = 8 << 20;

/// The latest segment time accepted: 24 hours, in milliseconds. A visit is shorter, and a
/// bound keeps every later use of the times (minutes:seconds, sums, SQL) far from overflow.
pub const MAX_SEGMENT_MS: u64 = 24 * 60 * 60 * 1000;

/// Reads and checks a transcript file; the error is one line naming the file, the line and
/// column, and what was expected, without any of the file's content.
fn read_transcript(file: &std::path::Path) -> Result<TranscriptFile, String> {
    use std::io::Read as _;
    let name = file.display().to_string();
    let name = shown(&name);
    let opened = std::fs::File::open(file).map_err(|e| format!("cannot read {name}: {e}"))?;
    let mut bytes = Vec::new();
    opened
        .take(MAX_TRANSCRIPT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {name}: {e}"))?;
    if bytes.len() as u64 > MAX_TRANSCRIPT_BYTES {
        return Err(format!(
            "{name} is larger than {} MiB; a transcript file is far smaller",
            MAX_TRANSCRIPT_BYTES >> 20
        ));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        format!(
            "{name} is not UTF-8 text (byte {})",
            e.utf8_error().valid_up_to()
        )
    })?;
    parse_transcript(&text).map_err(|problem| {
        format!(
            "{name} is not a transcript file: {problem} (expected {{\"text\": \"...\", \
             \"segments\": [{{\"speaker\", \"start_ms\", \"end_ms\", \"text\"}}]}})"
        )
    })
}

/// Parses a transcript file's text; the error is `line L, column C: what was expected`.
fn parse_transcript(text: &str) -> Result<TranscriptFile, String> {
    serde_json::from_str::<TranscriptFile>(text).map_err(|e| {
        // Syntax and end-of-file messages are serde_json's fixed texts ("expected `,` or
        // `}`"); data messages are ours (below). Neither holds a value from the file.
        let message = e.to_string();
        let what = message
            .rsplit_once(" at line ")
            .map_or(message.as_str(), |(what, _)| what);
        let what = match e.classify() {
            serde_json::error::Category::Io => "cannot be read",
            _ => what,
        };
        format!("line {}, column {}: {what}", e.line(), e.column())
    })
}

/// Visitor methods for the JSON scalars a visitor does not accept, each failing with the
/// visitor's `refusal()`. serde's default methods would put the value in the message.
macro_rules! refuse_json {
    ($($kind:ident),*) => { $(refuse_json!(@ $kind);)* };
    (@ bool) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Err(E::custom(self.refusal()))
        }
    };
    (@ i64) => {
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Err(E::custom(self.refusal()))
        }
    };
    (@ u64) => {
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Err(E::custom(self.refusal()))
        }
    };
    (@ f64) => {
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Err(E::custom(self.refusal()))
        }
    };
    (@ str) => {
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Err(E::custom(self.refusal()))
        }
    };
    (@ null) => {
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Err(E::custom(self.refusal()))
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Err(E::custom(self.refusal()))
        }
    };
}

impl<'de> Deserialize<'de> for TranscriptFile {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(FileVisitor)
    }
}

struct FileVisitor;

impl FileVisitor {
    fn refusal(&self) -> &'static str {
        "the file must hold one JSON object"
    }
}

impl<'de> Visitor<'de> for FileVisitor {
    type Value = TranscriptFile;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.refusal())
    }

    refuse_json!(bool, i64, u64, f64, str, null);

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(de::Error::custom(self.refusal()))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut text, mut segments) = (None, None);
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "text" if text.is_some() => return Err(de::Error::custom("`text` is given twice")),
                "text" => text = Some(map.next_value_seed(Text("`text`".into()))?),
                "segments" if segments.is_some() => {
                    return Err(de::Error::custom("`segments` is given twice"));
                }
                "segments" => segments = Some(map.next_value_seed(Segments)?),
                _ => {
                    return Err(de::Error::custom(
                        "unknown field: a transcript has only `text` and `segments`",
                    ));
                }
            }
        }
        Ok(TranscriptFile {
            text: text.ok_or_else(|| de::Error::custom("`text` is missing"))?,
            segments: segments.unwrap_or_default(),
        })
    }
}

/// The list of segments.
struct Segments;

impl Segments {
    fn refusal(&self) -> &'static str {
        "`segments` must be a list [...] of segment objects"
    }
}

impl<'de> DeserializeSeed<'de> for Segments {
    type Value = Vec<Segment>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Segments {
    type Value = Vec<Segment>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.refusal())
    }

    refuse_json!(bool, i64, u64, f64, str, null);

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(de::Error::custom(self.refusal()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(segment) = seq.next_element_seed(OneSegment(out.len() + 1))? {
            out.push(segment);
        }
        Ok(out)
    }
}

/// Segment number `.0` (from 1).
struct OneSegment(usize);

impl OneSegment {
    fn refusal(&self) -> String {
        format!(
            "segment {} must be an object {{\"speaker\", \"start_ms\", \"end_ms\", \"text\"}}",
            self.0
        )
    }
}

impl<'de> DeserializeSeed<'de> for OneSegment {
    type Value = Segment;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for OneSegment {
    type Value = Segment;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.refusal())
    }

    refuse_json!(bool, i64, u64, f64, str, null);

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(de::Error::custom(self.refusal()))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let n = self.0;
        let (mut speaker, mut start_ms, mut end_ms, mut text) = (None, None, None, None);
        while let Some(key) = map.next_key::<String>()? {
            let field = match key.as_str() {
                "speaker" => "speaker",
                "start_ms" => "start_ms",
                "end_ms" => "end_ms",
                "text" => "text",
                _ => {
                    return Err(de::Error::custom(format!(
                        "unknown field in segment {n}: a segment has only `speaker`, \
                         `start_ms`, `end_ms` and `text`"
                    )));
                }
            };
            let what = format!("`{field}` of segment {n}");
            let twice = || de::Error::custom(format!("{what} is given twice"));
            match field {
                "speaker" if speaker.is_some() => return Err(twice()),
                "speaker" => speaker = Some(map.next_value_seed(Text(what))?),
                "text" if text.is_some() => return Err(twice()),
                "text" => text = Some(map.next_value_seed(Text(what))?),
                "start_ms" if start_ms.is_some() => return Err(twice()),
                "start_ms" => start_ms = Some(map.next_value_seed(Millis(what))?),
                _ if end_ms.is_some() => return Err(twice()),
                _ => end_ms = Some(map.next_value_seed(Millis(what))?),
            }
        }
        let missing = |field: &str| de::Error::custom(format!("segment {n} has no `{field}`"));
        let segment = Segment {
            speaker: speaker.ok_or_else(|| missing("speaker"))?,
            start_ms: start_ms.ok_or_else(|| missing("start_ms"))?,
            end_ms: end_ms.ok_or_else(|| missing("end_ms"))?,
            text: text.ok_or_else(|| missing("text"))?,
        };
        if segment.end_ms < segment.start_ms {
            return Err(de::Error::custom(format!(
                "segment {n} ends before it starts (`end_ms` < `start_ms`)"
            )));
        }
        Ok(segment)
    }
}

/// A string field, named by `.0` in messages.
struct Text(String);

impl Text {
    fn refusal(&self) -> String {
        format!("{} must be a string", self.0)
    }
}

impl<'de> DeserializeSeed<'de> for Text {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Text {
    type Value = String;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.refusal())
    }

    refuse_json!(bool, i64, u64, f64, null);

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
        Ok(value.to_owned())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(de::Error::custom(self.refusal()))
    }

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(de::Error::custom(self.refusal()))
    }
}

/// A time in milliseconds, 0 to [`MAX_SEGMENT_MS`], named by `.0` in messages.
struct Millis(String);

impl Millis {
    fn refusal(&self) -> String {
        format!(
            "{} must be a whole number of milliseconds from 0 to {MAX_SEGMENT_MS} (24 hours)",
            self.0
        )
    }
}

impl<'de> DeserializeSeed<'de> for Millis {
    type Value = u64;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Millis {
    type Value = u64;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.refusal())
    }

    refuse_json!(bool, i64, f64, str, null);

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Self::Value, E> {
        if value <= MAX_SEGMENT_MS {
            Ok(value)
        } else {
            Err(E::custom(self.refusal()))
        }
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(de::Error::custom(self.refusal()))
    }

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(de::Error::custom(self.refusal()))
    }
}

fn required(name: &str, value: String) -> Result<String, String> {
    crate::validate::required(name, Some(value))
}

/// Runs one note command.
pub async fn note(global: &Global, command: NoteCommand) -> Result<(), String> {
    match command {
        NoteCommand::Add {
            patient,
            author,
            subjective,
            objective,
            assessment,
            plan,
        } => {
            let (author, s, o, a, p) = (
                required("author", author)?,
                required("subjective", subjective)?,
                required("objective", objective)?,
                required("assessment", assessment)?,
                required("plan", plan)?,
            );
            let clinic = global.open().await?;
            let id = add_note(&clinic, patient, &author, [s, o, a, p]).await?;
            if global.json {
                return print_json(&serde_json::json!({ "id": id }));
            }
            say!("Added note #{id} to patient #{patient}.");
            Ok(())
        }
        NoteCommand::List { patient } => {
            let clinic = global.open().await?;
            let (_, ring) = patient_ring(&clinic, &clinic.db, patient).await?;
            let notes = keyring::scope(
                ring,
                clinical_note::Entity::find()
                    .filter(clinical_note::Column::PatientId.eq(patient))
                    .order_by_asc(clinical_note::Column::Id)
                    .all(&clinic.db),
            )
            .await
            .map_err(db_err)?;
            clinic
                .audit_reads(
                    "clinical note read",
                    notes
                        .iter()
                        .map(|n| (format!("clinical_notes#{}", n.id), patient)),
                )
                .await?;
            let views: Vec<NoteView> = notes
                .iter()
                .map(|n| NoteView {
                    id: n.id,
                    patient_id: n.patient_id,
                    author: n.author.clone(),
                    subjective: n.subjective.expose().clone(),
                    objective: n.objective.expose().clone(),
                    assessment: n.assessment.expose().clone(),
                    plan: n.plan.expose().clone(),
                    created_at: n.created_at,
                })
                .collect();
            if global.json {
                return print_json(&views);
            }
            if views.is_empty() {
                say!("Patient #{patient} has no notes.");
            }
            // Stored text is shown escaped: a note cannot drive the terminal.
            for n in &views {
                say!(
                    "Note #{} by {}, {}",
                    n.id,
                    shown(&n.author),
                    n.created_at.format("%Y-%m-%d %H:%M")
                );
                say!("  S  {}", shown(&n.subjective));
                say!("  O  {}", shown(&n.objective));
                say!("  A  {}", shown(&n.assessment));
                say!("  P  {}", shown(&n.plan));
            }
            Ok(())
        }
    }
}

/// Patient `patient`'s `patient_keys` row and a ring that opens its records. A `key_id` no
/// data key can have (outside 1..=i32::MAX) is refused here, even when there is nothing to
/// open: it is a damaged or tampered row, not a patient without records.
async fn patient_ring<C: sea_orm::ConnectionTrait>(
    clinic: &Clinic,
    db: &C,
    patient: i32,
) -> Result<(i32, Arc<Keyring>), String> {
    let key_row = clinic.key_row_of(db, patient).await?;
    crate::clinic::data_key_id(key_row).map_err(|e| format!("patient {patient}: {e}"))?;
    Ok((key_row, clinic.reading_ring(db, [key_row]).await?))
}

/// Stores a SOAP note for `patient`, sealed with its data key; returns the note id.
pub async fn add_note(
    clinic: &Clinic,
    patient: i32,
    author: &str,
    [s, o, a, p]: [String; 4],
) -> Result<i32, String> {
    insert_for_patient(
        clinic,
        patient,
        "clinical_notes",
        "clinical note added",
        |ring| {
            Ok(clinical_note::ActiveModel {
                patient_id: Set(patient),
                author: Set(author.to_owned()),
                subjective: Set(seal(ring, s)?),
                objective: Set(seal(ring, o)?),
                assessment: Set(seal(ring, a)?),
                plan: Set(seal(ring, p)?),
                created_at: Set(Utc::now()),
                ..Default::default()
            })
        },
        |m| m.id,
    )
    .await
}

/// Inserts one record of `patient`, built by `build` with values sealed by the patient's data
/// key, and audits its creation as `table#id`, in one transaction; returns the id.
async fn insert_for_patient<A>(
    clinic: &Clinic,
    patient: i32,
    table: &str,
    summary: &str,
    build: impl FnOnce(&Keyring) -> Result<A, String>,
    id_of: impl FnOnce(&<A::Entity as EntityTrait>::Model) -> i32,
) -> Result<i32, String>
where
    A: ActiveModelTrait + ActiveModelBehavior + Send,
    <A::Entity as EntityTrait>::Model: IntoActiveModel<A>,
{
    let txn = clinic.db.begin().await.map_err(db_err)?;
    let (key_row, ring) = patient_ring(clinic, &txn, patient).await?;
    let ring = Arc::new(Clinic::sealing_ring(&ring, key_row)?);
    let row = build(&ring)?;
    // The insert reads the row back (RETURNING): it must open with the patient's key.
    let saved = keyring::scope(Arc::clone(&ring), row.insert(&txn))
        .await
        .map_err(db_err)?;
    let id = id_of(&saved);
    clinic
        .audit(
            &txn,
            "create",
            format!("{table}#{id}"),
            Some(patient),
            summary,
            None,
        )
        .await?;
    txn.commit().await.map_err(db_err)?;
    Ok(id)
}

/// Runs one consent command.
pub async fn consent(global: &Global, command: ConsentCommand) -> Result<(), String> {
    match command {
        ConsentCommand::Record {
            patient,
            scope,
            method,
            signature,
            refused,
        } => {
            let scope = required("scope", scope)?;
            let signature = required("signature", signature)?;
            let method = match method {
                ConsentMethod::Written => Method::Written,
                ConsentMethod::Verbal => Method::Verbal,
                ConsentMethod::Electronic => Method::Electronic,
            };
            let clinic = global.open().await?;
            let id = record_consent(&clinic, patient, &scope, method, !refused, signature).await?;
            if global.json {
                return print_json(&serde_json::json!({ "id": id }));
            }
            say!(
                "Recorded consent #{id}: patient #{patient} {} {}.",
                if refused { "refused" } else { "granted" },
                shown(&scope)
            );
            Ok(())
        }
        ConsentCommand::Show { patient } => {
            let clinic = global.open().await?;
            let (_, ring) = patient_ring(&clinic, &clinic.db, patient).await?;
            let rows = keyring::scope(
                ring,
                consent_record::Entity::find()
                    .filter(consent_record::Column::PatientId.eq(patient))
                    .order_by_asc(consent_record::Column::Id)
                    .all(&clinic.db),
            )
            .await
            .map_err(db_err)?;
            clinic
                .audit_reads(
                    "consent record read",
                    rows.iter()
                        .map(|c| (format!("consent_records#{}", c.id), patient)),
                )
                .await?;
            let views: Vec<ConsentView> = rows
                .iter()
                .map(|c| ConsentView {
                    id: c.id,
                    patient_id: c.patient_id,
                    scope: c.scope.clone(),
                    method: c.method,
                    granted: c.granted,
                    signature: c.signature.expose().clone(),
                    recorded_at: c.recorded_at,
                })
                .collect();
            if global.json {
                return print_json(&views);
            }
            if views.is_empty() {
                say!("Patient #{patient} has no consent records.");
                return Ok(());
            }
            say!(
                "{:>5}  {:<12}  {:<8}  {:<10}  {:<16}  SIGNATURE",
                "ID",
                "SCOPE",
                "GRANTED",
                "METHOD",
                "RECORDED"
            );
            for c in &views {
                say!(
                    "{:>5}  {:<12}  {:<8}  {:<10}  {:<16}  {}",
                    c.id,
                    fit(&shown(&c.scope), 12),
                    if c.granted { "yes" } else { "REFUSED" },
                    format!("{:?}", c.method).to_lowercase(),
                    c.recorded_at.format("%Y-%m-%d %H:%M").to_string(),
                    fit(&shown(&c.signature), 40)
                );
            }
            Ok(())
        }
    }
}

/// Stores a consent record for `patient`; returns its id.
pub async fn record_consent(
    clinic: &Clinic,
    patient: i32,
    scope: &str,
    method: Method,
    granted: bool,
    signature: String,
) -> Result<i32, String> {
    insert_for_patient(
        clinic,
        patient,
        "consent_records",
        if granted {
            "consent recorded"
        } else {
            "refusal recorded"
        },
        |ring| {
            Ok(consent_record::ActiveModel {
                patient_id: Set(patient),
                scope: Set(scope.to_owned()),
                method: Set(method),
                granted: Set(granted),
                signature: Set(seal(ring, signature)?),
                recorded_at: Set(Utc::now()),
                ..Default::default()
            })
        },
        |m| m.id,
    )
    .await
}

/// Runs one transcript command.
pub async fn transcript(global: &Global, command: TranscriptCommand) -> Result<(), String> {
    match command {
        TranscriptCommand::Import { patient, file } => {
            // Checked before keys or the database are touched.
            let parsed = read_transcript(&file)?;
            let clinic = global.open().await?;
            let id = import_transcript(&clinic, patient, parsed).await?;
            if global.json {
                return print_json(&serde_json::json!({ "id": id }));
            }
            say!("Imported transcript #{id} for patient #{patient}.");
            Ok(())
        }
        TranscriptCommand::Show { id } => {
            let clinic = global.open().await?;
            let patient: Option<i32> = transcript::Entity::find_by_id(id)
                .select_only()
                .column(transcript::Column::PatientId)
                .into_tuple()
                .one(&clinic.db)
                .await
                .map_err(db_err)?;
            let patient = patient.ok_or_else(|| format!("no transcript with id {id}"))?;
            let (_, ring) = patient_ring(&clinic, &clinic.db, patient).await?;
            let row = keyring::scope(ring, transcript::Entity::find_by_id(id).one(&clinic.db))
                .await
                .map_err(db_err)?
                .ok_or_else(|| format!("no transcript with id {id}"))?;
            clinic
                .audit_reads("transcript read", [(format!("transcripts#{id}"), patient)])
                .await?;
            let view = TranscriptView {
                id: row.id,
                patient_id: row.patient_id,
                text: row.raw_text.expose().clone(),
                segments: row.segments.expose().0.clone(),
                recorded_at: row.recorded_at,
            };
            if global.json {
                return print_json(&view);
            }
            say!(
                "Transcript #{} of patient #{}, {}",
                view.id,
                view.patient_id,
                view.recorded_at.format("%Y-%m-%d %H:%M")
            );
            for s in &view.segments {
                say!(
                    "  [{:>3}:{:02}] {:<10} {}",
                    s.start_ms / 60_000,
                    (s.start_ms / 1000) % 60,
                    shown(&s.speaker),
                    shown(&s.text)
                );
            }
            if view.segments.is_empty() {
                say!("  {}", shown(&view.text));
            }
            Ok(())
        }
    }
}

/// Stores a transcript for `patient`; returns its id.
pub async fn import_transcript(
    clinic: &Clinic,
    patient: i32,
    file: TranscriptFile,
) -> Result<i32, String> {
    insert_for_patient(
        clinic,
        patient,
        "transcripts",
        "transcript imported",
        |ring| {
            Ok(transcript::ActiveModel {
                patient_id: Set(patient),
                raw_text: Set(seal(ring, file.text)?),
                segments: Set(EncryptedJson::new_with(ring, Json(file.segments))
                    .map_err(|e| e.to_string())?),
                recorded_at: Set(Utc::now()),
                ..Default::default()
            })
        },
        |m| m.id,
    )
    .await
}

use sea_orm::QuerySelect as _;

#[cfg(test)]
mod tests {
    use super::*;

    /// What a patient said, planted in every value a bad file can hold.
    const SAID: &str = "patient says SECRET";

    #[test]
    fn a_good_file_parses() {
        let file = parse_transcript(
            r#"{"text": "Any wheezing? Only at night.", "segments": [
                {"speaker": "clinician", "start_ms": 0, "end_ms": 1500, "text": "Any wheezing?"},
                {"text": "Only at night.", "end_ms": 3000, "start_ms": 1600, "speaker": "patient"}]}"#,
        )
        .expect("parses");
        assert_eq!(file.segments.len(), 2);
        assert_eq!(file.segments[1].speaker, "patient");
        assert_eq!(file.segments[1].start_ms, 1600);
        let bare = parse_transcript(r#"{"text": "x"}"#).expect("segments are optional");
        assert!(bare.segments.is_empty());
    }

    #[test]
    fn errors_give_position_and_expectation_never_a_value() {
        let s = format!("\"{SAID}\"");
        for (file, expected) in [
            (
                format!(r#"{{"text": "t", "segments": [{{"speaker": "p", "start_ms": {s}, "end_ms": 1, "text": "x"}}]}}"#),
                "line 1, column 77: `start_ms` of segment 1 must be a whole number of milliseconds",
            ),
            (
                format!("{{\"text\": \"t\",\n \"segments\": [\n{{\"speaker\": {s}, \"start_ms\": -5}}]}}"),
                "line 3, column 49: `start_ms` of segment 1 must be a whole number",
            ),
            (
                format!(r#"{{"text": 12, "segments": []}} {s}"#),
                "line 1, column 11: `text` must be a string",
            ),
            (
                format!(r#"{{"text": "t", "segments": [{{"{SAID}": 1}}]}}"#),
                "line 1, column 49: unknown field in segment 1",
            ),
            (format!(r#"{{"{SAID}": "t"}}"#), "unknown field: a transcript has only"),
            (s.clone(), "line 1, column 21: the file must hold one JSON object"),
            (
                format!(r#"{{"text": "t", "segments": {s}}}"#),
                "line 1, column 47: `segments` must be a list",
            ),
            (
                format!(r#"{{"text": "t", "segments": [{s}]}}"#),
                "segment 1 must be an object",
            ),
            (
                format!(r#"{{"text": "t", "segments": [{{"speaker": {s}, "start_ms": 1, "end_ms": 2}}]}}"#),
                "line 1, column 89: segment 1 has no `text`",
            ),
            (
                r#"{"text": "t", "segments": [{"speaker": "a", "start_ms": 9, "end_ms": 2, "text": "b"}]}"#.into(),
                "segment 1 ends before it starts",
            ),
            (
                r#"{"text": "t", "segments": [{"speaker": "a", "start_ms": 0, "end_ms": 86400001, "text": "b"}]}"#.into(),
                "`end_ms` of segment 1 must be a whole number of milliseconds from 0 to 86400000",
            ),
            (
                r#"{"text": "t", "segments": [{"speaker": "a", "start_ms": 1.5, "end_ms": 2, "text": "b"}]}"#.into(),
                "`start_ms` of segment 1 must be a whole number",
            ),
            (
                r#"{"text": "t", "segments": [{"speaker": "a", "start_ms": 18446744073709551616, "end_ms": 2, "text": "b"}]}"#.into(),
                "`start_ms` of segment 1 must be a whole number",
            ),
            (format!(r#"{{"text": {s}, "text": {s}}}"#), "`text` is given twice"),
            (format!(r#"{{"text": "{SAID}"#), "line 1, column 29: EOF while parsing a string"),
            (format!(r#"{{"text": "{SAID}" "#), "EOF while parsing an object"),
            (r#"{"segments": []}"#.to_owned(), "`text` is missing"),
            (
                format!(r#"{{"text": "a" "{SAID}"}}"#),
                "line 1, column 14: expected `,` or `}`",
            ),
        ] {
            let err = parse_transcript(&file).expect_err(&file);
            assert!(err.contains(expected), "{expected:?} not in {err:?}");
            assert!(!err.contains("SECRET"), "{err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }
}
