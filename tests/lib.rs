//! End-to-end tests live in `e2e/`; see `e2e/main.rs`.
