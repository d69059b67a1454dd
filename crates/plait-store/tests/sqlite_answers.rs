//! How sqlx's SQLite connection answers a query (`vendor/sqlx-sqlite`): `fetch_all` and
//! `execute` wake the task that waits for them once, when the whole query is done. A strict
//! group commit is one query of several statements; sqlx 0.8.6 sent each statement's result
//! and each row as its own message from SQLite's thread, and each woke the waiting runtime
//! thread (bench/README.md, "fifteenth round").

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

#[test]
fn a_query_of_several_statements_wakes_its_caller_once() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut conn = rt
        .block_on(SqliteConnection::connect("sqlite::memory:"))
        .unwrap();

    let (rows, wakes) = wakes_to_finish(sqlx::query(SPREAD_OUT).fetch_all(&mut conn));
    assert_eq!(rows.unwrap().len(), 3);
    assert_eq!(
        wakes, 1,
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
    assert_eq!(
        wakes, 1,
        "execute woke its caller {wakes} times for one query"
    );

    rt.block_on(conn.close()).unwrap();
}
