//! Property tests of the shard's persistence hooks: the journal of changes
//! (`set_journal` / `drain_changes`), the point-in-time snapshot cursor (`begin_snapshot` /
//! `snapshot_next`) and `restore`.
//!
//! Random sequences of key-value operations go through `Shard::handle(request, now_ms)` with a
//! fake clock that only moves forward, on a shard with a small memory budget and
//! `Eviction::Lru`, so that writes evict, TTLs pass (reclaimed lazily by the operations that
//! look a key up, and actively by `expire_due`), and EXPIRE 0, PERSIST, CAS, INCR and MSET all
//! happen. The oracle is a `Replay`: a `BTreeMap` of `key -> StoredEntry` that applies the
//! drained changes (a `Put` inserts, a `Delete` removes), as recovery from a write-ahead log
//! would.
//!
//! Expiry by TTL is not journaled (the logged deadline implies it), so the replayed map may
//! still hold entries the shard has reclaimed: comparisons are of the entries live at the final
//! time, plus exact equality for every entry physically in the shard (which a full snapshot
//! lists, expired-but-unreclaimed ones included).
//!
//! Suites:
//! - `journal_replay_matches_the_shard`: replaying the journal, drained at random points,
//!   gives the shard's live state (value, version and deadline of every key); `Put` versions
//!   only increase; every `Delete` names a key the replay holds.
//! - `snapshot_is_point_in_time`: two shards built by the same operations (the same seed makes
//!   them identical, eviction sampling included); one gives the reference image with an
//!   uninterrupted snapshot, the other's snapshot is interleaved with random mutations,
//!   evictions, clock jumps and `expire_due`, and `snapshot_next` calls of random small
//!   `max`. Its output must be the reference, in strictly increasing key order; the image plus
//!   the changes journaled after `begin_snapshot` must give the final state (recovery); a second
//!   `begin_snapshot` fails while one runs and succeeds once it has completed.
//! - `restore_round_trip`: a snapshot restored into a fresh shard with another seed reads the
//!   same, snapshots the same, keeps versions (CAS on them succeeds), is not journaled, and
//!   the next write's version is past every restored version and the given clock; restoring
//!   into a small budget refuses exactly the entries that do not fit, with OUT_OF_MEMORY and
//!   no eviction.
//! - Fixed scenarios: which removals are journaled, abort, `Request::Snapshot` through
//!   `handle`.
//!
//! Every property test runs a fixed number of cases from a fixed seed (no persistence file).

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use proptest::prelude::*;
use proptest::test_runner::{RngAlgorithm, RngSeed, TestCaseError};
use veddb_shard::{Change, Config, Eviction, Shard, StoredEntry, ENTRY_OVERHEAD_BYTES};
use veddb_wire::{limits, Error, Request, Response, SetCondition, SetOptions, Ttl};

/// A realistic "now": milliseconds since the epoch in 2023.
const T0: u64 = 1_700_000_000_000;

/// The key space: short keys sharing prefixes, non-UTF-8 bytes, the longest key kept inside a
/// table slot (30 bytes) and longer ones stored on the heap.
const KEYS: &[&[u8]] = &[
    b"a",
    b"ab",
    b"abc",
    b"b",
    b"k1",
    b"k2",
    b"k3",
    b"\xff\x00",
    b"inline-key-of-thirty-bytes-000",
    b"heap-key-of-thirty-one-bytes-01",
    b"heap-key-of-forty-bytes-0000000000000002",
];

const VALUES: &[&[u8]] = &[
    b"",
    b"v",
    b"0",
    b"1",
    b"-7",
    b"41",
    b"hello",
    b"not a number",
];

/// A value large enough that a few of them fill the budget.
const BIG_VALUE_BYTES: usize = 300;

// ------------------------------------------------------------------------------------------
// Operations and strategies
// ------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Expected {
    Zero,
    /// The key's current version (0 when absent).
    Current,
    Other(u64),
}

#[derive(Clone, Debug)]
enum Op {
    Set {
        key: Bytes,
        value: Bytes,
        ttl_ms: Option<u64>,
        condition: SetCondition,
        keep_ttl: bool,
    },
    Get(Bytes),
    Exists(Bytes),
    Del(Bytes),
    Cas {
        key: Bytes,
        expected: Expected,
        value: Bytes,
        ttl_ms: Option<u64>,
    },
    Incr {
        key: Bytes,
        delta: i64,
    },
    /// TTL 0 included (expires at once, journaled as a delete).
    Expire {
        key: Bytes,
        ttl_ms: u64,
    },
    Persist(Bytes),
    Ttl(Bytes),
    MSet(Vec<(Bytes, Bytes)>),
    MGet(Vec<Bytes>),
    /// Moves the fake clock forward.
    Advance(u64),
    ExpireDue(usize),
    /// Drains the journal into the replay (the shard is not touched).
    Drain,
}

