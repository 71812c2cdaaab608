//! End-to-end encryption bookkeeping (spec: "End-to-End Encryption"): device and
//! cross-signing keys, one-time and fallback keys, device-list changes, key backup.

pub mod backup;
pub mod claim;
pub mod cross_signing;
pub mod device_lists;
pub mod keys;
