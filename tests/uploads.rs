//! Resumable uploads (tus 1.0) against the real server: an upload broken off midway resumes from
//! the offset the server reports and its file is clipped; a chunk whose checksum is wrong is not
//! kept; what the protocol must refuse is refused; an upload left unfinished expires.

mod common;

use std::time::Duration;

use base64::Engine;
use common::server::{KEY_A, KEY_B, TestServer};
use serde_json::json;
use sha2::Digest;
use tokio::io::AsyncWriteExt;

const TUS: (&str, &str) = ("tus-resumable", "1.0.0");
const CHUNK: &str = "application/offset+octet-stream";

async fn create(server: &TestServer, length: usize) -> String {
    let resp = server.http.post(server.url("/api/uploads/tus")).bearer_auth(KEY_A).header(TUS.0, TUS.1).header("upload-length", length)
        .header("upload-metadata", "filename dGFsay5tcDQ=").send().await.unwrap();
    assert_eq!(resp.status(), 201, "{:?}", resp.text().await);
    assert!(resp.headers().contains_key("upload-expires"));
    resp.headers()["location"].to_str().unwrap().to_string()
}

async fn head(server: &TestServer, key: &str, location: &str) -> (u16, Option<u64>) {
    let resp = server.http.head(server.url(location)).bearer_auth(key).header(TUS.0, TUS.1).send().await.unwrap();
    let offset = resp.headers().get("upload-offset").map(|v| v.to_str().unwrap().parse().unwrap());
    (resp.status().as_u16(), offset)
}

async fn patch(server: &TestServer, location: &str, offset: usize, bytes: &[u8], checksum: Option<String>) -> reqwest::Response {
    let mut req = server.http.patch(server.url(location)).bearer_auth(KEY_A).header(TUS.0, TUS.1).header("content-type", CHUNK).header("upload-offset", offset);
    if let Some(sum) = checksum {
        req = req.header("upload-checksum", sum);
    }
    req.body(bytes.to_vec()).send().await.unwrap()
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256 {}", base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(bytes)))
}

fn sha1(bytes: &[u8]) -> String {
    format!("sha1 {}", base64::engine::general_purpose::STANDARD.encode(sha1::Sha1::digest(bytes)))
}

/// A PATCH over a raw connection announcing `length` bytes from `offset`, of which only `sent` are
/// written: the connection stays open until the caller drops it, as a client that broke off.
async fn broken_patch(server: &TestServer, location: &str, offset: usize, length: usize, checksum: Option<String>, sent: &[u8]) -> tokio::net::TcpStream {
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let checksum = checksum.map(|c| format!("upload-checksum: {c}\r\n")).unwrap_or_default();
    let head_lines = format!(
        "PATCH {location} HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {KEY_A}\r\ntus-resumable: 1.0.0\r\ncontent-type: {CHUNK}\r\nupload-offset: {offset}\r\n{checksum}content-length: {length}\r\n\r\n",
        server.addr
    );
    tcp.write_all(head_lines.as_bytes()).await.unwrap();
    tcp.write_all(sent).await.unwrap();
    tcp.flush().await.unwrap();
    tcp
}

