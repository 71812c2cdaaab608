//! The HTTP listener: hyper with a timer, so a client that sends its headers too slowly
//! is cut off (`axum::serve` sets no timer, and hyper's header timeout needs one), and
//! caps on open connections, overall and per address, so slow or idle connections
//! cannot use up the server's tasks and file descriptors before any rate limit sees them.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{extract::ConnectInfo, Router};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto::Builder, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use tokio::{net::TcpListener, sync::Semaphore};
use tower::ServiceExt as _;

/// Pause after a failed `accept` (out of file descriptors, say) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

#[derive(Clone, Debug)]
pub struct ConnectionLimits {
    /// Connections open at once; more are closed as they arrive.
    pub max: usize,
    /// Connections open at once from one address (trusted proxies excepted).
    pub per_ip: usize,
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// How long a client may take to send a request's headers.
    pub header_timeout: Duration,
}

/// Counts one connection of an address while it is open.
struct PerIp {
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl PerIp {
    fn take(counts: &Arc<Mutex<HashMap<IpAddr, usize>>>, ip: IpAddr, cap: usize) -> Option<Self> {
        let mut map = counts.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= cap {
            return None;
        }
        *n += 1;
        Some(Self {
            counts: counts.clone(),
            ip,
        })
    }
}

impl Drop for PerIp {
    fn drop(&mut self) {
        let mut map = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Serves `app` until `stop` resolves, then closes every connection gracefully (in-flight
/// requests finish; the caller bounds how long that may take).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    stop: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    let open = Arc::new(Semaphore::new(limits.max.max(1)));
    let per_ip = Arc::new(Mutex::new(HashMap::new()));
    tokio::pin!(stop);
    loop {
        let (stream, addr): (_, SocketAddr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            tracing::debug!(%addr, "too many connections; closing a new one");
            continue;
        };
        let ip_slot = if limits
            .trusted_proxies
            .iter()
            .any(|n| n.contains(&addr.ip()))
        {
            None
        } else {
            match PerIp::take(&per_ip, addr.ip(), limits.per_ip) {
                Some(slot) => Some(slot),
                None => {
                    tracing::debug!(%addr, "too many connections from one address");
                    continue;
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let service = app
            .clone()
            .map_request(move |mut req: http::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(addr));
                req.map(axum::body::Body::new)
            });
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(service))
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::trace!("connection ended: {e}");
            }
            drop(permit);
            drop(ip_slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
