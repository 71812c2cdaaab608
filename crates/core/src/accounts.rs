//! Accounts, devices, tokens and user-interactive auth
//! (spec: client-server API, "Client Authentication" and "Account management").

pub mod admin;
pub mod devices;
pub mod guests;
pub mod login;
pub mod login_token;
pub mod moderation;
pub mod openid;
pub mod password;
pub mod profile;
pub mod register;
pub mod session;
pub mod tokens;
pub mod uia;

pub use session::Session;
