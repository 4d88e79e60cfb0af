//! `veddb-h2io`: a compio TCP stream as tokio's `AsyncRead`/`AsyncWrite`, for h2 (the gRPC
//! server in `veddb-transport` and the gRPC client in `veddb-client`).
//!
//! compio's completion-based I/O takes owned buffers; h2 wants readiness-style traits. compio's
//! own bridge (`compio::io::compat::AsyncStream` + `tokio_util::compat`) polls its operations
//! through a combined waker that allocates whenever it is cloned, and keeps a flush pending
//! until the kernel took the bytes, which stops h2 from reading the next requests meanwhile.
//! This adapter:
//!
//! - reads into one owned buffer and hands h2 what it holds. Reads take [`READ_BYTES_MIN`]
//!   at a time, as readiness-based servers do; only a run of reads that each fill the buffer
//!   (a bulk transfer) doubles it, up to [`READ_BYTES_MAX`], and the first read that does not
//!   fill it goes back to the minimum. (Reading all that is there at once, 64 KiB, halved
//!   `Batch` throughput here: each side then works in larger bursts while the other waits.)
//! - collects h2's writes into one buffer and sends it as one write when h2 flushes, while the
//!   next writes collect into a second buffer (one write in flight at a time, so the bytes
//!   stay in order);
//! - reports a flush done once its bytes are queued to the kernel, like a readiness socket
//!   whose `write` returned: h2 goes on reading while the write completes. A write error is
//!   reported by the next write or flush, and shutdown waits for every byte;
//! - applies backpressure: writes wait once [`WRITE_BUFFER_HIGH`] bytes are queued behind the
//!   write in flight.
//!
//! Each operation is one boxed future polled with the caller's own waker; no `unsafe`.
#![forbid(unsafe_code)]

use std::future::Future;
use std::io;
use std::mem;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use compio::buf::BufResult;
use compio::io::{AsyncRead as _, AsyncWrite as _, AsyncWriteExt as _};
use compio::net::TcpStream;
use tokio::io::ReadBuf;

/// What one read takes at most, normally.
pub const READ_BYTES_MIN: usize = 8 << 10;
/// What one read takes at most, in a bulk transfer.
pub const READ_BYTES_MAX: usize = 256 << 10;
/// Consecutive reads that fill the buffer before it doubles.
const FULL_READS_TO_GROW: u8 = 4;
/// Bytes queued behind the write in flight before writes wait for it.
pub const WRITE_BUFFER_HIGH: usize = 1 << 20;
/// Write buffers keep up to this capacity between writes; larger ones are released.
const WRITE_BUFFER_KEEP: usize = 256 << 10;

type ReadFuture = Pin<Box<dyn Future<Output = BufResult<usize, Vec<u8>>>>>;
type WriteFuture = Pin<Box<dyn Future<Output = BufResult<(), Vec<u8>>>>>;
type ShutdownFuture = Pin<Box<dyn Future<Output = io::Result<()>>>>;

