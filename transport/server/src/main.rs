//! `veddb-server`: starts the thread-per-core engine with the original VedDB flags.
#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use argh::FromArgs;
use veddb_engine::persist::PersistConfig;
use veddb_engine::{available_cpus, Engine, EngineConfig, FsyncPolicy};
use veddb_shard::Eviction;
use veddb_transport::grpc::GrpcFrontend;
use veddb_transport::local::LocalFrontendHandle;
use veddb_transport::Frontend;
use veddb_wire::limits;

/// VedDB server: a thread-per-core key-value store and pub/sub broker.
#[derive(FromArgs, Debug)]
struct Args {
    /// instance name (names the shared-memory instance of local clients)
    #[argh(option, default = "String::from(\"veddb_main\")")]
    name: String,

    /// data budget in MiB for the whole instance, split evenly over the cores (default 64)
    #[argh(option, default = "64")]
    memory_mb: u64,

    /// number of cores (threads, shards); default: all CPUs
    #[argh(option)]
    cores: Option<usize>,

    /// alias of --cores (the original flag)
    #[argh(option)]
    workers: Option<usize>,

    /// gRPC port (default 50051); every core listens on it (SO_REUSEPORT)
    #[argh(option, default = "50051")]
    port: u16,

    /// address the gRPC port listens on (default 127.0.0.1; 0.0.0.0 for every interface)
    #[argh(
        option,
        default = "std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)"
    )]
    bind: std::net::IpAddr,

    /// serve gRPC over TLS with this PEM certificate chain (needs --tls-key)
    #[argh(option)]
    tls_cert: Option<std::path::PathBuf>,

    /// PEM private key of --tls-cert
    #[argh(option)]
    tls_key: Option<std::path::PathBuf>,

    /// largest gRPC message in bytes, received or sent, 1024 to 1073741824 (default: follows
    /// --value-bytes-max: the largest key plus the largest value plus 64 KiB of framing, at least
    /// 4194304; 16908288 with the default limits); a message over it gets RESOURCE_EXHAUSTED
    #[argh(option)]
    grpc_message_bytes_max: Option<usize>,

    /// seconds after which a silent local client is detached (default 300)
    #[argh(option, default = "300")]
    session_timeout: u64,

    /// create the shared-memory instance named by --name and serve local clients through it
    /// (Linux; a live instance of that name is refused, a stale one from a crashed server is
    /// replaced)
    #[argh(switch)]
    create: bool,

    /// permission bits of the attach socket, octal (default 600; 660 lets the owner's group
    /// attach); the instance file gets only their read bits, so only the server writes it
    #[argh(option, default = "ShmMode(0o600)")]
    shm_mode: ShmMode,

    /// most local clients attached at once; past it an attach is refused with the reason
    /// (default: as many as the descriptor limit allows, raised to the hard limit at start, after
    /// a reserve for the server's own use; see docs/shm-layout.md)
    #[argh(option)]
    max_sessions: Option<usize>,

    /// milliseconds a local client's zero-copy value view is guaranteed to stay intact
    /// (default 10000); past it the server may reuse the block, which the view detects
    #[argh(option, default = "10_000")]
    shm_view_lease_ms: u64,

    /// work one local session may have started and not answered on one core, in request-cost
    /// units (a GET 1, a batch or SCAN one per key; default 1024); past it the core stops
    /// reading that session's ring until some finishes
    #[argh(
        option,
        default = "veddb_transport::local::SESSION_IN_FLIGHT_MAX_DEFAULT"
    )]
    session_in_flight_max: usize,

    /// mebibytes one local session may have queued on one core, answers it has not read plus
    /// requests in flight (default 4); past it the core stops reading its ring, and a session
    /// that leaves its answers unread is cut off
    #[argh(option, default = "4")]
    session_queue_mb: usize,

    /// mebibytes all local sessions together may have queued (default 256); past it every session
    /// holding unread answers is paused until they drain
    #[argh(option, default = "256")]
    local_queue_mb: usize,

    /// debug logging
    #[argh(switch)]
    debug: bool,

    /// what to do when the memory budget is full: noeviction (refuse writes with
    /// OUT_OF_MEMORY, the default) or lru (evict approximately least-recently-used keys)
    #[argh(option, default = "EvictionArg(Eviction::NoEviction)")]
    eviction: EvictionArg,

    /// largest key in bytes (default 65536)
    #[argh(option, default = "limits::KEY_BYTES_MAX_DEFAULT")]
    key_bytes_max: usize,

    /// largest value or message in bytes (default 16777216)
    #[argh(option, default = "limits::VALUE_BYTES_MAX_DEFAULT")]
    value_bytes_max: usize,

    /// microseconds an idle core polls before it parks (default 50)
    #[argh(option, default = "50")]
    spin_us: u64,

    /// requests one core may have in flight to another (power of two, default 256)
    #[argh(option, default = "veddb_engine::INBOX_DEPTH_DEFAULT")]
    inbox_depth: usize,

    /// log format: text (default) or json
    #[argh(option, default = "LogFormat::Text")]
    log_format: LogFormat,

    /// turn persistence on: the write-ahead log and snapshots live in this directory
    /// (created if missing; one server per directory). Default: off, a pure in-memory store
    #[argh(option)]
    data_dir: Option<std::path::PathBuf>,

    /// with --data-dir, when a write is acknowledged: always (after the fsync that covers it,
    /// group commit; the default), everysec (after the write; fsync once a second), no (after
    /// the write; the OS flushes)
    #[argh(option, default = "FsyncArg(FsyncPolicy::Always)")]
    fsync: FsyncArg,

    /// with --data-dir, seconds between automatic snapshots of each shard whose log grew
    /// (default 300; 0: only on the SNAPSHOT command)
    #[argh(option, default = "300")]
    snapshot_interval: u64,

    /// with --data-dir: cut each damaged log at its first bad record (the file is backed up
    /// first as <file>.bak), report what was done, and exit
    #[argh(switch)]
    repair: bool,
}

