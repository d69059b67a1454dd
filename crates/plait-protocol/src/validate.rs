//! Pre-scans that make untrusted bytes safe to hand to yrs.
//!
//! yrs decodes what it is given with few checks: a declared count is trusted for allocation, and
//! nested `Any` values and embedded JSON are decoded recursively. Measured on yrs 0.28.1, a 5-byte
//! state vector allocated about 1 GB and a 14 KB update nested 7,000 levels deep overflowed the
//! stack. These scans walk the same layout iteratively, check every count against the bytes that
//! remain, and bound nesting, so that a message that passes is safe to decode. They mirror the
//! layout Yjs writes (`yjs/src/utils/UpdateEncoder.js`, v1), not yrs's internal quirks.

use crate::lib0::Reader;
use crate::Error;

/// Yjs client ids are JavaScript safe integers (below 2^53); yrs asserts it and, in release
/// builds, silently corrupts larger ones. Refuse them up front.
const MAX_CLIENT_ID: u64 = (1 << 53) - 1;

fn client(r: &mut Reader<'_>) -> Result<u64, Error> {
    let id = r.read_var()?;
    if id > MAX_CLIENT_ID {
        return Err(Error::IntegerOverflow("client id"));
    }
    Ok(id)
}

/// Checks an encoded state vector: `n` then `n` pairs of (client id, clock).
///
/// # Errors
/// Any [`Error`] describing the first problem found; trailing bytes are an error.
pub fn state_vector(bytes: &[u8]) -> Result<(), Error> {
    let mut r = Reader::new(bytes);
    let n = r.read_count("state vector entry", 2)?;
    for _ in 0..n {
        client(&mut r)?;
        r.read_var_u32("state vector clock")?;
    }
    if r.remaining() != 0 {
        return Err(Error::Malformed("state vector with trailing bytes"));
    }
    Ok(())
}

/// Checks a Yjs v1 update: the struct section, then the delete set.
///
/// `max_depth` bounds the nesting of `Any` values and embedded JSON.
///
/// # Errors
/// Any [`Error`] describing the first problem found.
pub fn update_v1(bytes: &[u8], max_depth: usize) -> Result<(), Error> {
    let mut r = Reader::new(bytes);
    // Every client section has at least three varuints (struct count, client, clock).
    let n_clients = r.read_count("update client", 3)?;
    let mut seen = std::collections::HashSet::new();
    for _ in 0..n_clients {
        // Every struct takes at least two bytes (an info byte and a length or content).
        let n_structs = r.read_count("struct", 2)?;
        // Yjs writes each client's structs once; yrs, given a client twice, builds block
        // lists that its integration then reads after freeing (found by fuzzing under ASan).
        if !seen.insert(client(&mut r)?) {
            return Err(Error::Malformed("update lists a client twice"));
        }
        // Clocks are u32 in yrs, which adds block lengths to them unchecked (a debug-build
        // panic, a silent wrap in release): the blocks of one client must end within u32.
        let mut clock = u64::from(r.read_var_u32("struct clock")?);
        for _ in 0..n_structs {
            clock += block(&mut r, max_depth)?;
            if clock > u64::from(u32::MAX) {
                return Err(Error::IntegerOverflow("struct clock"));
            }
        }
    }
    delete_set(&mut r)?;
    // Yjs ignores trailing bytes after the delete set, and so does yrs: accept them.
    Ok(())
}

fn delete_set(r: &mut Reader<'_>) -> Result<(), Error> {
    let n_clients = r.read_count("delete set client", 2)?;
    let mut seen = std::collections::HashSet::new();
    for _ in 0..n_clients {
        if !seen.insert(client(r)?) {
            return Err(Error::Malformed("delete set lists a client twice"));
        }
        let n_ranges = r.read_count("delete range", 2)?;
        for _ in 0..n_ranges {
            let start = r.read_var_u32("delete range clock")?;
            let len = r.read_var_u32("delete range length")?;
            // yrs computes the range end as `clock + len` in u32 (fuzzing found the overflow).
            if start.checked_add(len).is_none() {
                return Err(Error::IntegerOverflow("delete range"));
            }
        }
    }
    Ok(())
}

const HAS_ORIGIN: u8 = 0x80;
const HAS_RIGHT_ORIGIN: u8 = 0x40;
const HAS_PARENT_SUB: u8 = 0x20;

/// Checks one block and returns an upper bound of its clock length.
fn block(r: &mut Reader<'_>, max_depth: usize) -> Result<u64, Error> {
    let info = r.read_u8()?;
    // Dispatch exactly as yrs does (`decode_block`): GC and Skip are the whole info byte 0 and
    // 10; anything else is an item whose content kind is the low four bits. Yjs writes the
    // content kind in the low five bits, but never above 10, so valid input agrees; the
    // agreement matters for hostile input, whose bytes yrs must read the way they were checked.
    match info {
        // GC and Skip: a non-zero length.
        0 | 10 => {
            let len = r.read_var_u32("block length")?;
            if len == 0 {
                return Err(Error::Malformed("empty block"));
            }
            return Ok(u64::from(len));
        }
        _ if info & 0x10 != 0 || !(1..=9).contains(&(info & 0x0f)) => {
            return Err(Error::UnknownTag {
                what: "content",
                tag: u64::from(info),
            })
        }
        _ => {}
    }
    if info & HAS_ORIGIN != 0 {
        id(r)?;
    }
    if info & HAS_RIGHT_ORIGIN != 0 {
        id(r)?;
    }
    if info & (HAS_ORIGIN | HAS_RIGHT_ORIGIN) == 0 {
        if r.read_var()? == 1 {
            r.read_str("parent name")?;
        } else {
            id(r)?;
        }
        if info & HAS_PARENT_SUB != 0 {
            r.read_str("parent key")?;
        }
    }
    content(r, info & 0x0f, max_depth)
}

