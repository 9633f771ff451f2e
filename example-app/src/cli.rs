//! Command-line interface of `clinic`.

use clap::{Parser, Subcommand};

/// A small clinic whose patient data is encrypted at rest with encrypted-columns.
///
/// Keys come from ENCRYPTED_COLUMNS_KEYS and ENCRYPTED_COLUMNS_BLIND_INDEX_KEYS
/// (`<id>:<base64 of 32 bytes>`; `clinic keys generate` prints both), checked against the key
/// store, or from the key store through a KEK provider (CLINIC_KEK=static|pkcs11|aws-kms; see
/// `clinic keys init`). The database is SQLite by default; PostgreSQL and MySQL/MariaDB by URL.
#[derive(Debug, Parser)]
#[command(name = "clinic", version)]
pub struct Cli {
    /// Database URL, e.g. sqlite://clinic.db?mode=rwc, postgres://user@host/db,
    /// mysql://user@host/db.
    #[arg(long, env = "DATABASE_URL", global = true)]
    pub database_url: Option<String>,

    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,

    /// Who is acting, for the audit log.
    #[arg(
        long,
        env = "CLINIC_ACTOR",
        global = true,
        default_value = "clinic-cli"
    )]
    pub actor: String,

    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Guided tour of every feature on 1,000+ generated fake patients.
    ///
    /// Patients sealed with their own keys, the raw stored bytes, blind-index search,
    /// duplicate rejection, the legacy-table migration, key rotation, erasure and the audit
    /// trail.
    ///
    /// Writes to its own `clinic-demo.db` SQLite file, replaced on the next run (a file of
    /// that name the demo did not make is refused and left alone), or to --database-url /
    /// DATABASE_URL only if that database holds no tables at all. Uses throwaway keys if
    /// ENCRYPTED_COLUMNS_KEYS is unset; with your keys, everything it leaves opens with them
    /// (it rotates to a key of its own and back).
    Demo {
        /// How many fake patients to generate, 1 to 100000.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        patients: u32,
    },
    /// Create or update the clinic's tables (runs the migrations).
    Init,
    /// Key material: generate, status, rotate; with a KEK provider init, new, promote, retire,
    /// rewrap.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Patients: add, show, list, find, update, erase.
    #[command(subcommand)]
    Patient(PatientCommand),
    /// SOAP notes.
    #[command(subcommand)]
    Note(NoteCommand),
    /// Consent records.
    #[command(subcommand)]
    Consent(ConsentCommand),
    /// Visit transcripts.
    #[command(subcommand)]
    Transcript(TranscriptCommand),
    /// The append-only audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Blind indexes: what they reveal; recompute them.
    #[command(subcommand)]
    Index(IndexCommand),
    /// Encrypt the plaintext `legacy_patients` table without downtime, one checked phase at
    /// a time: dual-write → backfill → verify → cutover → drop.
    #[command(subcommand, name = "migrate-legacy")]
    MigrateLegacy(LegacyCommand),
}

/// Steps of the legacy-table migration.
#[derive(Debug, Subcommand)]
pub enum LegacyCommand {
    /// Show each column's phase, rows sealed and rows left.
    Status,
    /// Insert fake legacy patients, written the way the current phase requires.
    Seed {
        /// How many, 1 to 1000000 (one insert each).
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        rows: u32,
    },
    /// Record that every writer now writes plaintext and envelope together.
    DualWrite,
    /// Seal every remaining value in batches: resumable, safe while the app writes, and
    /// any number of processes may run it at once (they share the table in leased chunks).
    Backfill {
        /// Rows per batch (one transaction each), 1 to 10000.
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=10_000))]
        batch_size: u64,
        /// Pause between batches, in milliseconds.
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=60_000))]
        throttle_ms: u64,
        /// Seconds a worker's claim on a batch holds before another worker may take it over
        /// (also how long a restart waits for a batch a killed worker held).
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
        lease_secs: u64,
    },
    /// Check that every envelope opens to exactly its plaintext (a failure moves verified
    /// columns back, so cut-over waits for a passing verify).
    Verify,
    /// Re-seal, from the plaintext, every value verify reports (rows an old app instance
    /// wrote plaintext-only), then verify again; repeats while it makes progress.
    Repair {
        /// Rows per batch (one transaction each), 1 to 10000.
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=10_000))]
        batch_size: u64,
        /// Seconds a worker's claim on a batch holds.
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
        lease_secs: u64,
    },
    /// Switch reads to encrypted-only (fails closed), after re-checking every row with
    /// writers held off.
    Cutover,
    /// Drop the plaintext columns (after re-checking every row under an exclusive lock) and
    /// rewrite the table so their bytes leave the database files. Re-run to finish an
    /// interrupted drop or purge.
    Drop,
}

