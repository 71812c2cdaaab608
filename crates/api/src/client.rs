//! The client-server API (spec: `client-server-api`), one module per spec section.

mod account;
mod account_data;
mod admin;
mod auth;
mod backup;
mod devices;
mod directory;
mod discovery;
mod keys;
mod legacy_sync;
mod media;
mod membership;
mod mutual_rooms;
mod presence;
mod profile;
mod push;
mod relations;
mod reporting;
mod rooms;
mod search;
mod session;
mod sliding_sync;
mod spaces;
mod sync;
mod thirdparty;
mod timestamp;
mod to_device;
mod upgrade;
mod user_directory;
mod voip;

use crate::Routes;

pub use auth::Auth;

pub fn routes(r: Routes) -> Routes {
    let r = discovery::routes(r);
    let r = session::routes(r);
    let r = account::routes(r);
    let r = devices::routes(r);
    let r = profile::routes(r);
    let r = account_data::routes(r);
    let r = rooms::routes(r);
    let r = membership::routes(r);
    let r = presence::routes(r);
    let r = keys::routes(r);
    let r = backup::routes(r);
    let r = push::routes(r);
    let r = relations::routes(r);
    let r = directory::routes(r);
    let r = reporting::routes(r);
    let r = thirdparty::routes(r);
    let r = admin::routes(r);
    let r = spaces::routes(r);
    let r = upgrade::routes(r);
    let r = search::routes(r);
    let r = user_directory::routes(r);
    let r = timestamp::routes(r);
    let r = to_device::routes(r);
    let r = media::routes(r);
    let r = voip::routes(r);
    let r = mutual_rooms::routes(r);
    let r = legacy_sync::routes(r);
    let r = sliding_sync::routes(r);
    sync::routes(r)
}
