//! Awareness updates: `n` entries of (client id, clock, JSON state); state `null` means removed.

use crate::lib0::{write_str, write_var, Reader};
use crate::Error;

/// Deepest nesting accepted in an awareness state (presence is a few flat objects).
const MAX_STATE_DEPTH: usize = 32;

/// One client's awareness entry as it travels on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwarenessEntry {
    /// The Yjs client id whose presence this is.
    pub client: u64,
    /// Increases with every change the client makes to its own state.
    pub clock: u64,
    /// The state as JSON text, kept opaque; `"null"` announces removal.
    pub state: String,
}

impl AwarenessEntry {
    /// Whether this entry removes the client's state.
    pub fn is_removal(&self) -> bool {
        self.state == "null"
    }
}

/// A decoded awareness update.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AwarenessUpdate {
    /// Entries in wire order.
    pub entries: Vec<AwarenessEntry>,
}

impl AwarenessUpdate {
    /// Decodes and checks an awareness update: at most `max_clients` entries, each state at most
    /// `max_state_bytes` of valid JSON (nesting bounded by serde_json's recursion limit).
    ///
    /// # Errors
    /// Any [`Error`] describing the first problem found.
    pub fn decode(bytes: &[u8], max_clients: usize, max_state_bytes: usize) -> Result<Self, Error> {
        let mut r = Reader::new(bytes);
        // An entry is at least three bytes: client, clock, and an empty string's length.
        let n = r.read_count("awareness entry", 3)?;
        if n > max_clients as u64 {
            return Err(Error::TooManyAwarenessClients {
                count: usize::try_from(n).unwrap_or(usize::MAX),
                limit: max_clients,
            });
        }
        let mut entries = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let client = r.read_var()?;
            let clock = r.read_var()?;
            let state = r.read_str("awareness state")?;
            if state.len() > max_state_bytes {
                return Err(Error::AwarenessStateTooLarge {
                    size: state.len(),
                    limit: max_state_bytes,
                });
            }
            // Depth first: the syntax check does not bound nesting by itself.
            crate::validate::json_depth(state, MAX_STATE_DEPTH)?;
            serde_json::from_str::<serde::de::IgnoredAny>(state)
                .map_err(|_| Error::Malformed("awareness state is not JSON"))?;
            entries.push(AwarenessEntry {
                client,
                clock,
                state: state.to_owned(),
            });
        }
        Ok(Self { entries })
    }

    /// Encodes the update in wire layout (without the message type or outer length).
    pub fn encode(&self) -> Vec<u8> {
        encode_entries(self.entries.iter())
    }
}

/// Encodes entries in awareness update layout.
pub fn encode_entries<'a>(entries: impl ExactSizeIterator<Item = &'a AwarenessEntry>) -> Vec<u8> {
    let mut out = Vec::new();
    write_var(&mut out, entries.len() as u64);
    for e in entries {
        write_var(&mut out, e.client);
        write_var(&mut out, e.clock);
        write_str(&mut out, &e.state);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_example_from_the_protocol_page() {
        // Awareness {"user":{"name":"a"}}, clock 1, client 1234567 (payload after `01 1b`).
        let payload = [
            0x01, 0x87, 0xad, 0x4b, 0x01, 0x15, 0x7b, 0x22, 0x75, 0x73, 0x65, 0x72, 0x22, 0x3a,
            0x7b, 0x22, 0x6e, 0x61, 0x6d, 0x65, 0x22, 0x3a, 0x22, 0x61, 0x22, 0x7d, 0x7d,
        ];
        let u = AwarenessUpdate::decode(&payload, 8, 8192).unwrap();
        assert_eq!(
            u.entries,
            vec![AwarenessEntry {
                client: 1234567,
                clock: 1,
                state: r#"{"user":{"name":"a"}}"#.into()
            }]
        );
        assert_eq!(u.encode(), payload);
    }

    #[test]
    fn removal_is_state_null() {
        let payload = [0x01, 0x87, 0xad, 0x4b, 0x01, 0x04, b'n', b'u', b'l', b'l'];
        let u = AwarenessUpdate::decode(&payload, 8, 8192).unwrap();
        assert!(u.entries[0].is_removal());
    }

    #[test]
    fn limits_are_enforced() {
        let big = AwarenessUpdate {
            entries: vec![AwarenessEntry {
                client: 1,
                clock: 1,
                state: format!("\"{}\"", "x".repeat(100)),
            }],
        }
        .encode();
        assert!(matches!(
            AwarenessUpdate::decode(&big, 8, 64),
            Err(Error::AwarenessStateTooLarge {
                size: 102,
                limit: 64
            })
        ));
        let many = AwarenessUpdate {
            entries: (0..3)
                .map(|c| AwarenessEntry {
                    client: c,
                    clock: 1,
                    state: "{}".into(),
                })
                .collect(),
        }
        .encode();
        assert!(matches!(
            AwarenessUpdate::decode(&many, 2, 64),
            Err(Error::TooManyAwarenessClients { count: 3, limit: 2 })
        ));
        let deep = AwarenessUpdate {
            entries: vec![AwarenessEntry {
                client: 1,
                clock: 1,
                state: "[".repeat(1000) + &"]".repeat(1000),
            }],
        }
        .encode();
        assert!(AwarenessUpdate::decode(&deep, 8, 1 << 20).is_err());
        assert!(AwarenessUpdate::decode(&[0x01, 0x01, 0x01, 0x01, b'{'], 8, 64).is_err());
    }
}