fn key_strategy() -> BoxedStrategy<Bytes> {
    prop::sample::select(KEYS)
        .prop_map(Bytes::from_static)
        .boxed()
}

fn value_strategy() -> BoxedStrategy<Bytes> {
    prop_oneof![
        8 => prop::sample::select(VALUES).prop_map(Bytes::from_static),
        3 => (-50i64..50).prop_map(|n| Bytes::from(n.to_string())),
        2 => Just(Bytes::from(vec![b'x'; BIG_VALUE_BYTES])),
    ]
    .boxed()
}

fn ttl_strategy() -> BoxedStrategy<u64> {
    prop_oneof![
        4 => 1..50u64,
        3 => 50..5_000u64,
        1 => Just(limits::TTL_MS_MAX),
    ]
    .boxed()
}

fn option_ttl_strategy() -> BoxedStrategy<Option<u64>> {
    prop_oneof![
        3 => Just(None),
        2 => ttl_strategy().prop_map(Some),
    ]
    .boxed()
}

fn condition_strategy() -> BoxedStrategy<SetCondition> {
    prop_oneof![
        4 => Just(SetCondition::Always),
        1 => Just(SetCondition::IfAbsent),
        1 => Just(SetCondition::IfPresent),
    ]
    .boxed()
}

fn expected_strategy() -> BoxedStrategy<Expected> {
    prop_oneof![
        2 => Just(Expected::Zero),
        5 => Just(Expected::Current),
        1 => (1..200u64).prop_map(Expected::Other),
    ]
    .boxed()
}

fn delta_strategy() -> BoxedStrategy<i64> {
    prop_oneof![
        6 => -5i64..5,
        1 => Just(i64::MAX),
        1 => Just(i64::MIN),
    ]
    .boxed()
}

fn advance_strategy() -> BoxedStrategy<u64> {
    prop_oneof![
        4 => 0..20u64,
        3 => 20..300u64,
        1 => 300..10_000u64,
    ]
    .boxed()
}

fn op_strategy() -> BoxedStrategy<Op> {
    let key = key_strategy;
    let value = value_strategy;
    prop_oneof![
        14 => (key(), value(), option_ttl_strategy(), condition_strategy(), any::<bool>())
            .prop_map(|(key, value, ttl_ms, condition, keep_ttl)| Op::Set {
                key,
                value,
                ttl_ms,
                condition,
                keep_ttl,
            }),
        5 => key().prop_map(Op::Get),
        2 => key().prop_map(Op::Exists),
        5 => key().prop_map(Op::Del),
        6 => (key(), expected_strategy(), value(), option_ttl_strategy())
            .prop_map(|(key, expected, value, ttl_ms)| Op::Cas {
                key,
                expected,
                value,
                ttl_ms,
            }),
        5 => (key(), delta_strategy()).prop_map(|(key, delta)| Op::Incr { key, delta }),
        6 => (key(), prop_oneof![1 => Just(0u64), 3 => ttl_strategy()])
            .prop_map(|(key, ttl_ms)| Op::Expire { key, ttl_ms }),
        3 => key().prop_map(Op::Persist),
        2 => key().prop_map(Op::Ttl),
        4 => prop::collection::vec((key(), value()), 1..6).prop_map(Op::MSet),
        2 => prop::collection::vec(key(), 1..5).prop_map(Op::MGet),
        7 => advance_strategy().prop_map(Op::Advance),
        3 => prop_oneof![0..4usize, Just(usize::MAX)].prop_map(Op::ExpireDue),
        3 => Just(Op::Drain),
    ]
    .boxed()
}

fn ops_strategy(max: usize) -> BoxedStrategy<Vec<Op>> {
    prop::collection::vec(op_strategy(), 0..=max).boxed()
}

/// A budget of a few entries most of the time (so writes evict), now and then a large one.
fn limit_strategy() -> BoxedStrategy<u64> {
    prop_oneof![
        5 => 300..2_500u64,
        1 => Just(1u64 << 20),
    ]
    .boxed()
}

fn lru_config(seed: u64, limit: u64) -> Config {
    Config {
        memory_bytes_limit: limit,
        eviction: Eviction::Lru,
        seed,
        ..Config::default()
    }
}

