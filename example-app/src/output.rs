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
