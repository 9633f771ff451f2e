//! Normalizers: what a value is turned into before it is hashed into a blind index.
//!
//! Two inputs that should find each other ("Ada@Example.org " and "ada@example.org") must
//! normalize to the same bytes. Transforms compose left to right in a [`Pipeline`]; each is
//! specified exactly in FORMAT.md so another language computes the same index values.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use unicode_normalization::UnicodeNormalization;

/// A user-supplied normalizer: a name (shown in `Debug` and errors) and a function.
pub type CustomFn = Arc<dyn Fn(&str) -> String + Send + Sync>;

/// One normalization step.
#[derive(Clone)]
#[non_exhaustive]
pub enum Transform {
    /// Removes leading and trailing Unicode `White_Space`.
    Trim,
    /// Replaces each run of Unicode `White_Space` with one U+0020 space.
    CollapseSpaces,
    /// Unicode default lowercase mapping (`str::to_lowercase`).
    Lowercase,
    /// Unicode Normalization Form C.
    Nfc,
    /// Unicode Normalization Form KC (compatibility: full-width letters, ligatures, …).
    Nfkc,
    /// Caseless matching: `NFKC(casefold(NFKC(s)))` with Unicode full case folding ("Straße"
    /// and "STRASSE" match).
    CaseFold,
    /// Keeps ASCII digits `0`–`9` only (phone numbers: "+1 (555) 010-0199" → "15550100199").
    /// Apply [`Transform::Nfkc`] first to fold full-width digits.
    DigitsOnly,
    /// E-mail canonical form: trim, NFC, lowercase, and a trailing `.` removed from the
    /// domain. Sub-addresses (`+tag`) are kept: not every provider ignores them.
    Email,
    /// The domain of an e-mail in canonical form: the text after the last `@` (empty if none).
    EmailDomain,
    /// The first `n` characters (Unicode scalar values), for prefix search.
    FirstN(usize),
    /// The last `n` characters (Unicode scalar values), e.g. the last 4 digits of a phone.
    LastN(usize),
    /// A function of your own, with a name for diagnostics.
    Custom(&'static str, CustomFn),
}

impl fmt::Debug for Transform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Transform::Custom(name, _) => write!(f, "Custom({name})"),
            other => f.write_str(&other.spec()),
        }
    }
}

impl Transform {
    /// A custom transform from a function.
    ///
    /// ```
    /// use encrypted_columns::blind_index::{Pipeline, Transform};
    ///
    /// // Medical record numbers: ignore a leading "MRN-" prefix.
    /// let strip = Transform::custom("strip_mrn_prefix", |s| {
    ///     s.strip_prefix("MRN-").unwrap_or(s).to_owned()
    /// });
    /// let pipeline = Pipeline::new([Transform::Trim, strip]);
    /// assert_eq!(pipeline.apply(" MRN-0042 "), "0042");
    /// ```
    pub fn custom(name: &'static str, f: impl Fn(&str) -> String + Send + Sync + 'static) -> Self {
        Transform::Custom(name, Arc::new(f))
    }

    /// The transform's name in the pipeline syntax of [`Pipeline::parse`].
    pub fn spec(&self) -> String {
        match self {
            Transform::Trim => "trim".into(),
            Transform::CollapseSpaces => "collapse_spaces".into(),
            Transform::Lowercase => "lowercase".into(),
            Transform::Nfc => "nfc".into(),
            Transform::Nfkc => "nfkc".into(),
            Transform::CaseFold => "casefold".into(),
            Transform::DigitsOnly => "digits".into(),
            Transform::Email => "email".into(),
            Transform::EmailDomain => "email_domain".into(),
            Transform::FirstN(n) => format!("first({n})"),
            Transform::LastN(n) => format!("last({n})"),
            Transform::Custom(name, _) => format!("custom:{name}"),
        }
    }

