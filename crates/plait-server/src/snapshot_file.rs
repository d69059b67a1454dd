//! The plait snapshot file: a room's document and its CRDT values in one file. `plait export`
//! writes it (and `GET /api/admin/rooms/{room}/export` answers it) unless asked for
//! `--format yjs`; import and restore read it, or a bare Yjs v1 update.
//!
//! | bytes | what |
//! |---|---|
//! | 8 | magic `89 50 4C 41 49 54 0D 0A` (`\x89PLAIT\r\n`) |
//! | varuint | format version, [`VERSION`] |
//! | varbytes | the document: one Yjs v1 update (what `Y.applyUpdate` loads) |
//! | varbytes | the values section |
//!
//! The values section (also what history snapshots keep in their `values_state` column) is
//! `varuint n`, then `n` × (`varstring name`, `varbytes state`), names strictly ascending (so
//! unique), each state a [`plait_crdt::Value`] encoding (`varuint kind`, then the kind's
//! state). Integers are lib0 varuints, strings UTF-8, as everywhere in the protocol. Nothing
//! may follow the last field.
//!
//! Why this magic: the high first byte keeps the file from passing as text, the CR LF catches
//! newline conversion, and a Yjs v1 update starting with these two bytes would declare 10,249
//! clients, so a bare Yjs update (from `--format yjs` or `Y.encodeStateAsUpdate`) is told apart
//! by its first bytes.
//!
//! Decoding takes untrusted bytes: every length is checked against the input before anything
//! is copied, the document passes the same validation as a client's update, and no input
//! panics.

use plait_crdt::{Value, MAX_NAME_BYTES};
use plait_protocol::lib0::{self, Reader};
use yrs::updates::decoder::Decode;

/// The first bytes of every plait snapshot file.
pub const MAGIC: [u8; 8] = [0x89, b'P', b'L', b'A', b'I', b'T', b'\r', b'\n'];

/// The version this plait writes, and the only one it reads.
pub const VERSION: u64 = 1;

/// Named CRDT values, by name.
pub type NamedValues = Vec<(String, Value)>;

/// Why bytes are not a room file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// The file ends in the middle of a field.
    #[error("truncated plait snapshot file: it ends inside the {0}")]
    Truncated(&'static str),
    /// The version field names a format this plait does not read.
    #[error(
        "plait snapshot file version {0} is not supported (this plait reads version {VERSION})"
    )]
    UnsupportedVersion(u64),
    /// Bytes follow the values section.
    #[error("{0} unexpected bytes after the end of the plait snapshot file")]
    TrailingBytes(usize),
    /// A field holds something the format forbids.
    #[error("corrupt plait snapshot file: {0}")]
    Corrupt(String),
    /// A value's state does not decode.
    #[error("corrupt plait snapshot file: value {name:?} does not decode: {reason}")]
    InvalidValue {
        /// The value's name.
        name: String,
        /// The decoder's complaint.
        reason: String,
    },
    /// The document (inside a plait snapshot file, or the whole of a bare file) is not a valid
    /// Yjs v1 update.
    #[error("not a valid Yjs v1 update: {0}")]
    InvalidUpdate(String),
}

/// Which kind of file: the plait snapshot file, or a bare Yjs v1 update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Magic, version, document and values.
    Plait,
    /// One Yjs v1 update, no values (`Y.applyUpdate` loads it).
    Yjs,
}

impl Format {
    /// `"plait"` or `"yjs"`, as the CLI's `--format` and the API's `?format=` spell them.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Plait => "plait",
            Format::Yjs => "yjs",
        }
    }

    /// The format spelled `name` (see [`Format::as_str`]).
    pub fn from_name(name: &str) -> Option<Format> {
        [Format::Plait, Format::Yjs]
            .into_iter()
            .find(|f| f.as_str() == name)
    }
}

/// A room as a file: its document and its values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotFile {
    /// The document as one Yjs v1 update.
    pub update: Vec<u8>,
    /// The room's CRDT values, by name.
    pub values: NamedValues,
}

