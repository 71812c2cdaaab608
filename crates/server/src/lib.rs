//! The native host: configuration, the SQL engines, and the HTTP listener.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;

use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

pub mod blobs;
pub mod config;
pub mod db;
mod fetch;
mod listen;
pub mod memory;
mod node_lock;
mod ports;
mod push_gateway;

pub use config::Config;
pub use ports::{BlockingOffload, SystemClock, WatchWakeups};
pub use tessera_core::Homeserver;

/// How long in-flight requests (long-polling syncs included) may finish after shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Password hashes computed at once: each holds 12 MiB, and a small box has few cores.
const PASSWORD_HASHES_AT_ONCE: usize = 1;

/// Opens the database, applies migrations and builds the homeserver.
pub async fn open_homeserver(config: &Config) -> anyhow::Result<Arc<Homeserver>> {
    let db = db::connect(&config.database_url(), config.database.sqlite_synchronous).await?;
    homeserver_on(config, db).await
}

/// Builds the homeserver on an open database (migrations applied on the way).
async fn homeserver_on(
    config: &Config,
    db: Arc<dyn tessera_core::ports::Database>,
) -> anyhow::Result<Arc<Homeserver>> {
    let hs = Homeserver::new(
        config.core()?,
        db,
        Arc::new(SystemClock),
        Arc::new(WatchWakeups::new()),
        Arc::new(BlockingOffload::new(PASSWORD_HASHES_AT_ONCE)),
    )
    .await
    .context("starting the homeserver")?;
    let blobs = match &config.media.s3 {
        Some(s3) => blobs::ObjectBlobs::s3(s3)
            .await
            .with_context(|| format!("opening the media bucket {}", s3.bucket))?,
        None => {
            let dir = config.media_dir();
            blobs::ObjectBlobs::folder(&dir)
                .await
                .with_context(|| format!("opening the media folder {}", dir.display()))?
        }
    };
    // Thumbnails are made one at a time, apart from password hashing.
    let thumbnails = Arc::new(BlockingOffload::new(1));
    let mut hs = hs.with_blobs(Arc::new(blobs), thumbnails);
    let previews = &hs.config.media.url_preview;
    if previews.enabled {
        let fetcher = fetch::PreviewFetcher::new(previews.addresses.clone())?;
        hs = hs.with_fetcher(Arc::new(fetcher));
    }
    if config.push.enabled {
        let gateway = push_gateway::HttpPushGateway::new(config.push_addresses()?)?;
        hs = hs.with_push_gateway(Arc::new(gateway));
    }
    Ok(hs.into_shared())
}

pub struct RunningServer {
    /// The bound address: the real port when `listen.client` asked for port 0.
    pub addr: SocketAddr,
    pub hs: Arc<Homeserver>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
    /// Released when the server is dropped or shut down.
    _lock: node_lock::NodeLock,
}

impl RunningServer {
    /// Stops accepting, lets in-flight requests finish for a short grace period, then
    /// drops whatever is left.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(());
        match tokio::time::timeout(SHUTDOWN_GRACE, &mut self.task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!("server stopped with an error: {e}"),
            Ok(Err(e)) => tracing::warn!("server task failed: {e}"),
            Err(_) => {
                tracing::warn!("requests still running after {SHUTDOWN_GRACE:?}; dropping them");
                self.task.abort();
            }
        }
    }
}

/// Starts serving the client API on `listen.client`.
pub async fn start(config: Config) -> anyhow::Result<RunningServer> {
    start_on(config, |db| db).await
}

/// Like [`start`], with the database seen through `wrap` (for instance, to count or
/// trace statements).
pub async fn start_on(
    config: Config,
    wrap: impl FnOnce(Arc<dyn tessera_core::ports::Database>) -> Arc<dyn tessera_core::ports::Database>,
) -> anyhow::Result<RunningServer> {
    let lock = node_lock::acquire(&config.database_url()).await?;
    let db = db::connect(&config.database_url(), config.database.sqlite_synchronous).await?;
    let hs = homeserver_on(&config, wrap(db)).await?;
    // Only the node holding the lock pushes (a CLI command on the same database must not).
    hs.start_push_delivery()
        .await
        .context("starting push delivery")?;
    let listener = TcpListener::bind(&config.listen.client)
        .await
        .with_context(|| format!("binding {}", config.listen.client))?;
    let addr = listener.local_addr()?;
    let api = config.api();
    let limits = listen::ConnectionLimits {
        max: config.limits.max_connections,
        per_ip: config.limits.max_connections_per_ip,
        trusted_proxies: api.rate_limits.trusted_proxies.clone(),
        header_timeout: Duration::from_millis(config.limits.header_timeout_ms),
    };
    let app = tessera_api::router(hs.clone(), api);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(listen::serve(listener, app, limits, async move {
        let _ = stopped.await;
    }));
    tracing::info!(
        "Tessera for {} listening on http://{addr}; create the first user with `tessera user create NAME --admin`",
        config.server_name
    );
    Ok(RunningServer {
        addr,
        hs,
        stop,
        task,
        _lock: lock,
    })
}
