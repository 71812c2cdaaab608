//! Rooms: PDUs, the write path, state, membership, timeline reads
//! (spec: server-server API "PDUs", room versions 1–12, client-server API "Rooms").

pub mod auth_chain;
pub mod create;
pub mod directory;
pub mod events;
pub mod head;
pub mod join_rules;
pub mod membership;
pub mod pdu;
pub mod power;
pub mod read;
pub mod receipts;
pub mod receive;
pub mod redact;
pub mod relations;
pub mod send;
pub mod spaces;
pub mod state;
pub(crate) mod tip;
pub mod upgrade;
pub mod visibility;
pub mod write;

pub use pdu::Pdu;

/// Room versions this server can create and join (spec: capabilities, `m.room_versions`).
pub const SUPPORTED_VERSIONS: &[&str] = &[
    "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12",
];
pub const DEFAULT_VERSION: &str = "12";

/// Event types that count as activity for a room's `bump_stamp` (MSC4186).
pub const BUMP_TYPES: &[&str] = &[
    "m.room.create",
    "m.room.message",
    "m.room.encrypted",
    "m.sticker",
    "m.call.invite",
    "m.poll.start",
    "m.beacon_info",
];
