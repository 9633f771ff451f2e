//! Checks of typed input, each failing with a message that says what is wrong and how to
//! write it. Nothing is stored until every field passes.

use chrono::{NaiveDate, Utc};

/// An e-mail address: `local@domain.tld`, no spaces.
pub fn email(raw: &str) -> Result<String, String> {
    let value = raw.trim();
    let ok = value.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty()
            && !domain.contains('@')
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
    }) && !value.chars().any(char::is_whitespace);
    if ok {
        Ok(value.to_owned())
    } else {
        Err("invalid e-mail address: expected something like name@example.org".into())
    }
}

/// A date of birth: `YYYY-MM-DD`, not in the future, not before 1900. The messages never
/// repeat what was typed: a date of birth is personal data, and so is a near miss of one.
pub fn date_of_birth(raw: &str) -> Result<NaiveDate, String> {
    let date = NaiveDate::parse_from_str(raw.trim(), "%Y-%m-%d").map_err(|_| {
        "invalid date of birth: it must be a real date written YYYY-MM-DD, e.g. 1984-03-09"
            .to_owned()
    })?;
    let today = Utc::now().date_naive();
    if date > today {
        return Err("invalid date of birth: it is in the future".into());
    }
    if date.year() < 1900 {
        return Err("invalid date of birth: it is before 1900".into());
    }
    Ok(date)
}

/// A phone number: digits with optional `+`, spaces, dashes, dots and parentheses; 4 to 20
/// digits.
pub fn phone(raw: &str) -> Result<String, String> {
    let value = raw.trim();
    let digits = value.chars().filter(char::is_ascii_digit).count();
    let allowed = value
        .chars()
        .all(|c| c.is_ascii_digit() || " +-.()".contains(c));
    let problem = if !allowed {
        "it has a character other than digits, + - . ( ) and spaces".to_owned()
    } else if !(4..=20).contains(&digits) {
        format!("it has {digits} digit(s)")
    } else {
        return Ok(value.to_owned());
    };
    Err(format!(
        "invalid phone number: {problem}; use 4 to 20 digits, optionally with + - . ( ) and \
         spaces"
    ))
}

/// Exactly four digits, for `--phone-last4`.
pub fn last4(raw: &str) -> Result<String, String> {
    let value = raw.trim();
    if value.len() == 4 && value.chars().all(|c| c.is_ascii_digit()) {
        Ok(value.to_owned())
    } else {
        Err("invalid --phone-last4: expected exactly four digits, e.g. 0142".into())
    }
}

/// A required text field: present and not blank.
pub fn required(name: &str, value: Option<String>) -> Result<String, String> {
    match value {
        Some(v) if !v.trim().is_empty() => Ok(v.trim().to_owned()),
        Some(_) => Err(format!("--{name} is empty")),
        None => Err(format!("--{name} is required")),
    }
}

use chrono::Datelike as _;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert!(email(" Ada@Example.org ").is_ok());
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.org",
            "ada@example",
            "a b@example.org",
            "a@b@c.org",
        ] {
            assert!(email(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn dates() {
        assert!(date_of_birth("1984-03-09").is_ok());
        for bad in [
            "1984-13-01",
            "1984-13-45",
            "09/03/1984",
            "",
            "2999-01-01",
            "1850-01-01",
            "-1990-01-01",
            "+12345-01-01",
        ] {
            assert!(date_of_birth(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn rejected_input_is_never_echoed() {
        let typed = "1984-13-45";
        let err = date_of_birth(typed).expect_err("month 13");
        assert!(!err.contains(typed) && !err.contains("13"), "{err}");
        assert!(err.contains("YYYY-MM-DD"), "{err}");
        for (typed, err) in [
            (
                "2999-01-01",
                date_of_birth("2999-01-01").expect_err("future"),
            ),
            (
                "1850-01-01",
                date_of_birth("1850-01-01").expect_err("too old"),
            ),
            ("Ada@@x", email("Ada@@x").expect_err("two @")),
            ("+1 555 CALL", phone("+1 555 CALL").expect_err("letters")),
            ("12a4", last4("12a4").expect_err("letter")),
        ] {
            assert!(!err.contains(typed), "{typed:?} echoed: {err}");
        }
    }

    #[test]
    fn phones() {
        assert!(phone("+1 (555) 010-0142").is_ok());
        assert!(phone("12").is_err());
        assert!(phone("555-CALL-NOW").is_err());
        assert!(last4("0142").is_ok());
        assert!(last4("142").is_err());
    }
}
