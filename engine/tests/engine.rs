//! Engine tests with real cores: forwarding, scatter/gather, concurrency, back-pressure,
//! waiting FETCH, active expiry, shutdown. Generous timeouts, no timing asserts.

// Tests drive the engine from outside it: on the OS clocks and threads of their own.
#![allow(clippy::disallowed_methods)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use veddb_engine::{Engine, EngineConfig};
use veddb_shard::{Config, Shard};
use veddb_wire::{shard_for_key, Request, Response, SetCondition, SetOptions, SubscriberId, Ttl};

fn engine(cores: usize, inbox_depth: usize) -> Engine {
    Engine::start(EngineConfig {
        cores,
        inbox_depth,
        // Short spin: tests share two CPUs with other tests.
        spin: Duration::from_micros(20),
        memory_bytes_limit: 256 << 20,
        ..EngineConfig::default()
    })
    .expect("engine starts")
}

/// A key (or topic) `TAG<n>` owned by `shard` of `shards`.
fn owned_by(shard: u32, shards: u32, tag: &str) -> Bytes {
    (0..)
        .map(|i| b(&format!("{tag}{i}")))
        .find(|key| shard_for_key(key, shards) == shard)
        .expect("some key lands on every shard")
}

fn b(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}

/// Blocks `core`'s thread (it serves nothing) until the returned flag is set, or 60 s pass.
/// Returns once the core is held.
fn hold_core(engine: &Engine, core: usize) -> Arc<AtomicBool> {
    let release = Arc::new(AtomicBool::new(false));
    let held = Arc::new(AtomicBool::new(false));
    {
        let (release, held) = (release.clone(), held.clone());
        engine.run_on(core, move |_| {
            held.store(true, Ordering::SeqCst);
            let deadline = Instant::now() + Duration::from_secs(60);
            while !release.load(Ordering::SeqCst) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
        });
    }
    while !held.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(1));
    }
    release
}

/// Removes what legitimately differs between layouts: version numbers (per-shard clocks) and
/// the exact TTL remaining (wall clock).
fn normalize(response: Response) -> Response {
    match response {
        Response::Value { value, .. } => Response::Value { value, version: 0 },
        Response::Stored { .. } => Response::Stored { version: 0 },
        Response::VersionMismatch { .. } => Response::VersionMismatch { current: 0 },
        Response::Integer { value, .. } => Response::Integer { value, version: 0 },
        Response::Values(values) => Response::Values(
            values
                .into_iter()
                .map(|v| v.map(|(value, _)| (value, 0)))
                .collect(),
        ),
        Response::Ttl(Ttl::Remaining(ms)) => Response::Ttl(Ttl::Remaining(u64::from(ms > 0))),
        Response::Subscribed { .. } => Response::Subscribed {
            subscriber: SubscriberId(0),
        },
        Response::Info(_) => Response::Ok,
        other => other,
    }
}

/// A script over every operation. `version_of` gives the last version the system under test
/// returned for a key, so CAS succeeds or fails the same way on every layout.
/// One scripted step: builds its request given the versions seen so far.
type Step = Box<dyn Fn(&dyn Fn(&str) -> u64) -> Request>;

