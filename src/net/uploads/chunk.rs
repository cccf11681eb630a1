//! One tus `PATCH`'s bytes appended to the upload's part, settled whole or cut back, and the
//! rename that makes a complete upload a source.

use std::sync::Arc;

use futures_util::StreamExt;
use http_body_util::BodyExt;
use hyper::StatusCode;
use hyper::body::Incoming;
use tokio::io::AsyncWriteExt;

use super::checksum::Checksum;
use super::{BusyGuard, TusInfo, info_path, part_path, share};
use crate::actors::ServerCtx;
use crate::net::ApiError;

/// One `PATCH`'s bytes. Its own task writes them, so neither a client hanging up nor hyper
/// dropping the request can stop it between appending and settling what counts; it holds the
/// upload until then.
pub(super) struct Chunk {
    pub(super) ctx: Arc<ServerCtx>,
    pub(super) id: String,
    pub(super) info: TusInfo,
    pub(super) offset: u64,
    /// `Content-Length`, when sent: a body that ends short of it broke off.
    pub(super) declared: Option<u64>,
    pub(super) checksum: Option<Checksum>,
    pub(super) _busy: BusyGuard,
}

impl Chunk {
    /// Appends the body to the part; returns the upload's new offset.
    pub(super) async fn write(self, body: Incoming) -> Result<u64, ApiError> {
        let io = |e: std::io::Error| ApiError::Internal(format!("upload: {e}"));
        let mut file = tokio::fs::OpenOptions::new().append(true).open(part_path(&self.ctx.uploads_dir, &self.id)).await.map_err(io)?;
        let room = self.info.length - self.offset;
        let (mut received, mut digest) = (0u64, self.checksum.as_ref().map(Checksum::hasher));
        let mut body = body.into_data_stream();
        // Why the body stopped early, if it did; `true` when it went past the declared length.
        let mut broke: Option<(ApiError, bool)> = loop {
            match body.next().await {
                None => break None,
                Some(Err(e)) => break Some((ApiError::bad("invalid_request", format!("upload body: {e}")), false)),
                Some(Ok(data)) => {
                    if received + data.len() as u64 > room {
                        break Some((ApiError::bad("invalid_request", format!("the body goes past Upload-Length ({} bytes)", self.info.length)), true));
                    }
                    if let Err(e) = file.write_all(&data).await {
                        break Some((io(e), false));
                    }
                    received += data.len() as u64;
                    if let Some(d) = digest.as_mut() {
                        d.update(&data);
                    }
                }
            }
        };
        if let Some(n) = self.declared.filter(|&n| broke.is_none() && received < n) {
            broke = Some((ApiError::bad("invalid_request", format!("the body ended after {received} of its {n} bytes")), false));
        }
        // What arrived before a break counts (the client resumes from HEAD's offset), unless
        // the body went past the length or carried a checksum: a checksummed chunk counts whole
        // or not at all.
        let kept = match (&broke, &self.checksum) {
            (Some((_, past)), checksum) => !past && checksum.is_none(),
            (None, Some(sum)) => sum.matches(digest.expect("a checksum has its hasher")),
            (None, None) => true,
        };
        // Settles the writes in flight before the length is cut or read.
        let flushed = file.flush().await;
        if !kept {
            file.set_len(self.offset).await.map_err(io)?;
        }
        flushed.map_err(io)?;
        file.sync_data().await.map_err(io)?;
        drop(file);
        match broke {
            Some((e, _)) => {
                tracing::info!(upload_id = %self.id, kept_bytes = if kept { received } else { 0 }, error = %e, "tus chunk broke off");
                return Err(e);
            }
            None if !kept => {
                let status = StatusCode::from_u16(460).expect("460 is a status code");
                let message = "checksum mismatch: the chunk's digest is not Upload-Checksum's; nothing of it was kept".into();
                return Err(ApiError::Tus { status, code: "checksum_mismatch", message });
            }
            None => {}
        }
        let offset = self.offset + received;
        if offset == self.info.length {
            complete(&self.ctx, &self.id).await?;
        }
        Ok(offset)
    }
}

/// Every byte is here: the part becomes the upload jobs can use, in one rename.
pub(super) async fn complete(ctx: &ServerCtx, id: &str) -> Result<(), ApiError> {
    let io = |e: std::io::Error| ApiError::Internal(format!("upload: {e}"));
    let done = ctx.uploads_dir.join(id);
    tokio::fs::rename(part_path(&ctx.uploads_dir, id), &done).await.map_err(io)?;
    tokio::fs::remove_file(info_path(&ctx.uploads_dir, id)).await.map_err(io)?;
    tracing::info!(upload_id = %id, "tus upload complete");
    share(ctx, id, &done).await
}
