//! A real browser for the dashboard tests: Debian's Chromium, headless, driven over WebDriver by
//! its chromedriver (`scripts/setup.sh --test` installs both), through fantoccini. Screenshots
//! go to the test's output folder; downloads to a folder of the test's own.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use super::node::free_port;

pub struct Browser {
    pub client: Client,
    driver: Child,
    /// Where the page's downloads land.
    pub downloads: PathBuf,
    /// Where `shot` writes its screenshots.
    pub shots: PathBuf,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session on a desktop-sized window.
    pub async fn start(downloads: &Path, shots: &Path) -> Browser {
        std::fs::create_dir_all(downloads).unwrap();
        std::fs::create_dir_all(shots).unwrap();
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (scripts/setup.sh --test installs chromium-driver)");
        let caps = json!({
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1100",
                         "--autoplay-policy=no-user-gesture-required", "--mute-audio"],
                "prefs": { "download.default_directory": downloads, "download.prompt_for_download": false },
            }
        });
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            match ClientBuilder::new(connector.clone()).capabilities(caps.as_object().unwrap().clone()).connect(&format!("http://127.0.0.1:{port}")).await {
                Ok(client) => break client,
                Err(e) => {
                    assert!(Instant::now() < deadline, "no webdriver session: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        Browser { client, driver, downloads: downloads.to_path_buf(), shots: shots.to_path_buf() }
    }

    /// Saves a screenshot of the page as NAME.png.
    pub async fn shot(&self, name: &str) -> PathBuf {
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, self.client.screenshot().await.unwrap()).unwrap();
        path
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page and returns its value.
    pub async fn js(&self, script: &str, args: Vec<serde_json::Value>) -> serde_json::Value {
        self.client.execute(script, args).await.unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Waits until `script` returns something truthy, and returns it; fails with `what` and a
    /// screenshot after `within`.
    pub async fn until(&self, what: &str, within: Duration, script: &str) -> serde_json::Value {
        let deadline = Instant::now() + within;
        loop {
            let value = self.js(script, vec![]).await;
            if !matches!(value, serde_json::Value::Null | serde_json::Value::Bool(false)) && value != json!("") && value != json!(0) {
                return value;
            }
            if Instant::now() > deadline {
                let shot = self.shot("timed-out").await;
                panic!("the page did not show {what} within {within:?} (screenshot {})", shot.display());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn fill(&self, css: &str, text: &str) {
        let field = self.client.find(Locator::Css(css)).await.unwrap();
        field.clear().await.unwrap();
        field.send_keys(text).await.unwrap();
    }

    pub async fn click(&self, css: &str) {
        self.client.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("no {css}: {e}")).click().await.unwrap();
    }

    /// Signs in with `key` and waits for the live stream's first snapshot.
    pub async fn sign_in(&self, base: &str, key: &str) {
        self.client.goto(base).await.unwrap();
        self.fill("#api-key", key).await;
        self.click("#signin button[type=submit]").await;
        self.synced().await;
    }

    /// Waits until the page is live and has its jobs from the stream's snapshot.
    pub async fn synced(&self) {
        let script = "return document.querySelector('#conn').dataset.state === 'live' && document.querySelector('#jobs').dataset.synced === 'true'";
        self.until("the live stream's snapshot", Duration::from_secs(20), script).await;
    }

    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
