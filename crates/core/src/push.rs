//! Push notifications (spec: "Push Notifications"): the rules (`rules.rs`), which events
//! notify which local member, decided with ruma's push rule evaluation when the event is
//! written (`evaluate.rs`), and the unread counts that follow from those outcomes and the
//! member's read receipts (`counts.rs`), and the list of them (`notifications.rs`); the
//! pushers (`pushers.rs`) and the delivery to their push gateways (`delivery.rs`).

pub mod counts;
pub mod delivery;
pub mod evaluate;
pub mod notifications;
pub mod pushers;
pub mod rules;
