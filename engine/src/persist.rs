//! Persistence at start-up (`--data-dir`): the data directory over `std::fs`, its lock,
//! recovery, `--repair`. The running part (each core's write-ahead log and snapshots through
//! its runtime) is in `core/log.rs`; the formats and rules are the `veddb-persist` crate.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use veddb_persist::procedure::{self, RecoverOptions, RepairAction};
use veddb_persist::recovery::ShardImage;
use veddb_persist::storage::{FileInfo, Storage};
use veddb_persist::writer::FsyncPolicy;
use veddb_persist::EntryLimits;

/// The lock file in the data directory: held (an exclusive advisory lock) by the one server
/// that uses the directory.
pub const LOCK_FILE: &str = "LOCK";

/// Default of `--snapshot-interval`.
pub const SNAPSHOT_INTERVAL_DEFAULT: Duration = Duration::from_secs(300);

/// Persistence settings (`--data-dir`, `--fsync`, `--snapshot-interval`).
#[derive(Clone, Debug)]
pub struct PersistConfig {
    pub dir: PathBuf,
    pub fsync: FsyncPolicy,
    /// Each shard takes a snapshot this often when its log grew since the last one; `None`:
    /// only on the SNAPSHOT command.
    pub snapshot_interval: Option<Duration>,
    /// Faults to inject under the running log and snapshot writers (tests only).
    #[doc(hidden)]
    pub faults: Faults,
}

/// The test seam under each core's log and snapshot writers: I/O failures injected in place
/// of the real system call's result, per shard. Counts are 1-based and per shard.
#[doc(hidden)]
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// The n-th log write fails with this OS error number (ENOSPC = 28: a full disk).
    pub fail_write: Option<(u64, i32)>,
    /// The n-th log write writes only this many bytes (a short write).
    pub short_write: Option<(u64, usize)>,
    /// The n-th log fsync fails with this OS error number (EIO = 5).
    pub fail_fsync: Option<(u64, i32)>,
    /// Every snapshot write fails with this OS error number.
    pub fail_snapshot_write: Option<i32>,
    /// Only on these shards (empty: every shard).
    pub shards: Vec<u32>,
}

impl PersistConfig {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        PersistConfig {
            dir: dir.into(),
            fsync: FsyncPolicy::Always,
            snapshot_interval: Some(SNAPSHOT_INTERVAL_DEFAULT),
            faults: Faults::default(),
        }
    }
}

/// The data directory through `std::fs`: what start-up, `--repair` and log trimming use.
/// Holds the directory's lock while it lives.
pub struct FsStorage {
    dir: PathBuf,
    open: HashMap<String, File>,
    _lock: Option<File>,
}

impl FsStorage {
    /// Opens (creating it if needed) and locks `dir`. Fails if another process holds it.
    pub fn lock(dir: &Path) -> Result<FsStorage, String> {
        fs::create_dir_all(dir).map_err(|error| {
            format!(
                "cannot create the data directory {}: {error}",
                dir.display()
            )
        })?;
        let path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|error| format!("cannot open {}: {error}", path.display()))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(format!(
                    "the data directory {} is in use by another VedDB process (it holds {})",
                    dir.display(),
                    path.display()
                ))
            }
            Err(fs::TryLockError::Error(error)) => {
                return Err(format!("cannot lock {}: {error}", path.display()))
            }
        }
        Ok(FsStorage {
            dir: dir.to_owned(),
            open: HashMap::new(),
            _lock: Some(lock),
        })
    }

    /// The directory without taking its lock (a core trimming its own shard's files while
    /// the engine holds the lock).
    pub(crate) fn unlocked(dir: &Path) -> FsStorage {
        FsStorage {
            dir: dir.to_owned(),
            open: HashMap::new(),
            _lock: None,
        }
    }

    fn path(&self, name: &str) -> io::Result<PathBuf> {
        if name.is_empty() || name.contains(['/', '\\']) || name == "." || name == ".." {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name:?} is not a plain file name"),
            ));
        }
        Ok(self.dir.join(name))
    }

    fn file(&mut self, name: &str) -> io::Result<&mut File> {
        if !self.open.contains_key(name) {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(self.path(name)?)?;
            self.open.insert(name.to_owned(), file);
        }
        Ok(self.open.get_mut(name).expect("just inserted"))
    }
}

