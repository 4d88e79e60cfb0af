//! The storage seam under the log and snapshot writers, and an in-memory implementation with
//! fault injection.
//!
//! [`Storage`] is one flat directory of named files (the data directory), with exactly the
//! operations the persistence code needs. Everything written through it is *volatile* until
//! `fsync` (a file's bytes) or `fsync_dir` (the directory's names: created, renamed and removed
//! files). [`MemoryStorage`] models precisely that: it keeps, for every file, what a crash would
//! leave, and [`MemoryStorage::crash`] throws the rest away (or keeps a torn part of it). Its
//! faults are the ones the issue lists: a write that fails with ENOSPC, a short write, a torn
//! write, an fsync that fails with EIO, a full disk, a flipped bit, a file that disappears.

use std::collections::BTreeMap;
use std::io;

/// Linux `ENOSPC`: no space left on device.
pub const ENOSPC: i32 = 28;
/// Linux `EIO`: input/output error.
pub const EIO: i32 = 5;

/// A failed storage operation, with the file it was about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageError {
    pub file: String,
    /// What was being done: "create", "write", "fsync", "rename", ...
    pub operation: &'static str,
    pub kind: io::ErrorKind,
    pub os_error: Option<i32>,
    pub message: String,
}

impl StorageError {
    pub fn new(file: &str, operation: &'static str, error: &io::Error) -> Self {
        StorageError {
            file: file.to_owned(),
            operation,
            kind: error.kind(),
            os_error: error.raw_os_error(),
            message: error.to_string(),
        }
    }
}

impl std::fmt::Display for StorageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} of {} failed: {}",
            self.operation, self.file, self.message
        )
    }
}

impl std::error::Error for StorageError {}

/// A file in the data directory and its size.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct FileInfo {
    pub name: String,
    pub size: u64,
}

/// One flat directory of files. Names are plain file names (no `/`).
pub trait Storage {
    /// Creates an empty file; `AlreadyExists` if the name is taken.
    fn create(&mut self, name: &str) -> io::Result<()>;
    /// The size of an existing file (`NotFound` if there is none).
    fn open(&mut self, name: &str) -> io::Result<u64>;
    /// Up to `length` bytes at `offset` (fewer at the end of the file).
    fn read_at(&mut self, name: &str, offset: u64, length: usize) -> io::Result<Vec<u8>>;
    /// Appends `bytes`; how many were written (possibly fewer: a short write).
    fn append(&mut self, name: &str, bytes: &[u8]) -> io::Result<usize>;
    /// Writes `bytes` at `offset` (extending the file, zero-filling any gap); how many were
    /// written (possibly fewer: a short write).
    fn write_at(&mut self, name: &str, offset: u64, bytes: &[u8]) -> io::Result<usize>;
    /// Makes the file's bytes durable.
    fn fsync(&mut self, name: &str) -> io::Result<()>;
    /// Cuts (or zero-extends) the file to `length` bytes.
    fn truncate(&mut self, name: &str, length: u64) -> io::Result<()>;
    /// Renames `from` to `to`, replacing any file named `to`.
    fn rename(&mut self, from: &str, to: &str) -> io::Result<()>;
    /// Removes a file.
    fn remove(&mut self, name: &str) -> io::Result<()>;
    /// Every file, sorted by name.
    fn list(&mut self) -> io::Result<Vec<FileInfo>>;
    /// Makes the directory's names durable (creations, renames, removals).
    fn fsync_dir(&mut self) -> io::Result<()>;
}

/// Reads a whole file.
pub fn read_all<S: Storage + ?Sized>(storage: &mut S, name: &str) -> io::Result<Vec<u8>> {
    let size = storage.open(name)?;
    let length = usize::try_from(size).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{name} is too large to read"),
        )
    })?;
    let bytes = storage.read_at(name, 0, length)?;
    if bytes.len() != length {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("{name}: read {} of {length} bytes", bytes.len()),
        ));
    }
    Ok(bytes)
}

