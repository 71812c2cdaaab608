//! Scenarios that measure how cost grows: an account in many rooms (`rooms`), and one room
//! with many members (`big-room`). Each spawns the real server, builds the scene over HTTP,
//! then measures wall time, server CPU (from `/proc`) and peak RSS.
//!
//! Server CPU of one kind of request is measured over many of them: `/proc` counts in 10 ms
//! ticks. Where a request cannot be made without another (a sync that sees one changed
//! room needs a message sent first), the CPU of the other alone is measured separately
//! and subtracted.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use clap::Args;
use serde_json::{json, Value};
use tokio::task::JoinSet;

use crate::{
    load::{enc, register_all, Ctx},
    server::{self, Server},
    setup_failed, Common,
};

#[derive(Args, Debug)]
pub struct RoomsArgs {
    #[command(flatten)]
    common: Common,
    /// Rooms the account is in.
    #[arg(long, default_value_t = 1000)]
    rooms: usize,
    /// Members of each room, the account included.
    #[arg(long, default_value_t = 5)]
    members: usize,
    /// Messages sent into each room before measuring.
    #[arg(long, default_value_t = 20)]
    messages: usize,
    /// Incremental syncs measured, each after one message in one room.
    #[arg(long, default_value_t = 200)]
    incremental: usize,
    /// Seconds to wait after setup, before measuring (to attach a profiler).
    #[arg(long, default_value_t = 0.0)]
    pause: f64,
    /// Initial syncs measured.
    #[arg(long, default_value_t = 3)]
    initial: usize,
}

#[derive(Args, Debug)]
pub struct BigRoomArgs {
    #[command(flatten)]
    common: Common,
    /// Members of the room.
    #[arg(long, default_value_t = 10_000)]
    members: usize,
    /// Concurrent senders for the throughput phase.
    #[arg(long, default_value_t = 20)]
    senders: usize,
    /// Messages each sender sends.
    #[arg(long, default_value_t = 100)]
    messages: usize,
    /// Incremental syncs measured, each after one message.
    #[arg(long, default_value_t = 200)]
    incremental: usize,
    /// Seconds to wait after the joins, before measuring (to attach a profiler).
    #[arg(long, default_value_t = 0.0)]
    pause: f64,
}

#[derive(Args, Debug)]
pub struct SearchArgs {
    #[command(flatten)]
    common: Common,
    /// Messages in the room's history.
    #[arg(long, default_value_t = 100_000)]
    messages: usize,
    /// Concurrent senders while filling the history.
    #[arg(long, default_value_t = 20)]
    senders: usize,
    /// Searches measured per term and order.
    #[arg(long, default_value_t = 20)]
    searches: usize,
}

/// Lazy-loaded members and 10 events per room: what Element asks for.
const CLIENT_FILTER: &str =
    r#"{"room":{"timeline":{"limit":10},"state":{"lazy_load_members":true}}}"#;

struct Scene {
    srv: Server,
    ctx: Arc<Ctx>,
}

async fn start(common: &Common) -> Result<Scene, String> {
    let http = reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_idle_timeout(None)
        .build()
        .map_err(|e| format!("http client: {e}"))?;
    let bin = common
        .server_bin
        .clone()
        .unwrap_or_else(server::default_server_bin);
    let srv = Server::spawn_with(
        &bin,
        common.database_url.as_deref(),
        !common.no_rate_limits,
        // Thousands of registrations: argon2 at its minimum cost (bench only).
        &[("TESSERA_BENCH__INSECURE_FAST_PASSWORD_HASHING", "true")],
        &http,
    )
    .await?;
    let ctx = Arc::new(Ctx {
        url: srv.url.clone(),
        http,
        errors: Default::default(),
        base: Instant::now(),
    });
    Ok(Scene { srv, ctx })
}

/// Runs `f` for every item with `concurrency` in flight; counts the `true`s.
async fn each<T, F, Fut>(items: Vec<T>, concurrency: usize, f: F) -> usize
where
    T: Send + 'static,
    F: Fn(T) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let f = Arc::new(f);
    let permits = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut set = JoinSet::new();
    for item in items {
        let (f, permits) = (f.clone(), permits.clone());
        set.spawn(async move {
            let _p = permits.acquire_owned().await.ok();
            f(item).await
        });
    }
    set.join_all().await.into_iter().filter(|ok| *ok).count()
}

