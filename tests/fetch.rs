//! Fetching sources over real HTTP on 127.0.0.1: directly, and through the real yt-dlp.

mod common;

use clipmill::analysis::fetch::{FetchError, Fetcher};
use clipmill::config::Config;
use clipmill::persist::Scratch;
use common::http::{reply, serve, serve_described_talk};
use common::*;

fn fetcher(cache: &std::path::Path) -> Fetcher {
    let loaded = Config::load(None).unwrap();
    let mut config = loaded.fetch;
    config.allowed_networks = vec!["127.0.0.1".into()];
    config.ytdlp = root().join(".venv/bin/yt-dlp");
    config.timeout_s = 120;
    Fetcher::new(&config, cache.to_path_buf(), Scratch::new(cache.to_path_buf(), &loaded.scratch), engine().clone())
}

async fn media_server() -> std::net::SocketAddr {
    let video = std::fs::read(fixture("talk.mp4")).unwrap();
    serve(move |path, _| {
        let video = video.clone();
        async move {
            match path.as_str() {
                "/talk.mp4" => reply(200, "video/mp4", video),
                "/watch" => reply(200, "text/html", "<html><body><h1>Talk</h1><video src=\"/talk.mp4\" controls></video></body></html>"),
                "/about" => reply(200, "text/html", "<html><body><p>nothing to watch here</p></body></html>"),
                _ => reply(404, "text/plain", "not found"),
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn direct_and_ytdlp_fetches_land_the_same_bytes_and_repeat_from_cache() {
    let addr = media_server().await;
    let cache = tempfile::tempdir().unwrap();
    let fetcher = fetcher(cache.path());
    let original = std::fs::read(fixture("talk.mp4")).unwrap();
    let progress = std::sync::Mutex::new(Vec::new());
    let report = |f: f64| progress.lock().unwrap().push(f);

    let direct = fetcher.fetch(&format!("http://{addr}/talk.mp4"), &report).await.unwrap();
    assert_eq!((direct.via, direct.cached), ("http", false));
    assert_eq!(std::fs::read(&direct.path).unwrap(), original);
    assert!(progress.lock().unwrap().last().is_some_and(|&f| (f - 1.0).abs() < 1e-9), "progress reaches 1");

    let page = fetcher.fetch(&format!("http://{addr}/watch"), &report).await.unwrap();
    assert_eq!(page.via, "yt-dlp");
    assert_eq!(std::fs::read(&page.path).unwrap(), original);

    let again = fetcher.fetch(&format!("http://{addr}/talk.mp4#t=3"), &report).await.unwrap();
    assert!(again.cached, "a repeat of the same URL comes from the cache");
    assert_eq!(again.path, direct.path);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_sources_get_clear_errors() {
    let addr = media_server().await;
    let cache = tempfile::tempdir().unwrap();
    let fetcher = fetcher(cache.path());
    let none = |_: f64| {};

    let err = fetcher.fetch(&format!("http://{addr}/missing.mp4"), &none).await.unwrap_err();
    assert!(matches!(err, FetchError::Status { status: 404, .. }), "{err:?}");
    let err = fetcher.fetch(&format!("http://{addr}/about"), &none).await.unwrap_err();
    assert!(matches!(err, FetchError::NoMedia { .. }), "{err:?}");
    assert!(err.to_string().starts_with("no video found at"), "{err}");
    // Nothing listens on port 9 of the loopback.
    let err = fetcher.fetch("http://127.0.0.1:9/talk.mp4", &none).await.unwrap_err();
    assert!(matches!(err, FetchError::Unreachable { .. }), "{err:?}");
    let err = fetcher.fetch("/no/such/file.mp4", &none).await.unwrap_err();
    assert!(matches!(err, FetchError::NotFound(_)), "{err:?}");
    // Failed downloads leave nothing in the cache.
    let left: Vec<_> = std::fs::read_dir(cache.path()).map(|d| d.flatten().collect()).unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

/// A raw HTTP/1.1 server answering every connection with a chunked (length-less) video body of
/// `chunks` × 64 KiB, then cutting the connection off mid-body if `cut` (else ending it properly).
async fn chunked_server(chunks: usize, cut: bool) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = stream.read(&mut [0u8; 4096]).await;
                let head = "HTTP/1.1 200 OK\r\ncontent-type: video/mp4\r\ntransfer-encoding: chunked\r\n\r\n";
                let _ = stream.write_all(head.as_bytes()).await;
                for _ in 0..chunks {
                    let _ = stream.write_all(format!("{:x}\r\n", 65_536).as_bytes()).await;
                    let _ = stream.write_all(&[7u8; 65_536]).await;
                    let _ = stream.write_all(b"\r\n").await;
                }
                if !cut {
                    let _ = stream.write_all(b"0\r\n\r\n").await;
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread")]
async fn streamed_downloads_stop_at_the_limit_or_a_cut_and_leave_nothing() {
    let cache = tempfile::tempdir().unwrap();
    let loaded = Config::load(None).unwrap();
    let mut config = loaded.fetch;
    config.allowed_networks = vec!["127.0.0.1".into()];
    config.max_bytes = 1024 * 1024;
    let fetcher = Fetcher::new(&config, cache.path().to_path_buf(), Scratch::new(cache.path().to_path_buf(), &loaded.scratch), engine().clone());
    let none = |_: f64| {};

    // No content-length, so only counting the streamed bytes can catch it.
    let err = fetcher.fetch(&format!("http://{}/long.mp4", chunked_server(48, false).await), &none).await.unwrap_err();
    assert!(matches!(err, FetchError::TooLarge { max: 1_048_576 }), "{err:?}");
    let err = fetcher.fetch(&format!("http://{}/cut.mp4", chunked_server(4, true).await), &none).await.unwrap_err();
    assert!(matches!(err, FetchError::Unreachable { .. }), "{err:?}");
    let ok = fetcher.fetch(&format!("http://{}/short.mp4", chunked_server(4, false).await), &none).await.unwrap();
    assert_eq!(std::fs::read(&ok.path).unwrap(), vec![7u8; 4 * 65_536]);
    std::fs::remove_dir_all(ok.path.parent().unwrap()).unwrap();

    let left: Vec<_> = std::fs::read_dir(cache.path()).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(left.is_empty(), "failed downloads leave no files, part files included: {left:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn ytdlp_keeps_the_info_json_with_the_source_and_its_metadata_comes_back_from_the_cache() {
    let addr = serve_described_talk().await;
    let cache = tempfile::tempdir().unwrap();
    let fetcher = fetcher(cache.path());
    let none = |_: f64| {};

    let fetched = fetcher.fetch(&format!("http://{addr}/show"), &none).await.unwrap();
    assert_eq!(fetched.via, "yt-dlp");
    assert_eq!(std::fs::read(&fetched.path).unwrap(), std::fs::read(fixture("talk.mp4")).unwrap());
    let info = fetched.path.with_file_name("info.json");
    assert!(info.is_file(), "yt-dlp's info json is kept beside the source");
    let meta = fetched.meta.expect("the page's metadata");
    assert_eq!(meta.title.as_deref(), Some("A talk about food"));
    assert_eq!(meta.uploader.as_deref(), Some("Clipmill Tests"));
    assert_eq!(meta.chapters.iter().map(|c| (c.start, c.end, c.title.as_str())).collect::<Vec<_>>(), [
        (0.0, 9.0, "Welcome"),
        (9.0, 16.0, "Birds"),
        (16.0, 30.0, "Everyday things")
    ]);

    let again = fetcher.fetch(&format!("http://{addr}/show"), &none).await.unwrap();
    assert!(again.cached);
    assert_eq!(again.meta.as_ref(), Some(&meta), "the cache keeps the metadata with the source");

    // A local file brings its own as <stem>.info.json, yt-dlp's --write-info-json name.
    let local = cache.path().join("talk.mp4");
    std::fs::copy(fixture("talk.mp4"), &local).unwrap();
    assert_eq!(fetcher.fetch(local.to_str().unwrap(), &none).await.unwrap().meta, None);
    std::fs::copy(&info, cache.path().join("talk.info.json")).unwrap();
    assert_eq!(fetcher.fetch(local.to_str().unwrap(), &none).await.unwrap().meta, Some(meta));
}
