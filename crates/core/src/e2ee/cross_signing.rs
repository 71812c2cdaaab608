//! cross_signing
