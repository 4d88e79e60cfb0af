//! [`Segment`]: one shared memory mapping, with bounds-checked access at fixed offsets.

use std::io;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

#[cfg(target_os = "linux")]
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// A shared memory mapping of `len()` bytes, unmapped on drop.
///
/// How it may be touched:
/// - [`atomic_u32`](Self::atomic_u32) / [`atomic_u64`](Self::atomic_u64) give `&AtomicU*` at a
///   fixed, aligned offset of a writable mapping; [`load_u32`](Self::load_u32) /
///   [`load_u64`](Self::load_u64) read one atomically from any mapping (read-only included).
/// - [`read_bytes`](Self::read_bytes) / [`write_bytes`](Self::write_bytes) copy through the raw
///   pointer (`ptr::copy_nonoverlapping`), so no Rust reference to memory another process may be
///   writing is ever created. Bytes read that way may be torn or hostile: validate them.
/// - [`slice`](Self::slice) (unsafe) borrows bytes of a read-only mapping under a contract.
///
/// Offsets are the caller's constants: an offset out of bounds or misaligned is a bug and panics.
///
/// Platform: on Linux the mapping is `mmap(MAP_SHARED)` of a memfd ([`create`](Self::create)), of
/// a named file such as `/dev/shm/veddb_main` ([`create_named`](Self::create_named),
/// [`open_named`](Self::open_named)), or of a received descriptor ([`map_fd`](Self::map_fd)).
/// Elsewhere it is a file-backed `memmap2` mapping; there is no sealing and no `map_fd`.
pub struct Segment {
    ptr: NonNull<u8>,
    len: usize,
    writable: bool,
    #[cfg(target_os = "linux")]
    fd: Option<OwnedFd>,
    #[cfg(not(target_os = "linux"))]
    map: Option<memmap2::MmapRaw>,
    #[cfg(not(target_os = "linux"))]
    remove_on_drop: Option<std::path::PathBuf>,
}

// SAFETY: a Segment is a pointer to a shared mapping plus its owner data; the mapping is valid
// until drop whichever thread drops it, and every access the safe API offers goes through atomics
// or raw copies (concurrent use from several threads is what shared memory is for).
unsafe impl Send for Segment {}
// SAFETY: see `Send`; `&Segment` only exposes atomics, raw copies and the unsafe `slice`.
unsafe impl Sync for Segment {}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("ptr", &self.ptr)
            .field("len", &self.len)
            .field("writable", &self.writable)
            .finish()
    }
}

