//! `S3Blobs` against a real S3-compatible server (a private s3s-fs process): round trips in one
//! PUT and in parts, listing and deleting by prefix, presigned URLs as a client fetches them, a
//! store that restarts in the middle of an upload, missing keys, wrong credentials, uploads
//! without ETag checks (for SSE-KMS buckets), and a download cut short on its way.

mod common;

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clipmill::persist::{BlobStore, S3Blobs, Scratch, StoreError};
use common::s3_server::S3Server;

const MIB: usize = 1024 * 1024;

/// Deterministic bytes that do not repeat within a part, so a misplaced part shows.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// Scratch as the server makes it (io_uring where the kernel allows it).
fn scratch() -> Scratch {
    Scratch::new(std::env::temp_dir(), &clipmill::config::Config::load(None).unwrap().scratch)
}

/// The names in `dir`, sorted.
fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

/// A store whose uploads go multipart from 5 MiB, in 5 MiB parts (S3's smallest).
async fn small_parts(server: &S3Server, bucket: &str) -> S3Blobs {
    let mut cfg = server.config(bucket);
    cfg.multipart_threshold_mb = 5;
    cfg.part_size_mb = 5;
    S3Blobs::connect(&cfg, scratch()).await.expect("connect")
}

#[tokio::test]
async fn single_put_round_trip_and_reconnect() {
    let server = S3Server::start().await;
    let blobs = S3Blobs::connect(&server.config("clips"), scratch()).await.expect("connect creates the bucket");
    blobs.ping().await.expect("ping");
    // The bucket now exists: connecting again must not fail on "already exists".
    let blobs2 = S3Blobs::connect(&server.config("clips"), scratch()).await.expect("second connect");

    let tmp = tempfile::tempdir().unwrap();
    let bytes = pattern(MIB + 17, 1);
    let src = write(tmp.path(), "clip.mp4", &bytes);
    blobs.put_file("acme/j1/clip-01.mp4", &src).await.unwrap();
    assert!(blobs2.exists("acme/j1/clip-01.mp4").await.unwrap());

    let out = tmp.path().join("down/nested/clip.mp4");
    blobs2.get_file("acme/j1/clip-01.mp4", &out).await.unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), bytes);
    assert_eq!(file_names(out.parent().unwrap()), ["clip.mp4"], "no part file left beside the download");

    // Uploads replace: a shorter second version leaves nothing of the first.
    let shorter = pattern(1000, 2);
    blobs.put_file("acme/j1/clip-01.mp4", &write(tmp.path(), "v2.mp4", &shorter)).await.unwrap();
    blobs.get_file("acme/j1/clip-01.mp4", &out).await.unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), shorter);

    // An empty file is a valid blob.
    blobs.put_file("acme/j1/empty.json", &write(tmp.path(), "empty.json", b"")).await.unwrap();
    blobs.get_file("acme/j1/empty.json", &tmp.path().join("empty-out.json")).await.unwrap();
    assert_eq!(std::fs::read(tmp.path().join("empty-out.json")).unwrap(), b"");
}

