//! The options suite (tests/cli_options.rs) with the repository on a real S3 server; see
//! tests/s3_cli_backup_restore.rs.

#[path = "cli_options.rs"]
mod suite;
