//! `/metrics`: a [`RuntimeStats`] snapshot written in the OpenMetrics text
//! format (which Prometheus scrapes) through `prometheus-client`, one
//! collector per scrape. Every figure comes from the snapshot; nothing is
//! counted here.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use rdrunner_actors::{Histogram, RuntimeStats};

/// The `Content-Type` of what [`render`] writes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The executor whose figures are published as `rdrunner_ssh_*`.
const SSH: &str = "ssh";

/// The exposition of `stats` for a runner of `version`.
pub fn render(stats: RuntimeStats, version: &str) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Snapshot {
        stats,
        version: version.to_owned(),
    }));
    let mut out = String::with_capacity(8 * 1024);
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(out)
}

#[derive(Debug)]
struct Snapshot {
    stats: RuntimeStats,
    version: String,
}

/// A counter's descriptor names it without `_total`: the encoder appends it.
fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    m.encode_counter::<NoLabelSet, _, u64>(&v, None)
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: f64) -> std::fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
    m.encode_gauge(&v)
}

fn histogram(m: &mut MetricEncoder, h: &Histogram) -> std::fmt::Result {
    let buckets: Vec<(f64, u64)> = h
        .per_bucket()
        .into_iter()
        .map(|(bound, n)| (bound.map_or(f64::MAX, |b| b.as_secs_f64()), n))
        .collect();
    m.encode_histogram::<NoLabelSet>(h.sum().as_secs_f64(), h.count(), &buckets, None)
}