fn proptest_config(cases: u32, seed: u64) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        rng_algorithm: RngAlgorithm::ChaCha,
        rng_seed: RngSeed::Fixed(seed),
        max_shrink_iters: 20_000,
        ..ProptestConfig::default()
    }
}

// ------------------------------------------------------------------------------------------
// The replay (what recovery from the journal would rebuild) and the driver
// ------------------------------------------------------------------------------------------

fn cost(entry: &StoredEntry) -> u64 {
    entry.key.len() as u64 + entry.value.len() as u64 + ENTRY_OVERHEAD_BYTES
}

fn is_live(entry: &StoredEntry, now: u64) -> bool {
    entry.expires_at_ms == 0 || entry.expires_at_ms > now
}

#[derive(Default)]
struct Replay {
    entries: BTreeMap<Bytes, StoredEntry>,
    /// The version of the last `Put` applied (or the version clock the replay started from).
    last_version: u64,
    puts: u64,
    deletes: u64,
}

impl Replay {
    /// A replay starting from a snapshot image taken at version clock `version_clock`.
    fn from_image(image: &[StoredEntry], version_clock: u64) -> Self {
        Replay {
            entries: image
                .iter()
                .map(|entry| (entry.key.clone(), entry.clone()))
                .collect(),
            last_version: version_clock,
            puts: 0,
            deletes: 0,
        }
    }

    /// Drains the shard's journal and applies it.
    fn drain(&mut self, shard: &mut Shard) -> Result<(), TestCaseError> {
        let waiting = shard.has_changes();
        let changes: Vec<Change> = shard.drain_changes().collect();
        prop_assert_eq!(waiting, !changes.is_empty(), "has_changes disagrees");
        prop_assert!(!shard.has_changes(), "changes left after a drain");
        prop_assert_eq!(
            shard.drain_changes().count(),
            0,
            "a second drain found changes"
        );
        let clock = shard.version_clock();
        for change in changes {
            match change {
                Change::Put(entry) => {
                    prop_assert!(
                        entry.version > self.last_version,
                        "Put of {:?} with version {} after version {}",
                        entry.key,
                        entry.version,
                        self.last_version
                    );
                    prop_assert!(
                        entry.version <= clock,
                        "Put version {} past the clock {}",
                        entry.version,
                        clock
                    );
                    self.last_version = entry.version;
                    self.entries.insert(entry.key.clone(), entry);
                    self.puts += 1;
                }
                Change::Delete(key) => {
                    // Only a key that is physically in the table can be deleted, and every such
                    // key was put (or restored from the image) and not deleted since.
                    prop_assert!(
                        self.entries.remove(&key).is_some(),
                        "Delete of {:?}, which the replay does not hold",
                        key
                    );
                    self.deletes += 1;
                }
            }
        }
        Ok(())
    }

    fn live(&self, now: u64) -> BTreeMap<Bytes, StoredEntry> {
        self.entries
            .iter()
            .filter(|(_, entry)| is_live(entry, now))
            .map(|(key, entry)| (key.clone(), entry.clone()))
            .collect()
    }
}

struct Driver {
    shard: Shard,
    now: u64,
    replay: Replay,
}

impl Driver {
    fn new(config: Config) -> Self {
        let mut shard = Shard::new(0, config);
        shard.set_journal(true);
        Driver {
            shard,
            now: T0,
            replay: Replay::default(),
        }
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let now = self.now;
        let request = match op.clone() {
            Op::Set {
                key,
                value,
                ttl_ms,
                condition,
                keep_ttl,
            } => Request::Set {
                key,
                value,
                options: SetOptions {
                    ttl_ms,
                    condition,
                    keep_ttl,
                },
            },
            Op::Get(key) => Request::Get { key },
            Op::Exists(key) => Request::Exists { key },
            Op::Del(key) => Request::Delete { key },
            Op::Cas {
                key,
                expected,
                value,
                ttl_ms,
            } => {
                let expected_version = match expected {
                    Expected::Zero => 0,
                    Expected::Current => self.shard.peek(&key, now).map_or(0, |(_, v)| v),
                    Expected::Other(version) => version,
                };
                Request::Cas {
                    key,
                    expected_version,
                    value,
                    ttl_ms,
                }
            }
            Op::Incr { key, delta } => Request::Incr { key, delta },
            Op::Expire { key, ttl_ms } => Request::Expire { key, ttl_ms },
            Op::Persist(key) => Request::Persist { key },
            Op::Ttl(key) => Request::Ttl { key },
            Op::MSet(pairs) => Request::MSet { pairs },
            Op::MGet(keys) => Request::MGet { keys },
            Op::Advance(ms) => {
                self.now += ms;
                return Ok(());
            }
            Op::ExpireDue(budget) => {
                self.shard.expire_due(now, budget);
                return Ok(());
            }
            Op::Drain => return self.replay.drain(&mut self.shard),
        };
        let response = self.shard.handle(request.clone(), now);
        // The operations are valid: the only errors are the data's.
        prop_assert!(
            !matches!(
                response,
                Response::Error(
                    Error::InvalidArgument(_)
                        | Error::KeyTooLarge { .. }
                        | Error::ValueTooLarge { .. }
                )
            ),
            "{:?} answered {:?}",
            request,
            response
        );
        Ok(())
    }

