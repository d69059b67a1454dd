//! Whole-document operations shared by the room actor and the admin CLI: rebuild a document
//! from storage, show it as JSON, and compute the forward edit that restores another version.
//!
//! The server never knows the types of a document's roots (clients decide them with
//! `getText`, `getMap`, ...), so they are inferred from content the way yrs's `as_prelim` does.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};

use plait_store::StoredRoom;
use yrs::types::ToJson;
use yrs::updates::decoder::Decode;
use yrs::{
    Array, ArrayRef, Doc, GetString, In, Map, MapRef, Out, ReadTxn, Text, TextRef, Transact,
    Update, WriteTxn,
};

/// What a root holds, as far as the server can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootKind {
    /// `Y.Text` (or `Y.XmlText`).
    Text,
    /// `Y.Map`.
    Map,
    /// `Y.Array`, or `Y.XmlFragment` (a list of XML nodes).
    List,
}

/// Why a whole-document operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DocError {
    /// The bytes are not a valid Yjs v1 update.
    #[error("not a valid Yjs update: {0}")]
    InvalidUpdate(String),
}

/// A document holding `bytes` (a Yjs v1 update), validated like network input first.
///
/// # Errors
/// [`DocError::InvalidUpdate`] if the bytes fail validation, decoding or application.
pub fn doc_from_update(bytes: &[u8]) -> Result<Doc, DocError> {
    let doc = Doc::new();
    apply(&doc, bytes)?;
    Ok(doc)
}

/// Applies a validated update to `doc`.
///
/// # Errors
/// [`DocError::InvalidUpdate`].
pub fn apply(doc: &Doc, bytes: &[u8]) -> Result<(), DocError> {
    plait_protocol::validate::update_v1(bytes, plait_protocol::Limits::default().max_depth)
        .map_err(|e| DocError::InvalidUpdate(e.to_string()))?;
    let update = Update::decode_v1(bytes).map_err(|e| DocError::InvalidUpdate(e.to_string()))?;
    catch_unwind(AssertUnwindSafe(|| doc.transact_mut().apply_update(update)))
        .map_err(|_| DocError::InvalidUpdate("yrs panicked while applying it".into()))?
        .map_err(|e| DocError::InvalidUpdate(e.to_string()))
}

/// One Yjs v1 update holding everything `updates` hold (Yjs's `mergeUpdates`): what a room
/// stores and relays once for a batch of edits instead of once per edit. Every item and
/// deletion of every update is kept, even those another update of the batch also holds, so a
/// client that confirms its edits by their echo (the y-websocket master provider) finds all of
/// its own in the merged update. `None` if yrs cannot merge them (they are then sent one by
/// one) or if it panics; the updates were validated and applied already, so neither is
/// expected.
pub fn merge_updates(updates: &[bytes::Bytes]) -> Option<bytes::Bytes> {
    let merged = catch_unwind(AssertUnwindSafe(|| {
        yrs::merge_updates_v1(updates.iter().map(|u| u.as_ref()))
    }));
    match merged {
        Ok(Ok(merged)) => Some(bytes::Bytes::from(merged)),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, n = updates.len(), "merging updates failed; sending them one by one");
            None
        }
        Err(_) => {
            tracing::warn!(
                n = updates.len(),
                "merging updates panicked; sending them one by one"
            );
            None
        }
    }
}

/// The document a stored room holds: its snapshot, then its log. Rows that do not apply are
/// skipped and counted in the second value.
pub fn doc_from_stored(stored: &StoredRoom) -> (Doc, usize) {
    let doc = Doc::new();
    let mut skipped = 0;
    let snapshot = stored.snapshot.iter().map(|s| &s.data);
    for data in snapshot.chain(stored.updates.iter().map(|u| &u.data)) {
        if apply(&doc, data).is_err() {
            skipped += 1;
        }
    }
    (doc, skipped)
}

/// The whole document as one Yjs v1 update (what `Y.applyUpdate` loads).
pub fn encode_state(doc: &Doc) -> Vec<u8> {
    doc.transact()
        .encode_state_as_update_v1(&yrs::StateVector::default())
}

fn kind_of<T: ReadTxn>(out: &Out, txn: &T) -> RootKind {
    match out {
        Out::YText(_) | Out::YXmlText(_) => RootKind::Text,
        Out::YMap(_) => RootKind::Map,
        Out::YArray(_) | Out::YXmlFragment(_) | Out::YXmlElement(_) => RootKind::List,
        Out::UndefinedRef(_) => match yrs::types::AsPrelim::as_prelim(out, txn) {
            In::Text(_) | In::XmlText(_) => RootKind::Text,
            In::Array(_) | In::XmlFragment(_) | In::XmlElement(_) => RootKind::List,
            _ => RootKind::Map,
        },
        _ => RootKind::Map,
    }
}

