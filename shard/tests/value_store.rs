//! The value store hook: every stored value passes through it, whatever command stored it.

use std::cell::Cell;
use std::rc::Rc;

use bytes::Bytes;
use veddb_shard::{Config, Shard, StoredEntry};
use veddb_wire::{Request, Response, SetOptions};

#[test]
fn every_stored_value_passes_through_the_value_store() {
    let mut shard = Shard::new(0, Config::default());
    let calls = Rc::new(Cell::new(0));
    let seen = calls.clone();
    // Re-home each value into a fresh allocation (as the shared-memory arena does).
    shard.set_value_store(Some(Box::new(move |value: Bytes| {
        seen.set(seen.get() + 1);
        (Bytes::copy_from_slice(&value), 0)
    })));
    let key = |k: &str| Bytes::copy_from_slice(k.as_bytes());
    shard.handle(
        Request::Set {
            key: key("a"),
            value: key("1"),
            options: SetOptions::default(),
        },
        1,
    );
    shard.handle(
        Request::Incr {
            key: key("a"),
            delta: 2,
        },
        1,
    );
    shard.handle(
        Request::Cas {
            key: key("b"),
            expected_version: 0,
            value: key("x"),
            ttl_ms: None,
        },
        1,
    );
    shard.handle(
        Request::MSet {
            pairs: vec![(key("c"), key("y")), (key("d"), key("z"))],
        },
        1,
    );
    shard
        .restore(
            StoredEntry {
                key: key("e"),
                value: key("restored"),
                version: 99,
                expires_at_ms: 0,
            },
            99,
        )
        .unwrap();
    // EXPIRE changes no value: no call.
    shard.handle(
        Request::Expire {
            key: key("a"),
            ttl_ms: 10_000,
        },
        1,
    );
    assert_eq!(calls.get(), 6);
    for (k, v) in [
        ("a", "3"),
        ("b", "x"),
        ("c", "y"),
        ("d", "z"),
        ("e", "restored"),
    ] {
        match shard.handle(Request::Get { key: key(k) }, 2) {
            Response::Value { value, .. } => assert_eq!(value, key(v)),
            other => panic!("{k}: {other:?}"),
        }
    }
    shard.set_value_store(None);
    shard.handle(
        Request::Set {
            key: key("f"),
            value: key("plain"),
            options: SetOptions::default(),
        },
        1,
    );
    assert_eq!(calls.get(), 6);
}

/// The value store's tag comes back with every read of the value it tagged, and a rewrite of
/// the key (whatever command, short key or long) carries the new value's tag; without a value
/// store the tag is 0.
#[test]
fn reads_get_the_tag_of_the_value_stored() {
    let mut shard = Shard::new(0, Config::default());
    let next = Rc::new(Cell::new(100u64));
    let tags = next.clone();
    shard.set_value_store(Some(Box::new(move |value: Bytes| {
        tags.set(tags.get() + 1);
        (value, tags.get())
    })));
    let tag_of = |shard: &mut Shard, key: &[u8]| {
        shard
            .get_with(key, 1, |value, _, tag| (value.clone(), tag))
            .unwrap()
    };
    let short = Bytes::from_static(b"short");
    let long = Bytes::from(vec![b'k'; 40]);
    for key in [&short, &long] {
        shard.handle(
            Request::Set {
                key: key.clone(),
                value: Bytes::from_static(b"1"),
                options: SetOptions::default(),
            },
            1,
        );
        let stored = next.get();
        assert_eq!(
            tag_of(&mut shard, key),
            Some((Bytes::from_static(b"1"), stored))
        );
        shard.handle(
            Request::Incr {
                key: key.clone(),
                delta: 1,
            },
            1,
        );
        assert_eq!(next.get(), stored + 1);
        assert_eq!(
            tag_of(&mut shard, key),
            Some((Bytes::from_static(b"2"), stored + 1))
        );
    }
    shard.set_value_store(None);
    shard.handle(
        Request::Set {
            key: short.clone(),
            value: Bytes::from_static(b"plain"),
            options: SetOptions::default(),
        },
        1,
    );
    assert_eq!(
        tag_of(&mut shard, &short),
        Some((Bytes::from_static(b"plain"), 0))
    );
    assert_eq!(tag_of(&mut shard, b"absent"), None);
}