fn script() -> Vec<Step> {
    let mut ops: Vec<Step> = Vec::new();
    let hour = Some(3_600_000);
    for i in 0..40 {
        let key = format!("key:{}", i % 13);
        let other = format!("key:{}", (i * 7 + 3) % 13);
        let k = key.clone();
        ops.push(Box::new(move |_| Request::Set {
            key: b(&k),
            value: b(&format!("v{i}")),
            options: SetOptions {
                ttl_ms: if i % 5 == 0 { hour } else { None },
                ..SetOptions::default()
            },
        }));
        let k = other.clone();
        ops.push(Box::new(move |_| Request::Get { key: b(&k) }));
        let k = key.clone();
        ops.push(Box::new(move |_| Request::Set {
            key: b(&k),
            value: b("nx"),
            options: SetOptions {
                condition: SetCondition::IfAbsent,
                ..SetOptions::default()
            },
        }));
        let k = other.clone();
        ops.push(Box::new(move |_| Request::Set {
            key: b(&k),
            value: b("xx"),
            options: SetOptions {
                condition: SetCondition::IfPresent,
                keep_ttl: true,
                ..SetOptions::default()
            },
        }));
        let k = key.clone();
        ops.push(Box::new(move |version_of| Request::Cas {
            key: b(&k),
            expected_version: version_of(&k),
            value: b(&format!("cas{i}")),
            ttl_ms: None,
        }));
        let k = other.clone();
        ops.push(Box::new(move |version_of| Request::Cas {
            key: b(&k),
            expected_version: version_of(&k) + 1_000_000,
            value: b("never"),
            ttl_ms: None,
        }));
        let counter = format!("counter:{}", i % 5);
        ops.push(Box::new(move |_| Request::Incr {
            key: b(&counter),
            delta: i as i64 - 20,
        }));
        let k = key.clone();
        ops.push(Box::new(move |_| Request::Incr {
            key: b(&k),
            delta: 1,
        }));
        let k = other.clone();
        ops.push(Box::new(move |_| Request::Exists { key: b(&k) }));
        let k = key.clone();
        ops.push(Box::new(move |_| Request::Ttl { key: b(&k) }));
        if i % 3 == 0 {
            let k = other.clone();
            ops.push(Box::new(move |_| Request::Expire {
                key: b(&k),
                ttl_ms: 3_600_000,
            }));
            let k = key.clone();
            ops.push(Box::new(move |_| Request::Persist { key: b(&k) }));
        }
        if i % 4 == 0 {
            let k = other.clone();
            ops.push(Box::new(move |_| Request::Delete { key: b(&k) }));
            ops.push(Box::new(move |_| Request::Expire {
                key: b(&format!("key:{}", i % 13)),
                ttl_ms: 0,
            }));
        }
        if i % 6 == 0 {
            ops.push(Box::new(move |_| Request::MSet {
                pairs: (0..6)
                    .map(|j| (b(&format!("m:{}", (i + j) % 9)), b(&format!("mv{i}.{j}"))))
                    .collect(),
            }));
            ops.push(Box::new(move |_| Request::MGet {
                keys: (0..10)
                    .map(|j| b(&format!("m:{}", (i + j * 2) % 11)))
                    .chain([b("key:1")])
                    .collect(),
            }));
        }
        if i % 10 == 0 {
            ops.push(Box::new(|_| Request::Scan {
                cursor: Bytes::new(),
                prefix: b("m:"),
                count: 4,
            }));
            ops.push(Box::new(|_| Request::Scan {
                cursor: b("key:3"),
                prefix: Bytes::new(),
                count: 5,
            }));
            ops.push(Box::new(|_| Request::Publish {
                topic: b("news"),
                message: b("hello"),
            }));
            ops.push(Box::new(|_| Request::Ping));
        }
    }
    // Errors go through forwarding too.
    ops.push(Box::new(|_| Request::Get { key: Bytes::new() }));
    ops.push(Box::new(|_| Request::Set {
        key: b("big"),
        value: Bytes::from(vec![0u8; 17 << 20]),
        options: SetOptions::default(),
    }));
    ops.push(Box::new(|_| Request::Incr {
        key: b("key:1"),
        delta: i64::MAX,
    }));
    ops
}

fn track_version(
    versions: &mut std::collections::HashMap<String, u64>,
    request: &Request,
    response: &Response,
) {
    let key = match request {
        Request::Get { key }
        | Request::Set { key, .. }
        | Request::Cas { key, .. }
        | Request::Incr { key, .. } => key,
        _ => return,
    };
    let key = String::from_utf8_lossy(key).into_owned();
    match response {
        Response::Value { version, .. }
        | Response::Stored { version }
        | Response::Integer { version, .. } => {
            versions.insert(key, *version);
        }
        Response::NotFound => {
            versions.insert(key, 0);
        }
        _ => {}
    }
}