/// The roots of a document with their inferred kinds.
pub fn roots(doc: &Doc) -> BTreeMap<String, RootKind> {
    let txn = doc.transact();
    txn.root_refs()
        .map(|(name, out)| (name.to_owned(), kind_of(&out, &txn)))
        .collect()
}

fn any_to_json(any: &yrs::Any) -> serde_json::Value {
    let mut s = String::new();
    any.to_json(&mut s);
    serde_json::from_str(&s).unwrap_or(serde_json::Value::Null)
}

/// The document as JSON: one member per root, text as a string, maps as objects, lists as
/// arrays (XML nodes as their XML text).
pub fn to_json(doc: &Doc) -> serde_json::Value {
    to_json_as(doc, TextAs::String)
}

/// How [`to_json_as`] renders a text root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextAs {
    /// Its characters, formatting dropped.
    String,
    /// Its Yjs delta: `[{"insert": "...", "attributes": {...}}, ...]`, formatting kept.
    Delta,
}

/// As [`to_json`], with text rendered as `text_as` says.
pub fn to_json_as(doc: &Doc, text_as: TextAs) -> serde_json::Value {
    let kinds = roots(doc);
    let mut out = serde_json::Map::new();
    for (name, kind) in kinds {
        let mut txn = doc.transact_mut();
        let value = match kind {
            RootKind::Text if text_as == TextAs::Delta => {
                let text = txn.get_or_insert_text(name.as_str());
                let delta = text.diff(&txn, |_| ());
                serde_json::Value::Array(
                    delta
                        .into_iter()
                        .map(|chunk| {
                            let mut op = serde_json::Map::new();
                            let insert = match chunk.insert {
                                Out::Any(yrs::Any::String(s)) => {
                                    serde_json::Value::String(s.to_string())
                                }
                                other => any_to_json(&other.to_json(&txn)),
                            };
                            op.insert("insert".into(), insert);
                            if let Some(attrs) = chunk.attributes {
                                let attrs: serde_json::Map<String, serde_json::Value> = attrs
                                    .iter()
                                    .map(|(k, v)| (k.to_string(), any_to_json(v)))
                                    .collect();
                                op.insert("attributes".into(), serde_json::Value::Object(attrs));
                            }
                            serde_json::Value::Object(op)
                        })
                        .collect(),
                )
            }
            RootKind::Text => {
                serde_json::Value::String(txn.get_or_insert_text(name.as_str()).get_string(&txn))
            }
            RootKind::Map => any_to_json(&txn.get_or_insert_map(name.as_str()).to_json(&txn)),
            RootKind::List => any_to_json(&txn.get_or_insert_array(name.as_str()).to_json(&txn)),
        };
        out.insert(name, value);
    }
    serde_json::Value::Object(out)
}

/// The edit that turns `current` into `target`'s content, applied to `current` as a new
/// transaction; returns it as a v1 update (`None` when nothing differs).
///
/// Restoring this way, rather than resetting storage, makes connected clients converge to the
/// restored content: they merge a new edit instead of re-sending what a reset would forget.
/// Text is changed by its differing middle only (so concurrent offline edits elsewhere in the
/// text survive the merge); map keys are set or removed one by one; lists are replaced whole.
/// Text formatting attributes are not restored.
pub fn restore_edit(current: &Doc, target: &Doc) -> Option<Vec<u8>> {
    let target_kinds = roots(target);
    let mut all = roots(current);
    all.extend(target_kinds.iter().map(|(k, v)| (k.clone(), *v)));
    // Type the target's roots once, so their contents can be read.
    let target_refs: BTreeMap<String, Out> = {
        let mut t = target.transact_mut();
        target_kinds
            .iter()
            .map(|(name, kind)| {
                let out = match kind {
                    RootKind::Text => Out::YText(t.get_or_insert_text(name.as_str())),
                    RootKind::Map => Out::YMap(t.get_or_insert_map(name.as_str())),
                    RootKind::List => Out::YArray(t.get_or_insert_array(name.as_str())),
                };
                (name.clone(), out)
            })
            .collect()
    };
    let ttxn = target.transact();
    let mut txn = current.transact_mut();
    for (name, kind) in all {
        let from = target_refs.get(&name);
        match kind {
            RootKind::Text => {
                let cur: TextRef = txn.get_or_insert_text(name.as_str());
                let old = cur.get_string(&txn);
                let new = match from {
                    Some(Out::YText(t)) => t.get_string(&ttxn),
                    _ => String::new(),
                };
                let (start, old_end, new_end) = middle(&old, &new);
                if old_end > start {
                    cur.remove_range(&mut txn, start as u32, (old_end - start) as u32);
                }
                if new_end > start {
                    cur.insert(&mut txn, start as u32, &new[start..new_end]);
                }
            }
            RootKind::Map => {
                let cur: MapRef = txn.get_or_insert_map(name.as_str());
                let wanted: Vec<(String, Out)> = match from {
                    Some(Out::YMap(m)) => m.iter(&ttxn).map(|(k, v)| (k.to_owned(), v)).collect(),
                    _ => Vec::new(),
                };
                let stale: Vec<String> = cur
                    .keys(&txn)
                    .filter(|k| !wanted.iter().any(|(w, _)| w == k))
                    .map(str::to_owned)
                    .collect();
                for k in stale {
                    cur.remove(&mut txn, &k);
                }
                for (k, v) in wanted {
                    let same = cur
                        .get(&txn, &k)
                        .is_some_and(|c| c.to_json(&txn) == v.to_json(&ttxn));
                    if !same {
                        cur.insert(&mut txn, k, yrs::types::AsPrelim::as_prelim(&v, &ttxn));
                    }
                }
            }
            RootKind::List => {
                let cur: ArrayRef = txn.get_or_insert_array(name.as_str());
                let wanted: Vec<Out> = match from {
                    Some(Out::YArray(a)) => a.iter(&ttxn).collect(),
                    _ => Vec::new(),
                };
                let same = cur.len(&txn) as usize == wanted.len()
                    && cur
                        .iter(&txn)
                        .zip(&wanted)
                        .all(|(c, w)| c.to_json(&txn) == w.to_json(&ttxn));
                if !same {
                    let len = cur.len(&txn);
                    if len > 0 {
                        cur.remove_range(&mut txn, 0, len);
                    }
                    for (i, v) in wanted.iter().enumerate() {
                        cur.insert(
                            &mut txn,
                            i as u32,
                            yrs::types::AsPrelim::as_prelim(v, &ttxn),
                        );
                    }
                }
            }
        }
    }
    let update = txn.encode_update_v1();
    (update.len() > 2).then_some(update)
}