fn invalid_input(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

// The failures of the access checks, out of line: the checks themselves stay a compare and a
// branch in every inlined access.

#[cold]
#[inline(never)]
#[track_caller]
fn out_of_bounds(offset: usize, len: usize, segment: usize) -> ! {
    panic!(
        "segment access out of bounds: offset {offset} + {len} bytes > segment of {segment} bytes"
    )
}

#[cold]
#[inline(never)]
#[track_caller]
fn misaligned(offset: usize, size: usize) -> ! {
    panic!("misaligned {size}-byte atomic at segment offset {offset}")
}

#[cold]
#[inline(never)]
#[track_caller]
fn read_only() -> ! {
    panic!("write to a read-only segment mapping")
}

impl Segment {
    /// Size of the mapping in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mapping is empty (never: zero-sized segments are refused).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether this mapping was made with `PROT_WRITE`.
    #[inline]
    pub fn is_writable(&self) -> bool {
        self.writable
    }

    /// Start of the mapping (page-aligned).
    #[inline]
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    /// Start of the mapping, for raw writes (a write to a read-only mapping raises SIGSEGV).
    #[inline]
    pub fn as_mut_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    #[inline]
    #[track_caller]
    fn check(&self, offset: usize, len: usize) {
        let end = offset.checked_add(len);
        if end.is_none_or(|end| end > self.len) {
            out_of_bounds(offset, len, self.len);
        }
    }

    #[inline]
    #[track_caller]
    fn check_atomic(&self, offset: usize, size: usize) {
        self.check(offset, size);
        if !offset.is_multiple_of(size) {
            misaligned(offset, size);
        }
    }

    #[inline]
    #[track_caller]
    fn check_writable(&self) {
        if !self.writable {
            read_only();
        }
    }

    /// The `AtomicU32` at `offset` of a writable mapping.
    ///
    /// # Panics
    /// If `offset` is out of bounds, not 4-aligned, or the mapping is read-only (use
    /// [`load_u32`](Self::load_u32) there).
    #[inline]
    #[track_caller]
    pub fn atomic_u32(&self, offset: usize) -> &AtomicU32 {
        self.check_writable();
        self.check_atomic(offset, 4);
        // SAFETY: in bounds and 4-aligned (the mapping is page-aligned), valid and writable for the
        // lifetime of `&self`; AtomicU32 has the size and alignment of u32 and no invalid values,
        // and shared memory accessed by other processes is only ever accessed through atomics here.
        unsafe { &*self.ptr.as_ptr().add(offset).cast::<AtomicU32>() }
    }

    /// The `AtomicU64` at `offset` of a writable mapping.
    ///
    /// # Panics
    /// If `offset` is out of bounds, not 8-aligned, or the mapping is read-only (use
    /// [`load_u64`](Self::load_u64) there).
    #[inline]
    #[track_caller]
    pub fn atomic_u64(&self, offset: usize) -> &AtomicU64 {
        self.check_writable();
        self.check_atomic(offset, 8);
        // SAFETY: as in `atomic_u32`, with 8-byte bounds and alignment.
        unsafe { &*self.ptr.as_ptr().add(offset).cast::<AtomicU64>() }
    }

    /// Atomically loads the u32 at `offset` (any mapping, read-only included).
    ///
    /// # Panics
    /// If `offset` is out of bounds or not 4-aligned.
    #[inline]
    #[track_caller]
    pub fn load_u32(&self, offset: usize, order: Ordering) -> u32 {
        self.check_atomic(offset, 4);
        // SAFETY: in bounds, aligned and mapped for the lifetime of `&self`. A plain atomic load
        // (no read-modify-write) is allowed on read-only memory; the reference does not escape.
        unsafe { (*self.ptr.as_ptr().add(offset).cast::<AtomicU32>()).load(order) }
    }

    /// Atomically loads the u64 at `offset` (any mapping, read-only included).
    ///
    /// # Panics
    /// If `offset` is out of bounds or not 8-aligned.
    #[inline]
    #[track_caller]
    pub fn load_u64(&self, offset: usize, order: Ordering) -> u64 {
        self.check_atomic(offset, 8);
        // SAFETY: as in `load_u32`, with 8-byte bounds and alignment (64-bit atomics are native on
        // every target this crate supports).
        unsafe { (*self.ptr.as_ptr().add(offset).cast::<AtomicU64>()).load(order) }
    }

    /// Hints the CPU to bring the cache line at `offset` close (a read or write of it follows
    /// soon), so that its miss overlaps other work. Nothing happens for an offset out of bounds
    /// or on a target without a prefetch instruction.
    #[inline]
    pub fn prefetch(&self, offset: usize) {
        #[cfg(target_arch = "x86_64")]
        if offset < self.len {
            // SAFETY: the address is inside a live mapping; a prefetch never faults and changes
            // no memory.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                    self.ptr.as_ptr().add(offset).cast::<i8>(),
                )
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = offset;
    }

    /// Copies `out.len()` bytes at `offset` into `out`.
    ///
    /// The bytes may be written concurrently by another process: they may be torn, so validate
    /// them (or check a generation before and after).
    ///
    /// # Panics
    /// If the range is out of bounds.
    #[inline]
    #[track_caller]
    pub fn read_bytes(&self, offset: usize, out: &mut [u8]) {
        self.check(offset, out.len());
        // SAFETY: the source range is in bounds of a live mapping; `out` is a distinct private
        // buffer, so the ranges cannot overlap; no reference to the shared bytes is created.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.ptr.as_ptr().add(offset),
                out.as_mut_ptr(),
                out.len(),
            )
        }
    }

    /// Copies `out.len()` bytes at `offset` into `out`, which need not be initialized (every byte
    /// of it is afterwards). As [`read_bytes`](Self::read_bytes): the bytes may be torn.
    ///
    /// # Panics
    /// If the range is out of bounds.
    #[inline]
    #[track_caller]
    pub fn read_bytes_uninit(&self, offset: usize, out: &mut [std::mem::MaybeUninit<u8>]) {
        self.check(offset, out.len());
        // SAFETY: as in `read_bytes`: the source is in bounds of a live mapping, `out` is a
        // distinct private buffer of `out.len()` bytes (MaybeUninit<u8> has u8's layout).
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.ptr.as_ptr().add(offset),
                out.as_mut_ptr().cast::<u8>(),
                out.len(),
            )
        }
    }

    /// Copies `src` to `offset` of a writable mapping.
    ///
    /// # Panics
    /// If the range is out of bounds or the mapping is read-only.
    #[inline]
    #[track_caller]
    pub fn write_bytes(&self, offset: usize, src: &[u8]) {
        self.check_writable();
        self.check(offset, src.len());
        // SAFETY: the destination range is in bounds of a live writable mapping and `src` is a
        // valid slice. `ptr::copy` (memmove) stays correct even if `src` was borrowed from this
        // very mapping (an arena value); no reference to the destination bytes is created.
        unsafe { std::ptr::copy(src.as_ptr(), self.ptr.as_ptr().add(offset), src.len()) }
    }

    /// Borrows `len` bytes at `offset` of a read-only mapping.
    ///
    /// # Safety
    /// No one (no process, no thread) may write these bytes while the returned slice lives: the
    /// creator must never rewrite this range while it may be referenced (for example, an arena
    /// value block protected by an epoch pin and checked by generation, or a region the creator
    /// wrote once before publishing). A violation is a data race, and the bytes may change under
    /// the reader.
    ///
    /// # Panics
    /// If the range is out of bounds or the mapping is writable.
    #[track_caller]
    pub unsafe fn slice(&self, offset: usize, len: usize) -> &[u8] {
        assert!(
            !self.writable,
            "Segment::slice is only for read-only mappings"
        );
        self.check(offset, len);
        // SAFETY: in bounds of a mapping that lives as long as `&self`; that nothing writes the
        // range meanwhile is the caller's contract.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(offset), len) }
    }
}

