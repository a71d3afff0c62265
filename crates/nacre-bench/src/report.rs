//! Results: streamed as JSON lines, or gathered into one table per workload.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

/// One engine's result on one workload.
#[derive(Clone, Debug, Serialize)]
pub struct Measurement {
    pub engine: String,
    pub workload: String,
    /// Operations per second; `None` for a workload that is not a stream of
    /// operations (compaction).
    pub ops_per_s: Option<f64>,
    /// Sum of the sizes of the files in the engine's directory, measured
    /// right after the workload.
    pub bytes_on_disk: u64,
    /// Blocks allocated to those files, in bytes (as `du` counts).
    pub bytes_allocated: u64,
    pub ops: u64,
    pub secs: f64,
    /// Reads that missed an existing key, returned a wrong value, or ranges
    /// out of order. Any non-zero count fails the run.
    #[serde(skip_serializing_if = "is_zero")]
    pub errors: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The round of `--rounds` it came from, from 0.
    pub round: u32,
    /// Set C, on nacre's measurements: nacre's rate divided by each other
    /// engine's, slice by slice.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub by_slice: Vec<SliceRatios>,
}

/// Nacre's rate divided by another engine's over slices of the same work
/// done in turns: the median and the middle half of the slices' ratios.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct SliceRatios {
    pub other: String,
    pub slices: usize,
    pub median: f64,
    pub q1: f64,
    pub q3: f64,
}

impl SliceRatios {
    /// From the seconds each slice took nacre and the other engine (the
    /// same work in both, so a rate ratio is the other's time over nacre's).
    pub fn of(other: &str, nacre_secs: &[f64], other_secs: &[f64]) -> SliceRatios {
        assert_eq!(nacre_secs.len(), other_secs.len(), "slices pair up");
        assert!(!nacre_secs.is_empty(), "at least one slice");
        let mut ratios: Vec<f64> = nacre_secs
            .iter()
            .zip(other_secs)
            .map(|(&n, &o)| o / n.max(1e-9))
            .collect();
        // `median` sorts them, for the quartiles too.
        let mid = median(&mut ratios).expect("not empty");
        // Nearest-rank quartiles: plain, and enough for a summary.
        let at = |q: f64| ratios[((ratios.len() - 1) as f64 * q).round() as usize];
        let r = SliceRatios {
            other: other.to_string(),
            slices: ratios.len(),
            median: mid,
            q1: at(0.25),
            q3: at(0.75),
        };
        debug_assert!(r.q1 <= r.median && r.median <= r.q3);
        r
    }
}

impl std::fmt::Display for SliceRatios {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "nacre ÷ {} slice by slice: median {:.2}, middle half {:.2}–{:.2} ({} slices)",
            self.other, self.median, self.q1, self.q3, self.slices
        )
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Space taken by the files under a directory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiskUsage {
    /// Sum of the file sizes (what `ls -l` shows).
    pub apparent: u64,
    /// Sum of the blocks allocated to them (what `du` shows). Lower than
    /// `apparent` for sparse files, such as a preallocated journal made with
    /// `set_len`.
    pub allocated: u64,
}

/// Adds up the sizes of all files under `dir`.
pub fn dir_size(dir: &Path) -> DiskUsage {
    use std::os::unix::fs::MetadataExt;

    let mut total = DiskUsage::default();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return total;
    };
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else {
            // A file removed by a background compaction while we looked.
            continue;
        };
        if meta.is_dir() {
            let sub = dir_size(&entry.path());
            total.apparent += sub.apparent;
            total.allocated += sub.allocated;
        } else {
            total.apparent += meta.len();
            total.allocated += meta.blocks() * 512;
        }
    }
    total
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: &[&str] = &["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `1234567.8` as `1,234,568`.
pub fn human_rate(r: f64) -> String {
    let whole = r.round() as u64;
    let digits = whole.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// An engine's median round on a workload: the measurement with the median
/// rate (the lower middle one for an even count), or the first one for a
/// workload without a rate.
fn median_round<'a>(
    results: &'a [Measurement],
    engine: &str,
    workload: &str,
) -> Option<&'a Measurement> {
    let mut ms: Vec<&Measurement> = results
        .iter()
        .filter(|m| m.engine == engine && m.workload == workload)
        .collect();
    if ms.iter().any(|m| m.ops_per_s.is_none()) {
        return ms.first().copied();
    }
    ms.sort_by(|a, b| {
        a.ops_per_s
            .partial_cmp(&b.ops_per_s)
            .expect("rates are finite")
    });
    let n = ms.len();
    (n > 0).then(|| ms[(n - 1) / 2])
}

