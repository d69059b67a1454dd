//! The one error type of the codec.

/// Why a frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input ended before a value that it announced was complete.
    #[error("unexpected end of message")]
    UnexpectedEnd,
    /// A variable-length integer ran over 64 bits, or over the range its field allows.
    #[error("integer out of range in {0}")]
    IntegerOverflow(&'static str),
    /// A declared count or length cannot fit in the bytes that remain, so it is a lie.
    #[error("declared {what} count {count} exceeds the {remaining} bytes that remain")]
    CountTooLarge {
        /// The field whose count was declared.
        what: &'static str,
        /// The count the input declared.
        count: u64,
        /// The bytes left in the input at that point.
        remaining: usize,
    },
    /// A string was not valid UTF-8.
    #[error("invalid utf-8 in {0}")]
    InvalidUtf8(&'static str),
    /// Nested values (JSON or `Any`) went deeper than the configured limit.
    #[error("nesting deeper than {0} levels")]
    TooDeep(usize),
    /// An unknown tag where the format allows only known ones.
    #[error("unknown {what} tag {tag}")]
    UnknownTag {
        /// Which tag space.
        what: &'static str,
        /// The tag that was read.
        tag: u64,
    },
    /// A structure that the format forbids (an empty block, an empty frame).
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// An awareness state larger than the configured limit.
    #[error("awareness state of {size} bytes exceeds the limit of {limit}")]
    AwarenessStateTooLarge {
        /// The size of the state in bytes.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// A frame holding more messages than the configured limit.
    #[error("frame holds more than {0} messages")]
    TooManyMessages(usize),
    /// An awareness update naming more clients than the configured limit.
    #[error("awareness update names {count} clients, more than the limit of {limit}")]
    TooManyAwarenessClients {
        /// How many clients the update named.
        count: usize,
        /// The configured limit.
        limit: usize,
    },
}
