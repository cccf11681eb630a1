//! The io_uring backend of `Scratch`. tokio-uring needs its own current-thread runtime (it cannot
//! run inside the normal multi-threaded one), so one dedicated OS thread runs it and serves
//! requests sent over a channel; callers wait on a oneshot reply or read a bounded channel. Each
//! operation keeps a few 1 MiB reads or writes in flight at increasing offsets.

use std::cell::Cell;
use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::stream::{self, BoxStream};
use futures_util::{Stream, StreamExt};
use hyper::body::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_uring::buf::{BoundedBuf, IoBuf};
use tokio_uring::fs::{File, OpenOptions};

use super::BUF_SIZE;

/// Reads or writes in flight per operation: enough to keep a disk queue busy, little memory.
const DEPTH: usize = 4;

/// The handle to the io_uring thread; the thread ends when the last handle is dropped.
pub(super) struct Uring {
    requests: mpsc::UnboundedSender<Request>,
}

enum Request {
    Copy { from: PathBuf, to: PathBuf, reply: oneshot::Sender<io::Result<u64>> },
    Write { to: PathBuf, chunks: mpsc::Receiver<Chunk>, reply: oneshot::Sender<io::Result<u64>> },
    Read { path: PathBuf, chunk_size: usize, out: mpsc::Sender<ReadMsg> },
}

/// A write's input. The explicit `End` tells a finished stream from a caller that went away
/// (the channel closing without it), which must not be fsynced as if complete.
enum Chunk {
    Data(Buf),
    End,
}

/// A read's output, with the same explicit end.
enum ReadMsg {
    Data(Bytes),
    Failed(io::Error),
    End,
}

/// One write's worth of bytes: gathered small chunks, or a large chunk passed on without a copy.
enum Buf {
    Owned(Vec<u8>),
    Shared(Bytes),
}

impl Buf {
    fn as_slice(&self) -> &[u8] {
        match self {
            Self::Owned(v) => v,
            Self::Shared(b) => b,
        }
    }
}

// SAFETY: both variants point at heap (or static) memory that does not move when the `Buf`
// moves, and that stays allocated and unchanged while the ring owns the `Buf`.
unsafe impl IoBuf for Buf {
    fn stable_ptr(&self) -> *const u8 {
        self.as_slice().as_ptr()
    }

    fn bytes_init(&self) -> usize {
        self.as_slice().len()
    }

    fn bytes_total(&self) -> usize {
        self.as_slice().len()
    }
}

impl Uring {
    /// Starts the thread and probes it with a small write, fsync and read in `dir`.
    pub(super) fn start(dir: &Path) -> io::Result<Uring> {
        static PROBES: AtomicU64 = AtomicU64::new(0);
        let n = PROBES.fetch_add(1, Ordering::Relaxed);
        let probe_path = dir.join(format!(".io_uring-probe-{}-{n}", std::process::id()));
        let (requests, incoming) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        std::thread::Builder::new().name("scratch-uring".into()).spawn(move || {
            // `tokio_uring::start` would panic where the kernel refuses io_uring; this returns it.
            let runtime = match tokio_uring::Runtime::new(&tokio_uring::builder()) {
                Ok(runtime) => runtime,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            runtime.block_on(async move {
                let probed = probe(&probe_path).await;
                let _ = std::fs::remove_file(&probe_path);
                let ok = probed.is_ok();
                let _ = ready_tx.send(probed);
                if ok {
                    serve(incoming).await;
                }
            });
        })?;
        ready_rx.recv().map_err(|_| io::Error::other("the io_uring thread stopped during its probe"))??;
        Ok(Uring { requests })
    }

    fn send(&self, request: Request) -> io::Result<()> {
        self.requests.send(request).map_err(|_| stopped())
    }

    pub(super) async fn copy(&self, from: PathBuf, to: PathBuf) -> io::Result<u64> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Copy { from, to, reply })?;
        answer.await.map_err(|_| stopped())?
    }

    pub(super) async fn write<S>(&self, to: PathBuf, stream: S) -> io::Result<u64>
    where
        S: Stream<Item = io::Result<Bytes>> + Send,
    {
        let (chunks, incoming) = mpsc::channel(DEPTH);
        let (reply, answer) = oneshot::channel();
        self.send(Request::Write { to, chunks: incoming, reply })?;
        match feed(&chunks, stream).await {
            // If the writer has already failed, its answer says why.
            Ok(()) => drop(chunks.send(Chunk::End).await),
            Err(Some(stream_error)) => {
                drop(chunks);
                // The writer stops without fsyncing; wait so the caller removes a quiet file.
                let _ = answer.await;
                return Err(stream_error);
            }
            Err(None) => {}
        }
        answer.await.map_err(|_| stopped())?
    }

    pub(super) fn read(&self, path: PathBuf, chunk_size: usize) -> BoxStream<'static, io::Result<Bytes>> {
        let (out, incoming) = mpsc::channel(2);
        if let Err(e) = self.send(Request::Read { path, chunk_size, out }) {
            return stream::once(async move { Err(e) }).boxed();
        }
        // The stream holds a sender so the thread outlives every stream still being read.
        let state = Some((incoming, self.requests.clone()));
        stream::unfold(state, |state| async move {
            let (mut incoming, keep) = state?;
            match incoming.recv().await {
                Some(ReadMsg::Data(bytes)) => Some((Ok(bytes), Some((incoming, keep)))),
                Some(ReadMsg::End) => None,
                Some(ReadMsg::Failed(e)) => Some((Err(e), None)),
                None => Some((Err(io::Error::other("the io_uring read ended early")), None)),
            }
        })
        .boxed()
    }
}

