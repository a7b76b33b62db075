//! The failure suite (tests/cli_errors.rs) with the repository on a real S3 server; see
//! tests/s3_cli_backup_restore.rs. Damage is done to the files in which s3s-fs stores objects.

#[path = "cli_errors.rs"]
mod suite;