/// Byte offsets of the differing middle of two strings, at character boundaries:
/// `(start, old_end, new_end)`.
fn middle(old: &str, new: &str) -> (usize, usize, usize) {
    let mut start = 0;
    for (a, b) in old.chars().zip(new.chars()) {
        if a != b {
            break;
        }
        start += a.len_utf8();
    }
    let (mut old_end, mut new_end) = (old.len(), new.len());
    for (a, b) in old[start..].chars().rev().zip(new[start..].chars().rev()) {
        if a != b {
            break;
        }
        old_end -= a.len_utf8();
        new_end -= b.len_utf8();
    }
    (start, old_end, new_end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc_with(f: impl FnOnce(&mut yrs::TransactionMut)) -> Doc {
        let doc = Doc::new();
        f(&mut doc.transact_mut());
        doc
    }

    /// The server sees documents only as bytes: roots come back untyped.
    fn via_bytes(doc: &Doc) -> Doc {
        doc_from_update(&encode_state(doc)).unwrap()
    }

    #[test]
    fn middle_finds_the_changed_part() {
        assert_eq!(middle("hello world", "hello there world"), (6, 6, 12));
        assert_eq!(middle("abc", "abc"), (3, 3, 3));
        assert_eq!(middle("héllo", "hallo"), (1, 3, 2));
    }

    #[test]
    fn json_of_untyped_roots() {
        let doc = doc_with(|t| {
            t.get_or_insert_text("t").insert(t, 0, "hi");
            t.get_or_insert_map("m").insert(t, "k", 1.5);
            t.get_or_insert_array("a").insert(t, 0, "x");
        });
        let json = to_json(&via_bytes(&doc));
        assert_eq!(
            json,
            serde_json::json!({"t": "hi", "m": {"k": 1.5}, "a": ["x"]})
        );
    }

    #[test]
    fn restore_turns_current_into_target_and_clients_converge() {
        let client = doc_with(|t| {
            t.get_or_insert_text("t").insert(t, 0, "version one");
            t.get_or_insert_map("m").insert(t, "title", "v1");
        });
        let v1 = encode_state(&client);
        {
            let mut t = client.transact_mut();
            let text = t.get_or_insert_text("t");
            text.remove_range(&mut t, 8, 3);
            text.insert(&mut t, 8, "two, much longer");
            t.get_or_insert_map("m").insert(&mut t, "title", "v2");
            t.get_or_insert_map("m").insert(&mut t, "extra", true);
            t.get_or_insert_array("a").insert(&mut t, 0, 1.0);
        }
        let server = via_bytes(&client);
        let target = doc_from_update(&v1).unwrap();
        let edit = restore_edit(&server, &target).expect("something to restore");
        assert_eq!(
            to_json(&server),
            to_json(&target)
                .as_object()
                .map(|o| {
                    let mut o = o.clone();
                    o.insert("a".into(), serde_json::json!([]));
                    serde_json::Value::Object(o)
                })
                .unwrap()
        );
        // A client still holding the newer state merges the edit and shows the old content.
        apply(&client, &edit).unwrap();
        let text = client.get_or_insert_text("t");
        assert_eq!(text.get_string(&client.transact()), "version one");
        // Restoring again changes nothing.
        assert!(restore_edit(&server, &target).is_none());
    }
}
