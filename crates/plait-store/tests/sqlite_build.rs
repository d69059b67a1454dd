//! How the bundled SQLite is compiled: libsqlite3-sys takes extra C flags from
//! `LIBSQLITE3_FLAGS`, which the workspace's `.cargo/config.toml` sets.

/// SQLite is built to sync its WAL with `fdatasync`, as SQLite's own Linux build does, not
/// `fsync`: on a journaling file system `fsync` also commits the journal for the WAL's new
/// mtime, and a strict commit took 32-39% longer (bench/README.md, "eleventh round").
/// libsqlite3-sys's build script and this test are compiled by the same cargo run, so both see
/// the same flags; `.ci/run` checks the calls themselves, under strace, on the release binary.
#[test]
fn the_bundled_sqlite_is_built_to_sync_with_fdatasync() {
    let flags = option_env!("LIBSQLITE3_FLAGS").unwrap_or_default();
    assert!(
        flags
            .split_whitespace()
            .any(|flag| flag == "-DHAVE_FDATASYNC=1" || flag == "-DHAVE_FDATASYNC"),
        "SQLite is compiled without HAVE_FDATASYNC (LIBSQLITE3_FLAGS = {flags:?}): \
         .cargo/config.toml sets it; keep it in any LIBSQLITE3_FLAGS of your own"
    );
}
