//! Committing a planned [`RoomWrite`]: its batch, the group commit's queue, and what moves
//! once it landed (the room's head, the caches), before its positions are published.

use super::*;

impl Homeserver {
    /// Commits every planned event in one batch, the `n`-th at the `n`-th new stream
    /// position; then the room's head and the caches move, before the positions are
    /// published. Returns the events' places, in order. A write of one linear event is
    /// queued behind the room's other queued writes and lets the room's lock go at once;
    /// any other waits for them first and keeps the lock until published (`tip.rs`).
    pub(crate) async fn commit_write(&self, w: RoomWrite) -> Result<Vec<EventPlace>> {
        if w.steps.is_empty() && w.prelude.is_empty() {
            return Ok(vec![]);
        }
        let RoomWrite {
            room_id,
            mut lock,
            tip,
            head,
            prelude,
            steps,
            mut groups,
            ..
        } = w;
        let linear = prelude.is_empty() && matches!(steps.as_slice(), [s] if s.queueable);
        if !linear {
            self.settle_queued(&lock, &tip).await?;
        }
        let streams: &[Stream] = if steps.iter().all(|s| s.member_changes.is_empty()) {
            &[Stream::Events]
        } else {
            &[Stream::Events, Stream::Memberships]
        };
        let positions = steps.len().max(1) as i64;
        let places: Vec<(i64, i64)> = steps
            .iter()
            .map(|s| (s.state_before, s.state_after))
            .collect();
        let group_rows: Vec<Statement> = groups
            .iter_mut()
            .flat_map(|g| std::mem::take(&mut g.statements))
            .collect();
        let room = room_id.clone();
        let steps = Arc::new(steps);
        let planned = steps.clone();
        let build = |base: i64| {
            let mut b = prelude;
            b.extend(group_rows);
            for (step, pos) in planned.iter().zip(base..) {
                b.extend(step_statements(room.as_str(), step, pos));
            }
            b
        };
        // Whom the commit wakes, from the head it leaves (worked out once per state and
        // carried across joins), so the writer reads nothing to wake them.
        let members = head.local_members(self.server_name());
        let push_members = members.clone();
        let queued = linear.then(|| {
            Queued::new(
                steps
                    .iter()
                    .map(|s| (s.pdu.clone(), (s.state_before, s.state_after)))
                    .collect(),
                groups.iter().map(|g| (g.id, g.group.clone())).collect(),
                steps.iter().filter_map(|s| s.txn.clone()).collect(),
            )
        });
        // The write leaves the tip when its follow-up is done, or fails it if the
        // follow-up panics.
        let mut release = linear.then(|| TipRelease::new(lock.gate.clone()));
        // A linear write lets the lock go once queued; any other holds it until published.
        let held = if linear { None } else { lock.guard.take() };
        let tip_head = head.clone();
        // Run by the writer once the rows landed (or did not), whether or not this request
        // still waits.
        let after = move |hs: &Homeserver, landed: Landed| {
            let _held = held;
            if let (
                Some(r),
                Landed::Committed(first) | Landed::Unknown(first) | Landed::Refused(first),
            ) = (release.as_mut(), &landed)
            {
                r.start(*first);
            }
            let base = match landed {
                Landed::Committed(base) => base,
                // Perhaps written: the database tells, so the head is reloaded from it,
                // and no cached copy of a redaction's target may outlive it.
                Landed::Unknown(_) | Landed::Refused(_) => {
                    if matches!(landed, Landed::Unknown(_)) {
                        hs.forget_room_head(&room_id);
                        for step in steps.iter() {
                            for id in step.redaction.iter().flat_map(|(ids, _)| ids) {
                                hs.forget_redacted(id);
                            }
                        }
                    }
                    if let Some(r) = release.take() {
                        r.failed();
                    }
                    return;
                }
            };
            hs.set_room_head(&room_id, head);
            // Pushers of the members an event notifies have something to send once it
            // is published (`push/delivery.rs`).
            if let Some(last) = steps
                .iter()
                .zip(base..)
                .filter(|(s, _)| s.push.is_some())
                .map(|(_, p)| p)
                .last()
            {
                hs.push_queue.mark_members(&push_members, last);
            }
            for g in &groups {
                hs.cache_group(g);
            }
            for (step, pos) in steps.iter().zip(base..) {
                if let Some((rewritten, _)) = &step.redaction {
                    for id in rewritten {
                        hs.forget_redacted(id);
                    }
                }
                hs.pdu_cache
                    .put(step.pdu.event_id.clone(), step.pdu.clone());
                // Every full sync of the room's members sends it.
                if step.pdu.state_key.is_some() {
                    if let Ok(json) = step.pdu.client_raw(None, None, None) {
                        hs.state_json
                            .put(step.pdu.event_id.clone(), Arc::from(json));
                    }
                }
                hs.place_cache.put(
                    step.pdu.event_id.clone(),
                    EventPlace {
                        pos,
                        state_before: step.state_before,
                        state_after: step.state_after,
                    },
                );
            }
            if let Some(r) = release.take() {
                r.landed();
            }
        };
        let enqueue = || {
            let ticket = self.enqueue(
                streams,
                Audience::Members(&members),
                positions,
                build,
                Some(Box::new(after)),
            );
            (ticket.first, ticket.last, ticket)
        };
        let ticket = match queued {
            Some(queued) => lock.gate.queue(tip.epoch, tip_head, queued, enqueue)?,
            None => enqueue().2,
        };
        drop(lock);
        let base = self.landed(ticket).await?;
        Ok(places
            .into_iter()
            .zip(base..)
            .map(|((state_before, state_after), pos)| EventPlace {
                pos,
                state_before,
                state_after,
            })
            .collect())
    }

    /// Waits until the writes queued ahead of one that began on `tip` are published; fails
    /// if one of them failed, for the write was planned on it.
    pub(super) async fn settle_queued(&self, lock: &RoomLock, tip: &TipView) -> Result<()> {
        if let Some(last) = lock.gate.last_queued() {
            self.published(last).await;
        }
        if lock.gate.epoch() != tip.epoch {
            return Err(Doomed.into());
        }
        Ok(())
    }
}
