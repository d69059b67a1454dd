//! How sqlx's SQLite connection answers a query (`vendor/sqlx-sqlite`): `fetch_all` and
//! `execute` wake the task that waits for them once, when the whole query is done. A strict
//! group commit is one query of several statements; sqlx 0.8.6 sent each statement's result
//! and each row as its own message from SQLite's thread, and each woke the waiting runtime
//! thread (bench/README.md, "fifteenth round"). Answered once, a query also runs to its end
//! on that thread whether or not its caller still waits.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};

use sqlx::{Connection, SqliteConnection};

/// Counts its wake-ups and unparks the polling thread.
struct Counting {
    wakes: AtomicUsize,
    thread: Thread,
}

impl Wake for Counting {
    fn wake(self: Arc<Self>) {
        self.wakes.fetch_add(1, Ordering::SeqCst);
        self.thread.unpark();
    }
}

/// Polls `fut` to completion on this thread, and returns its output and how many times it
/// woke this thread.
fn wakes_to_finish<F: Future>(fut: F) -> (F::Output, usize) {
    let counting = Arc::new(Counting {
        wakes: AtomicUsize::new(0),
        thread: std::thread::current(),
    });
    let waker = Waker::from(counting.clone());
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return (out, counting.wakes.load(Ordering::SeqCst));
        }
        assert!(
            Instant::now() < deadline,
            "the query did not finish in 30 s"
        );
        std::thread::park_timeout(Duration::from_millis(100));
    }
}

/// Statements that answer at different times: a row, then a row after some tens of
/// milliseconds of work (time enough for the waiting task to be polled and wait again), then
/// a row.
const SPREAD_OUT: &str = "SELECT 1; \
    WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 200000) \
    SELECT count(*) FROM c; \
    SELECT 2";

/// A runtime for sqlx to connect with, and a connection to a database in memory.
fn in_memory() -> (tokio::runtime::Runtime, SqliteConnection) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let conn = rt
        .block_on(SqliteConnection::connect("sqlite::memory:"))
        .unwrap();
    (rt, conn)
}

#[test]
fn a_query_of_several_statements_wakes_its_caller_once() {
    let (rt, mut conn) = in_memory();

    // At most once: not at all, should the answer come before the first poll waits for it.
    let (rows, wakes) = wakes_to_finish(sqlx::query(SPREAD_OUT).fetch_all(&mut conn));
    assert_eq!(rows.unwrap().len(), 3);
    assert!(
        wakes <= 1,
        "fetch_all woke its caller {wakes} times for one query"
    );

    let (done, wakes) = wakes_to_finish(
        sqlx::query(
            "CREATE TABLE t (x); INSERT INTO t VALUES (1), (2); \
             WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 200000) \
             INSERT INTO t SELECT count(*) FROM c",
        )
        .execute(&mut conn),
    );
    assert_eq!(done.unwrap().rows_affected(), 3, "rows of both inserts");
    assert!(
        wakes <= 1,
        "execute woke its caller {wakes} times for one query"
    );

    rt.block_on(conn.close()).unwrap();
}

/// A query handed to SQLite's thread runs to its end even when its caller stops waiting: a
/// group of statements that opens and commits a transaction never leaves it open. (sqlx 0.8.6
/// stopped at the first result nobody took, after the `BEGIN`.)
#[test]
fn a_query_whose_caller_stops_waiting_still_runs_to_its_end() {
    let (rt, mut conn) = in_memory();
    rt.block_on(sqlx::query("CREATE TABLE t (x)").execute(&mut conn))
        .unwrap();

    {
        let abandoned = sqlx::query(
            "BEGIN; INSERT INTO t VALUES (1); \
             WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 200000) \
             INSERT INTO t SELECT count(*) FROM c; \
             COMMIT",
        )
        .execute(&mut conn);
        let mut abandoned = std::pin::pin!(abandoned);
        let waker = Waker::noop();
        // One poll hands the query to the thread; then the caller gives up.
        assert!(abandoned
            .as_mut()
            .poll(&mut Context::from_waker(waker))
            .is_pending());
    }

    let rows: i64 = rt
        .block_on(sqlx::query_scalar("SELECT count(*) FROM t").fetch_one(&mut conn))
        .unwrap();
    assert_eq!(rows, 2, "the abandoned query stopped half-way");
    // No transaction was left open: a new one can begin.
    rt.block_on(sqlx::query("BEGIN; COMMIT").execute(&mut conn))
        .unwrap();
    rt.block_on(conn.close()).unwrap();
}
