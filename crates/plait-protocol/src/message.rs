//! The y-websocket message catalogue: `varUint messageType` then a payload.

use bytes::Bytes;

use crate::awareness::AwarenessUpdate;
use crate::lib0::{var_len, write_str, write_var, Reader};
use crate::{validate, Error};

/// Message type 0: document sync.
pub const MESSAGE_SYNC: u64 = 0;
/// Message type 1: awareness.
pub const MESSAGE_AWARENESS: u64 = 1;
/// Message type 2: auth (server to client: permission denied).
pub const MESSAGE_AUTH: u64 = 2;
/// Message type 3: query awareness.
pub const MESSAGE_QUERY_AWARENESS: u64 = 3;

/// Bounds applied while decoding untrusted frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Deepest nesting of `Any` values and embedded JSON accepted in an update.
    pub max_depth: usize,
    /// Most client entries in one awareness update.
    pub max_awareness_clients: usize,
    /// Largest JSON state of one awareness entry, in bytes.
    pub max_awareness_state_bytes: usize,
    /// Most messages [`Message::decode_all`] reads from one frame. Each costs the server a
    /// reply or a fan-out (a frame of 4 MiB of query-awareness bytes would be four million
    /// answers), so a frame may not hide an unbounded number of them.
    pub max_messages_per_frame: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_depth: 128,
            max_awareness_clients: 16,
            max_awareness_state_bytes: 8 * 1024,
            max_messages_per_frame: 1024,
        }
    }
}

/// The sync sub-protocol. Payloads are slices of the received frame, already validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncMessage {
    /// The sender's state vector; the receiver answers with [`SyncMessage::Step2`].
    Step1(Bytes),
    /// A v1 update holding what the receiver of a step 1 lacks.
    Step2(Bytes),
    /// An incremental v1 update.
    Update(Bytes),
}

impl SyncMessage {
    /// Reads `varUint syncType` then `varUint8Array payload` from `r`, a reader over `frame`,
    /// and validates the payload. Shared by the y-websocket and Hocuspocus framings.
    pub(crate) fn read(frame: &Bytes, r: &mut Reader<'_>, limits: &Limits) -> Result<Self, Error> {
        let sub = r.read_var()?;
        let payload = r.read_buf()?;
        // The payload is the `payload.len()` bytes just before the reader's position.
        let end = r.position();
        let payload_bytes = frame.slice(end - payload.len()..end);
        match sub {
            0 => {
                validate::state_vector(payload)?;
                Ok(SyncMessage::Step1(payload_bytes))
            }
            1 => {
                validate::update_v1(payload, limits.max_depth)?;
                Ok(SyncMessage::Step2(payload_bytes))
            }
            2 => {
                validate::update_v1(payload, limits.max_depth)?;
                Ok(SyncMessage::Update(payload_bytes))
            }
            tag => Err(Error::UnknownTag {
                what: "sync message",
                tag,
            }),
        }
    }

    /// The sync sub-type on the wire: 0, 1 or 2.
    pub(crate) fn sub_type(&self) -> u64 {
        match self {
            SyncMessage::Step1(_) => 0,
            SyncMessage::Step2(_) => 1,
            SyncMessage::Update(_) => 2,
        }
    }

    /// The payload: a state vector for step 1, a v1 update otherwise.
    pub fn payload(&self) -> &Bytes {
        match self {
            SyncMessage::Step1(b) | SyncMessage::Step2(b) | SyncMessage::Update(b) => b,
        }
    }
}

/// One decoded protocol message.
///
/// This mirrors `yrs::sync::Message` but keeps payloads as zero-copy [`Bytes`] and validates
/// them on the way in; yrs's own reader trusts declared lengths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Type 0.
    Sync(SyncMessage),
    /// Type 1, decoded and bounded.
    Awareness(AwarenessUpdate),
    /// Type 2. Clients have no reason to send it; the server ignores it.
    Auth,
    /// Type 3: the receiver answers with every awareness state it knows.
    QueryAwareness,
    /// Any other type: the bytes after the type tag. Extensions live at tags 100..=127.
    Custom {
        /// The message type.
        tag: u64,
        /// Everything after the tag.
        body: Bytes,
    },
}