fn stopped() -> io::Error {
    io::Error::other("the io_uring thread has stopped")
}

/// Sends the stream's bytes in whole `BUF_SIZE` buffers: small network chunks are gathered, a
/// chunk that is already that large passes as it is. `Err(None)` when the writer has gone.
async fn feed<S>(chunks: &mpsc::Sender<Chunk>, stream: S) -> Result<(), Option<io::Error>>
where
    S: Stream<Item = io::Result<Bytes>>,
{
    let send = move |buf| async move { chunks.send(Chunk::Data(buf)).await.map_err(|_| None) };
    let mut stream = pin!(stream);
    let mut pending = Vec::new();
    while let Some(item) = stream.next().await {
        let mut bytes = item.map_err(Some)?;
        if pending.is_empty() && bytes.len() >= BUF_SIZE {
            send(Buf::Shared(bytes)).await?;
            continue;
        }
        while !bytes.is_empty() {
            if pending.capacity() == 0 {
                pending.reserve_exact(BUF_SIZE);
            }
            let take = (BUF_SIZE - pending.len()).min(bytes.len());
            pending.extend_from_slice(&bytes.split_to(take));
            if pending.len() == BUF_SIZE {
                send(Buf::Owned(std::mem::take(&mut pending))).await?;
            }
        }
    }
    if !pending.is_empty() {
        send(Buf::Owned(pending)).await?;
    }
    Ok(())
}

/// The thread's loop: every request runs as its own task, so operations overlap.
async fn serve(mut incoming: mpsc::UnboundedReceiver<Request>) {
    while let Some(request) = incoming.recv().await {
        tokio_uring::spawn(async move {
            match request {
                Request::Copy { from, to, reply } => drop(reply.send(copy(&from, &to).await)),
                Request::Write { to, chunks, reply } => drop(reply.send(write(&to, chunks).await)),
                Request::Read { path, chunk_size, out } => {
                    let last = match read(&path, chunk_size, &out).await {
                        Ok(()) => ReadMsg::End,
                        Err(e) => ReadMsg::Failed(e),
                    };
                    let _ = out.send(last).await;
                }
            }
        });
    }
}

async fn probe(path: &Path) -> io::Result<()> {
    const WORD: &[u8] = b"clipmill io_uring probe";
    let file = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(path).await?;
    file.write_all_at(WORD, 0).await.0?;
    file.sync_all().await?;
    let (read, back) = file.read_at(Vec::with_capacity(64), 0).await;
    read?;
    file.close().await?;
    if back != WORD {
        return Err(io::Error::other("io_uring read back other bytes than it wrote"));
    }
    Ok(())
}

/// Hands out 1 MiB block numbers to the copy workers; `stop` ends them all after a failure.
#[derive(Default)]
struct Blocks {
    next: Cell<u64>,
    stop: Cell<bool>,
}

async fn copy(from: &Path, to: &Path) -> io::Result<u64> {
    let src = Rc::new(File::open(from).await?);
    let dst = Rc::new(File::create(to).await?);
    let blocks = Rc::new(Blocks::default());
    let workers: Vec<_> =
        (0..DEPTH).map(|_| tokio_uring::spawn(copy_blocks(src.clone(), dst.clone(), blocks.clone()))).collect();
    let mut copied = 0;
    let mut failed = None;
    for worker in workers {
        match joined(worker).await {
            Ok(n) => copied += n,
            Err(e) => {
                failed.get_or_insert(e);
            }
        }
    }
    if let Some(e) = failed {
        return Err(e);
    }
    dst.sync_all().await?;
    close(dst).await?;
    close(src).await?;
    Ok(copied)
}

