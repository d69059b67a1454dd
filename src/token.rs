//! `plait token`: prints an HS256 token for development and scripts.

use std::io::Write;

use anyhow::Context;
use plait_server::auth::{issue_hs256, now_secs, Claims, Right};

/// What `plait token` is told.
#[derive(Debug, clap::Args)]
pub(crate) struct TokenArgs {
    /// The server's --auth-secret (at least 32 bytes).
    #[arg(long, env = "PLAIT_AUTH_SECRET", hide_env_values = true)]
    secret: String,
    /// A room name or pattern (`*` matches any run of characters); repeat for several.
    #[arg(long, required = true)]
    room: Vec<String>,
    /// read, write or admin.
    #[arg(long, default_value = "write")]
    right: Right,
    /// How long the token is valid: a number with s, m, h or d (`90s`, `15m`, `1h`, `7d`).
    #[arg(long, default_value = "1h", value_parser = parse_ttl)]
    ttl: u64,
    /// A user name, stamped into the holder's awareness state as verified.
    #[arg(long)]
    user: Option<String>,
    /// A token id, which `POST /api/admin/revoke` with `{"jti": ID}` can take back.
    #[arg(long)]
    jti: Option<String>,
}

/// Prints the token and a newline to `out`.
pub(crate) fn run(args: TokenArgs, out: &mut impl Write) -> anyhow::Result<()> {
    if args.secret.len() < 32 {
        anyhow::bail!("--secret must be at least 32 bytes, like the server's --auth-secret");
    }
    let now = now_secs();
    let claims = Claims {
        exp: now + args.ttl,
        iat: Some(now),
        rooms: args.room,
        right: args.right,
        user: args.user,
        jti: args.jti,
    };
    let token = issue_hs256(&args.secret, &claims).context("signing the token")?;
    writeln!(out, "{token}").context("writing the token")?;
    Ok(())
}

/// Parses `90s`, `15m`, `1h`, `7d` (or plain seconds) into seconds.
fn parse_ttl(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (number, unit) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&s[..i], c),
        _ => (s, 's'),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 90s, 15m, 1h or 7d"))?;
    let unit = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return Err(format!("unknown unit in {s:?}: use s, m, h or d")),
    };
    n.checked_mul(unit)
        .filter(|&secs| secs > 0)
        .ok_or_else(|| format!("{s:?} is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_parse() {
        assert_eq!(parse_ttl("90s"), Ok(90));
        assert_eq!(parse_ttl("15m"), Ok(900));
        assert_eq!(parse_ttl("1h"), Ok(3600));
        assert_eq!(parse_ttl("7d"), Ok(604_800));
        assert_eq!(parse_ttl("120"), Ok(120));
        assert!(parse_ttl("0s").is_err());
        assert!(parse_ttl("1w").is_err());
        assert!(parse_ttl("h").is_err());
    }
}
