//! Flags of S3 repositories (issue 3), resolved with the rest in `settings`. Kept apart
//! from `args.rs` so that the S3 options are one flattened struct there.

use clap::{Args, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AddressingArg {
    /// Path style with AWS_ENDPOINT_URL (S3-compatible servers), virtual-hosted on AWS.
    Auto,
    /// https://host/bucket/key
    Path,
    /// https://bucket.host/key
    Virtual,
}

#[derive(Debug, Clone, Args)]
pub struct S3Args {
    /// S3: storage class of data packs (data/...), e.g. STANDARD_IA; metadata keeps the
    /// bucket's default.
    #[arg(
        long,
        env = "CAIRN_S3_STORAGE_CLASS",
        global = true,
        value_name = "CLASS"
    )]
    pub s3_storage_class: Option<String>,
    /// S3: path-style or virtual-hosted-style requests.
    #[arg(long, env = "CAIRN_S3_ADDRESSING", value_enum, global = true)]
    pub s3_addressing: Option<AddressingArg>,
    /// S3: timeout of each request attempt, e.g. 30s, 2m (default 60s).
    #[arg(long, env = "CAIRN_S3_TIMEOUT", global = true)]
    pub s3_timeout: Option<String>,
    /// S3: retries of a failed request (transient failures only), with exponential backoff
    /// (default 4).
    #[arg(long, env = "CAIRN_S3_RETRIES", global = true)]
    pub s3_retries: Option<usize>,
}
