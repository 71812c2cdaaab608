//! Spawning the `tessera` binary as a child process and reading its resource use from
//! `/proc`.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use tokio::process::{Child, Command};

pub struct Server {
    pub url: String,
    pub pid: u32,
    pub log_path: PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

/// Where the release binary is by default: `$CARGO_TARGET_DIR/release/tessera`, else
/// `target/release/tessera` (relative to the current directory, then to the workspace).
pub fn default_server_bin() -> PathBuf {
    let mut candidates = Vec::new();
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        candidates.push(PathBuf::from(dir).join("release/tessera"));
    }
    candidates.push(PathBuf::from("target/release/tessera"));
    candidates.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/tessera"));
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .unwrap_or_else(|| candidates.remove(0))
}

/// Budgets raised for the benchmark's load (per user, per loopback address).
const LOAD_BUDGETS: &[(&str, &str)] = &[
    ("PER_SECOND", "1000"),
    ("BURST", "10000"),
    ("PER_IP__PER_SECOND", "100000"),
    ("PER_IP__BURST", "100000"),
    ("MESSAGES__PER_SECOND", "1000"),
    ("MESSAGES__BURST", "10000"),
    ("REGISTRATION__PER_SECOND", "100000"),
    ("REGISTRATION__BURST", "100000"),
    ("LOGIN__PER_SECOND", "100000"),
    ("LOGIN__BURST", "100000"),
    ("JOINS__PER_SECOND", "1000"),
    ("JOINS__BURST", "10000"),
    ("PROFILE__BURST", "10000"),
    ("EPHEMERAL__BURST", "10000"),
];

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Server {
    /// Starts the server on a free loopback port with its data in a fresh temporary folder,
    /// and waits until it answers `GET /_matrix/client/versions`.
    /// [`Server::spawn`] with the server's default log and extra environment.
    pub async fn spawn_with(
        bin: &Path,
        database_url: Option<&str>,
        rate_limits: bool,
        env: &[(&str, &str)],
        http: &reqwest::Client,
    ) -> Result<Server, String> {
        Self::spawn_env(bin, database_url, None, None, rate_limits, env, http).await
    }

    pub async fn spawn(
        bin: &Path,
        database_url: Option<&str>,
        log_filter: Option<&str>,
        log_file: Option<&Path>,
        rate_limits: bool,
        http: &reqwest::Client,
    ) -> Result<Server, String> {
        Self::spawn_env(
            bin,
            database_url,
            log_filter,
            log_file,
            rate_limits,
            &[],
            http,
        )
        .await
    }

    async fn spawn_env(
        bin: &Path,
        database_url: Option<&str>,
        log_filter: Option<&str>,
        log_file: Option<&Path>,
        rate_limits: bool,
        env: &[(&str, &str)],
        http: &reqwest::Client,
    ) -> Result<Server, String> {
        if !bin.is_file() {
            return Err(format!(
                "server binary {} not found; build it with `cargo build --release -p tessera-server` or pass --server-bin",
                bin.display()
            ));
        }
        let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
        let port = free_port().map_err(|e| format!("finding a free port: {e}"))?;
        let log_path = log_file
            .map(Path::to_owned)
            .unwrap_or_else(|| dir.path().join("server.log"));
        let log = std::fs::File::create(&log_path).map_err(|e| format!("server log: {e}"))?;
        let log2 = log.try_clone().map_err(|e| format!("server log: {e}"))?;
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .env("TESSERA_LISTEN__CLIENT", format!("127.0.0.1:{port}"))
            .env("TESSERA_DATA_DIR", dir.path())
            .env("TESSERA_REGISTRATION__OPEN", "true")
            .env("TESSERA_REGISTRATION__TOKEN_REQUIRED", "false")
            .env("TESSERA_RATE_LIMITS__ENABLED", rate_limits.to_string())
            .env_remove("TESSERA_CONFIG")
            .env_remove("TESSERA_DATABASE__URL")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .kill_on_drop(true);
        if let Some(url) = database_url {
            cmd.env("TESSERA_DATABASE__URL", url);
        }
        // Every limit is checked, but the senders are bots sending back to back and every
        // client is on loopback: those budgets are raised to the load, the others keep
        // their defaults.
        for (key, value) in LOAD_BUDGETS {
            cmd.env(format!("TESSERA_RATE_LIMITS__{key}"), value);
        }
        for (key, value) in env {
            cmd.env(key, value);
        }
        if let Some(filter) = log_filter {
            cmd.env("TESSERA_LOG", filter).env_remove("RUST_LOG");
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("starting {}: {e}", bin.display()))?;
        let pid = child.id().ok_or("server exited at once")?;
        let url = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "server exited during start-up ({status}); its log:\n{}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                ));
            }
            let ok = http
                .get(format!("{url}/_matrix/client/versions"))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                break;
            }
            if started.elapsed() > Duration::from_secs(60) {
                return Err(format!(
                    "server did not answer /versions within 60 s; its log:\n{}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Server {
            url,
            pid,
            log_path,
            child,
            _dir: dir,
        })
    }

    /// Whether the process is still running (None when it exited, with its status).
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            _ => None,
        }
    }

    /// The last `n` lines of the server's stderr/stdout.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// SIGTERM, then SIGKILL if it has not stopped after 10 s.
    pub async fn stop(mut self) -> Result<(), String> {
        // SAFETY: kill(2) on the pid of our own child, which we have not yet reaped.
        let rc = unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGTERM) };
        if rc != 0 {
            let _ = self.child.kill().await;
            return Ok(());
        }
        match tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await {
            Ok(Ok(status)) if status.success() => Ok(()),
            Ok(Ok(status)) => Err(format!("server exited with {status}")),
            Ok(Err(e)) => Err(format!("waiting for the server: {e}")),
            Err(_) => {
                let _ = self.child.kill().await;
                Err("server did not stop within 10 s of SIGTERM; killed".into())
            }
        }
    }
}

