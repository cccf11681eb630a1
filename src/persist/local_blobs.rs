//! `BlobStore` on the local disk: clips live under `root/KEY`, and clients fetch them from our own
//! HTTP server through URLs signed with HMAC-SHA256 that expire, so no other service is needed.
//!
//! Keys are `/`-separated segments of RFC 3986 unreserved characters (`A-Z a-z 0-9 - _ . ~`) that
//! do not start with a dot. That keeps every key inside `root` (no `..`, no absolute paths), makes
//! it safe in a URL path without percent-encoding (the server verifies the path as it arrives),
//! and reserves dot-names for the temporary files of unfinished uploads, which no URL can reach.

use std::path::{Path, PathBuf};
use std::sync::RwLock;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::{BlobStore, StoreError};

type HmacSha256 = Hmac<Sha256>;

/// Why a signed blob URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlobAccessError {
    #[error("link has expired")]
    Expired,
    #[error("link signature is invalid")]
    BadSignature,
    #[error("blob not found")]
    NotFound,
    #[error("blob key is invalid")]
    InvalidKey,
}

impl BlobAccessError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Expired => "link_expired",
            Self::BadSignature => "bad_signature",
            Self::NotFound => "not_found",
            Self::InvalidKey => "invalid_key",
        }
    }
}

/// Blobs in a local folder, served by signed URL.
pub struct LocalBlobs {
    root: PathBuf,
    secret: Vec<u8>,
    /// Known only once the server has bound its port, hence settable after construction.
    base_url: RwLock<String>,
}

impl LocalBlobs {
    pub fn new(root: PathBuf, secret: Vec<u8>, base_url: String) -> Self {
        Self { root, secret, base_url: RwLock::new(base_url) }
    }

    pub fn set_base_url(&self, base_url: String) {
        *self.base_url.write().unwrap_or_else(|e| e.into_inner()) = base_url;
    }

    /// Where `key` lives on disk (whether or not it exists yet).
    pub fn path_of(&self, key: &str) -> Result<PathBuf, StoreError> {
        if !valid_key(key) {
            return Err(StoreError::InvalidKey(key.to_string()));
        }
        Ok(self.root.join(key))
    }

    /// Checks a signed URL's parameters at `now_unix_s` and returns the file to serve.
    pub fn verify(&self, key: &str, expires: u64, sig_hex: &str, now_unix_s: u64) -> Result<PathBuf, BlobAccessError> {
        let path = self.path_of(key).map_err(|_| BlobAccessError::InvalidKey)?;
        let sig = hex::decode(sig_hex).map_err(|_| BlobAccessError::BadSignature)?;
        // `verify_slice` compares in constant time, so timing reveals nothing about the signature.
        self.mac(key, expires).verify_slice(&sig).map_err(|_| BlobAccessError::BadSignature)?;
        // Checked after the signature, so "expired" is only ever said of a link we issued.
        if now_unix_s > expires {
            return Err(BlobAccessError::Expired);
        }
        if !path.is_file() {
            return Err(BlobAccessError::NotFound);
        }
        Ok(path)
    }

    fn mac(&self, key: &str, expires: u64) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.secret).expect("hmac takes keys of any length");
        mac.update(format!("{key}\n{expires}").as_bytes());
        mac
    }
}

/// Whether `key` follows the key rules above; `S3Blobs` applies the same rules, so a key means the
/// same thing in either store.
pub(crate) fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.split('/').all(|segment| {
            !segment.is_empty()
                && !segment.starts_with('.')
                && segment.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'))
        })
}

