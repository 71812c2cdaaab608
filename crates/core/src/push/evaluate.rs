//! Which local members an event notifies (spec: "Push Rules"), decided with ruma's
//! evaluation when the event is planned, so its outcomes commit in the event's own batch:
//! never lost, never counted twice.
//!
//! The server-default rules depend on the member only through their user ID (mentions,
//! invites) and on the room through its member count and power levels. So the members
//! with the default rules whom the event does not name share one outcome, worked out once
//! for a user ID nobody can name; only the named members and those with rules of their
//! own are evaluated one by one. An event in a room of thousands costs a few evaluations.

use std::sync::Arc;

use ruma::{
    events::StateEventType,
    push::{Action, FlattenedJson, PushConditionRoomCtx, Ruleset, Tweak},
    serde::Raw,
    OwnedUserId, UInt, UserId,
};

use crate::{
    cache::BoundedCache,
    ports::{Statement, Value},
    rooms::{
        head::RoomHead,
        power::power_levels_of,
        read::content_str,
        relations::relation_of,
        write::{membership_of, RoomWrite},
        Pdu,
    },
    Error, Homeserver, Result,
};

/// Users whose stored rules are kept parsed in memory.
pub(crate) const CACHED_RULESETS: usize = 20_000;
/// Hops followed to find an event's thread (spec: "a maximum of 3 hops is recommended").
const THREAD_HOPS: usize = 3;

/// What an event does for one member.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub notify: bool,
    pub highlight: bool,
    /// The `sound` tweak, passed on to push gateways.
    pub sound: Option<String>,
}

impl Outcome {
    /// Spec: `notify` makes a notification; a highlight counts only if it notifies.
    fn of(actions: &[Action]) -> Self {
        let notify = actions.iter().any(Action::should_notify);
        let sound = actions.iter().find_map(|a| match a {
            Action::SetTweak(Tweak::Sound(s)) if notify => Some(s.as_str().to_owned()),
            _ => None,
        });
        Outcome {
            notify,
            highlight: notify && actions.iter().any(Action::is_highlight),
            sound,
        }
    }
}

/// What an event's batch records for push.
pub(crate) struct PushRows {
    /// `main` or the thread root.
    pub thread: String,
    /// The outcome of every member not in `exceptions` (the sender's own events never
    /// count for them).
    pub usual: Outcome,
    pub exceptions: Vec<(OwnedUserId, Outcome)>,
}

impl PushRows {
    pub(crate) fn statements(&self, room: &str, pdu: &Pdu, pos: i64) -> Vec<Statement> {
        let flag = |b: bool| Value::Int(i64::from(b));
        let mut b = vec![Statement::new(
            "INSERT INTO push_events (room_id, stream_pos, event_id, thread_id, sender, notify, highlight, sound)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            vec![
                room.into(),
                Value::Int(pos),
                pdu.event_id.as_str().into(),
                self.thread.as_str().into(),
                pdu.sender.as_str().into(),
                flag(self.usual.notify),
                flag(self.usual.highlight),
                self.usual.sound.as_deref().into(),
            ],
        )];
        for (user, o) in &self.exceptions {
            b.push(Statement::new(
                "INSERT INTO push_exceptions (room_id, stream_pos, user_id, notify, highlight, sound)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                vec![
                    room.into(),
                    Value::Int(pos),
                    user.as_str().into(),
                    flag(o.notify),
                    flag(o.highlight),
                    o.sound.as_deref().into(),
                ],
            ));
        }
        b
    }
}

/// Parsed stored rules by user (`None`: the server defaults), and the epoch that makes a
/// fill racing a change of rules stay out of the cache.
pub(crate) struct Rulesets {
    cache: BoundedCache<OwnedUserId, Option<Arc<Ruleset>>>,
    epoch: std::sync::Mutex<u64>,
    /// A user ID no event can name (random per process): its outcome is the usual one.
    pub(crate) nobody: OwnedUserId,
    nobody_rules: Ruleset,
}

impl Rulesets {
    pub(crate) fn new(server: &ruma::ServerName) -> Self {
        let local = crate::accounts::tokens::random_string(32).to_lowercase();
        let nobody = UserId::parse(format!("@_push_{local}:{server}"))
            .unwrap_or_else(|_| ruma::owned_user_id!("@_push_nobody:localhost"));
        Rulesets {
            cache: BoundedCache::new(CACHED_RULESETS),
            epoch: std::sync::Mutex::new(0),
            nobody_rules: Ruleset::server_default(&nobody),
            nobody,
        }
    }
}

