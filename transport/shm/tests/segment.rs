//! Segment: creation, sealing, second mappings, named files, bounds checks.

use std::sync::atomic::Ordering;

use veddb_shm::Segment;

#[test]
fn create_read_write_atomics() {
    let seg = Segment::create("t-basic", 8192).unwrap();
    assert_eq!(seg.len(), 8192);
    assert!(seg.is_writable());
    let mut buf = [0xAAu8; 16];
    seg.read_bytes(100, &mut buf);
    assert_eq!(buf, [0u8; 16], "a new segment is zero-filled");
    seg.write_bytes(100, b"hello, shm");
    seg.read_bytes(100, &mut buf[..10]);
    assert_eq!(&buf[..10], b"hello, shm");
    seg.atomic_u32(4).store(7, Ordering::Release);
    seg.atomic_u64(8).fetch_add(3, Ordering::AcqRel);
    assert_eq!(seg.load_u32(4, Ordering::Acquire), 7);
    assert_eq!(seg.load_u64(8, Ordering::Acquire), 3);
    // The last bytes are reachable, one past is not.
    seg.write_bytes(8192 - 4, b"tail");
    seg.atomic_u64(8192 - 8).store(1, Ordering::Relaxed);
}

#[test]
fn zero_size_refused() {
    assert!(Segment::create("t-zero", 0).is_err());
}

#[test]
#[should_panic(expected = "misaligned")]
fn misaligned_atomic_panics() {
    let seg = Segment::create("t-misaligned", 4096).unwrap();
    seg.atomic_u64(4);
}

#[test]
#[should_panic(expected = "out of bounds")]
fn atomic_out_of_bounds_panics() {
    let seg = Segment::create("t-oob-atomic", 4096).unwrap();
    seg.atomic_u32(4096);
}

#[test]
#[should_panic(expected = "out of bounds")]
fn read_out_of_bounds_panics() {
    let seg = Segment::create("t-oob-read", 4096).unwrap();
    let mut buf = [0u8; 8];
    seg.read_bytes(4090, &mut buf);
}

#[test]
#[should_panic(expected = "out of bounds")]
fn write_offset_overflow_panics() {
    let seg = Segment::create("t-oob-write", 4096).unwrap();
    seg.write_bytes(usize::MAX, b"x");
}

#[cfg(target_os = "linux")]
mod linux {
    use super::*;
    use std::io;
    use std::os::fd::AsFd;
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;

    #[test]
    fn second_mapping_sees_writes_both_ways() {
        let a = Segment::create("t-two-maps", 4096).unwrap();
        let b = Segment::map_fd(a.fd().unwrap(), true).unwrap();
        assert_eq!(b.len(), 4096);
        assert_ne!(a.as_ptr(), b.as_ptr(), "two distinct mappings");
        a.write_bytes(10, b"from a");
        let mut buf = [0u8; 6];
        b.read_bytes(10, &mut buf);
        assert_eq!(&buf, b"from a");
        b.atomic_u64(64).store(42, Ordering::Release);
        assert_eq!(a.load_u64(64, Ordering::Acquire), 42);
        // The mapping outlives the descriptor it came from.
        drop(a);
        assert_eq!(b.load_u64(64, Ordering::Acquire), 42);
    }