    fn run(&mut self, ops: &[Op]) -> Result<(), TestCaseError> {
        for op in ops {
            self.apply(op)?;
        }
        Ok(())
    }
}

/// The whole table as an uninterrupted snapshot lists it (expired entries not yet reclaimed
/// included), checking the cursor's bookkeeping on the way.
fn full_image(shard: &mut Shard) -> Result<Vec<StoredEntry>, TestCaseError> {
    let clock = shard.version_clock();
    prop_assert!(shard.begin_snapshot(), "no snapshot should be running");
    prop_assert_eq!(shard.snapshot_version_clock(), Some(clock));
    let mut image = Vec::new();
    prop_assert!(
        !shard.snapshot_next(usize::MAX, &mut image),
        "an unbounded step must complete the snapshot"
    );
    prop_assert_eq!(shard.snapshot_version_clock(), None);
    prop_assert_eq!(shard.snapshot_preserved(), (0, 0));
    check_ascending(&image)?;
    prop_assert!(image.iter().all(|entry| entry.version <= clock));
    Ok(image)
}

fn check_ascending(entries: &[StoredEntry]) -> Result<(), TestCaseError> {
    for pair in entries.windows(2) {
        prop_assert!(
            pair[0].key < pair[1].key,
            "snapshot keys not strictly increasing: {:?} then {:?}",
            pair[0].key,
            pair[1].key
        );
    }
    Ok(())
}

/// The shard holds exactly what the replay says: the same live entries (value, version,
/// deadline) at `now`, and every entry physically in the table is the replay's.
fn check_against(shard: &mut Shard, replay: &Replay, now: u64) -> Result<(), TestCaseError> {
    let live = replay.live(now);
    let keys: BTreeSet<Bytes> = KEYS
        .iter()
        .map(|key| Bytes::from_static(key))
        .chain(replay.entries.keys().cloned())
        .collect();
    for key in &keys {
        let want = live
            .get(key)
            .map(|entry| (entry.value.clone(), entry.version));
        prop_assert_eq!(shard.peek(key, now), want, "peek {:?}", key);
    }
    for (key, entry) in &live {
        let want = match entry.expires_at_ms {
            0 => Ttl::Persistent,
            at => Ttl::Remaining(at - now),
        };
        prop_assert_eq!(shard.ttl(key, now).expect("TTL"), want, "TTL of {:?}", key);
    }
    let image = full_image(shard)?;
    prop_assert_eq!(image.len(), shard.len(), "the image is not the whole table");
    for entry in &image {
        prop_assert_eq!(
            Some(entry),
            replay.entries.get(&entry.key),
            "table entry unlike the replay's"
        );
    }
    let image_live: BTreeMap<Bytes, StoredEntry> = image
        .into_iter()
        .filter(|entry| is_live(entry, now))
        .map(|entry| (entry.key.clone(), entry))
        .collect();
    prop_assert_eq!(image_live, live);
    Ok(())
}

// ------------------------------------------------------------------------------------------
// 1. Journal replay
// ------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(proptest_config(256, 0xD15C_0001))]

    /// Replaying the journal (drained at random points) rebuilds the shard's live state.
    #[test]
    fn journal_replay_matches_the_shard(
        seed in any::<u64>(),
        limit in limit_strategy(),
        ops in ops_strategy(150),
    ) {
        let mut driver = Driver::new(lru_config(seed, limit));
        driver.run(&ops)?;
        driver.replay.drain(&mut driver.shard)?;
        prop_assert_eq!(driver.replay.last_version, driver.shard.version_clock());
        let now = driver.now;
        check_against(&mut driver.shard, &driver.replay, now)?;
        // Reads (and the snapshot in `check_against`) journal nothing.
        prop_assert!(!driver.shard.has_changes());
    }
}