impl Storage for FsStorage {
    fn create(&mut self, name: &str) -> io::Result<()> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(self.path(name)?)?;
        self.open.insert(name.to_owned(), file);
        Ok(())
    }

    fn open(&mut self, name: &str) -> io::Result<u64> {
        Ok(self.file(name)?.metadata()?.len())
    }

    fn read_at(&mut self, name: &str, offset: u64, length: usize) -> io::Result<Vec<u8>> {
        let file = self.file(name)?;
        file.seek(SeekFrom::Start(offset))?;
        let mut bytes = Vec::new();
        file.take(length as u64).read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    fn append(&mut self, name: &str, bytes: &[u8]) -> io::Result<usize> {
        let file = self.file(name)?;
        file.seek(SeekFrom::End(0))?;
        file.write(bytes)
    }

    fn write_at(&mut self, name: &str, offset: u64, bytes: &[u8]) -> io::Result<usize> {
        let file = self.file(name)?;
        file.seek(SeekFrom::Start(offset))?;
        file.write(bytes)
    }

    fn fsync(&mut self, name: &str) -> io::Result<()> {
        self.file(name)?.sync_all()
    }

    fn truncate(&mut self, name: &str, length: u64) -> io::Result<()> {
        self.file(name)?.set_len(length)
    }

    fn rename(&mut self, from: &str, to: &str) -> io::Result<()> {
        let (from_path, to_path) = (self.path(from)?, self.path(to)?);
        self.open.remove(from);
        self.open.remove(to);
        fs::rename(from_path, to_path)
    }

    fn remove(&mut self, name: &str) -> io::Result<()> {
        let path = self.path(name)?;
        self.open.remove(name);
        fs::remove_file(path)
    }

    fn list(&mut self) -> io::Result<Vec<FileInfo>> {
        let mut files = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            // Another core's trim may remove a file between the listing and this look.
            let metadata = match entry.metadata() {
                Ok(metadata) => metadata,
                Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
                Err(error) => return Err(error),
            };
            if name == LOCK_FILE || !metadata.is_file() {
                continue;
            }
            files.push(FileInfo {
                name,
                size: metadata.len(),
            });
        }
        files.sort();
        Ok(files)
    }

    fn fsync_dir(&mut self) -> io::Result<()> {
        sync_dir(&self.dir)
    }
}

/// Makes a directory's entries durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        // Windows cannot open a directory for flushing; NTFS journals names itself.
        let _ = dir;
        Ok(())
    }
}

/// What start-up hands each core: its shard's recovered entries and where its log continues.
pub(crate) struct ShardStart {
    pub image: ShardImage,
    pub generation: u32,
    pub next_sequence: u64,
}

/// The recovered data directory, locked.
pub(crate) struct Opened {
    pub storage: FsStorage,
    pub shards: Vec<ShardStart>,
}

/// Locks and recovers the data directory for `shard_count` shards: newest snapshots, then the
/// logs, re-hashed if the shard count changed (then the new layout is committed before any
/// write). Warnings are logged; corruption stops the start with a message that names the file
/// and offset and points at `--repair`.
pub(crate) fn open(
    config: &PersistConfig,
    shard_count: u32,
    limits: EntryLimits,
    clock: &dyn crate::Clock,
) -> Result<Opened, String> {
    let mut storage = FsStorage::lock(&config.dir)?;
    let now = clock.unix_ms();
    let options = RecoverOptions {
        shard_count,
        now_ms: now,
        limits,
    };
    let started = clock.monotonic();
    // Shards load in parallel, each thread through its own handles on the directory (which
    // `storage` keeps locked).
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let dir = config.dir.clone();
    let fork = move || Box::new(FsStorage::unlocked(&dir)) as Box<dyn Storage + Send>;
    let mut recovered = procedure::recover_parallel(&mut storage, &options, threads, fork)
        .map_err(|error| {
            format!(
            "cannot recover {}: {error}; `veddb-server --repair --data-dir {}` cuts the log at \
             the first bad record (after making a backup)",
            config.dir.display(),
            config.dir.display()
        )
        })?;
    for warning in &recovered.warnings {
        tracing::warn!(dir = %config.dir.display(), "{warning}");
    }
    if recovered.commit_needed {
        tracing::info!(
            dir = %config.dir.display(),
            generation = recovered.layout.generation,
            shards = recovered.layout.shard_count,
            "writing a new layout (first start, or --cores changed)"
        );
    }
    procedure::commit_layout(&mut storage, &mut recovered, limits, now).map_err(|error| {
        format!(
            "cannot commit the layout in {}: {error}",
            config.dir.display()
        )
    })?;
    for file in &recovered.removed {
        tracing::info!(dir = %config.dir.display(), file, "removed an obsolete file");
    }
    let keys: usize = recovered
        .shards
        .iter()
        .map(|image| image.entries.len())
        .sum();
    tracing::info!(
        dir = %config.dir.display(),
        keys,
        generation = recovered.layout.generation,
        elapsed_ms = clock.monotonic().duration_since(started).as_millis() as u64,
        "recovered the data directory"
    );
    let generation = recovered.layout.generation;
    let shards = recovered
        .shards
        .into_iter()
        .zip(recovered.next_sequences)
        .map(|(image, next_sequence)| ShardStart {
            image,
            generation,
            next_sequence,
        })
        .collect();
    Ok(Opened { storage, shards })
}

/// `veddb-server --repair`: recovers `dir` for `shard_count` shards, cutting each damaged log
/// at its first bad record (backups first). The changes made, in order.
pub fn repair(
    dir: &Path,
    shard_count: u32,
    limits: EntryLimits,
    clock: &dyn crate::Clock,
) -> Result<Vec<RepairAction>, String> {
    let mut storage = FsStorage::lock(dir)?;
    let options = RecoverOptions {
        shard_count,
        now_ms: clock.unix_ms(),
        limits,
    };
    procedure::repair(&mut storage, &options)
        .map(|(_, actions)| actions)
        .map_err(|error| format!("cannot repair {}: {error}", dir.display()))
}
