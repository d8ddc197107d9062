//! Numeric domains: the one check every number entering the engine passes — config fields
//! ([`crate::load::ConfigFields::num_in`]), CLI flags and library arguments. A domain is an
//! interval with open or closed ends; NaN is never in a domain, and ±∞ only where the domain
//! says so (`lambda_min = -inf` disables a clip). The check returns the reason as text; the
//! caller wraps it in the error that names the field or flag.

use std::fmt;

/// An interval of accepted values (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Domain {
    lo: f64,
    hi: f64,
    lo_open: bool,
    hi_open: bool,
    neg_inf: bool,
    pos_inf: bool,
}

impl Domain {
    /// Any finite number.
    pub const FINITE: Domain = Domain::new(f64::MIN, f64::MAX, false, false);
    /// x > 0, finite.
    pub const POSITIVE: Domain = Domain::new(0.0, f64::MAX, true, false);
    /// x ≥ 0, finite.
    pub const NON_NEGATIVE: Domain = Domain::new(0.0, f64::MAX, false, false);
    /// 0 ≤ x ≤ 1.
    pub const UNIT: Domain = Domain::new(0.0, 1.0, false, false);
    /// 0 < x < 1.
    pub const OPEN_UNIT: Domain = Domain::new(0.0, 1.0, true, true);

    const fn new(lo: f64, hi: f64, lo_open: bool, hi_open: bool) -> Domain {
        Domain {
            lo,
            hi,
            lo_open,
            hi_open,
            neg_inf: false,
            pos_inf: false,
        }
    }

    /// [lo, hi].
    pub const fn closed(lo: f64, hi: f64) -> Domain {
        Domain::new(lo, hi, false, false)
    }

    /// (lo, hi].
    pub const fn open_closed(lo: f64, hi: f64) -> Domain {
        Domain::new(lo, hi, true, false)
    }

    /// [lo, hi).
    pub const fn closed_open(lo: f64, hi: f64) -> Domain {
        Domain::new(lo, hi, false, true)
    }

    /// The same domain, also accepting −∞ (e.g. `lambda_min = -inf` disables a clip).
    pub const fn or_minus_inf(mut self) -> Domain {
        self.neg_inf = true;
        self
    }

    /// The same domain, also accepting +∞ (e.g. EDM's `s_tmax`).
    pub const fn or_plus_inf(mut self) -> Domain {
        self.pos_inf = true;
        self
    }

    /// `v` when it lies in the domain, else the reason (naming the value and the domain).
    pub fn check(&self, v: f64) -> Result<f64, String> {
        if v.is_nan() {
            return Err(format!("NaN is not a number; expected {self}"));
        }
        if v.is_infinite() {
            return if (v < 0.0 && self.neg_inf) || (v > 0.0 && self.pos_inf) {
                Ok(v)
            } else {
                Err(format!("{v} is not finite; expected {self}"))
            };
        }
        let above = if self.lo_open {
            v > self.lo
        } else {
            v >= self.lo
        };
        let below = if self.hi_open {
            v < self.hi
        } else {
            v <= self.hi
        };
        if above && below {
            Ok(v)
        } else {
            Err(format!("{v} is out of range; expected {self}"))
        }
    }

    /// [`Domain::check`] for an f32 flag or field.
    pub fn check_f32(&self, v: f32) -> Result<f32, String> {
        self.check(v as f64).map(|_| v)
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inf = match (self.neg_inf, self.pos_inf) {
            (true, true) => " or ±inf",
            (true, false) => " or -inf",
            (false, true) => " or +inf",
            _ => "",
        };
        match (self.lo == f64::MIN, self.hi == f64::MAX) {
            (true, true) => write!(f, "a finite number{inf}"),
            (false, true) => write!(
                f,
                "a finite number {} {}{inf}",
                if self.lo_open { ">" } else { "≥" },
                self.lo
            ),
            (true, false) => write!(
                f,
                "a finite number {} {}{inf}",
                if self.hi_open { "<" } else { "≤" },
                self.hi
            ),
            (false, false) => write!(
                f,
                "a number in {}{}, {}{}{inf}",
                if self.lo_open { "(" } else { "[" },
                self.lo,
                self.hi,
                if self.hi_open { ")" } else { "]" }
            ),
        }
    }
}

/// `lo_name < hi_name` (strict when `strict`), else the reason naming both.
pub fn ordered(lo_name: &str, lo: f64, hi_name: &str, hi: f64, strict: bool) -> Result<(), String> {
    let ok = if strict { lo < hi } else { lo <= hi };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{lo_name} = {lo} must be {} {hi_name} = {hi}",
            if strict { "below" } else { "at most" }
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::{ordered, Domain};

    #[test]
    fn domains() {
        assert!(Domain::FINITE.check(f64::NAN).unwrap_err().contains("NaN"));
        assert!(Domain::FINITE.check(f64::INFINITY).is_err());
        assert_eq!(Domain::FINITE.check(-3.0), Ok(-3.0));
        assert!(Domain::POSITIVE.check(0.0).is_err());
        assert_eq!(Domain::NON_NEGATIVE.check(0.0), Ok(0.0));
        let e = Domain::OPEN_UNIT.check(1.0).unwrap_err();
        assert!(e.contains("(0, 1)"), "{e}");
        assert!(Domain::UNIT.check(1.5).is_err());
        let lm = Domain::FINITE.or_minus_inf();
        assert_eq!(lm.check(f64::NEG_INFINITY), Ok(f64::NEG_INFINITY));
        assert!(lm.check(f64::INFINITY).is_err());
        assert!(lm.check(f64::NAN).is_err());
        assert!(Domain::closed(0.0, 1.0).check_f32(f32::INFINITY).is_err());
        assert!(ordered("beta_start", 0.02, "beta_end", 0.01, true)
            .unwrap_err()
            .contains("beta_start = 0.02 must be below beta_end = 0.01"));
        assert!(ordered("a", 1.0, "b", 1.0, false).is_ok());
    }
}
