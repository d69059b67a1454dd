//! Room names: the rule every surface (the WebSocket path, the room APIs, the Hocuspocus
//! document name) applies, and how a y-websocket URL names its room. A leaf module, so those
//! surfaces need not import each other.

use axum::http::StatusCode;

/// Why a room name from a URL was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RoomNameError {
    Empty,
    TooLong,
    NotUtf8,
    ControlCharacter,
}

impl RoomNameError {
    /// The HTTP status and the message a client gets.
    pub(crate) fn status(&self) -> (StatusCode, &'static str) {
        match self {
            RoomNameError::Empty => (
                StatusCode::BAD_REQUEST,
                "name a room in the path: ws://HOST/ROOM",
            ),
            RoomNameError::TooLong => (StatusCode::URI_TOO_LONG, "room name too long"),
            RoomNameError::NotUtf8 => (
                StatusCode::BAD_REQUEST,
                "room name is not valid UTF-8 after percent-decoding",
            ),
            RoomNameError::ControlCharacter => (
                StatusCode::BAD_REQUEST,
                "room name contains a control character (U+0000-U+001F, U+007F-U+009F)",
            ),
        }
    }
}

/// The rule every surface applies to a decoded room name: not empty, at most `max_bytes`, no
/// control characters (they would reach logs, terminals and file names of exports unescaped).
pub(crate) fn check_room_name(name: &str, max_bytes: usize) -> Result<(), RoomNameError> {
    if name.is_empty() {
        return Err(RoomNameError::Empty);
    }
    if name.len() > max_bytes {
        return Err(RoomNameError::TooLong);
    }
    if name.chars().any(char::is_control) {
        return Err(RoomNameError::ControlCharacter);
    }
    Ok(())
}

/// The room a WebSocket URL names: the path after the leading `/`, slashes included, query
/// string removed (the reference server's rule), then percent-decoded once. So `/a%20b/c?x=1`
/// is the room `a b/c`.
pub(crate) fn room_name(path: &str, max_bytes: usize) -> Result<String, RoomNameError> {
    let raw = path.strip_prefix('/').unwrap_or(path);
    let name = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| RoomNameError::NotUtf8)?;
    check_room_name(&name, max_bytes)?;
    Ok(name.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names_follow_the_reference_rule_then_decode() {
        assert_eq!(room_name("/my-room", 256).unwrap(), "my-room");
        assert_eq!(room_name("/a%20b/c", 256).unwrap(), "a b/c");
        assert_eq!(room_name("/", 256), Err(RoomNameError::Empty));
        assert_eq!(room_name("/%ff", 256), Err(RoomNameError::NotUtf8));
        assert_eq!(
            room_name("/a%00b", 256),
            Err(RoomNameError::ControlCharacter)
        );
        assert_eq!(
            room_name("/a%1b[2J", 256),
            Err(RoomNameError::ControlCharacter)
        );
        assert_eq!(room_name("/caf%C3%A9 %E2%9C%93", 256).unwrap(), "café ✓");
        assert_eq!(
            room_name(&format!("/{}", "x".repeat(300)), 256),
            Err(RoomNameError::TooLong)
        );
    }
}