impl Message {
    /// Decodes the first message of a frame. Bytes after it are ignored, as stable clients
    /// (y-websocket 3 and older) do; a server reading client frames wants
    /// [`Message::decode_all`].
    ///
    /// # Errors
    /// Any [`Error`] from the frame or from the validation of its payload.
    pub fn decode(frame: &Bytes, limits: &Limits) -> Result<Self, Error> {
        decode_at(frame, 0, limits).map(|(message, _)| message)
    }

    /// Every message of a frame, in order. `@y/websocket` 4 reads (and a client may send)
    /// several protocol messages concatenated in one binary frame.
    ///
    /// The iterator yields an error, then ends, when the bytes after a complete message are
    /// not a whole message, when the frame is empty, or past
    /// [`Limits::max_messages_per_frame`]. A message of an unknown type ([`Message::Custom`])
    /// ends the frame: its length is not known, so its body is the rest of the frame (y-protocols
    /// readers also stop at a type they do not know).
    pub fn decode_all<'a>(frame: &'a Bytes, limits: &'a Limits) -> Messages<'a> {
        Messages {
            frame,
            limits,
            position: 0,
            count: 0,
            done: false,
        }
    }
}

/// The messages of one frame, from [`Message::decode_all`]. Decodes lazily: it holds no more
/// than the message it yields.
#[derive(Debug)]
pub struct Messages<'a> {
    frame: &'a Bytes,
    limits: &'a Limits,
    position: usize,
    count: usize,
    done: bool,
}