impl Homeserver {
    /// A user's stored rules, or `None` while they have the server defaults.
    pub(crate) async fn stored_rules(&self, user: &UserId) -> Result<Option<Arc<Ruleset>>> {
        let key = user.to_owned();
        if let Some(r) = self.rulesets.cache.get(&key) {
            return Ok(r);
        }
        let epoch = *self
            .rulesets
            .epoch
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let stored = match self.get_account_data(user, None, "m.push_rules").await {
            Ok(v) => Some(Arc::new(
                serde_json::from_value::<Ruleset>(v["global"].clone()).map_err(Error::internal)?,
            )),
            Err(Error::Matrix(ruma::api::error::ErrorKind::NotFound, _)) => None,
            Err(e) => return Err(e),
        };
        let now = self
            .rulesets
            .epoch
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if *now == epoch {
            self.rulesets.cache.put(key, stored.clone());
        }
        Ok(stored)
    }

    /// The room's local members with stored rules, from the head when it knows them as
    /// of the current rules epoch.
    async fn ruled_members(
        &self,
        head: &RoomHead,
        members: &crate::rooms::head::LocalMembers,
    ) -> Result<Arc<Vec<OwnedUserId>>> {
        let epoch = *self
            .rulesets
            .epoch
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some((e, list)) = &*head.ruled_members.lock().unwrap_or_else(|e| e.into_inner()) {
            if *e == epoch {
                return Ok(list.clone());
            }
        }
        let mut list = Vec::new();
        for m in members.iter() {
            if let Ok(user) = UserId::parse(m.as_str()) {
                if self.stored_rules(&user).await?.is_some() {
                    list.push(user);
                }
            }
        }
        let list = Arc::new(list);
        *head.ruled_members.lock().unwrap_or_else(|e| e.into_inner()) = Some((epoch, list.clone()));
        Ok(list)
    }

    /// A head carried its predecessor's list of members with rules: the member an event
    /// changed joins it if they have rules of their own.
    async fn note_member_rules(&self, head: &RoomHead, key: &str) -> Result<()> {
        let Ok(user) = UserId::parse(key) else {
            return Ok(());
        };
        if user.server_name() != self.server_name() || self.stored_rules(&user).await?.is_none() {
            return Ok(());
        }
        let mut slot = head.ruled_members.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((epoch, list)) = slot.as_mut() {
            if !list.contains(&user) {
                let mut more = (**list).clone();
                more.push(user);
                *slot = Some((*epoch, Arc::new(more)));
            }
        }
        Ok(())
    }

    /// Called once a user's rules changed.
    pub(crate) fn forget_rules(&self, user: &UserId) {
        let mut epoch = self
            .rulesets
            .epoch
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *epoch += 1;
        self.rulesets.cache.remove(&user.to_owned());
    }

