//! Push notifications (spec: "Push Notifications"): the rules (`rules.rs`), which events
//! notify which local member, decided with ruma's push rule evaluation when the event is
//! written (`evaluate.rs`), and the unread counts that follow from those outcomes and the
//! member's read receipts (`counts.rs`), and the list of them (`notifications.rs`).

pub mod counts;
pub mod evaluate;
pub mod notifications;
pub mod rules;
