-- Finds the client transaction of an event, for `unsigned.transaction_id`.
CREATE INDEX event_txns_event ON event_txns (event_id);
