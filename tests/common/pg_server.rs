//! A private PostgreSQL for one test: `initdb` into a temp dir, `postgres` on a free loopback
//! port with its socket in that dir, a `clipmill` database, and stop/start on the same port and
//! data for restart tests. The server is shut down when the `PgServer` is dropped.
//!
//! initdb and postgres refuse to run as root, so as root both run as the `postgres` user. That is
//! done with `setuid` in the child (`CommandExt::uid`) rather than `runuser`, so the child we hold
//! is the postmaster itself and signals reach it directly.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const DATABASE: &str = "clipmill";

pub struct PgServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// Some(uid, gid) when running as root.
    user: Option<(u32, u32)>,
    child: Option<Child>,
}

impl PgServer {
    /// Starts a fresh server and creates the test database (about 2 s).
    pub async fn start() -> Self {
        let bin = bin_dir();
        let dir = tempfile::Builder::new().prefix("clipmill-pg-").tempdir().expect("temp dir");
        let user = postgres_user();
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown the temp dir to postgres");
        }
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(dir.path().join("data"))
            .args(["-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"]);
        let out = as_user(&mut initdb, user, dir.path()).output().expect("run initdb");
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));

        let port = free_port();
        let mut server = Self { dir, bin, port, user, child: None };
        server.start_again().await;
        let (client, connection) = tokio_postgres::connect(&server.url_of("postgres"), tokio_postgres::NoTls)
            .await
            .expect("connect to the test postgres");
        let task = tokio::spawn(connection);
        client.batch_execute(&format!("CREATE DATABASE {DATABASE}")).await.expect("create the test database");
        drop(client);
        let _ = task.await;
        server
    }

    /// The test database's URL.
    pub fn url(&self) -> String {
        self.url_of(DATABASE)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    fn url_of(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Starts the server on the same port and data (after `stop`) and waits until it accepts
    /// connections.
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "the test postgres is already running");
        let log = File::options().create(true).append(true).open(self.log_path()).expect("postgres log file");
        if let Some((uid, gid)) = self.user {
            std::os::unix::fs::chown(self.log_path(), Some(uid), Some(gid)).expect("chown the log");
        }
        let mut postgres = Command::new(self.bin.join("postgres"));
        postgres
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(self.dir.path())
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log);
        let child = as_user(&mut postgres, self.user, self.dir.path()).spawn().expect("spawn postgres");
        self.child = Some(child);
        self.wait_ready().await;
    }

    /// Fast shutdown (SIGINT): sessions are ended, the data is kept.
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        signal(&child, libc::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().expect("wait for postgres").is_none() {
            assert!(Instant::now() < deadline, "postgres did not stop within 30 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((client, connection)) =
                tokio_postgres::connect(&self.url_of("postgres"), tokio_postgres::NoTls).await
            {
                let task = tokio::spawn(connection);
                let ok = client.simple_query("SELECT 1").await.is_ok();
                drop(client);
                let _ = task.await;
                if ok {
                    return;
                }
            }
            let child = self.child.as_mut().expect("postgres was started");
            if let Some(status) = child.try_wait().expect("poll postgres") {
                panic!("postgres exited with {status} at start; its log:\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "postgres did not accept connections within 30 s; its log:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// The server's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        // Immediate shutdown (SIGQUIT) still removes shared memory, unlike SIGKILL.
        signal(&child, libc::SIGQUIT);
        let deadline = Instant::now() + Duration::from_secs(5);
        while let Ok(None) = child.try_wait() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn signal(child: &Child, sig: libc::c_int) {
    // SAFETY: kill(2) on the pid of a child we have not reaped yet, so it cannot be reused.
    unsafe {
        libc::kill(child.id() as libc::pid_t, sig);
    }
}

/// Drops to the `postgres` user when running as root; runs in `dir` so the child can read its cwd.
fn as_user<'a>(command: &'a mut Command, user: Option<(u32, u32)>, dir: &Path) -> &'a mut Command {
    command.current_dir(dir).env("LC_ALL", "C");
    if let Some((uid, gid)) = user {
        command.uid(uid).gid(gid);
    }
    command
}

/// `Some((uid, gid))` of the `postgres` user when this process is root, else `None`.
fn postgres_user() -> Option<(u32, u32)> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    // SAFETY: getpwnam returns null or a pointer to static storage, read at once.
    let entry = unsafe { libc::getpwnam(c"postgres".as_ptr()) };
    assert!(!entry.is_null(), "running as root needs a `postgres` user for the test server: run scripts/setup.sh");
    // SAFETY: not null, checked above.
    let entry = unsafe { &*entry };
    Some((entry.pw_uid, entry.pw_gid))
}

/// The PostgreSQL server binaries: `$CLIPMILL_PG_BIN`, else the newest `/usr/lib/postgresql/N/bin`
/// (15 on these machines), else `pg_config --bindir`.
fn bin_dir() -> PathBuf {
    let has_server = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    if let Some(dir) = std::env::var_os("CLIPMILL_PG_BIN").map(PathBuf::from) {
        assert!(has_server(&dir), "CLIPMILL_PG_BIN={} has no initdb and postgres", dir.display());
        return dir;
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| Some((entry.file_name().to_str()?.parse().ok()?, entry.path().join("bin"))))
        .filter(|(_, dir)| has_server(dir))
        .collect();
    versions.sort();
    if let Some((_, dir)) = versions.pop() {
        return dir;
    }
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    match from_pg_config {
        Some(dir) if has_server(&dir) => dir,
        _ => panic!(
            "PostgreSQL server binaries (initdb, postgres) not found under /usr/lib/postgresql/*/bin: run scripts/setup.sh"
        ),
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}