// ---------------------------------------------------------------------------------------------
// Linux: memfd, named files, mmap.

#[cfg(target_os = "linux")]
fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

#[cfg(target_os = "linux")]
fn fd_size(fd: BorrowedFd<'_>) -> io::Result<usize> {
    // SAFETY: an all-zero `stat` is a valid value of that plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is a live descriptor for the duration of the call; `st` is a valid out pointer.
    cvt(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    if st.st_size <= 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "shared memory file is empty",
        ));
    }
    usize::try_from(st.st_size)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "shared memory file too large"))
}

#[cfg(target_os = "linux")]
fn map_shared(fd: BorrowedFd<'_>, len: usize, writable: bool) -> io::Result<NonNull<u8>> {
    let prot = if writable {
        libc::PROT_READ | libc::PROT_WRITE
    } else {
        libc::PROT_READ
    };
    // SAFETY: a fresh mapping chosen by the kernel (null hint), so nothing existing is replaced;
    // the result is checked for MAP_FAILED before use.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            prot,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))
}

/// The seals (`F_SEAL_*` bits, from `fcntl(F_GET_SEALS)`) of a memfd: a client that receives a
/// segment descriptor can check that it cannot shrink (`F_SEAL_SHRINK`) before mapping it.
#[cfg(target_os = "linux")]
pub fn seals(fd: BorrowedFd<'_>) -> io::Result<i32> {
    // SAFETY: F_GET_SEALS takes no argument and only reads the descriptor's state.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) })
}

#[cfg(target_os = "linux")]
impl Segment {
    fn from_fd(
        fd: Option<OwnedFd>,
        map_fd: BorrowedFd<'_>,
        len: usize,
        writable: bool,
    ) -> io::Result<Self> {
        let ptr = map_shared(map_fd, len, writable)?;
        Ok(Segment {
            ptr,
            len,
            writable,
            fd,
        })
    }