/// See the module documentation.
pub struct TcpIo {
    stream: TcpStream,
    /// Received bytes not yet handed out are `read_buffer[read_at..]`.
    read_buffer: Vec<u8>,
    read_at: usize,
    /// What the next read takes at most (the read buffer's capacity).
    read_size: usize,
    /// Reads in a row that filled the buffer.
    full_reads: u8,
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
    pub fn new(stream: TcpStream) -> TcpIo {
        TcpIo {
            stream,
            read_buffer: Vec::with_capacity(READ_BYTES_MIN),
            read_size: READ_BYTES_MIN,
            full_reads: 0,
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
        self.writing = Some(Box::pin(async move { stream.write_all(buffer).await }));
        // The first poll queues the operation; it completes later (or now, when the driver
        // finished it inline).
        let _ = self.poll_writing(cx);
    }

    /// Room left in the write buffer (at least one byte), reporting a failed earlier write.
    /// When the buffer is full: sends it if nothing is in flight, and waits for the write in
    /// flight otherwise.
    fn poll_space(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let _ = self.poll_writing(cx);
        self.take_write_error()?;
        if self.write_buffer.len() >= WRITE_BUFFER_HIGH {
            self.start_write(cx);
            ready!(self.poll_writing(cx));
            self.take_write_error()?;
            // Nothing is in flight now: this sends the full buffer and leaves an empty one.
            self.start_write(cx);
        }
        Poll::Ready(Ok(WRITE_BUFFER_HIGH
            .saturating_sub(self.write_buffer.len())
            .max(1)))
    }

    /// Sizes the next read after one that returned `n` bytes (see the module documentation).
    fn adapt_read_size(&mut self, n: usize) {
        if n < self.read_size {
            self.full_reads = 0;
            self.read_size = READ_BYTES_MIN;
            return;
        }
        self.full_reads += 1;
        if self.full_reads >= FULL_READS_TO_GROW {
            self.full_reads = 0;
            self.read_size = (self.read_size * 2).min(READ_BYTES_MAX);
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
                if buffer.capacity() != this.read_size {
                    buffer = Vec::with_capacity(this.read_size);
                }
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
                Ok(n) => this.adapt_read_size(n),
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
        let space = ready!(this.poll_space(cx))?;
        let n = space.min(data.len());
        this.write_buffer.extend_from_slice(&data[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let mut space = ready!(this.poll_space(cx))?;
        let mut written = 0;
        for slice in data {
            let n = space.min(slice.len());
            this.write_buffer.extend_from_slice(&slice[..n]);
            written += n;
            space -= n;
            if space == 0 {
                break;
            }
        }
        Poll::Ready(Ok(written))
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

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::pin::Pin;

    use compio::net::{TcpListener, TcpStream};
    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

    use super::*;

    async fn pair() -> (TcpIo, TcpIo) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (connected, accepted) =
            futures_util::join!(TcpStream::connect(address), listener.accept());
        (
            TcpIo::new(connected.unwrap()),
            TcpIo::new(accepted.unwrap().0),
        )
    }

    async fn write(io: &mut TcpIo, mut data: &[u8]) {
        while !data.is_empty() {
            let n = poll_fn(|cx| Pin::new(&mut *io).poll_write(cx, data))
                .await
                .unwrap();
            assert!(n > 0);
            assert!(
                io.write_buffer.len() <= WRITE_BUFFER_HIGH,
                "write buffer over its bound"
            );
            data = &data[n..];
        }
    }

    async fn flush(io: &mut TcpIo) {
        poll_fn(|cx| Pin::new(&mut *io).poll_flush(cx))
            .await
            .unwrap();
    }

    async fn shutdown(io: &mut TcpIo) {
        poll_fn(|cx| Pin::new(&mut *io).poll_shutdown(cx))
            .await
            .unwrap();
    }

    /// Reads until end of stream, in pieces of at most `piece` bytes.
    async fn read_to_end(io: &mut TcpIo, piece: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buffer = vec![0; piece];
        loop {
            let mut read = ReadBuf::new(&mut buffer);
            poll_fn(|cx| Pin::new(&mut *io).poll_read(cx, &mut read))
                .await
                .unwrap();
            if read.filled().is_empty() {
                return out;
            }
            out.extend_from_slice(read.filled());
        }
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn bytes_arrive_in_order_across_flushes_while_writes_are_in_flight() {
        compio::runtime::Runtime::new().unwrap().block_on(async {
            let (mut client, mut server) = pair().await;
            // Many small writes, each flushed at once: most flushes find a write in flight
            // and leave their bytes queued behind it.
            let mut expected = Vec::new();
            let writer = async {
                for i in 0..2_000u32 {
                    let chunk = pattern(1 + (i as usize * 7) % 300, i as u8);
                    write(&mut client, &chunk).await;
                    flush(&mut client).await;
                    expected.extend_from_slice(&chunk);
                }
                shutdown(&mut client).await;
            };
            let (_, received) = futures_util::join!(writer, read_to_end(&mut server, 1000));
            assert_eq!(received.len(), expected.len());
            assert!(received == expected, "bytes reordered or changed");
        });
    }

    #[test]
    fn a_large_write_is_sent_whole_with_backpressure() {
        compio::runtime::Runtime::new().unwrap().block_on(async {
            let (mut client, mut server) = pair().await;
            // Several times the backpressure threshold without a flush: writes take part of it
            // and wait for the write in flight instead of buffering it all (`write` checks the
            // bound after every call).
            let data = pattern(5 * WRITE_BUFFER_HIGH + 12_345, 7);
            let writer = async {
                write(&mut client, &data).await;
                shutdown(&mut client).await;
            };
            let (_, received) =
                futures_util::join!(writer, read_to_end(&mut server, READ_BYTES_MAX * 2));
            assert!(received == data, "large write arrived changed");
        });
    }

    #[test]
    fn reads_grow_only_in_a_bulk_transfer_and_shrink_after() {
        compio::runtime::Runtime::new().unwrap().block_on(async {
            let (mut client, mut server) = pair().await;
            // The rule: four full reads in a row double the size; a short one resets it.
            for _ in 0..FULL_READS_TO_GROW {
                server.adapt_read_size(READ_BYTES_MIN);
            }
            assert_eq!(server.read_size, 2 * READ_BYTES_MIN);
            server.adapt_read_size(100);
            assert_eq!(server.read_size, READ_BYTES_MIN);
            // A bulk transfer: the reader (slower than the writer here) ends up with larger
            // reads, and every byte arrives.
            let data = pattern(8 << 20, 5);
            let writer = async {
                write(&mut client, &data).await;
                shutdown(&mut client).await;
            };
            let reader = async {
                let mut received = Vec::new();
                let mut largest = 0;
                let mut buffer = vec![0; 2 * READ_BYTES_MAX];
                loop {
                    let mut read = ReadBuf::new(&mut buffer);
                    poll_fn(|cx| Pin::new(&mut server).poll_read(cx, &mut read))
                        .await
                        .unwrap();
                    largest = largest.max(server.read_size);
                    if read.filled().is_empty() {
                        return (received, largest);
                    }
                    received.extend_from_slice(read.filled());
                    // Let the writer get ahead, so that the socket holds more than one read.
                    compio::time::sleep(std::time::Duration::from_micros(200)).await;
                }
            };
            let (_, (received, largest)) = futures_util::join!(writer, reader);
            assert!(received == data, "bulk transfer arrived changed");
            assert!(
                largest > READ_BYTES_MIN,
                "reads never grew in a bulk transfer"
            );
            assert!(largest <= READ_BYTES_MAX);
        });
    }

    #[test]
    fn vectored_writes_and_both_directions_at_once() {
        compio::runtime::Runtime::new().unwrap().block_on(async {
            let (mut a, mut b) = pair().await;
            let head = pattern(9, 1);
            let body = pattern(70_000, 2);
            let n = poll_fn(|cx| {
                Pin::new(&mut a)
                    .poll_write_vectored(cx, &[io::IoSlice::new(&head), io::IoSlice::new(&body)])
            })
            .await
            .unwrap();
            assert_eq!(n, head.len() + body.len());
            let reply = pattern(123_456, 3);
            let a_side = async {
                shutdown(&mut a).await;
                read_to_end(&mut a, 4096).await
            };
            let b_side = async {
                let got = read_to_end(&mut b, 4096).await;
                write(&mut b, &reply).await;
                shutdown(&mut b).await;
                got
            };
            let (from_b, from_a) = futures_util::join!(a_side, b_side);
            assert!(from_a == [head, body].concat());
            assert!(from_b == reply);
        });
    }

    #[test]
    fn a_write_to_a_closed_peer_fails_instead_of_hanging() {
        compio::runtime::Runtime::new().unwrap().block_on(async {
            let (mut client, server) = pair().await;
            drop(server);
            let chunk = pattern(64 << 10, 9);
            let mut failed = false;
            // The first writes may still be accepted by the kernel; a reset peer fails one of
            // the next ones (reported by a later write or flush).
            for _ in 0..200 {
                let result = async {
                    let mut data = &chunk[..];
                    while !data.is_empty() {
                        let n = poll_fn(|cx| Pin::new(&mut client).poll_write(cx, data)).await?;
                        data = &data[n..];
                    }
                    poll_fn(|cx| Pin::new(&mut client).poll_flush(cx)).await?;
                    compio::time::sleep(std::time::Duration::from_millis(1)).await;
                    Ok::<(), io::Error>(())
                }
                .await;
                if result.is_err() {
                    failed = true;
                    break;
                }
            }
            assert!(failed, "writes to a closed peer kept succeeding");
        });
    }
}
