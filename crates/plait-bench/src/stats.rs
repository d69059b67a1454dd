//! Latency histograms and process statistics read from /proc.

use std::sync::OnceLock;
use std::time::Instant;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since the generator started (monotonic). Never 0 once started.
pub fn now_ns() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64 + 1
}

/// Log-linear histogram of microsecond values: exact below 64 µs, then 32 sub-buckets per
/// power of two (about 3% resolution). Small (about 4 KB) so every receiver keeps its own.
#[derive(Clone, Debug)]
pub struct Histogram {
    buckets: Vec<u32>,
    pub count: u64,
    pub max_us: u64,
    pub sum_us: u64,
}

const SUB_BITS: u32 = 5;
const SUB: u64 = 1 << SUB_BITS;
const N_BUCKETS: usize = 64 + 40 * SUB as usize;

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    pub fn new() -> Self {
        Histogram {
            buckets: Vec::new(),
            count: 0,
            max_us: 0,
            sum_us: 0,
        }
    }

    fn index(v: u64) -> usize {
        if v < 64 {
            return v as usize;
        }
        let b = 63 - v.leading_zeros() as u64; // >= 6
        let mantissa = (v >> (b - SUB_BITS as u64)) & (SUB - 1);
        (64 + (b - 6) * SUB + mantissa).min(N_BUCKETS as u64 - 1) as usize
    }

    fn value(i: usize) -> f64 {
        if i < 64 {
            return i as f64;
        }
        let i = i as u64 - 64;
        let b = i / SUB + 6;
        let mantissa = i % SUB;
        let lo = (SUB + mantissa) << (b - SUB_BITS as u64);
        let width = 1u64 << (b - SUB_BITS as u64);
        lo as f64 + width as f64 / 2.0
    }

    pub fn record_us(&mut self, us: u64) {
        if self.buckets.is_empty() {
            self.buckets = vec![0; N_BUCKETS];
        }
        self.buckets[Self::index(us)] += 1;
        self.count += 1;
        self.sum_us += us;
        self.max_us = self.max_us.max(us);
    }

    pub fn merge(&mut self, other: &Histogram) {
        if other.buckets.is_empty() {
            return;
        }
        if self.buckets.is_empty() {
            self.buckets = vec![0; N_BUCKETS];
        }
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += *b;
        }
        self.count += other.count;
        self.sum_us += other.sum_us;
        self.max_us = self.max_us.max(other.max_us);
    }

    /// The q-quantile (0..=1) in microseconds.
    pub fn quantile_us(&self, q: f64) -> f64 {
        if self.count == 0 {
            return f64::NAN;
        }
        let target = ((self.count as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0u64;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += *n as u64;
            if seen >= target {
                return Self::value(i).min(self.max_us as f64);
            }
        }
        self.max_us as f64
    }

    pub fn p_ms(&self, q: f64) -> f64 {
        self.quantile_us(q) / 1000.0
    }

    pub fn max_ms(&self) -> f64 {
        if self.count == 0 {
            f64::NAN
        } else {
            self.max_us as f64 / 1000.0
        }
    }
}

/// CPU seconds (user + system) and resident memory of one process.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcSample {
    pub user_s: f64,
    pub sys_s: f64,
    pub rss_kib: u64,
    pub hwm_kib: u64,
    pub threads: u64,
}

fn clk_tck() -> f64 {
    // sysconf is safe to call; it only reads a constant.
    #[allow(unsafe_code)]
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// Reads /proc/<pid>/stat and /proc/<pid>/status; `None` for the generator itself.
pub fn sample(pid: Option<u32>) -> Option<ProcSample> {
    let base = match pid {
        Some(p) => format!("/proc/{p}"),
        None => "/proc/self".to_owned(),
    };
    let stat = std::fs::read_to_string(format!("{base}/stat")).ok()?;
    let (utime, stime, threads) = parse_stat(&stat)?;
    let status = std::fs::read_to_string(format!("{base}/status")).ok()?;
    let kib = |key: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let tck = clk_tck();
    Some(ProcSample {
        user_s: utime as f64 / tck,
        sys_s: stime as f64 / tck,
        rss_kib: kib("VmRSS:"),
        hwm_kib: kib("VmHWM:"),
        threads,
    })
}

/// The context switches, voluntary or not, of every live thread of process `pid`: its
/// `/proc/<pid>/status` counts its main thread's only. A thread that ends between the listing
/// and the read is left out. Read at a phase's edges only (a read per thread), not with every
/// [`sample`].
fn thread_switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("status")).ok())
        .map(|status| parse_switches(&status))
        .sum()
}

