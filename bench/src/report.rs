//! Percentiles and the printed report.

use std::fmt::Write as _;

use serde_json::{json, Value};

/// Targets from the issue (2-core machine, SQLite, 20 senders).
const TARGET_MSGS_PER_S: f64 = 1000.0;
const TARGET_DELIVERY_P50_US: u64 = 2000;
const TARGET_PEAK_RSS_BYTES: u64 = 40 * 1024 * 1024;

/// Latency distribution, in microseconds.
pub struct Summary {
    pub count: usize,
    pub min: u64,
    pub p50: u64,
    pub p95: u64,
    pub p99: u64,
    pub max: u64,
    pub mean: f64,
}

impl Summary {
    pub fn of(mut v: Vec<u64>) -> Option<Summary> {
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        // Nearest-rank percentile.
        let pct = |p: f64| v[((p / 100.0 * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        Some(Summary {
            count: v.len(),
            min: v[0],
            p50: pct(50.0),
            p95: pct(95.0),
            p99: pct(99.0),
            max: v[v.len() - 1],
            mean: v.iter().sum::<u64>() as f64 / v.len() as f64,
        })
    }

    fn json(&self) -> Value {
        json!({
            "count": self.count,
            "min_ms": ms(self.min),
            "p50_ms": ms(self.p50),
            "p95_ms": ms(self.p95),
            "p99_ms": ms(self.p99),
            "max_ms": ms(self.max),
            "mean_ms": self.mean / 1e3,
        })
    }

    fn line(&self) -> String {
        format!(
            "p50 {:.2} ms  p95 {:.2} ms  p99 {:.2} ms  (min {:.2}, mean {:.2}, max {:.2}; n={})",
            ms(self.p50),
            ms(self.p95),
            ms(self.p99),
            ms(self.min),
            self.mean / 1e3,
            ms(self.max),
            self.count
        )
    }
}

fn ms(us: u64) -> f64 {
    us as f64 / 1e3
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

fn opt_mib(b: Option<u64>) -> String {
    b.map(|b| format!("{:.1} MiB", mib(b)))
        .unwrap_or_else(|| "?".into())
}

pub struct Report {
    pub server_bin: String,
    pub database: String,
    pub cores: usize,
    pub users: usize,
    pub rooms: usize,
    pub senders: usize,
    pub messages_per_sender: Option<usize>,
    pub duration_limit_s: Option<f64>,
    pub startup_ms: f64,
    pub register_ms: f64,
    pub register_count: usize,
    pub create_rooms_ms: f64,
    pub joins_ms: f64,
    pub joins: usize,
    pub setup_errors: u64,
    pub sent_ok: u64,
    pub send_failed: u64,
    pub send_wall_s: f64,
    pub messages_per_s: f64,
    pub send_latency: Option<Summary>,
    pub received: u64,
    pub missing: u64,
    pub duplicates: u64,
    pub limited_timelines: u64,
    pub reader_syncs: u64,
    pub drain_ms: f64,
    pub delivery_latency: Option<Summary>,
    /// From the sender's 200 to the reader's receipt (0 when the sync came first).
    pub ack_to_sync_latency: Option<Summary>,
    pub synced_before_ack: u64,
    pub initial_sync_ms: Vec<f64>,
    pub initial_sync_bytes: usize,
    pub server_cpu_s: Option<f64>,
    pub server_cpu_us_per_message: Option<f64>,
    pub server_cpu_cores: Option<f64>,
    pub bench_cpu_s: Option<f64>,
    pub load_wall_s: f64,
    pub rss_idle_bytes: Option<u64>,
    /// Peak RSS during setup (registration hashes passwords with argon2).
    pub setup_peak_rss_bytes: Option<u64>,
    pub rss_after_register_bytes: Option<u64>,
    pub rss_before_load_bytes: Option<u64>,
    /// Whether the peak was reset after setup, so `peak_rss_bytes` covers only the load.
    pub peak_rss_reset: bool,
    /// Busy cores of the whole machine during the load (server, bench and anything else).
    pub machine_cores_busy: Option<f64>,
    /// Server CPU (cores) during 1 s before the load with only the readers' long-polls open.
    pub idle_cpu_cores: Option<f64>,
    pub loadavg_before: Option<f64>,
    pub rss_end_bytes: Option<u64>,
    pub peak_rss_bytes: Option<u64>,
    pub server_threads: Option<u64>,
    /// (phase, status, body, count)
    pub errors: Vec<(String, String, String, u64)>,
    pub server_exited: Option<String>,
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "MISSED"
    }
}

impl Report {
    pub fn text(&self) -> String {
        let mut s = String::new();
        let w = &mut s;
        let _ = writeln!(w, "\n== tessera-bench ==");
        let _ = writeln!(w, "server:        {}", self.server_bin);
        let _ = writeln!(w, "database:      {}", self.database);
        let _ = writeln!(w, "cores:         {}", self.cores);
        let _ = writeln!(
            w,
            "load:          {} senders, {} users, {} rooms, {} per sender{}",
            self.senders,
            self.users,
            self.rooms,
            self.messages_per_sender
                .map(|m| format!("{m} messages"))
                .unwrap_or_else(|| "unlimited messages".into()),
            self.duration_limit_s
                .map(|d| format!(", at most {d} s"))
                .unwrap_or_default()
        );
        let _ = writeln!(
            w,
            "setup:         server ready {:.0} ms; {} registrations {:.0} ms; {} rooms {:.0} ms; {} joins {:.0} ms",
            self.startup_ms,
            self.register_count,
            self.register_ms,
            self.rooms,
            self.create_rooms_ms,
            self.joins,
            self.joins_ms
        );
        let _ = writeln!(w);
        let _ = writeln!(
            w,
            "throughput:    {:.0} messages/s  ({} sent in {:.2} s, {} failed)   [target ≥ {TARGET_MSGS_PER_S:.0}: {}]",
            self.messages_per_s,
            self.sent_ok,
            self.send_wall_s,
            self.send_failed,
            verdict(self.messages_per_s >= TARGET_MSGS_PER_S)
        );
        match &self.send_latency {
            Some(l) => {
                let _ = writeln!(w, "send latency:  {}", l.line());
            }
            None => {
                let _ = writeln!(w, "send latency:  no message was accepted");
            }
        }
        match &self.delivery_latency {
            Some(l) => {
                // From the send's start this includes the queue of senders ahead in the
                // room (about senders ÷ throughput); the target is on delivery after the 200.
                let _ = writeln!(w, "send→sync:     {}", l.line());
            }
            None => {
                let _ = writeln!(w, "send→sync:     nothing delivered");
            }
        }
        if let Some(l) = &self.ack_to_sync_latency {
            let _ = writeln!(
                w,
                "200→sync:      {}   ({} reached the reader before the sender had its 200)   [delivery target p50 ≤ 2 ms: {}]",
                l.line(),
                self.synced_before_ack,
                verdict(l.p50 <= TARGET_DELIVERY_P50_US)
            );
        }
        let _ = writeln!(
            w,
            "delivery:      {} of {} received ({} missing, {} duplicates) over {} reader syncs; {} limited timelines; last one {:.0} ms after the last send",
            self.received,
            self.sent_ok,
            self.missing,
            self.duplicates,
            self.reader_syncs,
            self.limited_timelines,
            self.drain_ms
        );
        let _ = writeln!(
            w,
            "initial /sync: {}  ({} bytes; a fresh device of a user in all {} rooms, after the load)",
            if self.initial_sync_ms.is_empty() {
                "failed".to_string()
            } else {
                let shown: Vec<_> = self
                    .initial_sync_ms
                    .iter()
                    .take(3)
                    .map(|m| format!("{m:.1} ms"))
                    .collect();
                let mut s = shown.join(", then ");
                if self.initial_sync_ms.len() > 3 {
                    let mut rest = self.initial_sync_ms[1..].to_vec();
                    rest.sort_by(f64::total_cmp);
                    s += &format!(
                        " … (repeats: median {:.1} ms of {})",
                        rest[rest.len() / 2],
                        rest.len()
                    );
                }
                s
            },
            self.initial_sync_bytes,
            self.rooms
        );
        if let (Some(cpu), Some(per)) = (self.server_cpu_s, self.server_cpu_us_per_message) {
            let _ = writeln!(
                w,
                "server CPU:    {per:.0} µs per message  ({cpu:.2} s over {:.2} s = {:.2} cores busy; {} cores when idle; bench client used {})",
                self.load_wall_s,
                self.server_cpu_cores.unwrap_or(0.0),
                self.idle_cpu_cores
                    .map(|c| format!("{c:.2}"))
                    .unwrap_or_else(|| "?".into()),
                self.bench_cpu_s
                    .map(|c| format!("{c:.2} s"))
                    .unwrap_or_else(|| "?".into())
            );
        }
        if let Some(busy) = self.machine_cores_busy {
            let other = busy
                - self.server_cpu_cores.unwrap_or(0.0)
                - self.bench_cpu_s.unwrap_or(0.0) / self.load_wall_s;
            let _ = writeln!(
                w,
                "machine:       {busy:.2} of {} cores busy during the load ({:.2} cores by other processes); load average before {}",
                self.cores,
                other.max(0.0),
                self.loadavg_before
                    .map(|l| format!("{l:.2}"))
                    .unwrap_or_else(|| "?".into())
            );
        }
        let overall_peak = self
            .peak_rss_bytes
            .into_iter()
            .chain(self.setup_peak_rss_bytes)
            .max();
        if let Some(peak) = overall_peak {
            let _ = writeln!(
                w,
                "peak RSS:      {:.1} MiB overall   [target ≤ 40 MiB: {}]",
                mib(peak),
                verdict(peak <= TARGET_PEAK_RSS_BYTES)
            );
            let _ = writeln!(
                w,
                "               idle after start {}; after registrations {}; setup peak {}; before load {}; {} {}; at end {}; {} threads",
                opt_mib(self.rss_idle_bytes),
                opt_mib(self.rss_after_register_bytes),
                opt_mib(self.setup_peak_rss_bytes),
                opt_mib(self.rss_before_load_bytes),
                if self.peak_rss_reset {
                    "load + initial sync peak"
                } else {
                    "peak (not reset after setup)"
                },
                opt_mib(self.peak_rss_bytes),
                opt_mib(self.rss_end_bytes),
                self.server_threads
                    .map(|t| t.to_string())
                    .unwrap_or_else(|| "?".into()),
            );
        }
        if let Some(status) = &self.server_exited {
            let _ = writeln!(w, "SERVER EXITED: {status}");
        }
        if self.errors.is_empty() {
            let _ = writeln!(w, "errors:        none");
        } else {
            let total: u64 = self.errors.iter().map(|e| e.3).sum();
            let _ = writeln!(
                w,
                "errors:        {total} ({} kinds; most frequent first)",
                self.errors.len()
            );
            for (phase, status, body, n) in self.errors.iter().take(20) {
                let _ = writeln!(w, "  {n} × {phase}: {status} {body}");
            }
            if self.errors.len() > 20 {
                let _ = writeln!(w, "  … {} more kinds (see --json)", self.errors.len() - 20);
            }
        }
        s
    }

    pub fn to_json(&self) -> Value {
        json!({
            "server_bin": self.server_bin,
            "database": self.database,
            "cores": self.cores,
            "users": self.users,
            "rooms": self.rooms,
            "senders": self.senders,
            "messages_per_sender": self.messages_per_sender,
            "duration_limit_s": self.duration_limit_s,
            "setup": {
                "startup_ms": self.startup_ms,
                "registrations": self.register_count,
                "register_ms": self.register_ms,
                "create_rooms_ms": self.create_rooms_ms,
                "joins": self.joins,
                "joins_ms": self.joins_ms,
                "errors": self.setup_errors,
            },
            "sent_ok": self.sent_ok,
            "send_failed": self.send_failed,
            "send_wall_s": self.send_wall_s,
            "messages_per_s": self.messages_per_s,
            "send_latency": self.send_latency.as_ref().map(Summary::json),
            "delivery": {
                "received": self.received,
                "missing": self.missing,
                "duplicates": self.duplicates,
                "limited_timelines": self.limited_timelines,
                "reader_syncs": self.reader_syncs,
                "drain_ms": self.drain_ms,
                "latency": self.delivery_latency.as_ref().map(Summary::json),
                "after_ack_latency": self.ack_to_sync_latency.as_ref().map(Summary::json),
                "synced_before_ack": self.synced_before_ack,
            },
            "initial_sync_ms": self.initial_sync_ms,
            "initial_sync_bytes": self.initial_sync_bytes,
            "server_cpu_s": self.server_cpu_s,
            "server_cpu_us_per_message": self.server_cpu_us_per_message,
            "server_cpu_cores": self.server_cpu_cores,
            "bench_cpu_s": self.bench_cpu_s,
            "load_wall_s": self.load_wall_s,
            "rss_idle_bytes": self.rss_idle_bytes,
            "rss_end_bytes": self.rss_end_bytes,
            "peak_rss_bytes": self.peak_rss_bytes.into_iter().chain(self.setup_peak_rss_bytes).max(),
            "load_peak_rss_bytes": self.peak_rss_reset.then_some(self.peak_rss_bytes).flatten(),
            "setup_peak_rss_bytes": self.setup_peak_rss_bytes,
            "rss_after_register_bytes": self.rss_after_register_bytes,
            "rss_before_load_bytes": self.rss_before_load_bytes,
            "machine_cores_busy": self.machine_cores_busy,
            "server_idle_cpu_cores": self.idle_cpu_cores,
            "loadavg_before": self.loadavg_before,
            "server_threads": self.server_threads,
            "errors": self.errors.iter().map(|(phase, status, body, n)| json!({
                "phase": phase, "status": status, "body": body, "count": n,
            })).collect::<Vec<_>>(),
            "server_exited": self.server_exited,
            "targets": {
                "messages_per_s_min": TARGET_MSGS_PER_S,
                "delivery_p50_ms_max": TARGET_DELIVERY_P50_US as f64 / 1e3,
                "peak_rss_bytes_max": TARGET_PEAK_RSS_BYTES,
            },
        })
    }
}
