//! What the server's process tests (crash.rs, local.rs) share: a child's stderr captured into a
//! log, a small reproducible random generator, and a temporary directory.
// Each test crate uses a part of this module.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Reads the child's piped stderr into a shared log on a thread of its own (joined once the
/// child is gone).
pub fn capture_stderr(child: &mut Child) -> (Arc<Mutex<String>>, JoinHandle<()>) {
    let stderr = child.stderr.take().expect("stderr piped");
    let log = Arc::new(Mutex::new(String::new()));
    let reader = {
        let log = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut log = log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        })
    };
    (log, reader)
}

/// xorshift64*: enough randomness for kill timings and garbage, reproducible from the printed
/// seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    /// Seeded from the environment variable `variable` if set, else from the clock; the seed is
    /// printed so a failing run can be replayed.
    pub fn seeded(variable: &str, test: &str) -> Rng {
        let seed = std::env::var(variable)
            .ok()
            .and_then(|seed| seed.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    ^ u64::from(std::process::id())
            });
        eprintln!("{test}: {variable}={seed}");
        Rng::new(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform enough in `low..=high`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low + 1)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn fill(&mut self, bytes: &mut [u8]) {
        for chunk in bytes.chunks_mut(8) {
            let word = self.next().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }
}

/// A key (or topic) `TAG-N` owned by `core` of `cores`.
pub fn name_on(core: u32, cores: u32, tag: &str) -> String {
    (0..)
        .map(|i| format!("{tag}-{i}"))
        .find(|name| veddb_wire::shard_for_key(name.as_bytes(), cores) == core)
        .expect("some name lands on every core")
}

/// An instance name no other test of this process (or another test process) uses:
/// `PREFIX-PID-N`.
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// `HOST:PORT` from the server's "gRPC listening on every core address=..." log line.
pub fn listening_address(log: &str) -> Option<String> {
    let line = log.lines().find(|line| line.contains("gRPC listening"))?;
    let rest = &line[line.find("address=")? + "address=".len()..];
    Some(rest.split_whitespace().next()?.to_string())
}

/// Removes an instance's file and socket (a killed server leaves them behind).
pub fn remove_instance_files(name: &str) {
    use veddb_wire::shm::layout::instance;
    let _ = std::fs::remove_file(instance::path(name));
    let _ = std::fs::remove_file(instance::socket_path(name));
}

/// A fresh directory under the system's temporary directory; removed on drop unless the test
/// failed (then it is kept for inspection and its path printed).
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let path =
            std::env::temp_dir().join(format!("veddb-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The path as a command-line argument.
    pub fn arg(&self) -> &str {
        self.0.to_str().expect("a UTF-8 temporary directory")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test failed: data directory kept at {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