/// Voluntary plus involuntary context switches, from the text of a thread's `status`.
fn parse_switches(status: &str) -> u64 {
    status
        .lines()
        .filter_map(|l| {
            let rest = l
                .strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| l.strip_prefix("nonvoluntary_ctxt_switches:"))?;
            rest.trim().parse::<u64>().ok()
        })
        .sum()
}

impl ProcSample {
    /// User plus system time.
    pub fn cpu_s(&self) -> f64 {
        self.user_s + self.sys_s
    }
}

/// User time and system time in clock ticks, and the number of threads, from the text of
/// `/proc/<pid>/stat` (the command name may hold spaces and parentheses: fields are counted
/// from its last `)`).
fn parse_stat(stat: &str) -> Option<(u64, u64, u64)> {
    let after = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // fields[0] is field 3 (state); utime is field 14, stime 15, num_threads 20.
    let utime = fields.get(11)?.parse().ok()?;
    let stime = fields.get(12)?.parse().ok()?;
    let threads = fields.get(17)?.parse().ok()?;
    Some((utime, stime, threads))
}

/// Adds the server's CPU per delivered frame, in µs, to a record that has `server_cpu_s`,
/// `server_user_s` and `server_sys_s`: `server_us_per_delivery` and its user and system parts
/// (the system part is mostly the kernel's loopback sends, the floor any server pays); and,
/// from `server_switches`, its context switches per thousand deliveries (a server whose
/// threads wake each other, or share a CPU with the generator's, switches per frame).
pub fn per_delivery(m: &mut serde_json::Map<String, serde_json::Value>, deliveries: u64) {
    if deliveries == 0 {
        return;
    }
    if let Some(n) = m.get("server_switches").and_then(serde_json::Value::as_f64) {
        m.insert(
            "server_switches_per_1k_deliveries".into(),
            num(n * 1e3 / deliveries as f64),
        );
    }
    for (from, to) in [
        ("server_cpu_s", "server_us_per_delivery"),
        ("server_user_s", "server_user_us_per_delivery"),
        ("server_sys_s", "server_sys_us_per_delivery"),
    ] {
        if let Some(s) = m.get(from).and_then(serde_json::Value::as_f64) {
            m.insert(to.into(), num(s * 1e6 / deliveries as f64));
        }
    }
}

/// Server and generator usage over one measured phase.
#[derive(Clone, Copy, Debug)]
pub struct Usage {
    server_pid: Option<u32>,
    server0: Option<ProcSample>,
    server_switches0: u64,
    gen0: ProcSample,
    t0: Instant,
}

impl Usage {
    pub fn start(server_pid: Option<u32>) -> Self {
        Usage {
            server_pid,
            server0: server_pid.and_then(|p| sample(Some(p))),
            server_switches0: server_pid.map_or(0, thread_switches),
            gen0: sample(None).unwrap_or_default(),
            t0: Instant::now(),
        }
    }

