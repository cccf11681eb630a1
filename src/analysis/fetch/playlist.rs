//! Playlists through yt-dlp's flat listing (`-J --flat-playlist`): each entry's URL and title,
//! without extracting the entries themselves, so a 500-video playlist is listed in one request.
//! A playlist given where one video is expected is refused by the fetch (`Playlist` error); the
//! batch API and `clipmill clip` list it here and make one job (or folder) per entry.

use std::ffi::OsString;
use std::time::Duration;

use serde_json::Value;

use super::{FetchError, Fetcher, classify_ytdlp, remote_url};
use crate::job::{Playlist, PlaylistEntry};

/// A listing is one page or feed: it answers quickly or not at all.
const LISTING_TIMEOUT: Duration = Duration::from_secs(60);

impl Fetcher {
    /// The playlist at `input`, or `None` when it is one video (or a local file).
    pub async fn playlist(&self, input: &str) -> Result<Option<Playlist>, FetchError> {
        let Some(url) = remote_url(input) else { return Ok(None) };
        self.policy.check_url(&url)?;
        // `--`: the URL is a tenant's, and nothing it holds may read as an option.
        let args: Vec<OsString> = ["-J", "--flat-playlist", "--yes-playlist", "--", url.as_str()].map(OsString::from).into();
        let mut json = String::new();
        let run = self.run(&args, |line| json.push_str(line));
        let (status, errors) = tokio::time::timeout(LISTING_TIMEOUT, run).await.map_err(|_| FetchError::Timeout(LISTING_TIMEOUT.as_secs()))??;
        if !status.success() {
            return Err(classify_ytdlp(&url, &errors));
        }
        let info: Value = serde_json::from_str(&json).map_err(|e| FetchError::YtDlp(format!("unreadable playlist json: {e}")))?;
        Ok(listing(&info, url.as_str()))
    }
}

/// The entries of yt-dlp's info JSON when it is a playlist: those with an http(s) URL, in order
/// (a flat entry's `url` is the video's page; a page of embedded videos gives their files).
pub(super) fn listing(info: &Value, url: &str) -> Option<Playlist> {
    if info["_type"] != "playlist" {
        return None;
    }
    let entries = info["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let url = [&e["url"], &e["webpage_url"]].into_iter().filter_map(Value::as_str).find(|u| remote_url(u).is_some())?;
            Some(PlaylistEntry { url: url.to_string(), title: e["title"].as_str().map(str::to_string) })
        })
        .collect();
    Some(Playlist { url: url.to_string(), title: info["title"].as_str().map(str::to_string), entries })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_flat_listing_gives_each_entrys_url_and_title_in_order() {
        let info = json!({"_type": "playlist", "title": "Talks", "entries": [
            {"_type": "url_transparent", "url": "http://h/a.mp4", "title": "Talk A"},
            {"_type": "url", "url": "ftp://h/b", "webpage_url": "https://h/watch?v=b", "title": "Talk B"},
            {"_type": "url", "url": "file:///etc/passwd"},
            {"url": "http://h/c.mp4"},
        ]});
        let list = listing(&info, "http://h/feed").unwrap();
        assert_eq!(list.title.as_deref(), Some("Talks"));
        let got: Vec<(&str, Option<&str>)> = list.entries.iter().map(|e| (e.url.as_str(), e.title.as_deref())).collect();
        assert_eq!(got, [("http://h/a.mp4", Some("Talk A")), ("https://h/watch?v=b", Some("Talk B")), ("http://h/c.mp4", None)]);
    }

    #[test]
    fn one_video_is_not_a_playlist() {
        assert_eq!(listing(&json!({"_type": "video", "title": "x"}), "http://h/v"), None);
        assert_eq!(listing(&json!({"title": "x", "formats": []}), "http://h/v"), None);
    }
}
