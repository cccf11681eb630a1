//! Writes that appear whole or not at all: the bytes go to a `.part` sibling, which is renamed
//! over the target once complete and removed on every other path (an error, or the writer dropped
//! midway: then in the background when inside the runtime, since `Drop` cannot wait). Every
//! file the server or `clip` hands on is written this way: stage outputs, media outputs, scratch
//! copies and downloads, upload metadata.

use std::io;
use std::path::{Path, PathBuf};

pub struct PartFile {
    part: PathBuf,
    armed: bool,
}

impl PartFile {
    /// The part file of `to`: `to` with `.part` after its whole name.
    pub fn new(to: &Path) -> Self {
        let mut name = to.as_os_str().to_owned();
        name.push(".part");
        Self { part: PathBuf::from(name), armed: true }
    }

    pub fn path(&self) -> &Path {
        &self.part
    }

    /// Renames the part over `to` (for code on blocking threads: GStreamer, Python workers).
    pub fn commit(mut self, to: &Path) -> io::Result<()> {
        std::fs::rename(&self.part, to)?;
        self.armed = false;
        Ok(())
    }

    /// Renames the part over `to` if `written` succeeded; the part is removed either way.
    pub async fn commit_async<T>(mut self, written: io::Result<T>, to: &Path) -> io::Result<T> {
        self.armed = false;
        let result = match written {
            Ok(value) => tokio::fs::rename(&self.part, to).await.map(|()| value),
            Err(e) => Err(e),
        };
        if result.is_err() {
            let _ = tokio::fs::remove_file(&self.part).await;
        }
        result
    }
}

impl Drop for PartFile {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let part = std::mem::take(&mut self.part);
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(move || std::fs::remove_file(part))),
            Err(_) => drop(std::fs::remove_file(part)),
        }
    }
}

/// Writes `bytes` to `to` through its part file.
pub async fn write(to: &Path, bytes: impl AsRef<[u8]>) -> io::Result<()> {
    let part = PartFile::new(to);
    let written = tokio::fs::write(part.path(), bytes).await;
    part.commit_async(written, to).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_write_appears_whole_and_a_dropped_one_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let to = dir.path().join("out.json");
        write(&to, b"{}").await.unwrap();
        assert_eq!(std::fs::read(&to).unwrap(), b"{}");
        let part = PartFile::new(&dir.path().join("never.mp4"));
        std::fs::write(part.path(), b"half").unwrap();
        let path = part.path().to_path_buf();
        drop(part);
        for _ in 0..50 {
            if !path.exists() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(!path.exists(), "a dropped part is removed");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "only the committed file");
    }
}