async fn create_room(ctx: &Ctx, token: &str) -> Result<String, String> {
    let v = ctx
        .call(
            "createRoom",
            reqwest::Method::POST,
            "/_matrix/client/v3/createRoom",
            Some(token),
            Some(&json!({ "preset": "public_chat" })),
        )
        .await
        .ok_or_else(|| setup_failed(ctx, "createRoom"))?;
    Ok(v["room_id"].as_str().ok_or("no room_id")?.to_owned())
}

async fn join(ctx: &Ctx, token: &str, room: &str) -> bool {
    ctx.call(
        "join",
        reqwest::Method::POST,
        &format!("/_matrix/client/v3/join/{}", enc(room)),
        Some(token),
        Some(&json!({})),
    )
    .await
    .is_some()
}

async fn send(ctx: &Ctx, token: &str, room: &str, txn: &str) -> bool {
    ctx.call(
        "send",
        reqwest::Method::PUT,
        &format!(
            "/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}",
            enc(room)
        ),
        Some(token),
        Some(&json!({ "msgtype": "m.text", "body": format!("bench {txn}") })),
    )
    .await
    .is_some()
}

/// A sync; returns (wall time, response bytes, body).
async fn sync(ctx: &Ctx, token: &str, query: &str) -> Result<(Duration, usize, Value), String> {
    let t = Instant::now();
    let res = ctx
        .http
        .get(format!("{}/_matrix/client/v3/sync?{query}", ctx.url))
        .bearer_auth(token)
        .timeout(Duration::from_secs(120))
        .send()
        .await
        .map_err(|e| format!("sync: {e}"))?;
    if !res.status().is_success() {
        return Err(format!("sync: {}", res.status()));
    }
    let bytes = res.bytes().await.map_err(|e| format!("sync: {e}"))?;
    let took = t.elapsed();
    let body: Value = serde_json::from_slice(&bytes).map_err(|e| format!("sync: {e}"))?;
    Ok((took, bytes.len(), body))
}

/// A sliding sync request (MSC4186); returns (wall time, response bytes, body).
async fn sliding(
    ctx: &Ctx,
    token: &str,
    pos: Option<&str>,
    body: &Value,
) -> Result<(Duration, usize, Value), String> {
    let mut url = format!(
        "{}/_matrix/client/unstable/org.matrix.simplified_msc3575/sync",
        ctx.url
    );
    if let Some(p) = pos {
        url.push_str(&format!("?pos={}&timeout=0", enc(p)));
    }
    let t = Instant::now();
    let res = ctx
        .http
        .post(url)
        .bearer_auth(token)
        .json(body)
        .timeout(Duration::from_secs(120))
        .send()
        .await
        .map_err(|e| format!("sliding sync: {e}"))?;
    if !res.status().is_success() {
        return Err(format!("sliding sync: {}", res.status()));
    }
    let bytes = res
        .bytes()
        .await
        .map_err(|e| format!("sliding sync: {e}"))?;
    let took = t.elapsed();
    let body: Value = serde_json::from_slice(&bytes).map_err(|e| format!("sliding sync: {e}"))?;
    Ok((took, bytes.len(), body))
}

/// What Element X's room list asks for (matrix-sdk-ui 0.18's `RoomListService`): one list
/// over `range`, a timeline of one event, its required state, the e2ee and to-device
/// extensions on another connection (here: on this one).
fn room_list_request(range: usize) -> Value {
    json!({
        "conn_id": "room-list",
        "lists": { "all_rooms": {
            "ranges": [[0, range]],
            "timeline_limit": 1,
            "required_state": [
                ["m.room.name", ""], ["m.room.encryption", ""], ["m.room.member", "$LAZY"],
                ["m.room.member", "$ME"], ["m.room.topic", ""], ["m.room.avatar", ""],
                ["m.room.canonical_alias", ""], ["m.room.power_levels", ""], ["org.matrix.msc3401.call.member", "*"],
                ["m.room.join_rules", ""], ["m.room.tombstone", ""], ["m.room.create", ""],
                ["m.room.history_visibility", ""], ["io.element.functional_members", ""],
                ["m.space.parent", "*"], ["m.space.child", "*"], ["org.matrix.msc3672.beacon_info", "*"]
            ],
        } },
        "extensions": {
            "account_data": { "enabled": true }, "receipts": { "enabled": true, "rooms": ["*"] },
            "typing": { "enabled": true }
        }
    })
}