/// Writes all of `bytes` at `offset`, retrying after short writes; an error, or a write that
/// makes no progress, ends it.
pub fn write_all_at<S: Storage + ?Sized>(
    storage: &mut S,
    name: &str,
    mut offset: u64,
    mut bytes: &[u8],
) -> io::Result<()> {
    while !bytes.is_empty() {
        let written = storage.write_at(name, offset, bytes)?;
        if written == 0 {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("{name}: write made no progress"),
            ));
        }
        offset += written as u64;
        bytes = &bytes[written.min(bytes.len())..];
    }
    Ok(())
}

/// What a simulated crash leaves of the bytes written since a file's last fsync.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashMode {
    /// Nothing: every file is exactly as of its last fsync.
    LoseUnsynced,
    /// A torn write: the first `keep_bytes` bytes appended since the last fsync survive, then
    /// `garbage_bytes` of garbage (zeros when `seed` is 0, pseudo-random bytes otherwise), as when
    /// the file system extended the file but not all its blocks reached the disk.
    Torn {
        keep_bytes: usize,
        garbage_bytes: usize,
        seed: u64,
    },
    /// Everything survives, the directory's names included (the process died, the kernel
    /// did not).
    KeepEverything,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WriteFault {
    /// Fail with this OS error, writing nothing.
    Fail(i32),
    /// Write only this many bytes and report it.
    Short(usize),
    /// Write `keep` bytes, then the machine dies (every later call fails until `crash`). With
    /// a `fill`, the rest of the write's extent holds that instead of nothing.
    Torn { keep: usize, fill: Option<TornFill> },
}

/// What a torn write leaves after the bytes it kept, up to the end of the write: the file
/// system extended the file, but not every block reached the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TornFill {
    /// Zeros (blocks allocated, never written).
    Zeros,
    /// Pseudo-random bytes from this seed (stale blocks).
    Garbage { seed: u64 },
}

impl TornFill {
    /// `length` bytes of this fill.
    pub fn bytes(self, length: usize) -> Vec<u8> {
        match self {
            TornFill::Zeros => vec![0; length],
            TornFill::Garbage { seed } => {
                let mut state = seed;
                (0..length)
                    .map(|_| {
                        state = state
                            .wrapping_mul(6_364_136_223_846_793_005)
                            .wrapping_add(1_442_695_040_888_963_407);
                        (state >> 56) as u8
                    })
                    .collect()
            }
        }
    }
}

#[derive(Clone, Debug, Default)]
struct Inode {
    data: Vec<u8>,
    /// What survives a crash: the bytes as of the last successful fsync.
    synced: Vec<u8>,
}

/// An in-memory [`Storage`] with volatile and durable state, fault injection and crashes.
/// Deterministic: the same calls give the same results.
#[derive(Clone, Debug, Default)]
pub struct MemoryStorage {
    inodes: BTreeMap<u64, Inode>,
    next_inode: u64,
    directory: BTreeMap<String, u64>,
    durable_directory: BTreeMap<String, u64>,
    write_faults: BTreeMap<u64, WriteFault>,
    fsync_faults: BTreeMap<u64, i32>,
    writes: u64,
    /// The length asked for by each write so far, in order.
    write_lengths: Vec<usize>,
    fsyncs: u64,
    capacity_bytes: Option<u64>,
    dead: bool,
}

fn not_found(name: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{name}: no such file"))
}

fn dead() -> io::Error {
    io::Error::other("simulated machine crash: call MemoryStorage::crash")
}

impl MemoryStorage {
    pub fn new() -> Self {
        MemoryStorage::default()
    }

    // ---- faults --------------------------------------------------------------------------

    /// The `nth` write from now (1 = the next; appends and `write_at` count) fails with
    /// ENOSPC and writes nothing.
    pub fn fail_write(&mut self, nth: u64) {
        self.write_faults
            .insert(self.writes + nth, WriteFault::Fail(ENOSPC));
    }

