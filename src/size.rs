//! Checked size arithmetic: every element count, byte count and offset computed from numbers
//! read from a file, a config or a flag goes through here, so an overflow or an absurd size is an
//! error naming the thing (`Error::Size`) before anything is allocated, never a wrapped value,
//! a slice-index panic or an abort on a huge allocation.

use crate::error::{Error, Result};

/// The most bytes one host buffer built from untrusted sizes may take (16 GiB). Sizes promised by
/// a file header or a config are checked against this before the buffer is allocated; the data
/// itself must also be present (readers bound their reads by the promised size).
pub const MAX_HOST_BYTES: u64 = 16 << 30;

fn overflow(what: &str, expr: String) -> Error {
    Error::Size {
        what: what.to_string(),
        reason: format!("{expr} overflows"),
    }
}

/// The element count of `shape` (the product of its dimensions); an overflow is an error naming
/// `what`.
pub fn elements(what: &str, shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| overflow(what, format!("the element count of shape {shape:?}")))
}

/// `count · elem_bytes`; an overflow is an error naming `what`.
pub fn bytes(what: &str, count: usize, elem_bytes: usize) -> Result<usize> {
    count
        .checked_mul(elem_bytes)
        .ok_or_else(|| overflow(what, format!("{count} elements of {elem_bytes} bytes")))
}

/// `a · b`; an overflow is an error naming `what`.
pub fn mul(what: &str, a: usize, b: usize) -> Result<usize> {
    a.checked_mul(b)
        .ok_or_else(|| overflow(what, format!("{a} × {b}")))
}

/// `a + b`; an overflow is an error naming `what`.
pub fn add(what: &str, a: usize, b: usize) -> Result<usize> {
    a.checked_add(b)
        .ok_or_else(|| overflow(what, format!("{a} + {b}")))
}

/// Checks that a host buffer of `count` elements of `elem_bytes` bytes may be allocated: the
/// byte count must not overflow and must be at most [`MAX_HOST_BYTES`]. Returns `count`.
pub fn host_alloc(what: &str, count: usize, elem_bytes: usize) -> Result<usize> {
    let b = bytes(what, count, elem_bytes)? as u64;
    if b > MAX_HOST_BYTES {
        return Err(Error::Size {
            what: what.to_string(),
            reason: format!(
                "{count} elements ({b} bytes) is more than the {} GiB a host buffer may take",
                MAX_HOST_BYTES >> 30
            ),
        });
    }
    Ok(count)
}

/// The element count of `shape`, checked as [`host_alloc`] of `elem_bytes`-byte elements.
pub fn host_elements(what: &str, shape: &[usize], elem_bytes: usize) -> Result<usize> {
    host_alloc(what, elements(what, shape)?, elem_bytes)
}

/// A count that must be at least 1 (a batch, a number of samples); zero is an error naming
/// `what`.
pub fn positive(what: &str, n: usize) -> Result<usize> {
    if n == 0 {
        return Err(Error::Size {
            what: what.to_string(),
            reason: "must be at least 1, got 0".into(),
        });
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_and_bounds_are_errors_naming_the_thing() {
        assert_eq!(elements("x", &[2, 3, 4]).unwrap(), 24);
        assert_eq!(elements("x", &[]).unwrap(), 1);
        let e = elements("batch `sample`", &[1 << 62, 1, 28, 28])
            .unwrap_err()
            .to_string();
        assert!(e.contains("batch `sample`") && e.contains("overflows"), "{e}");
        assert!(mul("n·h·w", usize::MAX, 2).is_err());
        assert!(add("16 + n·h·w", usize::MAX, 16).is_err());
        assert_eq!(host_alloc("t", 1 << 20, 4).unwrap(), 1 << 20);
        let e = host_alloc("ᾱ table", 1_000_000_000_000, 8)
            .unwrap_err()
            .to_string();
        assert!(e.contains("ᾱ table") && e.contains("GiB"), "{e}");
        assert!(host_elements("t", &[1 << 40, 1 << 40], 1).is_err());
        assert!(positive("--batch", 0).unwrap_err().to_string().contains("--batch"));
        assert_eq!(positive("--batch", 3).unwrap(), 3);
    }
}