/// CPU time (user + system) of a process, in seconds, from `/proc/<pid>/stat`.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = if ticks > 0 { ticks as f64 } else { 100.0 };
    Some((utime + stime) as f64 / ticks)
}

/// A `kB` line (`VmHWM`, `VmRSS`, …) of `/proc/<pid>/status`, in bytes.
pub fn status_kb(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| {
        let v = l.strip_prefix(key)?.strip_prefix(':')?;
        let kb: u64 = v.trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kb * 1024)
    })
}

/// Threads of a process, from `/proc/<pid>/status`.
pub fn threads(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:")?.trim().parse().ok())
}

/// Resets the process's peak RSS (`VmHWM`) to its current RSS (`/proc/<pid>/clear_refs`,
/// value 5). Returns false where the kernel does not allow it.
pub fn reset_peak_rss(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// Busy and total jiffies of the whole machine, from the `cpu` line of `/proc/stat`.
pub fn system_jiffies() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user)
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// The 1-minute load average.
pub fn loadavg() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// On PostgreSQL, refreshes the planner's statistics before reads are measured, as
/// autovacuum does within a minute of a bulk load on a default installation (this
/// machine's PostgreSQL runs with `autovacuum = off`, so tables just loaded would be
/// planned as if empty). Returns whether it ran.
pub async fn analyze(database_url: Option<&str>) -> Result<bool, String> {
    use sqlx::Connection;
    let Some(url) = database_url.filter(|u| u.starts_with("postgres")) else {
        return Ok(false);
    };
    let mut conn = sqlx::PgConnection::connect(url)
        .await
        .map_err(|e| format!("analyze: {e}"))?;
    sqlx::raw_sql("ANALYZE")
        .execute(&mut conn)
        .await
        .map_err(|e| format!("analyze: {e}"))?;
    Ok(true)
}
