//! Typed, defaulted reads of the fields of a diffusers JSON config (`config.json`,
//! `scheduler_config.json`); every failure is an `Error::Config` naming file and field.

use crate::domain::Domain;
use crate::error::{Error, Result};
use serde_json::Value;
use std::ops::RangeInclusive;

/// The fields of one config object; `null` reads as absent (diffusers writes `null` for
/// "use the default").
pub struct ConfigFields<'a> {
    file: String,
    obj: &'a serde_json::Map<String, Value>,
}

impl<'a> ConfigFields<'a> {
    /// Wraps the root of a parsed config; anything but an object is an error.
    pub fn new(v: &'a Value, file: &str) -> Result<Self> {
        let obj = v.as_object().ok_or_else(|| Error::Config {
            file: file.into(),
            field: "(root)".into(),
            reason: "expected a JSON object".into(),
        })?;
        Ok(Self {
            file: file.into(),
            obj,
        })
    }

    /// The field names present, in file order.
    pub fn keys(&self) -> impl Iterator<Item = &'a String> {
        self.obj.keys()
    }

    /// An error about field `field`.
    pub fn err(&self, field: &str, reason: impl Into<String>) -> Error {
        Error::Config {
            file: self.file.clone(),
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Whether the field is written at all, `null` included.
    pub fn contains(&self, k: &str) -> bool {
        self.obj.contains_key(k)
    }

    /// The raw value, `None` when absent or `null`.
    pub fn get(&self, k: &str) -> Option<&'a Value> {
        self.obj.get(k).filter(|v| !v.is_null())
    }

    fn read<T>(&self, k: &str, d: T, what: &str, f: impl Fn(&Value) -> Option<T>) -> Result<T> {
        self.get(k).map_or(Ok(d), |v| {
            f(v).ok_or_else(|| self.err(k, format!("expected {what}, got {v}")))
        })
    }

    pub fn usize(&self, k: &str, d: usize) -> Result<usize> {
        self.read(k, d, "a non-negative integer", |v| {
            v.as_u64().map(|x| x as usize)
        })
    }

    pub fn opt_usize(&self, k: &str) -> Result<Option<usize>> {
        self.get(k).map(|_| self.usize(k, 0)).transpose()
    }

    /// A checked integer in `range`: a JSON integer, or a number with no fractional part
    /// (`1000.0`); a fraction, a negative, a string or a value outside `range` is an error
    /// naming the field (never truncated). `d` when absent.
    pub fn int(&self, k: &str, d: usize, range: RangeInclusive<usize>) -> Result<usize> {
        self.get(k)
            .map_or(Ok(d), |v| self.checked_int(k, v, &range))
    }

    /// A list of checked integers, each in `range` (see [`Self::int`]); empty when absent.
    pub fn ints(&self, k: &str, range: RangeInclusive<usize>) -> Result<Vec<usize>> {
        match self.get(k) {
            None => Ok(Vec::new()),
            Some(Value::Array(a)) => a.iter().map(|v| self.checked_int(k, v, &range)).collect(),
            Some(v) => Err(self.err(k, format!("expected a list of integers, got {v}"))),
        }
    }

    fn checked_int(&self, k: &str, v: &Value, range: &RangeInclusive<usize>) -> Result<usize> {
        let whole = v.as_u64().map(Some).or_else(|| {
            let x = v.as_f64().filter(|x| *x >= 0.0 && x.fract() == 0.0)?;
            // 2^64 and above would saturate in the cast: out of range, not truncated.
            Some((x < 18446744073709551616.0).then_some(x as u64))
        });
        let n = whole
            .ok_or_else(|| self.err(k, format!("expected a non-negative integer, got {v}")))?;
        n.and_then(|n| usize::try_from(n).ok())
            .filter(|n| range.contains(n))
            .ok_or_else(|| {
                self.err(
                    k,
                    format!(
                        "{v} is out of range (expected {}..={})",
                        range.start(),
                        range.end()
                    ),
                )
            })
    }

    /// A JSON number (strict: no string spellings) in `dom` ([`crate::domain`]); NaN, ±∞ and
    /// values outside the domain are errors naming the field.
    pub fn f64(&self, k: &str, d: f64, dom: Domain) -> Result<f64> {
        let v = self.read(k, d, "a number", Value::as_f64)?;
        dom.check(v).map_err(|r| self.err(k, r))
    }

    /// A number in `dom` that may also be spelled `"Infinity"`, `"-Infinity"` or `"NaN"`, as
    /// Python's json module writes them into scheduler configs (NaN is never in a domain; ±∞
    /// only where `dom` says so).
    pub fn num(&self, k: &str, d: f64, dom: Domain) -> Result<f64> {
        let v = self.read(k, d, "a number", crate::load::json_f64)?;
        dom.check(v).map_err(|r| self.err(k, r))
    }

    /// Refuses `lo_field > hi_field` (or `>=` when `strict`), naming both fields.
    pub fn ordered(&self, lo_k: &str, lo: f64, hi_k: &str, hi: f64, strict: bool) -> Result<()> {
        crate::domain::ordered(lo_k, lo, hi_k, hi, strict).map_err(|r| self.err(hi_k, r))
    }

    pub fn bool(&self, k: &str, d: bool) -> Result<bool> {
        self.read(k, d, "true/false", Value::as_bool)
    }

    pub fn str(&self, k: &str, d: &str) -> Result<String> {
        self.read(k, d.to_string(), "a string", |v| {
            v.as_str().map(str::to_string)
        })
    }

    pub fn strs(&self, k: &str, d: &[&str]) -> Result<Vec<String>> {
        let d = d.iter().map(|s| s.to_string()).collect();
        self.read(k, d, "a list of strings", |v| {
            v.as_array()?
                .iter()
                .map(|s| s.as_str().map(str::to_string))
                .collect()
        })
    }

    pub fn usizes(&self, k: &str, d: &[usize]) -> Result<Vec<usize>> {
        self.read(k, d.to_vec(), "a list of non-negative integers", |v| {
            v.as_array()?
                .iter()
                .map(|x| x.as_u64().map(|x| x as usize))
                .collect()
        })
    }

    /// Accepts the field only when absent or when `ok` holds for its value.
    pub fn must_be_default(&self, k: &str, ok: impl Fn(&Value) -> bool) -> Result<()> {
        match self.get(k) {
            Some(v) if !ok(v) => Err(self.err(k, format!("value {v} is not supported"))),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ConfigFields;
    use serde_json::json;

    #[test]
    fn checked_integers() {
        let v = json!({
            "whole_float": 1e3, "big_float": 18446744073709551616.0, "max": 18446744073709551615u64,
            "neg_zero": -0.0, "null": null, "list": [0, 2.0, 7],
        });
        let f = ConfigFields::new(&v, "c.json").unwrap();
        assert_eq!(f.int("whole_float", 0, 0..=1000).unwrap(), 1000);
        assert_eq!(f.int("neg_zero", 5, 0..=1).unwrap(), 0);
        assert_eq!(f.int("null", 5, 0..=1).unwrap(), 5, "null reads as absent");
        assert_eq!(f.int("absent", 5, 0..=1).unwrap(), 5);
        assert_eq!(f.ints("list", 0..=7).unwrap(), vec![0, 2, 7]);
        assert!(f.ints("absent", 0..=7).unwrap().is_empty());
        for (k, range) in [
            ("whole_float", 0..=999),
            ("big_float", 0..=usize::MAX),
            ("max", 0..=usize::MAX - 1),
        ] {
            let e = f.int(k, 0, range).unwrap_err().to_string();
            assert!(e.contains("out of range") && e.contains(k), "{e}");
        }
        let e = f.ints("list", 0..=6).unwrap_err().to_string();
        assert!(e.contains("7 is out of range (expected 0..=6)"), "{e}");
    }
}
