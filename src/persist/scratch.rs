//! `Scratch`: the one way clipmill moves bulk bytes to and from local scratch (downloads, uploads,
//! copies, and reads for object storage). Two backends with identical results: io_uring on one
//! dedicated thread (`scratch/uring.rs`) where the kernel allows it, else ordinary `tokio::fs`.
//! Every write lands in a `.part` sibling, is fsynced, then renamed, so a reader sees a file only
//! when it is whole; a failed or abandoned write leaves no part file behind.
//! Also the free-space guard that lets the API refuse new work before the disk fills.

mod uring;

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::Arc;

use futures_util::stream::{self, BoxStream};
use futures_util::{Stream, StreamExt};
use hyper::body::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::part_file::PartFile;
use crate::config::ScratchConfig;

/// Size of every read and write buffer: large, so each system call or ring entry moves a lot.
pub const BUF_SIZE: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ScratchError {
    #[error("scratch space is low: {free_mb} MiB free, at least {min_mb} MiB needed")]
    LowSpace { free_mb: u64, min_mb: u64 },
    #[error("cannot read the free space of scratch: {0}")]
    Io(#[from] io::Error),
}

impl ScratchError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::LowSpace { .. } => "scratch_full",
            Self::Io(_) => "scratch_io",
        }
    }

    /// Space comes back as jobs finish and the sweeper runs, so a later try may succeed.
    pub fn is_retryable(&self) -> bool {
        true
    }
}

/// Local scratch I/O; cheap to clone (the io_uring thread is shared and stops with the last clone).
#[derive(Clone)]
pub struct Scratch {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    min_free_mb: u64,
    uring: Option<uring::Uring>,
}

impl std::fmt::Debug for Scratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scratch").field("dir", &self.inner.dir).field("backend", &self.backend()).finish()
    }
}

impl Scratch {
    /// Scratch under `dir` (created if missing). With `io_uring = "auto"` this starts the io_uring
    /// thread and probes it with a tiny write and read in `dir`; if that fails it logs one warning
    /// and uses `tokio::fs`. Blocks for the probe (a few milliseconds, once per process).
    pub fn new(dir: PathBuf, cfg: &ScratchConfig) -> Scratch {
        if let Err(error) = std::fs::create_dir_all(&dir) {
            tracing::warn!(dir = %dir.display(), %error, "cannot create the scratch folder");
        }
        let uring = match cfg.io_uring.as_str() {
            "off" => None,
            _ => match uring::Uring::start(&dir) {
                Ok(uring) => Some(uring),
                Err(error) => {
                    tracing::warn!(dir = %dir.display(), %error, "io_uring cannot be used; scratch i/o falls back to tokio::fs");
                    None
                }
            },
        };
        let scratch = Scratch { inner: Arc::new(Inner { dir, min_free_mb: cfg.min_free_mb, uring }) };
        tracing::info!(dir = %scratch.inner.dir.display(), backend = scratch.backend(), "scratch ready");
        scratch
    }

    /// "io_uring" or "tokio-fs".
    pub fn backend(&self) -> &'static str {
        if self.inner.uring.is_some() { "io_uring" } else { "tokio-fs" }
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Copies `from` to `to` (through `to.part`, fsynced, renamed); returns the bytes copied.
    pub async fn copy(&self, from: &Path, to: &Path) -> io::Result<u64> {
        let part = PartFile::new(to);
        let written = match &self.inner.uring {
            Some(uring) => uring.copy(from.to_path_buf(), part.path().to_path_buf()).await,
            None => copy_fs(from, part.path()).await,
        };
        part.commit_async(written, to).await
    }

    /// Writes everything `stream` yields to `to` (through `to.part`, fsynced, renamed); returns
    /// the bytes written. The first error of the stream stops the write, removes the part file
    /// and is returned as it is, so a caller can pass its own error through
    /// `io::Error::other(e)` and get it back with `into_inner()` and `downcast`. The parent
    /// folder must exist. Dropping the future midway also removes the part file.
    pub async fn write_stream<S>(&self, to: &Path, stream: S) -> io::Result<u64>
    where
        S: Stream<Item = io::Result<Bytes>> + Send,
    {
        let part = PartFile::new(to);
        let written = match &self.inner.uring {
            Some(uring) => uring.write(part.path().to_path_buf(), stream).await,
            None => write_fs(part.path(), stream).await,
        };
        part.commit_async(written, to).await
    }