// ------------------------------------------------------------------------------------------
// 2. Point-in-time snapshot
// ------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Step {
    Op(Op),
    /// `snapshot_next` with this `max` (0 included).
    Next(usize),
    /// `begin_snapshot` while one runs (it must refuse).
    BeginAgain,
}

fn step_strategy() -> BoxedStrategy<Step> {
    prop_oneof![
        6 => op_strategy().prop_map(Step::Op),
        4 => prop_oneof![1 => Just(0usize), 6 => 1..4usize].prop_map(Step::Next),
        1 => Just(Step::BeginAgain),
    ]
    .boxed()
}

/// One call of `snapshot_next` on a running snapshot; whether it still runs.
fn snapshot_step(
    shard: &mut Shard,
    max: usize,
    out: &mut Vec<StoredEntry>,
    reference: &[StoredEntry],
    clock: u64,
) -> Result<bool, TestCaseError> {
    let before = out.len();
    let running = shard.snapshot_next(max, out);
    prop_assert!(out.len() - before <= max, "more than max entries");
    prop_assert!(out.len() <= reference.len(), "more entries than the image");
    prop_assert_eq!(
        &out[..],
        &reference[..out.len()],
        "not the image at the begin"
    );
    if running {
        prop_assert_eq!(shard.snapshot_version_clock(), Some(clock));
        let (now, most) = shard.snapshot_preserved();
        prop_assert!(now <= most);
    } else {
        prop_assert_eq!(shard.snapshot_version_clock(), None);
        prop_assert_eq!(shard.snapshot_preserved(), (0, 0));
    }
    Ok(running)
}

proptest! {
    #![proptest_config(proptest_config(256, 0xD15C_0002))]

    /// A snapshot returns the table as it was at `begin_snapshot`, whatever happens between
    /// its steps; the image plus the changes journaled after the begin is the final state.
    #[test]
    fn snapshot_is_point_in_time(
        seed in any::<u64>(),
        limit in limit_strategy(),
        build in ops_strategy(80),
        steps in prop::collection::vec(step_strategy(), 0..120),
        finish in prop::collection::vec(1..5usize, 1..6),
    ) {
        // Two identical shards: the same seed and operations give the same table.
        let mut shard = Driver::new(lru_config(seed, limit));
        let mut twin = Driver::new(lru_config(seed, limit));
        shard.run(&build)?;
        twin.run(&build)?;
        prop_assert_eq!(shard.now, twin.now);
        let reference = full_image(&mut twin.shard)?;
        prop_assert_eq!(reference.len(), twin.shard.len());

        // The reference is the table the journal describes.
        shard.replay.drain(&mut shard.shard)?;
        let now = shard.now;
        let live = shard.replay.live(now);
        for entry in &reference {
            prop_assert_eq!(Some(entry), shard.replay.entries.get(&entry.key));
        }
        let reference_live: BTreeMap<Bytes, StoredEntry> = reference
            .iter()
            .filter(|entry| is_live(entry, now))
            .map(|entry| (entry.key.clone(), entry.clone()))
            .collect();
        prop_assert_eq!(&reference_live, &live);
        prop_assert_eq!(reference.len(), shard.shard.len());

        let clock = shard.shard.version_clock();
        prop_assert!(shard.shard.begin_snapshot());
        prop_assert_eq!(shard.shard.snapshot_version_clock(), Some(clock));
        // Recovery: the image, then the changes journaled after the begin.
        shard.replay = Replay::from_image(&reference, clock);

        let mut out = Vec::new();
        let mut running = true;
        for step in &steps {
            match step {
                Step::Op(op) => shard.apply(op)?,
                Step::Next(max) => {
                    if running {
                        running = snapshot_step(&mut shard.shard, *max, &mut out, &reference, clock)?;
                    }
                }
                Step::BeginAgain => {
                    if running {
                        prop_assert!(!shard.shard.begin_snapshot(), "a second snapshot began");
                        prop_assert_eq!(shard.shard.snapshot_version_clock(), Some(clock));
                    }
                }
            }
        }
        let mut calls = 0;
        while running {
            calls += 1;
            prop_assert!(calls <= 10_000, "the snapshot does not complete");
            let max = finish[calls % finish.len()];
            running = snapshot_step(&mut shard.shard, max, &mut out, &reference, clock)?;
        }
        prop_assert_eq!(&out, &reference);
        prop_assert!(!shard.shard.snapshot_next(1, &mut out), "a step after completion");
        prop_assert_eq!(out.len(), reference.len());

        // Image + journal = final state; and a new snapshot (in `check_against`) can begin.
        shard.replay.drain(&mut shard.shard)?;
        let now = shard.now;
        check_against(&mut shard.shard, &shard.replay, now)?;
    }
}

