//! Socket writes made during one scheduler tick (requests to the upstream, responses to
//! clients: [`BatchedStream`]), handed to the kernel together.
//!
//! Why: when the proxy and the upstream share a busy CPU, every plain `send` wakes the
//! upstream and the scheduler switches to it at once (the proxy has used more than its share
//! of the CPU, so the woken task goes first): a pair of context switches per request, and
//! the upstream answers one request per wake-up. Writes queued while the runtime still has
//! ready tasks and submitted with one `io_uring_enter` wake the upstream once for the whole
//! batch, and it answers them together; responses likewise wake a client once per batch.
//! bench/README.md has the figures.
//!
//! How: the first write of a batch queues its write and yields (`tokio::task::yield_now`,
//! which the runtime defers until it has run every ready task and polled the I/O driver);
//! the tasks that run meanwhile queue theirs behind it; then the first one submits them
//! all. Each runtime thread has its own ring and queue (a task queues on the thread it runs
//! on), so a batch's tasks are woken where they run, not across threads. Every send carries `MSG_DONTWAIT`, so the kernel finishes each one inside the
//! submitting call (sent, partly sent, or `EAGAIN`) and no send outlives it; a caller that
//! got less than all of its bytes through writes the rest with an ordinary write. A queued
//! send whose caller is dropped is taken out of the queue first (and if that caller was to
//! submit the batch, it submits the others as it goes), so a socket is never written after
//! its owner let go of it: [`Batcher::send`] borrows the socket for as long as it runs.
//!
//! Where io_uring cannot be set up (an old kernel, a seccomp filter, a non-Linux system),
//! or does not finish a non-blocking send inside the submitting call, [`Batcher::get`] is
//! `None` and callers write directly. `KEYPLANE_BATCH_WRITES=off` turns batching off.

use std::io;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;

/// The outcome of one queued send, as the kernel reported it (bytes sent, or `-errno`).
#[derive(Default)]
struct Slot {
    state: parking_lot::Mutex<SlotState>,
}

#[derive(Default)]
struct SlotState {
    result: Option<i32>,
    waker: Option<Waker>,
}

