//! device_lists