/// Key commands.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Print fresh random keys as environment variable lines.
    Generate,
    /// Show the keys loaded and how many stored values each one sealed.
    Status,
    /// Re-wrap every patient data key the clinic keyring wraps (and re-seal the legacy table)
    /// under the active key, after adding a new key to ENCRYPTED_COLUMNS_KEYS and making it
    /// active with ENCRYPTED_COLUMNS_ACTIVE_KEY (with a KEK provider: `keys new` and `keys
    /// promote`). Patient data itself is not rewritten. Also recomputes
    /// the legacy table's e-mail index under the active blind-index key (the patients'
    /// indexes: `clinic index rebuild`).
    Rotate {
        /// Rows per batch (one transaction each), 1 to 10000.
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=10_000))]
        batch_size: u64,
    },
    /// With a KEK provider (CLINIC_KEK=static, pkcs11 or aws-kms): create encryption key 1
    /// and blind-index key 1 in the key store, wrapped by it. Refused if the store already
    /// holds keys, except that an init interrupted between its two keys (only keys of this
    /// KEK present) is finished. A missing PKCS#11 KEK (CLINIC_PKCS11_KEY) is generated.
    Init {
        /// The KEK provider: static, pkcs11 or aws-kms. Must match CLINIC_KEK when that is set
        /// (every later command reads CLINIC_KEK); its settings come from its variables.
        #[arg(long, value_name = "NAME")]
        provider: Option<String>,
    },
    /// With a KEK provider: a new key in the key store, decrypt-only until promoted (the first
    /// step of rotating a stored key; then `keys promote`, then `keys rotate` or `index
    /// rebuild`, then `keys retire` for the old one).
    New {
        /// Which kind of key.
        #[arg(long, value_enum)]
        purpose: KeyPurposeArg,
    },
    /// With a KEK provider: make stored key ID the active one of its purpose; the previous
    /// active key becomes decrypt-only.
    Promote {
        /// Which kind of key.
        #[arg(long, value_enum)]
        purpose: KeyPurposeArg,
        /// The key id.
        id: u32,
    },
    /// With a KEK provider: stop loading stored key ID. Refused for the active key and while
    /// any stored value (or audit chain MAC) still uses it, with the counts per column.
    Retire {
        /// Which kind of key.
        #[arg(long, value_enum)]
        purpose: KeyPurposeArg,
        /// The key id.
        id: u32,
    },
    /// Move every stored key from the configured KEK (CLINIC_KEK) to another, without
    /// re-encrypting any data. Resumable: run it again after an interruption. Afterwards run
    /// every command with the new provider's settings.
    #[command(group = clap::ArgGroup::new("rewrap_target").required(true).multiple(false))]
    Rewrap {
        /// The new KEK is a static one, base64 of 32 bytes in this environment variable
        /// (then run with CLINIC_KEK=static and CLINIC_KEK_STATIC set to that value).
        #[arg(long, value_name = "VAR", group = "rewrap_target")]
        to_static_env: Option<String>,
        /// The new KEK is this key label in the PKCS#11 token of CLINIC_PKCS11_MODULE,
        /// CLINIC_PKCS11_TOKEN and CLINIC_PKCS11_PIN (generated if missing; then run with
        /// CLINIC_KEK=pkcs11 and CLINIC_PKCS11_KEY set to it).
        #[arg(long, value_name = "LABEL", group = "rewrap_target")]
        to_pkcs11_key: Option<String>,
        /// The new KEK is this AWS KMS key (id, ARN or alias/…) in the region, endpoint and
        /// account of the CLINIC_AWS_KMS_* and AWS_* variables; from another KMS key there the
        /// keys are re-encrypted inside KMS (then run with CLINIC_KEK=aws-kms and
        /// CLINIC_AWS_KMS_KEY set to it). Needs the `aws-kms` feature.
        #[arg(long, value_name = "KEY", group = "rewrap_target")]
        to_aws_kms_key: Option<String>,
    },
}

/// The purpose of a stored key, on the command line.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum KeyPurposeArg {
    /// Seals values (`ENCRYPTED_COLUMNS_KEYS` when keys come from the environment).
    Encryption,
    /// Computes blind-index values and audit chain MACs.
    BlindIndex,
}

/// A patient's fields, as typed on the command line.
#[derive(Debug, clap::Args)]
pub struct PatientFields {
    /// First name.
    #[arg(long)]
    pub first_name: Option<String>,
    /// Last name.
    #[arg(long)]
    pub last_name: Option<String>,
    /// E-mail address (unique per patient, compared case-insensitively).
    #[arg(long)]
    pub email: Option<String>,
    /// Phone number.
    #[arg(long)]
    pub phone: Option<String>,
    /// Postal address.
    #[arg(long)]
    pub address: Option<String>,
    /// Date of birth, YYYY-MM-DD.
    #[arg(long)]
    pub dob: Option<String>,
    /// Medical history (free text).
    #[arg(long)]
    pub history: Option<String>,
}

