//! One scrape: every family of the catalogue, read from where its figure
//! lives, encoded by `prometheus-client` in the Prometheus text format
//! (version 0.0.4), which every Prometheus and most other scrapers read.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeGaugeValue, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::catalogue::{self as c, Family, Kind};
use super::histogram::Histogram;
use crate::health::Health;
use crate::server::Shared;

/// The `Content-Type` of a scrape's answer.
pub(crate) const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The text of one scrape of `shared`'s node.
pub(crate) fn render(shared: &Arc<Shared>) -> Result<String, fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape(shared.clone())));
    let mut out = String::with_capacity(16 << 10);
    prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)?;
    Ok(out)
}

/// The collector `prometheus-client` calls on a scrape.
struct Scrape(Arc<Shared>);

impl fmt::Debug for Scrape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Scrape")
    }
}

impl Collector for Scrape {
    fn encode(&self, encoder: DescriptorEncoder) -> fmt::Result {
        let mut out = Out(encoder);
        let s = &self.0;
        node(&mut out, s)?;
        requests(&mut out, s)?;
        raft(&mut out, s)?;
        store(&mut out, s)?;
        coordination(&mut out, s)?;
        scripts(&mut out, s)
    }
}

/// Writes families, checking each against its catalogue entry.
struct Out<'a>(DescriptorEncoder<'a>);

impl Out<'_> {
    fn metric(&mut self, f: &'static Family, kind: Kind) -> Result<MetricEncoder<'_>, fmt::Error> {
        assert_eq!(f.kind, kind, "{} is written as its catalogue says", f.name);
        let t = match kind {
            Kind::Counter => MetricType::Counter,
            Kind::Gauge => MetricType::Gauge,
            Kind::Histogram => MetricType::Histogram,
        };
        self.0.encode_descriptor(f.stem(), f.help, None, t)
    }

    fn counter(&mut self, f: &'static Family, v: u64) -> fmt::Result {
        assert!(f.labels.is_empty(), "{} has labels", f.name);
        self.metric(f, Kind::Counter)?
            .encode_counter::<NoLabelSet, _, u64>(&v, None)
    }

    fn counter_of(&mut self, f: &'static Family, v: &AtomicU64) -> fmt::Result {
        self.counter(f, v.load(Ordering::Relaxed))
    }

    fn gauge(&mut self, f: &'static Family, v: impl EncodeGaugeValue) -> fmt::Result {
        assert!(f.labels.is_empty(), "{} has labels", f.name);
        self.metric(f, Kind::Gauge)?.encode_gauge(&v)
    }

    /// A family of one label: a gauge or counter per value of it.
    fn by_label(&mut self, f: &'static Family, rows: &[(&str, u64)]) -> fmt::Result {
        let [label] = f.labels else {
            panic!("{} has one label", f.name);
        };
        let mut m = self.metric(f, f.kind)?;
        for (value, v) in rows {
            let labels = [(*label, *value)];
            let mut row = m.encode_family(&labels)?;
            match f.kind {
                Kind::Counter => row.encode_counter::<NoLabelSet, _, u64>(v, None)?,
                Kind::Gauge => row.encode_gauge(v)?,
                Kind::Histogram => unreachable!("histograms go through histogram()"),
            }
        }
        Ok(())
    }

    fn histogram(&mut self, f: &'static Family, h: &Histogram) -> fmt::Result {
        assert!(f.labels.is_empty(), "{} has labels", f.name);
        let s = h.snapshot();
        self.metric(f, Kind::Histogram)?
            .encode_histogram::<NoLabelSet>(s.sum_seconds, s.count, &s.buckets, None)
    }
}

fn node(out: &mut Out, s: &Shared) -> fmt::Result {
    out.by_label(&c::BUILD_INFO, &[(env!("CARGO_PKG_VERSION"), 1)])?;
    out.gauge(&c::UPTIME, s.started.elapsed().as_secs_f64())?;
    let healthy = Health::of(&s.node, &s.config).is_healthy();
    out.gauge(&c::HEALTHY, u64::from(healthy))
}

fn requests(out: &mut Out, s: &Shared) -> fmt::Result {
    let m = &s.node.status.metrics;
    by_two_labels(out, &c::REQUEST_DURATION, m.requests.used())?;
    by_two_labels(out, &c::ETCD_REQUEST_DURATION, m.etcd_calls.used())?;
    let k = &s.counters;
    out.gauge(&c::CONNECTIONS, k.connections.load(Ordering::Relaxed))?;
    out.gauge(&c::CONNECTIONS_LIMIT, s.config.connections_max)?;
    out.counter_of(&c::CONNECTIONS_ACCEPTED, &k.connections_total)?;
    out.counter_of(&c::CONNECTIONS_REFUSED, &k.connections_refused)?;
    let blocking_max = s.config.blocking_tasks_max;
    let in_use = blocking_max.saturating_sub(s.blocking.available_permits());
    out.gauge(&c::BLOCKING_TASKS, in_use)?;
    out.gauge(&c::BLOCKING_TASKS_LIMIT, blocking_max)
}

/// A histogram family with two labels: one series per (label, label)
/// pair that has seen an observation.
fn by_two_labels<'a>(
    out: &mut Out,
    f: &'static Family,
    rows: impl Iterator<Item = (&'static str, &'static str, &'a Histogram)>,
) -> fmt::Result {
    let mut m = out.metric(f, Kind::Histogram)?;
    for (a, b, h) in rows {
        let snap = h.snapshot();
        let labels = [(f.labels[0], a), (f.labels[1], b)];
        m.encode_family(&labels)?.encode_histogram::<NoLabelSet>(
            snap.sum_seconds,
            snap.count,
            &snap.buckets,
            None,
        )?;
    }
    Ok(())
}

