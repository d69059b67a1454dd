//! lib0-style variable-length integers and strings, and a bounded reader for hostile input.
//!
//! - `varuint`: 7 bits per byte, least significant group first, high bit set on every byte
//!   but the last (lib0 `writeVarUint`). At most 10 bytes for a `u64`.
//! - `varint`: the first byte holds a continuation bit (0x80), a sign bit (0x40) and the 6
//!   lowest bits of the magnitude; following bytes are `varuint` groups (lib0 `writeVarInt`).
//! - `varstring` / `varbytes`: a `varuint` byte length, then the bytes (UTF-8 for strings).
//!
//! Decoding is strict so that `encode(decode(bytes)) == bytes` for every accepted input:
//! integers must use the shortest form, `-0` is refused, and trailing bytes are an error.
//!
//! **Architecture Invariant:** the reader never allocates more than the bytes it was given.
//! Every declared length is checked against the remaining input before anything is copied,
//! and no code path here can panic, whatever the input.

use thiserror::Error;

/// Why a byte string could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended in the middle of a value.
    #[error("unexpected end of input")]
    UnexpectedEnd,
    /// A variable-length integer does not fit in 64 bits (or, for a signed one, in an `i64`).
    #[error("variable-length integer overflows 64 bits")]
    IntegerOverflow,
    /// A variable-length integer was not written in its shortest form, or was a negative zero.
    #[error("non-canonical variable-length integer")]
    NonCanonical,
    /// A length prefix declares more bytes than the input still holds.
    #[error("declared length {declared} exceeds the {remaining} remaining bytes")]
    LengthExceedsInput {
        /// The length the input declared.
        declared: u64,
        /// The bytes that were left.
        remaining: usize,
    },
    /// A count of entries declares more entries than the remaining bytes could hold.
    #[error("declared count {declared} exceeds what the {remaining} remaining bytes can hold")]
    CountExceedsInput {
        /// The count the input declared.
        declared: u64,
        /// The bytes that were left.
        remaining: usize,
    },
    /// A string or JSON text is longer than its limit.
    #[error("{what} of {len} bytes exceeds the limit of {max}")]
    TooLong {
        /// What was too long (`"name"`, `"json value"`).
        what: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// A value name was empty.
    #[error("empty value name")]
    EmptyName,
    /// A string was not valid UTF-8.
    #[error("string is not valid utf-8")]
    InvalidUtf8,
    /// A register held text that is not JSON (or nests deeper than serde_json's limit of 128).
    #[error("register value is not valid json: {0}")]
    InvalidJson(String),
    /// A value kind tag is not one this version knows.
    #[error("unknown value kind {0}")]
    UnknownKind(u64),
    /// A message type is not one this version knows, or travels in the wrong direction.
    #[error("unknown message type {0}")]
    UnknownMessage(u64),
    /// A counter's replica ids are not strictly ascending.
    #[error("counter replicas are not strictly ascending")]
    UnsortedReplicas,
    /// A counter holds an explicit zero entry (absent entries are the only zero).
    #[error("counter entry for replica {0} is zero")]
    ZeroEntry(u64),
    /// Bytes remain after a complete value or message.
    #[error("{0} trailing bytes after the end of the value")]
    TrailingBytes(usize),
}

