//! Property tests: the CRDT laws, the HLC rules, and the encodings.

use plait_crdt::{
    Action, ClientMessage, GCounter, Hlc, LwwRegister, ManualClock, Op, PnCounter, ReplicaId,
    ServerMessage, Timestamp, Update, Value, MAX_NAME_BYTES,
};
use proptest::prelude::*;
use serde_json::Value as Json;

const T0: u64 = 1_700_000_000_000;

// === strategies ===

fn replica() -> impl Strategy<Value = ReplicaId> {
    prop_oneof![4 => 0u64..4, 1 => any::<u64>()].prop_map(ReplicaId)
}

fn gcounter() -> impl Strategy<Value = GCounter> {
    prop::collection::vec((replica(), prop_oneof![0u64..10, any::<u64>()]), 0..6)
        .prop_map(GCounter::from_entries)
}

fn pncounter() -> impl Strategy<Value = PnCounter> {
    (gcounter(), gcounter()).prop_map(|(p, n)| PnCounter::from_parts(p, n))
}

/// Timestamps crowded into a few milliseconds, so that ties on physical and logical are common.
fn timestamp() -> impl Strategy<Value = Timestamp> {
    (T0..T0 + 3, 0u16..3, 0u64..3).prop_map(|(p, l, r)| Timestamp::new(p, l, ReplicaId(r)).unwrap())
}

fn json() -> impl Strategy<Value = Json> {
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::from),
        any::<i64>().prop_map(Json::from),
        any::<u64>().prop_map(Json::from),
        "\\PC{0,8}".prop_map(Json::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Json::Array),
            prop::collection::btree_map("\\PC{0,4}", inner, 0..4)
                .prop_map(|m| Json::Object(m.into_iter().collect())),
        ]
    })
}

fn lww() -> impl Strategy<Value = LwwRegister> {
    (json(), timestamp()).prop_map(|(v, t)| LwwRegister::new(v, t))
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        gcounter().prop_map(Value::GCounter),
        pncounter().prop_map(Value::PnCounter),
        lww().prop_map(Value::Lww),
    ]
}

/// Three values of one kind, so that merges cannot fail on a kind mismatch.
fn same_kind_triple() -> impl Strategy<Value = (Value, Value, Value)> {
    prop_oneof![
        (gcounter(), gcounter(), gcounter()).prop_map(|(a, b, c)| (
            Value::GCounter(a),
            Value::GCounter(b),
            Value::GCounter(c)
        )),
        (pncounter(), pncounter(), pncounter()).prop_map(|(a, b, c)| (
            Value::PnCounter(a),
            Value::PnCounter(b),
            Value::PnCounter(c)
        )),
        (lww(), lww(), lww()).prop_map(|(a, b, c)| (Value::Lww(a), Value::Lww(b), Value::Lww(c))),
    ]
}

fn name() -> impl Strategy<Value = String> {
    "\\PC{1,12}".prop_filter("name length", |n| n.len() <= MAX_NAME_BYTES)
}

fn op() -> impl Strategy<Value = Op> {
    let action = prop_oneof![
        any::<u64>().prop_map(Action::Increment),
        any::<i64>().prop_map(Action::Add),
        json().prop_map(Action::Set),
    ];
    (name(), action).prop_map(|(name, action)| Op { name, action })
}

fn server_message() -> impl Strategy<Value = ServerMessage> {
    prop_oneof![
        (name(), value()).prop_map(|(name, value)| ServerMessage::State(Update { name, value })),
        ("\\PC{0,12}", "\\PC{0,40}")
            .prop_map(|(name, reason)| ServerMessage::Rejected { name, reason }),
    ]
}

fn merged(a: &Value, b: &Value) -> Value {
    let mut out = a.clone();
    out.merge(b).unwrap();
    out
}

// === laws ===