/// The median of `xs` (mean of the middle two for an even count).
fn median(xs: &mut [f64]) -> Option<f64> {
    xs.sort_by(|a, b| a.partial_cmp(b).expect("ratios are finite"));
    let n = xs.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(xs[n / 2]),
        _ => Some((xs[n / 2 - 1] + xs[n / 2]) / 2.0),
    }
}

/// Nacre's rate divided by each other engine's, round by round, with the
/// median of those ratios: what to quote when the machine drifts.
pub fn print_ratios_by_round(results: &[Measurement], engines: &[&str], rounds: u32) {
    let mut order: Vec<&str> = Vec::new();
    for m in results {
        if m.ops_per_s.is_some() && !order.contains(&m.workload.as_str()) {
            order.push(&m.workload);
        }
    }
    let rate = |e: &str, w: &str, r: u32| {
        results
            .iter()
            .find(|m| m.engine == e && m.workload == w && m.round == r)
            .and_then(|m| m.ops_per_s)
    };
    let heads: String = (1..=rounds)
        .map(|r| format!(" {:>8}", format!("round {r}")))
        .collect();
    for &other in engines.iter().filter(|&&e| e != "nacre") {
        println!();
        println!("nacre ÷ {other}, round by round, and the median of the rounds' ratios");
        println!("  {:<20}{heads} {:>8}", "workload", "median");
        for &w in &order {
            let mut ratios = Vec::new();
            let mut cells = String::new();
            for r in 0..rounds {
                match (rate("nacre", w, r), rate(other, w, r)) {
                    (Some(a), Some(b)) if b > 0.0 => {
                        ratios.push(a / b);
                        cells.push_str(&format!(" {:>8.2}", a / b));
                    }
                    _ => cells.push_str(&format!(" {:>8}", "-")),
                }
            }
            let med = median(&mut ratios).map_or_else(|| "-".to_string(), |m| format!("{m:.2}"));
            println!("  {w:<20}{cells} {med:>8}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(engine: &str, round: u32, ops_per_s: Option<f64>) -> Measurement {
        Measurement {
            engine: engine.into(),
            workload: "w".into(),
            ops_per_s,
            bytes_on_disk: 0,
            bytes_allocated: 0,
            ops: 1,
            secs: 1.0,
            errors: 0,
            note: None,
            round,
            by_slice: Vec::new(),
        }
    }

    #[test]
    fn the_median_round_is_picked_by_rate() {
        let rs = vec![
            m("nacre", 0, Some(30.0)),
            m("nacre", 1, Some(10.0)),
            m("nacre", 2, Some(20.0)),
            m("redb", 0, Some(5.0)),
        ];
        assert_eq!(median_round(&rs, "nacre", "w").unwrap().round, 2);
        assert_eq!(median_round(&rs, "redb", "w").unwrap().round, 0);
        assert!(median_round(&rs, "fjall", "w").is_none());
        let no_rate = vec![m("nacre", 0, None), m("nacre", 1, None)];
        assert_eq!(median_round(&no_rate, "nacre", "w").unwrap().round, 0);
    }

    #[test]
    fn slice_ratios_pair_the_slices_up() {
        // nacre took 1 s per slice; the other took 1, 2, 3, 4, 5 s: rate
        // ratios 1..=5, whatever order the slices came in.
        let nacre = [1.0; 5];
        let other = [3.0, 1.0, 5.0, 2.0, 4.0];
        let r = SliceRatios::of("redb", &nacre, &other);
        assert_eq!(r.slices, 5);
        assert_eq!((r.q1, r.median, r.q3), (2.0, 3.0, 4.0));
        assert_eq!(r.other, "redb");
        // A ratio is per slice, not of the totals: nacre fast where the
        // other is slow and slow where it is fast.
        let r = SliceRatios::of("x", &[1.0, 4.0], &[2.0, 2.0]);
        assert_eq!(r.median, (2.0 + 0.5) / 2.0);
        assert!(r
            .to_string()
            .contains("nacre ÷ x slice by slice: median 1.25"));
    }

    #[test]
    fn medians_of_ratios() {
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }
}

/// An engine whose run stopped on an error or panic.
#[derive(Clone, Debug)]
pub struct Failure {
    pub engine: String,
    pub set: String,
    pub message: String,
}

/// Prints one block per workload, in the order the workloads first ran:
/// each engine's rate, time and footprint (file sizes, and blocks allocated),
/// and nacre's figures divided by the engine's (a rate ratio above 1 means
/// nacre was faster, a size ratio below 1 means nacre used less disk).
pub fn print_tables(
    results: &[Measurement],
    failures: &[Failure],
    engines: &[&str],
    descriptions: &BTreeMap<String, String>,
) {
    println!(
        "÷x columns: nacre's figure divided by that engine's \
         (ops/s above 1: nacre faster; disk below 1: nacre smaller)"
    );
    let mut order: Vec<&str> = Vec::new();
    for m in results {
        if !order.contains(&m.workload.as_str()) {
            order.push(&m.workload);
        }
    }
    for workload in order {
        let desc = descriptions.get(workload).map(String::as_str).unwrap_or("");
        println!();
        println!("{workload}  {desc}");
        println!(
            "  {:<8} {:>12} {:>9} {:>11} {:>11} {:>9} {:>9} {:>9}",
            "engine", "ops/s", "secs", "on disk", "allocated", "÷x ops/s", "÷x disk", "÷x alloc"
        );
        let find = |e: &str| median_round(results, e, workload);
        let nacre = find("nacre");
        for &engine in engines {
            let Some(m) = find(engine) else {
                let why = if failures.iter().any(|f| f.engine == engine) {
                    "FAILED (see below)"
                } else {
                    "not run"
                };
                println!("  {engine:<9} {why}");
                continue;
            };
            let rate = m.ops_per_s.map(human_rate).unwrap_or_else(|| "-".into());
            let ratio = |a: f64, b: f64| {
                if b > 0.0 {
                    format!("{:.2}", a / b)
                } else {
                    "-".into()
                }
            };
            let (rate_ratio, disk_ratio, alloc_ratio) = match nacre {
                Some(n) if engine != "nacre" => (
                    match (n.ops_per_s, m.ops_per_s) {
                        (Some(a), Some(b)) => ratio(a, b),
                        _ => "-".into(),
                    },
                    ratio(n.bytes_on_disk as f64, m.bytes_on_disk as f64),
                    ratio(n.bytes_allocated as f64, m.bytes_allocated as f64),
                ),
                _ => ("-".into(), "-".into(), "-".into()),
            };
            let errors = if m.errors > 0 {
                format!("  ERRORS: {}", m.errors)
            } else {
                String::new()
            };
            println!(
                "  {:<8} {:>12} {:>9.3} {:>11} {:>11} {:>9} {:>9} {:>9}{errors}",
                engine,
                rate,
                m.secs,
                human_bytes(m.bytes_on_disk),
                human_bytes(m.bytes_allocated),
                rate_ratio,
                disk_ratio,
                alloc_ratio
            );
        }
        if let Some(n) = nacre {
            for r in &n.by_slice {
                println!("  {r}");
            }
        }
    }
    if !failures.is_empty() {
        println!();
        println!("FAILURES");
        for f in failures {
            println!("  {} (set {}): {}", f.engine, f.set, f.message);
        }
    }
}