pub(crate) async fn login(ctx: &Ctx, name: &str) -> Result<String, String> {
    let v = ctx
        .call(
            "login",
            reqwest::Method::POST,
            "/_matrix/client/v3/login",
            None,
            Some(&json!({
                "type": "m.login.password",
                "identifier": { "type": "m.id.user", "user": name },
                "password": format!("bench-{name}-pw"),
            })),
        )
        .await
        .ok_or_else(|| setup_failed(ctx, "login"))?;
    Ok(v["access_token"].as_str().ok_or("no token")?.to_owned())
}

fn next_batch(body: &Value) -> Result<String, String> {
    Ok(body["next_batch"]
        .as_str()
        .ok_or("no next_batch")?
        .to_owned())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn mib(kb: Option<u64>) -> String {
    kb.map_or("?".into(), |b| {
        format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
    })
}

/// CPU seconds of the server spent in `f`.
async fn cpu_of<F: std::future::Future<Output = R>, R>(pid: u32, f: F) -> (R, Option<f64>) {
    let before = server::cpu_seconds(pid);
    let r = f.await;
    let after = server::cpu_seconds(pid);
    (r, before.zip(after).map(|(a, b)| b - a))
}

pub async fn rooms(args: RoomsArgs) -> Result<std::process::ExitCode, String> {
    let scene = start(&args.common).await?;
    let (ctx, pid) = (scene.ctx.clone(), scene.srv.pid);
    let tag = std::process::id();
    let others = (args.members.max(2) - 1).max(1) * 2;
    eprintln!(
        "account in {} rooms, {} members each, {} messages each",
        args.rooms, args.members, args.messages
    );
    let t = Instant::now();
    let mut names = vec![format!("acct_{tag}")];
    names.extend((0..others).map(|i| format!("m{i}_{tag}")));
    let tokens = register_all(&ctx, &names, 8).await?;
    let (account, members) = (tokens[0].clone(), tokens[1..].to_vec());
    let mut rooms = Vec::new();
    for _ in 0..args.rooms {
        rooms.push(create_room(&ctx, &account).await?);
    }
    // Room i's other members: a window of the member pool.
    let per_room = args.members.max(1) - 1;
    let mut joins = Vec::new();
    for (i, room) in rooms.iter().enumerate() {
        for k in 0..per_room {
            joins.push((members[(i + k) % members.len()].clone(), room.clone()));
        }
    }
    let c = ctx.clone();
    let n = joins.len();
    if each(joins, 8, move |(tok, room)| {
        let c = c.clone();
        async move { join(&c, &tok, &room).await }
    })
    .await
        != n
    {
        return Err(setup_failed(&ctx, "joins"));
    }
    let mut sends = Vec::new();
    for (i, room) in rooms.iter().enumerate() {
        for m in 0..args.messages {
            let tok = if per_room == 0 {
                account.clone()
            } else {
                members[(i + m % per_room) % members.len()].clone()
            };
            sends.push((tok, room.clone(), format!("s{i}_{m}")));
        }
    }
    let c = ctx.clone();
    let n = sends.len();
    if each(sends, 8, move |(tok, room, txn)| {
        let c = c.clone();
        async move { send(&c, &tok, &room, &txn).await }
    })
    .await
        != n
    {
        return Err(setup_failed(&ctx, "messages"));
    }
    let setup = t.elapsed();
    server::reset_peak_rss(pid);
    if args.pause > 0.0 {
        eprintln!("server pid {pid}: measuring in {} s", args.pause);
        tokio::time::sleep(Duration::from_secs_f64(args.pause)).await;
    }

    if server::analyze(args.common.database_url.as_deref()).await? {
        eprintln!("PostgreSQL statistics refreshed (ANALYZE)");
    }
    // Initial syncs, each on a fresh device (nothing cached for it).
    let filter = enc(CLIENT_FILTER);
    let mut initial = Vec::new();
    let mut initial_cpu = Vec::new();
    let mut initial_bytes = 0;
    let mut since = String::new();
    for _ in 0..args.initial.max(1) {
        let device = login(&ctx, &names[0]).await?;
        let (r, cpu) = cpu_of(pid, sync(&ctx, &device, &format!("filter={filter}"))).await;
        let (took, bytes, body) = r?;
        initial.push(ms(took));
        initial_cpu.extend(cpu.map(|c| c * 1e3));
        initial_bytes = bytes;
        since = next_batch(&body)?;
    }
    let joined = sync(&ctx, &account, &format!("filter={filter}")).await?.2["rooms"]["join"]
        .as_object()
        .map_or(0, |j| j.len());

    // Incremental syncs with one room changed: one message, then the account's sync. Room
    // i's first other member (or the account, alone in its rooms) sends.
    let sender_of = |i: usize| {
        if per_room == 0 {
            account.clone()
        } else {
            members[i % members.len()].clone()
        }
    };
    let (sends_ok, sends_cpu) = cpu_of(pid, async {
        let mut ok = 0;
        for i in 0..args.incremental {
            let r = i % rooms.len();
            ok += usize::from(send(&ctx, &sender_of(r), &rooms[r], &format!("a{i}")).await);
        }
        ok
    })
    .await;
    let (_, _, body) = sync(&ctx, &account, &format!("since={since}&filter={filter}")).await?;
    since = next_batch(&body)?;
    let mut lat = Vec::new();
    let mut changed_rooms = 0usize;
    let (r, both_cpu) = cpu_of(pid, async {
        for i in 0..args.incremental {
            let r = (i * 7 + 3) % rooms.len();
            if !send(&ctx, &sender_of(r), &rooms[r], &format!("b{i}")).await {
                return Err(setup_failed(&ctx, "send"));
            }
            let (took, _, body) =
                sync(&ctx, &account, &format!("since={since}&filter={filter}")).await?;
            changed_rooms += body["rooms"]["join"].as_object().map_or(0, |j| j.len());
            since = next_batch(&body)?;
            lat.push(ms(took));
        }
        Ok::<_, String>(())
    })
    .await;
    r?;
    let per_sync_cpu = both_cpu
        .zip(sends_cpu)
        .map(|(b, s)| (b - s).max(0.0) * 1e6 / args.incremental.max(1) as f64);

    // After the sender's 200, how long until a parked long-poll answers.
    let mut after_200 = Vec::new();
    for i in 0..args.incremental.min(100) {
        let r = (i * 13 + 1) % rooms.len();
        let (room, sender) = (rooms[r].clone(), sender_of(r));
        let q = format!("since={since}&filter={filter}&timeout=30000");
        let (c, a) = (ctx.clone(), account.clone());
        let poll = tokio::spawn(async move { sync(&c, &a, &q).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        if !send(&ctx, &sender, &room, &format!("c{i}")).await {
            return Err(setup_failed(&ctx, "send"));
        }
        let acked = Instant::now();
        let (_, _, body) = poll.await.map_err(|e| e.to_string())??;
        after_200.push(ms(acked.elapsed()));
        since = next_batch(&body)?;
    }
    // Sliding sync (MSC4186), as Element X's room list does it: the first request on a
    // fresh device ([0, 19]), the list grown to every room, then one room changed.
    let device = login(&ctx, &names[0]).await?;
    let (r, first_cpu) = cpu_of(pid, sliding(&ctx, &device, None, &room_list_request(19))).await;
    let (first_took, first_bytes, body) = r?;
    let mut pos = body["pos"].as_str().unwrap_or_default().to_owned();
    let all = args.rooms.saturating_sub(1);
    let (r, grow_cpu) = cpu_of(
        pid,
        sliding(&ctx, &device, Some(&pos), &room_list_request(all)),
    )
    .await;
    let (grow_took, grow_bytes, body) = r?;
    let listed = body["lists"]["all_rooms"]["count"].as_u64().unwrap_or(0);
    pos = body["pos"].as_str().unwrap_or_default().to_owned();
    let (sends_ok2, sends_cpu2) = cpu_of(pid, async {
        let mut ok = 0;
        for i in 0..args.incremental {
            let r = (i * 11 + 5) % rooms.len();
            ok += usize::from(send(&ctx, &sender_of(r), &rooms[r], &format!("d{i}")).await);
        }
        ok
    })
    .await;
    let (_, _, body) = sliding(&ctx, &device, Some(&pos), &room_list_request(all)).await?;
    pos = body["pos"].as_str().unwrap_or_default().to_owned();
    let mut ss_lat = Vec::new();
    let mut ss_rooms = 0usize;
    let mut ss_bytes = 0usize;
    let (r, ss_cpu) = cpu_of(pid, async {
        for i in 0..args.incremental {
            let r = (i * 7 + 3) % rooms.len();
            if !send(&ctx, &sender_of(r), &rooms[r], &format!("e{i}")).await {
                return Err(setup_failed(&ctx, "send"));
            }
            let (took, bytes, body) =
                sliding(&ctx, &device, Some(&pos), &room_list_request(all)).await?;
            ss_rooms += body["rooms"].as_object().map_or(0, |j| j.len());
            ss_bytes += bytes;
            pos = body["pos"].as_str().unwrap_or_default().to_owned();
            ss_lat.push(ms(took));
        }
        Ok::<_, String>(())
    })
    .await;
    r?;
    let ss_cpu_us = ss_cpu
        .zip(sends_cpu2)
        .map(|(b, s)| (b - s).max(0.0) * 1e6 / args.incremental.max(1) as f64);
    let n = args.incremental.max(1) as f64;
    let peak = server::status_kb(pid, "VmHWM");

    let report = json!({
        "scenario": "rooms",
        "sliding_first_ms": ms(first_took), "sliding_first_cpu_ms": first_cpu.map(|c| c * 1e3),
        "sliding_first_bytes": first_bytes,
        "sliding_all_ms": ms(grow_took), "sliding_all_cpu_ms": grow_cpu.map(|c| c * 1e3),
        "sliding_all_bytes": grow_bytes, "sliding_listed": listed,
        "sliding_incremental_ms_p50": percentile(&mut ss_lat.clone(), 0.5),
        "sliding_incremental_ms_p95": percentile(&mut ss_lat.clone(), 0.95),
        "sliding_incremental_cpu_us": ss_cpu_us,
        "sliding_incremental_rooms": ss_rooms as f64 / n,
        "sliding_incremental_bytes": ss_bytes as f64 / n,
        "sliding_sends_ok": sends_ok2,
        "rooms": args.rooms, "members": args.members, "messages_per_room": args.messages,
        "setup_s": setup.as_secs_f64(),
        "rooms_in_initial_sync": joined,
        "initial_sync_ms": initial, "initial_sync_cpu_ms": initial_cpu, "initial_sync_bytes": initial_bytes,
        "incremental_syncs": args.incremental, "incremental_sends_ok": sends_ok,
        "incremental_sync_ms_p50": percentile(&mut lat.clone(), 0.5),
        "incremental_sync_ms_p95": percentile(&mut lat.clone(), 0.95),
        "incremental_sync_cpu_us": per_sync_cpu,
        "incremental_rooms_per_sync": changed_rooms as f64 / args.incremental.max(1) as f64,
        "after_200_ms_p50": percentile(&mut after_200.clone(), 0.5),
        "after_200_ms_p95": percentile(&mut after_200.clone(), 0.95),
        "peak_rss_kb": peak,
        "errors": ctx.errors.list().len(),
    });
    finish(scene, &args.common, report, |r| {
        format!(
            "== tessera-bench rooms ==\n\
             scene:          an account in {} rooms ({} members, {} messages each); setup {:.1} s\n\
             initial /sync:  {} ms wall; {} ms server CPU; {} bytes; {} rooms (filter: timeline 10, lazy members)\n\
             incremental:    {:.2} ms p50, {:.2} ms p95 wall; {} µs server CPU per sync; {:.2} rooms per sync\n\
             after the 200:  {:.2} ms p50, {:.2} ms p95 (long-poll answered after the sender's 200)\n\
             sliding sync:   first request [0,19] {:.1} ms wall, {} ms CPU, {} bytes; grown to all {} rooms {:.1} ms wall, {} ms CPU, {} bytes\n\
             sliding incr.:  {:.2} ms p50, {:.2} ms p95 wall; {} µs server CPU; {:.2} rooms, {:.0} bytes per answer\n\
             peak RSS:       {} (after setup)\n",
            r["rooms"], r["members"], r["messages_per_room"], r["setup_s"].as_f64().unwrap_or(0.0),
            list(&r["initial_sync_ms"]), list(&r["initial_sync_cpu_ms"]), r["initial_sync_bytes"], r["rooms_in_initial_sync"],
            r["incremental_sync_ms_p50"].as_f64().unwrap_or(0.0), r["incremental_sync_ms_p95"].as_f64().unwrap_or(0.0),
            r["incremental_sync_cpu_us"].as_f64().map_or("?".into(), |v| format!("{v:.0}")),
            r["incremental_rooms_per_sync"].as_f64().unwrap_or(0.0),
            r["after_200_ms_p50"].as_f64().unwrap_or(0.0), r["after_200_ms_p95"].as_f64().unwrap_or(0.0),
            r["sliding_first_ms"].as_f64().unwrap_or(0.0),
            r["sliding_first_cpu_ms"].as_f64().map_or("?".into(), |v| format!("{v:.1}")),
            r["sliding_first_bytes"], r["sliding_listed"],
            r["sliding_all_ms"].as_f64().unwrap_or(0.0),
            r["sliding_all_cpu_ms"].as_f64().map_or("?".into(), |v| format!("{v:.1}")),
            r["sliding_all_bytes"],
            r["sliding_incremental_ms_p50"].as_f64().unwrap_or(0.0), r["sliding_incremental_ms_p95"].as_f64().unwrap_or(0.0),
            r["sliding_incremental_cpu_us"].as_f64().map_or("?".into(), |v| format!("{v:.0}")),
            r["sliding_incremental_rooms"].as_f64().unwrap_or(0.0), r["sliding_incremental_bytes"].as_f64().unwrap_or(0.0),
            mib(r["peak_rss_kb"].as_u64()),
        )
    })
    .await
}

pub async fn big_room(args: BigRoomArgs) -> Result<std::process::ExitCode, String> {
    let scene = start(&args.common).await?;
    let (ctx, pid) = (scene.ctx.clone(), scene.srv.pid);
    let tag = std::process::id();
    eprintln!("one room, {} members", args.members);
    let t = Instant::now();
    let names: Vec<String> = (0..args.members.max(2))
        .map(|i| format!("b{i}_{tag}"))
        .collect();
    let tokens = register_all(&ctx, &names, 8).await?;
    let register = t.elapsed();
    let room = create_room(&ctx, &tokens[0]).await?;
    // Joins one after another, so each one's latency is its own.
    let t = Instant::now();
    let mut join_ms = Vec::with_capacity(tokens.len());
    for tok in &tokens[1..] {
        let j = Instant::now();
        if !join(&ctx, tok, &room).await {
            return Err(setup_failed(&ctx, "join"));
        }
        join_ms.push(ms(j.elapsed()));
    }
    let joins = t.elapsed();
    server::reset_peak_rss(pid);
    if args.pause > 0.0 {
        eprintln!("server pid {pid}: measuring in {} s", args.pause);
        tokio::time::sleep(Duration::from_secs_f64(args.pause)).await;
    }

    // Throughput: concurrent senders, one member long-polling meanwhile.
    let reader = tokens[tokens.len() - 1].clone();
    let (_, _, body) = sync(&ctx, &reader, &format!("filter={}", enc(CLIENT_FILTER))).await?;
    let mut since = next_batch(&body)?;
    let t = Instant::now();
    let (sent, send_cpu) = cpu_of(pid, async {
        let mut set = JoinSet::new();
        for s in 0..args.senders {
            let (c, tok, room) = (ctx.clone(), tokens[s % tokens.len()].clone(), room.clone());
            let n = args.messages;
            set.spawn(async move {
                let mut ok = 0usize;
                for m in 0..n {
                    ok += usize::from(send(&c, &tok, &room, &format!("t{s}_{m}")).await);
                }
                ok
            });
        }
        set.join_all().await.into_iter().sum::<usize>()
    })
    .await;
    let send_wall = t.elapsed();

    // A member's incremental sync after one message each.
    let filter = enc(CLIENT_FILTER);
    let (_, _, body) = sync(&ctx, &reader, &format!("since={since}&filter={filter}")).await?;
    since = next_batch(&body)?;
    let sender = tokens[0].clone();
    let (extra, sends_cpu) = cpu_of(pid, async {
        let mut ok = 0usize;
        for i in 0..args.incremental {
            ok += usize::from(send(&ctx, &sender, &room, &format!("x{i}")).await);
        }
        ok
    })
    .await;
    let (_, _, body) = sync(&ctx, &reader, &format!("since={since}&filter={filter}")).await?;
    since = next_batch(&body)?;
    let mut lat = Vec::new();
    let mut more = 0usize;
    let (r, both_cpu) = cpu_of(pid, async {
        for i in 0..args.incremental {
            more += usize::from(send(&ctx, &sender, &room, &format!("y{i}")).await);
            let (took, _, body) =
                sync(&ctx, &reader, &format!("since={since}&filter={filter}")).await?;
            since = next_batch(&body)?;
            lat.push(ms(took));
        }
        Ok::<_, String>(())
    })
    .await;
    r?;
    // Every message notifies the member (the default rules; they never sent a receipt):
    // their count must be exactly the messages of the others that landed.
    let (_, _, body) = sync(&ctx, &reader, &format!("filter={filter}")).await?;
    let counted = body["rooms"]["join"][&room]["unread_notifications"]["notification_count"]
        .as_u64()
        .unwrap_or(0);
    let expected = (sent + extra + more) as u64;
    let per_sync_cpu = both_cpu
        .zip(sends_cpu)
        .map(|(b, s)| (b - s).max(0.0) * 1e6 / args.incremental.max(1) as f64);
    let peak = server::status_kb(pid, "VmHWM");
    let report = json!({
        "scenario": "big-room",
        "members": args.members,
        "register_s": register.as_secs_f64(),
        "joins_s": joins.as_secs_f64(),
        "join_ms_p50": percentile(&mut join_ms.clone(), 0.5),
        "join_ms_p95": percentile(&mut join_ms.clone(), 0.95),
        "join_ms_last_1000_p50": percentile(&mut join_ms[join_ms.len().saturating_sub(1000)..].to_vec(), 0.5),
        "messages_sent": sent,
        "messages_per_s": sent as f64 / send_wall.as_secs_f64(),
        "send_cpu_us_per_message": send_cpu.map(|c| c * 1e6 / sent.max(1) as f64),
        "incremental_sync_ms_p50": percentile(&mut lat.clone(), 0.5),
        "incremental_sync_cpu_us": per_sync_cpu,
        "peak_rss_kb": peak,
        "unread_counted": counted,
        "unread_expected": expected,
        "errors": ctx.errors.list().len(),
    });
    finish(scene, &args.common, report, |r| {
        format!(
            "== tessera-bench big-room ==\n\
             scene:          one room of {} members; {:.1} s to register, {:.1} s to join\n\
             join:           {:.2} ms p50, {:.2} ms p95 (last 1,000 joins: {:.2} ms p50)\n\
             sending:        {:.0} messages/s with {} senders ({} sent); {} µs server CPU per message\n\
             member's sync:  {:.2} ms p50 wall; {} µs server CPU per incremental sync\n\
             unread count:   {} notifications for the member, {} expected: {}\n\
             peak RSS:       {} (after the joins)\n",
            r["members"], r["register_s"].as_f64().unwrap_or(0.0), r["joins_s"].as_f64().unwrap_or(0.0),
            r["join_ms_p50"].as_f64().unwrap_or(0.0), r["join_ms_p95"].as_f64().unwrap_or(0.0),
            r["join_ms_last_1000_p50"].as_f64().unwrap_or(0.0),
            r["messages_per_s"].as_f64().unwrap_or(0.0), args.senders, r["messages_sent"],
            r["send_cpu_us_per_message"].as_f64().map_or("?".into(), |v| format!("{v:.0}")),
            r["incremental_sync_ms_p50"].as_f64().unwrap_or(0.0),
            r["incremental_sync_cpu_us"].as_f64().map_or("?".into(), |v| format!("{v:.0}")),
            r["unread_counted"], r["unread_expected"],
            if r["unread_counted"] == r["unread_expected"] { "exact" } else { "WRONG" },
            mib(r["peak_rss_kb"].as_u64()),
        )
    })
    .await
}

/// The body of history message `i`: every one says "message"; `topic{i % 100}` is in 1%
/// of them, "needle" in one in 10,000.
fn history_body(i: usize) -> String {
    let needle = if i.is_multiple_of(10_000) {
        " needle"
    } else {
        ""
    };
    format!("message {i} about topic{} and more words{needle}", i % 100)
}

pub async fn search(args: SearchArgs) -> Result<std::process::ExitCode, String> {
    let scene = start(&args.common).await?;
    let (ctx, pid) = (scene.ctx.clone(), scene.srv.pid);
    let tag = std::process::id();
    let names: Vec<String> = (0..args.senders.max(1))
        .map(|i| format!("s{i}_{tag}"))
        .collect();
    let tokens = register_all(&ctx, &names, 8).await?;
    let room = create_room(&ctx, &tokens[0]).await?;
    for tok in &tokens[1..] {
        if !join(&ctx, tok, &room).await {
            return Err(setup_failed(&ctx, "join"));
        }
    }
    eprintln!("filling a history of {} messages", args.messages);
    let t = Instant::now();
    let mut set = JoinSet::new();
    let per = args.messages.div_ceil(args.senders.max(1));
    for (s, tok) in tokens.iter().enumerate() {
        let (c, tok, room) = (ctx.clone(), tok.clone(), room.clone());
        let total = args.messages;
        set.spawn(async move {
            let mut ok = 0usize;
            for m in 0..per {
                let i = s * per + m;
                if i >= total {
                    break;
                }
                let path = format!(
                    "/_matrix/client/v3/rooms/{}/send/m.room.message/h{i}",
                    enc(&room)
                );
                let body = json!({ "msgtype": "m.text", "body": history_body(i) });
                ok += usize::from(
                    c.call("send", reqwest::Method::PUT, &path, Some(&tok), Some(&body))
                        .await
                        .is_some(),
                );
            }
            ok
        });
    }
    let sent = set.join_all().await.into_iter().sum::<usize>();
    let fill = t.elapsed();
    server::reset_peak_rss(pid);
    let searcher = tokens[0].clone();
    let mut rows = Vec::new();
    for term in ["needle", "topic7", "message"] {
        for order in ["rank", "recent"] {
            let mut lat = Vec::new();
            let mut count = 0;
            let (r, cpu) = cpu_of(pid, async {
                for _ in 0..args.searches {
                    let body = json!({ "search_categories": { "room_events": { "search_term": term, "order_by": order } } });
                    let t = Instant::now();
                    let res = ctx
                        .call("search", reqwest::Method::POST, "/_matrix/client/v3/search", Some(&searcher), Some(&body))
                        .await
                        .ok_or_else(|| setup_failed(&ctx, "search"))?;
                    lat.push(ms(t.elapsed()));
                    count = res["search_categories"]["room_events"]["count"].as_u64().unwrap_or(0);
                }
                Ok::<_, String>(())
            })
            .await;
            r?;
            rows.push(json!({
                "term": term, "order": order, "count": count,
                "ms_p50": percentile(&mut lat.clone(), 0.5),
                "ms_p95": percentile(&mut lat.clone(), 0.95),
                "cpu_us": cpu.map(|c| c * 1e6 / args.searches.max(1) as f64),
            }));
        }
    }
    let report = json!({
        "scenario": "search",
        "messages": sent,
        "fill_s": fill.as_secs_f64(),
        "searches": rows,
        "peak_rss_kb": server::status_kb(pid, "VmHWM"),
        "errors": ctx.errors.list().len(),
    });
    finish(scene, &args.common, report, |r| {
        let mut out = format!(
            "== tessera-bench search ==\nscene:          one room, {} messages ({:.1} s to send)\n",
            r["messages"], r["fill_s"].as_f64().unwrap_or(0.0)
        );
        for s in r["searches"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "search:         {:<8} by {:<6} {:>6} results counted: {:.2} ms p50, {:.2} ms p95, {} µs server CPU\n",
                s["term"].as_str().unwrap_or(""), s["order"].as_str().unwrap_or(""), s["count"],
                s["ms_p50"].as_f64().unwrap_or(0.0), s["ms_p95"].as_f64().unwrap_or(0.0),
                s["cpu_us"].as_f64().map_or("?".into(), |v| format!("{v:.0}")),
            ));
        }
        out.push_str(&format!("peak RSS:       {} (while searching)\n", mib(r["peak_rss_kb"].as_u64())));
        out
    })
    .await
}

fn list(v: &Value) -> String {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_f64)
                .map(|x| format!("{x:.1}"))
                .collect::<Vec<_>>()
                .join(" / ")
        })
        .unwrap_or_default()
}

async fn finish(
    mut scene: Scene,
    common: &Common,
    report: Value,
    text: impl Fn(&Value) -> String,
) -> Result<std::process::ExitCode, String> {
    let errors = scene.ctx.errors.list();
    if common.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        print!("{}", text(&report));
        for (phase, status, body, n) in &errors {
            println!("error:          {n} × {phase}: {status} {body}");
        }
    }
    let exited = scene.srv.exited();
    if exited.is_none() {
        if let Err(e) = scene.srv.stop().await {
            eprintln!("warning: {e}");
        }
    }
    Ok(if errors.is_empty() && exited.is_none() {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::from(2)
    })
}