    /// Adds `server_cpu_s` (and its parts `server_user_s`, `server_sys_s`), `server_cpu_pct`,
    /// `server_rss_kib`, `server_switches`, `gen_cpu_s`, `gen_cpu_pct` and `wall_s` to `m`.
    pub fn finish(&self, m: &mut serde_json::Map<String, serde_json::Value>) {
        let wall = self.t0.elapsed().as_secs_f64();
        let gen1 = sample(None).unwrap_or_default();
        m.insert("wall_s".into(), num(wall));
        m.insert("gen_cpu_s".into(), num(gen1.cpu_s() - self.gen0.cpu_s()));
        m.insert(
            "gen_cpu_pct".into(),
            num(100.0 * (gen1.cpu_s() - self.gen0.cpu_s()) / wall),
        );
        if let (Some(pid), Some(s0)) = (self.server_pid, self.server0) {
            if let Some(s1) = sample(Some(pid)) {
                m.insert("server_cpu_s".into(), num(s1.cpu_s() - s0.cpu_s()));
                m.insert("server_user_s".into(), num(s1.user_s - s0.user_s));
                m.insert("server_sys_s".into(), num(s1.sys_s - s0.sys_s));
                m.insert(
                    "server_cpu_pct".into(),
                    num(100.0 * (s1.cpu_s() - s0.cpu_s()) / wall),
                );
                m.insert("server_rss_kib".into(), serde_json::json!(s1.rss_kib));
                m.insert("server_rss_peak_kib".into(), serde_json::json!(s1.hwm_kib));
                m.insert("server_threads".into(), serde_json::json!(s1.threads));
                m.insert(
                    "server_switches".into(),
                    serde_json::json!(thread_switches(pid).saturating_sub(self.server_switches0)),
                );
            }
        }
    }
}

pub fn num(v: f64) -> serde_json::Value {
    if v.is_finite() {
        serde_json::json!((v * 1000.0).round() / 1000.0)
    } else {
        serde_json::Value::Null
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A command name with spaces and a parenthesis does not shift the fields; user, system
    /// and threads come from fields 14, 15 and 20.
    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let stat = "4242 (tokio (rt) w) S 1 4242 4242 0 -1 4194560 2106 0 0 0 \
                    731 219 0 0 20 0 6 0 123456 1048576 4321 18446744073709551615";
        assert_eq!(parse_stat(stat), Some((731, 219, 6)));
        assert_eq!(parse_stat("4242 (cut short) S 1"), None);
    }

    /// CPU per delivery in µs, each part from its own total; nothing for no deliveries.
    #[test]
    fn cpu_per_delivery_splits_user_and_system() {
        let mut m = serde_json::Map::new();
        m.insert("server_cpu_s".into(), num(3.0));
        m.insert("server_user_s".into(), num(1.0));
        m.insert("server_sys_s".into(), num(2.0));
        m.insert("server_switches".into(), serde_json::json!(1500));
        per_delivery(&mut m, 500_000);
        assert_eq!(m["server_switches_per_1k_deliveries"], num(3.0));
        assert_eq!(m["server_us_per_delivery"], num(6.0));
        assert_eq!(m["server_user_us_per_delivery"], num(2.0));
        assert_eq!(m["server_sys_us_per_delivery"], num(4.0));
        let mut empty = serde_json::Map::new();
        empty.insert("server_cpu_s".into(), num(3.0));
        per_delivery(&mut empty, 0);
        assert_eq!(empty.len(), 1);
    }

    /// Both kinds of switch are counted, nothing else that ends in a number.
    #[test]
    fn switches_are_voluntary_plus_involuntary() {
        let status = "Name:\ttokio-rt-worker\nThreads:\t6\nvoluntary_ctxt_switches:\t1753\n\
                      nonvoluntary_ctxt_switches:\t  412\n";
        assert_eq!(parse_switches(status), 2165);
        assert_eq!(parse_switches("Name:\tx\n"), 0);
        // This process has at least its main thread, which has been switched out before.
        assert!(thread_switches(std::process::id()) > 0);
    }

    #[test]
    fn histogram_quantiles_are_close() {
        let mut h = Histogram::new();
        for v in 1..=100_000u64 {
            h.record_us(v);
        }
        let p50 = h.quantile_us(0.5);
        let p99 = h.quantile_us(0.99);
        assert!((p50 - 50_000.0).abs() / 50_000.0 < 0.04, "{p50}");
        assert!((p99 - 99_000.0).abs() / 99_000.0 < 0.04, "{p99}");
        assert_eq!(h.max_us, 100_000);
    }
}
