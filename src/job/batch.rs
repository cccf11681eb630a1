//! Batches (one job per entry, admitted fairly) and the playlists they come from.

use serde::{Deserialize, Serialize};

use super::{BatchId, JobId, TenantId};

/// A batch: one job per entry, created together, admitted fairly (`actors::admission`). The
/// record does not change once written; its progress is its jobs'.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchRecord {
    pub id: BatchId,
    pub tenant: TenantId,
    /// The playlist the entries came from, when they did, and its title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub playlist: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// One job per entry, in the batch's order.
    pub entries: Vec<BatchEntry>,
    pub created_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchEntry {
    pub job: JobId,
    /// The entry's title in its playlist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

/// A playlist as yt-dlp's flat listing gives it: each entry's URL and title.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Playlist {
    pub url: String,
    pub title: Option<String>,
    pub entries: Vec<PlaylistEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlaylistEntry {
    pub url: String,
    pub title: Option<String>,
}
