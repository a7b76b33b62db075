//! Flags of S3 repositories (issue 3), resolved into [`cairn::backend::S3Options`]. Kept apart
//! from `args.rs` so that the S3 options are one flattened struct there.

use std::time::Duration;

use clap::{Args, ValueEnum};

use cairn::backend::s3::{Addressing, S3Options};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum AddressingArg {
    /// Path style with AWS_ENDPOINT_URL (S3-compatible servers), virtual-hosted on AWS.
    Auto,
    /// https://host/bucket/key
    Path,
    /// https://bucket.host/key
    Virtual,
}

#[derive(Debug, Args)]
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
    #[arg(
        long,
        env = "CAIRN_S3_ADDRESSING",
        value_enum,
        default_value = "auto",
        global = true
    )]
    pub s3_addressing: AddressingArg,
    /// S3: timeout of each request attempt, e.g. 30s, 2m.
    #[arg(long, env = "CAIRN_S3_TIMEOUT", default_value = "60s", global = true)]
    pub s3_timeout: String,
    /// S3: retries of a failed request (transient failures only), with exponential backoff.
    #[arg(long, env = "CAIRN_S3_RETRIES", default_value = "4", global = true)]
    pub s3_retries: usize,
}

impl S3Args {
    /// Options from these flags and the AWS environment (endpoint, region; credentials are
    /// left to the S3 client, which reads them from the environment or the shared files).
    pub fn options(
        &self,
        connections: usize,
        parse_duration: impl Fn(&str) -> anyhow::Result<Duration>,
    ) -> anyhow::Result<S3Options> {
        let timeout = parse_duration(&self.s3_timeout)?;
        if timeout.is_zero() {
            anyhow::bail!("--s3-timeout must be more than 0s");
        }
        Ok(S3Options {
            addressing: match self.s3_addressing {
                AddressingArg::Auto => Addressing::Auto,
                AddressingArg::Path => Addressing::Path,
                AddressingArg::Virtual => Addressing::Virtual,
            },
            data_storage_class: self.s3_storage_class.clone().filter(|s| !s.is_empty()),
            connections,
            timeout,
            retries: self.s3_retries,
            ..S3Options::from_env()
        })
    }
}