fn upload_id(location: &str) -> &str {
    location.rsplit('/').next().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_broken_off_midway_resumes_and_its_file_is_clipped() {
    let server = TestServer::start(|_| {}).await;
    let video = std::fs::read(common::fixture("noface.mp4")).unwrap();
    let options = server.http.request(reqwest::Method::OPTIONS, server.url("/api/uploads/tus")).send().await.unwrap();
    assert_eq!(options.status(), 204);
    assert_eq!(options.headers()["tus-version"], "1.0.0");
    assert!(options.headers()["tus-extension"].to_str().unwrap().contains("checksum"));

    let location = create(&server, video.len()).await;
    let id = upload_id(&location).to_string();
    // A PATCH announcing the whole file, cut off after about half of it.
    let half = video.len() / 2;
    let tcp = broken_patch(&server, &location, 0, video.len(), None, &video[..half]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(tcp);

    // The server keeps what arrived; the offset settles once it has seen the break.
    let mut offset = 0;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (status, now) = head(&server, KEY_A, &location).await;
        assert_eq!(status, 200);
        if now == Some(offset) && offset > 0 {
            break;
        }
        offset = now.unwrap();
    }
    assert!(offset > 0 && offset as usize <= half, "offset {offset} after sending {half}");
    let early = server.post_json(KEY_A, "/api/jobs", &json!({ "upload_id": id }).to_string()).await;
    assert_eq!(early.status(), 400, "an unfinished upload is no source");
    assert_eq!(early.json::<serde_json::Value>().await.unwrap()["error"]["code"], "unknown_upload");

    let rest = &video[offset as usize..];
    let resp = patch(&server, &location, offset as usize, rest, Some(sha256(rest))).await;
    assert_eq!(resp.status(), 204, "{:?}", resp.text().await);
    assert_eq!(resp.headers()["upload-offset"].to_str().unwrap(), video.len().to_string());
    assert_eq!(head(&server, KEY_A, &location).await, (200, Some(video.len() as u64)));
    assert_eq!(std::fs::read(server.dir.path().join("data/uploads").join(&id)).unwrap(), video, "the upload is the file, byte for byte");

    let job = server.create(KEY_A, json!({ "upload_id": id, "options": { "clips": 1, "min_len": 3, "max_len": 5 } })).await;
    let job = server.wait_final(KEY_A, &job, Duration::from_secs(240)).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["clips"].as_array().unwrap().len(), 1, "{job}");
}