    /// The push outcomes of `pdu`, planned in `w` (whose head is the room as the event
    /// leaves it), for the room's local members; `None` when it notifies nobody.
    pub(crate) async fn push_rows(
        &self,
        w: &RoomWrite,
        rules: &ruma::room_version_rules::RoomVersionRules,
        pdu: &Pdu,
        json: &str,
    ) -> Result<Option<PushRows>> {
        let (room_id, head) = (w.room_id(), w.head());
        let members = head.local_members(self.server_name());
        if pdu.kind == ruma::events::TimelineEventType::RoomMember {
            if let Some(key) = &pdu.state_key {
                self.note_member_rules(head, key).await?;
            }
        }
        // Nobody but the sender: nothing to work out (a new room's first events).
        if members.iter().all(|m| m.as_str() == pdu.sender.as_str()) {
            return Ok(None);
        }
        let joined = self.joined_count(w).await?;
        if members.is_empty() {
            return Ok(None);
        }
        let raw = Raw::<ruma::events::AnyTimelineEvent>::from_json(pdu.client_raw(
            Some(room_id),
            None,
            None,
        )?);
        let event = FlattenedJson::from_raw(&raw);
        let state_pdu = |kind: StateEventType| async move {
            match head.state.get(&(kind, String::new())) {
                Some(id) => w.pdu(self, id).await,
                None => Ok(None),
            }
        };
        let create = state_pdu(StateEventType::RoomCreate).await?;
        let power = state_pdu(StateEventType::RoomPowerLevels).await?;
        let levels = power_levels_of(create.as_deref(), power.as_deref(), rules)?;
        let ctx = |user: OwnedUserId, name: String| {
            PushConditionRoomCtx::new(
                room_id.to_owned(),
                UInt::new(joined).unwrap_or(UInt::MAX),
                user,
                name,
            )
            .with_power_levels(levels.clone().into())
        };
        let usual = first_match(
            &self.rulesets.nobody_rules,
            &event,
            &ctx(self.rulesets.nobody.clone(), String::new()),
        )
        .await;
        // Named members: every JSON string that starts with `@` (user IDs contain no
        // character JSON escapes, so a mention is in the text as it is).
        let mut evaluate: Vec<(OwnedUserId, Option<Arc<Ruleset>>)> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for candidate in json
            .split("\"@")
            .skip(1)
            .filter_map(|s| s.split('"').next())
        {
            let id = format!("@{candidate}");
            if members.contains(&id) && seen.insert(id.clone()) {
                if let Ok(user) = UserId::parse(&id) {
                    let stored = self.stored_rules(&user).await?;
                    evaluate.push((user, stored));
                }
            }
        }
        // Members with rules of their own.
        for user in self.ruled_members(head, &members).await?.iter() {
            if seen.insert(user.to_string()) {
                let stored = self.stored_rules(user).await?;
                evaluate.push((user.clone(), stored));
            }
        }
        let mut exceptions = Vec::new();
        for (user, stored) in evaluate {
            // The event itself, when it is the member's (an invite being planned).
            let member = match member_event(self, w, &user, pdu).await? {
                Some(m) => m,
                None => continue,
            };
            // Members, and a local user this very event invites (`.m.rule.invite_for_me`).
            let invited = membership_of(&member) == "invite"
                && pdu.state_key.as_deref() == Some(user.as_str())
                && member.event_id == pdu.event_id;
            if user == pdu.sender || (membership_of(&member) != "join" && !invited) {
                continue;
            }
            let name = content_str(&member, "displayname").unwrap_or_default();
            let context = ctx(user.clone(), name);
            let outcome = match &stored {
                Some(rules) => first_match(rules, &event, &context).await,
                None => first_match(&Ruleset::server_default(&user), &event, &context).await,
            };
            if outcome != usual {
                exceptions.push((user, outcome));
            }
        }
        // Spec ("Ignoring Users"): an ignored user's events notify nobody who ignores them.
        for user in self.ignores.ignorers_of(&pdu.sender) {
            if members.contains(user.as_str()) {
                exceptions.retain(|(u, _)| *u != user);
                if usual != Outcome::default() {
                    exceptions.push((user, Outcome::default()));
                }
            }
        }
        if !usual.notify && exceptions.is_empty() {
            return Ok(None);
        }
        Ok(Some(PushRows {
            thread: self.thread_of(pdu).await?,
            usual,
            exceptions,
        }))
    }

    /// `main`, or the root of the thread the event is in: an `m.thread` child, or an event
    /// relating (within a few hops) to one (spec: "Threaded read receipts").
    pub(crate) async fn thread_of(&self, pdu: &Pdu) -> Result<String> {
        let mut rel = relation_of(&pdu.kind.to_string(), pdu.content.get());
        for _ in 0..THREAD_HOPS {
            let Some(r) = rel else { break };
            if r.rel_type == "m.thread" {
                return Ok(r.parent.to_string());
            }
            rel = match self.get_pdu(&r.parent).await? {
                Some(parent) => relation_of(&parent.kind.to_string(), parent.content.get()),
                None => None,
            };
        }
        Ok("main".into())
    }
}

/// The user's member event in the room as the write leaves it; `planned` is the event
/// being planned, not yet among the write's events.
async fn member_event(
    hs: &Homeserver,
    w: &RoomWrite,
    user: &UserId,
    planned: &Pdu,
) -> Result<Option<Arc<Pdu>>> {
    let key = (StateEventType::RoomMember, user.as_str().to_owned());
    match w.head().state.get(&key) {
        Some(id) if *id == planned.event_id => Ok(Some(Arc::new(planned.clone()))),
        Some(id) => w.pdu(hs, id).await,
        None => Ok(None),
    }
}

/// The outcome of the first rule that applies (ruma's evaluation on the event flattened
/// once); nothing when none does.
async fn first_match(
    rules: &Ruleset,
    event: &FlattenedJson,
    ctx: &PushConditionRoomCtx,
) -> Outcome {
    for rule in rules {
        if rule.applies(event, ctx).await {
            return Outcome::of(rule.actions());
        }
    }
    Outcome::default()
}
