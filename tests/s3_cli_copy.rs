//! The copy suite (tests/cli_copy.rs) with its source repositories on a real S3 server (s3s-fs
//! on 127.0.0.1, one per test): `common::Env` puts them there in binaries whose name starts with
//! `s3_` (see `common::suite_on_s3`); the targets stay local. The opposite direction, local -> S3
//! -> local, is in tests/cli_s3.rs. Without s3s-fs the tests say SKIPPED and run on local disk,
//! unless CAIRN_REQUIRE_SERVERS=1.

#[path = "cli_copy.rs"]
mod suite;