impl SnapshotFile {
    /// Encodes the file in `format`: [`Format::Yjs`] is the bare update (the values are left
    /// out).
    pub fn encode(&self, format: Format) -> Vec<u8> {
        if format == Format::Yjs {
            return self.update.clone();
        }
        let values = encode_values(self.values.iter().map(|(n, v)| (n.as_str(), v)));
        let mut out = Vec::with_capacity(MAGIC.len() + self.update.len() + values.len() + 12);
        out.extend_from_slice(&MAGIC);
        lib0::write_var(&mut out, VERSION);
        lib0::write_buf(&mut out, &self.update);
        lib0::write_buf(&mut out, &values);
        out
    }

    /// Reads either kind of file: a plait snapshot file (recognised by [`MAGIC`]), else a bare
    /// Yjs v1 update, which holds no values. The document is validated like a client's update.
    ///
    /// # Errors
    /// A [`FileError`] saying what is wrong: for bytes that start with the magic, where the
    /// plait file is broken; for others, why they are not a Yjs v1 update.
    pub fn read(bytes: &[u8]) -> Result<(SnapshotFile, Format), FileError> {
        if is_snapshot_file(bytes) {
            return Ok((Self::decode(bytes)?, Format::Plait));
        }
        check_update(bytes)?;
        let file = SnapshotFile {
            update: bytes.to_vec(),
            values: Vec::new(),
        };
        Ok((file, Format::Yjs))
    }

    /// Decodes a plait snapshot file (not a bare update: see [`SnapshotFile::read`]).
    ///
    /// # Errors
    /// A [`FileError`] for a missing magic, another version, truncated or trailing bytes, a
    /// document that is not a valid update, or a values section that does not decode.
    pub fn decode(bytes: &[u8]) -> Result<SnapshotFile, FileError> {
        let mut r = Reader::new(bytes);
        let magic = r
            .read_exact(MAGIC.len())
            .map_err(|_| FileError::Truncated("magic"))?;
        if magic != MAGIC {
            return Err(FileError::Corrupt(
                "it does not start with the plait magic bytes".into(),
            ));
        }
        let version = r.read_var().map_err(|e| field_error("version", &e))?;
        if version != VERSION {
            return Err(FileError::UnsupportedVersion(version));
        }
        let update = r.read_buf().map_err(|e| field_error("document", &e))?;
        let values = r
            .read_buf()
            .map_err(|e| field_error("values section", &e))?;
        if r.remaining() > 0 {
            return Err(FileError::TrailingBytes(r.remaining()));
        }
        check_update(update)?;
        Ok(SnapshotFile {
            update: update.to_vec(),
            values: decode_values(values)?,
        })
    }
}

/// Whether `bytes` are meant as a plait snapshot file: they start with [`MAGIC`], or are a
/// non-empty start of it (a file truncated inside the magic).
pub fn is_snapshot_file(bytes: &[u8]) -> bool {
    bytes.starts_with(&MAGIC) || (!bytes.is_empty() && MAGIC.starts_with(bytes))
}

/// Encodes the values section (see the module docs); names are sorted here.
pub fn encode_values<'a>(values: impl IntoIterator<Item = (&'a str, &'a Value)>) -> Vec<u8> {
    let mut sorted: Vec<(&str, &Value)> = values.into_iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    sorted.dedup_by(|a, b| a.0 == b.0);
    let mut out = Vec::new();
    lib0::write_var(&mut out, sorted.len() as u64);
    for (name, value) in sorted {
        lib0::write_str(&mut out, name);
        lib0::write_buf(&mut out, &value.encode());
    }
    out
}

