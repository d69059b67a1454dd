//! The storage error type.

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store URL is malformed or names an unsupported database.
    #[error("invalid store url {0}")]
    InvalidUrl(String),
    /// The database could not be reached or answered with an error; the operation did nothing.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A commit shared with other rooms' appends failed; nothing of it was written. The
    /// message is the cause's own (already "database error: ..." when it came from there).
    #[error("{0}")]
    GroupCommit(String),
    /// The schema migrations failed to apply.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Stored data violates an invariant (an unknown snapshot kind, a negative seq).
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    /// The operation did not finish in time; it may or may not have been applied (appending
    /// again is harmless: updates are idempotent).
    #[error("the store did not answer within {0:?}")]
    Timeout(std::time::Duration),
    /// The merge passed to `Store::put_values` refused to combine a stored value with a new
    /// one; nothing of that call was written.
    #[error("value {name:?} could not be merged with the stored one: {reason}")]
    Merge {
        /// The value's name.
        name: String,
        /// Why the merge refused.
        reason: String,
    },
    /// An I/O error outside the database (creating the data directory).
    #[error("io error: {0}")]
    Io(#[from] std::io::Error),
}
