//! End-to-end tests: the real server on a free port, driven by matrix-sdk and raw HTTP.
//! SQLite by default; PostgreSQL when `TESSERA_TEST_POSTGRES_URL` is set.
#![recursion_limit = "256"]

mod harness;

mod account_moderation;
mod accounts;
mod backup;
mod client_flow;
mod client_format;
mod create_room;
mod directory;
mod discovery;
mod e2ee;
mod endpoints;
mod errors;
mod guests;
mod hostile;
mod ignored_users;
mod join_rules;
mod legacy_sync;
mod limits;
mod login_token;
mod malformed;
mod media;
mod members;
mod moderation;
mod mutual_rooms;
mod notifications;
mod push;
mod pushers;
mod relations;
mod room_events;
mod rooms;
mod search;
mod server_notices;
mod sliding_sync;
mod sliding_sync_wire;
mod spaces;
mod state_groups;
mod state_res;
mod storage;
mod sync;
mod sync_cost;
mod sync_exact;
mod timeline;
mod upgrade;
mod user_directory;
mod voip;