    fn apply<'a>(&self, s: Cow<'a, str>) -> Cow<'a, str> {
        match self {
            Transform::Trim => match s {
                Cow::Borrowed(b) => Cow::Borrowed(b.trim()),
                Cow::Owned(o) => Cow::Owned(o.trim().to_owned()),
            },
            Transform::CollapseSpaces => {
                let mut out = String::with_capacity(s.len());
                let mut in_space = false;
                for c in s.chars() {
                    if c.is_whitespace() {
                        if !in_space {
                            out.push(' ');
                        }
                        in_space = true;
                    } else {
                        out.push(c);
                        in_space = false;
                    }
                }
                Cow::Owned(out)
            }
            // ASCII fast paths: ASCII text is already NFC and NFKC, and its Unicode lower
            // case and case fold are its ASCII lower case. Most e-mails, phones and names
            // are ASCII, and the Unicode passes cost ~10x the HMAC (BENCHMARKS.md).
            Transform::Lowercase if s.is_ascii() => Cow::Owned(s.to_ascii_lowercase()),
            Transform::Lowercase => Cow::Owned(s.to_lowercase()),
            Transform::Nfc | Transform::Nfkc if s.is_ascii() => s,
            Transform::Nfc => Cow::Owned(s.nfc().collect()),
            Transform::Nfkc => Cow::Owned(s.nfkc().collect()),
            Transform::CaseFold if s.is_ascii() => Cow::Owned(s.to_ascii_lowercase()),
            Transform::CaseFold => {
                let nfkc: String = s.nfkc().collect();
                Cow::Owned(caseless::default_case_fold_str(&nfkc).nfkc().collect())
            }
            Transform::DigitsOnly => Cow::Owned(s.chars().filter(char::is_ascii_digit).collect()),
            Transform::Email => Cow::Owned(canonical_email(&s)),
            Transform::EmailDomain => {
                let canonical = canonical_email(&s);
                Cow::Owned(match canonical.rsplit_once('@') {
                    Some((_, domain)) => domain.to_owned(),
                    None => String::new(),
                })
            }
            Transform::FirstN(n) => match s.char_indices().nth(*n) {
                Some((end, _)) => Cow::Owned(s[..end].to_owned()),
                None => s,
            },
            Transform::LastN(n) => {
                let count = s.chars().count();
                if count <= *n {
                    s
                } else {
                    Cow::Owned(s.chars().skip(count - n).collect())
                }
            }
            Transform::Custom(_, f) => Cow::Owned(f(&s)),
        }
    }
}

fn canonical_email(s: &str) -> String {
    let trimmed = s.trim();
    // ASCII is already NFC, and its lower case is its ASCII lower case (see `apply`).
    let lower: String = if trimmed.is_ascii() {
        trimmed.to_ascii_lowercase()
    } else {
        trimmed.nfc().collect::<String>().to_lowercase()
    };
    match lower.strip_suffix('.') {
        Some(stripped) if stripped.contains('@') => stripped.to_owned(),
        _ => lower,
    }
}

/// A sequence of [`Transform`]s applied left to right.
///
/// ```
/// use encrypted_columns::blind_index::Pipeline;
///
/// let last4 = Pipeline::parse("digits, last(4)")?;
/// assert_eq!(last4.apply("+1 (555) 010-0199"), "0199");
/// let email = Pipeline::parse("email")?;
/// assert_eq!(email.apply("  Ada@Example.ORG "), "ada@example.org");
/// # Ok::<(), String>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct Pipeline {
    steps: Vec<Transform>,
}

impl Pipeline {
    /// A pipeline of the given steps.
    pub fn new(steps: impl IntoIterator<Item = Transform>) -> Self {
        Pipeline {
            steps: steps.into_iter().collect(),
        }
    }

    /// The identity pipeline: values are hashed exactly as given.
    pub fn identity() -> Self {
        Pipeline::default()
    }

    /// Appends a step.
    pub fn then(mut self, step: Transform) -> Self {
        self.steps.push(step);
        self
    }

    /// The steps, in order.
    pub fn steps(&self) -> &[Transform] {
        &self.steps
    }

    /// Whether the pipeline leaves its input unchanged.
    pub fn is_identity(&self) -> bool {
        self.steps.is_empty()
    }