    /// The `nth` write from now writes only its first `bytes` bytes and reports that.
    pub fn short_write(&mut self, nth: u64, bytes: usize) {
        self.write_faults
            .insert(self.writes + nth, WriteFault::Short(bytes));
    }

    /// The `nth` write from now gets `bytes` of its bytes into the file, then the machine dies:
    /// that write and every later call fail until [`MemoryStorage::crash`].
    pub fn torn_write(&mut self, nth: u64, bytes: usize) {
        self.write_faults.insert(
            self.writes + nth,
            WriteFault::Torn {
                keep: bytes,
                fill: None,
            },
        );
    }

    /// Like [`MemoryStorage::torn_write`], but the rest of the write's extent (after its first
    /// `bytes` bytes) holds `fill`: the file has the write's full length, torn inside.
    pub fn torn_write_filled(&mut self, nth: u64, bytes: usize, fill: TornFill) {
        self.write_faults.insert(
            self.writes + nth,
            WriteFault::Torn {
                keep: bytes,
                fill: Some(fill),
            },
        );
    }

    /// The `nth` file fsync from now fails with EIO. As on Linux, the data it should have made
    /// durable is not, and a later fsync does not report the error again.
    pub fn fail_fsync(&mut self, nth: u64) {
        self.fsync_faults.insert(self.fsyncs + nth, EIO);
    }

    /// Limits the bytes all files together may hold (`None`: unlimited). A write that does not
    /// fit writes what fits (a short write) or, when nothing fits, fails with ENOSPC.
    pub fn set_capacity_bytes(&mut self, capacity: Option<u64>) {
        self.capacity_bytes = capacity;
    }

