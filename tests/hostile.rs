//! Hostile inputs (issue 15): a corpus of broken, lying and oversized files, made here from the
//! generated media, and hostile requests. Every file is uploaded to a real server and made a job,
//! beside a good job. Each case must end in a specific code (a job failed with a reason, or a
//! 4xx); the server keeps serving, the good job succeeds, scratch is left clean, and the process's
//! peak memory stays bounded. The counts go to `target/suite-notes/hostile.txt`, which the test
//! command prints above its closing line.

mod common;

use std::path::Path;
use std::time::Duration;

use common::server::{KEY_A, TestServer};
use gstreamer as gst;
use gstreamer::prelude::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How a case must end.
enum Expect {
    /// The job fails with this code.
    Fails(&'static str),
    /// The job succeeds: the file is damaged but what can be read makes a clip (reported).
    Succeeds,
}

struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    expect: Expect,
}

fn find_all(hay: &[u8], needle: &[u8]) -> Vec<usize> {
    hay.windows(needle.len()).enumerate().filter(|(_, w)| *w == needle).map(|(i, _)| i).collect()
}

fn put_u32(bytes: &mut [u8], at: usize, value: u32) {
    bytes[at..at + 4].copy_from_slice(&value.to_be_bytes());
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap())
}

/// The talk with every video track's header and sample entry declaring 32768x32768.
fn huge_frame(talk: &[u8]) -> Vec<u8> {
    let mut b = talk.to_vec();
    let mut patched = 0;
    for p in find_all(&b, b"tkhd") {
        // After the type: version, then width and height (16.16) at 76/80 (version 0) or 88/92.
        let base = p + 4 + if b[p + 4] == 1 { 88 } else { 76 };
        if u32_at(&b, base) != 0 {
            put_u32(&mut b, base, 32768 << 16);
            put_u32(&mut b, base + 4, 32768 << 16);
            patched += 1;
        }
    }
    for p in find_all(&b, b"avc1") {
        // Visual sample entry: 24 bytes after the type come width and height (16 bits each).
        if p + 32 <= b.len() {
            b[p + 28..p + 30].copy_from_slice(&32768u16.to_be_bytes());
            b[p + 30..p + 32].copy_from_slice(&32768u16.to_be_bytes());
        }
    }
    assert!(patched > 0, "the talk has a video track header");
    b
}

/// The talk with its movie, track and media headers declaring 100 hours.
fn hundred_hours(talk: &[u8]) -> Vec<u8> {
    let mut b = talk.to_vec();
    let hours = |timescale: u32| timescale.saturating_mul(100 * 3600);
    let mvhd = find_all(&b, b"mvhd")[0];
    assert_eq!(b[mvhd + 4], 0, "a version 0 movie header");
    let movie_scale = u32_at(&b, mvhd + 16);
    put_u32(&mut b, mvhd + 20, hours(movie_scale));
    // Version 0 layouts: tkhd's duration (movie time scale) 20 bytes after the type, mdhd's
    // time scale and duration 12 and 16.
    for p in find_all(&b, b"tkhd") {
        if b[p + 4] == 0 {
            put_u32(&mut b, p + 24, hours(movie_scale));
        }
    }
    for p in find_all(&b, b"mdhd") {
        if b[p + 4] == 0 {
            let scale = u32_at(&b, p + 16);
            put_u32(&mut b, p + 20, hours(scale));
        }
    }
    b
}

/// A Matroska file whose Segment and first Cluster claim far more bytes than the file has.
fn lying_matroska(mkv: &[u8]) -> Vec<u8> {
    let mut b = mkv.to_vec();
    for id in [&[0x18, 0x53, 0x80, 0x67][..], &[0x1F, 0x43, 0xB6, 0x75][..]] {
        let p = find_all(&b, id)[0] + 4;
        // An EBML size: its first byte's leading zeros say how long it is. Same length, a
        // value of about 256 MiB (not the "unknown size" of all ones).
        let len = b[p].leading_zeros() as usize + 1;
        let mut size = vec![0u8; len];
        size[0] = 0x80 >> (len - 1);
        if len >= 4 {
            size[len - 4] |= 0x10;
        } else {
            size[len - 1] = 0xFE;
        }
        b[p..p + len].copy_from_slice(&size);
    }
    b
}

/// Runs a GStreamer launch line to its end (the corpus files only GStreamer can make).
fn launch(description: &str) {
    gst::init().unwrap();
    let pipeline = gst::parse::launch(description).unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    for message in bus.iter_timed(gst::ClockTime::from_seconds(120)) {
        match message.view() {
            gst::MessageView::Eos(..) => break,
            gst::MessageView::Error(e) => panic!("{description}: {}", e.error()),
            _ => {}
        }
    }
    pipeline.set_state(gst::State::Null).unwrap();
}