// ------------------------------------------------------------------------------------------
// 3. Restore
// ------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(proptest_config(256, 0xD15C_0003))]

    /// A snapshot restored into a fresh shard gives the same table, keeps the versions, and
    /// later writes get versions past every restored one; a small budget refuses exactly what
    /// does not fit.
    #[test]
    fn restore_round_trip(
        seed in any::<u64>(),
        limit in limit_strategy(),
        ops in ops_strategy(100),
        clock_pick in 0..3u8,
        announce_clock in any::<bool>(),
        extra in 1..1_000u64,
        small_limit in 0..1_500u64,
        later in 0..200u64,
    ) {
        let mut source = Driver::new(lru_config(seed, limit));
        source.run(&ops)?;
        let now = source.now;
        let clock = source.shard.version_clock();
        let image = full_image(&mut source.shard)?;
        let highest = image.iter().map(|entry| entry.version).max().unwrap_or(0);
        prop_assert!(highest <= clock);
        let given_clock = match clock_pick {
            0 => 0,
            1 => clock,
            _ => clock + extra,
        };

        // Into a fresh shard with another seed, journal on: nothing is journaled.
        let mut restored = Shard::new(3, lru_config(seed ^ 0x5555_AAAA_0F0F_F0F0 ^ 1, limit));
        restored.set_journal(true);
        if announce_clock {
            restored.restore_version_clock(given_clock);
            prop_assert_eq!(restored.version_clock(), given_clock);
        }
        for entry in &image {
            prop_assert_eq!(restored.restore(entry.clone(), given_clock), Ok(()));
        }
        prop_assert!(!restored.has_changes(), "restore was journaled");
        prop_assert_eq!(restored.len(), image.len());
        prop_assert_eq!(restored.memory_bytes_used(), source.shard.memory_bytes_used());
        prop_assert_eq!(
            restored.memory_bytes_used(),
            image.iter().map(cost).sum::<u64>()
        );
        // `restore` carries the clock only with an entry; an empty image needs
        // `restore_version_clock`, or versions would start again from 1.
        let expected_clock = if announce_clock || !image.is_empty() {
            given_clock.max(highest)
        } else {
            0
        };
        prop_assert_eq!(restored.version_clock(), expected_clock);
        let at = now + later;
        for key in KEYS {
            prop_assert_eq!(restored.peek(key, at), source.shard.peek(key, at), "peek {:?}", key);
        }
        let copy = full_image(&mut restored)?;
        prop_assert_eq!(&copy, &image);
        prop_assert_eq!(restored.stats().evicted_keys, 0);

        // `restore_all`, in another order, builds the same shard (its ordered index included:
        // the snapshot cursor walks it in key order).
        let mut bulk = Shard::new(3, lru_config(seed ^ 0x0123_4567, limit));
        bulk.set_journal(true);
        if announce_clock {
            bulk.restore_version_clock(given_clock);
        }
        prop_assert_eq!(bulk.restore_all(image.iter().rev().cloned(), given_clock), Ok(()));
        prop_assert!(!bulk.has_changes(), "restore_all was journaled");
        prop_assert_eq!(bulk.len(), image.len());
        prop_assert_eq!(bulk.memory_bytes_used(), restored.memory_bytes_used());
        prop_assert_eq!(bulk.version_clock(), restored.version_clock());
        for key in KEYS {
            prop_assert_eq!(bulk.peek(key, at), restored.peek(key, at), "peek {:?}", key);
        }
        prop_assert_eq!(&full_image(&mut bulk)?, &image);
        // A key over the limit stops it with the shard's error.
        let mut refused = Shard::new(3, lru_config(seed, limit));
        let too_long = StoredEntry {
            key: Bytes::from(vec![b'k'; 70_000]),
            value: Bytes::from_static(b"v"),
            version: 1,
            expires_at_ms: 0,
        };
        let outcome = refused.restore_all(std::iter::once(too_long), 1);
        prop_assert!(
            matches!(outcome, Err(Error::KeyTooLarge { .. })),
            "a key over the limit: {:?}",
            outcome
        );
        prop_assert_eq!(refused.len(), 0);

        // Restored versions are the real ones: CAS on them succeeds.
        let mut next_version = expected_clock + 1;
        if let Some(entry) = image.iter().find(|entry| is_live(entry, at)) {
            let answer = restored.handle(
                Request::Cas {
                    key: entry.key.clone(),
                    expected_version: entry.version,
                    value: Bytes::from_static(b"cas"),
                    ttl_ms: None,
                },
                at,
            );
            prop_assert_eq!(answer, Response::Stored { version: next_version });
            next_version += 1;
        }
        // A new write's version is past every restored version and the given clock.
        let answer = restored.handle(
            Request::Set {
                key: Bytes::from_static(b"new"),
                value: Bytes::from_static(b"1"),
                options: SetOptions::default(),
            },
            at,
        );
        prop_assert_eq!(answer, Response::Stored { version: next_version });
        prop_assert!(next_version > highest);
        if announce_clock || !image.is_empty() {
            prop_assert!(next_version > given_clock);
        }
        // Only those writes were journaled (and any evictions they caused), not the restore.
        let versions: Vec<u64> = restored
            .drain_changes()
            .filter_map(|change| match change {
                Change::Put(entry) => Some(entry.version),
                Change::Delete(_) => None,
            })
            .collect();
        prop_assert_eq!(versions, (expected_clock + 1..=next_version).collect::<Vec<u64>>());

        // Into a small budget (LRU on: restore must not evict): each entry fits or is refused
        // with OUT_OF_MEMORY, leaving the shard as it was.
        let mut small = Shard::new(1, lru_config(seed, small_limit));
        let mut used = 0;
        let mut kept = Vec::new();
        for entry in &image {
            let result = small.restore(entry.clone(), clock);
            if used + cost(entry) <= small_limit {
                prop_assert_eq!(result, Ok(()));
                used += cost(entry);
                kept.push(entry.clone());
            } else {
                prop_assert_eq!(
                    result,
                    Err(Error::OutOfMemory {
                        needed_bytes: used + cost(entry),
                        limit_bytes: small_limit,
                    })
                );
            }
            prop_assert_eq!(small.memory_bytes_used(), used);
            prop_assert_eq!(small.len(), kept.len());
        }
        // Restoring an entry again replaces it (charged once).
        if let Some(entry) = kept.first() {
            prop_assert_eq!(small.restore(entry.clone(), clock), Ok(()));
            prop_assert_eq!(small.memory_bytes_used(), used);
        }
        prop_assert_eq!(full_image(&mut small)?, kept);
        prop_assert_eq!(small.stats().evicted_keys, 0);
    }
}

