//! Row decoding shared by the SQL stores: both name the same columns, only the database
//! differs. `try_get` turns a column of an unexpected type into an error, never a panic.

use bytes::Bytes;
use sqlx::{ColumnIndex, Decode, Row, Type};

use crate::{Error, LoggedUpdate, Revocation, Snapshot, SnapshotKind, StoredValue};

/// A stored integer that must not be negative.
pub(crate) fn to_u64(v: i64, what: &str) -> Result<u64, Error> {
    u64::try_from(v).map_err(|_| Error::Corrupt(format!("negative {what}: {v}")))
}

/// A snapshot from `up_to_seq, kind, data, state_vector, created_at_ms, values_state` (the
/// last may be NULL).
pub(crate) fn snapshot<R>(row: &R) -> Result<Snapshot, Error>
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(Snapshot {
        up_to_seq: to_u64(row.try_get("up_to_seq")?, "snapshot seq")?,
        kind: SnapshotKind::parse(&row.try_get::<String, _>("kind")?)?,
        data: Bytes::from(row.try_get::<Vec<u8>, _>("data")?),
        state_vector: Bytes::from(row.try_get::<Vec<u8>, _>("state_vector")?),
        created_at_ms: row.try_get("created_at_ms")?,
        values: row
            .try_get::<Option<Vec<u8>>, _>("values_state")?
            .map(Bytes::from),
    })
}

/// A log entry from `seq, data`.
pub(crate) fn logged_update<R>(row: &R) -> Result<LoggedUpdate, Error>
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(LoggedUpdate {
        seq: to_u64(row.try_get("seq")?, "update seq")?,
        data: Bytes::from(row.try_get::<Vec<u8>, _>("data")?),
    })
}

/// A revocation from `user_name, jti, issued_before, created_at_ms` (the first three may be
/// NULL).
pub(crate) fn revocation<R>(row: &R) -> Result<Revocation, Error>
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
{
    let before: Option<i64> = row.try_get("issued_before")?;
    Ok(Revocation {
        user: row.try_get("user_name")?,
        jti: row.try_get("jti")?,
        issued_before: before.map(|t| to_u64(t, "revocation time")).transpose()?,
        created_at_ms: row.try_get("created_at_ms")?,
    })
}

/// A CRDT value row from `name, kind, state`.
pub(crate) fn stored_value<R>(row: &R) -> Result<StoredValue, Error>
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(StoredValue {
        name: row.try_get("name")?,
        kind: row.try_get("kind")?,
        state: Bytes::from(row.try_get::<Vec<u8>, _>("state")?),
    })
}
