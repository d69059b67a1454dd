//! Room patterns: `*` matches any run of characters, everything else matches itself.
//!
//! The matcher is linear in the pattern plus the room, whatever the pattern: the room a
//! pattern is checked against is not always bounded by `--max-room-name-bytes` (the kick body
//! and the `/api/rooms/{room}` path are authorized before the room name is checked), and a
//! backtracking matcher takes O(pattern × room) steps on patterns like `*aaaaab` against
//! `aaaa…a`.
//!
//! How: the pattern splits at its `*`s into segments. The first must be a prefix of the room,
//! the last a suffix, and the ones between must occur in order, without overlapping, in what
//! is left. Taking each middle segment at its leftmost occurrence never loses a match (a later
//! occurrence leaves less room for the rest), so each is found once with Knuth–Morris–Pratt,
//! which reads every room byte at most twice, and nothing is ever searched again.

/// Whether `room` matches `pattern`, where `*` matches any run of characters (empty and `/`
/// included) and every other character matches itself. Takes O(pattern + room) steps.
pub fn room_matches(pattern: &str, room: &str) -> bool {
    matches(pattern.as_bytes(), room.as_bytes(), &mut 0)
}

/// [`room_matches`], and the steps it took (byte comparisons and table entries), which are at
/// most `2 × (pattern + room)`. For tests and the fuzz target.
pub fn room_matches_with_work(pattern: &str, room: &str) -> (bool, usize) {
    let mut work = 0;
    let matched = matches(pattern.as_bytes(), room.as_bytes(), &mut work);
    (matched, work)
}

/// Bytes are enough: `*` is ASCII, so it never occurs inside a multi-byte UTF-8 character, and
/// byte-wise equality of the segments is character-wise equality.
fn matches(pattern: &[u8], room: &[u8], work: &mut usize) -> bool {
    let mut segments = pattern.split(|&c| c == b'*');
    // `split` yields at least one (possibly empty) segment.
    let first = segments.next().unwrap_or_default();
    *work += first.len();
    let Some(rest) = room.strip_prefix(first) else {
        return false;
    };
    // No `*`: the pattern is the room.
    let Some(last) = segments.next_back() else {
        return rest.is_empty();
    };
    *work += last.len();
    let Some(mut between) = rest.strip_suffix(last) else {
        return false;
    };
    // One table for every segment: a pattern may have thousands.
    let mut border = Vec::new();
    for segment in segments.filter(|s| !s.is_empty()) {
        match find(between, segment, &mut border, work) {
            Some(at) => between = &between[at + segment.len()..],
            None => return false,
        }
    }
    true
}

