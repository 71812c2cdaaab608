//! `/sync` (spec: client-server API, "Syncing"). A token is a position in the one global
//! stream plus the typing serial; everything committed at or below the position has been
//! delivered.

pub mod account_data;
pub mod filter;
pub mod legacy;
pub mod rooms;
pub mod sliding;
pub mod token;
pub mod typing;

use std::time::Duration;

use ruma::{DeviceId, UserId};
use serde_json::{json, Value as Json};

pub use token::SyncToken;

use crate::{Homeserver, Result};

pub struct SyncRequest {
    pub since: Option<SyncToken>,
    pub full_state: bool,
    pub timeout_ms: u64,
    pub filter: filter::SyncFilter,
    pub use_state_after: bool,
    /// `set_presence`: the presence syncing marks the user with, if any.
    pub set_presence: Option<&'static str>,
    /// Whether the answer carries (and `since` acknowledges) the device's to-device
    /// messages: not for the deprecated endpoints, whose answers have no place for them.
    pub to_device: bool,
}

impl Homeserver {
    /// Long-polls until something for `user` moves past `since`, or the timeout.
    /// The response is JSON text: built room by room, never as one tree, into one buffer
    /// that is never copied (a full sync of a big account is megabytes).
    pub async fn sync(&self, user: &UserId, device: &DeviceId, req: SyncRequest) -> Result<String> {
        let mut req = req;
        req.filter.timeline.ignoring(self.ignored_users(user));
        if let Some(state) = req.set_presence {
            self.mark_active(user, state).await?;
        }
        let timeout = req.timeout_ms.min(self.config.max_sync_timeout_ms);
        let deadline = self.clock.now_ms() + timeout;
        // A `since` acknowledges every to-device message before it (spec: "Send-to-Device").
        if let Some(since) = req.since.filter(|_| req.to_device) {
            self.ack_to_device(user, device, since.pos.min(self.current_pos()))
                .await?;
        }
        let _syncing = self.start_syncing(user);
        let mut seen = 0;
        let mut last = None;
        loop {
            let ticket = self.wakeups.ticket();
            self.expire_typing().await;
            // Recompute only when something concerning this user was marked since the last
            // pass: other users' traffic does not cost a full sync pass.
            if last.is_none() || self.changed_since(user, seen) {
                seen = self.tick();
                let from = req.since.map_or(0, |s| s.pos);
                let pos = if req.to_device {
                    self.to_device_cap(user, device, from, self.current_pos())
                        .await?
                } else {
                    self.current_pos()
                };
                let now = SyncToken {
                    pos,
                    typing: self.typing.serial(),
                };
                let (body, empty) = self.sync_once(user, device, &req, now).await?;
                if !empty || req.since.is_none() || req.full_state {
                    return Ok(body);
                }
                last = Some(body);
            }
            let now = self.clock.now_ms();
            let remaining = deadline.saturating_sub(now);
            if remaining == 0 {
                if let Some(body) = last {
                    return Ok(body);
                }
            }
            // Wake for the next typing timeout too: nothing else announces it.
            let wake = self
                .next_typing_expiry()
                .map_or(remaining, |at| remaining.min(at.saturating_sub(now) + 1));
            self.wakeups.wait(ticket, Duration::from_millis(wake)).await;
        }
    }

    async fn sync_once(
        &self,
        user: &UserId,
        device: &DeviceId,
        req: &SyncRequest,
        now: SyncToken,
    ) -> Result<(String, bool)> {
        let since = req.since.map(|s| s.clamp_to(now));
        // The sections read independently; on PostgreSQL each read is a round trip, so
        // they go at once.
        let account_data = async {
            let mut account_data = self
                .account_data_since(user, None, since.map(|s| s.pos), now.pos)
                .await?;
            // Clients expect their push rules in the first sync, defaults included.
            if since.is_none() && !account_data.iter().any(|e| e["type"] == "m.push_rules") {
                account_data.push(
                    json!({ "type": "m.push_rules", "content": self.push_rules_content(user).await? }),
                );
            }
            Ok::<_, crate::Error>(account_data)
        };
        let device_lists = async {
            match since {
                Some(s) => self.device_list_updates(user, s.pos, now.pos).await,
                None => Ok((vec![], vec![])),
            }
        };
        let (rooms, account_data, mut presence, to_device, (changed, left), key_counts) = futures_util::try_join!(
            self.sync_rooms(user, device, req, since, now),
            account_data,
            self.presence_since(user, since.map(|s| s.pos), now.pos),
            async {
                if req.to_device {
                    self.to_device_since(user, device, since.map_or(0, |s| s.pos), now.pos)
                        .await
                } else {
                    Ok(vec![])
                }
            },
            device_lists,
            self.sync_key_counts(user, device),
        )?;
        let (otk_counts, fallback_types) = key_counts;
        let account_data: Vec<Json> = account_data
            .into_iter()
            .filter(|e| req.filter.account_data.allows_json(e))
            .collect();
        let f = &req.filter.presence;
        presence.retain(|e| {
            f.allows_json(e)
                && e["sender"]
                    .as_str()
                    .and_then(|s| UserId::parse(s).ok())
                    .is_some_and(|s| f.allows_sender(&s))
        });
        let empty = rooms.is_empty()
            && changed.is_empty()
            && left.is_empty()
            && account_data.is_empty()
            && presence.is_empty()
            && to_device.is_empty();
        let body = SyncBody {
            next_batch: now.to_string(),
            account_data: Events {
                events: account_data,
            },
            presence: Events { events: presence },
            to_device: Events { events: to_device },
            device_lists: DeviceLists { changed, left },
            device_one_time_keys_count: otk_counts,
            device_unused_fallback_key_types: fallback_types,
        };
        Ok((rooms.into_body(&body)?, empty))
    }
}

/// The `/sync` response (spec: "Syncing") but its rooms; see [`rooms::RoomsSection`].
#[derive(serde::Serialize)]
struct SyncBody {
    next_batch: String,
    account_data: Events<Json>,
    presence: Events<Json>,
    to_device: Events<Json>,
    device_lists: DeviceLists,
    device_one_time_keys_count: std::collections::BTreeMap<String, u64>,
    device_unused_fallback_key_types: Vec<String>,
}

#[derive(serde::Serialize)]
struct Events<T> {
    events: Vec<T>,
}

#[derive(serde::Serialize)]
struct DeviceLists {
    changed: Vec<String>,
    left: Vec<String>,
}
