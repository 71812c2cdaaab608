//! `tessera-bench`: a load benchmark for Tessera.
//!
//! Spawns the real `tessera` binary, registers users, creates rooms, then has concurrent
//! senders post messages while one long-polling `/sync` reader per room receives them.
//! Reports messages/s, send latency, send→sync delivery latency, initial `/sync` time,
//! server CPU per message and peak RSS. See `bench/README.md`.

mod load;
mod report;
mod scenarios;
mod server;

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use clap::Parser;
use serde_json::json;
use tokio::task::JoinSet;

use load::*;
use report::{Report, Summary};
use server::Server;

#[derive(Parser, Debug)]
#[command(
    name = "tessera-bench",
    about = "Benchmarks for the Tessera homeserver: spawn the real binary and drive it over HTTP",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    scenario: Option<Scenario>,
    /// Without a scenario: the message load (see `load --help`).
    #[command(flatten)]
    load: Args,
}

#[derive(clap::Subcommand, Debug)]
enum Scenario {
    /// Senders and long-polling readers (the default).
    Load(Args),
    /// An account in many rooms: initial and incremental /sync.
    Rooms(scenarios::RoomsArgs),
    /// One room with many members: joins, sending, a member's /sync.
    BigRoom(scenarios::BigRoomArgs),
    /// Server-side search over a long history: latency by how many messages match.
    Search(scenarios::SearchArgs),
}

/// Settings every scenario takes.
#[derive(clap::Args, Debug, Clone)]
pub struct Common {
    /// The `tessera` binary [default: $CARGO_TARGET_DIR/release/tessera, else target/release/tessera].
    #[arg(long, value_name = "PATH")]
    pub server_bin: Option<PathBuf>,
    /// Database URL for the server (`postgres://…`); default: SQLite in a temporary folder.
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// Print the report as JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Run the server with rate limits off (by default they are on, with the bench's
    /// budgets raised to the load; see README).
    #[arg(long)]
    pub no_rate_limits: bool,
}

#[derive(clap::Args, Debug)]
struct Args {
    /// The `tessera` binary [default: $CARGO_TARGET_DIR/release/tessera, else target/release/tessera].
    #[arg(long, value_name = "PATH")]
    server_bin: Option<PathBuf>,
    /// Database URL for the server (`postgres://…`); default: SQLite in a temporary folder.
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// Users who send (all of them join every room).
    #[arg(long, default_value_t = 20)]
    users: usize,
    /// Rooms the messages are spread over; each has its own /sync reader.
    #[arg(long, default_value_t = 4)]
    rooms: usize,
    /// Concurrent senders (sender i is user i mod users, in room i mod rooms).
    #[arg(long, default_value_t = 20)]
    senders: usize,
    /// Messages each sender sends [default: 500, or unlimited with --duration].
    #[arg(long)]
    messages: Option<usize>,
    /// Stop sending after this many seconds (together with --messages, whichever comes first).
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// How long readers may take to receive every message after the last send.
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    drain_timeout: f64,
    /// Initial syncs measured after the load (the first is cold).
    #[arg(long, default_value_t = 3)]
    initial_syncs: usize,
    /// Registrations in flight at once (each hashes a password with argon2, ~19 MiB).
    #[arg(long, default_value_t = 4)]
    register_concurrency: usize,
    /// Log filter for the server (`TESSERA_LOG`); default: the server's own default.
    #[arg(long, value_name = "FILTER")]
    server_log: Option<String>,
    /// Write the server's output (stdout and stderr) here instead of a temporary file.
    #[arg(long, value_name = "PATH")]
    server_log_file: Option<PathBuf>,
    /// Print the report as JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Run the server with rate limits off (by default they are on, with the senders'
    /// and loopback's budgets raised to the load; see README).
    #[arg(long)]
    no_rate_limits: bool,
}

