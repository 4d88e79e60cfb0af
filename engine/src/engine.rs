//! Starting, calling into and stopping the engine.

use std::collections::HashSet;
use std::fmt;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;
use std::time::Duration;

use veddb_persist::recovery::ShardImage;
use veddb_shard::Shard;
use veddb_wire::{limits, Error, Request, Response, Route};

use crate::config::{CoreSetup, EngineConfig, EXTERNAL_QUEUE_CAPACITY};
use crate::core::{
    restore_shard, CoreContext, CoreLog, CoreLogConfig, CoreShared, CoreWiring, External,
    RequestMessage, ResponseMessage,
};
use crate::persist::{self, FsStorage};
use crate::ring::{ring, Consumer, Producer};
use crate::sync::{Arc, Ordering};

/// Why the engine did not start.
#[derive(Debug)]
pub enum StartError {
    /// A setting is out of range; the text says which.
    InvalidConfig(String),
    /// A core's thread or runtime could not be created (for example io_uring refused and no
    /// fallback was possible).
    Core { core: usize, error: String },
    /// The data directory could not be locked, recovered or loaded; the text says why and
    /// what to do.
    Persistence(String),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::InvalidConfig(text) => write!(f, "invalid engine configuration: {text}"),
            StartError::Core { core, error } => write!(f, "core {core} failed to start: {error}"),
            StartError::Persistence(text) => write!(f, "{text}"),
        }
    }
}

impl std::error::Error for StartError {}

/// The CPUs this process may run on, as indices (what `--cores` counts by default).
pub fn available_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

struct CoreHandle {
    external: SyncSender<External>,
    thread: Option<JoinHandle<()>>,
}

/// A running engine: N pinned cores, one shard each.
pub struct Engine {
    cores: Vec<CoreHandle>,
    shared: Arc<[CoreShared]>,
    config: EngineConfig,
    runtime_kind: String,
    /// The locked data directory (persistence on).
    _data_dir: Option<FsStorage>,
}

impl Engine {
    /// Starts `config.cores` threads and waits until every core's runtime is up.
    pub fn start(config: EngineConfig) -> Result<Engine, StartError> {
        let shard_budget = check_config(&config)?;
        let (outbound, inbound) = build_mesh(config.cores, config.inbox_depth);
        let (data_dir, starts) = recover(&config)?;
        let core_count = config.cores;
        let (ready_sender, ready_receiver) = sync_channel::<ReadyReport>(core_count);
        let mut engine = Engine {
            cores: Vec::with_capacity(core_count),
            shared: (0..core_count).map(|_| CoreShared::new()).collect(),
            config,
            runtime_kind: String::new(),
            _data_dir: data_dir,
        };
        engine.spawn_cores(outbound, inbound, starts, shard_budget, ready_sender)?;
        engine.wait_until_ready(ready_receiver)?;
        Ok(engine)
    }

