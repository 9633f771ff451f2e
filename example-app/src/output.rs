//! Printing to stdout that behaves in pipelines.
//!
//! `println!` panics when stdout is a closed pipe (`clinic demo | head`). Like other Unix
//! tools, stop quietly instead, with the exit status a SIGPIPE death would give.

use std::io::{ErrorKind, Write};

/// Writes one line to stdout; exits quietly if the reader has gone away.
pub fn line(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.write_all(b"\n"))
        && e.kind() == ErrorKind::BrokenPipe
    {
        std::process::exit(141);
    }
}

/// `println!` for the CLI's normal output, via [`line`].
macro_rules! say {
    () => { $crate::output::line(format_args!("")) };
    ($($arg:tt)*) => { $crate::output::line(format_args!($($arg)*)) };
}
pub(crate) use say;

/// Key ids (or any numbers) as `1, 2, 3` for a message.
pub fn join_ids(ids: &[u32]) -> String {
    ids.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Text from the database or a user, made safe to print on a terminal: control characters
/// (C0, DEL, C1) and bidirectional-override characters are shown as `\u{…}` escapes, so a
/// stored value cannot move the cursor, recolour the screen or reorder what is printed
/// around it. Printable text passes through unchanged and unallocated.
pub fn shown(text: &str) -> std::borrow::Cow<'_, str> {
    fn unsafe_char(c: char) -> bool {
        c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    }
    if !text.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if unsafe_char(c) {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::shown;

    #[test]
    fn escapes_terminal_control_and_bidi_characters() {
        assert_eq!(shown("Ada Lovelace"), "Ada Lovelace");
        assert_eq!(shown("a\u{1b}[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(shown("x\ny\u{7f}\u{9b}"), "x\\u{a}y\\u{7f}\\u{9b}");
        assert_eq!(shown("\u{202e}cod.exe"), "\\u{202e}cod.exe");
    }
}