    #[test]
    fn sealed_segment_maps_read_only_for_others() {
        let seg = Segment::create("t-seal", 4096).unwrap();
        seg.write_bytes(0, b"before");
        seg.seal_read_only_for_others().unwrap();
        let fd = seg.fd().unwrap();
        let s = veddb_shm::seals(fd).unwrap();
        for bit in [
            libc::F_SEAL_SHRINK,
            libc::F_SEAL_GROW,
            libc::F_SEAL_FUTURE_WRITE,
            libc::F_SEAL_SEAL,
        ] {
            assert_ne!(s & bit, 0, "seal {bit:#x} set");
        }
        // Writable mappings are refused with EPERM...
        let err = Segment::map_fd(fd, true).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
        // ...read-only ones work and see the creator's later writes.
        let ro = Segment::map_fd(fd, false).unwrap();
        assert!(!ro.is_writable());
        seg.write_bytes(0, b"after!");
        let mut buf = [0u8; 6];
        ro.read_bytes(0, &mut buf);
        assert_eq!(&buf, b"after!");
        seg.atomic_u32(8).store(5, Ordering::Release);
        assert_eq!(ro.load_u32(8, Ordering::Acquire), 5);
        // Neither shrinking nor growing is possible any more, nor a reopen for writing.
        // SAFETY: ftruncate on a live descriptor owned by `seg`.
        let r = unsafe { libc::ftruncate(std::os::fd::AsRawFd::as_raw_fd(&fd), 0) };
        assert_eq!(r, -1);
        assert_eq!(io::Error::last_os_error().raw_os_error(), Some(libc::EPERM));
        let reopen = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd));
        if let Ok(f) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&reopen)
        {
            let err = Segment::map_fd(f.as_fd(), true).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EPERM));
        }
        // Seals cannot be added twice (F_SEAL_SEAL).
        assert!(seg.seal_read_only_for_others().is_err());
        // A received read-only mapping cannot be sealed by its receiver either.
        assert!(ro.seal_read_only_for_others().is_err());
    }

    #[test]
    #[should_panic(expected = "read-only")]
    fn write_to_read_only_mapping_panics() {
        let seg = Segment::create("t-ro-write", 4096).unwrap();
        let ro = Segment::map_fd(seg.fd().unwrap(), false).unwrap();
        ro.write_bytes(0, b"x");
    }

    #[test]
    #[should_panic(expected = "read-only")]
    fn atomic_on_read_only_mapping_panics() {
        let seg = Segment::create("t-ro-atomic", 4096).unwrap();
        let ro = Segment::map_fd(seg.fd().unwrap(), false).unwrap();
        ro.atomic_u32(0);
    }

    #[test]
    fn slice_of_read_only_mapping() {
        let seg = Segment::create("t-slice", 4096).unwrap();
        seg.write_bytes(128, b"stable bytes");
        seg.seal_read_only_for_others().unwrap();
        let ro = Segment::map_fd(seg.fd().unwrap(), false).unwrap();
        // SAFETY: nothing writes bytes 128..140 while the slice lives.
        let s = unsafe { ro.slice(128, 12) };
        assert_eq!(s, b"stable bytes");
    }

    struct Unlink(PathBuf);
    impl Drop for Unlink {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn shm_path(tag: &str) -> Unlink {
        Unlink(PathBuf::from(format!(
            "/dev/shm/veddb-shm-test-{tag}-{}",
            std::process::id()
        )))
    }

    #[test]
    fn named_create_open() {
        let path = shm_path("named");
        let seg = Segment::create_named(&path.0, 65536, 0o600).unwrap();
        let mode = std::fs::metadata(&path.0).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        seg.write_bytes(1000, b"instance");
        // O_EXCL: a second create fails.
        let err = Segment::create_named(&path.0, 65536, 0o600).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        let ro = Segment::open_named(&path.0, false).unwrap();
        assert_eq!(ro.len(), 65536);
        assert!(!ro.is_writable());
        let mut buf = [0u8; 8];
        ro.read_bytes(1000, &mut buf);
        assert_eq!(&buf, b"instance");
        let rw = Segment::open_named(&path.0, true).unwrap();
        rw.atomic_u64(0).store(9, Ordering::Release);
        assert_eq!(seg.load_u64(0, Ordering::Acquire), 9);
        // Named files are not memfds: no seals.
        assert!(seg.seal_read_only_for_others().is_err());
    }

    #[test]
    fn named_mode_ignores_umask_and_refuses_symlinks() {
        let path = shm_path("mode");
        let seg = Segment::create_named(&path.0, 4096, 0o644).unwrap();
        drop(seg);
        let mode = std::fs::metadata(&path.0).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
        let link = shm_path("link");
        std::os::unix::fs::symlink(&path.0, &link.0).unwrap();
        assert!(Segment::open_named(&link.0, false).is_err(), "O_NOFOLLOW");
        assert!(Segment::create_named(&link.0, 4096, 0o600).is_err());
        assert!(
            Segment::open_named(std::path::Path::new("/dev/shm/veddb-no-such"), false).is_err()
        );
    }
}
