//! A document's encoding holds each of its strings once: the encoding's own buffer, nothing
//! beside it. yrs 0.28.1 copied every string block while encoding it (`ItemContent::
//! encode_slice`, see `vendor/yrs/README.md`), so a fresh client's sync step 2 of a document
//! of one 52 MB text block held 104 MB besides the document: the server's peak after a cold
//! load was the document plus twice its encoding.
//!
//! Its own test binary (one test): dhat's allocator counts the whole process.

use yrs::updates::encoder::{Encoder, EncoderV1};
use yrs::{Doc, GetString, ReadTxn, StateVector, Text, Transact};

#[global_allocator]
static ALLOCATOR: dhat::Alloc = dhat::Alloc;

const TEXT: usize = 8 * 1024 * 1024;

#[test]
fn encoding_a_document_does_not_copy_its_strings() {
    let line = "a line of a large pasted document, ünïcödé included\n";
    let half = line.repeat(TEXT / line.len() / 2);
    let whole = half.repeat(2);
    let doc = Doc::new();
    let text = doc.get_or_insert_text("text");
    // Two pastes by one client: yrs merges them into one block, as it does on a cold load.
    for _ in 0..2 {
        let mut txn = doc.transact_mut();
        let end = text.len(&txn);
        text.insert(&mut txn, end, &half);
    }
    let txn = doc.transact();
    // Room for the whole encoding, so that the buffer never grows while it is measured.
    let capacity = whole.len() + 4096;
    let profiler = dhat::Profiler::builder().testing().build();
    let mut encoder = EncoderV1::with_capacity(capacity);
    txn.encode_state_as_update(&StateVector::default(), &mut encoder);
    let peak = dhat::HeapStats::get().max_bytes;
    drop(profiler);
    let encoded = encoder.to_vec();
    assert!(encoded.len() > whole.len() && encoded.len() < capacity);
    assert!(
        peak < capacity + TEXT / 8,
        "encoding a document of {} bytes of text allocated {peak} bytes at its peak, {} \
         besides its {capacity}-byte buffer",
        whole.len(),
        peak.saturating_sub(capacity)
    );
    assert_eq!(text.get_string(&txn), whole);
}
