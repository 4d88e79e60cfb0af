//! A compio TCP stream as tokio's `AsyncRead`/`AsyncWrite`, for h2.
//!
//! compio's completion-based I/O takes owned buffers; h2 wants readiness-style traits. compio's
//! own bridge (`compio::io::compat::AsyncStream` + `tokio_util::compat`) costs a boxed future
//! per read and flush plus a combined waker that allocates whenever it is cloned, and it keeps
//! a flush pending until the kernel took the bytes, which stops h2 from reading the next
//! requests meanwhile. This adapter:
//!
//! - reads into one owned buffer (`READ_BUFFER_BYTES`) and hands h2 what it holds;
//! - collects h2's writes into one buffer and sends it as one io_uring write when h2 flushes,
//!   while the next writes collect into a second buffer (one write in flight at a time, so the
//!   bytes stay in order);
//! - reports a flush done once its bytes are in the kernel's queue of operations, like a
//!   readiness socket whose `write` returned: h2 goes on reading while the write completes. A
//!   write error is reported by the next write or flush, and shutdown waits for every byte.
//! - applies backpressure: writes wait once `WRITE_BUFFER_HIGH` bytes are queued behind the
//!   write in flight.

use std::future::Future;
use std::io;
use std::mem;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use compio::buf::BufResult;
use compio::io::{AsyncRead as _, AsyncWrite as _, AsyncWriteExt as _};
use compio::net::TcpStream;
use tokio::io::ReadBuf;

/// Capacity of the read buffer: one io_uring read takes up to this much.
const READ_BUFFER_BYTES: usize = 64 << 10;
/// Bytes queued behind the write in flight before writes wait for it.
const WRITE_BUFFER_HIGH: usize = 1 << 20;
/// Write buffers keep up to this capacity between writes; larger ones are released.
const WRITE_BUFFER_KEEP: usize = 256 << 10;

type ReadFuture = Pin<Box<dyn Future<Output = BufResult<usize, Vec<u8>>>>>;
type WriteFuture = Pin<Box<dyn Future<Output = BufResult<(), Vec<u8>>>>>;
type ShutdownFuture = Pin<Box<dyn Future<Output = io::Result<()>>>>;

/// See the module documentation.
pub(super) struct TcpIo {
    stream: TcpStream,
    /// Received bytes not yet handed out are `read_buffer[read_at..]`.
    read_buffer: Vec<u8>,
    read_at: usize,
    reading: Option<ReadFuture>,
    eof: bool,
    /// Bytes written by h2 and not yet sent.
    write_buffer: Vec<u8>,
    /// The buffer of the last completed write, cleared, for reuse.
    spare: Vec<u8>,
    writing: Option<WriteFuture>,
    /// An error of a write that completed after its flush was reported done.
    write_error: Option<io::Error>,
    shutting_down: Option<ShutdownFuture>,
}

impl TcpIo {
    pub(super) fn new(stream: TcpStream) -> TcpIo {
        TcpIo {
            stream,
            read_buffer: Vec::with_capacity(READ_BUFFER_BYTES),
            read_at: 0,
            reading: None,
            eof: false,
            write_buffer: Vec::new(),
            spare: Vec::new(),
            writing: None,
            write_error: None,
            shutting_down: None,
        }
    }

    /// Polls the write in flight, if any. Ready when none is in flight (its buffer is back in
    /// `spare`, its error in `write_error`).
    fn poll_writing(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(writing) = self.writing.as_mut() {
            let BufResult(result, mut buffer) = ready!(writing.as_mut().poll(cx));
            self.writing = None;
            if let Err(error) = result {
                self.write_error.get_or_insert(error);
            }
            if buffer.capacity() <= WRITE_BUFFER_KEEP {
                buffer.clear();
                self.spare = buffer;
            }
        }
        Poll::Ready(())
    }

    /// Starts sending what h2 wrote, if nothing is in flight and there is something to send.
    fn start_write(&mut self, cx: &mut Context<'_>) {
        if self.writing.is_some() || self.write_buffer.is_empty() {
            return;
        }
        let buffer = mem::replace(&mut self.write_buffer, mem::take(&mut self.spare));
        let mut stream = self.stream.clone();
        let mut writing: WriteFuture = Box::pin(async move { stream.write_all(buffer).await });
        // The first poll queues the operation; it completes later (or now, when the driver
        // finished it inline).
        if let Poll::Ready(BufResult(result, mut buffer)) = writing.as_mut().poll(cx) {
            if let Err(error) = result {
                self.write_error.get_or_insert(error);
            }
            if buffer.capacity() <= WRITE_BUFFER_KEEP {
                buffer.clear();
                self.spare = buffer;
            }
        } else {
            self.writing = Some(writing);
        }
    }

    fn take_write_error(&mut self) -> io::Result<()> {
        match self.write_error.take() {
            Some(error) => Err(io::Error::new(error.kind(), error)),
            None => Ok(()),
        }
    }
}

impl tokio::io::AsyncRead for TcpIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            let held = &this.read_buffer[this.read_at..];
            if !held.is_empty() {
                let n = held.len().min(out.remaining());
                out.put_slice(&held[..n]);
                this.read_at += n;
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            let reading = this.reading.get_or_insert_with(|| {
                let mut buffer = mem::take(&mut this.read_buffer);
                buffer.clear();
                this.read_at = 0;
                let mut stream = this.stream.clone();
                Box::pin(async move { stream.read(buffer).await })
            });
            let BufResult(result, buffer) = ready!(reading.as_mut().poll(cx));
            this.reading = None;
            this.read_buffer = buffer;
            this.read_at = 0;
            match result {
                Ok(0) => this.eof = true,
                Ok(_) => {}
                Err(error) => return Poll::Ready(Err(error)),
            }
        }
    }
}

impl tokio::io::AsyncWrite for TcpIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let _ = this.poll_writing(cx);
        this.take_write_error()?;
        if this.write_buffer.len() >= WRITE_BUFFER_HIGH {
            this.start_write(cx);
            ready!(this.poll_writing(cx));
            this.take_write_error()?;
            this.start_write(cx);
            if this.write_buffer.len() >= WRITE_BUFFER_HIGH {
                return Poll::Pending;
            }
        }
        this.write_buffer.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let total: usize = data.iter().map(|slice| slice.len()).sum();
        let this = self.get_mut();
        // Accept every slice or none: h2 then writes the rest again.
        match Pin::new(&mut *this).poll_write(cx, &[]) {
            Poll::Ready(Ok(_)) => {}
            other => return other,
        }
        this.write_buffer.reserve(total);
        for slice in data {
            this.write_buffer.extend_from_slice(slice);
        }
        Poll::Ready(Ok(total))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let _ = this.poll_writing(cx);
        this.take_write_error()?;
        // Done once the bytes are queued for the kernel: a write still in flight wakes this
        // task when it completes, and h2's next flush then sends what waits behind it.
        this.start_write(cx);
        this.take_write_error()?;
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            ready!(this.poll_writing(cx));
            this.take_write_error()?;
            if this.write_buffer.is_empty() {
                break;
            }
            this.start_write(cx);
        }
        let shutting_down = this.shutting_down.get_or_insert_with(|| {
            let mut stream = this.stream.clone();
            Box::pin(async move { stream.shutdown().await })
        });
        let result = ready!(shutting_down.as_mut().poll(cx));
        this.shutting_down = None;
        Poll::Ready(result)
    }
}