    /// The file at `path` in chunks of exactly `chunk_size` bytes, the last one shorter (none
    /// for an empty file): multipart uploads need equal parts. A failure to open is the first item.
    pub fn read_chunks(&self, path: &Path, chunk_size: usize) -> BoxStream<'static, io::Result<Bytes>> {
        let chunk_size = chunk_size.max(1);
        match &self.inner.uring {
            Some(uring) => uring.read(path.to_path_buf(), chunk_size),
            None => read_fs(path.to_path_buf(), chunk_size),
        }
    }

    /// Bytes an unprivileged writer can still use on the scratch file system.
    pub fn free_bytes(&self) -> io::Result<u64> {
        let path = CString::new(self.inner.dir.as_os_str().as_bytes())?;
        // SAFETY: an all-zero statvfs is a valid value of this plain C struct.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: `path` is NUL-terminated and `st` is a valid place for statvfs to write.
        if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // The field types differ between targets.
        #[allow(clippy::unnecessary_cast)]
        Ok(st.f_bavail as u64 * st.f_frsize as u64)
    }

    /// `LowSpace` (code `scratch_full`) while less than `min_free_mb` is free: new work would
    /// fail midway, so it is better refused up front.
    pub fn check_free(&self) -> Result<(), ScratchError> {
        let free_mb = self.free_bytes()? / (1024 * 1024);
        let min_mb = self.inner.min_free_mb;
        if free_mb < min_mb {
            return Err(ScratchError::LowSpace { free_mb, min_mb });
        }
        Ok(())
    }
}

/// The caller's own error carried through `write_stream` as `io::Error::other(e)`, or `e` back
/// when it holds something else (a real I/O error, or another type).
pub fn own_error<E: std::error::Error + Send + Sync + 'static>(e: io::Error) -> Result<E, io::Error> {
    if !e.get_ref().is_some_and(|inner| inner.is::<E>()) {
        return Err(e);
    }
    let inner = e.into_inner().expect("checked to hold an error");
    Ok(*inner.downcast::<E>().expect("checked to be an E"))
}

async fn copy_fs(from: &Path, part: &Path) -> io::Result<u64> {
    let n = tokio::fs::copy(from, part).await?;
    tokio::fs::File::open(part).await?.sync_all().await?;
    Ok(n)
}

async fn write_fs<S>(part: &Path, stream: S) -> io::Result<u64>
where
    S: Stream<Item = io::Result<Bytes>> + Send,
{
    // Without the buffer every small network chunk would be its own blocking write.
    let mut file = tokio::io::BufWriter::with_capacity(BUF_SIZE, tokio::fs::File::create(part).await?);
    let mut stream = pin!(stream);
    let mut written = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        file.write_all(&chunk).await?;
        written += chunk.len() as u64;
    }
    file.flush().await?;
    file.into_inner().sync_all().await?;
    Ok(written)
}