proptest! {
    #[test]
    fn merge_is_commutative((a, b, _) in same_kind_triple()) {
        prop_assert_eq!(merged(&a, &b), merged(&b, &a));
    }

    #[test]
    fn merge_is_associative((a, b, c) in same_kind_triple()) {
        prop_assert_eq!(merged(&merged(&a, &b), &c), merged(&a, &merged(&b, &c)));
    }

    #[test]
    fn merge_is_idempotent((a, b, _) in same_kind_triple()) {
        prop_assert_eq!(merged(&a, &a), a.clone());
        let ab = merged(&a, &b);
        prop_assert_eq!(merged(&ab, &b), ab);
    }

    #[test]
    fn merge_of_different_kinds_fails_and_changes_nothing(a in value(), b in value()) {
        let mut m = a.clone();
        let result = m.merge(&b);
        prop_assert_eq!(result.is_ok(), a.kind() == b.kind());
        if result.is_err() {
            prop_assert_eq!(m, a);
        }
    }

    /// Ten replicas increment concurrently; every merge order ends with exactly the sum.
    #[test]
    fn ten_replicas_in_any_order_sum_exactly(
        deltas in prop::collection::vec(prop::collection::vec(0u64..1 << 32, 0..8), 10),
        seeds in prop::collection::vec(any::<u64>(), 3),
    ) {
        let mut states = Vec::new();
        let mut total = 0u64;
        for (i, ds) in deltas.iter().enumerate() {
            let mut local = GCounter::new();
            for &d in ds {
                states.push(local.increment(ReplicaId(i as u64), d).unwrap());
                total += d;
            }
            states.push(local);
        }
        let mut results = Vec::new();
        for seed in seeds {
            let mut order = states.clone();
            shuffle(&mut order, seed);
            let mut acc = GCounter::new();
            for s in &order {
                acc.merge(s);
            }
            results.push(acc);
        }
        for r in &results {
            prop_assert_eq!(r.value(), Ok(total));
            prop_assert_eq!(r, &results[0]);
        }
    }

    /// The HLC is monotonic, never behind physical time, and every receive is greater than both
    /// the previous local timestamp and the remote one; a refusal changes nothing.
    #[test]
    fn hlc_rules(events in prop::collection::vec(
        (-1000i64..1000, prop::option::of((-2000i64..2000, 0u16..5, 0u64..4))),
        1..40,
    )) {
        let clock = ManualClock::new(T0);
        let mut hlc = Hlc::new(ReplicaId(9), clock.clone());
        let mut previous = hlc.last();
        for (skew, remote) in events {
            let physical = T0.saturating_add_signed(skew);
            clock.set(physical);
            let result = match remote {
                None => hlc.now(),
                Some((offset, logical, replica)) => {
                    let remote = Timestamp::new(
                        T0.saturating_add_signed(offset), logical, ReplicaId(replica)).unwrap();
                    let result = hlc.observe(remote);
                    let too_far = remote.physical_ms() > physical + 500;
                    prop_assert_eq!(result.is_err(), too_far);
                    if let Ok(ts) = result {
                        prop_assert!(ts > remote);
                    }
                    result
                }
            };
            match result {
                Ok(ts) => {
                    prop_assert!(ts > previous);
                    prop_assert!(ts.physical_ms() >= physical);
                    prop_assert_eq!(ts, hlc.last());
                    previous = ts;
                }
                Err(_) => prop_assert_eq!(hlc.last(), previous),
            }
        }
    }

    // === encodings ===

    #[test]
    fn timestamps_round_trip_and_order_like_their_fields(a in timestamp(), b in timestamp()) {
        prop_assert_eq!(Timestamp::decode(&a.encode()), Ok(a));
        let key = |t: &Timestamp| (t.physical_ms(), t.logical(), t.replica());
        prop_assert_eq!(a.cmp(&b), key(&a).cmp(&key(&b)));
    }

    #[test]
    fn values_round_trip(v in value()) {
        prop_assert_eq!(Value::decode(&v.encode()), Ok(v.clone()));
        match &v {
            Value::GCounter(c) => prop_assert_eq!(GCounter::decode(&c.encode()), Ok(c.clone())),
            Value::PnCounter(c) => prop_assert_eq!(PnCounter::decode(&c.encode()), Ok(c.clone())),
            Value::Lww(r) => prop_assert_eq!(LwwRegister::decode(&r.encode()), Ok(r.clone())),
        }
    }

    #[test]
    fn messages_round_trip(op in op(), server in server_message()) {
        let client = ClientMessage::Op(op);
        prop_assert_eq!(ClientMessage::decode(&client.encode()), Ok(client));
        prop_assert_eq!(ServerMessage::decode(&server.encode()), Ok(server));
    }

    /// Decoding arbitrary bytes never panics; what decodes re-encodes stably, and byte for byte
    /// where no JSON text (whose whitespace is free) is involved.
    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        if let Ok(t) = Timestamp::decode(&bytes) {
            prop_assert_eq!(t.encode(), bytes.clone());
        }
        if let Ok(c) = GCounter::decode(&bytes) {
            prop_assert_eq!(c.encode(), bytes.clone());
        }
        if let Ok(c) = PnCounter::decode(&bytes) {
            prop_assert_eq!(c.encode(), bytes.clone());
        }
        if let Ok(r) = LwwRegister::decode(&bytes) {
            prop_assert_eq!(LwwRegister::decode(&r.encode()), Ok(r));
        }
        if let Ok(v) = Value::decode(&bytes) {
            prop_assert_eq!(Value::decode(&v.encode()), Ok(v));
        }
        if let Ok(m) = ClientMessage::decode(&bytes) {
            prop_assert_eq!(ClientMessage::decode(&m.encode()), Ok(m));
        }
        if let Ok(m) = ServerMessage::decode(&bytes) {
            prop_assert_eq!(ServerMessage::decode(&m.encode()), Ok(m));
        }
    }

    /// Mutated valid messages (more likely to get deep into the decoders) never panic either.
    #[test]
    fn decoding_mutated_messages_never_panics(
        server in server_message(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = server.encode();
        for (i, b) in flips {
            let i = i.index(bytes.len());
            bytes[i] = b;
        }
        let _ = ServerMessage::decode(&bytes);
        let _ = ServerMessage::decode(&bytes[..cut.index(bytes.len() + 1)]);
        let _ = ClientMessage::decode(&bytes);
    }
}

/// A deterministic Fisher-Yates shuffle (splitmix64), so failures reproduce from the seed.
fn shuffle<T>(items: &mut [T], mut seed: u64) {
    for i in (1..items.len()).rev() {
        seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        items.swap(i, (z % (i as u64 + 1)) as usize);
    }
}