impl Iterator for Messages<'_> {
    type Item = Result<Message, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || (self.count > 0 && self.position >= self.frame.len()) {
            return None;
        }
        if self.count >= self.limits.max_messages_per_frame {
            self.done = true;
            return Some(Err(Error::TooManyMessages(
                self.limits.max_messages_per_frame,
            )));
        }
        self.count += 1;
        match decode_at(self.frame, self.position, self.limits) {
            Ok((message, end)) => {
                self.position = end;
                Some(Ok(message))
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// Decodes the message starting at `start`; returns it and where it ends.
fn decode_at(frame: &Bytes, start: usize, limits: &Limits) -> Result<(Message, usize), Error> {
    if start > frame.len() {
        return Err(Error::UnexpectedEnd);
    }
    // The frame from `start` on: positions of `r` are offsets into it.
    let rest = frame.slice(start..);
    let mut r = Reader::new(&rest);
    let message = match r.read_var()? {
        MESSAGE_SYNC => Message::Sync(SyncMessage::read(&rest, &mut r, limits)?),
        MESSAGE_AWARENESS => {
            let payload = r.read_buf()?;
            Message::Awareness(AwarenessUpdate::decode(
                payload,
                limits.max_awareness_clients,
                limits.max_awareness_state_bytes,
            )?)
        }
        MESSAGE_AUTH => {
            // y-protocols `readAuthMessage`: an auth type, then a reason for type 0 only.
            // Read so that a message after it can be found; the server ignores both.
            if r.read_var()? == 0 {
                r.read_buf()?;
            }
            Message::Auth
        }
        MESSAGE_QUERY_AWARENESS => Message::QueryAwareness,
        tag => {
            return Ok((
                Message::Custom {
                    tag,
                    body: rest.slice(r.position()..),
                },
                frame.len(),
            ))
        }
    };
    Ok((message, start + r.position()))
}

fn framed(tag: u64, sub: Option<u64>, payload: &[u8]) -> Bytes {
    let mut out = header(tag, sub, payload.len(), payload.len());
    out.extend_from_slice(payload);
    Bytes::from(out)
}

/// `tag`, `sub` and the length prefix of a payload of `len` bytes, with room for `extra` more.
fn header(tag: u64, sub: Option<u64>, len: usize, extra: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + var_len(len as u64) + extra);
    write_var(&mut out, tag);
    if let Some(sub) = sub {
        write_var(&mut out, sub);
    }
    write_var(&mut out, len as u64);
    out
}

/// `[0, 0, sv]`: sync step 1 carrying an encoded state vector.
pub fn encode_sync_step1(state_vector: &[u8]) -> Bytes {
    framed(MESSAGE_SYNC, Some(0), state_vector)
}

/// `[0, 1, update]`: sync step 2 carrying what the peer lacks.
pub fn encode_sync_step2(update: &[u8]) -> Bytes {
    framed(MESSAGE_SYNC, Some(1), update)
}

/// `[0, 1, update]` made from the update's own buffer: its bytes move up by the header's few
/// bytes instead of being copied into a new buffer. A 52 MB document's step 2 took 104 MB
/// while the copy was made.
pub fn encode_sync_step2_owned(update: Vec<u8>) -> Bytes {
    crate::lib0::prefixed(&header(MESSAGE_SYNC, Some(1), update.len(), 0), update)
}

/// `[0, 2, update]`: an incremental update.
pub fn encode_update(update: &[u8]) -> Bytes {
    framed(MESSAGE_SYNC, Some(2), update)
}

/// `[1, update]`: an awareness update (see [`crate::awareness::encode_entries`]).
pub fn encode_awareness(update: &[u8]) -> Bytes {
    framed(MESSAGE_AWARENESS, None, update)
}

/// `[3]`: ask the peer for every awareness state it knows.
pub fn encode_query_awareness() -> Bytes {
    Bytes::from_static(&[MESSAGE_QUERY_AWARENESS as u8])
}

/// `[2, 0, reason]`: permission denied, which stock clients log as a warning.
pub fn encode_permission_denied(reason: &str) -> Bytes {
    let mut out = Vec::with_capacity(3 + reason.len());
    write_var(&mut out, MESSAGE_AUTH);
    write_var(&mut out, 0);
    write_str(&mut out, reason);
    Bytes::from(out)
}

/// `[tag, payload]`: an extension message (tags 100..=127).
pub fn encode_custom(tag: u64, payload: &[u8]) -> Bytes {
    framed(tag, None, payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AwarenessEntry;

    fn decode(bytes: &[u8]) -> Result<Message, Error> {
        Message::decode(&Bytes::copy_from_slice(bytes), &Limits::default())
    }

    // Examples produced by yjs 13.6.33 with client id 1234567 (PROTOCOL.md section 3), e.g.
    // `syncProtocol.writeUpdate(enc, Y.encodeStateAsUpdate(doc))` after `text.insert(0, 'hi')`.
    const STEP1_EMPTY: &[u8] = &[0x00, 0x00, 0x01, 0x00];
    const STEP2_EMPTY: &[u8] = &[0x00, 0x01, 0x02, 0x00, 0x00];
    const STEP1_HI: &[u8] = &[0x00, 0x00, 0x05, 0x01, 0x87, 0xad, 0x4b, 0x02];
    const UPDATE_HI: &[u8] = &[
        0x00, 0x02, 0x0e, 0x01, 0x01, 0x87, 0xad, 0x4b, 0x00, 0x04, 0x01, 0x01, 0x74, 0x02, 0x68,
        0x69, 0x00,
    ];
    const AWARENESS_A: &[u8] = &[
        0x01, 0x1b, 0x01, 0x87, 0xad, 0x4b, 0x01, 0x15, 0x7b, 0x22, 0x75, 0x73, 0x65, 0x72, 0x22,
        0x3a, 0x7b, 0x22, 0x6e, 0x61, 0x6d, 0x65, 0x22, 0x3a, 0x22, 0x61, 0x22, 0x7d, 0x7d,
    ];
    const DENIED_NO: &[u8] = &[0x02, 0x00, 0x02, 0x6e, 0x6f];

    /// The step 2 made in the update's own buffer is the step 2 made by copying, for lengths
    /// on both sides of each length-prefix size, and when the buffer has room for the header
    /// it is the frame's buffer: nothing is copied.
    #[test]
    fn a_step2_made_in_place_matches_the_copy_and_keeps_the_buffer() {
        for len in [0, 1, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152] {
            let update: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let expected = encode_sync_step2(&update);
            assert_eq!(
                encode_sync_step2_owned(update.clone()),
                expected,
                "length {len}"
            );
            let mut roomy = Vec::with_capacity(len + 8);
            roomy.extend_from_slice(&update);
            let at = roomy.as_ptr();
            let frame = encode_sync_step2_owned(roomy);
            assert_eq!(frame, expected, "length {len}");
            assert_eq!(frame.as_ptr(), at, "length {len}: the update was copied");
        }
    }

    #[test]
    fn decodes_and_reencodes_the_js_examples() {
        let Ok(Message::Sync(SyncMessage::Step1(sv))) = decode(STEP1_EMPTY) else {
            panic!("step 1")
        };
        assert_eq!(encode_sync_step1(&sv), STEP1_EMPTY);
        let Ok(Message::Sync(SyncMessage::Step2(u))) = decode(STEP2_EMPTY) else {
            panic!("step 2")
        };
        assert_eq!(encode_sync_step2(&u), STEP2_EMPTY);
        let Ok(Message::Sync(SyncMessage::Step1(sv))) = decode(STEP1_HI) else {
            panic!("step 1 hi")
        };
        assert_eq!(encode_sync_step1(&sv), STEP1_HI);
        let Ok(Message::Sync(SyncMessage::Update(u))) = decode(UPDATE_HI) else {
            panic!("update")
        };
        assert_eq!(encode_update(&u), UPDATE_HI);
        let Ok(Message::Awareness(a)) = decode(AWARENESS_A) else {
            panic!("awareness")
        };
        assert_eq!(
            a.entries,
            vec![AwarenessEntry {
                client: 1234567,
                clock: 1,
                state: r#"{"user":{"name":"a"}}"#.into()
            }]
        );
        assert_eq!(encode_awareness(&a.encode()), AWARENESS_A);
        assert_eq!(decode(&[0x03]), Ok(Message::QueryAwareness));
        assert_eq!(encode_query_awareness(), &[0x03][..]);
        assert_eq!(encode_permission_denied("no"), DENIED_NO);
        assert_eq!(decode(DENIED_NO), Ok(Message::Auth));
    }

    #[test]
    fn yrs_decodes_what_we_pass() {
        use yrs::updates::decoder::Decode;
        let Ok(Message::Sync(SyncMessage::Update(u))) = decode(UPDATE_HI) else {
            panic!("update")
        };
        let update = yrs::Update::decode_v1(&u).unwrap();
        let doc = yrs::Doc::new();
        use yrs::{GetString, Transact};
        let text = doc.get_or_insert_text("t");
        doc.transact_mut().apply_update(update).unwrap();
        assert_eq!(text.get_string(&doc.transact()), "hi");
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        for example in [STEP1_HI, UPDATE_HI, AWARENESS_A, STEP2_EMPTY] {
            for cut in 0..example.len() {
                assert!(
                    decode(&example[..cut]).is_err(),
                    "cut at {cut} of {example:?}"
                );
            }
        }
    }

    fn decode_all(bytes: &[u8]) -> Vec<Result<Message, Error>> {
        Message::decode_all(&Bytes::copy_from_slice(bytes), &Limits::default()).collect()
    }

    /// Issue 14 item 3: `@y/websocket` 4 may concatenate messages in one frame; each is
    /// decoded, in order (a step 1 and an awareness update: the awareness was lost before).
    #[test]
    fn decode_all_reads_every_message_of_a_frame() {
        let frame = [STEP1_HI, AWARENESS_A, &[0x03], DENIED_NO, UPDATE_HI].concat();
        let messages: Vec<Message> = decode_all(&frame).into_iter().map(Result::unwrap).collect();
        assert!(matches!(
            messages[..],
            [
                Message::Sync(SyncMessage::Step1(_)),
                Message::Awareness(_),
                Message::QueryAwareness,
                Message::Auth,
                Message::Sync(SyncMessage::Update(_)),
            ]
        ));
        let Message::Sync(SyncMessage::Update(u)) = &messages[4] else {
            unreachable!()
        };
        assert_eq!(encode_update(u), UPDATE_HI);
        // One message alone is one message.
        assert_eq!(decode_all(STEP1_HI).len(), 1);
    }

    /// Bytes after a whole message that are not a whole message are an error, which ends the
    /// iteration; so is an empty frame.
    #[test]
    fn decode_all_refuses_trailing_junk() {
        let frame = [STEP1_HI, &UPDATE_HI[..UPDATE_HI.len() - 1]].concat();
        let all = decode_all(&frame);
        assert_eq!(all.len(), 2);
        assert!(all[0].is_ok());
        assert_eq!(all[1], Err(Error::UnexpectedEnd));
        let frame = [STEP1_HI, &[0x00, 0x07, 0x00]].concat();
        assert!(matches!(
            decode_all(&frame)[1],
            Err(Error::UnknownTag { tag: 7, .. })
        ));
        assert_eq!(decode_all(&[]), vec![Err(Error::UnexpectedEnd)]);
    }

    /// A message of unknown type takes the rest of the frame (its length is unknown).
    #[test]
    fn decode_all_stops_at_an_unknown_type() {
        let frame = [STEP1_HI, &[0x63, 0x01, 0x02], STEP1_HI].concat();
        let all = decode_all(&frame);
        assert_eq!(all.len(), 2);
        let Ok(Message::Custom { tag: 0x63, body }) = &all[1] else {
            panic!("custom: {all:?}")
        };
        assert_eq!(body.len(), 2 + STEP1_HI.len());
    }

    #[test]
    fn decode_all_bounds_the_messages_of_a_frame() {
        let limits = Limits {
            max_messages_per_frame: 3,
            ..Limits::default()
        };
        let frame = Bytes::from_static(&[0x03; 4]);
        let all: Vec<_> = Message::decode_all(&frame, &limits).collect();
        assert_eq!(all.len(), 4);
        assert_eq!(all[3], Err(Error::TooManyMessages(3)));
        let frame = Bytes::from_static(&[0x03; 3]);
        assert!(Message::decode_all(&frame, &limits).all(|m| m.is_ok()));
    }

    #[test]
    fn custom_tags_keep_their_body() {
        let frame = encode_custom(100, b"xyz");
        let Ok(Message::Custom { tag: 100, body }) = decode(&frame) else {
            panic!("custom")
        };
        assert_eq!(body, &[3, b'x', b'y', b'z'][..]);
    }

    #[test]
    fn allocation_bomb_state_vector_is_refused() {
        // Sync step 1 whose 5-byte state vector declares 2^32 entries.
        let frame = [0x00, 0x00, 0x05, 0x80, 0x80, 0x80, 0x80, 0x10];
        assert!(matches!(decode(&frame), Err(Error::CountTooLarge { .. })));
    }

    /// Fuzzing found it: a state vector naming client 2^53 or more made yrs assert
    /// (`ClientID::new`) in debug builds and corrupt the id in release builds.
    #[test]
    fn client_ids_beyond_53_bits_are_refused() {
        let crash = [
            0x00, 0x00, 0x0a, 0x01, 0xf8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1b, 0x00, 0x00,
        ];
        assert_eq!(decode(&crash), Err(Error::IntegerOverflow("client id")));
        let mut sv = vec![1];
        write_var(&mut sv, (1 << 53) - 1);
        sv.push(0);
        assert!(decode(&encode_sync_step1(&sv)).is_ok());
    }

    /// Fuzzing found it: JSON content, which yrs reads one string further than its count,
    /// hid a bad client id in what yrs took for the delete set.
    #[test]
    fn json_content_is_scanned_as_yrs_reads_it() {
        let crash = [
            0x00, 0x01, 0x21, 0x01, 0x01, 0x01, 0x11, 0x02, 0xcf, 0xba, 0xba, 0xba, 0x9c, 0xba,
            0xba, 0xba, 0x27, 0x00, 0x00, 0x00, 0x00, 0x02, 0xcf, 0xba, 0xba, 0xba, 0x9c, 0xba,
            0xba, 0xba, 0x27, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x23, 0x23, 0x23, 0x23, 0x23,
            0x23, 0x0a, 0xba, 0x9c, 0xba, 0xba, 0xba, 0xba, 0x00, 0x00, 0x23, 0x23, 0x23, 0x23,
            0x23, 0x23, 0x0a, 0xba, 0x9c, 0xba, 0xba, 0xba, 0xba, 0x00, 0xf6, 0x00, 0x00, 0x00,
            0x0a, 0x00, 0x05, 0x00, 0x3a,
        ];
        let frame = Bytes::copy_from_slice(&crash);
        if let Ok(Message::Sync(SyncMessage::Step2(u))) =
            Message::decode(&frame, &Limits::default())
        {
            use yrs::updates::decoder::Decode;
            // Whatever passes must decode in yrs without tripping its assertions.
            let _ = yrs::Update::decode_v1(&u);
        }
    }

    /// Fuzzing found it: a delete range whose end passes u32::MAX overflowed in yrs.
    #[test]
    fn clock_ranges_past_u32_are_refused() {
        let mut update = vec![0, 1, 7, 1];
        write_var(&mut update, u64::from(u32::MAX) - 1);
        update.push(5);
        assert_eq!(
            decode(&encode_update(&update)),
            Err(Error::IntegerOverflow("delete range"))
        );
        // A GC block ending past u32::MAX.
        let mut update = vec![1, 1, 7];
        write_var(&mut update, u64::from(u32::MAX) - 1);
        update.push(0);
        update.push(5);
        update.push(0);
        assert_eq!(
            decode(&encode_update(&update)),
            Err(Error::IntegerOverflow("struct clock"))
        );
    }

    /// Fuzzing found it: info byte 0xc0 is content 0 (GC) to a five-bit reading but an item
    /// with two origins to yrs, which then read an unchecked client id.
    #[test]
    fn block_kinds_are_read_as_yrs_reads_them() {
        let crash = [
            0x00, 0x01, 0x96, 0x00, 0x01, 0x01, 0x05, 0x0b, 0xc0, 0xff, 0x00, 0x00, 0xff, 0x91,
            0x81, 0x81, 0x81, 0x81, 0x81, 0x3a, 0x81, 0x81, 0xff, 0x00, 0x08, 0x14,
        ];
        assert!(decode(&crash).is_err());
    }

    /// Fuzzing under AddressSanitizer found it: an update listing one client twice led yrs to
    /// a use-after-free while integrating.
    #[test]
    fn a_client_listed_twice_is_refused() {
        let crash = [
            0x00, 0x01, 0x27, 0x06, 0x00, 0x5d, 0x68, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x01,
            0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x11, 0x01, 0x01, 0x01, 0x01, 0x03, 0x01, 0x01,
            0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x11, 0x01,
            0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0xbd,
        ];
        assert!(decode(&crash).is_err());
        let twice = [2, 0, 7, 0, 0, 7, 0, 0];
        assert_eq!(
            decode(&encode_update(&twice)),
            Err(Error::Malformed("update lists a client twice"))
        );
    }

    /// Subdocuments (content 9) were refused while yrs leaked every document that integrated
    /// one (issue 14 item 4; fixed in `vendor/yrs`). They pass validation now, and yrs reads
    /// the same item the validator walked: a subdocument with the guid that was written.
    #[test]
    fn subdocument_content_is_accepted() {
        use yrs::updates::decoder::Decode;
        use yrs::{Map, Out, Transact};
        // One item in root map "m" under key "k" whose content is a subdocument (content 9)
        // with guid "guid" and empty options (an `Any` object with no entries: 118, 0).
        let mut update = vec![1, 1, 7, 0, 9 | 0x20, 1];
        write_str(&mut update, "m");
        write_str(&mut update, "k");
        write_str(&mut update, "guid");
        update.extend_from_slice(&[118, 0, 0]);
        let Ok(Message::Sync(SyncMessage::Update(u))) = decode(&encode_update(&update)) else {
            panic!("a subdocument update is refused");
        };
        let doc = yrs::Doc::new();
        let map = doc.get_or_insert_map("m");
        doc.transact_mut()
            .apply_update(yrs::Update::decode_v1(&u).unwrap())
            .unwrap();
        let got = map.get(&doc.transact(), "k");
        match got {
            Some(Out::YDoc(sub)) => assert_eq!(sub.guid().as_ref(), "guid"),
            other => panic!("expected a subdocument, got {other:?}"),
        }
    }

    #[test]
    fn deeply_nested_any_is_refused() {
        // One client, one struct: an item in root map "m" under key "k" whose Any content is
        // an array nested 10,000 levels deep.
        let mut update = vec![1, 1];
        write_var(&mut update, 7); // client
        update.push(0); // clock
        update.push(8 | 0x20); // Any content, with parent sub
        update.push(1); // parent is named
        write_str(&mut update, "m");
        write_str(&mut update, "k");
        update.push(1); // one Any value
        for _ in 0..10_000 {
            update.extend_from_slice(&[117, 1]);
        }
        update.push(126);
        update.push(0); // empty delete set
        let frame = encode_update(&update);
        assert_eq!(decode(&frame), Err(Error::TooDeep(128)));
        // The same shape 100 deep is fine.
        let mut ok = update[..11].to_vec();
        for _ in 0..100 {
            ok.extend_from_slice(&[117, 1]);
        }
        ok.extend_from_slice(&[126, 0]);
        assert!(decode(&encode_update(&ok)).is_ok());
    }

    #[test]
    fn deeply_nested_embedded_json_is_refused() {
        let mut update = vec![1, 1, 7, 0, 5, 1];
        write_str(&mut update, "t");
        let json = "[".repeat(1000) + &"]".repeat(1000);
        write_str(&mut update, &json);
        update.push(0);
        assert_eq!(decode(&encode_update(&update)), Err(Error::TooDeep(128)));
    }
}