/// The first occurrence of a non-empty `needle` in `haystack` (Knuth–Morris–Pratt), with
/// `border` as scratch space. Adds at most `2 × (needle + the haystack bytes up to the end of
/// the match)` to `work`.
fn find(
    haystack: &[u8],
    needle: &[u8],
    border: &mut Vec<usize>,
    work: &mut usize,
) -> Option<usize> {
    if needle.len() > haystack.len() {
        return None;
    }
    // `border[i]`: the length of the longest proper prefix of `needle[..=i]` that is also its
    // suffix.
    border.clear();
    border.resize(needle.len(), 0);
    let mut k = 0;
    for i in 1..needle.len() {
        while k > 0 && needle[i] != needle[k] {
            k = border[k - 1];
            *work += 1;
        }
        if needle[i] == needle[k] {
            k += 1;
        }
        border[i] = k;
        *work += 1;
    }
    let mut k = 0;
    for (i, &c) in haystack.iter().enumerate() {
        while k > 0 && c != needle[k] {
            k = border[k - 1];
            *work += 1;
        }
        if c == needle[k] {
            k += 1;
        }
        *work += 1;
        if k == needle.len() {
            return Some(i + 1 - needle.len());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The textbook dynamic program, O(pattern × room): `m[i][j]` is whether the first `i`
    /// pattern bytes match the first `j` room bytes.
    fn reference(pattern: &str, room: &str) -> bool {
        let (p, r) = (pattern.as_bytes(), room.as_bytes());
        let mut m = vec![vec![false; r.len() + 1]; p.len() + 1];
        m[0][0] = true;
        for i in 1..=p.len() {
            for j in 0..=r.len() {
                m[i][j] = if p[i - 1] == b'*' {
                    m[i - 1][j] || (j > 0 && m[i][j - 1])
                } else {
                    j > 0 && m[i - 1][j - 1] && p[i - 1] == r[j - 1]
                };
            }
        }
        m[p.len()][r.len()]
    }

    fn bound(pattern: &str, room: &str) -> usize {
        2 * (pattern.len() + room.len())
    }

    #[test]
    fn patterns_match_like_globs() {
        assert!(room_matches("notes", "notes"));
        assert!(!room_matches("notes", "notes2"));
        assert!(!room_matches("notes2", "notes"));
        assert!(room_matches("team-*", "team-a"));
        assert!(room_matches("team-*", "team-"));
        assert!(room_matches("team-*", "team-a/b"));
        assert!(!room_matches("team-*", "other"));
        assert!(room_matches("*", "anything"));
        assert!(room_matches("*", ""));
        assert!(room_matches("**", ""));
        assert!(room_matches("a*b*c", "a-x-b-y-c"));
        assert!(!room_matches("a*b*c", "a-x-b-y"));
        assert!(room_matches("*-doc", "x-doc"));
        assert!(!room_matches("", "x"));
        assert!(room_matches("", ""));
        // The prefix and the suffix may not share room bytes.
        assert!(!room_matches("ab*ba", "aba"));
        assert!(room_matches("ab*ba", "abba"));
        // Middle segments are found after the prefix and before the suffix.
        assert!(!room_matches("a*a*a", "aa"));
        assert!(room_matches("a*a*a", "aaa"));
        assert!(room_matches("*aab*", "aaab"));
        // Multi-byte characters match whole.
        assert!(room_matches("é*ü", "éxü"));
        assert!(!room_matches("é*ü", "éü!"));
    }

    /// Pins that patterns cannot make matching slow: `*a*a*…*b` (what a backtracking glob
    /// matcher takes exponential time on) and `*aaa…ab` (quadratic for a matcher that
    /// backtracks to the last `*` only) take at most 2 × (pattern + room) steps on a room of
    /// 100,000 `a`s.
    #[test]
    fn pathological_patterns_take_linear_work() {
        let room = "a".repeat(100_000);
        let many_stars = format!("{}b", "*a".repeat(2_000));
        let long_segment = format!("*{}b", "a".repeat(4_000));
        let long_segment_inside = format!("*{}b*", "a".repeat(4_000));
        let stars_then_suffix = format!("{}a", "*".repeat(4_000));
        for pattern in [
            &many_stars,
            &long_segment,
            &long_segment_inside,
            &stars_then_suffix,
        ] {
            let (matched, work) = room_matches_with_work(pattern, &room);
            assert!(work <= bound(pattern, &room), "{work} steps");
            assert_eq!(matched, pattern == &stars_then_suffix);
        }
        // And when they match, after many partial matches.
        let room = format!("{}b", "a".repeat(100_000));
        let (matched, work) = room_matches_with_work(&many_stars, &room);
        assert!(matched);
        assert!(work <= bound(&many_stars, &room), "{work} steps");
    }

    proptest! {
        /// Small alphabets make stars, repeats and near misses common.
        #[test]
        fn agrees_with_the_reference_within_the_bound(
            pattern in "[ab*]{0,12}",
            room in "[ab]{0,16}",
        ) {
            let (matched, work) = room_matches_with_work(&pattern, &room);
            prop_assert_eq!(matched, reference(&pattern, &room));
            prop_assert!(work <= bound(&pattern, &room));
        }

        #[test]
        fn agrees_with_the_reference_on_any_text(pattern in ".{0,8}", room in ".{0,12}") {
            prop_assert_eq!(room_matches(&pattern, &room), reference(&pattern, &room));
        }
    }
}
