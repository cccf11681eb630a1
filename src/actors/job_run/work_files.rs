//! A job's work files: stage outputs under deterministic names in the job's folder, shared with
//! the other nodes of a cluster under `work/JOB/NAME` in the blob store.

use std::path::Path;

use serde::{Serialize, de::DeserializeOwned};

use super::{Halt, JobRun};
use crate::job::{Stage, StageStatus};
use crate::persist::{BlobStore, StoreError};

impl JobRun {
    /// A JSON stage output from this node or the cluster's work files; the stage is then done.
    pub(super) async fn cached<T: DeserializeOwned>(&mut self, stage: Stage, name: &str) -> Result<Option<T>, Halt> {
        let path = self.dir().join(name);
        if !self.pull(name, &path).await? {
            return Ok(None);
        }
        let value = read_json(&path).await;
        if value.is_some() {
            self.mark(stage, StageStatus::Done, 1.0).await;
        }
        Ok(value)
    }

    /// Makes the work file `name` present at `to`: true if it is here or was fetched from the
    /// cluster's work files, false if no node has made it yet.
    pub(super) async fn pull(&self, name: &str, to: &Path) -> Result<bool, Halt> {
        if to.exists() {
            return Ok(true);
        }
        if !self.shared() {
            return Ok(false);
        }
        match self.ctx.blobs.get_file(&self.work_key(name), to).await {
            Ok(()) => Ok(true),
            Err(StoreError::BlobNotFound(_)) => Ok(false),
            Err(e) => Err(Halt::store(e)),
        }
    }

    /// Shares a stage output with the other nodes (a no-op on a single node).
    pub(super) async fn push(&self, name: &str, from: &Path) -> Result<(), Halt> {
        if self.shared() {
            self.ctx.blobs.put_file(&self.work_key(name), from).await.map_err(Halt::store)?;
        }
        Ok(())
    }

    pub(super) fn work_key(&self, name: &str) -> String {
        format!("work/{}/{name}", self.record.id)
    }
}

/// Writes a stage output and hands it on.
pub(super) async fn written<T: Serialize>(path: &Path, value: T) -> T {
    write_json(path, &value).await;
    value
}

pub(super) async fn read_json<T: DeserializeOwned>(path: &Path) -> Option<T> {
    let bytes = tokio::fs::read(path).await.ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Writes through a part file, so a crash never leaves a half-written stage output.
pub(super) async fn write_json<T: Serialize>(path: &Path, value: &T) {
    let bytes = serde_json::to_vec(value).expect("stage outputs serialise");
    if let Err(e) = crate::persist::part_file::write(path, bytes).await {
        tracing::warn!(path = %path.display(), error = %e, "cannot write a stage output (it will be made again)");
    }
}