/// Patient commands.
#[derive(Debug, Subcommand)]
pub enum PatientCommand {
    /// Register a patient (needs --first-name, --last-name, --email, --dob).
    Add(PatientFields),
    /// Show one patient.
    Show {
        /// Patient id.
        id: i32,
    },
    /// List patients as a table.
    List {
        /// At most this many, 1 to 10000.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=10_000))]
        limit: u64,
        /// Skip this many first (at most 2147483647).
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=i32::MAX as u64))]
        offset: u64,
    },
    /// Find patients through a blind index (exactly one of the options).
    Find {
        /// By e-mail (case and surrounding spaces do not matter).
        #[arg(long, group = "by")]
        email: Option<String>,
        /// By the last four digits of the phone number.
        #[arg(long, group = "by")]
        phone_last4: Option<String>,
        /// By last name and date of birth (YYYY-MM-DD).
        #[arg(long, group = "by", num_args = 2, value_names = ["LAST_NAME", "DOB"])]
        name_dob: Option<Vec<String>>,
    },
    /// Change some of a patient's fields.
    Update {
        /// Patient id.
        id: i32,
        #[command(flatten)]
        fields: PatientFields,
        /// Mark the patient active or inactive.
        #[arg(long)]
        active: Option<bool>,
    },
    /// Erase a patient for good: destroy its data key, delete its records, verify.
    Erase {
        /// Patient id.
        id: i32,
        /// Confirm: erasure cannot be undone.
        #[arg(long)]
        yes: bool,
    },
}

/// Note commands.
#[derive(Debug, Subcommand)]
pub enum NoteCommand {
    /// Add a SOAP note to a patient's record.
    Add {
        /// Patient id.
        patient: i32,
        /// Who writes it.
        #[arg(long)]
        author: String,
        /// S: what the patient reports.
        #[arg(long)]
        subjective: String,
        /// O: what was observed or measured.
        #[arg(long)]
        objective: String,
        /// A: the assessment.
        #[arg(long)]
        assessment: String,
        /// P: the plan.
        #[arg(long)]
        plan: String,
    },
    /// List a patient's notes.
    List {
        /// Patient id.
        patient: i32,
    },
}

/// Consent methods, as typed.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ConsentMethod {
    /// Signed on paper.
    Written,
    /// Said aloud, witnessed.
    Verbal,
    /// Signed on a device.
    Electronic,
}

/// Consent commands.
#[derive(Debug, Subcommand)]
pub enum ConsentCommand {
    /// Record a patient's consent (or refusal).
    Record {
        /// Patient id.
        patient: i32,
        /// What it covers, e.g. treatment, recording, research.
        #[arg(long)]
        scope: String,
        /// How it was given.
        #[arg(long, value_enum)]
        method: ConsentMethod,
        /// The signature data (typed name, witness statement, or base64 of a drawing).
        #[arg(long)]
        signature: String,
        /// Record a refusal instead of a grant.
        #[arg(long)]
        refused: bool,
    },
    /// Show a patient's consent records.
    Show {
        /// Patient id.
        patient: i32,
    },
}

/// Transcript commands.
#[derive(Debug, Subcommand)]
pub enum TranscriptCommand {
    /// Import a transcript from a JSON file:
    /// {"text": "...", "segments": [{"speaker", "start_ms", "end_ms", "text"}]}.
    Import {
        /// Patient id.
        patient: i32,
        /// The JSON file.
        file: std::path::PathBuf,
    },
    /// Show one transcript.
    Show {
        /// Transcript id.
        id: i32,
    },
}

/// Audit commands.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// List audit entries, newest first.
    List {
        /// Only entries about this patient.
        #[arg(long)]
        patient: Option<i32>,
        /// At most this many, 1 to 10000.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=10_000))]
        limit: u64,
    },
    /// Check the audit log's hash chain end to end: every entry's MAC over its content and
    /// the previous entry's MAC. Names the first broken entry and exits non-zero.
    ///
    /// Needs every blind-index key that made MACs. Prints the head (seq and MAC): record it
    /// elsewhere, since deleting the newest entries leaves a valid, shorter chain.
    Verify,
}

/// Index commands.
#[derive(Debug, Subcommand)]
pub enum IndexCommand {
    /// What each blind index reveals about the stored data: distinct values, the largest
    /// group, entropy, and the planner's advice.
    Report,
    /// Recompute every patient's blind indexes with the active blind-index key and the
    /// current index sizes.
    ///
    /// Needed after an index size changes (the phone-last-4 index went from 16 to 12 bits:
    /// until rebuilt, `patient find --phone-last4` misses patients stored before) and to
    /// finish a blind-index key rotation: add the new key to
    /// ENCRYPTED_COLUMNS_BLIND_INDEX_KEYS, make it active with
    /// ENCRYPTED_COLUMNS_ACTIVE_BLIND_INDEX_KEY, run `clinic index rebuild` (and `clinic keys
    /// rotate` for the legacy table), then the old key can be retired; the output says when.
    /// Patients in id order, in batches (one transaction each); each is opened with its own
    /// data key and only changed index values are written. Safe to re-run: what is current is
    /// left alone. A patient that cannot be opened is skipped and named at the end, with a
    /// non-zero exit; the others are rebuilt.
    Rebuild {
        /// Patients per transaction, 1 to 10000.
        #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=10_000))]
        batch_size: u64,
    },
}