/// Decodes a values section (see the module docs).
///
/// # Errors
/// A [`FileError`] for truncated or trailing bytes, an empty, too long or repeated name,
/// names out of order, or a state that does not decode.
pub fn decode_values(bytes: &[u8]) -> Result<NamedValues, FileError> {
    let mut r = Reader::new(bytes);
    // An entry takes at least four bytes: a name length and one byte, a state length and one.
    let n = r
        .read_count("value", 4)
        .map_err(|e| field_error("values section", &e))?;
    let mut out: NamedValues = Vec::new();
    for _ in 0..n {
        let name = r
            .read_str("value name")
            .map_err(|e| field_error("values section", &e))?;
        if name.is_empty() || name.len() > MAX_NAME_BYTES {
            return Err(FileError::Corrupt(format!(
                "value names must be 1 to {MAX_NAME_BYTES} bytes, got {}",
                name.len()
            )));
        }
        if let Some((last, _)) = out.last() {
            if last.as_str() >= name {
                return Err(FileError::Corrupt(format!(
                    "value names out of order or repeated: {name:?} after {last:?}"
                )));
            }
        }
        let state = r
            .read_buf()
            .map_err(|e| field_error("values section", &e))?;
        let value = Value::decode(state).map_err(|e| FileError::InvalidValue {
            name: name.to_owned(),
            reason: e.to_string(),
        })?;
        out.push((name.to_owned(), value));
    }
    if r.remaining() > 0 {
        return Err(FileError::Corrupt(format!(
            "{} unexpected bytes after the values",
            r.remaining()
        )));
    }
    Ok(out)
}

/// Validates a Yjs v1 update like a client's (bounded pre-scan) and decodes it with yrs.
fn check_update(bytes: &[u8]) -> Result<(), FileError> {
    plait_protocol::validate::update_v1(bytes, plait_protocol::Limits::default().max_depth)
        .map_err(|e| FileError::InvalidUpdate(e.to_string()))?;
    yrs::Update::decode_v1(bytes).map_err(|e| FileError::InvalidUpdate(e.to_string()))?;
    Ok(())
}