#[test]
fn every_operation_answers_the_same_on_1_2_and_4_shards() {
    // The reference: one shard, applied directly.
    let mut reference = Shard::new(
        0,
        Config {
            memory_bytes_limit: 256 << 20,
            ..Config::default()
        },
    );
    let mut expected = Vec::new();
    let mut versions = std::collections::HashMap::new();
    for op in script() {
        let request = op(&|key: &str| *versions.get(key).unwrap_or(&0));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let response = reference.handle(request.clone(), now);
        track_version(&mut versions, &request, &response);
        expected.push((request.name(), normalize(response)));
    }
    for cores in [1usize, 2, 4] {
        let engine = engine(cores, 16);
        let mut versions = std::collections::HashMap::new();
        for (step, op) in script().into_iter().enumerate() {
            let request = op(&|key: &str| *versions.get(key).unwrap_or(&0));
            // Enter at a rotating core, so most single-key requests are forwarded.
            let entry = step % cores;
            let response = engine.call_via(entry, request.clone());
            track_version(&mut versions, &request, &response);
            assert_eq!(
                (request.name(), normalize(response)),
                expected[step],
                "step {step} ({}) on {cores} cores entered at core {entry}",
                request.name()
            );
        }
        // INFO gathers one entry per shard, and the keys add up to the reference's.
        let Response::Info(info) = engine.call(Request::Info) else {
            panic!("INFO failed")
        };
        assert_eq!(info.shards.len(), cores);
        assert_eq!(info.total().keys, reference.len() as u64);
        if cores > 1 {
            assert!(info.total().forwarded_in > 0, "requests were forwarded");
        }
        engine.shutdown();
    }
}

#[test]
fn scan_across_shards_returns_every_key_once_in_order() {
    let engine = engine(4, 16);
    let mut wanted: Vec<Bytes> = Vec::new();
    for i in 0..600 {
        let key = b(&format!("user:{i:04}"));
        wanted.push(key.clone());
        engine.call(Request::Set {
            key,
            value: b("x"),
            options: SetOptions::default(),
        });
        engine.call(Request::Set {
            key: b(&format!("other:{i}")),
            value: b("y"),
            options: SetOptions::default(),
        });
    }
    wanted.sort();
    let mut seen = Vec::new();
    let mut cursor = Bytes::new();
    let mut pages = 0;
    loop {
        let response = engine.call_via(
            pages % 4,
            Request::Scan {
                cursor: cursor.clone(),
                prefix: b("user:"),
                count: 37,
            },
        );
        let Response::Keys { keys, cursor: next } = response else {
            panic!("SCAN failed: {response:?}")
        };
        assert!(keys.len() <= 37);
        seen.extend(keys);
        pages += 1;
        if next.is_empty() {
            break;
        }
        cursor = next;
        assert!(pages < 1000, "scan does not end");
    }
    assert_eq!(seen, wanted);
}