/// One copy worker: read a block, write it at the same offset, until a short block (the end).
async fn copy_blocks(src: Rc<File>, dst: Rc<File>, blocks: Rc<Blocks>) -> io::Result<u64> {
    let mut buf = Vec::with_capacity(BUF_SIZE);
    let mut copied = 0;
    while !blocks.stop.get() {
        let pos = blocks.next.replace(blocks.next.get() + 1) * BUF_SIZE as u64;
        let (read, back) = read_full(&src, buf, pos, BUF_SIZE).await;
        buf = back;
        let n = buf.len();
        let result = match read {
            Ok(()) if n == 0 => return Ok(copied),
            Ok(()) => {
                let (wrote, back) = dst.write_all_at(buf, pos).await;
                buf = back;
                wrote
            }
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            blocks.stop.set(true);
            return Err(e);
        }
        copied += n as u64;
        if n < BUF_SIZE {
            break;
        }
    }
    Ok(copied)
}

async fn write(to: &Path, mut chunks: mpsc::Receiver<Chunk>) -> io::Result<u64> {
    let file = Rc::new(File::create(to).await?);
    let mut in_flight = VecDeque::with_capacity(DEPTH);
    let mut pos = 0u64;
    loop {
        let buf = match chunks.recv().await {
            Some(Chunk::Data(buf)) => buf,
            Some(Chunk::End) => break,
            None => return Err(io::Error::other("the write was abandoned before its end")),
        };
        if in_flight.len() == DEPTH {
            joined(in_flight.pop_front().expect("in flight is full")).await?;
        }
        let (file, at) = (file.clone(), pos);
        pos += buf.as_slice().len() as u64;
        in_flight.push_back(tokio_uring::spawn(async move { file.write_all_at(buf, at).await.0 }));
    }
    for write in in_flight {
        joined(write).await?;
    }
    file.sync_all().await?;
    close(file).await?;
    Ok(pos)
}

/// Reads `path` in `chunk_size` pieces, a few ahead of the consumer, sending them in order.
async fn read(path: &Path, chunk_size: usize, out: &mpsc::Sender<ReadMsg>) -> io::Result<()> {
    let file = Rc::new(File::open(path).await?);
    // About DEPTH MiB ahead whatever the chunk size (multipart uploads use large chunks).
    let depth = (DEPTH * BUF_SIZE / chunk_size).clamp(1, DEPTH);
    let mut in_flight = VecDeque::with_capacity(depth);
    let mut next = 0u64;
    loop {
        while in_flight.len() < depth {
            let (file, pos) = (file.clone(), next * chunk_size as u64);
            next += 1;
            in_flight.push_back(tokio_uring::spawn(async move {
                let (read, buf) = read_full(&file, Vec::new(), pos, chunk_size).await;
                read.map(|()| buf)
            }));
        }
        let chunk = joined(in_flight.pop_front().expect("just filled")).await?;
        let last = chunk.len() < chunk_size;
        // A closed channel means the reader went away: nothing more to do.
        if !chunk.is_empty() && out.send(ReadMsg::Data(Bytes::from(chunk))).await.is_err() {
            return Ok(());
        }
        if last {
            // The reads still in flight lie past the end; they finish on their own.
            return Ok(());
        }
    }
}

/// Reads `len` bytes at `pos` into `buf` (emptied first); fewer only at the end of the file.
async fn read_full(file: &File, mut buf: Vec<u8>, pos: u64, len: usize) -> (io::Result<()>, Vec<u8>) {
    buf.clear();
    buf.reserve_exact(len);
    while buf.len() < len {
        let filled = buf.len();
        let (read, slice) = file.read_at(buf.slice(filled..len), pos + filled as u64).await;
        buf = slice.into_inner();
        match read {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => return (Err(e), buf),
        }
    }
    (Ok(()), buf)
}

async fn joined<T>(task: JoinHandle<io::Result<T>>) -> io::Result<T> {
    task.await.map_err(io::Error::other)?
}

/// Closes through the ring once every task holding the file has finished (else `Drop` closes it).
async fn close(file: Rc<File>) -> io::Result<()> {
    match Rc::try_unwrap(file) {
        Ok(file) => file.close().await,
        Err(_) => Ok(()),
    }
}