// ------------------------------------------------------------------------------------------
// Fixed scenarios
// ------------------------------------------------------------------------------------------

fn drained(shard: &mut Shard) -> Vec<Change> {
    shard.drain_changes().collect()
}

fn put(key: &'static [u8], value: &'static [u8], version: u64, expires_at_ms: u64) -> Change {
    Change::Put(StoredEntry {
        key: Bytes::from_static(key),
        value: Bytes::from_static(value),
        version,
        expires_at_ms,
    })
}

fn delete(key: &'static [u8]) -> Change {
    Change::Delete(Bytes::from_static(key))
}

#[test]
fn the_journal_records_writes_deletes_and_evictions_but_not_expiry() {
    let entry_cost = ENTRY_OVERHEAD_BYTES + 2;
    let mut shard = Shard::new(0, lru_config(7, 2 * entry_cost));
    let set = |shard: &mut Shard, key: &'static [u8], ttl_ms: Option<u64>, now: u64| {
        let options = SetOptions {
            ttl_ms,
            ..SetOptions::default()
        };
        shard
            .set(
                Bytes::from_static(key),
                Bytes::from_static(b"v"),
                options,
                now,
            )
            .expect("SET")
    };
    // Off by default: nothing recorded.
    set(&mut shard, b"a", None, T0);
    assert!(!shard.has_changes());
    assert_eq!(shard.drain_changes().count(), 0);

    shard.set_journal(true);
    set(&mut shard, b"b", Some(10), T0);
    assert!(shard.expire(b"b", 100, T0).unwrap());
    assert!(shard.persist(b"b", T0).unwrap());
    assert_eq!(
        drained(&mut shard),
        vec![
            put(b"b", b"v", 2, T0 + 10),
            put(b"b", b"v", 3, T0 + 100),
            put(b"b", b"v", 4, 0)
        ]
    );
    // The budget holds two entries: a third evicts one of them.
    set(&mut shard, b"c", None, T0);
    let changes = drained(&mut shard);
    assert_eq!(changes.len(), 2);
    assert!(changes[0] == delete(b"a") || changes[0] == delete(b"b"));
    assert_eq!(changes[1], put(b"c", b"v", 5, 0));
    assert_eq!(shard.stats().evicted_keys, 1);
    // EXPIRE 0 and DEL are deletes.
    assert!(shard.expire(b"c", 0, T0).unwrap());
    let survivor: &'static [u8] = if shard.peek(b"a", T0).is_some() {
        b"a"
    } else {
        b"b"
    };
    assert!(shard.delete(survivor, T0).unwrap());
    assert!(!shard.delete(survivor, T0).unwrap());
    assert_eq!(drained(&mut shard), vec![delete(b"c"), delete(survivor)]);
    assert_eq!(shard.len(), 0);
    // Expiry by TTL, lazy or active, is not journaled.
    set(&mut shard, b"d", Some(5), T0);
    set(&mut shard, b"e", Some(5), T0);
    assert_eq!(
        drained(&mut shard),
        vec![put(b"d", b"v", 6, T0 + 5), put(b"e", b"v", 7, T0 + 5)]
    );
    assert_eq!(shard.get(b"d", T0 + 5).unwrap(), None);
    assert_eq!(shard.expire_due(T0 + 5, usize::MAX), 1);
    assert_eq!(shard.len(), 0);
    assert_eq!(shard.stats().expired_keys, 3);
    assert!(!shard.has_changes());
    // Turning the journal off drops what was recorded and records nothing more.
    set(&mut shard, b"f", None, T0 + 5);
    assert!(shard.has_changes());
    shard.set_journal(false);
    assert!(!shard.has_changes());
    set(&mut shard, b"g", None, T0 + 5);
    assert_eq!(shard.drain_changes().count(), 0);
}

