//! `clinic note add|list`, `clinic consent record|show`, `clinic transcript import|show`:
//! a patient's clinical records, each sealed with the patient's own data key.

mod consents;
mod notes;
mod store;
mod transcript_file;
mod transcripts;

pub use self::consents::{consent, record_consent};
pub use self::notes::{add_note, note};
pub use self::transcript_file::TranscriptFile;
pub use self::transcripts::{import_transcript, transcript};