/// Copies `from` to `to` through a temporary sibling, synced then renamed, so readers see either
/// the old blob or the whole new one, even across a crash.
fn copy_atomically(from: &Path, to: &Path) -> std::io::Result<()> {
    let dir = to.parent().expect("a blob path is below the root");
    std::fs::create_dir_all(dir)?;
    let name = to.file_name().expect("a blob path has a file name").to_string_lossy();
    let tmp = dir.join(format!(".{name}.{}.tmp", uuid::Uuid::now_v7().simple()));
    let result = std::fs::copy(from, &tmp)
        .and_then(|_| std::fs::File::open(&tmp)?.sync_all())
        .and_then(|()| std::fs::rename(&tmp, to));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

impl BlobStore for LocalBlobs {
    async fn put_file(&self, key: &str, from: &Path) -> Result<(), StoreError> {
        let to = self.path_of(key)?;
        let from = from.to_path_buf();
        tokio::task::spawn_blocking(move || copy_atomically(&from, &to))
            .await
            .map_err(|e| StoreError::Unavailable(format!("blob copy task failed: {e}")))??;
        Ok(())
    }

    async fn get_file(&self, key: &str, to: &Path) -> Result<(), StoreError> {
        let from = self.path_of(key)?;
        if !tokio::fs::try_exists(&from).await? {
            return Err(StoreError::BlobNotFound(key.to_string()));
        }
        let to = to.to_path_buf();
        tokio::task::spawn_blocking(move || copy_atomically(&from, &to))
            .await
            .map_err(|e| StoreError::Unavailable(format!("blob copy task failed: {e}")))??;
        Ok(())
    }

    async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        Ok(tokio::fs::try_exists(self.path_of(key)?).await?)
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<(), StoreError> {
        let dir = self.path_of(prefix.trim_end_matches('/'))?;
        match tokio::fs::remove_dir_all(&dir).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    async fn signed_url(&self, key: &str, expires_unix_s: u64) -> Result<String, StoreError> {
        Ok(self.sign(key, expires_unix_s))
    }
}

impl LocalBlobs {
    /// The signed URL of `key` (signing needs no I/O here).
    pub fn sign(&self, key: &str, expires_unix_s: u64) -> String {
        let sig = hex::encode(self.mac(key, expires_unix_s).finalize().into_bytes());
        let base = self.base_url.read().unwrap_or_else(|e| e.into_inner());
        format!("{}/blobs/{key}?expires={expires_unix_s}&sig={sig}", base.trim_end_matches('/'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000;

    fn blobs() -> (tempfile::TempDir, LocalBlobs) {
        let dir = tempfile::tempdir().unwrap();
        let blobs = LocalBlobs::new(dir.path().join("blobs"), b"test-secret".to_vec(), "http://127.0.0.1:1".into());
        (dir, blobs)
    }

    /// Splits a signed URL into (key, expires, sig) as the HTTP route would.
    fn parse(url: &str) -> (String, u64, String) {
        let url = url::Url::parse(url).unwrap();
        let key = url.path().strip_prefix("/blobs/").unwrap().to_string();
        let query: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
        (key, query["expires"].parse().unwrap(), query["sig"].clone())
    }

    async fn put_bytes(dir: &Path, blobs: &LocalBlobs, key: &str, bytes: &[u8]) {
        let src = dir.join("src.bin");
        std::fs::write(&src, bytes).unwrap();
        blobs.put_file(key, &src).await.unwrap();
    }

    #[tokio::test]
    async fn put_then_signed_url_verifies() {
        let (dir, blobs) = blobs();
        blobs.set_base_url("http://127.0.0.1:8080/".into());
        put_bytes(dir.path(), &blobs, "acme/job1/clip-01.mp4", b"mp4 bytes").await;

        let url = blobs.sign("acme/job1/clip-01.mp4", NOW + 60);
        assert!(url.starts_with("http://127.0.0.1:8080/blobs/acme/job1/clip-01.mp4?expires="), "{url}");
        let (key, expires, sig) = parse(&url);
        let path = blobs.verify(&key, expires, &sig, NOW).unwrap();
        assert_eq!(std::fs::read(path).unwrap(), b"mp4 bytes");
        // Valid through the expiry second itself.
        assert!(blobs.verify(&key, expires, &sig, NOW + 60).is_ok());
    }

    #[tokio::test]
    async fn tampering_and_expiry_are_refused() {
        let (dir, blobs) = blobs();
        put_bytes(dir.path(), &blobs, "acme/job1/clip-01.mp4", b"a").await;
        put_bytes(dir.path(), &blobs, "acme/job1/clip-02.mp4", b"b").await;
        let (key, expires, sig) = parse(&blobs.sign("acme/job1/clip-01.mp4", NOW + 60));

        let mut tampered = sig.clone().into_bytes();
        tampered[0] = if tampered[0] == b'0' { b'1' } else { b'0' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert_eq!(blobs.verify(&key, expires, &tampered, NOW), Err(BlobAccessError::BadSignature));
        assert_eq!(blobs.verify(&key, expires, "not hex", NOW), Err(BlobAccessError::BadSignature));
        assert_eq!(blobs.verify(&key, expires, "", NOW), Err(BlobAccessError::BadSignature));
        assert_eq!(blobs.verify("acme/job1/clip-02.mp4", expires, &sig, NOW), Err(BlobAccessError::BadSignature));
        assert_eq!(blobs.verify(&key, expires + 3600, &sig, NOW), Err(BlobAccessError::BadSignature));
        assert_eq!(blobs.verify(&key, expires, &sig, NOW + 61), Err(BlobAccessError::Expired));

        let other_secret = LocalBlobs::new(dir.path().join("blobs"), b"other".to_vec(), String::new());
        assert_eq!(other_secret.verify(&key, expires, &sig, NOW), Err(BlobAccessError::BadSignature));
    }

    #[tokio::test]
    async fn missing_blob_is_not_found() {
        let (_dir, blobs) = blobs();
        let (key, expires, sig) = parse(&blobs.sign("acme/job1/none.mp4", NOW + 60));
        assert_eq!(blobs.verify(&key, expires, &sig, NOW), Err(BlobAccessError::NotFound));
    }

    #[tokio::test]
    async fn keys_cannot_escape_the_root() {
        let (dir, blobs) = blobs();
        let src = dir.path().join("src.bin");
        std::fs::write(&src, b"x").unwrap();
        for key in ["", "../x", "a/../../x", "/etc/passwd", "a//b", "a/", "a\\b", "a/./b", "a/.hidden", "a b", "a/b?c", "é"] {
            assert!(matches!(blobs.put_file(key, &src).await, Err(StoreError::InvalidKey(_))), "{key:?}");
            assert!(blobs.path_of(key).is_err(), "{key:?}");
            assert_eq!(blobs.verify(key, NOW, "00", NOW), Err(BlobAccessError::InvalidKey), "{key:?}");
        }
        assert!(!dir.path().join("x").exists());
        assert_eq!(blobs.path_of("acme/j-1/clip_01.v2.mp4").unwrap(), dir.path().join("blobs/acme/j-1/clip_01.v2.mp4"));
    }

    #[tokio::test]
    async fn put_replaces_whole_file_and_leaves_no_temporaries() {
        let (dir, blobs) = blobs();
        put_bytes(dir.path(), &blobs, "acme/job1/clip-01.mp4", &[1; 100_000]).await;
        put_bytes(dir.path(), &blobs, "acme/job1/clip-01.mp4", b"short").await;
        let path = blobs.path_of("acme/job1/clip-01.mp4").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"short");
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("clip-01.mp4")]);

        // A failed copy (missing source) leaves the existing blob untouched.
        assert!(blobs.put_file("acme/job1/clip-01.mp4", &dir.path().join("missing")).await.is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"short");
    }
}
