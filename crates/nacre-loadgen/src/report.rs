//! What a run measured, as text or JSON.

use serde::{Deserialize, Serialize};

use crate::histogram::Summary;

/// One run of one workload against one target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// "nacre" or "etcd".
    pub target: String,
    /// put, get, mixed or sequence.
    pub workload: String,
    /// The workload with its parameters, e.g. `get(consistent)`.
    pub label: String,
    pub consistency: String,
    pub clients: usize,
    pub connections: usize,
    pub key_size: usize,
    pub value_size: usize,
    pub keys: u64,
    pub read_percent: u8,
    pub sequence_len: usize,
    /// Operations that succeeded inside the measured window.
    pub ops: u64,
    pub errors: u64,
    /// Reads that found no value (0 unless keys were not preloaded).
    pub misses: u64,
    pub elapsed_s: f64,
    pub ops_per_s: f64,
    /// Latency percentiles, microseconds.
    pub latency_us: Summary,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
    /// (latency µs, cumulative fraction), when asked for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cdf: Vec<(u64, f64)>,
}

fn ms(us: u64) -> String {
    format!("{:.3} ms", us as f64 / 1000.0)
}

impl Report {
    pub fn json(&self) -> String {
        serde_json::to_string(self).expect("a report serializes")
    }

    /// A few human-readable lines.
    pub fn text(&self) -> String {
        let l = &self.latency_us;
        let mut s = format!(
            "{} {}: {} clients over {} connections, keys {} B, values {} B, {} keys\n",
            self.target,
            self.label,
            self.clients,
            self.connections,
            self.key_size,
            self.value_size,
            self.keys
        );
        s += &format!(
            "  {} ops in {:.2} s: {:.0} ops/s; {} errors, {} misses\n",
            self.ops, self.elapsed_s, self.ops_per_s, self.errors, self.misses
        );
        s += &format!(
            "  latency: mean {:.3} ms, p50 {}, p90 {}, p99 {}, p99.9 {}, max {}\n",
            l.mean / 1000.0,
            ms(l.p50),
            ms(l.p90),
            ms(l.p99),
            ms(l.p999),
            ms(l.max)
        );
        if let Some(e) = &self.first_error {
            s += &format!("  first error: {e}\n");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        Report {
            target: "nacre".into(),
            workload: "get".into(),
            label: "get(consistent)".into(),
            consistency: "consistent".into(),
            clients: 16,
            connections: 4,
            key_size: 16,
            value_size: 256,
            keys: 1000,
            read_percent: 50,
            sequence_len: 10,
            ops: 12_345,
            errors: 0,
            misses: 0,
            elapsed_s: 1.5,
            ops_per_s: 8230.0,
            latency_us: Summary {
                count: 12_345,
                min: 20,
                mean: 150.5,
                p50: 120,
                p90: 300,
                p99: 900,
                p999: 2_000,
                max: 5_000,
            },
            first_error: None,
            cdf: Vec::new(),
        }
    }

    #[test]
    fn json_has_the_documented_fields_and_round_trips() {
        let r = sample();
        let j = r.json();
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        assert_eq!(v["target"], "nacre");
        assert_eq!(v["workload"], "get");
        assert_eq!(v["clients"], 16);
        assert_eq!(v["ops_per_s"], 8230.0);
        assert_eq!(v["latency_us"]["p50"], 120);
        assert_eq!(v["latency_us"]["p99"], 900);
        assert_eq!(v["latency_us"]["p999"], 2000);
        // Absent when empty.
        assert!(v.get("first_error").is_none());
        assert!(v.get("cdf").is_none());
        assert!(!j.contains('\n'));
        let back: Report = serde_json::from_str(&j).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn text_shows_throughput_and_percentiles_in_ms() {
        let mut r = sample();
        r.first_error = Some("boom".into());
        let t = r.text();
        assert!(t.contains("8230 ops/s"), "{t}");
        assert!(t.contains("p50 0.120 ms"), "{t}");
        assert!(t.contains("p99.9 2.000 ms"), "{t}");
        assert!(t.contains("first error: boom"), "{t}");
    }
}