    /// Creates an anonymous shared segment of `size` bytes, zero-filled: `memfd_create(name,
    /// MFD_CLOEXEC | MFD_ALLOW_SEALING)`, `ftruncate`, `mmap(PROT_READ | PROT_WRITE, MAP_SHARED)`.
    /// `name` only shows up in `/proc/<pid>/maps` and `/proc/<pid>/fd` (`memfd:<name>`).
    /// Hand the descriptor ([`fd`](Self::fd)) to another process with
    /// [`send_with_fds`](crate::send_with_fds).
    pub fn create(name: &str, size: usize) -> io::Result<Self> {
        if size == 0 {
            return Err(invalid_input("segment size must not be zero"));
        }
        let size_off =
            libc::off_t::try_from(size).map_err(|_| invalid_input("segment size too large"))?;
        let cname = std::ffi::CString::new(name)
            .map_err(|_| invalid_input("segment name contains a NUL byte"))?;
        // SAFETY: `cname` is a valid NUL-terminated string for the duration of the call.
        let raw = cvt(unsafe {
            libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING)
        })?;
        // SAFETY: `raw` is a freshly created descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: `fd` is a live descriptor we own.
        cvt(unsafe { libc::ftruncate(fd.as_raw_fd(), size_off) })?;
        let ptr = map_shared(fd.as_fd(), size, true)?;
        Ok(Segment {
            ptr,
            len: size,
            writable: true,
            fd: Some(fd),
        })
    }

    /// Seals the memfd so that it can never shrink or grow and every later mapping of it (by
    /// anyone holding the descriptor, or a `/proc/<pid>/fd` reopen) can only be read-only:
    /// `F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_FUTURE_WRITE | F_SEAL_SEAL`. This mapping stays
    /// writable. Fails for segments that are not memfds of this process (`create`).
    pub fn seal_read_only_for_others(&self) -> io::Result<()> {
        let fd = self
            .fd
            .as_ref()
            .ok_or_else(|| invalid_input("segment has no descriptor to seal"))?;
        let seals =
            libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_FUTURE_WRITE | libc::F_SEAL_SEAL;
        // SAFETY: F_ADD_SEALS takes an int argument and only changes the file's seal set.
        cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) })?;
        Ok(())
    }

    /// Seals the memfd's size (`F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL`) while leaving it
    /// writable by whoever receives it: a ring segment shared read-write with a client, which
    /// then cannot truncate it under the server's mapping (a SIGBUS there).
    pub fn seal_size(&self) -> io::Result<()> {
        let fd = self
            .fd
            .as_ref()
            .ok_or_else(|| invalid_input("segment has no descriptor to seal"))?;
        let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
        // SAFETY: F_ADD_SEALS takes an int argument and only changes the file's seal set.
        cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) })?;
        Ok(())
    }

    /// Maps a received descriptor (`MAP_SHARED`, the whole file as `fstat` reports it), writable
    /// or read-only (`PROT_READ`). A sealed memfd maps writable only for its creator: here that
    /// fails with `EPERM`. The descriptor is not kept: the mapping outlives it.
    ///
    /// Check [`seals`] first when the sender is not trusted: a file that can shrink raises SIGBUS
    /// on access past its new end.
    pub fn map_fd(fd: impl AsFd, writable: bool) -> io::Result<Self> {
        let fd = fd.as_fd();
        let len = fd_size(fd)?;
        Self::from_fd(None, fd, len, writable)
    }

    /// Creates a named shared file (the instance file, e.g. `/dev/shm/veddb_main`) of `size`
    /// zero bytes with exactly `mode` (umask does not apply), failing if it exists
    /// (`O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC`), and maps it writable.
    pub fn create_named(path: &Path, size: usize, mode: u32) -> io::Result<Self> {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        if size == 0 {
            return Err(invalid_input("segment size must not be zero"));
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)?;
        let setup = (|| {
            file.set_permissions(std::fs::Permissions::from_mode(mode))?;
            file.set_len(size as u64)
        })();
        if let Err(e) = setup {
            let _ = std::fs::remove_file(path);
            return Err(e);
        }
        let fd = OwnedFd::from(file);
        let ptr = map_shared(fd.as_fd(), size, true)?;
        Ok(Segment {
            ptr,
            len: size,
            writable: true,
            fd: Some(fd),
        })
    }

    /// Opens and maps an existing named shared file, its whole size (`O_NOFOLLOW | O_CLOEXEC`,
    /// `O_RDONLY` + `PROT_READ` unless `writable`).
    ///
    /// A named file can be truncated by anyone allowed to write it, which makes accesses past the
    /// new end raise SIGBUS: use it for the instance file whose writers are trusted, and sealed
    /// memfds for everything else.
    pub fn open_named(path: &Path, writable: bool) -> io::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(writable)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)?;
        let fd = OwnedFd::from(file);
        let len = fd_size(fd.as_fd())?;
        let ptr = map_shared(fd.as_fd(), len, writable)?;
        Ok(Segment {
            ptr,
            len,
            writable,
            fd: Some(fd),
        })
    }

    /// The descriptor behind the mapping: present for `create`, `create_named` and `open_named`,
    /// absent for `map_fd`.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.fd.as_ref().map(|fd| fd.as_fd())
    }
}