fn id(r: &mut Reader<'_>) -> Result<(), Error> {
    client(r)?;
    // yrs takes `clock + 1` of origins in places; keep clear of the edge.
    if r.read_var_u32("id clock")? == u32::MAX {
        return Err(Error::IntegerOverflow("id clock"));
    }
    Ok(())
}

/// Checks one item's content and returns an upper bound of its length in clock units.
fn content(r: &mut Reader<'_>, tag: u8, max_depth: usize) -> Result<u64, Error> {
    let len = match tag {
        // Deleted: a length.
        1 => u64::from(r.read_var_u32("deleted length")?),
        // JSON (legacy; Yjs writes `Any` today): a count of JSON strings. yrs 0.28 reads one
        // string more than the count says (`while remaining >= 0`), so walk it the way yrs
        // will: a scan that disagreed with yrs about where the delete set starts would let
        // unchecked bytes through (fuzzing found a client id past 53 bits that way).
        2 => {
            let n = r.read_count("json content", 1)?;
            for _ in 0..=n {
                json_depth(r.read_str("json content")?, max_depth)?;
            }
            n + 1
        }
        // Binary.
        3 => {
            r.read_buf()?;
            1
        }
        // String: its length counts UTF-16 units, never more than its UTF-8 bytes.
        4 => r.read_str("string content")?.len() as u64,
        // Embed: one JSON string.
        5 => {
            json_depth(r.read_str("embed")?, max_depth)?;
            1
        }
        // Format: a key and a JSON value.
        6 => {
            r.read_str("format key")?;
            json_depth(r.read_str("format value")?, max_depth)?;
            1
        }
        // Type: a type ref, and a name for XML elements.
        7 => {
            match r.read_u8()? {
                3 => {
                    r.read_str("xml element name")?;
                }
                0..=6 | 9 | 15 => {}
                other => {
                    return Err(Error::UnknownTag {
                        what: "type ref",
                        tag: u64::from(other),
                    })
                }
            }
            1
        }
        // Any: a count of `Any` values.
        8 => {
            let n = r.read_count("any content", 1)?;
            for _ in 0..n {
                any(r, max_depth)?;
            }
            n
        }
        // Doc: a guid and an options `Any`.
        9 => {
            r.read_str("subdocument guid")?;
            any(r, max_depth)?;
            1
        }
        _ => unreachable!("content tags are filtered by the caller"),
    };
    Ok(len)
}

/// Walks one lib0 `Any` value without recursion, bounding its depth.
///
/// # Errors
/// Any [`Error`]; [`Error::TooDeep`] past `max_depth`.
pub fn any(r: &mut Reader<'_>, max_depth: usize) -> Result<(), Error> {
    // One frame per open container: (values still to read, whether it is an object). The
    // bottom frame stands for the single top-level value.
    let mut stack: Vec<(u64, bool)> = vec![(1, false)];
    while let Some(top) = stack.last_mut() {
        if top.0 == 0 {
            stack.pop();
            continue;
        }
        top.0 -= 1;
        if top.1 {
            r.read_str("object key")?;
        }
        match r.read_u8()? {
            // undefined, null, false, true
            127 | 126 | 121 | 120 => {}
            // integer (signed varint)
            125 => {
                r.read_var()?;
            }
            // float32
            124 => {
                r.read_exact(4)?;
            }
            // float64, bigint
            123 | 122 => {
                r.read_exact(8)?;
            }
            119 => {
                r.read_str("any string")?;
            }
            116 => {
                r.read_buf()?;
            }
            tag @ (118 | 117) => {
                let is_object = tag == 118;
                // An object entry is at least a key length byte and a tag; an array entry a tag.
                let n = r.read_count("any entries", if is_object { 2 } else { 1 })?;
                if stack.len() > max_depth {
                    return Err(Error::TooDeep(max_depth));
                }
                stack.push((n, is_object));
            }
            other => {
                return Err(Error::UnknownTag {
                    what: "any",
                    tag: u64::from(other),
                })
            }
        }
    }
    Ok(())
}

/// Checks the nesting depth of a JSON text without parsing it (yrs parses embedded JSON
/// recursively). Brackets inside strings do not count.
///
/// # Errors
/// [`Error::TooDeep`] past `max_depth`.
pub fn json_depth(text: &str, max_depth: usize) -> Result<(), Error> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for b in text.bytes() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max_depth {
                    return Err(Error::TooDeep(max_depth));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}
