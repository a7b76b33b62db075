//! The lease suite (tests/leases.rs) with the repository on a real S3 server (s3s-fs on
//! 127.0.0.1, one per test; see `common::suite_on_s3`). Without s3s-fs the tests say SKIPPED
//! and run on local disk, unless CAIRN_REQUIRE_SERVERS=1.

#[path = "leases.rs"]
mod suite;