    /// Parses the pipeline syntax used in `#[encrypted(blind_index(transform = "…"))]`:
    /// comma-separated steps among `trim`, `collapse_spaces`, `lowercase`, `nfc`, `nfkc`,
    /// `casefold`, `digits`, `email`, `email_domain`, `first(N)`, `last(N)`. An empty string
    /// is the identity. Errors name the offending step.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut steps = Vec::new();
        for raw in spec.split(',') {
            let step = raw.trim();
            if step.is_empty() {
                if spec.trim().is_empty() {
                    continue;
                }
                return Err(format!("empty step in transform list {spec:?}"));
            }
            steps.push(parse_step(step)?);
        }
        Ok(Pipeline { steps })
    }

    /// Runs the pipeline.
    pub fn apply<'a>(&self, input: &'a str) -> Cow<'a, str> {
        let mut value = Cow::Borrowed(input);
        for step in &self.steps {
            value = step.apply(value);
        }
        value
    }

    /// The pipeline in [`Pipeline::parse`] syntax.
    pub fn spec(&self) -> String {
        self.steps
            .iter()
            .map(Transform::spec)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn parse_step(step: &str) -> Result<Transform, String> {
    let simple = match step {
        "trim" => Some(Transform::Trim),
        "collapse_spaces" => Some(Transform::CollapseSpaces),
        "lowercase" => Some(Transform::Lowercase),
        "nfc" => Some(Transform::Nfc),
        "nfkc" => Some(Transform::Nfkc),
        "casefold" => Some(Transform::CaseFold),
        "digits" => Some(Transform::DigitsOnly),
        "email" => Some(Transform::Email),
        "email_domain" => Some(Transform::EmailDomain),
        _ => None,
    };
    if let Some(t) = simple {
        return Ok(t);
    }
    let counted = |name: &str| -> Option<Result<usize, String>> {
        let arg = step.strip_prefix(name)?.trim().strip_prefix('(')?;
        let arg = arg.strip_suffix(')')?.trim();
        Some(match arg.parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!(
                "`{step}`: {name}(N) needs a whole number of characters above 0"
            )),
        })
    };
    if let Some(n) = counted("first") {
        return n.map(Transform::FirstN);
    }
    if let Some(n) = counted("last") {
        return n.map(Transform::LastN);
    }
    Err(format!(
        "unknown transform `{step}`; known: trim, collapse_spaces, lowercase, nfc, nfkc, \
         casefold, digits, email, email_domain, first(N), last(N)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(spec: &str, input: &str) -> String {
        Pipeline::parse(spec).unwrap().apply(input).into_owned()
    }

    #[test]
    fn each_transform() {
        assert_eq!(run("trim", " \u{3000}a b\t"), "a b");
        assert_eq!(run("collapse_spaces", "a  \t b\n"), "a b ");
        assert_eq!(run("lowercase", "ÀBÇ"), "àbç");
        assert_eq!(run("nfc", "e\u{301}"), "é");
        // The ASCII fast paths agree with the Unicode passes on every ASCII character.
        let ascii: String = (0u8..=127).map(char::from).collect();
        let unicode_fold: String = caseless::default_case_fold_str(&ascii);
        for (steps, slow) in [
            ("lowercase", ascii.to_lowercase()),
            ("nfc", ascii.nfc().collect()),
            ("nfkc", ascii.nfkc().collect()),
            ("casefold", unicode_fold),
        ] {
            assert_eq!(run(steps, &ascii), slow, "{steps}");
        }
        assert_eq!(run("nfkc", "ｆｕｌｌ１"), "full1");
        assert_eq!(run("casefold", "Straße"), run("casefold", "STRASSE"));
        assert_eq!(run("casefold", "ﬁ"), "fi");
        assert_eq!(run("digits", "+1 (555) 010-0199"), "15550100199");
        assert_eq!(run("email", " Ada@Example.ORG. "), "ada@example.org");
        assert_eq!(run("email_domain", "Ada@Example.org"), "example.org");
        assert_eq!(run("email_domain", "no-at-sign"), "");
        assert_eq!(run("first(2)", "Ωmega"), "Ωm");
        assert_eq!(run("last(4)", "12"), "12");
        assert_eq!(run("digits, last(4)", "555-0199"), "0199");
        assert_eq!(run("", "As Is"), "As Is");
    }

    #[test]
    fn parse_errors_name_the_step() {
        assert!(
            Pipeline::parse("trim, shout")
                .unwrap_err()
                .contains("`shout`")
        );
        assert!(Pipeline::parse("last(0)").unwrap_err().contains("last(0)"));
        assert!(Pipeline::parse("trim,,lowercase").is_err());
        assert_eq!(
            Pipeline::parse("trim, last(4)").unwrap().spec(),
            "trim, last(4)"
        );
    }
}