/// Appends `n` as a lib0 `varuint`.
pub(crate) fn write_var_u64(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Appends `n` as a lib0 `varint`.
pub(crate) fn write_var_i64(out: &mut Vec<u8>, n: i64) {
    let mut magnitude = n.unsigned_abs();
    let mut first = (magnitude & 0x3f) as u8;
    if n < 0 {
        first |= 0x40;
    }
    magnitude >>= 6;
    if magnitude > 0 {
        first |= 0x80;
    }
    out.push(first);
    if magnitude > 0 {
        write_var_u64(out, magnitude);
    }
}

/// Appends a `varuint` length and the bytes.
pub(crate) fn write_var_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    write_var_u64(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Appends a `varuint` byte length and the UTF-8 bytes of `s`.
pub(crate) fn write_var_string(out: &mut Vec<u8>, s: &str) {
    write_var_bytes(out, s.as_bytes());
}

/// A cursor over untrusted bytes; every read is bounds-checked.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    /// The bytes not read yet.
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    /// Succeeds only if every byte was consumed.
    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        match self.rest.len() {
            0 => Ok(()),
            n => Err(DecodeError::TrailingBytes(n)),
        }
    }

    pub(crate) fn read_u8(&mut self) -> Result<u8, DecodeError> {
        let (&first, rest) = self.rest.split_first().ok_or(DecodeError::UnexpectedEnd)?;
        self.rest = rest;
        Ok(first)
    }

    pub(crate) fn read_exact(&mut self, len: usize) -> Result<&'a [u8], DecodeError> {
        if len > self.rest.len() {
            return Err(DecodeError::UnexpectedEnd);
        }
        let (head, rest) = self.rest.split_at(len);
        self.rest = rest;
        Ok(head)
    }

    /// Reads the 7-bit groups after a first group of `first_bits` bits already holding `acc`.
    fn read_groups(&mut self, mut acc: u64, mut shift: u32) -> Result<u64, DecodeError> {
        loop {
            let byte = self.read_u8()?;
            let group = u64::from(byte & 0x7f);
            if shift >= 64 || (shift > 0 && group > (u64::MAX >> shift)) {
                return Err(DecodeError::IntegerOverflow);
            }
            acc |= group << shift;
            shift += 7;
            if byte & 0x80 == 0 {
                // A final group of zero means a shorter encoding existed.
                if group == 0 {
                    return Err(DecodeError::NonCanonical);
                }
                return Ok(acc);
            }
        }
    }

    pub(crate) fn read_var_u64(&mut self) -> Result<u64, DecodeError> {
        let first = self.read_u8()?;
        if first & 0x80 == 0 {
            return Ok(u64::from(first));
        }
        self.read_groups(u64::from(first & 0x7f), 7)
    }

    pub(crate) fn read_var_i64(&mut self) -> Result<i64, DecodeError> {
        let first = self.read_u8()?;
        let negative = first & 0x40 != 0;
        let low = u64::from(first & 0x3f);
        let magnitude = if first & 0x80 == 0 {
            low
        } else {
            self.read_groups(low, 6)?
        };
        if negative {
            if magnitude == 0 {
                return Err(DecodeError::NonCanonical);
            }
            0i64.checked_sub_unsigned(magnitude)
                .ok_or(DecodeError::IntegerOverflow)
        } else {
            i64::try_from(magnitude).map_err(|_| DecodeError::IntegerOverflow)
        }
    }

    /// Reads a `varuint` length and that many bytes, refusing lengths beyond `max`.
    pub(crate) fn read_var_bytes(
        &mut self,
        what: &'static str,
        max: usize,
    ) -> Result<&'a [u8], DecodeError> {
        let declared = self.read_var_u64()?;
        if declared > self.rest.len() as u64 {
            return Err(DecodeError::LengthExceedsInput {
                declared,
                remaining: self.rest.len(),
            });
        }
        // Fits in usize: it is at most `self.rest.len()`.
        let len = declared as usize;
        if len > max {
            return Err(DecodeError::TooLong { what, len, max });
        }
        self.read_exact(len)
    }

    pub(crate) fn read_var_string(
        &mut self,
        what: &'static str,
        max: usize,
    ) -> Result<&'a str, DecodeError> {
        let bytes = self.read_var_bytes(what, max)?;
        std::str::from_utf8(bytes).map_err(|_| DecodeError::InvalidUtf8)
    }

    /// Reads a `varuint` count of entries of at least `min_entry_bytes` each, refusing a count
    /// the remaining input could not hold (so callers may reserve capacity for it).
    pub(crate) fn read_count(&mut self, min_entry_bytes: usize) -> Result<usize, DecodeError> {
        let declared = self.read_var_u64()?;
        let remaining = self.rest.len();
        let fits = declared
            .checked_mul(min_entry_bytes as u64)
            .is_some_and(|need| need <= remaining as u64);
        if !fits {
            return Err(DecodeError::CountExceedsInput {
                declared,
                remaining,
            });
        }
        Ok(declared as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(n: u64) -> Vec<u8> {
        let mut out = Vec::new();
        write_var_u64(&mut out, n);
        out
    }

    fn i(n: i64) -> Vec<u8> {
        let mut out = Vec::new();
        write_var_i64(&mut out, n);
        out
    }

    #[test]
    fn varuint_matches_lib0() {
        assert_eq!(u(0), [0]);
        assert_eq!(u(127), [0x7f]);
        assert_eq!(u(128), [0x80, 0x01]);
        assert_eq!(u(300), [0xac, 0x02]);
        assert_eq!(u(u64::MAX).len(), 10);
    }

    #[test]
    fn varint_matches_lib0() {
        assert_eq!(i(0), [0]);
        assert_eq!(i(1), [1]);
        assert_eq!(i(-1), [0x41]);
        assert_eq!(i(63), [0x3f]);
        assert_eq!(i(64), [0x80, 0x01]);
        assert_eq!(i(-64), [0xc0, 0x01]);
    }

    #[test]
    fn integers_round_trip_at_the_edges() {
        for n in [0, 1, 127, 128, u64::from(u32::MAX), u64::MAX - 1, u64::MAX] {
            assert_eq!(Reader::new(&u(n)).read_var_u64(), Ok(n));
        }
        for n in [0, 1, -1, 63, -63, 64, -64, i64::MAX, i64::MIN, i64::MIN + 1] {
            assert_eq!(Reader::new(&i(n)).read_var_i64(), Ok(n), "{n}");
        }
    }

    #[test]
    fn refuses_overlong_overflowing_and_negative_zero() {
        assert_eq!(
            Reader::new(&[0x80, 0x00]).read_var_u64(),
            Err(DecodeError::NonCanonical)
        );
        let mut too_big = vec![0xff; 10];
        too_big.push(0x01);
        assert_eq!(
            Reader::new(&too_big).read_var_u64(),
            Err(DecodeError::IntegerOverflow)
        );
        let mut eleven = vec![0xff; 9];
        eleven.push(0x02);
        assert_eq!(
            Reader::new(&eleven).read_var_u64(),
            Err(DecodeError::IntegerOverflow)
        );
        assert_eq!(
            Reader::new(&[0x40]).read_var_i64(),
            Err(DecodeError::NonCanonical)
        );
        // Magnitude 2^63 is i64::MIN when negative, and too large when positive.
        let mut big = vec![0x80];
        write_var_u64(&mut big, 1 << 57);
        assert_eq!(
            Reader::new(&big).read_var_i64(),
            Err(DecodeError::IntegerOverflow)
        );
    }

    #[test]
    fn a_five_byte_length_bomb_allocates_nothing() {
        // Declares a 4 GiB string in five bytes.
        let bomb = [0xff, 0xff, 0xff, 0xff, 0x0f];
        assert!(matches!(
            Reader::new(&bomb).read_var_bytes("name", 128),
            Err(DecodeError::LengthExceedsInput { .. })
        ));
        assert!(matches!(
            Reader::new(&bomb).read_count(2),
            Err(DecodeError::CountExceedsInput { .. })
        ));
    }
}
