//! The library's error type.
//!
//! Every fallible library function returns [`Error`]. Callers (the binary, tests, other
//! programs) match on [`Error::kind`] rather than on message text; the binary maps kinds to
//! exit codes (DESIGN.md §10). Messages name the object involved and never contain secrets.

use std::path::PathBuf;

/// What went wrong, at the granularity a caller can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The repository does not exist at the given location (exit code 10).
    RepoNotFound,
    /// An object or snapshot that was asked for does not exist.
    NotFound,
    /// No key file could be opened with the given password (exit code 12).
    WrongPassword,
    /// Data read from the repository failed verification or could not be decoded.
    Corrupt,
    /// The object was written with a format version this build does not know.
    UnsupportedVersion,
    /// A failure that may succeed when retried (network, throttling, timeouts).
    Transient,
    /// A lease could not be obtained (exit code 11).
    Locked,
    /// The caller asked for something invalid (bad argument, bad snapshot id, ...).
    InvalidInput,
    /// The operation was interrupted (exit code 130).
    Interrupted,
    /// The repository at a location is not the one this cache knew there: it went from
    /// encrypted to unencrypted, or its key files changed (exit code 13). See `repo::memory`.
    RepositoryChanged,
    /// A local I/O failure (source files, restore target, cache).
    Io,
    /// An object that must not be overwritten already exists.
    AlreadyExists,
    /// Anything else.
    Other,
}

/// What a database (MySQL/MariaDB) failure calls for, for a scheduler deciding whether to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DbErrorKind {
    /// The server cannot be reached or went away (not running, connection refused or lost,
    /// too many connections, shutting down, a lock wait or deadlock): retry later.
    Unavailable,
    /// The configuration must be fixed: access denied, a missing privilege, an unknown
    /// database, a bad option or option file, the client tools not found, a packet limit.
    Config,
    /// The dump or the load failed otherwise (a table dropped during the dump, a dump cut
    /// short, SQL the server refused).
    Failed,
}

impl DbErrorKind {
    /// The library-wide kind: `Transient`, `InvalidInput` or `Other`.
    pub fn error_kind(self) -> ErrorKind {
        match self {
            DbErrorKind::Unavailable => ErrorKind::Transient,
            DbErrorKind::Config => ErrorKind::InvalidInput,
            DbErrorKind::Failed => ErrorKind::Other,
        }
    }
}

/// `": detail"`, or nothing for an empty detail.
fn detail_suffix(detail: &str) -> String {
    match detail.is_empty() {
        true => String::new(),
        false => format!(": {detail}"),
    }
}

/// The error type of the cairn library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no repository at {location} (create one with `cairn init`)")]
    RepoNotFound { location: String },

    #[error("{what} not found")]
    NotFound { what: String },

    #[error("wrong password: no key in the repository could be opened with it")]
    WrongPassword,

    #[error("{object} is corrupt: {reason}")]
    Corrupt { object: String, reason: String },

    #[error(
        "{object} has format version {version}, which this cairn does not support (upgrade cairn)"
    )]
    UnsupportedVersion { object: String, version: u8 },

    #[error("backend: {op} {key}: {message}")]
    Backend {
        op: &'static str,
        key: String,
        message: String,
        transient: bool,
        not_found: bool,
    },

    #[error("{key} already exists")]
    AlreadyExists { key: String },

    #[error("{0}")]
    InvalidInput(String),

    #[error("could not obtain a lease: {0}")]
    Locked(String),

    #[error("interrupted")]
    Interrupted,

    #[error(
        "the repository at {location} is not the one this computer knew there: {changes}. \
         Someone with write access to the storage may have replaced it. If the change is yours, \
         run again with --accept-repository-change"
    )]
    RepositoryChanged { location: String, changes: String },

    // The cause is printed by whoever prints the error chain (`{:#}`), not repeated here.
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("catalog {path}: {message}")]
    Catalog { path: PathBuf, message: String },

    /// A database server or its client tools failed: `what` failed, the tool's own message
    /// (if any) in `detail`, the underlying error (if any) as the source.
    #[error("{what}{}", detail_suffix(detail))]
    Database {
        what: String,
        kind: DbErrorKind,
        detail: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },

    /// A configuration file is wrong at this place.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Config {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },

    /// A blob could not be handed to the uploader because it had stopped; the uploader's own
    /// error is the cause (see `Session::abandon`, which returns that instead).
    #[error("the upload stopped")]
    UploadStopped,

    #[error("{0}")]
    Other(String),
}

impl Error {
    /// The kind of failure, for callers that act on it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::RepoNotFound { .. } => ErrorKind::RepoNotFound,
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::WrongPassword => ErrorKind::WrongPassword,
            Error::Corrupt { .. } => ErrorKind::Corrupt,
            Error::UnsupportedVersion { .. } => ErrorKind::UnsupportedVersion,
            Error::Backend {
                transient,
                not_found,
                ..
            } => {
                if *not_found {
                    ErrorKind::NotFound
                } else if *transient {
                    ErrorKind::Transient
                } else {
                    ErrorKind::Other
                }
            }
            Error::AlreadyExists { .. } => ErrorKind::AlreadyExists,
            Error::InvalidInput(_) => ErrorKind::InvalidInput,
            Error::Locked(_) => ErrorKind::Locked,
            Error::Interrupted => ErrorKind::Interrupted,
            Error::RepositoryChanged { .. } => ErrorKind::RepositoryChanged,
            Error::Io { .. } => ErrorKind::Io,
            Error::Catalog { .. } => ErrorKind::Other,
            Error::Database { kind, .. } => kind.error_kind(),
            Error::Config { .. } => ErrorKind::InvalidInput,
            Error::UploadStopped | Error::Other(_) => ErrorKind::Other,
        }
    }

    pub(crate) fn corrupt(object: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Corrupt {
            object: object.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn not_found(what: impl Into<String>) -> Self {
        Error::NotFound { what: what.into() }
    }

    pub(crate) fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidInput(msg.into())
    }
}

/// Result alias used throughout the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<crate::backend::BackendError> for Error {
    fn from(e: crate::backend::BackendError) -> Self {
        use crate::backend::BackendErrorKind as K;
        match e.kind {
            K::AlreadyExists => Error::AlreadyExists { key: e.key },
            k => Error::Backend {
                op: e.op,
                key: e.key,
                message: e.message,
                transient: k == K::Transient,
                not_found: k == K::NotFound,
            },
        }
    }
}
