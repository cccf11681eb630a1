//! A private s3s-fs process (an S3-compatible server over a folder) on a free loopback port with
//! its own temp dir, for the S3 blob store tests; it can be stopped and started again on the same
//! port and data, and is killed on drop. Install it with scripts/install_s3s_fs.sh.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use clipmill::config::S3Config;

pub const ACCESS_KEY: &str = "clipmill-test-access";
pub const SECRET_KEY: &str = "clipmill-test-secret-key";
const START_DEADLINE: Duration = Duration::from_secs(15);

pub struct S3Server {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Option<tokio::process::Child>,
}

/// `$CLIPMILL_TOOLS/bin/s3s-fs` (default `~/.cache/clipmill/tools`), else the first on PATH.
pub fn binary() -> PathBuf {
    let tools = std::env::var_os("CLIPMILL_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/clipmill/tools"));
    let candidates = std::iter::once(tools.join("bin/s3s-fs"))
        .chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).map(|dir| dir.join("s3s-fs")).collect::<Vec<_>>());
    for candidate in candidates {
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!("s3s-fs not found in {}/bin nor on PATH: run scripts/install_s3s_fs.sh", tools.display());
}

impl S3Server {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut server = Self { port, dir, child: None };
        server.start_again().await;
        server
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Settings for `S3Blobs` against this server, with the production part sizes.
    pub fn config(&self, bucket: &str) -> S3Config {
        S3Config {
            endpoint: self.endpoint(),
            region: "us-east-1".into(),
            bucket: bucket.into(),
            access_key: ACCESS_KEY.into(),
            secret_key: SECRET_KEY.into(),
            path_style: true,
            multipart_threshold_mb: 64,
            part_size_mb: 16,
            check_etags: true,
        }
    }

    /// Kills the server and waits until it is gone (its port refuses connections).
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.unwrap();
        }
    }

    /// Starts the server (again) on the same port and data, and waits until it accepts connections.
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "s3s-fs is already running");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("s3s-fs.log")).unwrap();
        let mut child = tokio::process::Command::new(binary())
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string(), "--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(self.dir.path().join("data"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn s3s-fs");
        let started = Instant::now();
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_ok() {
                break;
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("s3s-fs exited with {status} on port {}: {}", self.port, self.log());
            }
            assert!(started.elapsed() < START_DEADLINE, "s3s-fs did not listen on port {} within {START_DEADLINE:?}: {}", self.port, self.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.child = Some(child);
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("s3s-fs.log")).unwrap_or_default()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}