/// A Matroska file with one short video and `n` raw audio streams.
fn many_streams(dir: &Path, n: usize) -> Vec<u8> {
    let out = dir.join("many.mkv");
    let mut line = format!(
        "matroskamux name=m ! filesink location={} videotestsrc num-buffers=150 ! video/x-raw,width=320,height=240,framerate=30/1 ! x264enc ! m. ",
        out.display()
    );
    for _ in 0..n {
        line += "audiotestsrc num-buffers=50 samplesperbuffer=800 ! audio/x-raw,format=S16LE,rate=8000,channels=1 ! m. ";
    }
    launch(&line);
    std::fs::read(out).unwrap()
}

/// A PNG picture.
fn png(dir: &Path) -> Vec<u8> {
    let out = dir.join("picture.png");
    launch(&format!("videotestsrc num-buffers=1 ! video/x-raw,width=64,height=64 ! pngenc ! filesink location={}", out.display()));
    std::fs::read(out).unwrap()
}

fn corpus(dir: &Path) -> Vec<Case> {
    let fixture = |name: &str| std::fs::read(common::fixtures().join(name)).unwrap();
    let talk = fixture("talk.mp4");
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let random: Vec<u8> = (0..300_000)
        .map(|_| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng as u8
        })
        .collect();
    vec![
        Case { name: "zero bytes", bytes: vec![], expect: Expect::Fails("unreadable_input") },
        Case { name: "random bytes", bytes: random, expect: Expect::Fails("unknown_format") },
        Case { name: "truncated, moov at the end (missing)", bytes: talk[..talk.len() * 2 / 5].to_vec(), expect: Expect::Fails("unreadable_input") },
        Case { name: "truncated, moov first", bytes: fixture("cutshort.mp4"), expect: Expect::Succeeds },
        Case { name: "header declaring 32768x32768", bytes: huge_frame(&talk), expect: Expect::Fails("frame_too_large") },
        Case { name: "header declaring 100 hours", bytes: hundred_hours(&talk), expect: Expect::Fails("source_too_long") },
        Case { name: "200 streams", bytes: many_streams(dir, 200), expect: Expect::Fails("too_many_streams") },
        Case { name: "a picture named .mp4", bytes: png(dir), expect: Expect::Fails("unknown_format") },
        Case { name: "a text file named .mp4", bytes: b"not a video, only words\n".repeat(4000), expect: Expect::Fails("unreadable_input") },
        Case { name: "audio only", bytes: fixture("audioonly.m4a"), expect: Expect::Fails("no_video_stream") },
        Case { name: "Matroska whose sizes lie", bytes: lying_matroska(&fixture("mpeg4.mkv")), expect: Expect::Succeeds },
    ]
}

/// Peak resident memory of this process (the server runs in it), in MiB.
fn peak_rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() / 1024
}

async fn upload(server: &TestServer, bytes: Vec<u8>) -> String {
    let resp = server.http.post(server.url("/api/uploads")).bearer_auth(KEY_A).body(bytes).send().await.unwrap();
    assert_eq!(resp.status(), 201);
    resp.json::<serde_json::Value>().await.unwrap()["upload_id"].as_str().unwrap().to_string()
}