impl Collector for Snapshot {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let s = &self.stats;
        {
            let mut m = e.encode_descriptor(
                "rdrunner_build_info",
                "The runner's version; always 1.",
                None,
                MetricType::Gauge,
            )?;
            let labels = [("version", self.version.as_str())];
            m.encode_family(&labels)?.encode_gauge(&1i64)?;
        }
        gauge(
            &mut e,
            "rdrunner_uptime_seconds",
            "Time since the runtime started.",
            s.uptime.as_secs_f64(),
        )?;
        gauge(
            &mut e,
            "rdrunner_operations_running",
            "Operations whose node steps are running.",
            f64::from(s.running),
        )?;
        gauge(
            &mut e,
            "rdrunner_operations_queued",
            "Operations claimed and waiting for a free slot (runner.maxRunning).",
            f64::from(s.queued),
        )?;
        counter(
            &mut e,
            "rdrunner_operations_claimed",
            "Operations this replica claimed.",
            s.operations_claimed,
        )?;
        {
            let mut m = e.encode_descriptor(
                "rdrunner_operations_finished",
                "Operations ended on this replica, by outcome.",
                None,
                MetricType::Counter,
            )?;
            for (outcome, n) in &s.operations_finished {
                let labels = [("outcome", outcome.as_str())];
                m.encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, u64>(n, None)?;
            }
        }
        gauge(
            &mut e,
            "rdrunner_node_steps_running",
            "Node steps being executed, across operations.",
            f64::from(s.node_steps_running),
        )?;
        {
            let mut m = e.encode_descriptor(
                "rdrunner_checkin_duration_seconds",
                "Duration of the check-ins that got an answer, a long-poll hold included.",
                None,
                MetricType::Histogram,
            )?;
            histogram(&mut m, &s.checkin_duration)?;
        }
        if let Some(t) = s.last_checkin_success {
            let secs = t
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            gauge(
                &mut e,
                "rdrunner_checkin_last_success_timestamp_seconds",
                "Wall time (Unix seconds) of the last successful check-in.",
                secs,
            )?;
        }
        gauge(
            &mut e,
            "rdrunner_checkin_interval_seconds",
            "One check-in cycle when all is well; /ready allows three.",
            s.checkin_interval.as_secs_f64(),
        )?;
        {
            let mut m = e.encode_descriptor(
                "rdrunner_control_plane_errors",
                "Failed control plane calls, by call and kind of failure.",
                None,
                MetricType::Counter,
            )?;
            for ((call, kind), n) in &s.control_plane_errors {
                let labels = [("call", call.as_str()), ("kind", kind.as_str())];
                m.encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, u64>(n, None)?;
            }
        }
        gauge(
            &mut e,
            "rdrunner_reports_pending",
            "Reports spooled and not acknowledged by the control plane yet.",
            s.reports_pending as f64,
        )?;
        gauge(
            &mut e,
            "rdrunner_report_oldest_unacked_age_seconds",
            "Age of the oldest report not acknowledged yet (0 when none).",
            s.report_oldest_unacked_age.map_or(0.0, |d| d.as_secs_f64()),
        )?;
        counter(
            &mut e,
            "rdrunner_report_bytes",
            "Bytes of reports spooled (their JSON encoding).",
            s.report_bytes,
        )?;
        counter(
            &mut e,
            "rdrunner_reports_acked",
            "Reports the control plane acknowledged.",
            s.reports_acked,
        )?;
        {
            let mut m = e.encode_descriptor(
                "rdrunner_supervisor_restarts",
                "Restarts of supervised children, by child.",
                None,
                MetricType::Counter,
            )?;
            for (child, n) in &s.restarts {
                let labels = [("child", child.as_str())];
                m.encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, u64>(n, None)?;
            }
        }
        counter(
            &mut e,
            "rdrunner_supervisor_escalations",
            "Times the supervision gave up (the runner then exits 5).",
            s.escalations,
        )?;
        let ssh = s.executors.get(SSH);
        {
            let mut m = e.encode_descriptor(
                "rdrunner_ssh_connect_duration_seconds",
                "Time to connect to a node, check its host key and authenticate.",
                None,
                MetricType::Histogram,
            )?;
            let empty = rdrunner_actors::ExecutorFigures::default();
            histogram(&mut m, &ssh.unwrap_or(&empty).connect_duration)?;
        }
        {
            let mut m = e.encode_descriptor(
                "rdrunner_ssh_errors",
                "Failed SSH node steps, by kind of failure.",
                None,
                MetricType::Counter,
            )?;
            for (kind, n) in ssh.iter().flat_map(|f| f.errors.iter()) {
                let labels = [("kind", kind.as_str())];
                m.encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, u64>(n, None)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn every_figure_is_written_from_the_snapshot() {
        let mut s = RuntimeStats {
            running: 2,
            queued: 1,
            operations_claimed: 3,
            node_steps_running: 4,
            reports_pending: 5,
            report_bytes: 600,
            report_oldest_unacked_age: Some(Duration::from_millis(1500)),
            last_checkin_success: Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
            ..RuntimeStats::default()
        };
        s.operations_finished.insert("succeeded".into(), 7);
        s.control_plane_errors
            .insert(("checkin".into(), "transport".into()), 8);
        s.restarts.insert("poller".into(), 9);
        s.checkin_duration.observe(Duration::from_millis(30));
        let mut ssh = rdrunner_actors::ExecutorFigures::default();
        ssh.connect_duration.observe(Duration::from_millis(20));
        ssh.error(rdrunner_actors::ExecutorErrorKind::Authentication.name());
        s.executors.insert("ssh".into(), ssh);
        let text = render(s, "1.2.3").unwrap();
        for line in [
            "rdrunner_build_info{version=\"1.2.3\"} 1",
            "rdrunner_operations_running 2.0",
            "rdrunner_operations_queued 1.0",
            "rdrunner_operations_claimed_total 3",
            "rdrunner_operations_finished_total{outcome=\"succeeded\"} 7",
            "rdrunner_node_steps_running 4.0",
            "rdrunner_checkin_duration_seconds_count 1",
            "rdrunner_checkin_duration_seconds_bucket{le=\"0.05\"} 1",
            "rdrunner_checkin_duration_seconds_bucket{le=\"0.025\"} 0",
            "rdrunner_checkin_last_success_timestamp_seconds 1700000000.0",
            "rdrunner_control_plane_errors_total{call=\"checkin\",kind=\"transport\"} 8",
            "rdrunner_reports_pending 5.0",
            "rdrunner_report_oldest_unacked_age_seconds 1.5",
            "rdrunner_report_bytes_total 600",
            "rdrunner_supervisor_restarts_total{child=\"poller\"} 9",
            "rdrunner_ssh_connect_duration_seconds_bucket{le=\"+Inf\"} 1",
            "rdrunner_ssh_errors_total{kind=\"authentication\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }

    /// Every series name the exposition can hold, from its `# TYPE` lines.
    fn series_names(text: &str) -> Vec<String> {
        let mut names = Vec::new();
        for line in text.lines() {
            let mut f = line.split(' ');
            if let (Some("#"), Some("TYPE"), Some(name), Some(kind)) =
                (f.next(), f.next(), f.next(), f.next())
            {
                match kind {
                    "counter" => names.push(format!("{name}_total")),
                    "histogram" => {
                        for suffix in ["_bucket", "_sum", "_count"] {
                            names.push(format!("{name}{suffix}"));
                        }
                    }
                    _ => names.push(name.to_owned()),
                }
            }
        }
        names
    }

    /// The `rdrunner_*` names `text` mentions.
    fn mentioned(text: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut rest = text;
        while let Some(i) = rest.find("rdrunner_") {
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                .unwrap_or(tail.len());
            out.push(tail[..end].to_owned());
            rest = &tail[end..];
        }
        out
    }

    #[test]
    fn the_alert_rules_and_the_dashboard_use_only_exported_metrics() {
        // The last success's timestamp is absent until a check-in succeeds.
        let stats = RuntimeStats {
            last_checkin_success: Some(UNIX_EPOCH),
            ..RuntimeStats::default()
        };
        let names = series_names(&render(stats, "0").unwrap());
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        for file in [
            "contrib/prometheus/rdrunner.rules.yml",
            "contrib/prometheus/rdrunner.rules.test.yml",
            "contrib/grafana/rdrunner.json",
        ] {
            let text = std::fs::read_to_string(root.join(file)).unwrap();
            let used = mentioned(&text);
            assert!(!used.is_empty(), "{file} names no metric");
            for name in used {
                assert!(
                    names.contains(&name),
                    "{file} uses {name}, which the runner does not export"
                );
            }
        }
    }
}