fn read_fs(path: PathBuf, chunk_size: usize) -> BoxStream<'static, io::Result<Bytes>> {
    enum State {
        Closed(PathBuf),
        Open(tokio::fs::File),
    }
    stream::try_unfold(State::Closed(path), move |state| async move {
        let mut file = match state {
            State::Closed(path) => tokio::fs::File::open(&path).await?,
            State::Open(file) => file,
        };
        // `read_buf` into spare capacity: no zeroing, and unlike `read_to_end` no regrowing of a
        // full buffer to look for the end.
        let mut chunk = Vec::with_capacity(chunk_size);
        while chunk.len() < chunk_size {
            let room = (chunk_size - chunk.len()) as u64;
            if (&mut file).take(room).read_buf(&mut chunk).await? == 0 {
                break;
            }
        }
        Ok((!chunk.is_empty()).then(|| (Bytes::from(chunk), State::Open(file))))
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(dir: &Path, io_uring: &str, min_free_mb: u64) -> Scratch {
        let cfg = ScratchConfig { dir: dir.to_path_buf(), sweep_every_s: 60, io_uring: io_uring.into(), min_free_mb };
        Scratch::new(dir.to_path_buf(), &cfg)
    }

    /// Both backends, io_uring first; io_uring must work on the machines this suite runs on.
    fn both(dir: &Path) -> [Scratch; 2] {
        let uring = scratch(dir, "auto", 0);
        assert_eq!(uring.backend(), "io_uring", "io_uring should work here (kernel.io_uring_disabled = 0, no seccomp filter)");
        let fs = scratch(dir, "off", 0);
        assert_eq!(fs.backend(), "tokio-fs");
        [uring, fs]
    }

    /// Deterministic incompressible bytes (splitmix64).
    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed;
        (0..len.div_ceil(8))
            .flat_map(|_| {
                x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = x;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                (z ^ (z >> 31)).to_le_bytes()
            })
            .take(len)
            .collect()
    }

    /// The data cut into uneven pieces: network-sized, odd, and larger than one buffer.
    fn pieces(data: &[u8]) -> Vec<io::Result<Bytes>> {
        let sizes = [7_000, 1, 65_536, 3 * BUF_SIZE / 2, 12_345, BUF_SIZE];
        let (mut out, mut at) = (Vec::new(), 0);
        for size in sizes.iter().cycle() {
            if at == data.len() {
                break;
            }
            let end = (at + size).min(data.len());
            out.push(Ok(Bytes::copy_from_slice(&data[at..end])));
            at = end;
        }
        out
    }

    async fn read_all(s: &Scratch, path: &Path, chunk: usize) -> Vec<Bytes> {
        s.read_chunks(path, chunk).map(|c| c.unwrap()).collect().await
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn both_backends_copy_write_and_read_the_same_bytes() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let inputs = [("big", noise(5 * BUF_SIZE + 123, 1)), ("empty", Vec::new())];
        for (name, data) in &inputs {
            std::fs::write(dir.join(name), data).unwrap();
        }
        for s in both(dir) {
            let b = s.backend();
            for (name, data) in &inputs {
                let copied = dir.join(format!("{name}-copy-{b}"));
                assert_eq!(s.copy(&dir.join(name), &copied).await.unwrap(), data.len() as u64);
                assert!(std::fs::read(&copied).unwrap() == *data, "{b} copy of {name}");

                let streamed = dir.join(format!("{name}-stream-{b}"));
                let n = s.write_stream(&streamed, stream::iter(pieces(data))).await.unwrap();
                assert_eq!(n, data.len() as u64);
                assert!(std::fs::read(&streamed).unwrap() == *data, "{b} write_stream of {name}");
                assert!(!PartFile::new(&streamed).path().exists(), "{b}: no part file after success");

                let chunks = read_all(&s, &dir.join(name), BUF_SIZE).await;
                assert_eq!(chunks.concat(), *data, "{b} read_chunks of {name}");
                let sizes: Vec<usize> = chunks.iter().map(Bytes::len).collect();
                let expected: Vec<usize> = data.chunks(BUF_SIZE).map(<[u8]>::len).collect();
                assert_eq!(sizes, expected, "{b}: equal chunks, the last one shorter");
                // A chunk size that does not divide the buffer, as multipart part sizes may not.
                assert_eq!(read_all(&s, &dir.join(name), 300_007).await.concat(), *data, "{b} odd chunks of {name}");
            }
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_failing_stream_or_missing_source_leaves_nothing_behind() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        for s in both(dir) {
            let b = s.backend();
            let to = dir.join(format!("broken-{b}"));
            let mut items = pieces(&noise(3 * BUF_SIZE, 2));
            items.push(Err(io::Error::other("connection reset by peer")));
            items.push(Ok(Bytes::from_static(b"never written")));
            let err = s.write_stream(&to, stream::iter(items)).await.unwrap_err();
            assert_eq!(err.to_string(), "connection reset by peer", "{b}: the stream's own error comes back");
            assert!(own_error::<ScratchError>(err).is_err(), "{b}: another type is not taken for ours");
            assert!(!to.exists() && !PartFile::new(&to).path().exists(), "{b}: neither the file nor its part remain");

            let copied = dir.join(format!("copy-of-nothing-{b}"));
            let err = s.copy(&dir.join("no-such-file"), &copied).await.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::NotFound, "{b}");
            assert!(!copied.exists() && !PartFile::new(&copied).path().exists(), "{b}: nothing left by a failed copy");

            let first = s.read_chunks(&dir.join("no-such-file"), BUF_SIZE).next().await.unwrap();
            assert_eq!(first.unwrap_err().kind(), io::ErrorKind::NotFound, "{b}");
        }
    }

    #[tokio::test]
    async fn off_or_a_failed_probe_use_tokio_fs_and_low_space_refuses_with_scratch_full() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(scratch(tmp.path(), "off", 0).backend(), "tokio-fs");
        // A failed probe (here: the folder cannot exist, its parent is a file) falls back too.
        std::fs::write(tmp.path().join("file"), b"").unwrap();
        assert_eq!(scratch(&tmp.path().join("file/scratch"), "auto", 0).backend(), "tokio-fs");
        let roomy = scratch(tmp.path(), "off", 1);
        assert!(roomy.free_bytes().unwrap() > 1024 * 1024);
        roomy.check_free().unwrap();

        // An exbibyte: more than any disk this runs on.
        let err = scratch(tmp.path(), "auto", 1 << 40).check_free().unwrap_err();
        assert_eq!(err.code(), "scratch_full");
        assert!(matches!(err, ScratchError::LowSpace { min_mb: 1_099_511_627_776, .. }));
        let message = err.to_string();
        assert!(message.starts_with("scratch space is low: ") && message.ends_with(" MiB needed"), "{message}");
    }
}