impl Slot {
    fn finish(&self, result: i32) {
        let waker = {
            let mut state = self.state.lock();
            state.result = Some(result);
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    fn poll(&self, cx: &mut Context<'_>) -> Poll<i32> {
        let mut state = self.state.lock();
        match state.result {
            Some(result) => Poll::Ready(result),
            None => {
                match &state.waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => state.waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
        }
    }

    fn is_done(&self) -> bool {
        self.state.lock().result.is_some()
    }
}

#[cfg(target_os = "linux")]
mod imp {
    use super::Slot;
    use bytes::Bytes;
    use io_uring::{opcode, types, IoUring};
    use std::os::fd::RawFd;
    use std::sync::Arc;

    /// Submission queue entries: the most sends one `io_uring_enter` carries.
    const ENTRIES: u32 = 256;

    struct Queued {
        id: u64,
        fd: RawFd,
        bytes: Bytes,
        slot: Arc<Slot>,
    }

    pub(super) struct Inner {
        ring: IoUring,
        queue: Vec<Queued>,
        next_id: u64,
    }

    impl Inner {
        pub(super) fn new() -> std::io::Result<Inner> {
            Ok(Inner {
                ring: IoUring::new(ENTRIES)?,
                queue: Vec::new(),
                next_id: 0,
            })
        }

        /// Batching is only safe if a non-blocking send finishes inside the submitting call:
        /// checked once on a socket pair whose buffer is full (it must come back `EAGAIN`
        /// at once) and on one with room (it must come back sent).
        pub(super) fn probe(&mut self) -> std::io::Result<()> {
            use std::io::Write;
            use std::os::fd::AsRawFd;
            let (mut full, _peer) = std::os::unix::net::UnixStream::pair()?;
            full.set_nonblocking(true)?;
            let chunk = [0u8; 4096];
            loop {
                match full.write(&chunk) {
                    Ok(_) => continue,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
            let (room, _peer2) = std::os::unix::net::UnixStream::pair()?;
            room.set_nonblocking(true)?;
            let probe = Bytes::from_static(b"keyplane");
            let slots = [Arc::new(Slot::default()), Arc::new(Slot::default())];
            for (fd, slot) in [(full.as_raw_fd(), &slots[0]), (room.as_raw_fd(), &slots[1])] {
                self.queue.push(Queued {
                    id: u64::MAX,
                    fd,
                    bytes: probe.clone(),
                    slot: slot.clone(),
                });
            }
            self.submit_inline()?;
            let results: Vec<Option<i32>> = slots.iter().map(|s| s.state.lock().result).collect();
            if results == [Some(-libc::EAGAIN), Some(8)] {
                Ok(())
            } else {
                Err(std::io::Error::other(format!(
                    "non-blocking sends did not finish inside the submitting call ({results:?})"
                )))
            }
        }

        pub(super) fn push(&mut self, fd: RawFd, bytes: Bytes, slot: Arc<Slot>) -> (u64, bool) {
            let first = self.queue.is_empty();
            let id = self.next_id;
            self.next_id = self.next_id.wrapping_add(1);
            self.queue.push(Queued {
                id,
                fd,
                bytes,
                slot,
            });
            (id, first)
        }

        /// Takes a send out of the queue (its caller is gone), if it is still there.
        pub(super) fn cancel(&mut self, id: u64) {
            if let Some(at) = self.queue.iter().position(|q| q.id == id) {
                self.queue.swap_remove(at);
            }
        }

        pub(super) fn has_queued(&self) -> bool {
            !self.queue.is_empty()
        }

        /// Submits every queued send; each slot gets its result before this returns.
        pub(super) fn submit(&mut self) {
            if let Err(e) = self.submit_inline() {
                tracing::warn!(error = %e, "batched socket writes could not be submitted");
            }
        }

        // The one unsafe block of the code base: queueing a send hands the kernel a pointer.
        #[allow(unsafe_code)]
        fn submit_inline(&mut self) -> std::io::Result<()> {
            let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
            while !self.queue.is_empty() {
                let n = self.queue.len().min(ENTRIES as usize);
                let batch: Vec<Queued> = self.queue.drain(..n).collect();
                let mut results: Vec<Option<i32>> = vec![None; n];
                let mut pushed = 0;
                {
                    let mut sq = self.ring.submission();
                    for (i, q) in batch.iter().enumerate() {
                        let len = u32::try_from(q.bytes.len()).unwrap_or(u32::MAX);
                        let entry = opcode::Send::new(types::Fd(q.fd), q.bytes.as_ptr(), len)
                            .flags(flags)
                            .build()
                            .user_data(i as u64);
                        // SAFETY: the buffer (`q.bytes`, kept in `batch`) and the socket (the
                        // caller borrows it until its slot has a result) outlive the send:
                        // every entry pushed here is completed before `batch` is dropped
                        // (the loop below waits for all of them).
                        if unsafe { sq.push(&entry) }.is_err() {
                            break;
                        }
                        pushed += 1;
                    }
                }
                let mut completed = 0;
                let mut outcome = Ok(());
                while completed < pushed {
                    if let Err(e) = self.ring.submit_and_wait(pushed - completed) {
                        if e.kind() == std::io::ErrorKind::Interrupted {
                            continue;
                        }
                        outcome = Err(e);
                    }
                    for cqe in self.ring.completion() {
                        if let Some(r) = results.get_mut(cqe.user_data() as usize) {
                            if r.is_none() {
                                *r = Some(cqe.result());
                                completed += 1;
                            }
                        }
                    }
                    if outcome.is_err() {
                        break;
                    }
                }
                for (q, r) in batch.iter().zip(results) {
                    // Not pushed (the ring was full): nothing went out, the caller writes it
                    // all. Pushed but not reported (the wait failed): the caller cannot know
                    // what went out, so the connection is given up.
                    let r = match r {
                        Some(r) => r,
                        None if outcome.is_ok() => -libc::EAGAIN,
                        None => -libc::EIO,
                    };
                    q.slot.finish(r);
                }
                if outcome.is_err() && completed < pushed {
                    // Completions still owed by the kernel would name buffers that are about
                    // to be freed: keep them alive for the life of the process instead.
                    std::mem::forget(batch);
                    return outcome;
                }
                outcome?;
            }
            Ok(())
        }
    }
}

/// One thread's batch of socket writes: an io_uring and the sends queued for it. Each runtime
/// thread has its own (a task queues its writes on the thread it runs on), so the tasks of
/// one batch are woken on the thread that runs them, without a cross-thread wake-up.
pub(crate) struct Batcher {
    #[cfg(target_os = "linux")]
    inner: parking_lot::Mutex<imp::Inner>,
}

/// Whether batching is on in this process: not turned off, and io_uring behaves as needed
/// (checked once, see `imp::Inner::probe`).
static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

thread_local! {
    static LOCAL: std::cell::RefCell<Option<Arc<Batcher>>> = const { std::cell::RefCell::new(None) };
}

impl Batcher {
    /// This thread's batcher, or `None` where batching is off or unavailable (callers write
    /// directly).
    pub(crate) fn get() -> Option<Arc<Batcher>> {
        if !Batcher::on() {
            return None;
        }
        LOCAL.with(|local| {
            let mut local = local.borrow_mut();
            if local.is_none() {
                *local = Batcher::start().map(Arc::new);
            }
            local.clone()
        })
    }

    /// Whether this process batches its writes (without setting up this thread's ring).
    fn on() -> bool {
        *ENABLED.get_or_init(Batcher::enabled)
    }

    fn enabled() -> bool {
        let off = std::env::var("KEYPLANE_BATCH_WRITES")
            .is_ok_and(|v| matches!(v.trim(), "off" | "0" | "false" | "no"));
        if off {
            tracing::info!("batched socket writes are off (KEYPLANE_BATCH_WRITES)");
            return false;
        }
        #[cfg(target_os = "linux")]
        {
            match imp::Inner::new().and_then(|mut inner| inner.probe()) {
                Ok(()) => true,
                Err(e) => {
                    tracing::info!(error = %e, "socket writes are not batched (io_uring unavailable)");
                    false
                }
            }
        }
        #[cfg(not(target_os = "linux"))]
        {
            false
        }
    }

    /// A new batcher (its own ring); `None` if the ring cannot be set up.
    fn start() -> Option<Batcher> {
        #[cfg(target_os = "linux")]
        {
            match imp::Inner::new() {
                Ok(inner) => Some(Batcher {
                    inner: parking_lot::Mutex::new(inner),
                }),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot set up an io_uring; this thread writes directly");
                    None
                }
            }
        }
        #[cfg(not(target_os = "linux"))]
        {
            None
        }
    }

    /// Sends `bytes` on `stream` with the current batch. How many bytes went out (all, some,
    /// or none when the socket buffer was full): the caller writes the rest itself.
    pub(crate) async fn send(
        self: Arc<Self>,
        stream: &TcpStream,
        bytes: Bytes,
    ) -> io::Result<usize> {
        // Dropping the ticket (with this future) takes the send out of the queue; the
        // borrow of `stream` keeps the socket open until then.
        let mut ticket = self.enqueue(stream, bytes);
        let result = std::future::poll_fn(|cx| ticket.poll(cx)).await;
        outcome(result)
    }

    /// Queues a send of `bytes` on `stream`'s socket. The ticket must be polled to its end
    /// or dropped before the socket closes.
    pub(crate) fn enqueue(self: Arc<Self>, stream: &TcpStream, bytes: Bytes) -> Ticket {
        let slot = Arc::new(Slot::default());
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let (id, first) = self
                .inner
                .lock()
                .push(stream.as_raw_fd(), bytes, slot.clone());
            Ticket {
                batcher: self,
                id,
                slot,
                submit: first.then(|| Box::pin(tokio::task::yield_now()) as YieldFuture),
            }
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = (stream, bytes);
            slot.finish(-libc_eagain());
            Ticket {
                batcher: self,
                id: 0,
                slot,
                submit: None,
            }
        }
    }
}

type YieldFuture = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + Sync>>;

/// One queued send. Dropping it before it has its result takes the send out of the queue
/// (and if it was to submit the batch, submits the others).
pub(crate) struct Ticket {
    batcher: Arc<Batcher>,
    id: u64,
    slot: Arc<Slot>,
    /// Set on the ticket that opened the batch: the yield after which it submits.
    submit: Option<YieldFuture>,
}

impl Ticket {
    /// The kernel's result for the send (bytes sent or `-errno`) once it has one. The ticket
    /// that opened the batch submits it, after one deferred yield.
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<i32> {
        if let Some(yielding) = self.submit.as_mut() {
            if yielding.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.submit = None;
            #[cfg(target_os = "linux")]
            self.batcher.inner.lock().submit();
        }
        self.slot.poll(cx)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.slot.is_done() {
            return;
        }
        #[cfg(target_os = "linux")]
        {
            let mut inner = self.batcher.inner.lock();
            // Gone from the queue means submitted, and a submitted send has finished.
            inner.cancel(self.id);
            if self.submit.is_some() && inner.has_queued() {
                inner.submit();
            }
        }
    }
}

fn outcome(result: i32) -> io::Result<usize> {
    match result {
        n if n >= 0 => Ok(usize::try_from(n).unwrap_or(0)),
        e if e == -libc_eagain() => Ok(0),
        e => Err(io::Error::from_raw_os_error(-e)),
    }
}

#[cfg(target_os = "linux")]
fn libc_eagain() -> i32 {
    libc::EAGAIN
}
#[cfg(not(target_os = "linux"))]
fn libc_eagain() -> i32 {
    11
}

/// A server connection whose writes go out with the tick's batch: what the server writes
/// (a response, a streamed event) is taken at once and handed to the kernel at the next
/// flush together with every other connection's, so one system call wakes the clients of a
/// whole batch. Reads are the socket's own. Where batching is off it is the bare socket.
pub struct BatchedStream {
    /// Queued in a batch: the ticket and the bytes (what the kernel did not take is
    /// written directly). Declared first, so it is dropped (taken out of its queue) before
    /// the socket closes.
    queued: Option<(Ticket, Bytes)>,
    tcp: TcpStream,
    /// Taken by `poll_write`, not yet queued.
    out: bytes::BytesMut,
    /// Left over from a batched send, written directly before anything else.
    rest: Bytes,
}

/// Writes buffered past this wait for the buffer to drain (back-pressure).
const MAX_BUFFERED: usize = 256 * 1024;

impl BatchedStream {
    pub fn new(tcp: TcpStream) -> BatchedStream {
        BatchedStream {
            queued: None,
            tcp,
            out: bytes::BytesMut::new(),
            rest: Bytes::new(),
        }
    }

    /// Drives what was written to the kernel: the queued batch send, then its leftover,
    /// then the next batch send.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        use bytes::Buf;
        loop {
            if let Some((ticket, bytes)) = self.queued.as_mut() {
                let result = std::task::ready!(ticket.poll(cx));
                let bytes = std::mem::take(bytes);
                self.queued = None;
                let sent = outcome(result)?;
                self.rest = bytes.slice(sent.min(bytes.len())..);
            }
            while !self.rest.is_empty() {
                let n = std::task::ready!(
                    std::pin::Pin::new(&mut self.tcp).poll_write(cx, &self.rest)
                )?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.rest.advance(n);
            }
            if self.out.is_empty() {
                return Poll::Ready(Ok(()));
            }
            let Some(batcher) = Batcher::get() else {
                // This thread could not set up a ring: what is buffered goes out directly.
                self.rest = self.out.split().freeze();
                continue;
            };
            let bytes = self.out.split().freeze();
            self.queued = Some((batcher.enqueue(&self.tcp, bytes.clone()), bytes));
        }
    }
}

impl tokio::io::AsyncRead for BatchedStream {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().tcp).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for BatchedStream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if !Batcher::on() {
            return std::pin::Pin::new(&mut this.tcp).poll_write(cx, buf);
        }
        if this.out.len() + this.rest.len() >= MAX_BUFFERED {
            std::task::ready!(this.poll_drain(cx))?;
        }
        this.out.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if Batcher::on() {
            std::task::ready!(this.poll_drain(cx))?;
        }
        std::pin::Pin::new(&mut this.tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if Batcher::on() {
            std::task::ready!(this.poll_drain(cx))?;
        }
        std::pin::Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, server) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (client.unwrap(), server.unwrap().0)
    }

