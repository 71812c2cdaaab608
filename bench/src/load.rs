//! The load itself: HTTP workers that register, join, send and long-poll, and the shared
//! error and timing bookkeeping.

use std::{
    collections::{BTreeMap, HashSet},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use tokio::task::JoinSet;

use crate::{setup_failed, READER_FILTER};
/// Distinct error kinds seen, with a count each.
#[derive(Default)]
pub(crate) struct Errors(Mutex<BTreeMap<(String, String, String), u64>>);

impl Errors {
    pub(crate) fn record(&self, phase: &str, status: String, body: String) {
        let mut body = body;
        if body.len() > 400 {
            let mut cut = 400;
            while !body.is_char_boundary(cut) {
                cut -= 1;
            }
            body.truncate(cut);
            body.push('…');
        }
        *self
            .0
            .lock()
            .unwrap()
            .entry((phase.to_owned(), status, body))
            .or_default() += 1;
    }

    pub(crate) fn list(&self) -> Vec<(String, String, String, u64)> {
        let mut v: Vec<_> = self
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|((p, s, b), n)| (p.clone(), s.clone(), b.clone(), *n))
            .collect();
        v.sort_by_key(|e| std::cmp::Reverse(e.3));
        v
    }
}

pub(crate) struct Ctx {
    pub(crate) url: String,
    pub(crate) http: reqwest::Client,
    pub(crate) errors: Errors,
    /// Origin of the microsecond timestamps written into message bodies.
    pub(crate) base: Instant,
}

impl Ctx {
    pub(crate) fn now_us(&self) -> u64 {
        self.base.elapsed().as_micros() as u64
    }

    /// A JSON request; non-2xx answers and transport failures are recorded under `phase`.
    pub(crate) async fn call(
        &self,
        phase: &str,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Option<Value> {
        let mut r = self.http.request(method, format!("{}{path}", self.url));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r.json(b);
        }
        match r.send().await {
            Ok(res) if res.status().is_success() => match res.json().await {
                Ok(v) => Some(v),
                Err(e) => {
                    self.errors.record(phase, "bad body".into(), e.to_string());
                    None
                }
            },
            Ok(res) => {
                let status = res.status().to_string();
                let text = res.text().await.unwrap_or_default();
                self.errors.record(phase, status, text);
                None
            }
            Err(e) => {
                self.errors
                    .record(phase, "transport error".into(), transport(e));
                None
            }
        }
    }
}

/// A transport error and its causes, without the URL (so that errors group by kind).
pub(crate) fn transport(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut out = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// A sender stops after this many failures in a row (the server is likely gone).
const MAX_CONSECUTIVE_FAILURES: u32 = 50;

/// Percent-encodes a path segment.
pub(crate) fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What one room's reader has seen.
#[derive(Default)]
pub(crate) struct ReaderStats {
    pub(crate) received: AtomicU64,
    pub(crate) duplicates: AtomicU64,
    pub(crate) limited: AtomicU64,
    pub(crate) syncs: AtomicU64,
    /// (sender, seq, send start µs, receipt µs) of each first receipt.
    pub(crate) arrivals: Mutex<Vec<(u64, u64, u64, u64)>>,
}

pub(crate) struct Room {
    pub(crate) id: String,
    /// Messages accepted (200) by the server for this room.
    pub(crate) sent_ok: AtomicU64,
    pub(crate) reader: ReaderStats,
}

pub(crate) async fn register_all(
    ctx: &Arc<Ctx>,
    names: &[String],
    concurrency: usize,
) -> Result<Vec<String>, String> {
    let permits = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut set = JoinSet::new();
    for (i, name) in names.iter().enumerate() {
        let (ctx, name, permits) = (ctx.clone(), name.clone(), permits.clone());
        set.spawn(async move {
            let _permit = permits.acquire_owned().await.expect("semaphore");
            let body = json!({
                "username": name,
                "password": format!("bench-{name}-pw"),
                "auth": {"type": "m.login.dummy"},
                "inhibit_login": false,
            });
            let v = ctx
                .call(
                    "register",
                    reqwest::Method::POST,
                    "/_matrix/client/v3/register",
                    None,
                    Some(&body),
                )
                .await;
            (
                i,
                v.and_then(|v| v["access_token"].as_str().map(str::to_owned)),
            )
        });
    }
    let mut tokens = vec![None; names.len()];
    for (i, tok) in set.join_all().await {
        tokens[i] = tok;
    }
    tokens
        .into_iter()
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| setup_failed(ctx, "registration"))
}

/// Joins the rooms one after another; returns how many joins succeeded.
pub(crate) async fn join_rooms(ctx: &Ctx, token: &str, rooms: &[String]) -> usize {
    let mut ok = 0;
    for id in rooms {
        let path = format!("/_matrix/client/v3/join/{}", enc(id));
        if ctx
            .call(
                "join",
                reqwest::Method::POST,
                &path,
                Some(token),
                Some(&json!({})),
            )
            .await
            .is_some()
        {
            ok += 1;
        }
    }
    ok
}