#[derive(Debug, Clone, Copy)]
struct ShmMode(u32);

impl argh::FromArgValue for ShmMode {
    fn from_arg_value(value: &str) -> Result<Self, String> {
        match u32::from_str_radix(value.trim_start_matches("0o"), 8) {
            Ok(mode) if mode & !0o666 == 0 && mode & 0o600 == 0o600 => Ok(ShmMode(mode)),
            _ => Err(format!(
                "--shm-mode must be octal permission bits with owner read-write and no execute bits (600, 660, 666), not {value}"
            )),
        }
    }
}

#[derive(Debug)]
struct FsyncArg(FsyncPolicy);

impl argh::FromArgValue for FsyncArg {
    fn from_arg_value(value: &str) -> Result<Self, String> {
        match value {
            "always" => Ok(FsyncArg(FsyncPolicy::Always)),
            "everysec" => Ok(FsyncArg(FsyncPolicy::EverySec)),
            "no" => Ok(FsyncArg(FsyncPolicy::No)),
            other => Err(format!(
                "unknown fsync policy `{other}`: use always, everysec or no"
            )),
        }
    }
}

#[derive(Debug)]
struct EvictionArg(Eviction);

impl argh::FromArgValue for EvictionArg {
    fn from_arg_value(value: &str) -> Result<Self, String> {
        match value {
            "noeviction" | "none" => Ok(EvictionArg(Eviction::NoEviction)),
            "lru" => Ok(EvictionArg(Eviction::Lru)),
            other => Err(format!(
                "unknown eviction policy `{other}`: use noeviction or lru"
            )),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum LogFormat {
    Text,
    Json,
}

impl argh::FromArgValue for LogFormat {
    fn from_arg_value(value: &str) -> Result<Self, String> {
        match value {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format `{other}`: use text or json")),
        }
    }
}

fn init_logging(args: &Args) {
    let default = if args.debug { "debug" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("VEDDB_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Checks the flags; the error names the flag and says what is allowed.
fn engine_config(args: &Args) -> Result<EngineConfig, String> {
    let cores = match (args.cores, args.workers) {
        (Some(cores), Some(workers)) if cores != workers => {
            return Err(format!(
            "--cores {cores} and --workers {workers} disagree (--workers is an alias of --cores)"
        ))
        }
        (Some(cores), _) | (None, Some(cores)) => cores,
        (None, None) => available_cpus(),
    };
    if cores == 0 || cores as u64 > u64::from(limits::SHARDS_MAX) {
        return Err(format!(
            "--cores must be between 1 and {}, not {cores}",
            limits::SHARDS_MAX
        ));
    }
    if args.memory_mb == 0 || args.memory_mb > (1 << 30) {
        return Err(format!(
            "--memory-mb must be between 1 and {}, not {}",
            1u64 << 30,
            args.memory_mb
        ));
    }
    if args.key_bytes_max == 0
        || args.key_bytes_max > args.value_bytes_max.max(limits::KEY_BYTES_MAX_DEFAULT)
    {
        return Err(format!(
            "--key-bytes-max must be between 1 and --value-bytes-max, not {}",
            args.key_bytes_max
        ));
    }
    if args.value_bytes_max > limits::VALUE_BYTES_MAX_UPPER {
        return Err(format!(
            "--value-bytes-max is at most 1 GiB, not {}",
            args.value_bytes_max
        ));
    }
    if !args.inbox_depth.is_power_of_two() || args.inbox_depth < 2 || args.inbox_depth > 1 << 20 {
        return Err(format!(
            "--inbox-depth must be a power of two between 2 and 1048576, not {}",
            args.inbox_depth
        ));
    }
    if let Some(bytes) = args.grpc_message_bytes_max {
        if !(GRPC_MESSAGE_BYTES_MAX_LOWEST..=GRPC_MESSAGE_BYTES_MAX_HIGHEST).contains(&bytes) {
            return Err(format!(
                "--grpc-message-bytes-max must be between {GRPC_MESSAGE_BYTES_MAX_LOWEST} and \
                 {GRPC_MESSAGE_BYTES_MAX_HIGHEST}, not {bytes}"
            ));
        }
    }
    if args.tls_cert.is_some() != args.tls_key.is_some() {
        return Err("--tls-cert and --tls-key go together".into());
    }
    if args.spin_us > 1_000_000 {
        return Err(format!(
            "--spin-us is at most 1000000, not {}",
            args.spin_us
        ));
    }
    if args.session_timeout == 0 {
        return Err("--session-timeout must be at least 1 second".into());
    }
    if args.session_in_flight_max == 0 {
        return Err("--session-in-flight-max must be at least 1".into());
    }
    if !(1..=4096).contains(&args.session_queue_mb) {
        return Err(format!(
            "--session-queue-mb must be between 1 and 4096, not {}",
            args.session_queue_mb
        ));
    }
    if !(1..=1 << 20).contains(&args.local_queue_mb) {
        return Err(format!(
            "--local-queue-mb must be between 1 and 1048576, not {}",
            args.local_queue_mb
        ));
    }
    if args.max_sessions == Some(0) {
        return Err("--max-sessions must be at least 1".into());
    }
    if args.data_dir.is_none() && args.repair {
        return Err("--repair needs --data-dir".into());
    }
    if args.snapshot_interval > 365 * 24 * 3600 {
        return Err(format!(
            "--snapshot-interval is at most a year ({} seconds), not {}",
            365 * 24 * 3600,
            args.snapshot_interval
        ));
    }
    let mut config = EngineConfig {
        cores,
        pin_threads: true,
        memory_bytes_limit: args.memory_mb << 20,
        inbox_depth: args.inbox_depth,
        spin: Duration::from_micros(args.spin_us),
        ..EngineConfig::default()
    };
    config.shard.eviction = args.eviction.0;
    config.shard.key_bytes_max = args.key_bytes_max;
    config.shard.value_bytes_max = args.value_bytes_max;
    config.persistence = args.data_dir.as_ref().map(|dir| PersistConfig {
        fsync: args.fsync.0,
        snapshot_interval: (args.snapshot_interval > 0)
            .then(|| Duration::from_secs(args.snapshot_interval)),
        ..PersistConfig::new(dir)
    });
    Ok(config)
}

/// Large allocations (a core's key table above all) on transparent huge pages where the system
/// allows it: fewer TLB misses per lookup in a large table (`veddb_shm::HugePageAlloc`). On
/// Linux over mimalloc: a request's small allocations cost a third of glibc's.
#[cfg(target_os = "linux")]
#[global_allocator]
static ALLOCATOR: veddb_shm::HugePageAlloc<veddb_shm::MiMalloc> =
    veddb_shm::HugePageAlloc::new(veddb_shm::MiMalloc);
#[cfg(not(target_os = "linux"))]
#[global_allocator]
static ALLOCATOR: veddb_shm::HugePageAlloc = veddb_shm::HugePageAlloc::system();

fn main() -> ExitCode {
    let (args, config) = match parse_args() {
        Ok(parsed) => parsed,
        Err(code) => return code,
    };
    init_logging(&args);
    if args.repair {
        return repair(&config);
    }
    match serve(&args, config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => code,
    }
}

/// Reads the flags and checks them; a bad flag is reported on stderr with exit code 2.
fn parse_args() -> Result<(Args, EngineConfig), ExitCode> {
    let args: Args = argh::from_env();
    match engine_config(&args) {
        Ok(config) => Ok((args, config)),
        Err(message) => {
            eprintln!("veddb-server: {message}");
            eprintln!("Run veddb-server --help for usage information.");
            Err(ExitCode::from(2))
        }
    }
}

/// Starts the server, serves until SIGINT or SIGTERM and stops it; a failed step logs why.
fn serve(args: &Args, mut config: EngineConfig) -> Result<(), ExitCode> {
    // Signals first, so a SIGTERM during start-up is not lost.
    let stop_signals = install_stop_signals()?;
    // Every frontend is made before the engine: the shared-memory one creates the instance
    // each core's shard keeps its values in, and brings its rings into each core's loop.
    let mut frontends = make_frontends(args, &config)?;
    config.core_setup.extend(
        frontends
            .iter()
            .filter_map(|frontend| frontend.core_setup()),
    );
    let engine = start_engine(&config)?;
    if let Err(code) = start_frontends(&mut frontends, &engine) {
        for frontend in frontends.iter_mut() {
            frontend.shutdown();
        }
        engine.shutdown();
        return Err(code);
    }
    log_ready(args, &config, &engine);
    // With --debug, log the gathered INFO every 10 s.
    let engine = Arc::new(engine);
    let stopping = Arc::new(AtomicBool::new(false));
    let reporter = args.debug.then(|| spawn_stats_reporter(&engine, &stopping));
    let signal = stop_signals.wait();
    tracing::info!(?signal, "stopping");
    shut_down(frontends, engine, &stopping, reporter)
}

/// Installs the SIGINT and SIGTERM handlers.
fn install_stop_signals() -> Result<StopSignals, ExitCode> {
    StopSignals::install().map_err(|error| {
        tracing::error!(%error, "cannot install signal handlers");
        ExitCode::FAILURE
    })
}

/// The frontends this server runs: gRPC always (its TLS files loaded now, so a bad one fails
/// the start before anything listens), shared memory with --create (its instance created).
fn make_frontends(args: &Args, config: &EngineConfig) -> Result<Vec<Box<dyn Frontend>>, ExitCode> {
    let mut frontends: Vec<Box<dyn Frontend>> = vec![Box::new(grpc_frontend(args)?)];
    if args.create {
        frontends.push(Box::new(local_frontend(args, config)?));
    } else {
        tracing::info!(
            "local clients: off (start with --create to serve them through shared memory)"
        );
    }
    Ok(frontends)
}

/// The gRPC frontend, with its TLS certificate (with --tls-cert) loaded.
fn grpc_frontend(args: &Args) -> Result<GrpcFrontend, ExitCode> {
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(certificate), Some(key)) => match veddb_transport::grpc::tls_config(certificate, key)
        {
            Ok(tls) => Some(tls),
            Err(error) => {
                tracing::error!(%error, "cannot load the TLS certificate");
                return Err(ExitCode::FAILURE);
            }
        },
        _ => None,
    };
    let fitting = veddb_wire::grpc::message_bytes_max_for(args.key_bytes_max, args.value_bytes_max);
    if let Some(limit) = args.grpc_message_bytes_max.filter(|&limit| limit < fitting) {
        tracing::warn!(
            grpc_message_bytes_max = limit,
            value_bytes_max = args.value_bytes_max,
            "--grpc-message-bytes-max is under what the largest key and value need ({fitting}): \
             values near --value-bytes-max can be stored only through shared memory"
        );
    }
    Ok(GrpcFrontend::new(veddb_transport::grpc::GrpcConfig {
        bind: args.bind,
        port: args.port,
        message_bytes_max: grpc_message_bytes_max(args),
        tls,
        ..Default::default()
    }))
}

/// The range `--grpc-message-bytes-max` may be given in.
const GRPC_MESSAGE_BYTES_MAX_LOWEST: usize = 1024;
const GRPC_MESSAGE_BYTES_MAX_HIGHEST: usize = 1 << 30;

/// `--grpc-message-bytes-max`, or when it is not given a limit that every key and value the
/// engine accepts fits in ([`veddb_wire::grpc::message_bytes_max_for`]). That default may be
/// over the flag's own highest value: with `--value-bytes-max` at its 1 GiB maximum it is
/// 1 GiB plus the key limit plus 64 KiB, so that the largest value still fits.
fn grpc_message_bytes_max(args: &Args) -> usize {
    let fitting = veddb_wire::grpc::message_bytes_max_for(args.key_bytes_max, args.value_bytes_max);
    args.grpc_message_bytes_max.unwrap_or(fitting)
}

/// The shared-memory frontend: creates the instance that local clients attach to.
fn local_frontend(args: &Args, config: &EngineConfig) -> Result<LocalFrontendHandle, ExitCode> {
    let mut local_config = veddb_transport::local::LocalConfig::new(
        &args.name,
        config.memory_bytes_limit,
        config.cores,
    );
    local_config.mode = args.shm_mode.0;
    local_config.view_lease = Duration::from_millis(args.shm_view_lease_ms.max(1));
    local_config.session_timeout = Duration::from_secs(args.session_timeout);
    local_config.session_in_flight_max = args.session_in_flight_max;
    local_config.session_queued_bytes_max = args.session_queue_mb << 20;
    local_config.queued_bytes_max = args.local_queue_mb << 20;
    local_config.sessions_max = args.max_sessions;
    local_config.value_bytes_max = config.shard.value_bytes_max;
    LocalFrontendHandle::prepare(&local_config, config.cores, config.clock.clone()).map_err(
        |error| {
            tracing::error!(%error, "cannot create the shared-memory instance");
            ExitCode::FAILURE
        },
    )
}

/// Starts the engine's cores.
fn start_engine(config: &EngineConfig) -> Result<Engine, ExitCode> {
    Engine::start(config.clone()).map_err(|error| {
        tracing::error!(%error, "cannot start");
        ExitCode::FAILURE
    })
}

/// Starts every frontend on the running engine, in order; each logs where it serves.
fn start_frontends(frontends: &mut [Box<dyn Frontend>], engine: &Engine) -> Result<(), ExitCode> {
    for frontend in frontends.iter_mut() {
        if let Err(error) = frontend.start(engine) {
            tracing::error!(%error, "cannot start the {} frontend", frontend.name());
            return Err(ExitCode::FAILURE);
        }
    }
    Ok(())
}

/// "veddb-server ready", with the settings it runs with: logged once every frontend serves.
fn log_ready(args: &Args, config: &EngineConfig, engine: &Engine) {
    tracing::info!(
        name = %args.name,
        cores = engine.shard_count(),
        driver = engine.runtime_kind(),
        memory_mb = args.memory_mb,
        eviction = ?config.shard.eviction,
        key_bytes_max = config.shard.key_bytes_max,
        value_bytes_max = config.shard.value_bytes_max,
        grpc_message_bytes_max = grpc_message_bytes_max(args),
        spin_us = args.spin_us,
        data_dir = ?args.data_dir,
        fsync = ?config.persistence.as_ref().map(|p| p.fsync),
        "veddb-server ready"
    );
}

/// Spawns the thread that logs the gathered INFO every 10 s until `stopping` is set.
fn spawn_stats_reporter(engine: &Arc<Engine>, stopping: &Arc<AtomicBool>) -> JoinHandle<()> {
    let engine = engine.clone();
    let stopping = stopping.clone();
    std::thread::Builder::new()
        .name("veddb-stats".into())
        .spawn(move || report_stats(&engine, &stopping))
        .expect("spawn the stats thread")
}

/// Stops in order: the frontends, a moment for calls in flight, the stats thread, the engine.
fn shut_down(
    mut frontends: Vec<Box<dyn Frontend>>,
    engine: Arc<Engine>,
    stopping: &AtomicBool,
    reporter: Option<JoinHandle<()>>,
) -> Result<(), ExitCode> {
    // New calls get UNAVAILABLE, health says NOT_SERVING, local clients are told; give calls
    // in flight a moment.
    for frontend in frontends.iter_mut() {
        frontend.shutdown();
    }
    std::thread::sleep(Duration::from_millis(100));
    stopping.store(true, std::sync::atomic::Ordering::SeqCst);
    if let Some(reporter) = reporter {
        reporter.thread().unpark();
        let _ = reporter.join();
    }
    let Ok(engine) = Arc::try_unwrap(engine) else {
        tracing::error!("engine still in use at shutdown");
        return Err(ExitCode::FAILURE);
    };
    let took = engine.shutdown();
    drop(frontends);
    tracing::info!(took_ms = took.as_millis() as u64, "stopped");
    Ok(())
}

/// SIGINT and SIGTERM, caught from the start.
#[cfg(unix)]
struct StopSignals(signal_hook::iterator::Signals);

#[cfg(unix)]
impl StopSignals {
    fn install() -> std::io::Result<StopSignals> {
        signal_hook::iterator::Signals::new([
            signal_hook::consts::SIGINT,
            signal_hook::consts::SIGTERM,
        ])
        .map(StopSignals)
    }

    /// Blocks until one arrives; which one.
    fn wait(mut self) -> Option<i32> {
        self.0.forever().next()
    }
}

/// Ctrl-C (SIGINT) and SIGTERM where there is no signal iterator (Windows).
#[cfg(not(unix))]
struct StopSignals(std::sync::Arc<std::sync::atomic::AtomicUsize>);

#[cfg(not(unix))]
impl StopSignals {
    fn install() -> std::io::Result<StopSignals> {
        let caught = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::flag::register_usize(signal, caught.clone(), signal as usize)?;
        }
        Ok(StopSignals(caught))
    }

    fn wait(self) -> Option<i32> {
        loop {
            let signal = self.0.load(std::sync::atomic::Ordering::SeqCst);
            if signal != 0 {
                return Some(signal as i32);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `--repair`: cuts damaged logs (after backups) and exits.
fn repair(config: &EngineConfig) -> ExitCode {
    let Some(persistence) = &config.persistence else {
        return ExitCode::from(2);
    };
    let limits =
        veddb_persist::EntryLimits::new(config.shard.key_bytes_max, config.shard.value_bytes_max);
    match veddb_engine::persist::repair(
        &persistence.dir,
        config.cores as u32,
        limits,
        &*config.clock,
    ) {
        Ok(actions) if actions.is_empty() => {
            println!(
                "{}: nothing to repair (every log reads cleanly)",
                persistence.dir.display()
            );
            ExitCode::SUCCESS
        }
        Ok(actions) => {
            for action in &actions {
                println!("{action}");
            }
            println!(
                "{}: repaired; records after each cut are lost, everything before is kept",
                persistence.dir.display()
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("veddb-server: {error}");
            ExitCode::FAILURE
        }
    }
}

fn report_stats(engine: &Engine, stopping: &std::sync::atomic::AtomicBool) {
    use std::sync::atomic::Ordering;
    loop {
        std::thread::park_timeout(Duration::from_secs(10));
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        if let veddb_wire::Response::Info(info) = engine.call(veddb_wire::Request::Info) {
            let total = info.total();
            tracing::debug!(
                ops = total.ops,
                hits = total.hits,
                misses = total.misses,
                keys = total.keys,
                memory_bytes_used = total.memory_bytes_used,
                expired_keys = total.expired_keys,
                evicted_keys = total.evicted_keys,
                forwarded_in = total.forwarded_in,
                "stats"
            );
        }
    }
}