#[tokio::test]
async fn multipart_round_trip() {
    let server = S3Server::start().await;
    let blobs = small_parts(&server, "clips").await;
    let tmp = tempfile::tempdir().unwrap();
    // 12 MiB: parts of 5, 5 and 2 MiB.
    let bytes = pattern(12 * MIB, 3);
    let src = write(tmp.path(), "big.mp4", &bytes);
    blobs.put_file("acme/j2/big.mp4", &src).await.unwrap();

    let out = tmp.path().join("big-out.mp4");
    blobs.get_file("acme/j2/big.mp4", &out).await.unwrap();
    assert!(std::fs::read(&out).unwrap() == bytes, "downloaded bytes differ");
    // The completed upload left no parts or upload records behind (s3s-fs keeps them as
    // `.upload-ID.json` and `.upload_id-ID.part-N` beside its per-object metadata files).
    let leftovers: Vec<String> = file_names(&server.dir.path().join("data")).into_iter().filter(|n| n.starts_with(".upload")).collect();
    assert_eq!(leftovers, Vec::<String>::new());

    // It really went up in three parts: the stored ETag is the multipart one, "<md5>-3".
    let url = blobs.signed_url("acme/j2/big.mp4", now_s() + 60).await.unwrap();
    let resp = reqwest::get(&url).await.unwrap();
    assert_eq!(resp.status(), 200);
    let etag = resp.headers()["etag"].to_str().unwrap().to_string();
    assert!(etag.trim_matches('"').ends_with("-3"), "etag {etag}");
    assert_eq!(resp.headers()["content-type"], "video/mp4");

    // Exactly at the threshold also goes in parts (one part).
    blobs.put_file("acme/j2/five.bin", &write(tmp.path(), "five.bin", &pattern(5 * MIB, 4))).await.unwrap();
    blobs.get_file("acme/j2/five.bin", &out).await.unwrap();
    assert!(std::fs::read(&out).unwrap() == pattern(5 * MIB, 4));
}

#[tokio::test]
async fn exists_and_delete_prefix() {
    let server = S3Server::start().await;
    let blobs = S3Blobs::connect(&server.config("work"), scratch()).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let src = write(tmp.path(), "x.bin", b"stage output");
    for key in ["work/J1/audio.wav", "work/J1/sub/frames.bin", "work/J10/audio.wav", "acme/J1/clip.mp4"] {
        blobs.put_file(key, &src).await.unwrap();
        assert!(blobs.exists(key).await.unwrap(), "{key}");
    }
    assert!(!blobs.exists("work/J1/none.bin").await.unwrap());

    blobs.delete_prefix("work/J1/").await.unwrap();
    assert!(!blobs.exists("work/J1/audio.wav").await.unwrap());
    assert!(!blobs.exists("work/J1/sub/frames.bin").await.unwrap());
    // A prefix is a folder: J10 is another job.
    assert!(blobs.exists("work/J10/audio.wav").await.unwrap());
    assert!(blobs.exists("acme/J1/clip.mp4").await.unwrap());

    // Deleting again, or a prefix that never existed, is not an error (steps run twice).
    blobs.delete_prefix("work/J1").await.unwrap();
    blobs.delete_prefix("work/none").await.unwrap();
    assert!(matches!(blobs.delete_prefix("../x").await, Err(StoreError::InvalidKey(_))));
    assert!(matches!(blobs.put_file("a/../b", &src).await, Err(StoreError::InvalidKey(_))));
}

#[tokio::test]
async fn presigned_urls_serve_until_expiry_and_refuse_tampering() {
    let server = S3Server::start().await;
    let blobs = S3Blobs::connect(&server.config("clips"), scratch()).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let bytes = pattern(300_000, 5);
    blobs.put_file("acme/j3/clip-01.mp4", &write(tmp.path(), "c.mp4", &bytes)).await.unwrap();

    let url = blobs.signed_url("acme/j3/clip-01.mp4", now_s() + 600).await.unwrap();
    assert!(url.starts_with(&format!("{}/clips/acme/j3/clip-01.mp4?", server.endpoint())), "{url}");
    let resp = reqwest::get(&url).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.bytes().await.unwrap() == bytes);

    // One changed signature character.
    let mut parsed = url::Url::parse(&url).unwrap();
    let pairs: Vec<(String, String)> = parsed
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == "X-Amz-Signature" {
                let mut v = v.into_owned().into_bytes();
                v[0] = if v[0] == b'0' { b'1' } else { b'0' };
                String::from_utf8(v).unwrap()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    parsed.query_pairs_mut().clear().extend_pairs(pairs);
    assert_eq!(reqwest::get(parsed.as_str()).await.unwrap().status(), 403);

    // Another key under the same signature.
    let other = url.replace("clip-01.mp4", "clip-02.mp4");
    assert_eq!(reqwest::get(&other).await.unwrap().status(), 403);

    // A link asked for an instant in the past still gets the minimum lifetime, one second.
    let short = blobs.signed_url("acme/j3/clip-01.mp4", now_s() - 10).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(reqwest::get(&short).await.unwrap().status(), 403);
}

