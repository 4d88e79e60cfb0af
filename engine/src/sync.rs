//! Atomics and cells that switch to `loom`'s model-checked versions under `--cfg veddb_loom`.

#[cfg(veddb_loom)]
pub(crate) use loom::future::AtomicWaker;
#[cfg(veddb_loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
#[cfg(veddb_loom)]
pub(crate) use loom::sync::Arc;

#[cfg(not(veddb_loom))]
pub(crate) use atomic_waker::AtomicWaker;
#[cfg(not(veddb_loom))]
pub(crate) use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
#[cfg(not(veddb_loom))]
pub(crate) use std::sync::Arc;

#[cfg(veddb_loom)]
pub(crate) use loom::cell::UnsafeCell;

/// `std::cell::UnsafeCell` with loom's closure-based access API.
#[cfg(not(veddb_loom))]
#[derive(Debug)]
pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(veddb_loom))]
impl<T> UnsafeCell<T> {
    pub(crate) fn new(value: T) -> Self {
        UnsafeCell(std::cell::UnsafeCell::new(value))
    }
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

/// Keeps a value on its own cache lines (two, against the adjacent-line prefetcher), so the
/// producer's and the consumer's indices never share one.
#[repr(align(128))]
#[derive(Debug, Default)]
pub(crate) struct CachePadded<T>(pub T);

impl<T> std::ops::Deref for CachePadded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}
