//! The payload of a token: what it allows, where, until when.

use serde::{Deserialize, Serialize};

use crate::room_matches;

/// What a token allows in the rooms it names. Each right includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Right {
    /// Sync, receive edits and appear in presence; edits sent are refused.
    Read,
    /// Read and edit.
    Write,
    /// Write, and kick sessions through the admin API.
    Admin,
}

impl std::str::FromStr for Right {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "read" => Ok(Right::Read),
            "write" => Ok(Right::Write),
            "admin" => Ok(Right::Admin),
            other => Err(format!("unknown right {other:?}: use read, write or admin")),
        }
    }
}

/// The claims plait reads from a token (the wire format of its payload).
///
/// Claims returned by [`crate::Authenticator::verify`] are within bounds: at most
/// [`crate::MAX_ROOM_PATTERNS`] rooms, `exp` not past (by more than the leeway), and no more
/// text than a token of [`crate::MAX_TOKEN_BYTES`] holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Expiry, in seconds since the Unix epoch. Required.
    pub exp: u64,
    /// Issued at, in seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Room names and patterns (`*` matches any run of characters).
    pub rooms: Vec<String>,
    /// The right in those rooms.
    pub right: Right,
    /// A display name, stamped into the connection's awareness state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The token's id, which an operator can revoke (`POST /api/admin/revoke`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
}

impl Claims {
    /// Whether these claims cover `room`. At most O(patterns × room + the patterns' total
    /// length) steps, whatever the patterns are.
    pub fn covers(&self, room: &str) -> bool {
        self.rooms.iter().any(|p| room_matches(p, room))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rights_are_ordered_and_parsed() {
        assert!(Right::Read < Right::Write && Right::Write < Right::Admin);
        assert_eq!("write".parse::<Right>(), Ok(Right::Write));
        assert!("Write".parse::<Right>().is_err());
    }

    #[test]
    fn covers_any_of_its_patterns() {
        let c = Claims {
            exp: 1,
            iat: None,
            rooms: vec!["notes".into(), "team-*".into()],
            right: Right::Read,
            user: None,
            jti: None,
        };
        assert!(c.covers("notes"));
        assert!(c.covers("team-a/b"));
        assert!(!c.covers("other"));
        assert!(!Claims { rooms: vec![], ..c }.covers(""));
    }
}