/// Sends up to `count` messages back to back; returns the sender's index, `(seq, start µs,
/// latency µs)` of each accepted message and the number that failed.
pub(crate) async fn sender(
    ctx: &Ctx,
    idx: usize,
    token: &str,
    room: &Room,
    count: usize,
    deadline: Option<Instant>,
) -> (u64, Vec<(u64, u64, u64)>, u64) {
    let base = format!(
        "{}/_matrix/client/v3/rooms/{}/send/m.room.message/",
        ctx.url,
        enc(&room.id)
    );
    let mut lat = Vec::with_capacity(count.min(1 << 20));
    let mut failed = 0;
    let mut in_a_row = 0;
    for seq in 0..count {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        if in_a_row >= MAX_CONSECUTIVE_FAILURES {
            ctx.errors.record(
                "send",
                "sender gave up".into(),
                format!("{MAX_CONSECUTIVE_FAILURES} failures in a row"),
            );
            break;
        }
        in_a_row += 1;
        let t0 = Instant::now();
        let t0_us = t0.duration_since(ctx.base).as_micros() as u64;
        let body = json!({
            "msgtype": "m.text",
            "body": format!("bench {idx} {seq} {t0_us}"),
        });
        let res = ctx
            .http
            .put(format!("{base}b{idx}.{seq}"))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await;
        match res {
            Ok(r) if r.status().is_success() => match r.bytes().await {
                Ok(_) => {
                    in_a_row = 0;
                    lat.push((seq as u64, t0_us, t0.elapsed().as_micros() as u64));
                    room.sent_ok.fetch_add(1, Ordering::SeqCst);
                }
                Err(e) => {
                    failed += 1;
                    ctx.errors
                        .record("send", "transport error".into(), transport(e));
                }
            },
            Ok(r) => {
                failed += 1;
                let status = r.status().to_string();
                ctx.errors
                    .record("send", status, r.text().await.unwrap_or_default());
            }
            Err(e) => {
                failed += 1;
                ctx.errors
                    .record("send", "transport error".into(), transport(e));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    (idx as u64, lat, failed)
}

/// Long-polls `/sync` for one room until aborted, recording when each bench message arrives.
pub(crate) async fn reader(ctx: &Ctx, token: &str, room: &Room, mut since: String) {
    let url = format!("{}/_matrix/client/v3/sync", ctx.url);
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    loop {
        let res = ctx
            .http
            .get(&url)
            .query(&[
                ("since", since.as_str()),
                ("timeout", "30000"),
                ("filter", READER_FILTER),
            ])
            .bearer_auth(token)
            .timeout(Duration::from_secs(90))
            .send()
            .await;
        let v: Value = match res {
            Ok(r) if r.status().is_success() => match r.json().await {
                Ok(v) => v,
                Err(e) => {
                    ctx.errors.record("sync", "bad body".into(), e.to_string());
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            Ok(r) => {
                let status = r.status().to_string();
                ctx.errors
                    .record("sync", status, r.text().await.unwrap_or_default());
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            Err(e) => {
                ctx.errors
                    .record("sync", "transport error".into(), transport(e));
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let now = ctx.now_us();
        room.reader.syncs.fetch_add(1, Ordering::Relaxed);
        let Some(next) = v["next_batch"].as_str() else {
            ctx.errors.record(
                "sync",
                "200 without next_batch".into(),
                v.to_string().chars().take(400).collect(),
            );
            return;
        };
        since = next.to_owned();
        let timeline = &v["rooms"]["join"][&room.id]["timeline"];
        if timeline["limited"].as_bool() == Some(true) {
            room.reader.limited.fetch_add(1, Ordering::Relaxed);
        }
        let Some(events) = timeline["events"].as_array() else {
            continue;
        };
        let mut got = Vec::new();
        for ev in events {
            if ev["type"] != "m.room.message" {
                continue;
            }
            let Some(body) = ev["content"]["body"].as_str() else {
                continue;
            };
            let mut parts = body.split(' ');
            if parts.next() != Some("bench") {
                continue;
            }
            let nums: Vec<u64> = parts.filter_map(|p| p.parse().ok()).collect();
            let [idx, seq, t0] = nums[..] else {
                continue;
            };
            if seen.insert((idx, seq)) {
                got.push((idx, seq, t0, now));
            } else {
                room.reader.duplicates.fetch_add(1, Ordering::Relaxed);
            }
        }
        if !got.is_empty() {
            let n = got.len() as u64;
            room.reader.arrivals.lock().unwrap().extend(got);
            room.reader.received.fetch_add(n, Ordering::SeqCst);
        }
    }
}