#[test]
fn concurrent_forwarded_traffic_from_all_cores_loses_nothing() {
    for cores in [2usize, 4] {
        // A small inbox so that back-pressure is exercised all the time.
        let engine = Arc::new(engine(cores, 4));
        let tasks_per_core = 24;
        let increments_per_task = 150;
        let counters = 8;
        let finished = Arc::new(AtomicU64::new(0));
        for core in 0..cores {
            let finished = finished.clone();
            engine.run_on(core, move |context| {
                for task in 0..tasks_per_core {
                    let context = context.clone();
                    let finished = finished.clone();
                    compio::runtime::spawn(async move {
                        for i in 0..increments_per_task {
                            let key = b(&format!("counter:{}", (task + i) % counters));
                            let response = context.execute(Request::Incr { key, delta: 1 }).await;
                            assert!(matches!(response, Response::Integer { .. }), "{response:?}");
                            let own = b(&format!("k:{core}:{task}:{i}"));
                            let response = context
                                .execute(Request::Set {
                                    key: own,
                                    value: b("v"),
                                    options: SetOptions::default(),
                                })
                                .await;
                            assert!(matches!(response, Response::Stored { .. }), "{response:?}");
                        }
                        finished.fetch_add(1, Ordering::SeqCst);
                    })
                    .detach();
                }
            });
        }
        let deadline = Instant::now() + Duration::from_secs(120);
        while finished.load(Ordering::SeqCst) < (cores * tasks_per_core) as u64 {
            assert!(
                Instant::now() < deadline,
                "forwarded traffic stalled (deadlock?)"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut total = 0;
        for c in 0..counters {
            match engine.call(Request::Get {
                key: b(&format!("counter:{c}")),
            }) {
                Response::Value { value, .. } => {
                    total += std::str::from_utf8(&value).unwrap().parse::<u64>().unwrap()
                }
                other => panic!("counter {c}: {other:?}"),
            }
        }
        assert_eq!(
            total,
            (cores * tasks_per_core * increments_per_task) as u64,
            "lost increments"
        );
        let keys = (0..cores)
            .flat_map(|core| {
                (0..tasks_per_core).flat_map(move |task| {
                    (0..increments_per_task).map(move |i| b(&format!("k:{core}:{task}:{i}")))
                })
            })
            .collect::<Vec<_>>();
        for chunk in keys.chunks(1000) {
            let Response::Values(values) = engine.call(Request::MGet {
                keys: chunk.to_vec(),
            }) else {
                panic!()
            };
            assert!(values.iter().all(Option::is_some), "a SET was lost");
        }
        let Response::Info(info) = engine.call(Request::Info) else {
            panic!()
        };
        assert!(
            info.shards.iter().all(|s| s.forwarded_in > 0),
            "every core received forwarded work"
        );
        Arc::try_unwrap(engine).ok().expect("sole owner").shutdown();
    }
}

#[test]
fn a_full_inbox_applies_back_pressure() {
    let depth = 4;
    let engine = engine(2, depth);
    // Find keys owned by core 1.
    let keys: Vec<Bytes> = (0..)
        .map(|i| b(&format!("bp:{i}")))
        .filter(|key| shard_for_key(key, 2) == 1)
        .take(40)
        .collect();
    // Hold core 1 still until the test has looked at core 0's queues.
    let release = hold_core(&engine, 1);
    let observed = Arc::new(std::sync::Mutex::new(None));
    let done = Arc::new(AtomicU64::new(0));
    {
        let keys = keys.clone();
        let observed = observed.clone();
        let done = done.clone();
        engine.run_on(0, move |context| {
            for key in keys {
                let context = context.clone();
                let done = done.clone();
                compio::runtime::spawn(async move {
                    let response = context
                        .execute(Request::Set {
                            key,
                            value: b("v"),
                            options: SetOptions::default(),
                        })
                        .await;
                    assert!(matches!(response, Response::Stored { .. }), "{response:?}");
                    done.fetch_add(1, Ordering::SeqCst);
                })
                .detach();
            }
            // Look once every task has had its first poll.
            let context2 = context.clone();
            compio::runtime::spawn(async move {
                compio::time::sleep(Duration::from_millis(50)).await;
                *observed.lock().unwrap() =
                    Some((context2.in_flight(1), context2.waiting_for_credit(1)));
            })
            .detach();
        });
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while observed.lock().unwrap().is_none() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(5));
    }
    let (in_flight, waiting) = observed.lock().unwrap().unwrap();
    assert_eq!(
        in_flight, depth,
        "the inbox to core 1 is full, and no fuller"
    );
    assert_eq!(waiting, 40 - depth, "every other sender waits for a slot");
    release.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(60);
    while done.load(Ordering::SeqCst) < 40 {
        assert!(Instant::now() < deadline, "senders never resumed");
        std::thread::sleep(Duration::from_millis(5));
    }
    for key in keys {
        assert!(
            matches!(engine.call(Request::Get { key }), Response::Value { .. }),
            "nothing dropped"
        );
    }
}

#[test]
fn a_waiting_fetch_completes_on_publish_or_deadline() {
    let engine = Arc::new(engine(2, 16));
    let topic = b("events");
    let owner = shard_for_key(&topic, 2) as usize;
    let other = 1 - owner;
    let Response::Subscribed { subscriber } = engine.call_via(
        other,
        Request::Subscribe {
            topic: topic.clone(),
        },
    ) else {
        panic!("subscribe failed")
    };
    // Deadline: nothing published.
    let started = Instant::now();
    let response = engine.call_via(
        other,
        Request::Fetch {
            subscriber,
            max: 10,
            wait_ms: 100,
        },
    );
    assert_eq!(
        response,
        Response::Messages {
            messages: vec![],
            dropped: 0
        }
    );
    assert!(
        started.elapsed() >= Duration::from_millis(90),
        "the fetch waited"
    );
    // Publish while a fetch waits (entered on the other core, forwarded to the owner).
    let waiter = {
        let engine = engine.clone();
        std::thread::spawn(move || {
            engine.call_via(
                other,
                Request::Fetch {
                    subscriber,
                    max: 10,
                    wait_ms: 30_000,
                },
            )
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        engine.call_via(
            other,
            Request::Publish {
                topic: topic.clone(),
                message: b("m1")
            }
        ),
        Response::Published { receivers: 1 }
    );
    let response = waiter.join().unwrap();
    assert_eq!(
        response,
        Response::Messages {
            messages: vec![b("m1")],
            dropped: 0
        }
    );
    // The same with everything on the owning core (no forwarding).
    let waiter = {
        let engine = engine.clone();
        std::thread::spawn(move || {
            engine.call_via(
                owner,
                Request::Fetch {
                    subscriber,
                    max: 10,
                    wait_ms: 60_000,
                },
            )
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    assert_eq!(
        engine.call_via(
            owner,
            Request::Publish {
                topic: topic.clone(),
                message: b("m2")
            }
        ),
        Response::Published { receivers: 1 }
    );
    assert_eq!(
        waiter.join().unwrap(),
        Response::Messages {
            messages: vec![b("m2")],
            dropped: 0
        }
    );
    // Answered by the publish, not by the 60 s deadline (a generous bound, not a speed check).
    assert!(started.elapsed() < Duration::from_secs(45));
    // Unsubscribing answers a waiting fetch.
    let waiter = {
        let engine = engine.clone();
        std::thread::spawn(move || {
            engine.call_via(
                owner,
                Request::Fetch {
                    subscriber,
                    max: 10,
                    wait_ms: 60_000,
                },
            )
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    assert_eq!(
        engine.call(Request::Unsubscribe { subscriber }),
        Response::Bool(true)
    );
    assert_eq!(
        waiter.join().unwrap(),
        Response::Error(veddb_wire::Error::UnknownSubscriber(subscriber))
    );
    assert!(
        started.elapsed() < Duration::from_secs(45),
        "answered by the unsubscribe, not the deadline"
    );
}

#[test]
fn expired_keys_are_reclaimed_without_being_read() {
    let engine = engine(2, 16);
    for i in 0..50 {
        let response = engine.call(Request::Set {
            key: b(&format!("ttl:{i}")),
            value: b("v"),
            options: SetOptions {
                ttl_ms: Some(30),
                ..SetOptions::default()
            },
        });
        assert!(matches!(response, Response::Stored { .. }));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let Response::Info(info) = engine.call(Request::Info) else {
            panic!()
        };
        let total = info.total();
        if total.keys == 0 {
            assert_eq!(total.expired_keys, 50);
            assert_eq!(total.memory_bytes_used, 0);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "expired keys were not reclaimed: {total:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn more_cores_than_cpus_and_shutdown() {
    let engine = engine(veddb_engine::available_cpus() * 2 + 1, 8);
    for i in 0..100 {
        let key = b(&format!("k{i}"));
        engine.call_via(
            i % engine.shard_count() as usize,
            Request::Set {
                key: key.clone(),
                value: key,
                options: SetOptions::default(),
            },
        );
    }
    let Response::Values(values) = engine.call(Request::MGet {
        keys: (0..100).map(|i| b(&format!("k{i}"))).collect(),
    }) else {
        panic!()
    };
    assert!(values.iter().all(Option::is_some));
    let took = engine.shutdown();
    assert!(took < Duration::from_secs(30));
}

#[test]
fn subscriber_ids_from_nowhere_are_refused_not_fatal() {
    let engine = engine(2, 8);
    for core in 0..2 {
        for subscriber in [
            SubscriberId(u64::MAX),
            SubscriberId::new(7, 1),
            SubscriberId::new(1, 12345),
        ] {
            assert_eq!(
                engine.call_via(
                    core,
                    Request::Fetch {
                        subscriber,
                        max: 1,
                        wait_ms: 10
                    }
                ),
                Response::Error(veddb_wire::Error::UnknownSubscriber(subscriber))
            );
            assert!(matches!(
                engine.call_via(core, Request::Unsubscribe { subscriber }),
                Response::Error(_) | Response::Bool(false)
            ));
        }
    }
    assert_eq!(
        engine.call(Request::Ping),
        Response::Pong,
        "the engine still serves"
    );
}

#[test]
fn invalid_configurations_are_refused() {
    assert!(Engine::start(EngineConfig {
        cores: 0,
        ..EngineConfig::default()
    })
    .is_err());
    assert!(Engine::start(EngineConfig {
        inbox_depth: 3,
        ..EngineConfig::default()
    })
    .is_err());
}

/// Tasks re-polled while they wait for a slot (as `join_all` does to an MGET whose other parts
/// answered) must not eat the wake-ups meant for other waiters.
#[test]
fn credit_waiters_are_all_served_after_back_pressure() {
    let engine = engine(4, 2);
    let owned_by = |shard: u32, count: usize, tag: &str| -> Vec<Bytes> {
        (0..)
            .map(|i| b(&format!("{tag}:{i}")))
            .filter(|key| shard_for_key(key, 4) == shard)
            .take(count)
            .collect()
    };
    let mut all_keys = Vec::new();
    for shard in 1..4 {
        for key in owned_by(shard, 12, "cw") {
            engine.call(Request::Set {
                key: key.clone(),
                value: key.clone(),
                options: SetOptions::default(),
            });
            all_keys.push((shard, key));
        }
    }
    let release = hold_core(&engine, 1);
    let done = Arc::new(AtomicU64::new(0));
    let keys_of = |shard: u32| -> Vec<Bytes> {
        all_keys
            .iter()
            .filter(|(s, _)| *s == shard)
            .map(|(_, k)| k.clone())
            .collect()
    };
    let (one, two, three) = (keys_of(1), keys_of(2), keys_of(3));
    {
        let done = done.clone();
        engine.run_on(0, move |context| {
            for i in 0..10 {
                // An MGET over shards 1, 2 and 3, and a GET for shard 1.
                let keys = vec![one[i].clone(), two[i].clone(), three[i].clone()];
                let context_mget = context.clone();
                let done_mget = done.clone();
                compio::runtime::spawn(async move {
                    let response = context_mget
                        .execute(Request::MGet { keys: keys.clone() })
                        .await;
                    let Response::Values(values) = response else {
                        panic!("{response:?}")
                    };
                    for (key, value) in keys.iter().zip(values) {
                        assert_eq!(value.map(|(v, _)| v), Some(key.clone()));
                    }
                    done_mget.fetch_add(1, Ordering::SeqCst);
                })
                .detach();
                let context_get = context.clone();
                let done_get = done.clone();
                let key = one[i].clone();
                compio::runtime::spawn(async move {
                    let response = context_get.execute(Request::Get { key: key.clone() }).await;
                    assert!(matches!(response, Response::Value { value, .. } if value == key));
                    done_get.fetch_add(1, Ordering::SeqCst);
                })
                .detach();
            }
        });
    }
    std::thread::sleep(Duration::from_millis(200));
    release.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(60);
    while done.load(Ordering::SeqCst) < 20 {
        assert!(
            Instant::now() < deadline,
            "only {} of 20 requests finished: a waiter was never woken",
            done.load(Ordering::SeqCst)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Long polls may hold at most a quarter of the slots towards a core; other traffic still flows.
#[test]
fn waiting_fetches_cannot_starve_other_traffic() {
    let engine = Arc::new(engine(2, 8));
    // Topics owned by core 1, subscribed and long-polled from core 0.
    let topics: Vec<Bytes> = (0..)
        .map(|i| b(&format!("topic:{i}")))
        .filter(|t| shard_for_key(t, 2) == 1)
        .take(6)
        .collect();
    let mut waiters = Vec::new();
    for topic in &topics {
        let Response::Subscribed { subscriber } = engine.call_via(
            0,
            Request::Subscribe {
                topic: topic.clone(),
            },
        ) else {
            panic!()
        };
        let engine = engine.clone();
        waiters.push(std::thread::spawn(move || {
            engine.call_via(
                0,
                Request::Fetch {
                    subscriber,
                    max: 1,
                    wait_ms: 60_000,
                },
            )
        }));
    }
    std::thread::sleep(Duration::from_millis(200));
    // 6 long polls, 8 slots: without the cap only 2 would be left; with it, 6 remain.
    let key = (0..)
        .map(|i| b(&format!("free:{i}")))
        .find(|k| shard_for_key(k, 2) == 1)
        .unwrap();
    for _ in 0..100 {
        assert!(matches!(
            engine.call_via(
                0,
                Request::Set {
                    key: key.clone(),
                    value: b("v"),
                    options: SetOptions::default()
                }
            ),
            Response::Stored { .. }
        ));
    }
    // Every long poll is still answered: by a message for the first two (which wait), at once
    // with nothing for the others (over the cap).
    let started = Instant::now();
    for topic in &topics {
        engine.call_via(
            0,
            Request::Publish {
                topic: topic.clone(),
                message: b("m"),
            },
        );
    }
    for waiter in waiters {
        assert!(matches!(waiter.join().unwrap(), Response::Messages { .. }));
    }
    assert!(
        started.elapsed() < Duration::from_secs(45),
        "long polls were answered by the publishes"
    );
}

/// A pushed subscription is listed for its frontend whenever messages arrive for it, published
/// in place or forwarded from another core (once until taken);
/// its messages are taken as delivered, with the drop count; UNSUBSCRIBE, from any core, ends the
/// listing and lists it as ended (once). One
/// is refused on a core that does not own its topic.
#[test]
fn pushed_subscriptions_are_listed_when_messages_arrive() {
    let engine = engine(2, 64);
    let topic = owned_by(0, 2, "topic");
    let (report, outcome) = std::sync::mpsc::channel();
    let on_core_0 = |f: Box<dyn FnOnce(&veddb_engine::CoreContext) -> String + Send>| {
        let report = report.clone();
        assert!(engine.run_on(0, move |context| report.send(f(&context)).unwrap()));
        outcome.recv_timeout(Duration::from_secs(60)).unwrap()
    };
    let refused = {
        let topic = topic.clone();
        let (report, outcome) = std::sync::mpsc::channel();
        assert!(engine.run_on(1, move |context| {
            report
                .send(format!("{:?}", context.subscribe_pushed(topic)))
                .unwrap()
        }));
        outcome.recv_timeout(Duration::from_secs(60)).unwrap()
    };
    assert!(refused.contains("topic's core (0)"), "{refused}");
    let subscribed = {
        let topic = topic.clone();
        on_core_0(Box::new(move |context| {
            format!("{}", context.subscribe_pushed(topic).unwrap().0)
        }))
    };
    let subscriber = SubscriberId(subscribed.parse().unwrap());
    let publish = |message: &str| Request::Publish {
        topic: topic.clone(),
        message: b(message),
    };
    // Forwarded from core 1, twice: listed once.
    for message in ["one", "two"] {
        assert_eq!(
            engine.call_via(1, publish(message)),
            Response::Published { receivers: 1 }
        );
    }
    let listed = on_core_0(Box::new(move |context| {
        let mut ready = Vec::new();
        context.take_push_ready(&mut ready);
        let again = {
            let mut again = Vec::new();
            context.take_push_ready(&mut again);
            again.len()
        };
        let pending = context.with_shard(|shard| {
            let (queue, dropped) = shard.pending(subscriber).unwrap();
            let messages: Vec<Bytes> = queue.iter().cloned().collect();
            shard.take_delivered(subscriber, 1);
            (messages, dropped)
        });
        format!("{ready:?} {again} {pending:?}")
    }));
    assert_eq!(
        listed,
        format!("[{subscriber:?}] 0 ([b\"one\", b\"two\"], 0)")
    );
    // Published in place on core 0: listed again (its queue still holds "two").
    let in_place = {
        let message = publish("three");
        on_core_0(Box::new(move |context| {
            let answer = context.try_execute_local(message);
            let mut ready = Vec::new();
            context.take_push_ready(&mut ready);
            let left = context.with_shard(|shard| shard.pending(subscriber).unwrap().0.len());
            format!("{answer:?} {ready:?} {left}")
        }))
    };
    assert_eq!(
        in_place,
        format!("Ok(Published {{ receivers: 1 }}) [{subscriber:?}] 2")
    );
    // Unsubscribed: no longer listed, its queue gone.
    assert_eq!(
        engine.call_via(1, Request::Unsubscribe { subscriber }),
        Response::Bool(true)
    );
    assert_eq!(
        engine.call_via(1, publish("four")),
        Response::Published { receivers: 0 }
    );
    let after = on_core_0(Box::new(move |context| {
        let mut ready = Vec::new();
        context.take_push_ready(&mut ready);
        let mut ended = Vec::new();
        context.take_push_ended(&mut ended);
        let mut again = Vec::new();
        context.take_push_ended(&mut again);
        format!(
            "{ready:?} {ended:?} {again:?} {}",
            context.with_shard(|shard| shard.pending(subscriber).is_none())
        )
    }));
    // Ended through another core: listed once as ended, so its frontend forgets it.
    assert_eq!(after, format!("[] [{subscriber:?}] [] true"));
    engine.shutdown();
}

/// `try_execute_local` answers at once what this core owns and can answer synchronously, and
/// hands back untouched what another core owns, what scatters and what may answer later.
#[test]
fn try_execute_local_answers_only_what_the_core_can_answer_at_once() {
    let engine = engine(2, 64);
    let own = owned_by(0, 2, "own");
    let other = owned_by(1, 2, "other");
    let own_key = own.clone();
    let (report, outcome) = std::sync::mpsc::channel();
    assert!(engine.run_on(0, move |context| {
        let set = |key: &Bytes| Request::Set {
            key: key.clone(),
            value: b("v"),
            options: SetOptions::default(),
        };
        let mut seen = Vec::new();
        seen.push(format!("{:?}", context.try_execute_local(set(&own))));
        seen.push(format!(
            "{:?}",
            context.try_execute_local(Request::Get { key: own.clone() })
        ));
        seen.push(format!("{:?}", context.try_execute_local(Request::Ping)));
        // A PUBLISH to this core's topic runs in place (completing what it completes).
        seen.push(format!(
            "{:?}",
            context.try_execute_local(Request::Publish {
                topic: own.clone(),
                message: b("m"),
            })
        ));
        // Another core's key or topic, a scattered request and a FETCH that may wait come
        // back as they were.
        let subscriber = context.subscribe_pushed(own.clone()).unwrap();
        for request in [
            set(&other),
            Request::MGet {
                keys: vec![own.clone(), other.clone()],
            },
            Request::Publish {
                topic: other.clone(),
                message: b("m"),
            },
            Request::Fetch {
                subscriber,
                max: 1,
                wait_ms: 1000,
            },
        ] {
            match context.try_execute_local(request.clone()) {
                Err(back) => assert_eq!(back, request),
                Ok(response) => panic!("{request:?} answered in place: {response:?}"),
            }
        }
        report.send(seen).unwrap();
    }));
    let seen = outcome.recv_timeout(Duration::from_secs(60)).unwrap();
    assert!(seen[0].starts_with("Ok(Stored"), "{seen:?}");
    assert!(seen[1].starts_with("Ok(Value"), "{seen:?}");
    assert_eq!(seen[2], "Ok(Pong)");
    assert_eq!(seen[3], "Ok(Published { receivers: 0 })");
    // What was answered in place is the engine's state: asked through the other core, too.
    match engine.call_via(1, Request::Get { key: own_key }) {
        Response::Value { value, .. } => assert_eq!(value, b("v")),
        other => panic!("{other:?}"),
    }
    engine.shutdown();
}
