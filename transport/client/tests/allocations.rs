//! A GET through shared memory allocates nothing, on either side, once warm: an in-process
//! engine with the shared-memory frontend on two cores, a counting global allocator, and a
//! local client reading values in place (`get_view`) and copying them out (`execute`).
//!
//! Allocations are counted per thread: the client's on the test thread, each core's on that
//! core's thread (read there through `Engine::run_on`). The client must make none beyond the
//! values it is asked to copy out. A core makes none per request; a core that parks allocates
//! when a client wakes it (and its runtime, now and then, when it polls its I/O), so a core's
//! count is bounded at one per thousand requests (it was several per request before the
//! issue that added this test). The tests run one at a time: cores that spin for one test
//! would take the CPUs from the other's client.
#![cfg(target_os = "linux")]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::mpsc::sync_channel;
use std::time::Duration;

use bytes::Bytes;
use veddb_client::local::{GetResult, LocalConnection};
use veddb_client::veddb_wire::{Request, Response};
use veddb_engine::{Engine, EngineConfig};
use veddb_transport::local::{LocalConfig, LocalFrontendHandle};
use veddb_transport::Frontend;

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    let _ = ALLOCATIONS.try_with(|count| count.set(count.get() + 1));
}

// SAFETY: forwards every call to the system allocator unchanged; counting touches only a
// thread-local cell (no allocation, no lock).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: the caller's contract, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn mine() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

/// Held by each test for its whole run.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

const CORES: usize = 2;
const WARM_UP: usize = 2_000;
const MEASURED: usize = 20_000;

/// Allocations made so far on each core's thread.
fn core_allocations(engine: &Engine) -> Vec<u64> {
    (0..CORES)
        .map(|core| {
            let (sender, receiver) = sync_channel(1);
            assert!(engine.run_on(core, move |_| {
                let _ = sender.send(mine());
            }));
            receiver
                .recv_timeout(Duration::from_secs(60))
                .expect("the core answers")
        })
        .collect()
}

#[test]
fn a_local_get_allocates_nothing_on_the_client_or_the_core() {
    let _serial = one_at_a_time();
    let name = format!("veddb-alloc-test-{}", std::process::id());
    let config = LocalConfig::new(&name, 64 << 20, CORES);
    let mut frontend = LocalFrontendHandle::prepare(
        &config,
        CORES,
        std::sync::Arc::new(veddb_engine::SystemClock),
    )
    .expect("the instance");
    let engine = Engine::start(EngineConfig {
        cores: CORES,
        pin_threads: false,
        // Long: a core that parks (the test thread preempted for longer than the spin window)
        // allocates when a client wakes it (its next wake-up read), which is not a cost per
        // request; the bound below allows for a few.
        spin: Duration::from_millis(200),
        core_setup: frontend.core_setup().into_iter().collect(),
        ..EngineConfig::default()
    })
    .expect("engine");
    frontend.start(&engine).expect("the frontend starts");

    let connection = LocalConnection::connect(&name).expect("attach");
    let keys: Vec<Bytes> = (0..64)
        .map(|i| Bytes::from(format!("key-{i:04}")))
        .collect();
    let value = Bytes::from(vec![7u8; 64]);
    let pairs = keys
        .iter()
        .map(|key| (key.clone(), value.clone()))
        .collect();
    assert_eq!(
        connection.execute(Request::MSet { pairs }).unwrap(),
        Response::Ok
    );

    let gets = |count: usize| {
        for i in 0..count {
            let key = keys[i % keys.len()].clone();
            if i % 2 == 0 {
                match connection.get_view(key).unwrap() {
                    GetResult::View(view) => assert_eq!(view.bytes(), &value[..]),
                    other => panic!("expected a view, got {other:?}"),
                }
            } else {
                match connection.execute(Request::Get { key }).unwrap() {
                    Response::Value { value: got, .. } => assert_eq!(got, value),
                    other => panic!("expected the value, got {other:?}"),
                }
            }
        }
    };
    gets(WARM_UP);

    // What reading the cores' counts costs them (the job itself), to subtract.
    let first = core_allocations(&engine);
    let second = core_allocations(&engine);
    let overhead: Vec<u64> = first.iter().zip(&second).map(|(a, b)| b - a).collect();

    let cores_before = core_allocations(&engine);
    let client_before = mine();
    gets(MEASURED);
    let client_after = mine();
    let cores_after = core_allocations(&engine);

    // `execute` copies each value out into a `Bytes` of its own: that one allocation is the
    // caller's result, not the request's; the in-place GETs allocate nothing at all.
    let copies = (MEASURED / 2) as u64;
    let client = client_after - client_before;
    assert!(
        client <= copies,
        "the client allocated {client} times for {MEASURED} GETs ({copies} of them copy a \
         value out)"
    );
    for core in 0..CORES {
        let made = (cores_after[core] - cores_before[core]).saturating_sub(overhead[core]);
        assert!(
            made <= (MEASURED / 1000) as u64,
            "core {core} allocated {made} times for {MEASURED} GETs"
        );
    }

    drop(connection);
    frontend.shutdown();
    engine.shutdown();
}

#[test]
fn in_place_gets_allocate_nothing_on_the_client() {
    let _serial = one_at_a_time();
    let name = format!("veddb-alloc-view-{}", std::process::id());
    let config = LocalConfig::new(&name, 64 << 20, 1);
    let mut frontend =
        LocalFrontendHandle::prepare(&config, 1, std::sync::Arc::new(veddb_engine::SystemClock))
            .expect("instance");
    let engine = Engine::start(EngineConfig {
        cores: 1,
        pin_threads: false,
        core_setup: frontend.core_setup().into_iter().collect(),
        ..EngineConfig::default()
    })
    .expect("engine");
    frontend.start(&engine).expect("the frontend starts");
    let connection = LocalConnection::connect(&name).expect("attach");
    let key = Bytes::from_static(b"in-place");
    let value = Bytes::from(vec![9u8; 100]);
    connection
        .execute(Request::Set {
            key: key.clone(),
            value: value.clone(),
            options: Default::default(),
        })
        .unwrap();
    let view_gets = |count: usize| {
        for _ in 0..count {
            match connection.get_view(key.clone()).unwrap() {
                GetResult::View(view) => assert_eq!(view.bytes(), &value[..]),
                other => panic!("expected a view, got {other:?}"),
            }
        }
    };
    view_gets(WARM_UP);
    let before = mine();
    view_gets(MEASURED);
    let made = mine() - before;
    assert_eq!(made, 0, "{made} allocations for {MEASURED} in-place GETs");
    drop(connection);
    frontend.shutdown();
    engine.shutdown();
}
