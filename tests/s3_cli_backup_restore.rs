//! The whole backup/restore suite (tests/cli_backup_restore.rs) with the repository on a real
//! S3 server (s3s-fs on 127.0.0.1, one per test): `common::Env` puts it there in binaries whose
//! name starts with `s3_` (see `common::suite_on_s3`). Without s3s-fs the tests say SKIPPED and
//! run on local disk, unless CAIRN_REQUIRE_SERVERS=1.

#[path = "cli_backup_restore.rs"]
mod suite;
