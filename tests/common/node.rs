//! A real `clipmill serve` process as one node of a test deployment: its config file, readiness,
//! a few client calls, and `kill -9`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::server::KEY_A;
use super::{python, root};

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub struct Node {
    pub child: Child,
    pub home: PathBuf,
    role: String,
    pub port: u16,
    pub base: String,
    pub config: PathBuf,
}

impl Node {
    /// Writes this node's config (in its own folder under `dir`) and starts it with `role`.
    /// `server` holds more `[server]` keys; `extra` is TOML appended to the config (backends).
    pub async fn start(dir: &Path, name: &str, role: &str, server: &str, extra: &str) -> Node {
        let home = dir.join(name);
        std::fs::create_dir_all(&home).unwrap();
        let port = free_port();
        let config = home.join("clipmill.toml");
        let text = format!(
            "[python]\ninterpreter = {:?}\nscripts = {:?}\n[scratch]\ndir = {:?}\n[fetch]\nallowed_networks = [\"127.0.0.1\"]\n[server]\nbind = \"127.0.0.1:{port}\"\ndata_dir = {:?}\nsigning_secret = \"the nodes of a test share it\"\n{server}\n[server.api_keys]\n{KEY_A} = \"tenant-a\"\n[server.retry]\nbase_s = 0.2\n{extra}\n",
            python(),
            root().join("python"),
            home.join("scratch"),
            home.join("data"),
        );
        std::fs::write(&config, text).unwrap();
        let child = spawn(&config, role, &home);
        let mut node = Node { child, home, role: role.to_string(), port, base: format!("http://127.0.0.1:{port}"), config };
        node.wait_ready(Duration::from_secs(60)).await;
        node
    }

    /// Starts the node again, same config, port and data (after `kill_9` or a stop).
    pub async fn restart(&mut self) {
        self.child = spawn(&self.config, &self.role, &self.home);
        self.wait_ready(Duration::from_secs(60)).await;
    }

    /// What the node logged (warnings and clipmill's info lines).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.home.join("node.log")).unwrap_or_default()
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        format!("127.0.0.1:{}", self.port).parse().unwrap()
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&mut self, within: Duration) {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("node exited before it was ready: {status}\n{}", self.log());
            }
            if http.get(format!("{}/readyz", self.base)).send().await.is_ok_and(|r| r.status() == 200) {
                return;
            }
            assert!(Instant::now() < deadline, "node {} did not become ready\n{}", self.base, self.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn readyz(&self) -> (u16, serde_json::Value) {
        let resp = reqwest::get(format!("{}/readyz", self.base)).await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or_default())
    }

    /// POST /api/jobs: the status code and the JSON answer.
    pub async fn submit(&self, body: serde_json::Value) -> (u16, serde_json::Value) {
        let resp = reqwest::Client::new()
            .post(format!("{}/api/jobs", self.base))
            .bearer_auth(KEY_A)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or_default())
    }

    pub async fn create(&self, body: serde_json::Value) -> String {
        let (status, created) = self.submit(body).await;
        assert_eq!(status, 202, "{created}");
        created["id"].as_str().unwrap().to_string()
    }

    /// GET /api/jobs/{id}, or `None` while the node cannot answer (a backend is down).
    pub async fn job(&self, id: &str) -> Option<serde_json::Value> {
        let resp = reqwest::Client::new()
            .get(format!("{}/api/jobs/{id}", self.base))
            .bearer_auth(KEY_A)
            .send()
            .await
            .ok()?;
        if resp.status() != 200 {
            return None;
        }
        resp.json().await.ok()
    }

    pub async fn wait_for(&self, id: &str, within: Duration, done: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let deadline = Instant::now() + within;
        let mut last = None;
        loop {
            if let Some(j) = self.job(id).await {
                if done(&j) {
                    return j;
                }
                last = Some(j);
            }
            assert!(Instant::now() < deadline, "job {id} did not get there in time: {last:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the job is succeeded, failed or cancelled.
    pub async fn wait_final(&self, id: &str, within: Duration) -> serde_json::Value {
        self.wait_for(id, within, |j| matches!(j["status"].as_str(), Some("succeeded" | "failed" | "cancelled")))
            .await
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.base)).await.unwrap().text().await.unwrap()
    }

    /// Stops the node as an operator would (SIGTERM: drain, then exit) and waits for it.
    pub fn stop(&mut self) {
        // SAFETY: kill only sends a signal to our own child's pid.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        self.child.wait().unwrap();
    }

    pub fn kill_9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(config: &Path, role: &str, home: &Path) -> Child {
    let log = std::fs::File::create(home.join("node.log")).unwrap();
    Command::new(env!("CARGO_BIN_EXE_clipmill"))
        .args(["--config", config.to_str().unwrap(), "serve", "--role", role])
        .env("CLIPMILL__LOG__FILTER", "warn,clipmill=info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}
