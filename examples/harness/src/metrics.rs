//! `GET /metrics`: the control plane's counts ([`Census`]) and the held
//! check-ins, in the OpenMetrics text format (which Prometheus scrapes)
//! through `prometheus-client`, one collector per scrape. Counts only: no
//! runner, replica or project name, so the route needs no token.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::admin_api::{RunState, RunnerStatus};
use crate::state::Census;

/// The `Content-Type` of what [`render`] writes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The exposition of `census` with `held` check-ins open.
pub fn render(census: Census, held: u64) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Snapshot { census, held }));
    let mut out = String::with_capacity(4 * 1024);
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(out)
}

#[derive(Debug)]
struct Snapshot {
    census: Census,
    held: u64,
}

/// One gauge per label value.
fn by_label(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    values: impl Iterator<Item = (&'static str, u64)>,
) -> std::fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (value, n) in values {
        let labels = [(label, value)];
        m.encode_family(&labels)?.encode_gauge(&(n as i64))?;
    }
    Ok(())
}

impl Collector for Snapshot {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let c = &self.census;
        {
            let mut m = e.encode_descriptor(
                "rdrunner_harness_build_info",
                "The control plane's version; always 1.",
                None,
                MetricType::Gauge,
            )?;
            let labels = [("version", env!("CARGO_PKG_VERSION"))];
            m.encode_family(&labels)?.encode_gauge(&1i64)?;
        }
        by_label(
            &mut e,
            "rdrunner_harness_runners",
            "Runners by status (the best of their replicas').",
            "status",
            RunnerStatus::ALL.iter().map(|s| s.as_str()).zip(c.runners),
        )?;
        by_label(
            &mut e,
            "rdrunner_harness_replicas",
            "Replicas listed, by status (down ones until they are pruned).",
            "status",
            RunnerStatus::ALL.iter().map(|s| s.as_str()).zip(c.replicas),
        )?;
        by_label(
            &mut e,
            "rdrunner_harness_executions",
            "Executions by state.",
            "state",
            RunState::ALL.iter().map(|s| s.as_str()).zip(c.executions),
        )?;
        by_label(
            &mut e,
            "rdrunner_harness_operations",
            "Operations by state.",
            "state",
            RunState::ALL.iter().map(|s| s.as_str()).zip(c.operations),
        )?;
        {
            let mut m = e.encode_descriptor(
                "rdrunner_harness_report_latency_seconds",
                "From a report's ts (the runner's clock) to its storage here.",
                None,
                MetricType::Histogram,
            )?;
            let h = &c.report_latency;
            let buckets: Vec<(f64, u64)> = h
                .per_bucket()
                .into_iter()
                .map(|(bound, n)| (bound.map_or(f64::MAX, |b| b.as_secs_f64()), n))
                .collect();
            m.encode_histogram::<NoLabelSet>(h.sum().as_secs_f64(), h.count(), &buckets, None)?;
        }
        {
            let mut m = e.encode_descriptor(
                "rdrunner_harness_checkins_held",
                "Check-ins held open now (long polls waiting for work).",
                None,
                MetricType::Gauge,
            )?;
            m.encode_gauge(&(self.held as i64))?;
        }
        {
            // A counter's descriptor names it without `_total`: the encoder appends it.
            let mut m = e.encode_descriptor(
                "rdrunner_harness_replicas_pruned",
                "Replicas removed for having been down longer than the prune delay.",
                None,
                MetricType::Counter,
            )?;
            m.encode_counter::<NoLabelSet, _, u64>(&c.replicas_pruned, None)?;
        }
        Ok(())
    }
}