/// A WebSocket client announcing a 1 TiB frame: the server must close the connection, not read it.
async fn oversize_frame(server: &TestServer) -> bool {
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let handshake = format!(
        "GET /api/events?api_key={KEY_A} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        server.addr
    );
    tcp.write_all(handshake.as_bytes()).await.unwrap();
    let mut frame = vec![0x82, 0xFF];
    frame.extend_from_slice(&(1u64 << 40).to_be_bytes());
    frame.extend_from_slice(&[1, 2, 3, 4]);
    frame.extend_from_slice(&[0u8; 4096]);
    let _ = tcp.write_all(&frame).await;
    // Read until the server closes: it may send the snapshot and a close frame first.
    let mut buf = vec![0u8; 65536];
    let closed = async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), closed).await.is_ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_inputs_end_with_their_codes_and_nothing_else_is_hurt() {
    let server = TestServer::start(|c| c.server.max_jobs_in_flight = 64).await;
    let dir = tempfile::tempdir().unwrap();
    let options = json!({ "clips": 1, "min_len": 3, "max_len": 8 });
    let good = upload(&server, std::fs::read(common::fixtures().join("talk.mp4")).unwrap()).await;
    let good = server.create(KEY_A, json!({ "upload_id": good, "options": options })).await;

    let cases = corpus(dir.path());
    let mut jobs = vec![];
    for case in &cases {
        let id = upload(&server, case.bytes.clone()).await;
        jobs.push(server.create(KEY_A, json!({ "upload_id": id, "options": options })).await);
    }
    let (mut contained, mut report) = (0, vec![]);
    for (case, id) in cases.iter().zip(&jobs) {
        let job = server.wait_final(KEY_A, id, Duration::from_secs(300)).await;
        let (status, code) = (job["status"].as_str().unwrap(), job["error"]["code"].as_str().unwrap_or(""));
        let ok = match case.expect {
            Expect::Fails(expected) => status == "failed" && code == expected && !job["error"]["message"].as_str().unwrap_or("").is_empty(),
            Expect::Succeeds => status == "succeeded" && !job["clips"].as_array().unwrap().is_empty(),
        };
        contained += usize::from(ok);
        let message = job["error"]["message"].as_str().unwrap_or("");
        report.push(format!("{}: {status} {code} {message}{}", case.name, if ok { "" } else { " <- unexpected" }));
    }

    // Hostile requests: each a 4xx with its code, the server unmoved.
    let nested = "[".repeat(10_000) + &"]".repeat(10_000);
    let requests: [(&str, String, u16); 4] = [
        ("deeply nested JSON", nested, 400),
        // Past the 64 KiB limit, yet small enough that the client's write has ended before the
        // server answers and closes (a body of megabytes can meet a closed socket mid-write).
        ("oversize JSON", format!(r#"{{"url": "http://127.0.0.1:9/{}"}}"#, "a".repeat(100_000)), 413),
        ("upload id walking out of the folder", json!({ "upload_id": "tenant-a-../../data/secret" }).to_string(), 400),
        ("upload id of another tenant's form", json!({ "upload_id": "../secret" }).to_string(), 400),
    ];
    let mut tried = cases.len();
    for (name, body, expected) in requests {
        tried += 1;
        let status = server.post_json(KEY_A, "/api/jobs", &body).await.status().as_u16();
        contained += usize::from(status == expected);
        report.push(format!("{name}: {status}{}", if status == expected { "" } else { " <- unexpected" }));
    }
    let ctx = server.server.as_ref().unwrap().ctx.clone();
    let expires = clipmill::job::now_ms() / 1000 + 60;
    for key in ["../data/secret", "tenant-a/../../data/secret", "%2e%2e/data/secret"] {
        tried += 1;
        let url = ctx.blobs.local().expect("local blobs").sign(key, expires);
        let status = server.http.get(&url).send().await.unwrap().status().as_u16();
        let ok = (400..500).contains(&status);
        contained += usize::from(ok);
        report.push(format!("blob key {key:?} (validly signed): {status}{}", if ok { "" } else { " <- unexpected" }));
    }
    let long_unicode = "ünïcödé 🎬 ".repeat(40) + "../../../../etc/passwd";
    let metadata = format!("filename {}", base64_encode(long_unicode.as_bytes()));
    let tus = server.http.post(server.url("/api/uploads/tus")).bearer_auth(KEY_A)
        .header("tus-resumable", "1.0.0").header("upload-length", "10").header("upload-metadata", metadata).send().await.unwrap();
    tried += 1;
    let location = tus.headers().get("location").map(|l| l.to_str().unwrap().to_string()).unwrap_or_default();
    let ok = tus.status() == 201 && !location.rsplit('/').next().unwrap_or("..").contains("..");
    contained += usize::from(ok);
    report.push(format!("tus upload named {} chars of unicode and ../: {} {location}", long_unicode.chars().count(), tus.status()));
    tried += 1;
    let closed = oversize_frame(&server).await;
    contained += usize::from(closed);
    report.push(format!("a 1 TiB WebSocket frame: {}", if closed { "closed" } else { "left open <- unexpected" }));

    // The good job finished, the server still answers, nothing is left in scratch.
    let good = server.wait_final(KEY_A, &good, Duration::from_secs(300)).await;
    assert_eq!(good["status"], "succeeded", "the good job beside the corpus: {good}");
    assert_eq!(server.get(KEY_A, "/healthz").await.status(), 200);
    let scratch = server.dir.path().join("scratch/jobs");
    let left: Vec<_> = std::fs::read_dir(&scratch).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "job folders left in scratch: {left:?}");
    let peak = peak_rss_mib();
    report.push(format!("peak memory of the server's process: {peak} MiB"));

    let summary = format!("hostile inputs: {tried} tried, {contained} contained, {} lost", tried - contained);
    println!("{summary}\n{}", report.join("\n"));
    common::suite_note("hostile", &format!("{summary} (peak memory {peak} MiB)"));
    assert_eq!(contained, tried, "{summary}\n{}", report.join("\n"));
    assert!(peak < 3072, "peak memory {peak} MiB");
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
