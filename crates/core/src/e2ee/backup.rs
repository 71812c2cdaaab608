//! Server-side key backups (spec: "Server-side key backups").
