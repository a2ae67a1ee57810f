//! Errors that reach the user, in three kinds the binary's exit code tells apart:
//!
//! - `Input` (exit 2): the user's file, field or value is wrong; the message says which and what
//!   is allowed. A file that does not exist or cannot be opened is input too.
//! - `Output` (exit 1): writing results failed (a read-only or missing directory, a full disk):
//!   not the input's fault; the message names the path and the system's reason.
//! - `Internal` (exit 70, EX_SOFTWARE): an invariant of the simulator broke — a bug, reported with
//!   what was seen. Invariants checked by `assert!` (time never runs backwards, KV blocks within
//!   capacity) panic with their message instead, since no result after them can be trusted.

use std::fmt;

/// Something the user gave us is wrong: the message names the file, the field, the value and
/// what is allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    message: String,
}

impl InputError {
    pub fn new(message: impl Into<String>) -> Self {
        InputError {
            message: shorten(&message.into()),
        }
    }

    /// Prefixes where the problem is (a file, a field path).
    pub fn context(self, at: impl fmt::Display) -> Self {
        InputError {
            message: shorten(&format!("{at}: {}", self.message)),
        }
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

/// The longest run of non-space characters a message keeps: longer than any path or name a
/// person writes, far shorter than a value pasted by mistake (parser errors quote the value,
/// sometimes twice).
const LONGEST_RUN: usize = 200;

/// `message` with every run of non-space characters past `LONGEST_RUN` cut to it and `…`.
fn shorten(message: &str) -> String {
    let mut out = String::with_capacity(message.len().min(4 * LONGEST_RUN));
    let mut run = 0;
    for c in message.chars() {
        run = if c.is_whitespace() { 0 } else { run + 1 };
        if run <= LONGEST_RUN {
            out.push(c);
        } else if run == LONGEST_RUN + 1 {
            out.push('…');
        }
    }
    out
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for InputError {}

#[derive(Debug)]
pub enum Error {
    Input(InputError),
    /// Writing results failed (disk full, permissions): not the input's fault.
    Output(String),
    /// A bug: the simulator reached a state its invariants rule out.
    Internal(String),
}

impl Error {
    /// The process exit code for this kind of error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Input(_) => 2,
            Error::Output(_) => 1,
            Error::Internal(_) => 70,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Input(e) => write!(f, "{e}"),
            Error::Output(e) => write!(f, "cannot write results: {e}"),
            Error::Internal(e) => write!(f, "internal error (a bug in hetsim): {e}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<InputError> for Error {
    fn from(e: InputError) -> Self {
        Error::Input(e)
    }
}

/// Builds "unknown X `name`" with the nearest known names, so a typo is one glance to fix.
pub fn unknown_name<'a>(
    what: &str,
    name: &str,
    known: impl IntoIterator<Item = &'a str>,
) -> InputError {
    let known: Vec<&str> = known.into_iter().collect();
    let shown = crate::bounds::excerpt(name);
    // A name far longer than any known one is nothing mistyped (and the edit distance would
    // cost its length times theirs).
    if shown.len() < name.len() {
        return InputError::new(format!(
            "unknown {what} `{shown}`: known: {}",
            known.join(", ")
        ));
    }
    let mut scored: Vec<(usize, &str)> = known
        .iter()
        .map(|k| (distance(&name.to_lowercase(), &k.to_lowercase()), *k))
        .collect();
    scored.sort();
    let near: Vec<&str> = scored
        .iter()
        .take(3)
        .filter(|(d, _)| *d <= name.len().max(3))
        .map(|(_, k)| *k)
        .collect();
    let hint = match near.first() {
        Some(best) => format!("did you mean `{best}`? "),
        None => String::new(),
    };
    InputError::new(format!(
        "unknown {what} `{name}`: {hint}known: {}",
        known.join(", ")
    ))
}

/// Levenshtein distance, ignoring `-`, `_` and spaces (so `A100_SXM` finds `A100-SXM-80GB` near).
fn distance(a: &str, b: &str) -> usize {
    let clean = |s: &str| {
        s.chars()
            .filter(|c| !matches!(c, '-' | '_' | ' ' | '.'))
            .collect::<Vec<_>>()
    };
    let (a, b) = (clean(a), clean(b));
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_are_cut_in_messages() {
        let e = InputError::new(format!("unknown variant `{}`", "x".repeat(100_000)))
            .context("exp.yaml");
        assert!(e.message().len() < 300, "{}", e.message().len());
        assert!(
            e.message().starts_with("exp.yaml: unknown variant `xxx") && e.message().ends_with('…')
        );
        assert_eq!(InputError::new("a short one").message(), "a short one");
    }

    #[test]
    fn suggests_the_nearest_name() {
        let e = unknown_name(
            "GPU",
            "A100-SXM-80G",
            ["H100-SXM", "A100-SXM-80GB", "A100-SXM-40GB"],
        );
        assert!(e.message().contains("did you mean `A100-SXM-80GB`"), "{e}");
        assert_eq!(distance("rtx4090", "RTX-4090".to_lowercase().as_str()), 0);
    }

    #[test]
    fn a_bug_reads_as_a_bug_and_a_failed_write_as_one() {
        let bug = Error::Internal("KV pool not empty at the end".into());
        assert_eq!(bug.exit_code(), 70);
        assert!(
            bug.to_string()
                .starts_with("internal error (a bug in hetsim)")
        );
        let full = Error::Output("out/requests.parquet: No space left on device".into());
        assert_eq!(full.exit_code(), 1);
        assert!(full.to_string().starts_with("cannot write results: out/"));
    }
}