/// Timeline limit the readers ask for; the server clamps to its maximum (100).
const READER_FILTER: &str = r#"{"room":{"timeline":{"limit":100}}}"#;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = rt.block_on(async move {
        match cli.scenario {
            None => run(cli.load).await,
            Some(Scenario::Load(args)) => run(args).await,
            Some(Scenario::Rooms(args)) => scenarios::rooms(args).await,
            Some(Scenario::BigRoom(args)) => scenarios::big_room(args).await,
            Some(Scenario::Search(args)) => scenarios::search(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<std::process::ExitCode, String> {
    if args.users == 0 || args.rooms == 0 || args.senders == 0 {
        return Err("--users, --rooms and --senders must be at least 1".into());
    }
    let per_sender = match (args.messages, args.duration) {
        (Some(m), _) => m,
        (None, Some(_)) => usize::MAX,
        (None, None) => 500,
    };
    let bin = args
        .server_bin
        .clone()
        .unwrap_or_else(server::default_server_bin);
    let http = reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_idle_timeout(None)
        .build()
        .map_err(|e| format!("http client: {e}"))?;
    let progress = |msg: &str| {
        if !args.json {
            eprintln!("{msg}");
        }
    };

    progress(&format!("starting {}", bin.display()));
    let started = Instant::now();
    let mut srv = Server::spawn(
        &bin,
        args.database_url.as_deref(),
        args.server_log.as_deref(),
        args.server_log_file.as_deref(),
        !args.no_rate_limits,
        &http,
    )
    .await?;
    let startup = started.elapsed();
    let pid = srv.pid;
    let rss_idle = server::status_kb(pid, "VmRSS");
    let ctx = Arc::new(Ctx {
        url: srv.url.clone(),
        http,
        errors: Errors::default(),
        base: Instant::now(),
    });

    // Setup: users, rooms, joins.
    progress(&format!(
        "server pid {pid} on {} (ready in {:.0} ms); registering {} users + {} readers",
        srv.url,
        startup.as_secs_f64() * 1e3,
        args.users,
        args.rooms
    ));
    let t = Instant::now();
    let run_tag = std::process::id();
    let mut names: Vec<String> = (0..args.users).map(|i| format!("u{i}_{run_tag}")).collect();
    names.extend((0..args.rooms).map(|r| format!("reader{r}_{run_tag}")));
    let tokens = register_all(&ctx, &names, args.register_concurrency.max(1)).await?;
    let (user_tokens, reader_tokens) = tokens.split_at(args.users);
    let register_time = t.elapsed();
    let rss_after_register = server::status_kb(pid, "VmRSS");

    let t = Instant::now();
    let mut rooms = Vec::new();
    for _ in 0..args.rooms {
        let v = ctx
            .call(
                "createRoom",
                reqwest::Method::POST,
                "/_matrix/client/v3/createRoom",
                Some(&user_tokens[0]),
                Some(&json!({"preset": "public_chat"})),
            )
            .await
            .ok_or_else(|| setup_failed(&ctx, "createRoom"))?;
        let id = v["room_id"].as_str().ok_or("createRoom: no room_id")?;
        rooms.push(Arc::new(Room {
            id: id.to_owned(),
            sent_ok: AtomicU64::new(0),
            reader: ReaderStats::default(),
        }));
    }
    let create_time = t.elapsed();

    let t = Instant::now();
    let mut joins = JoinSet::new();
    for tok in user_tokens.iter().skip(1) {
        let (ctx, tok) = (ctx.clone(), tok.clone());
        let ids: Vec<String> = rooms.iter().map(|r| r.id.clone()).collect();
        joins.spawn(async move { join_rooms(&ctx, &tok, &ids).await });
    }
    for (tok, room) in reader_tokens.iter().zip(&rooms) {
        let (ctx, tok, id) = (ctx.clone(), tok.clone(), room.id.clone());
        joins.spawn(async move { join_rooms(&ctx, &tok, &[id]).await });
    }
    let joined: usize = joins.join_all().await.into_iter().sum();
    let join_time = t.elapsed();
    let expected_joins = (args.users - 1) * args.rooms + args.rooms;
    if joined != expected_joins {
        return Err(format!(
            "only {joined} of {expected_joins} joins succeeded\n{}",
            errors_text(&ctx)
        ));
    }

    // Readers: an initial sync each for a since token, then long-polling.
    let mut readers = JoinSet::new();
    for (tok, room) in reader_tokens.iter().zip(&rooms) {
        let v = ctx
            .call(
                "reader initial sync",
                reqwest::Method::GET,
                &format!("/_matrix/client/v3/sync?filter={}", enc(READER_FILTER)),
                Some(tok),
                None,
            )
            .await
            .ok_or_else(|| setup_failed(&ctx, "reader initial sync"))?;
        let since = v["next_batch"]
            .as_str()
            .ok_or("sync: no next_batch")?
            .to_owned();
        let (ctx, tok, room) = (ctx.clone(), tok.clone(), room.clone());
        readers.spawn(async move { reader(&ctx, &tok, &room, since).await });
    }
    // Give the readers' first long-poll a moment to reach the server, then measure what the
    // server burns while idle with every reader parked in a long-poll.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let idle_window = Duration::from_secs(1);
    let idle_cpu_before = server::cpu_seconds(pid);
    tokio::time::sleep(idle_window).await;
    let idle_cpu_cores = idle_cpu_before
        .zip(server::cpu_seconds(pid))
        .map(|(a, b)| (b - a) / idle_window.as_secs_f64());

    // Load.
    let setup_errors: u64 = ctx.errors.list().iter().map(|e| e.3).sum();
    progress(&format!(
        "{} senders × {} in {} rooms{}",
        args.senders,
        if per_sender == usize::MAX {
            "unlimited".to_string()
        } else {
            format!("{per_sender} messages")
        },
        args.rooms,
        args.duration
            .map(|d| format!(", for at most {d} s"))
            .unwrap_or_default()
    ));
    let setup_peak_rss = server::status_kb(pid, "VmHWM");
    let peak_reset = server::reset_peak_rss(pid);
    let rss_before_load = server::status_kb(pid, "VmRSS");
    let loadavg_before = server::loadavg();
    let sys_before = server::system_jiffies();
    let cpu_before = server::cpu_seconds(pid);
    let self_cpu_before = server::cpu_seconds(std::process::id());
    let load_start = Instant::now();
    let deadline = args
        .duration
        .map(|d| load_start + Duration::from_secs_f64(d));
    let mut senders = JoinSet::new();
    for i in 0..args.senders {
        let ctx = ctx.clone();
        let tok = user_tokens[i % args.users].clone();
        let room = rooms[i % args.rooms].clone();
        senders.spawn(async move { sender(&ctx, i, &tok, &room, per_sender, deadline).await });
    }
    let mut send_lat: Vec<u64> = Vec::new();
    // (sender, seq) → when its 200 arrived (µs since ctx.base).
    let mut acks: HashMap<(u64, u64), u64> = HashMap::new();
    let mut send_failed = 0u64;
    while let Some(r) = senders.join_next().await {
        let (idx, sent, failed) = r.map_err(|e| format!("sender task: {e}"))?;
        for (seq, t0, lat) in sent {
            send_lat.push(lat);
            acks.insert((idx, seq), t0 + lat);
        }
        send_failed += failed;
    }
    let send_wall = load_start.elapsed();
    let sent_ok: u64 = rooms.iter().map(|r| r.sent_ok.load(Ordering::SeqCst)).sum();

    // Drain: wait until every reader has every message, or the drain timeout.
    let drain_start = Instant::now();
    let drain_deadline = drain_start + Duration::from_secs_f64(args.drain_timeout);
    let all_delivered = |rooms: &[Arc<Room>]| {
        rooms
            .iter()
            .all(|r| r.reader.received.load(Ordering::SeqCst) >= r.sent_ok.load(Ordering::SeqCst))
    };
    while !all_delivered(&rooms) && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let drain_time = drain_start.elapsed();
    readers.abort_all();
    while readers.join_next().await.is_some() {}
    let cpu_after = server::cpu_seconds(pid);
    let self_cpu_after = server::cpu_seconds(std::process::id());
    let sys_after = server::system_jiffies();
    let load_wall = load_start.elapsed();

    // Initial sync after the load, for a user in every room: a cold one, then repeats.
    if server::analyze(args.database_url.as_deref()).await? {
        progress("PostgreSQL statistics refreshed (ANALYZE)");
    }
    progress("initial /sync");
    // From a fresh device, as a client signing in (the issue's figure).
    let fresh = scenarios::login(&ctx, &names[0]).await?;
    let mut initial_syncs = Vec::new();
    let mut initial_sync_bytes = 0;
    for _ in 0..args.initial_syncs.max(1) {
        let t = Instant::now();
        let res = ctx
            .http
            .get(format!("{}/_matrix/client/v3/sync", ctx.url))
            .bearer_auth(&fresh)
            .send()
            .await;
        match res {
            Ok(r) if r.status().is_success() => {
                let body = r.bytes().await.map_err(|e| format!("initial sync: {e}"))?;
                initial_syncs.push(t.elapsed());
                initial_sync_bytes = body.len();
            }
            Ok(r) => {
                let status = r.status().to_string();
                ctx.errors
                    .record("initial sync", status, r.text().await.unwrap_or_default());
            }
            Err(e) => ctx
                .errors
                .record("initial sync", "transport error".into(), transport(e)),
        }
    }

    let peak_rss = server::status_kb(pid, "VmHWM");
    let rss_end = server::status_kb(pid, "VmRSS");
    let threads = server::threads(pid);
    let exited = srv.exited();

    let mut delivery: Vec<u64> = Vec::new();
    let mut after_ack: Vec<u64> = Vec::new();
    let mut before_ack = 0u64;
    let (mut received, mut duplicates, mut limited, mut syncs) = (0, 0, 0, 0);
    for r in &rooms {
        for &(idx, seq, t0, recv) in r.reader.arrivals.lock().unwrap().iter() {
            delivery.push(recv.saturating_sub(t0));
            if let Some(&ack) = acks.get(&(idx, seq)) {
                if recv >= ack {
                    after_ack.push(recv - ack);
                } else {
                    after_ack.push(0);
                    before_ack += 1;
                }
            }
        }
        received += r.reader.received.load(Ordering::SeqCst);
        duplicates += r.reader.duplicates.load(Ordering::SeqCst);
        limited += r.reader.limited.load(Ordering::SeqCst);
        syncs += r.reader.syncs.load(Ordering::SeqCst);
    }
    let server_cpu = cpu_before.zip(cpu_after).map(|(a, b)| b - a);
    let bench_cpu = self_cpu_before.zip(self_cpu_after).map(|(a, b)| b - a);
    // Whole-machine busy cores during the load, from /proc/stat.
    let machine_cores_busy = sys_before.zip(sys_after).map(|((b0, t0), (b1, t1))| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        (b1 - b0) as f64 / (t1 - t0).max(1) as f64 * cores
    });

    let report = Report {
        server_bin: bin.display().to_string(),
        database: args
            .database_url
            .as_deref()
            .map(redact)
            .unwrap_or_else(|| "sqlite (temporary folder)".into()),
        cores: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        users: args.users,
        rooms: args.rooms,
        senders: args.senders,
        messages_per_sender: (per_sender != usize::MAX).then_some(per_sender),
        duration_limit_s: args.duration,
        startup_ms: startup.as_secs_f64() * 1e3,
        register_ms: register_time.as_secs_f64() * 1e3,
        register_count: names.len(),
        create_rooms_ms: create_time.as_secs_f64() * 1e3,
        joins_ms: join_time.as_secs_f64() * 1e3,
        joins: joined,
        setup_errors,
        sent_ok,
        send_failed,
        send_wall_s: send_wall.as_secs_f64(),
        messages_per_s: sent_ok as f64 / send_wall.as_secs_f64(),
        send_latency: Summary::of(send_lat),
        received,
        missing: sent_ok.saturating_sub(received),
        duplicates,
        limited_timelines: limited,
        reader_syncs: syncs,
        drain_ms: drain_time.as_secs_f64() * 1e3,
        delivery_latency: Summary::of(delivery),
        ack_to_sync_latency: Summary::of(after_ack),
        synced_before_ack: before_ack,
        initial_sync_ms: initial_syncs
            .iter()
            .map(|d| d.as_secs_f64() * 1e3)
            .collect(),
        initial_sync_bytes,
        server_cpu_s: server_cpu,
        server_cpu_us_per_message: server_cpu
            .filter(|_| sent_ok > 0)
            .map(|c| c * 1e6 / sent_ok as f64),
        server_cpu_cores: server_cpu.map(|c| c / load_wall.as_secs_f64()),
        bench_cpu_s: bench_cpu,
        load_wall_s: load_wall.as_secs_f64(),
        rss_idle_bytes: rss_idle,
        setup_peak_rss_bytes: setup_peak_rss,
        rss_after_register_bytes: rss_after_register,
        rss_before_load_bytes: rss_before_load,
        peak_rss_reset: peak_reset,
        machine_cores_busy,
        idle_cpu_cores,
        loadavg_before,
        rss_end_bytes: rss_end,
        peak_rss_bytes: peak_rss,
        server_threads: threads,
        errors: ctx.errors.list(),
        server_exited: exited.clone(),
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report.to_json()).expect("json")
        );
    } else {
        print!("{}", report.text());
    }

    let failed = exited.is_some() || !report.errors.is_empty() || report.missing > 0;
    if failed && !args.json {
        eprintln!("--- last lines of the server log ---\n{}", srv.log_tail(30));
    }
    if exited.is_none() {
        if let Err(e) = srv.stop().await {
            eprintln!("warning: {e}");
        }
    }
    Ok(if failed {
        std::process::ExitCode::from(2)
    } else {
        std::process::ExitCode::SUCCESS
    })
}

/// Hides a password in a database URL.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

fn errors_text(ctx: &Ctx) -> String {
    ctx.errors
        .list()
        .iter()
        .map(|(phase, status, body, n)| format!("  {n} × {phase}: {status} {body}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn setup_failed(ctx: &Ctx, what: &str) -> String {
    format!("{what} failed:\n{}", errors_text(ctx))
}