#[test]
fn abort_ends_the_snapshot_and_a_new_one_begins() {
    let mut shard = Shard::new(0, Config::default());
    let mut out = Vec::new();
    assert!(!shard.snapshot_next(10, &mut out), "no snapshot running");
    assert!(out.is_empty());
    for key in KEYS {
        shard
            .set(
                Bytes::from_static(key),
                Bytes::from_static(b"old"),
                SetOptions::default(),
                T0,
            )
            .expect("SET");
    }
    assert!(shard.begin_snapshot());
    assert!(shard.snapshot_next(2, &mut out));
    assert_eq!(out.len(), 2);
    // A write after the position is preserved for the snapshot...
    let last = Bytes::from_static(KEYS.iter().max().unwrap());
    shard
        .set(
            last.clone(),
            Bytes::from_static(b"new"),
            SetOptions::default(),
            T0,
        )
        .expect("SET");
    assert_eq!(shard.snapshot_preserved(), (1, 1));
    // ...until the snapshot is abandoned.
    shard.abort_snapshot();
    assert_eq!(shard.snapshot_preserved(), (0, 0));
    assert_eq!(shard.snapshot_version_clock(), None);
    assert!(!shard.snapshot_next(10, &mut out));
    assert_eq!(out.len(), 2);
    // A new snapshot sees the table as it is now.
    assert!(shard.begin_snapshot());
    assert!(!shard.begin_snapshot());
    let mut image = Vec::new();
    while shard.snapshot_next(3, &mut image) {}
    assert_eq!(image.len(), KEYS.len());
    let newest = image.iter().find(|entry| entry.key == last).unwrap();
    assert_eq!(newest.value, Bytes::from_static(b"new"));
    assert!(shard.begin_snapshot());
}

#[test]
fn the_snapshot_request_needs_the_engine() {
    let mut shard = Shard::new(0, Config::default());
    assert_eq!(
        shard.handle(Request::Snapshot, T0),
        Response::Error(Error::PersistenceOff)
    );
    // Also with the journal on and a snapshot running: the request changes nothing.
    shard.set_journal(true);
    shard
        .set(
            Bytes::from_static(b"a"),
            Bytes::from_static(b"v"),
            SetOptions::default(),
            T0,
        )
        .expect("SET");
    assert_eq!(drained(&mut shard).len(), 1);
    assert!(shard.begin_snapshot());
    assert_eq!(
        shard.handle(Request::Snapshot, T0),
        Response::Error(Error::PersistenceOff)
    );
    assert!(!shard.has_changes());
    assert_eq!(shard.snapshot_version_clock(), Some(1));
    let mut out = Vec::new();
    assert!(!shard.snapshot_next(10, &mut out));
    assert_eq!(out.len(), 1);
}