#[tokio::test(flavor = "multi_thread")]
async fn tus_keeps_nothing_of_a_bad_chunk_and_refuses_what_the_protocol_refuses() {
    let server = TestServer::start(|c| c.server.max_upload_bytes = 10_000).await;
    let bytes: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
    let location = create(&server, bytes.len()).await;
    let (first, second) = bytes.split_at(500);
    let uploads = server.dir.path().join("data/uploads");
    let sources = || std::fs::read_dir(&uploads).unwrap().filter(|e| e.as_ref().unwrap().file_type().unwrap().is_file()).count();

    let wrong = patch(&server, &location, 0, first, Some(sha1(second))).await;
    assert_eq!(wrong.status().as_u16(), 460, "a wrong checksum");
    assert_eq!(head(&server, KEY_A, &location).await, (200, Some(0)), "nothing of the bad chunk kept");
    assert_eq!(sources(), 0);
    let bad_algorithm = patch(&server, &location, 0, first, Some("md5 AAAA".into())).await;
    assert_eq!(bad_algorithm.status(), 400);
    assert_eq!(patch(&server, &location, 0, first, Some(sha1(first))).await.status(), 204);
    assert_eq!(head(&server, KEY_A, &location).await, (200, Some(500)));

    assert_eq!(patch(&server, &location, 0, second, None).await.status(), 409, "an offset that is not the upload's");
    let past = patch(&server, &location, 500, &bytes, None).await;
    assert_eq!(past.status(), 400, "a body past Upload-Length");
    assert_eq!(head(&server, KEY_A, &location).await, (200, Some(500)), "and nothing of it kept");
    let no_version = server.http.head(server.url(&location)).bearer_auth(KEY_A).send().await.unwrap();
    assert_eq!((no_version.status().as_u16(), no_version.headers().get("tus-version").map(|v| v.to_str().unwrap())), (412, Some("1.0.0")));
    let wrong_type = server.http.patch(server.url(&location)).bearer_auth(KEY_A).header(TUS.0, TUS.1).header("upload-offset", 500)
        .header("content-type", "application/json").body("{}").send().await.unwrap();
    assert_eq!(wrong_type.status(), 415);
    assert_eq!(head(&server, KEY_B, &location).await.0, 404, "another tenant's upload");
    let huge = server.http.post(server.url("/api/uploads/tus")).bearer_auth(KEY_A).header(TUS.0, TUS.1).header("upload-length", 10_001).send().await.unwrap();
    assert_eq!(huge.status(), 413);

    let deleted = server.http.delete(server.url(&location)).bearer_auth(KEY_A).header(TUS.0, TUS.1).send().await.unwrap();
    assert_eq!(deleted.status(), 204);
    assert_eq!(head(&server, KEY_A, &location).await.0, 404);
    assert_eq!(std::fs::read_dir(uploads.join(".tus")).unwrap().count(), 0, "nothing left of it");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_left_unfinished_expires() {
    let server = TestServer::start(|c| {
        c.server.upload_expiry_s = 1;
        c.scratch.sweep_every_s = 1;
    })
    .await;
    let location = create(&server, 100).await;
    assert_eq!(patch(&server, &location, 0, &[7; 40], None).await.status(), 204);
    let until = tokio::time::Instant::now() + Duration::from_secs(15);
    while head(&server, KEY_A, &location).await.0 != 404 {
        assert!(tokio::time::Instant::now() < until, "the upload did not expire");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The sweep removes the part, then the info: HEAD answers 404 from the first removal, so the
    // info may outlive that answer by a moment, but not the sweep.
    let left = || std::fs::read_dir(server.dir.path().join("data/uploads/.tus")).unwrap().count();
    while left() != 0 {
        assert!(tokio::time::Instant::now() < until, "the sweep left {} files of the upload", left());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_checksummed_chunk_broken_off_keeps_nothing_and_holds_its_upload_meanwhile() {
    let server = TestServer::start(|_| {}).await;
    let bytes: Vec<u8> = (0..100_000u32).map(|i| (i * 13 % 251) as u8).collect();
    let location = create(&server, bytes.len()).await;
    let part = server.dir.path().join("data/uploads/.tus").join(format!("{}.part", upload_id(&location)));
    let tcp = broken_patch(&server, &location, 0, bytes.len(), Some(sha256(&bytes)), &bytes[..40_000]).await;
    // The server has the bytes, but they count only once the whole chunk is verified.
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    while std::fs::metadata(&part).unwrap().len() < 40_000 {
        assert!(tokio::time::Instant::now() < until, "the chunk's bytes did not arrive");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(head(&server, KEY_A, &location).await, (200, Some(0)), "unverified bytes are not the offset");
    assert_eq!(patch(&server, &location, 0, &bytes[..10], None).await.status(), 423, "one PATCH at a time");
    let other = server.http.patch(server.url(&location)).bearer_auth(KEY_B).header(TUS.0, TUS.1).header("content-type", CHUNK)
        .header("upload-offset", 0).body(vec![0u8; 10]).send().await.unwrap();
    assert_eq!(other.status(), 404, "another tenant learns nothing, not even that it is busy");
    assert_eq!(other.headers()["tus-resumable"], "1.0.0", "errors are tus answers too");
    drop(tcp);

    // Once the break is seen, nothing of the chunk is left and the upload is free again.
    let first = &bytes[..1000];
    loop {
        let resp = patch(&server, &location, 0, first, Some(sha1(first))).await;
        if resp.status() == 423 {
            assert!(tokio::time::Instant::now() < until, "the broken PATCH still holds the upload");
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        assert_eq!(resp.status(), 204, "{:?}", resp.text().await);
        break;
    }
    assert_eq!(std::fs::metadata(&part).unwrap().len(), 1000, "the broken chunk's 40000 bytes were cut away");
    let rest = &bytes[1000..];
    assert_eq!(patch(&server, &location, 1000, rest, Some(sha256(rest))).await.status(), 204);
    assert_eq!(std::fs::read(server.dir.path().join("data/uploads").join(upload_id(&location))).unwrap(), bytes);
    assert!(!part.exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_upload_is_gone_before_the_sweep_removes_it() {
    let server = TestServer::start(|c| {
        c.server.upload_expiry_s = 1;
        c.scratch.sweep_every_s = 3600;
    })
    .await;
    let location = create(&server, 100).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(head(&server, KEY_A, &location).await.0, 410);
    assert_eq!(patch(&server, &location, 0, &[7; 10], None).await.status(), 410);
    let uploads = server.dir.path().join("data/uploads");
    assert_eq!(clipmill::net::uploads::sweep_expired(&uploads, &Default::default()).await, 1);
    assert_eq!(head(&server, KEY_A, &location).await.0, 404);
    assert_eq!(std::fs::read_dir(uploads.join(".tus")).unwrap().count(), 0);
}
