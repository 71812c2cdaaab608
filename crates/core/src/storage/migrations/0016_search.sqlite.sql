-- Server-side search (spec: "Server Side Search"): message bodies, room names and topics,
-- one row per event, written in the event's batch and deleted when it is redacted. The
-- rowid is the event's stream position, so newest first is rowid order.
CREATE VIRTUAL TABLE event_search USING fts5(
    body,
    event_id UNINDEXED,
    room_id UNINDEXED,
    key UNINDEXED,
    tokenize = 'unicode61 remove_diacritics 2'
);