#[cfg(target_os = "linux")]
impl Drop for Segment {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe exactly the mapping made at construction, which nothing
        // else unmaps; every borrow of it is tied to `&self`, which ends here.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Other platforms: file-backed mappings through memmap2.

#[cfg(not(target_os = "linux"))]
impl Segment {
    fn from_file(
        file: &std::fs::File,
        len: usize,
        writable: bool,
        remove_on_drop: Option<std::path::PathBuf>,
    ) -> io::Result<Self> {
        let mut options = memmap2::MmapOptions::new();
        options.len(len);
        let map = if writable {
            options.map_raw(file)?
        } else {
            options.map_raw_read_only(file)?
        };
        let ptr = NonNull::new(map.as_mut_ptr())
            .ok_or_else(|| io::Error::other("mapping returned null"))?;
        Ok(Segment {
            ptr,
            len,
            writable,
            map: Some(map),
            remove_on_drop,
        })
    }

    /// Creates a zero-filled segment of `size` bytes backed by a fresh file in the temporary
    /// directory (removed on drop). There is no memfd here, and no descriptor passing: share a
    /// segment between processes with [`create_named`](Self::create_named).
    pub fn create(name: &str, size: usize) -> io::Result<Self> {
        use std::sync::atomic::AtomicUsize;
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        if size == 0 {
            return Err(invalid_input("segment size must not be zero"));
        }
        let unique = format!(
            "veddb-{}-{}-{}-{}",
            name,
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        );
        let path = std::env::temp_dir().join(unique);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        let made = file
            .set_len(size as u64)
            .and_then(|()| Self::from_file(&file, size, true, Some(path.clone())));
        if made.is_err() {
            drop(file);
            let _ = std::fs::remove_file(&path);
        }
        made
    }

    /// Not available here: there are no file seals outside Linux.
    pub fn seal_read_only_for_others(&self) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "file seals are Linux-only",
        ))
    }

    /// Not available here: there are no file seals outside Linux.
    pub fn seal_size(&self) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "file seals are Linux-only",
        ))
    }

    /// Creates a named shared file of `size` zero bytes, failing if it exists, and maps it
    /// writable. `mode` applies on Unix (exactly, umask aside); on Windows the file gets the
    /// directory's default ACL.
    pub fn create_named(path: &Path, size: usize, mode: u32) -> io::Result<Self> {
        if size == 0 {
            return Err(invalid_input("segment size must not be zero"));
        }
        let mut options = std::fs::OpenOptions::new();
        options.read(true).write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(mode).custom_flags(libc::O_NOFOLLOW);
        }
        #[cfg(not(unix))]
        let _ = mode;
        let file = options.open(path)?;
        #[cfg(unix)]
        let set_mode = {
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(std::fs::Permissions::from_mode(mode))
        };
        #[cfg(not(unix))]
        let set_mode = io::Result::Ok(());
        let setup = set_mode.and_then(|()| file.set_len(size as u64));
        if let Err(e) = setup {
            drop(file);
            let _ = std::fs::remove_file(path);
            return Err(e);
        }
        Self::from_file(&file, size, true, None)
    }

    /// Opens and maps an existing named shared file, its whole size, read-only unless
    /// `writable`.
    pub fn open_named(path: &Path, writable: bool) -> io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(writable)
            .open(path)?;
        let len = usize::try_from(file.metadata()?.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "file too large"))?;
        if len == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "shared memory file is empty",
            ));
        }
        Self::from_file(&file, len, writable, None)
    }
}

#[cfg(not(target_os = "linux"))]
impl Drop for Segment {
    fn drop(&mut self) {
        // Unmap before removing the file (Windows refuses to delete a mapped file).
        drop(self.map.take());
        if let Some(path) = self.remove_on_drop.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}