fn raft(out: &mut Out, s: &Shared) -> fmt::Result {
    let st = &s.node.status;
    let m = &st.metrics;
    let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
    out.gauge(&c::RAFT_TERM, n(&st.term))?;
    let is_leader = st.is_leader.load(Ordering::Acquire);
    out.gauge(&c::RAFT_IS_LEADER, u64::from(is_leader))?;
    out.counter_of(&c::RAFT_LEADER_CHANGES, &m.leader_changes)?;
    let (commit, applied) = (n(&st.commit), n(&st.applied));
    out.gauge(&c::RAFT_COMMIT_INDEX, commit)?;
    out.gauge(&c::RAFT_APPLIED_INDEX, applied)?;
    out.gauge(&c::RAFT_APPLY_LAG, commit.saturating_sub(applied))?;
    out.gauge(&c::TLOG_FIRST_INDEX, n(&st.first_index))?;
    let last_index = n(&st.last_index);
    out.gauge(&c::TLOG_LAST_INDEX, last_index)?;
    out.counter_of(&c::RAFT_PROPOSALS, &st.proposals)?;
    out.gauge(&c::RAFT_QUEUED, n(&m.raft_queued))?;
    out.gauge(&c::RAFT_QUEUED_LIMIT, s.config.proposals_pending_max)?;
    out.histogram(&c::TLOG_APPEND, &m.tlog_append)?;
    out.histogram(&c::TLOG_FSYNC, &m.tlog_fsync)?;
    out.histogram(&c::RAFT_APPLY, &m.apply)?;
    out.counter_of(&c::RAFT_APPLIED_ENTRIES, &m.applied_entries)?;
    // Only the leader tracks what each member has: a follower's figures
    // would be zeros that look like no lag.
    let lags: Vec<(String, u64)> = if is_leader {
        st.progress
            .lock()
            .iter()
            .map(|p| (p.name.clone(), last_index.saturating_sub(p.match_index)))
            .collect()
    } else {
        Vec::new()
    };
    let rows: Vec<(&str, u64)> = lags.iter().map(|(p, l)| (p.as_str(), *l)).collect();
    out.by_label(&c::REPLICATION_LAG, &rows)?;
    let rounds = [
        ("lease", n(&st.read_rounds_by_lease)),
        ("quorum", n(&st.read_rounds_by_quorum)),
    ];
    out.by_label(&c::READ_ROUNDS, &rounds)?;
    out.counter_of(&c::SNAPSHOTS_SENT, &st.snapshots_sent)?;
    out.counter_of(&c::SNAPSHOTS_INSTALLED, &st.snapshots_installed)?;
    out.counter_of(&c::CHECKPOINTS, &st.checkpoints)
}

fn store(out: &mut Out, s: &Shared) -> fmt::Result {
    let st = s.store.stats();
    out.gauge(&c::STORE_DISK, st.bytes_on_disk)?;
    out.gauge(&c::STORE_LIVE, st.live_bytes)?;
    out.gauge(&c::STORE_SEGMENTS, st.segments)?;
    out.gauge(&c::STORE_SNAPSHOTS, st.snapshots)?;
    out.gauge(&c::STORE_KEYS, st.key_count)?;
    out.gauge(&c::STORE_CACHE, st.cache_bytes)?;
    out.counter(&c::STORE_CACHE_HITS, st.cache_hits)?;
    out.counter(&c::STORE_CACHE_MISSES, st.cache_misses)?;
    out.counter(&c::STORE_COMMITS, st.commits)?;
    out.counter(&c::STORE_FSYNCS, st.fsyncs)?;
    out.counter(&c::STORE_CLEANED, st.cleaned_segments)?;
    out.counter(&c::STORE_RELOCATED, st.relocated_bytes)?;
    out.counter(&c::STORE_STALLS, st.stalls)?;
    // A counter of seconds, from the store's milliseconds.
    out.metric(&c::STORE_STALLED, Kind::Counter)?
        .encode_counter::<NoLabelSet, _, u64>(&(st.stalled_ms as f64 / 1e3), None)?;
    out.gauge(&c::STORE_POISONED, u64::from(st.poisoned.is_some()))?;
    out.gauge(
        &c::STORE_CLEANER_FAILED,
        u64::from(st.cleaner_error.is_some()),
    )
}

fn coordination(out: &mut Out, s: &Shared) -> fmt::Result {
    let hub = &s.node.watches;
    out.gauge(&c::WATCHES, hub.active())?;
    out.gauge(&c::WATCHES_LIMIT, s.config.watches_max)?;
    out.counter_of(&c::WATCH_EVENTS, &hub.counters.events_sent)?;
    out.counter_of(&c::WATCHES_ENDED_SLOW, &hub.counters.ended_slow)?;
    let st = &s.node.status;
    out.gauge(&c::LEASES, st.leases_tracked.load(Ordering::Relaxed))?;
    out.gauge(&c::LEASES_LIMIT, s.config.leases_max)?;
    out.counter_of(&c::LEASES_EXPIRED, &st.leases_expired)?;
    out.counter_of(&c::LEASE_KEEP_ALIVES, &st.lease_keep_alives)
}

fn scripts(out: &mut Out, s: &Shared) -> fmt::Result {
    let m = &s.node.status.metrics;
    out.counter_of(&c::SCRIPT_RUNS, &m.script_runs)?;
    out.histogram(&c::SCRIPT_RUN_DURATION, &m.script_run)?;
    out.counter_of(&c::SCRIPT_BUDGET_EXCEEDED, &m.script_budget_exceeded)?;
    out.counter_of(&c::SCRIPT_CONFLICTS, &m.script_conflicts)
}