    /// Flips bit `bit` (0..8) of the byte at `offset` of a file, durably (the disk changed it).
    pub fn flip_bit(&mut self, name: &str, offset: u64, bit: u8) -> io::Result<()> {
        let inode = self.inode_mut(name)?;
        let offset = usize::try_from(offset).map_err(|_| not_found(name))?;
        let mask = 1u8 << (bit % 8);
        let mut flipped = false;
        if let Some(byte) = inode.data.get_mut(offset) {
            *byte ^= mask;
            flipped = true;
        }
        if let Some(byte) = inode.synced.get_mut(offset) {
            *byte ^= mask;
            flipped = true;
        }
        if flipped {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name}: offset {offset} past the end"),
            ))
        }
    }

    /// Makes a file disappear, durably (someone deleted it).
    pub fn drop_file(&mut self, name: &str) -> io::Result<()> {
        let inode = self.directory.remove(name).ok_or_else(|| not_found(name))?;
        self.durable_directory.remove(name);
        if !self.directory.values().any(|&i| i == inode)
            && !self.durable_directory.values().any(|&i| i == inode)
        {
            self.inodes.remove(&inode);
        }
        Ok(())
    }

    /// Like [`MemoryStorage::crash`], but the directory's current names survive (the file
    /// system's journal had committed them without an `fsync_dir`, as ext4 does every few
    /// seconds): what the persistence code must tolerate, though never rely on.
    pub fn crash_keeping_names(&mut self, mode: CrashMode) {
        self.durable_directory = self.directory.clone();
        self.crash(mode);
    }

    /// The machine loses power: the directory goes back to its last `fsync_dir`, each file to
    /// what `mode` leaves of it, and pending faults are cleared.
    pub fn crash(&mut self, mode: CrashMode) {
        if mode == CrashMode::KeepEverything {
            self.durable_directory = self.directory.clone();
        }
        self.directory = self.durable_directory.clone();
        let live: std::collections::BTreeSet<u64> = self.directory.values().copied().collect();
        self.inodes.retain(|inode, _| live.contains(inode));
        for inode in self.inodes.values_mut() {
            let appended = inode
                .data
                .strip_prefix(inode.synced.as_slice())
                .map(<[u8]>::to_vec)
                .unwrap_or_default();
            let mut data = inode.synced.clone();
            match mode {
                CrashMode::LoseUnsynced => {}
                CrashMode::KeepEverything => data = inode.data.clone(),
                CrashMode::Torn {
                    keep_bytes,
                    garbage_bytes,
                    seed,
                } => {
                    if !appended.is_empty() {
                        let keep = keep_bytes.min(appended.len());
                        data.extend_from_slice(&appended[..keep]);
                        let mut state = seed;
                        for _ in 0..garbage_bytes.min(appended.len() - keep) {
                            state = state
                                .wrapping_mul(6_364_136_223_846_793_005)
                                .wrapping_add(1_442_695_040_888_963_407);
                            data.push(if seed == 0 { 0 } else { (state >> 56) as u8 });
                        }
                    }
                }
            }
            inode.synced = data.clone();
            inode.data = data;
        }
        self.write_faults.clear();
        self.fsync_faults.clear();
        self.dead = false;
    }

    // ---- inspection ------------------------------------------------------------------------

    /// A file's current bytes (what a read sees).
    pub fn contents(&self, name: &str) -> Option<&[u8]> {
        let inode = self.directory.get(name)?;
        Some(&self.inodes.get(inode)?.data)
    }

    /// Writes so far (appends and `write_at` calls, failed ones included).
    /// The length each write so far asked for (not what it wrote), in order: write `n`
    /// (counting from 1, as the fault methods do) is `write_lengths()[n - 1]`.
    pub fn write_lengths(&self) -> &[usize] {
        &self.write_lengths
    }

    pub fn write_count(&self) -> u64 {
        self.writes
    }

    /// File fsyncs so far (failed ones included).
    pub fn fsync_count(&self) -> u64 {
        self.fsyncs
    }

    // ---- internals -------------------------------------------------------------------------

    fn inode_mut(&mut self, name: &str) -> io::Result<&mut Inode> {
        let id = *self.directory.get(name).ok_or_else(|| not_found(name))?;
        self.inodes.get_mut(&id).ok_or_else(|| not_found(name))
    }

    fn alive(&self) -> io::Result<()> {
        if self.dead {
            Err(dead())
        } else {
            Ok(())
        }
    }

    fn used_bytes(&self) -> u64 {
        self.inodes
            .values()
            .map(|inode| inode.data.len() as u64)
            .sum()
    }

    fn write(&mut self, name: &str, offset: Option<u64>, bytes: &[u8]) -> io::Result<usize> {
        self.alive()?;
        self.writes += 1;
        self.write_lengths.push(bytes.len());
        let fault = self.write_faults.remove(&self.writes);
        let used = self.used_bytes();
        let capacity = self.capacity_bytes;
        let inode = self.inode_mut(name)?;
        let offset = match offset {
            Some(offset) => usize::try_from(offset)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset too large"))?,
            None => inode.data.len(),
        };
        let mut length = bytes.len();
        let mut die = false;
        let mut torn_fill = None;
        match fault {
            Some(WriteFault::Fail(errno)) => return Err(io::Error::from_raw_os_error(errno)),
            Some(WriteFault::Short(keep)) => length = length.min(keep),
            Some(WriteFault::Torn { keep, fill }) => {
                length = length.min(keep);
                torn_fill = fill;
                die = true;
            }
            None => {}
        }
        if let Some(capacity) = capacity {
            let end = offset + length;
            let growth = end.saturating_sub(inode.data.len()) as u64;
            let room = capacity.saturating_sub(used);
            if growth > room {
                let fits = (room as usize + inode.data.len()).saturating_sub(offset);
                length = length.min(fits);
                if length == 0 {
                    return Err(io::Error::from_raw_os_error(ENOSPC));
                }
            }
        }
        if inode.data.len() < offset {
            inode.data.resize(offset, 0);
        }
        let end = offset + length;
        if inode.data.len() < end {
            inode.data.resize(end, 0);
        }
        inode.data[offset..end].copy_from_slice(&bytes[..length]);
        if let Some(fill) = torn_fill {
            let extent_end = offset + bytes.len();
            if inode.data.len() < extent_end {
                inode.data.resize(extent_end, 0);
            }
            inode.data[end..extent_end].copy_from_slice(&fill.bytes(extent_end - end));
        }
        if die {
            self.dead = true;
            return Err(dead());
        }
        Ok(length)
    }
}

