//! Tessera's Matrix logic. No I/O: the host supplies the ports in [`ports`].

pub mod accounts;
pub mod cache;
pub mod commit;
pub mod config;
pub mod e2ee;
pub mod error;
pub mod homeserver;
pub mod ignored_users;
pub mod input;
pub mod media;
pub mod mutual_rooms;
pub mod outbound;
pub mod ports;
pub mod presence;
pub mod push;
pub mod reports;
pub mod rooms;
pub mod search;
pub mod server_notices;
pub mod storage;
pub mod sync;
pub mod thirdparty;
pub mod to_device;
pub mod user_directory;
pub mod voip;

pub use config::{Config, MediaConfig};
pub use error::{Error, Result};
pub use homeserver::Homeserver;
