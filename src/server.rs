//! Building and running the server: stores, services, the actor tree and the HTTP listener, and
//! a graceful stop (intake closed, running work given a deadline, state persisted).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ractor::{Actor, ActorRef};
use tokio_util::sync::CancellationToken;

use crate::actors::ServerCtx;
use crate::actors::messages::SupervisorMessage;
use crate::actors::stage_pool::StagePoolRef;
use crate::actors::supervisor::Supervisor;
use crate::actors::cluster::{Cluster, Role};
use crate::config::Config;
use crate::job::Stage;
use crate::metrics::Metrics;
use crate::net::Api;
use crate::persist::{Blobs, EmbeddedStore, JobStore, Jobs, LocalBlobs};
use crate::pipeline::Services;

pub struct Server {
    pub addr: SocketAddr,
    pub ctx: Arc<ServerCtx>,
    supervisor: ActorRef<SupervisorMessage>,
    stop_accepting: CancellationToken,
    listener: tokio::task::JoinHandle<()>,
}

impl Server {
    /// A single node on the embedded default, or one node of a cluster when Redis is set.
    pub async fn start(config: &Config) -> anyhow::Result<Self> {
        Self::start_as(config, Role::All).await
    }

    pub async fn start_as(config: &Config, role: Role) -> anyhow::Result<Self> {
        let server = &config.server;
        let data = &server.data_dir;
        for dir in [data.join("blobs"), data.join("uploads"), config.scratch.dir.join("jobs")] {
            std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let secret = signing_secret(config)?;
        let listener = tokio::net::TcpListener::bind(&server.bind).await.with_context(|| format!("cannot listen on {}", server.bind))?;
        let addr = listener.local_addr()?;
        let public = if server.public_url.is_empty() { format!("http://{addr}") } else { server.public_url.trim_end_matches('/').to_string() };

        let services = Arc::new(Services::new(config)?);
        let store = open_store(config).await?;
        let blobs = open_blobs(config, secret.clone(), public, &services.scratch).await?;
        // Alone, a cluster of one: the queue and bus in this process.
        let (cluster, bus_events) = if config.redis.url.is_empty() {
            Cluster::in_process(config)
        } else {
            let (cluster, events) = Cluster::connect(config, role).await.context("cannot reach redis")?;
            tracing::info!(node = %cluster.node, ?role, "joining the cluster");
            (cluster, events)
        };
        tracing::info!(store = store.kind(), blobs = blobs.kind(), queue = cluster.queue.kind(), "backends");
        let metrics = Arc::new(Metrics::new());
        // The pools and the hub are the supervisor's children. It attaches the hub as it starts it;
        // a pool's workers take work from the queue of its handle here, which outlives restarts.
        let pools = Stage::ALL.into_iter().map(|stage| (stage, StagePoolRef::new(stage, metrics.clone()))).collect();
        let egress = crate::egress::Policy::from_config(&config.fetch);
        let ctx = Arc::new(ServerCtx {
            services,
            store,
            blobs,
            cluster,
            pools,
            hub: Default::default(),
            metrics,
            jobs_dir: config.scratch.dir.join("jobs"),
            uploads_dir: data.join("uploads"),
            http: egress.client(reqwest::Client::builder().timeout(Duration::from_secs(10)), crate::egress::MAX_REDIRECTS)?,
            egress,
            secret,
            drain: CancellationToken::new(),
        });
        crate::task::spawn_named("retention", retention(ctx.clone()));
        let (supervisor, _) = Actor::spawn(None, Supervisor, ctx.clone()).await?;
        crate::task::spawn_named("bus-publisher", crate::actors::cluster::publish_events(ctx.clone(), bus_events));
        crate::task::spawn_named("bus-bridge", crate::actors::cluster::bridge_bus(ctx.clone()));
        let ttl = Duration::from_secs(config.redis.node_ttl_s.max(1));
        crate::task::spawn_named("cluster-housekeeping", crate::actors::cluster::housekeeping(ctx.clone(), ttl));
        crate::task::spawn_named("lease-renewal", crate::actors::cluster::renew_leases(ctx.clone()));
        let sweep = Duration::from_secs(config.scratch.sweep_every_s.max(1));
        let uploads_busy = crate::net::uploads::Busy::default();
        crate::task::spawn_named("scratch-sweep", sweep_scratch(ctx.jobs_dir.clone(), ctx.uploads_dir.clone(), uploads_busy.clone(), supervisor.clone(), sweep));
        let stop_accepting = CancellationToken::new();
        let dashboard = crate::net::dashboard::Policy::new(config);
        let api = Arc::new(Api { ctx: ctx.clone(), supervisor: supervisor.clone(), role, uploads_busy, dashboard });
        let listener = crate::task::spawn_named("http-listener", crate::net::serve(listener, api, stop_accepting.clone()));
        tracing::info!(%addr, "clipmill serving");
        Ok(Self { addr, ctx, supervisor, stop_accepting, listener })
    }

    /// Fires the drain signal (`ServerCtx::drain`: readiness 503, no new jobs or sessions, open
    /// sessions closed with 1001 and their `last_id`, no new claims), waits up to `deadline` for
    /// running jobs, then closes the listener and stops. Jobs still running stay persisted as
    /// running and resume at the next start.
    pub async fn shutdown(self, deadline: Duration) {
        self.ctx.drain.cancel();
        let running = ractor::call!(self.supervisor, |reply| SupervisorMessage::InFlight { reply }).unwrap_or(0);
        tracing::info!(running, deadline_s = deadline.as_secs(), "draining");
        let until = tokio::time::Instant::now() + deadline;
        while tokio::time::Instant::now() < until {
            match ractor::call!(self.supervisor, |reply| SupervisorMessage::InFlight { reply }) {
                Ok(0) | Err(_) => break,
                Ok(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        self.stop_accepting.cancel();
        let _ = self.listener.await;
        self.supervisor.stop(Some("shutdown".into()));
        tracing::info!("stopped");
    }
}

/// The job store the config asks for: Postgres when a url is set, else the embedded redb file.
async fn open_store(config: &Config) -> anyhow::Result<Jobs> {
    if config.postgres.url.is_empty() {
        return Ok(Jobs::Embedded(EmbeddedStore::open(&config.server.data_dir.join("jobs.redb"), config.server.store_cache_mib << 20)?));
    }
    Ok(Jobs::Postgres(crate::persist::PgStore::connect(&config.postgres).await.context("cannot reach postgres")?))
}

/// The blob store the config asks for: S3 when a bucket is set, else local files.
async fn open_blobs(config: &Config, secret: Vec<u8>, public: String, scratch: &crate::persist::Scratch) -> anyhow::Result<Blobs> {
    if config.s3.bucket.is_empty() {
        return Ok(Blobs::Local(LocalBlobs::new(config.server.data_dir.join("blobs"), secret, public)));
    }
    Ok(Blobs::S3(crate::persist::S3Blobs::connect(&config.s3, scratch.clone()).await.context("cannot reach s3")?))
}

/// Deletes finished jobs past the configured age and count, hourly.
async fn retention(ctx: Arc<ServerCtx>) {
    let pg = &ctx.services.config.postgres;
    let (days, keep) = (pg.retention_days, pg.retention_max_jobs);
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tick.tick().await;
        match ctx.store.prune(crate::job::now_ms(), days, keep).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "finished jobs past retention deleted"),
            Err(e) => tracing::warn!(error = %e, "retention failed"),
        }
    }
}

/// Every `every`, removes job folders under `jobs_dir` that no running job owns (leftovers of jobs
/// that ended while their cleanup could not run: a crash, a full disk), and the tus uploads past
/// their expiry.
async fn sweep_scratch(jobs_dir: std::path::PathBuf, uploads_dir: std::path::PathBuf, uploads_busy: crate::net::uploads::Busy, supervisor: ActorRef<SupervisorMessage>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Ok(live) = ractor::call!(supervisor, |reply| SupervisorMessage::LiveJobs { reply }) else { return };
        let Ok(mut entries) = tokio::fs::read_dir(&jobs_dir).await else { continue };
        let mut removed = 0;
        while let Ok(Some(entry)) = entries.next_entry().await {
            let owned = entry.file_name().to_str().and_then(|n| n.parse::<crate::job::JobId>().ok()).is_some_and(|id| live.contains(&id));
            if !owned && tokio::fs::remove_dir_all(entry.path()).await.is_ok() {
                removed += 1;
            }
        }
        let expired = crate::net::uploads::sweep_expired(&uploads_dir, &uploads_busy).await;
        tracing::info!(removed, expired_uploads = expired, "scratch swept");
    }
}

/// The configured secret, or one kept in the data folder (made on first start).
fn signing_secret(config: &Config) -> anyhow::Result<Vec<u8>> {
    if !config.server.signing_secret.is_empty() {
        return Ok(config.server.signing_secret.as_bytes().to_vec());
    }
    let path = config.server.data_dir.join("secret");
    if let Ok(secret) = std::fs::read(&path) {
        return Ok(secret);
    }
    let secret: Vec<u8> = uuid::Uuid::new_v4().as_bytes().iter().chain(uuid::Uuid::new_v4().as_bytes()).copied().collect();
    std::fs::write(&path, &secret).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(secret)
}

/// `clipmill serve`: runs until SIGTERM or Ctrl-C, then shuts down gracefully and returns.
pub async fn run(config: &Config, role: Role) -> anyhow::Result<()> {
    raise_fd_limit();
    let server = Server::start_as(config, role).await?;
    println!("listening on http://{}", server.addr);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    server.shutdown(Duration::from_secs(config.server.shutdown_deadline_s)).await;
    Ok(())
}

/// Every WebSocket watcher holds a socket: lift the soft open-files limit to the hard one.
fn raise_fd_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
    tracing::debug!(open_files = limit.rlim_cur, "open-files limit");
}