impl Storage for MemoryStorage {
    fn create(&mut self, name: &str) -> io::Result<()> {
        self.alive()?;
        if self.directory.contains_key(name) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{name} exists"),
            ));
        }
        let id = self.next_inode;
        self.next_inode += 1;
        self.inodes.insert(id, Inode::default());
        self.directory.insert(name.to_owned(), id);
        Ok(())
    }

    fn open(&mut self, name: &str) -> io::Result<u64> {
        self.alive()?;
        Ok(self.inode_mut(name)?.data.len() as u64)
    }

    fn read_at(&mut self, name: &str, offset: u64, length: usize) -> io::Result<Vec<u8>> {
        self.alive()?;
        let data = &self.inode_mut(name)?.data;
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(data.len());
        let end = start.saturating_add(length).min(data.len());
        Ok(data[start..end].to_vec())
    }

    fn append(&mut self, name: &str, bytes: &[u8]) -> io::Result<usize> {
        self.write(name, None, bytes)
    }

    fn write_at(&mut self, name: &str, offset: u64, bytes: &[u8]) -> io::Result<usize> {
        self.write(name, Some(offset), bytes)
    }

    fn fsync(&mut self, name: &str) -> io::Result<()> {
        self.alive()?;
        self.fsyncs += 1;
        let fault = self.fsync_faults.remove(&self.fsyncs);
        let inode = self.inode_mut(name)?;
        if let Some(errno) = fault {
            return Err(io::Error::from_raw_os_error(errno));
        }
        inode.synced = inode.data.clone();
        Ok(())
    }

    fn truncate(&mut self, name: &str, length: u64) -> io::Result<()> {
        self.alive()?;
        let length = usize::try_from(length)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "length too large"))?;
        self.inode_mut(name)?.data.resize(length, 0);
        Ok(())
    }

    fn rename(&mut self, from: &str, to: &str) -> io::Result<()> {
        self.alive()?;
        let id = self.directory.remove(from).ok_or_else(|| not_found(from))?;
        self.directory.insert(to.to_owned(), id);
        Ok(())
    }

    fn remove(&mut self, name: &str) -> io::Result<()> {
        self.alive()?;
        self.directory.remove(name).ok_or_else(|| not_found(name))?;
        Ok(())
    }

    fn list(&mut self) -> io::Result<Vec<FileInfo>> {
        self.alive()?;
        Ok(self
            .directory
            .iter()
            .map(|(name, id)| FileInfo {
                name: name.clone(),
                size: self
                    .inodes
                    .get(id)
                    .map_or(0, |inode| inode.data.len() as u64),
            })
            .collect())
    }

    fn fsync_dir(&mut self) -> io::Result<()> {
        self.alive()?;
        self.durable_directory = self.directory.clone();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_fsynced_state_survives_a_crash() {
        let mut storage = MemoryStorage::new();
        storage.create("a").unwrap();
        storage.append("a", b"hello").unwrap();
        storage.fsync("a").unwrap();
        storage.append("a", b" world").unwrap();
        storage.create("b").unwrap();
        storage.fsync("b").unwrap();
        // "a" and "b" are named durably; "c" and the rename of "b" are not.
        storage.fsync_dir().unwrap();
        storage.create("c").unwrap();
        storage.rename("b", "d").unwrap();
        storage.crash(CrashMode::LoseUnsynced);
        let names: Vec<_> = storage
            .list()
            .unwrap()
            .into_iter()
            .map(|f| f.name)
            .collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(storage.contents("a"), Some(&b"hello"[..]));
    }

    #[test]
    fn a_torn_crash_keeps_part_of_the_unsynced_tail() {
        let mut storage = MemoryStorage::new();
        storage.create("a").unwrap();
        storage.fsync_dir().unwrap();
        storage.append("a", b"abc").unwrap();
        storage.fsync("a").unwrap();
        storage.append("a", b"defghij").unwrap();
        storage.crash(CrashMode::Torn {
            keep_bytes: 2,
            garbage_bytes: 3,
            seed: 0,
        });
        assert_eq!(storage.contents("a"), Some(&b"abcde\0\0\0"[..]));
    }

    #[test]
    fn write_faults_fire_once_in_order() {
        let mut storage = MemoryStorage::new();
        storage.create("a").unwrap();
        storage.short_write(1, 2);
        storage.fail_write(2);
        assert_eq!(storage.append("a", b"abcd").unwrap(), 2);
        assert_eq!(
            storage.append("a", b"cd").unwrap_err().raw_os_error(),
            Some(ENOSPC)
        );
        assert_eq!(storage.append("a", b"cd").unwrap(), 2);
        assert_eq!(storage.contents("a"), Some(&b"abcd"[..]));
    }

    #[test]
    fn a_failed_fsync_leaves_the_data_volatile() {
        let mut storage = MemoryStorage::new();
        storage.create("a").unwrap();
        storage.fsync_dir().unwrap();
        storage.append("a", b"abc").unwrap();
        storage.fail_fsync(1);
        assert_eq!(storage.fsync("a").unwrap_err().raw_os_error(), Some(EIO));
        storage.crash(CrashMode::LoseUnsynced);
        assert_eq!(storage.contents("a"), Some(&b""[..]));
    }

    #[test]
    fn a_full_disk_writes_what_fits_then_refuses() {
        let mut storage = MemoryStorage::new();
        storage.set_capacity_bytes(Some(5));
        storage.create("a").unwrap();
        assert_eq!(storage.append("a", b"abcd").unwrap(), 4);
        assert_eq!(storage.append("a", b"efgh").unwrap(), 1);
        assert_eq!(
            storage.append("a", b"gh").unwrap_err().raw_os_error(),
            Some(ENOSPC)
        );
        // Overwriting in place needs no room.
        assert_eq!(storage.write_at("a", 0, b"AB").unwrap(), 2);
        assert_eq!(storage.contents("a"), Some(&b"ABcde"[..]));
    }

    #[test]
    fn a_torn_write_kills_the_machine_until_the_crash() {
        let mut storage = MemoryStorage::new();
        storage.create("a").unwrap();
        storage.fsync_dir().unwrap();
        storage.torn_write(1, 3);
        assert!(storage.append("a", b"abcdef").is_err());
        assert!(storage.fsync("a").is_err());
        storage.crash(CrashMode::KeepEverything);
        assert_eq!(storage.contents("a"), Some(&b"abc"[..]));
        assert_eq!(storage.append("a", b"d").unwrap(), 1);
    }

    #[test]
    fn flip_and_drop() {
        let mut storage = MemoryStorage::new();
        storage.create("a").unwrap();
        storage.append("a", &[0]).unwrap();
        storage.fsync("a").unwrap();
        storage.fsync_dir().unwrap();
        storage.flip_bit("a", 0, 3).unwrap();
        assert!(storage.flip_bit("a", 1, 0).is_err());
        storage.crash(CrashMode::LoseUnsynced);
        assert_eq!(storage.contents("a"), Some(&[8u8][..]));
        storage.drop_file("a").unwrap();
        storage.crash(CrashMode::LoseUnsynced);
        assert!(storage.list().unwrap().is_empty());
    }
}
