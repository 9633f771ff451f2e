//! The transcript file `clinic transcript import` reads, parsed and checked by hand so that no
//! error message echoes what a patient said.

use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::entities::transcript::Segment;
use crate::output::shown;

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
pub(super) fn read_transcript(file: &std::path::Path) -> Result<TranscriptFile, String> {
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