#[tokio::test]
async fn put_survives_a_store_restart() {
    let mut server = S3Server::start().await;
    let blobs = small_parts(&server, "clips").await;
    let tmp = tempfile::tempdir().unwrap();
    let bytes = pattern(12 * MIB, 6);
    let src = write(tmp.path(), "big.mp4", &bytes);

    server.stop().await;
    let started = Instant::now();
    let put = tokio::spawn(async move {
        let result = blobs.put_file("acme/j4/big.mp4", &src).await;
        (blobs, result)
    });
    // Back within the first backoff (0.5 s): the retries carry the upload over the outage.
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.start_again().await;
    let (blobs, result) = put.await.unwrap();
    result.expect("put retried through the restart");
    // The first attempt failed at once; success came only after a backoff.
    assert!(started.elapsed() >= Duration::from_millis(500), "{:?}", started.elapsed());

    let out = tmp.path().join("out.mp4");
    blobs.get_file("acme/j4/big.mp4", &out).await.unwrap();
    assert!(std::fs::read(&out).unwrap() == bytes);

    // Killed while parts are going up (or, on a fast machine, just after): the part in flight is
    // retried against the restarted store, which keeps its uploads on disk.
    let bytes = pattern(30 * MIB, 7);
    let src = write(tmp.path(), "bigger.mp4", &bytes);
    let put = tokio::spawn(async move {
        let result = blobs.put_file("acme/j4/bigger.mp4", &src).await;
        (blobs, result)
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    server.stop().await;
    let stopped_while_running = !put.is_finished();
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.start_again().await;
    let (blobs, result) = put.await.unwrap();
    result.expect("put retried through a restart in the middle");
    eprintln!("store stopped while the put was running: {stopped_while_running}");
    blobs.get_file("acme/j4/bigger.mp4", &out).await.unwrap();
    assert!(std::fs::read(&out).unwrap() == bytes);

    // Down for longer than the retries last: the caller hears Unavailable, which is retryable.
    server.stop().await;
    let started = Instant::now();
    let err = blobs.put_file("acme/j4/small.json", &write(tmp.path(), "s.json", b"{}")).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)) && err.is_retryable(), "{err}");
    assert!(started.elapsed() >= Duration::from_millis(3400), "gave up after {:?}", started.elapsed());
    assert!(matches!(blobs.ping().await, Err(StoreError::Unavailable(_))));
}

#[tokio::test]
async fn missing_key_is_blob_not_found() {
    let server = S3Server::start().await;
    let blobs = S3Blobs::connect(&server.config("clips"), scratch()).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("none.mp4");
    let err = blobs.get_file("acme/j5/none.mp4", &out).await.unwrap_err();
    assert!(matches!(&err, StoreError::BlobNotFound(k) if k == "acme/j5/none.mp4"), "{err}");
    assert!(!out.exists());
    assert!(file_names(tmp.path()).is_empty(), "no part file left behind");
    assert!(!blobs.exists("acme/j5/none.mp4").await.unwrap());
}

#[tokio::test]
async fn wrong_credentials_are_refused_not_retried_as_an_outage() {
    let server = S3Server::start().await;
    S3Blobs::connect(&server.config("clips"), scratch()).await.expect("the bucket exists");
    let mut cfg = server.config("clips");
    cfg.secret_key = "not-the-secret".into();
    let err = S3Blobs::connect(&cfg, scratch()).await.err().expect("a wrong secret cannot connect");
    assert!(matches!(&err, StoreError::Refused(m) if m.contains("403")), "{err}");
    assert!(!err.is_retryable());
    assert_eq!(err.code(), "store_refused");
}

