//! Validated numbers. Every numeric field a user gives (experiment YAML, traces, profiles, plan
//! files, Hugging Face configs, command-line numbers) passes through one `Bound`, defaults
//! included, so each is finite, inside a range that keeps the simulator's arithmetic exact (no
//! overflow to infinity, no underflow to zero, no u64 wrap), and each refusal names the field, the
//! value, the range and its unit in the same words.

use std::fmt;

use crate::error::InputError;

/// The longest simulated time anything may reach: 10⁹ s (32 years) is 10¹⁸ ns, inside the u64
/// nanosecond clock (1.8·10¹⁹ ns) with room for the steps and transfers after the last arrival.
pub const MAX_SIM_SECONDS: f64 = 1e9;

/// An allowed range of one field, with its unit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bound {
    pub min: f64,
    /// `min` itself is not allowed (a rate of 0, a time of 0).
    pub min_open: bool,
    pub max: f64,
    /// Printed after the range: "requests/s", "µs", "" for a plain number.
    pub unit: &'static str,
}

impl Bound {
    /// `[min, max]`.
    pub const fn closed(min: f64, max: f64, unit: &'static str) -> Bound {
        Bound {
            min,
            min_open: false,
            max,
            unit,
        }
    }

    /// `(min, max]`: for quantities that must be strictly positive.
    pub const fn above(min: f64, max: f64, unit: &'static str) -> Bound {
        Bound {
            min,
            min_open: true,
            max,
            unit,
        }
    }

    pub fn contains(&self, v: f64) -> bool {
        let low_ok = if self.min_open {
            v > self.min
        } else {
            v >= self.min
        };
        v.is_finite() && low_ok && v <= self.max
    }

    /// `v` if it lies in the range, else an error naming `field`.
    pub fn check(&self, field: &str, v: f64) -> Result<f64, InputError> {
        if self.contains(v) {
            Ok(v)
        } else {
            Err(InputError::new(format!(
                "`{field}` = {}: allowed {self}",
                Num(v)
            )))
        }
    }

    /// As `check`, for a whole number (counts, sizes, tokens).
    pub fn check_u64(&self, field: &str, v: u64) -> Result<u64, InputError> {
        if self.contains(v as f64) {
            Ok(v)
        } else {
            Err(InputError::new(format!("`{field}` = {v}: allowed {self}")))
        }
    }
}

impl fmt::Display for Bound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let open = if self.min_open { '(' } else { '[' };
        write!(f, "{open}{}, {}]", Num(self.min), Num(self.max))?;
        if !self.unit.is_empty() {
            write!(f, " {}", self.unit)?;
        }
        Ok(())
    }
}

/// A number as a message shows it: plain where it is short, else in scientific notation, so
/// that 1e300 is not printed as 301 digits.
pub struct Num(pub f64);

impl fmt::Display for Num {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let a = self.0.abs();
        if a == 0.0 || !a.is_finite() || (1e-4..1e9).contains(&a) {
            write!(f, "{}", self.0)
        } else {
            write!(f, "{:e}", self.0)
        }
    }
}

/// The longest excerpt of a user's text (a name, a trace row, a header) a message quotes.
pub const EXCERPT_CHARS: usize = 60;

/// `s` cut to `EXCERPT_CHARS` characters, with the length of what was left out: an error about a
/// 50 MB model name or a binary trace line stays one line.
pub fn excerpt(s: &str) -> String {
    match s.char_indices().nth(EXCERPT_CHARS) {
        None => s.to_string(),
        Some((cut, _)) => format!("{}… ({} bytes in all)", &s[..cut], s.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_field_value_range_and_unit() {
        let rate = Bound::above(0.0, 1e6, "requests/s");
        assert_eq!(rate.check("arrival.rate", 4.0), Ok(4.0));
        let e = rate.check("arrival.rate", 1e300).unwrap_err().to_string();
        assert_eq!(e, "`arrival.rate` = 1e300: allowed (0, 1000000] requests/s");
        assert!(rate.check("r", 0.0).is_err());
        assert!(rate.check("r", f64::NAN).is_err());
        assert!(Bound::closed(0.0, 1.0, "").check("x", 0.0).is_ok());
        assert!(Bound::closed(1.0, 8.0, "").check_u64("n", 9).is_err());
    }

    #[test]
    fn excerpts_are_short() {
        assert_eq!(excerpt("llava"), "llava");
        let long = "x".repeat(50_000_000);
        let e = excerpt(&long);
        assert!(
            e.len() < 100 && e.ends_with("(50000000 bytes in all)"),
            "{e}"
        );
        // Cut on a character boundary, never inside one.
        assert!(excerpt(&"é".repeat(100)).starts_with(&"é".repeat(60)));
    }
}