/// A lib0 read error in `field`: the end of input is truncation, anything else corruption.
fn field_error(field: &'static str, e: &plait_protocol::Error) -> FileError {
    match e {
        plait_protocol::Error::UnexpectedEnd => FileError::Truncated(field),
        other => FileError::Corrupt(format!("{field}: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use plait_crdt::{GCounter, LwwRegister, PnCounter, ReplicaId, Timestamp};
    use serde_json::json;
    use yrs::{Text, Transact};

    use super::*;

    fn update() -> Vec<u8> {
        let doc = yrs::Doc::with_client_id(1);
        let text = doc.get_or_insert_text("t");
        text.insert(&mut doc.transact_mut(), 0, "hello");
        crate::docs::encode_state(&doc)
    }

    fn values() -> NamedValues {
        let mut pn = PnCounter::new();
        pn.add(ReplicaId(2), -4).unwrap();
        let stamp = Timestamp::new(1_700_000_000_000, 3, ReplicaId(9)).unwrap();
        vec![
            (
                "likes".into(),
                Value::GCounter(GCounter::from_entries([(ReplicaId(1), 5)])),
            ),
            ("score".into(), Value::PnCounter(pn)),
            (
                "title".into(),
                Value::Lww(LwwRegister::new(json!({"text": "Plans"}), stamp)),
            ),
        ]
    }

    fn file() -> SnapshotFile {
        SnapshotFile {
            update: update(),
            values: values(),
        }
    }

    #[test]
    fn round_trips_and_starts_with_the_magic() {
        let bytes = file().encode(Format::Plait);
        assert_eq!(&bytes[..8], b"\x89PLAIT\r\n");
        assert_eq!(bytes[8], 1, "version 1");
        assert_eq!(SnapshotFile::decode(&bytes), Ok(file()));
        assert_eq!(SnapshotFile::read(&bytes), Ok((file(), Format::Plait)));
        // No values, and an empty document, are files too.
        let empty = SnapshotFile {
            update: crate::docs::encode_state(&yrs::Doc::new()),
            values: Vec::new(),
        };
        assert_eq!(
            SnapshotFile::decode(&empty.encode(Format::Plait)),
            Ok(empty)
        );
    }

    #[test]
    fn the_yjs_format_is_the_bare_update_and_reads_back_without_values() {
        let bytes = file().encode(Format::Yjs);
        assert_eq!(bytes, update());
        let (read, format) = SnapshotFile::read(&bytes).unwrap();
        assert_eq!(format, Format::Yjs);
        assert_eq!(read.update, update());
        assert!(read.values.is_empty());
        assert_eq!(Format::from_name("yjs"), Some(Format::Yjs));
        assert_eq!(Format::from_name("plait"), Some(Format::Plait));
        assert_eq!(Format::from_name("json"), None);
    }

    /// Every proper prefix of a file is refused as truncated (or, for a prefix too short to
    /// hold the magic, as not a Yjs update), and nothing panics.
    #[test]
    fn every_truncation_is_refused_with_a_clear_error() {
        let bytes = file().encode(Format::Plait);
        for len in 0..bytes.len() {
            let err = SnapshotFile::decode(&bytes[..len]).unwrap_err();
            assert!(
                matches!(err, FileError::Truncated(_)),
                "prefix of {len} bytes: {err}"
            );
            assert!(err.to_string().starts_with("truncated plait snapshot file"));
            if len > 0 {
                assert_eq!(SnapshotFile::read(&bytes[..len]), Err(err), "{len}");
            }
        }
        assert_eq!(
            SnapshotFile::decode(&bytes[..20]),
            Err(FileError::Truncated("document"))
        );
    }

    #[test]
    fn garbage_other_versions_and_trailing_bytes_are_refused() {
        let err = SnapshotFile::read(b"\xff\xff\xff").unwrap_err();
        assert!(matches!(err, FileError::InvalidUpdate(_)), "{err}");
        let err = SnapshotFile::decode(b"not a plait file at all").unwrap_err();
        assert!(err.to_string().contains("plait magic"), "{err}");

        let mut v2 = MAGIC.to_vec();
        v2.push(2);
        assert_eq!(
            SnapshotFile::read(&v2),
            Err(FileError::UnsupportedVersion(2))
        );

        let mut trailing = file().encode(Format::Plait);
        trailing.extend_from_slice(b"xx");
        assert_eq!(
            SnapshotFile::decode(&trailing),
            Err(FileError::TrailingBytes(2))
        );

        // A document that is not an update, inside a well-formed file.
        let mut bad_doc = MAGIC.to_vec();
        lib0::write_var(&mut bad_doc, VERSION);
        lib0::write_buf(&mut bad_doc, b"\xff\xff\xff");
        lib0::write_buf(&mut bad_doc, &[0]);
        assert!(matches!(
            SnapshotFile::decode(&bad_doc),
            Err(FileError::InvalidUpdate(_))
        ));

        // A length that claims more than the file holds allocates nothing and is truncation.
        let mut bomb = MAGIC.to_vec();
        lib0::write_var(&mut bomb, VERSION);
        bomb.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert_eq!(
            SnapshotFile::decode(&bomb),
            Err(FileError::Truncated("document"))
        );
    }

    #[test]
    fn a_corrupt_values_section_is_refused() {
        let section = |entries: &[(&str, &[u8])]| {
            let mut out = Vec::new();
            lib0::write_var(&mut out, entries.len() as u64);
            for (name, state) in entries {
                lib0::write_str(&mut out, name);
                lib0::write_buf(&mut out, state);
            }
            out
        };
        let good = Value::GCounter(GCounter::new()).encode();
        assert!(decode_values(&section(&[("a", &good), ("b", &good)])).is_ok());
        for (entries, needle) in [
            (vec![("b", &good[..]), ("a", &good[..])], "out of order"),
            (vec![("a", &good[..]), ("a", &good[..])], "repeated"),
            (vec![("", &good[..])], "1 to 128 bytes"),
            (vec![("a", &[7u8][..])], "does not decode"),
        ] {
            let err = decode_values(&section(&entries)).unwrap_err();
            assert!(err.to_string().contains(needle), "{needle}: {err}");
        }
        // A count larger than the bytes could hold.
        assert!(matches!(decode_values(&[0x7f]), Err(FileError::Corrupt(_))));
        let mut extra = section(&[("a", &good)]);
        extra.push(0);
        assert!(decode_values(&extra).is_err());
        // The encoder sorts and writes what the decoder reads.
        let v = values();
        let reversed: Vec<(&str, &Value)> = v.iter().rev().map(|(n, v)| (n.as_str(), v)).collect();
        assert_eq!(decode_values(&encode_values(reversed)), Ok(values()));
    }
}