    /// A batcher of the test's own: the process-wide one is shared with the tests running
    /// alongside, whose submissions would change what these tests see.
    fn own() -> Arc<Batcher> {
        assert!(
            Batcher::get().is_some(),
            "io_uring batching is available on this machine"
        );
        Arc::new(Batcher::start().expect("a ring"))
    }

    #[tokio::test]
    async fn sends_queued_together_all_arrive_in_full() {
        let batcher = own();
        let mut conns = Vec::new();
        for _ in 0..40 {
            conns.push(pair().await);
        }
        let sends = conns.iter().enumerate().map(|(i, (client, _))| {
            let msg = Bytes::from(format!("request {i:03}"));
            let batcher = batcher.clone();
            async move { batcher.send(client, msg).await }
        });
        let sent = futures::future::join_all(sends).await;
        for (i, (n, (_, server))) in sent.into_iter().zip(conns.iter_mut()).enumerate() {
            assert_eq!(n.unwrap(), 11, "send {i}");
            let mut got = [0u8; 11];
            server.read_exact(&mut got).await.unwrap();
            assert_eq!(got, format!("request {i:03}").as_bytes());
        }
    }

    #[tokio::test]
    async fn a_full_socket_buffer_sends_part_and_the_caller_has_the_rest() {
        let batcher = own();
        let (client, mut server) = pair().await;
        let big = Bytes::from(vec![7u8; 64 << 20]);
        let n = batcher.clone().send(&client, big.clone()).await.unwrap();
        assert!(n < big.len(), "64 MiB cannot fit a socket buffer");
        // The rest goes out with an ordinary write, as the upstream client does.
        let rest = big.slice(n..);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let mut client = client;
            client.write_all(&rest).await.unwrap();
        });
        let mut got = Vec::new();
        let mut buf = vec![0u8; 1 << 20];
        while got.len() < big.len() {
            let r = server.read(&mut buf).await.unwrap();
            assert!(r > 0);
            got.extend_from_slice(&buf[..r]);
        }
        writer.await.unwrap();
        assert_eq!(got.len(), big.len());
        assert!(got.iter().all(|b| *b == 7));
    }

    #[tokio::test]
    async fn a_send_dropped_before_its_batch_went_out_is_never_written() {
        let batcher = own();
        let (a, mut a_peer) = pair().await;
        let (b, mut b_peer) = pair().await;
        // The first send submits the batch after a yield; the second is dropped before that.
        let first = batcher.clone().send(&a, Bytes::from_static(b"kept"));
        let mut second = Box::pin(batcher.clone().send(&b, Bytes::from_static(b"dropped")));
        assert!(futures::poll!(second.as_mut()).is_pending());
        drop(second);
        drop(b);
        assert_eq!(first.await.unwrap(), 4);
        let mut got = [0u8; 4];
        a_peer.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"kept");
        let mut rest = Vec::new();
        b_peer.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "the dropped send went out: {rest:?}");
    }

    #[tokio::test]
    async fn the_submitter_dropped_mid_yield_still_sends_the_others() {
        let batcher = own();
        let (a, _a_peer) = pair().await;
        let (b, mut b_peer) = pair().await;
        let mut first = Box::pin(batcher.clone().send(&a, Bytes::from_static(b"gone")));
        assert!(futures::poll!(first.as_mut()).is_pending());
        let second = batcher.clone().send(&b, Bytes::from_static(b"still sent"));
        let mut second = Box::pin(second);
        assert!(futures::poll!(second.as_mut()).is_pending());
        drop(first);
        assert_eq!(second.await.unwrap(), 10);
        let mut got = [0u8; 10];
        b_peer.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"still sent");
    }

    #[tokio::test]
    async fn a_batched_stream_keeps_order_and_pushes_back_past_its_buffer() {
        use tokio::io::AsyncWriteExt;
        let (client, mut server) = pair().await;
        let mut stream = BatchedStream::new(client);
        // Small writes then a flush, then more than the buffer holds (back-pressure: the
        // write waits for the kernel), then a shutdown that sends what is left.
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            server.read_to_end(&mut got).await.unwrap();
            got
        });
        let mut want = Vec::new();
        for i in 0..100u32 {
            let piece = format!("event {i}\n");
            stream.write_all(piece.as_bytes()).await.unwrap();
            want.extend_from_slice(piece.as_bytes());
        }
        stream.flush().await.unwrap();
        let big: Vec<u8> = (0..(3 * MAX_BUFFERED + 17))
            .map(|i| (i % 251) as u8)
            .collect();
        stream.write_all(&big).await.unwrap();
        want.extend_from_slice(&big);
        stream.shutdown().await.unwrap();
        let got = reader.await.unwrap();
        assert_eq!(got.len(), want.len());
        assert!(got == want, "bytes arrived out of order");
    }
}
