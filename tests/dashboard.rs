//! The dashboard in a real browser (headless Chromium over WebDriver), as a user works with it:
//! sign in, upload a generated talk, watch its stages, see a clip card before the job ends, play
//! it, download its SRT, cancel another job; a failed job's reason in plain words, retry and
//! delete; another tenant seeing nothing of it; and a page that rides out a server restart.
//! Screenshots of the main states go to `target/tmp/dashboard/`.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::browser::Browser;
use common::node::Node;
use common::server::{KEY_A, KEY_B, TestServer, ws_at};
use fantoccini::Locator;
use serde_json::json;

const STAGES: [&str; 7] = ["download", "audio", "transcribe", "score", "faces", "render", "upload"];

fn shots() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard")
}

/// The id of the newest job card other than `not`, once there is one.
async fn new_card(browser: &Browser, not: &[&str]) -> String {
    let script = format!("const ids = [...document.querySelectorAll('.job')].map(j => j.dataset.job).filter(id => !{not:?}.includes(id)); return ids[0] || null;");
    browser.until("a new job card", Duration::from_secs(60), &script).await.as_str().unwrap().to_string()
}

fn card(id: &str) -> String {
    format!("document.querySelector('.job[data-job=\"{id}\"]')")
}

async fn choose_file(browser: &Browser, path: &Path) {
    let input = browser.client.find(Locator::Css("#source-file")).await.unwrap();
    input.send_keys(path.to_str().unwrap()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_uploads_a_talk_watches_it_plays_a_clip_downloads_its_srt_and_cancels_a_job() {
    let server = TestServer::start(|_| {}).await;
    let base = server.url("/");
    let browser = Browser::start(&server.dir.path().join("downloads"), &shots()).await;

    // The page and its assets come with a strict policy and cache headers.
    let page = server.http.get(&base).send().await.unwrap();
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.contains("script-src 'self'") && csp.contains("default-src 'none'"), "{csp}");
    assert_eq!(page.headers()["cache-control"], "no-cache");
    let html = page.text().await.unwrap();
    let script = html.split("src=\"").nth(1).unwrap().split('"').next().unwrap();
    let asset = server.http.get(server.url(script)).send().await.unwrap();
    assert_eq!(asset.headers()["cache-control"], "public, max-age=31536000, immutable");
    let etag = asset.headers()["etag"].clone();
    let again = server.http.get(server.url(script)).header("if-none-match", etag).send().await.unwrap();
    assert_eq!(again.status(), 304);

    browser.client.goto(&base).await.unwrap();
    browser.shot("1-sign-in").await;
    browser.sign_in(&base, KEY_A).await;

    // Upload the talk through the page (tus, with its progress bar) and ask for two clips.
    choose_file(&browser, &common::fixture("talk.mp4")).await;
    browser.fill("#clips", "2").await;
    browser.fill("#min-len", "5").await;
    browser.fill("#max-len", "9").await;
    browser.click("#submit-button").await;
    browser.until("the upload at 100%", Duration::from_secs(60), "return document.querySelector('#upload-percent').textContent === '100%'").await;
    let id = new_card(&browser, &[]).await;
    let job = card(&id);

    // The stages advance on the card as the events come.
    browser.until("transcription done", Duration::from_secs(180), &format!("return {job}.querySelector('li[data-stage=transcribe]').dataset.state === 'done'")).await;
    browser.shot("2-stages").await;

    // A clip card appears while the job is still running.
    let status = browser.until("a clip card", Duration::from_secs(300), &format!("const j = {job}; return j.querySelector('.clip') ? j.dataset.status : null")).await;
    assert_eq!(status, "running", "the first clip was shown before the job ended");
    browser.shot("3-first-clip").await;

    // It plays: the video element reaches playing and its time advances.
    let clip = format!("{job}.querySelector('.clip video')");
    browser.js(&format!("const v = {clip}; v.muted = true; return v.play().then(() => true);"), vec![]).await;
    let first = browser.until("the clip playing", Duration::from_secs(20), &format!("const v = {clip}; return !v.paused && v.currentTime > 0.3 ? v.currentTime : null")).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let later = browser.js(&format!("return {clip}.currentTime;"), vec![]).await;
    assert!(later.as_f64().unwrap() > first.as_f64().unwrap(), "the clip's time advances: {first} -> {later}");

    // Its SRT downloads through the card's link.
    browser.click(&format!(".job[data-job=\"{id}\"] .clip a[data-kind=srt]")).await;
    let srt = wait_for_file(&browser.downloads, ".srt", Duration::from_secs(20)).await;
    let text = std::fs::read_to_string(&srt).unwrap();
    assert!(text.contains(" --> "), "an SRT: {text}");

    browser.until("the job succeeded", Duration::from_secs(300), &format!("return {job}.dataset.status === 'succeeded'")).await;
    let cards = browser.js(&format!("return {job}.querySelectorAll('.clip').length;"), vec![]).await;
    assert_eq!(cards, json!(2));
    let links = browser.js(&format!("return [...{job}.querySelectorAll('.clip a')].map(a => a.dataset.kind).join(' ');"), vec![]).await;
    assert!(links.as_str().unwrap().contains("mp4 srt vtt edit"), "every download: {links}");
    let edit_url = browser.js(&format!("return {job}.querySelector('.clip a[data-kind=edit]').href;"), vec![]).await;
    let edit: serde_json::Value = server.http.get(edit_url.as_str().unwrap()).send().await.unwrap().json().await.unwrap();
    assert_eq!(edit["clips"].as_array().map(Vec::len), Some(1), "the clip's EDIT.json: {edit}");
    // A clip whose signed link stopped working (expired) gets a fresh one and loads.
    let last = format!("{job}.querySelector('.clip:last-child video')");
    browser.js(&format!("const v = {last}; v.src = v.src.replace(/expires=\\d+/, 'expires=1');"), vec![]).await;
    browser.until("a fresh link", Duration::from_secs(20), &format!("const v = {last}; return !v.src.includes('expires=1&') && v.readyState >= 1")).await;
    browser.js(&format!("{job}.scrollIntoView();"), vec![]).await;
    browser.shot("4-done").await;

    // The operators' view counts it.
    browser.click("#show-ops").await;
    browser.until("the operators' view", Duration::from_secs(10), "return document.querySelectorAll('#ops-stages tbody tr').length === 7 && document.querySelector('#ops-summary').textContent.includes('Succeeded1')").await;
    browser.shot("4b-operators").await;
    browser.click("#show-jobs").await;

    // A second job, cancelled from its card.
    choose_file(&browser, &common::fixture("talk.mp4")).await;
    browser.click("#submit-button").await;
    let second = new_card(&browser, &[&id]).await;
    browser.click(&format!(".job[data-job=\"{second}\"] [data-action=cancel]")).await;
    browser.until("the second job cancelled", Duration::from_secs(60), &format!("return {}.dataset.status === 'cancelled'", card(&second))).await;
    assert_eq!(server.get_json(KEY_A, &format!("/api/jobs/{second}")).await["status"], "cancelled");
    browser.shot("5-cancelled").await;

    // The key never went into a URL the page opened (the event stream used a token).
    let urls = browser.js("return performance.getEntries().map(e => e.name).join(' ');", vec![]).await;
    assert!(!urls.as_str().unwrap().contains(KEY_A), "{urls}");
    browser.close().await;
}

async fn wait_for_file(dir: &Path, suffix: &str, within: Duration) -> PathBuf {
    let deadline = std::time::Instant::now() + within;
    loop {
        let found = std::fs::read_dir(dir).unwrap().flatten().map(|e| e.path()).find(|p| p.to_string_lossy().ends_with(suffix));
        if let Some(path) = found {
            return path;
        }
        assert!(std::time::Instant::now() < deadline, "no {suffix} downloaded to {}", dir.display());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_job_shows_its_reason_is_retried_and_deleted_and_another_tenant_sees_none_of_it() {
    let server = TestServer::start(|_| {}).await;
    let base = server.url("/");
    let browser = Browser::start(&server.dir.path().join("downloads"), &shots()).await;

    // Signed in by keyboard alone (type the key, Enter); every control has a label.
    browser.client.goto(&base).await.unwrap();
    browser.fill("#api-key", &format!("{KEY_A}\u{E007}")).await;
    browser.synced().await;
    let unlabelled = browser.js("return [...document.querySelectorAll('input, select, button')].filter(e => !(e.labels?.length || e.getAttribute('aria-label') || e.textContent.trim())).map(e => e.outerHTML);", vec![]).await;
    assert_eq!(unlabelled, json!([]), "controls without a label");

    // An upload that is no video.
    let corrupt = server.dir.path().join("holiday.mp4");
    std::fs::write(&corrupt, (0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect::<Vec<u8>>()).unwrap();
    choose_file(&browser, &corrupt).await;
    browser.click("#submit-button").await;
    let id = new_card(&browser, &[]).await;
    let job = card(&id);
    browser.until("the job failed", Duration::from_secs(120), &format!("return {job}.dataset.status === 'failed'")).await;
    let shown = browser.js(&format!("const e = {job}.querySelector('.error'); return e.hidden ? '' : e.textContent;"), vec![]).await;
    let stored = server.get_json(KEY_A, &format!("/api/jobs/{id}")).await;
    let code = stored["error"]["code"].as_str().unwrap();
    let shown = shown.as_str().unwrap();
    assert!(shown.contains(code) && shown.contains(stored["error"]["message"].as_str().unwrap()), "the reason, in full: {shown}");
    assert!(shown.starts_with("The "), "a plain sentence first: {shown}");
    assert_eq!(browser.js(&format!("return {job}.querySelector('.source').textContent;"), vec![]).await, "holiday.mp4");
    browser.shot("6-failed").await;

    // At phone width nothing runs off the side.
    browser.client.set_window_size(390, 844).await.unwrap();
    let overflow = browser.js("return document.documentElement.scrollWidth - document.documentElement.clientWidth;", vec![]).await;
    assert!(overflow.as_i64().unwrap() <= 0, "the page is wider than a phone by {overflow} px");
    browser.shot("6b-phone").await;
    browser.client.set_window_size(1280, 1100).await.unwrap();

    // Retry makes a new job of the same source (which fails the same way).
    browser.click(&format!(".job[data-job=\"{id}\"] [data-action=retry]")).await;
    let retried = new_card(&browser, &[&id]).await;
    browser.until("the retry failed too", Duration::from_secs(120), &format!("return {}.dataset.status === 'failed'", card(&retried))).await;

    // Delete removes the card and the job.
    browser.click(&format!(".job[data-job=\"{id}\"] [data-action=delete]")).await;
    browser.until("the card gone", Duration::from_secs(10), &format!("return {job} === null")).await;
    assert_eq!(server.get(KEY_A, &format!("/api/jobs/{id}")).await.status(), 404);

    // Another tenant's key sees none of it.
    browser.click("#signout").await;
    browser.sign_in(&base, KEY_B).await;
    let visible = browser.js("return [document.querySelectorAll('.job').length, !document.querySelector('#no-jobs').hidden];", vec![]).await;
    assert_eq!(visible, json!([0, true]), "tenant b sees no job of tenant a");
    browser.shot("7-other-tenant").await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_page_rides_out_a_server_restart_mid_job_and_catches_up_with_every_stage_once() {
    let dir = tempfile::tempdir().unwrap();
    // Slow no-op stages, and a drain that does not wait for them: the job is mid-way at the stop.
    let mut node = Node::start(dir.path(), "node", "all", "noop = true\nnoop_stage_ms = 1200\nshutdown_deadline_s = 0", "").await;
    let browser = Browser::start(&dir.path().join("downloads"), &shots()).await;
    browser.sign_in(&node.base, KEY_A).await;
    let id = node.create(json!({ "url": "http://127.0.0.1:9/talk.mp4" })).await;
    let job = card(&id);
    browser.until("two stages done", Duration::from_secs(30), &format!("return {job} && {job}.querySelector('li[data-stage=audio]').dataset.state === 'done'")).await;

    let last_before = browser.js("return state.lastId;", vec![]).await.as_u64().expect("the page has seen events");
    let before = node.job(&id).await.unwrap();
    let done_before = before["stages"].as_array().unwrap().iter().filter(|s| s["status"] == "done").count();
    assert!(before["status"] == "running" && done_before < STAGES.len(), "mid-job at the stop: {before}");
    node.stop();
    browser.until("the reconnecting state", Duration::from_secs(10), "return document.querySelector('#conn').dataset.state === 'reconnecting'").await;
    browser.shot("8-reconnecting").await;
    node.restart().await;

    browser.until("the job done after the restart", Duration::from_secs(60), &format!("return {job}.dataset.status === 'succeeded'")).await;
    browser.until("the live stream again", Duration::from_secs(10), "return document.querySelector('#conn').dataset.state === 'live'").await;
    let stages = browser.js(&format!("return [...{job}.querySelectorAll('.stages li')].map(li => li.dataset.stage + ':' + li.dataset.state);"), vec![]).await;
    let expected: Vec<String> = STAGES.iter().map(|s| format!("{s}:done")).collect();
    assert_eq!(stages, json!(expected), "every stage once, each done ({done_before} were done at the stop)");
    assert_eq!(browser.js("return document.querySelectorAll('.job').length;", vec![]).await, json!(1));
    let stored = node.job(&id).await.unwrap();
    assert!(stored["stages"].as_array().unwrap().iter().all(|s| s["status"] == "done"), "{stored}");

    // However late a client comes back, an id from the run before the restart gets it a fresh
    // snapshot, never the tail of the new run's events (which would hide the ones it missed).
    let mut late = ws_at(node.addr(), &format!("/api/events?api_key={KEY_A}&last_id={last_before}")).await;
    let first = late.json(Duration::from_secs(10)).await;
    assert_eq!(first["type"], "snapshot", "{first}");
    assert_eq!(first["jobs"][0]["status"], "succeeded");
    browser.close().await;
}
