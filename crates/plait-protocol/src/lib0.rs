//! lib0's primitive encoding: unsigned LEB128 integers, length-prefixed byte arrays and strings.

use crate::Error;

/// A cursor over a borrowed byte slice that never reads past its end.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader positioned at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The offset of the next byte to read.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Reads one byte.
    ///
    /// # Errors
    /// [`Error::UnexpectedEnd`] when no byte remains.
    pub fn read_u8(&mut self) -> Result<u8, Error> {
        let b = *self.buf.get(self.pos).ok_or(Error::UnexpectedEnd)?;
        self.pos += 1;
        Ok(b)
    }

    /// Reads `n` raw bytes.
    ///
    /// # Errors
    /// [`Error::UnexpectedEnd`] when fewer than `n` bytes remain.
    pub fn read_exact(&mut self, n: usize) -> Result<&'a [u8], Error> {
        if n > self.remaining() {
            return Err(Error::UnexpectedEnd);
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    /// Reads an unsigned LEB128 integer of at most 64 bits.
    ///
    /// # Errors
    /// [`Error::UnexpectedEnd`] or [`Error::IntegerOverflow`].
    pub fn read_var(&mut self) -> Result<u64, Error> {
        let mut value: u64 = 0;
        let mut shift = 0u32;
        loop {
            let b = self.read_u8()?;
            let low = u64::from(b & 0x7f);
            if shift == 63 && low > 1 || shift > 63 {
                return Err(Error::IntegerOverflow("varuint"));
            }
            value |= low << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
            shift += 7;
        }
    }

    /// Reads an unsigned integer that must fit in a `u32` (Yjs clocks and lengths).
    ///
    /// # Errors
    /// As [`Reader::read_var`], and [`Error::IntegerOverflow`] naming `what` when it is larger.
    pub fn read_var_u32(&mut self, what: &'static str) -> Result<u32, Error> {
        u32::try_from(self.read_var()?).map_err(|_| Error::IntegerOverflow(what))
    }

    /// Reads a count and checks that `count * min_entry_bytes` bytes can still follow.
    ///
    /// # Errors
    /// [`Error::CountTooLarge`] when the declared count cannot be true.
    pub fn read_count(&mut self, what: &'static str, min_entry_bytes: usize) -> Result<u64, Error> {
        let count = self.read_var()?;
        let remaining = self.remaining();
        let needed = count.saturating_mul(min_entry_bytes as u64);
        if needed > remaining as u64 {
            return Err(Error::CountTooLarge {
                what,
                count,
                remaining,
            });
        }
        Ok(count)
    }

    /// Reads a `varUint8Array`: a length then that many bytes.
    ///
    /// # Errors
    /// [`Error::UnexpectedEnd`] when the length exceeds what remains.
    pub fn read_buf(&mut self) -> Result<&'a [u8], Error> {
        let len = self.read_var()?;
        let len = usize::try_from(len).map_err(|_| Error::UnexpectedEnd)?;
        self.read_exact(len)
    }

    /// Reads a `varString`: a UTF-8 byte length then the bytes.
    ///
    /// # Errors
    /// As [`Reader::read_buf`], and [`Error::InvalidUtf8`] naming `what`.
    pub fn read_str(&mut self, what: &'static str) -> Result<&'a str, Error> {
        let bytes = self.read_buf()?;
        std::str::from_utf8(bytes).map_err(|_| Error::InvalidUtf8(what))
    }
}

/// Appends `value` as an unsigned LEB128 integer.
pub fn write_var(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// `header` then `body`, in `body`'s own buffer: the body moves up by the header's length
/// instead of being copied into a new buffer, so a large message is not held twice while it
/// is framed.
pub fn prefixed(header: &[u8], mut body: Vec<u8>) -> bytes::Bytes {
    let len = body.len();
    // Exact, not amortized: the message keeps the whole buffer. A buffer this large, when it
    // must grow, is remapped by the allocator rather than copied.
    body.reserve_exact(header.len());
    body.resize(len + header.len(), 0);
    body.copy_within(..len, header.len());
    body[..header.len()].copy_from_slice(header);
    body.into()
}

/// Appends a `varUint8Array`.
pub fn write_buf(out: &mut Vec<u8>, bytes: &[u8]) {
    write_var(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Appends a `varString`.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    write_buf(out, s.as_bytes());
}

/// The number of bytes `value` takes as a varuint.
pub fn var_len(value: u64) -> usize {
    let bits = 64 - value.max(1).leading_zeros() as usize;
    bits.div_ceil(7)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varuint_examples_from_the_protocol_page() {
        let mut out = Vec::new();
        write_var(&mut out, 300);
        assert_eq!(out, [0xac, 0x02]);
        assert_eq!(Reader::new(&out).read_var(), Ok(300));
        let mut out = Vec::new();
        write_var(&mut out, 1234567);
        assert_eq!(out, [0x87, 0xad, 0x4b]);
        assert_eq!(var_len(1234567), 3);
        assert_eq!(var_len(0), 1);
    }

    #[test]
    fn varuint_round_trips_at_the_edges() {
        for v in [0, 1, 127, 128, 16383, 16384, u32::MAX as u64, u64::MAX] {
            let mut out = Vec::new();
            write_var(&mut out, v);
            assert_eq!(out.len(), var_len(v));
            assert_eq!(Reader::new(&out).read_var(), Ok(v));
        }
    }

    #[test]
    fn overlong_varuint_is_an_error() {
        let bytes = [0xff; 11];
        assert_eq!(
            Reader::new(&bytes).read_var(),
            Err(Error::IntegerOverflow("varuint"))
        );
        assert_eq!(Reader::new(&[0x80]).read_var(), Err(Error::UnexpectedEnd));
    }

    #[test]
    fn count_larger_than_the_input_is_refused() {
        // 5 bytes that declare 2^32 entries: the allocation bomb of PROTOCOL.md row 2.
        let bytes = [0x80, 0x80, 0x80, 0x80, 0x10];
        let err = Reader::new(&bytes).read_count("clients", 2).unwrap_err();
        assert!(matches!(
            err,
            Error::CountTooLarge {
                count: 4294967296,
                ..
            }
        ));
    }
}