    /// Spawns one thread per core; if one cannot be spawned, stops those already running.
    fn spawn_cores(
        &mut self,
        outbound: Vec<OutboundLinks>,
        inbound: Vec<InboundLinks>,
        mut starts: Vec<CoreStart>,
        shard_budget: u64,
        ready_sender: SyncSender<ReadyReport>,
    ) -> Result<(), StartError> {
        let cpus = available_cpus();
        for (index, (outbound, inbound)) in outbound.into_iter().zip(inbound).enumerate() {
            let (external_sender, wiring) = self.core_wiring(index, outbound, inbound, cpus);
            let shard_config = shard_config(&self.config, index, shard_budget);
            let pin = self.config.pin_threads.then_some(index % cpus);
            let ready = ready_sender.clone();
            let start = starts[index].take();
            let setup = self.config.core_setup.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("veddb-core-{index}"))
                .spawn(move || core_thread(index, pin, wiring, shard_config, setup, start, ready));
            let thread = match spawned {
                Ok(thread) => thread,
                Err(error) => {
                    // Stop the cores already running before giving up.
                    drop(ready_sender);
                    self.stop();
                    return Err(StartError::Core {
                        core: index,
                        error: error.to_string(),
                    });
                }
            };
            self.cores.push(CoreHandle {
                external: external_sender,
                thread: Some(thread),
            });
        }
        Ok(())
    }

    /// Wires core `index` to its peers' rings, the other cores and its external queue (cores
    /// pinned round-robin over `cpus` CPUs).
    fn core_wiring(
        &self,
        index: usize,
        outbound: OutboundLinks,
        inbound: InboundLinks,
        cpus: usize,
    ) -> (SyncSender<External>, CoreWiring) {
        let (external_sender, external_receiver) = sync_channel(EXTERNAL_QUEUE_CAPACITY);
        let wiring = CoreWiring {
            index: index as u32,
            shard_count: self.config.cores as u32,
            spin: self.config.spin,
            // More cores than CPUs: this core's CPU may hold another.
            shares_cpu_with_core: self.config.pin_threads
                && index % cpus + cpus < self.config.cores,
            clock: self.config.clock.clone(),
            outbound,
            inbound,
            external: external_receiver,
            cores: self.shared.clone(),
        };
        (external_sender, wiring)
    }

    /// Waits until every core reports its runtime up; on a failure, stops the engine.
    fn wait_until_ready(&mut self, ready: Receiver<ReadyReport>) -> Result<(), StartError> {
        for _ in 0..self.config.cores {
            match ready.recv() {
                Ok((_, Ok(kind))) => self.runtime_kind = kind,
                Ok((core, Err(error))) => {
                    self.stop();
                    return Err(StartError::Core { core, error });
                }
                Err(_) => {
                    self.stop();
                    return Err(StartError::Core {
                        core: 0,
                        error: "core thread exited".into(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Number of cores (and shards).
    pub fn shard_count(&self) -> u32 {
        self.cores.len() as u32
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The I/O driver the cores run on (`IoUring`, `Poll` or `IOCP`).
    pub fn runtime_kind(&self) -> &str {
        &self.runtime_kind
    }

    /// Runs `request` from a thread outside the engine, entering at the core that owns it
    /// (core 0 for requests that touch several). Blocks until the answer is there.
    pub fn call(&self, request: Request) -> Response {
        let core = match request.route(self.shard_count()) {
            Route::Shard(shard) if shard < self.shard_count() => shard as usize,
            Route::Shard(_) | Route::Any | Route::Scatter => 0,
        };
        self.call_via(core, request)
    }

    /// Runs `request` entering at `core`, which forwards it if another core owns it.
    pub fn call_via(&self, core: usize, request: Request) -> Response {
        let (reply, answer) = sync_channel(1);
        if !self.submit(core, External::Call { request, reply }) {
            return Response::Error(Error::ShuttingDown);
        }
        answer
            .recv()
            .unwrap_or(Response::Error(Error::ShuttingDown))
    }

    /// Runs `function` on `core`'s thread with its [`CoreContext`] (it may spawn tasks there
    /// with `compio::runtime::spawn`). Returns false if the engine is stopping.
    pub fn run_on(&self, core: usize, function: impl FnOnce(CoreContext) + Send + 'static) -> bool {
        self.submit(core, External::Run(Box::new(function)))
    }

    fn submit(&self, core: usize, job: External) -> bool {
        let Some(handle) = self.cores.get(core) else {
            return false;
        };
        if self.shared[core].stop.load(Ordering::Acquire) {
            return false;
        }
        // Blocks while the core's external queue is full: back-pressure, not growth.
        if handle.external.send(job).is_err() {
            return false;
        }
        self.shared[core]
            .external_pending
            .fetch_add(1, Ordering::SeqCst);
        self.shared[core].doorbell.ring();
        true
    }

    /// Stops every core and waits for its thread; returns how long it took.
    pub fn shutdown(mut self) -> Duration {
        self.stop()
    }

    fn stop(&mut self) -> Duration {
        let started = self.config.clock.monotonic();
        for core in self.shared.iter() {
            core.stop.store(true, Ordering::Release);
            core.doorbell.ring();
        }
        for core in &mut self.cores {
            if let Some(thread) = core.thread.take() {
                let _ = thread.join();
            }
        }
        self.config.clock.monotonic().duration_since(started)
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One core's links to each peer (`[peer]`, `None` for itself): its requests and their responses.
type OutboundLinks = Vec<Option<(Producer<RequestMessage>, Consumer<ResponseMessage>)>>;
/// One core's links from each peer (`[peer]`, `None` for itself): their requests and its responses.
type InboundLinks = Vec<Option<(Consumer<RequestMessage>, Producer<ResponseMessage>)>>;
/// What a core restores and where it logs (persistence on).
type CoreStart = Option<(ShardImage, CoreLogConfig)>;
/// A core's start-up report: its index and its I/O driver's name, or why it failed.
type ReadyReport = (usize, Result<String, String>);

/// Checks the settings the engine relies on; returns each shard's share of the memory budget.
fn check_config(config: &EngineConfig) -> Result<u64, StartError> {
    let core_count = config.cores;
    if core_count == 0 || core_count as u64 > u64::from(limits::SHARDS_MAX) {
        return Err(StartError::InvalidConfig(format!(
            "cores must be between 1 and {}, not {core_count}",
            limits::SHARDS_MAX
        )));
    }
    if !config.inbox_depth.is_power_of_two()
        || config.inbox_depth < 2
        || config.inbox_depth > 1 << 20
    {
        return Err(StartError::InvalidConfig(format!(
            "inbox depth must be a power of two between 2 and 1048576, not {}",
            config.inbox_depth
        )));
    }
    let shard_budget = config.memory_bytes_limit / core_count as u64;
    if shard_budget == 0 {
        return Err(StartError::InvalidConfig("memory budget is zero".into()));
    }
    Ok(shard_budget)
}

/// Builds the mesh: for each ordered pair (from, to), a request ring and its response ring.
fn build_mesh(core_count: usize, depth: usize) -> (Vec<OutboundLinks>, Vec<InboundLinks>) {
    let mut outbound: Vec<OutboundLinks> = (0..core_count)
        .map(|_| (0..core_count).map(|_| None).collect())
        .collect();
    let mut inbound: Vec<InboundLinks> = (0..core_count)
        .map(|_| (0..core_count).map(|_| None).collect())
        .collect();
    for from in 0..core_count {
        for to in 0..core_count {
            if from == to {
                continue;
            }
            let (request_producer, request_consumer) = ring(depth);
            let (response_producer, response_consumer) = ring(depth);
            outbound[from][to] = Some((request_producer, response_consumer));
            inbound[to][from] = Some((request_consumer, response_producer));
        }
    }
    (outbound, inbound)
}

/// Locks and recovers the data directory (persistence on); returns it and each core's start.
fn recover(config: &EngineConfig) -> Result<(Option<FsStorage>, Vec<CoreStart>), StartError> {
    let core_count = config.cores;
    let limits =
        veddb_persist::EntryLimits::new(config.shard.key_bytes_max, config.shard.value_bytes_max);
    let Some(persistence) = &config.persistence else {
        return Ok((None, (0..core_count).map(|_| None).collect()));
    };
    let opened = persist::open(persistence, core_count as u32, limits, &*config.clock)
        .map_err(StartError::Persistence)?;
    let starts = opened
        .shards
        .into_iter()
        .map(|start| {
            Some((
                start.image,
                CoreLogConfig {
                    dir: persistence.dir.clone(),
                    generation: start.generation,
                    shard_count: core_count as u32,
                    next_sequence: start.next_sequence,
                    policy: persistence.fsync,
                    limits,
                    snapshot_interval: persistence.snapshot_interval,
                    faults: persistence.faults.clone(),
                },
            ))
        })
        .collect();
    Ok((Some(opened.storage), starts))
}

/// The settings of core `index`'s shard: its share of the memory and its own hash seed.
fn shard_config(config: &EngineConfig, index: usize, shard_budget: u64) -> veddb_shard::Config {
    let mut shard_config = config.shard.clone();
    shard_config.memory_bytes_limit = shard_budget;
    // A per-process random seed: the table's hash depends on it, so clients cannot
    // predict bucket positions and flood one bucket with crafted keys.
    shard_config.seed =
        config.shard.seed ^ process_seed() ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    shard_config
}

fn core_thread(
    index: usize,
    pin: Option<usize>,
    wiring: CoreWiring,
    shard_config: veddb_shard::Config,
    setup: Vec<CoreSetup>,
    start: CoreStart,
    ready: SyncSender<ReadyReport>,
) {
    let mut builder = compio::runtime::RuntimeBuilder::new();
    if let Some(cpu) = pin {
        builder.thread_affinity(HashSet::from([cpu]));
    }
    let runtime = match builder.build() {
        Ok(runtime) => runtime,
        Err(error) => {
            let _ = ready.send((
                index,
                Err(format!("cannot create the I/O runtime: {error}")),
            ));
            return;
        }
    };
    let kind = format!("{:?}", runtime.driver_type());
    let mut shard = Shard::new(index as u32, shard_config);
    let sources: Vec<_> = setup
        .iter()
        .filter_map(|setup| (setup.0)(index as u32, &mut shard))
        .collect();
    let log = match start {
        Some((image, log_config)) => {
            let (started, keys) = (wiring.clock.monotonic(), image.entries.len());
            if let Err(error) = restore_shard(&mut shard, image) {
                let _ = ready.send((index, Err(error)));
                return;
            }
            tracing::info!(
                core = index,
                keys,
                elapsed_ms = wiring.clock.monotonic().duration_since(started).as_millis() as u64,
                "loaded the recovered keys into the shard"
            );
            Some(CoreLog::new(index as u32, log_config))
        }
        None => None,
    };
    let context = CoreContext::new(wiring, shard, log, sources);
    tracing::debug!(core = index, cpu = ?pin, driver = %kind, "core started");
    let _ = ready.send((index, Ok(kind)));
    drop(ready);
    runtime.block_on(context.run());
    tracing::debug!(core = index, "core stopped");
}

/// A random value per process (std's randomly keyed hasher, hashing nothing).
fn process_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}