#[tokio::test]
async fn without_etag_checks_uploads_still_round_trip() {
    // What a SSE-KMS bucket needs (its ETags are not MD5s): the store still verifies each body
    // against the Content-MD5 it carries, and the stored size is still checked.
    let server = S3Server::start().await;
    let mut cfg = server.config("kms");
    (cfg.multipart_threshold_mb, cfg.part_size_mb, cfg.check_etags) = (5, 5, false);
    let blobs = S3Blobs::connect(&cfg, scratch()).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.bin");
    for (name, len) in [("small.bin", MIB + 3), ("big.bin", 11 * MIB)] {
        let bytes = pattern(len, len as u64);
        blobs.put_file(&format!("acme/j6/{name}"), &write(tmp.path(), name, &bytes)).await.unwrap();
        blobs.get_file(&format!("acme/j6/{name}"), &out).await.unwrap();
        assert!(std::fs::read(&out).unwrap() == bytes, "{name}: downloaded bytes differ");
    }
}

/// Forwards every request to `upstream` as it came (the signature covers this proxy's host, so
/// the Host header goes along unchanged), and answers a GET whose path contains `cut` with the
/// first half of the body only, as a complete response: what a truncating middlebox or an
/// object replaced between HEAD and GET look like to the client.
async fn cutting_proxy(upstream: u16, cut: &'static str) -> u16 {
    use http_body_util::{BodyExt, Full};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let client = reqwest::Client::new();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let client = client.clone();
            let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let client = client.clone();
                async move {
                    let (parts, body) = req.into_parts();
                    let path = parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_default();
                    let body = body.collect().await?.to_bytes();
                    let upstream = client
                        .request(parts.method.clone(), format!("http://127.0.0.1:{upstream}{path}"))
                        .headers(parts.headers)
                        .body(body)
                        .send()
                        .await
                        .expect("s3s-fs answers");
                    let (status, mut headers) = (upstream.status(), upstream.headers().clone());
                    let mut bytes = upstream.bytes().await.expect("a whole body from s3s-fs");
                    if parts.method == hyper::Method::GET && path.contains(cut) {
                        bytes = bytes.slice(..bytes.len() / 2);
                        headers.insert(hyper::header::CONTENT_LENGTH, bytes.len().into());
                    }
                    let mut reply = hyper::Response::new(Full::new(bytes));
                    (*reply.status_mut(), *reply.headers_mut()) = (status, headers);
                    Ok::<_, hyper::Error>(reply)
                }
            });
            tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(stream), service));
        }
    });
    port
}

#[tokio::test]
async fn a_download_shorter_than_the_store_says_is_corrupt_and_leaves_nothing() {
    let server = S3Server::start().await;
    let proxy = cutting_proxy(server.port, "cut-short").await;
    let mut cfg = server.config("clips");
    cfg.endpoint = format!("http://127.0.0.1:{proxy}");
    let blobs = S3Blobs::connect(&cfg, scratch()).await.expect("connect through the proxy");
    let tmp = tempfile::tempdir().unwrap();
    let bytes = pattern(MIB + 5, 7);
    let source = write(tmp.path(), "source.bin", &bytes);
    let downloads = tmp.path().join("downloads");
    for key in ["acme/j7/whole.bin", "acme/j7/cut-short.bin"] {
        blobs.put_file(key, &source).await.unwrap();
    }

    // The proxy passes the rest untouched: a whole body downloads as before.
    blobs.get_file("acme/j7/whole.bin", &downloads.join("whole.bin")).await.unwrap();
    assert!(std::fs::read(downloads.join("whole.bin")).unwrap() == bytes, "the whole download differs");

    let err = blobs.get_file("acme/j7/cut-short.bin", &downloads.join("cut-short.bin")).await.unwrap_err();
    let expected = format!("downloaded {} bytes, the store says {}", bytes.len() / 2, bytes.len());
    assert!(matches!(&err, StoreError::Corrupt(m) if m.contains(&expected)), "{err}");
    assert!(!err.is_retryable());
    assert_eq!(file_names(&downloads), ["whole.bin"], "no part file and no short file left behind");
}
