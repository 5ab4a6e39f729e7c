//! The LogShipper: numbers reports per operation, spools them, and ships
//! them in batches to `POST /reports`, resending from the last ack after any
//! failure or gap, so that every report arrives exactly once and in order.
//!
//! Producers (StepWorkers' node-step threads, the registry) hand reports to
//! the `ReportIntake`, which numbers them and appends them to the spool at
//! once; the actor only reads the spool. So memory stays bounded by the
//! spool whatever the output volume, a producer never waits on the network,
//! and a restarted LogShipper (panic) or process (spool on disk) resumes
//! from the spool without losing anything.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use actix::prelude::*;
use slog::{debug, error, warn, Logger};
use tokio::sync::{watch, Notify};

use crate::clock::Clock;
use crate::control_plane::ControlPlaneError;
use crate::failpoints::{fail_point, failed};
use crate::model::{rfc3339, OpReport, Report, ReportBody, ReportsRequest, State};
use crate::poller::RetryPolicy;
use crate::registry::RegistryCommand;
use crate::runtime::Shared;
use crate::spool::{Spool, SpoolError, SpooledOperation};
use crate::stats::StatsCell;
use crate::supervisor::StopChild;

/// The message of the terminal report of an operation found unfinished in
/// the spool at startup.
pub const RESTARTED_MESSAGE: &str = "runner restarted while the operation was running";

/// Operations whose terminal report was acked, remembered so that a late
/// report of theirs is refused rather than numbered from 1 again.
const FORGOTTEN_MEMORY: usize = 10_000;

/// Most reports kept in memory, across operations, so that a batch is
/// taken from there instead of being read back from the spool and decoded
/// again; past this the oldest kept reports are served from the spool.
const RECENT_MAX: usize = 4096;

/// Numbers reports and appends them to the spool; shared by every producer
/// and every LogShipper instance.
pub(crate) struct ReportIntake {
    inner: Mutex<IntakeInner>,
    /// "Send now": a batch is full, or a drain flushes.
    wake: Notify,
    /// The first report since the last batch was taken: ends an idle wait.
    arrived: Notify,
    acked: watch::Sender<u64>,
    clock: Arc<dyn Clock>,
    stats: StatsCell,
    log: Logger,
}

struct IntakeInner {
    spool: Box<dyn Spool>,
    /// Next seq per open operation.
    next_seq: HashMap<String, u64>,
    /// Operations whose terminal report is spooled: nothing may follow it.
    closed: HashSet<String>,
    forgotten: VecDeque<String>,
    /// Reports appended since the last batch was taken.
    waiting: usize,
    /// The newest reports spooled per operation, contiguous in seq, not yet
    /// acked: a copy of the spool's tail, [`RECENT_MAX`] at most in all.
    recent: HashMap<String, VecDeque<Report>>,
    recent_len: usize,
    batch_max: usize,
}

impl ReportIntake {
    /// Opens the intake over `spool`, closing every operation left without a
    /// terminal report by a previous process.
    pub fn recover(
        mut spool: Box<dyn Spool>,
        clock: Arc<dyn Clock>,
        stats: StatsCell,
        log: Logger,
    ) -> Result<Self, SpoolError> {
        let mut next_seq = HashMap::new();
        let mut closed = HashSet::new();
        let ops = spool.operations()?;
        let ts = rfc3339(clock.wall());
        for op in ops {
            if op.terminal {
                closed.insert(op.op_id);
                continue;
            }
            let report = Report {
                op_id: op.op_id.clone(),
                seq: op.last_seq + 1,
                ts: ts.clone(),
                body: ReportBody::Op(OpReport {
                    state: State::Failed,
                    message: Some(RESTARTED_MESSAGE.into()),
                }),
            };
            spool.append(&[report])?;
            warn!(log, "operation left running by a previous process reported failed";
                "op" => &op.op_id);
            closed.insert(op.op_id);
        }
        spool.flush()?;
        next_seq.shrink_to_fit();
        Ok(ReportIntake {
            inner: Mutex::new(IntakeInner {
                spool,
                next_seq,
                closed,
                forgotten: VecDeque::new(),
                waiting: 0,
                recent: HashMap::new(),
                recent_len: 0,
                batch_max: 1000,
            }),
            wake: Notify::new(),
            arrived: Notify::new(),
            acked: watch::channel(0).0,
            clock,
            stats,
            log,
        })
    }

    fn lock(&self) -> MutexGuard<'_, IntakeInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Numbers `body` as the next report of `op_id` and spools it. Returns
    /// `false` when refused: the operation's terminal report is already
    /// spooled (so the terminal report stays the last), or the spool failed.
    pub fn push(&self, op_id: &str, body: ReportBody) -> bool {
        let mut g = self.lock();
        if g.closed.contains(op_id) {
            debug!(self.log, "report after the terminal one dropped"; "op" => op_id);
            return false;
        }
        let seq = g.next_seq.get(op_id).copied().unwrap_or(1);
        let report = Report {
            op_id: op_id.to_owned(),
            seq,
            ts: rfc3339(self.clock.wall()),
            body,
        };
        let terminal = report.is_terminal();
        if let Err(e) = g.spool.append(std::slice::from_ref(&report)) {
            error!(self.log, "could not spool a report"; "op" => op_id, "error" => %e);
            self.stats.error(e.to_string());
            return false;
        }
        g.keep_recent(&report);
        if terminal {
            g.next_seq.remove(op_id);
            g.closed.insert(op_id.to_owned());
            if let Err(e) = g.spool.flush() {
                self.stats.error(e.to_string());
            }
        } else {
            g.next_seq.insert(op_id.to_owned(), seq + 1);
        }
        g.waiting += 1;
        let first = g.waiting == 1;
        let full = g.waiting >= g.batch_max;
        drop(g);
        self.stats.update(|s| s.reports_spooled += 1);
        if full {
            self.wake.notify_one();
        } else if first {
            self.arrived.notify_one();
        }
        true
    }

    /// Wakes the LogShipper now (a batch is full, or a drain flushes).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Fires after each answer to `POST /reports` has been applied.
    pub fn acked_events(&self) -> watch::Receiver<u64> {
        self.acked.subscribe()
    }

    /// Whether every spooled report is acked.
    pub fn is_flushed(&self) -> bool {
        self.lock()
            .spool
            .operations()
            .map(|ops| ops.iter().all(|o| o.acked >= o.last_seq))
            .unwrap_or(false)
    }

    /// The next batch to send (flushing the spool first), starting the round
    /// at operation `cursor` so that a flooding operation cannot starve the
    /// others.
    ///
    /// With `single_op`, the batch holds reports of one operation only (to
    /// find which one the control plane refuses).
    fn next_batch(
        &self,
        batch_max: usize,
        cursor: usize,
        single_op: bool,
    ) -> Result<Vec<Report>, SpoolError> {
        let mut g = self.lock();
        g.batch_max = batch_max;
        g.waiting = 0;
        g.spool.flush()?;
        let mut ops = g.spool.operations()?;
        if single_op {
            ops.retain(|o| o.last_seq > o.acked);
            ops.truncate(1);
        }
        if !ops.is_empty() {
            let k = cursor % ops.len();
            ops.rotate_left(k);
        }
        let IntakeInner { spool, recent, .. } = &mut *g;
        let mut err = None;
        let batch = plan_batch(&ops, batch_max, &mut |op, after, max| {
            if let Some(kept) = recent
                .get(op)
                .filter(|k| k.front().is_some_and(|r| r.seq <= after + 1))
            {
                return kept
                    .iter()
                    .filter(|r| r.seq > after)
                    .take(max)
                    .cloned()
                    .collect();
            }
            spool.read(op, after, max).unwrap_or_else(|e| {
                err = Some(e);
                Vec::new()
            })
        });
        match err {
            Some(e) => Err(e),
            None => Ok(batch),
        }
    }

    /// Drops everything spooled for an operation the control plane refuses
    /// to take reports for; later reports of it are refused too. Returns how
    /// many unacked reports were dropped.
    fn drop_operation(&self, op_id: &str) -> Result<u64, SpoolError> {
        let mut g = self.lock();
        let unacked = g
            .spool
            .operations()?
            .into_iter()
            .find(|o| o.op_id == op_id)
            .map_or(0, |o| o.last_seq.saturating_sub(o.acked));
        g.spool.forget(op_id)?;
        g.forget_recent(op_id);
        g.next_seq.remove(op_id);
        g.closed.insert(op_id.to_owned());
        g.forgotten.push_back(op_id.to_owned());
        if g.forgotten.len() > FORGOTTEN_MEMORY {
            if let Some(old) = g.forgotten.pop_front() {
                g.closed.remove(&old);
            }
        }
        drop(g);
        self.acked.send_modify(|n| *n += 1);
        Ok(unacked)
    }

    /// Applies the control plane's acks; returns how many reports they newly
    /// cover.
    fn apply_acks(&self, acks: &BTreeMap<String, u64>) -> Result<u64, SpoolError> {
        let mut g = self.lock();
        let ops = g.spool.operations()?;
        let mut newly = 0;
        for step in ack_steps(&ops, acks) {
            g.spool.ack(&step.op_id, step.seq)?;
            g.acked_recent(&step.op_id, step.seq);
            newly += step.newly;
            if step.complete {
                g.spool.forget(&step.op_id)?;
                g.forgotten.push_back(step.op_id.clone());
                if g.forgotten.len() > FORGOTTEN_MEMORY {
                    if let Some(old) = g.forgotten.pop_front() {
                        g.closed.remove(&old);
                    }
                }
            }
        }
        drop(g);
        self.stats.update(|s| s.reports_acked += newly);
        self.acked.send_modify(|n| *n += 1);
        Ok(newly)
    }
}

impl IntakeInner {
    /// Keeps a copy of a report just spooled, dropping the oldest kept ones
    /// past [`RECENT_MAX`].
    fn keep_recent(&mut self, report: &Report) {
        let kept = self.recent.entry(report.op_id.clone()).or_default();
        kept.push_back(report.clone());
        self.recent_len += 1;
        while self.recent_len > RECENT_MAX {
            // The operation's own oldest first; when it has nothing older,
            // the whole copy goes (the spool still holds everything).
            let kept = self.recent.get_mut(&report.op_id).expect("just inserted");
            if kept.len() > 1 {
                kept.pop_front();
                self.recent_len -= 1;
            } else {
                self.recent.retain(|op, _| op == &report.op_id);
                self.recent_len = 1;
            }
        }
    }

    /// Drops the kept copies an ack up to `seq` covers.
    fn acked_recent(&mut self, op_id: &str, seq: u64) {
        if let Some(kept) = self.recent.get_mut(op_id) {
            while kept.front().is_some_and(|r| r.seq <= seq) {
                kept.pop_front();
                self.recent_len -= 1;
            }
            if kept.is_empty() {
                self.recent.remove(op_id);
            }
        }
    }

    fn forget_recent(&mut self, op_id: &str) {
        if let Some(kept) = self.recent.remove(op_id) {
            self.recent_len -= kept.len();
        }
    }
}

/// Picks the reports to send: per operation, from its ack + 1, at most
/// `batch_max` in all. An operation's terminal report goes only when every
/// report before it is acked, so that it is the last one the control plane
/// stores.
pub fn plan_batch(
    ops: &[SpooledOperation],
    batch_max: usize,
    read: &mut dyn FnMut(&str, u64, usize) -> Vec<Report>,
) -> Vec<Report> {
    let mut out = Vec::new();
    for op in ops {
        if out.len() >= batch_max {
            break;
        }
        if op.last_seq <= op.acked {
            continue;
        }
        let mut reports = read(&op.op_id, op.acked, batch_max - out.len());
        if reports
            .last()
            .is_some_and(|r| r.is_terminal() && r.seq != op.acked + 1)
        {
            reports.pop();
        }
        out.extend(reports);
    }
    out
}

/// What one operation's ack changes in the spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckStep {
    pub op_id: String,
    pub seq: u64,
    /// Reports newly acked.
    pub newly: u64,
    /// The terminal report is acked: the operation may be forgotten.
    pub complete: bool,
}

/// Turns the acks of an answer into spool updates; acks that do not move
/// forward (duplicates, a gap the server refused) change nothing.
pub fn ack_steps(ops: &[SpooledOperation], acks: &BTreeMap<String, u64>) -> Vec<AckStep> {
    ops.iter()
        .filter_map(|op| {
            let seq = (*acks.get(&op.op_id)?).min(op.last_seq);
            (seq > op.acked).then(|| AckStep {
                op_id: op.op_id.clone(),
                seq,
                newly: seq - op.acked,
                complete: op.terminal && seq == op.last_seq,
            })
        })
        .collect()
}

/// The LogShipper actor: a thin shell running the ship loop over the intake.
pub struct LogShipper {
    shared: Arc<Shared>,
}

impl LogShipper {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        LogShipper { shared }
    }
}

impl Actor for LogShipper {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.spawn(ship(self.shared.clone()).into_actor(self));
    }
}

impl Handler<StopChild> for LogShipper {
    type Result = ();

    fn handle(&mut self, _: StopChild, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

async fn ship(shared: Arc<Shared>) {
    let cfg = &shared.config;
    let log = shared.log.new(slog::o!("actor" => "log_shipper"));
    let mut retry = RetryPolicy::new(cfg.backoff_initial, cfg.backoff_max);
    let mut cursor = 0usize;
    // After a refused batch: send one operation at a time to find the
    // operation the control plane refuses.
    let mut single_op = false;
    // Lowered when the control plane says a batch was too large (413).
    let mut limit = usize::MAX;
    loop {
        let (interval, batch_max) = shared.report_cadence();
        let batch_max = batch_max.min(limit);
        let Some(replica_id) = shared.replica_id() else {
            idle(&shared, interval).await;
            continue;
        };
        cursor = cursor.wrapping_add(1);
        let batch = match shared.intake.next_batch(batch_max, cursor, single_op) {
            Ok(b) => b,
            Err(e) => {
                error!(log, "could not read the spool"; "error" => %e);
                shared.stats.error(e.to_string());
                tokio::time::sleep(retry.next_delay(None)).await;
                continue;
            }
        };
        if batch.is_empty() {
            idle(&shared, interval).await;
            continue;
        }
        let n = batch.len();
        let mut ops_in_batch: Vec<String> = batch.iter().map(|r| r.op_id.clone()).collect();
        ops_in_batch.dedup();
        shared.stats.update(|s| s.reports_sent += n as u64);
        let req = ReportsRequest {
            replica_id,
            reports: batch,
        };
        let answer = if failed(&shared.fail_points, "log_shipper::send") {
            Err(ControlPlaneError::Transport(
                "fail point log_shipper::send".into(),
            ))
        } else {
            match tokio::time::timeout(cfg.request_timeout, shared.control_plane.reports(req)).await
            {
                Ok(r) => r,
                Err(_) => Err(ControlPlaneError::Timeout(cfg.request_timeout)),
            }
        };
        match answer {
            Ok(resp) => {
                retry.reset();
                single_op = false;
                fail_point!(shared.fail_points, "log_shipper::acked");
                if let Err(e) = shared.intake.apply_acks(&resp.acks) {
                    error!(log, "could not record acks in the spool"; "error" => %e);
                    shared.stats.error(e.to_string());
                }
                for op_id in resp.cancel {
                    shared.inbox.push(RegistryCommand::Cancel(op_id));
                }
                if n < batch_max {
                    linger(&shared, interval).await;
                }
            }
            Err(ControlPlaneError::Rejected { status: 413, .. }) if n > 1 => {
                limit = (n / 2).max(1);
                warn!(log, "the control plane found a batch of reports too large; sending smaller ones";
                    "batch" => n, "now" => limit);
            }
            Err(ControlPlaneError::Rejected {
                status,
                code,
                message,
            }) if ops_in_batch.len() == 1 => {
                // Retrying as is cannot help, and holding these reports
                // would block every other operation's: drop them, loudly.
                let op_id = &ops_in_batch[0];
                let dropped = shared.intake.drop_operation(op_id).unwrap_or(0);
                let text = format!(
                    "the control plane refuses the reports of operation {op_id} ({status} {code}: {message}); {dropped} unsent report(s) of it were dropped"
                );
                error!(log, "{}", text);
                shared.stats.error(text);
                single_op = false;
            }
            Err(ControlPlaneError::Rejected { status, code, .. }) => {
                warn!(log, "the control plane refused a batch of reports; sending one operation at a time to find out which";
                    "status" => status, "code" => code);
                single_op = true;
            }
            Err(e) => {
                let delay = retry.next_delay(Some(&e));
                warn!(log, "POST /reports failed; resending from the last ack";
                    "error" => %e, "retry_in_ms" => delay.as_millis() as u64);
                shared.stats.update(|s| {
                    s.last_error = Some(e.to_string());
                    if e.is_auth() {
                        s.credentials_refused = true;
                    }
                });
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Waits for the next batch when nothing is waiting: until a report
/// arrives, a batch fills up, or the report interval passes. A line printed
/// on an idle runner is thus sent at once rather than up to an interval
/// later.
async fn idle(shared: &Shared, interval: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(interval) => {}
        _ = shared.intake.wake.notified() => {}
        _ = shared.intake.arrived.notified() => {}
    }
}

/// The pause after a batch that was not full, so that output flowing line
/// by line is sent in batches (at most one per `linger_time`) rather than
/// one request per line; a full batch ends it at once.
async fn linger(shared: &Shared, interval: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(linger_time(interval)) => {}
        _ = shared.intake.wake.notified() => {}
    }
}

/// A tenth of the report interval (20 ms for the usual 200 ms), at least
/// 2 ms: how long reports wait to be batched while output flows. Every
/// report is sent within this time plus one round trip, well within the
/// interval.
pub fn linger_time(interval: Duration) -> Duration {
    (interval / 10).max(Duration::from_millis(2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{LogReport, NodeReport, Stream};

    fn report(op: &str, seq: u64, terminal: bool) -> Report {
        Report {
            op_id: op.into(),
            seq,
            ts: String::new(),
            body: if terminal {
                ReportBody::Op(OpReport {
                    state: State::Succeeded,
                    message: None,
                })
            } else {
                ReportBody::Log(LogReport {
                    node: "n".into(),
                    step: 1,
                    stream: Stream::Stdout,
                    text: format!("{seq}"),
                })
            },
        }
    }

    fn spooled(op: &str, last: u64, acked: u64, terminal: bool) -> SpooledOperation {
        SpooledOperation {
            op_id: op.into(),
            last_seq: last,
            acked,
            terminal,
        }
    }

    fn reader<'a>(
        ops: &'a [(&'static str, u64, bool)],
    ) -> impl FnMut(&str, u64, usize) -> Vec<Report> + 'a {
        move |op, after, max| {
            let (_, last, terminal) = ops.iter().find(|o| o.0 == op).unwrap();
            (after + 1..=*last)
                .take(max)
                .map(|s| report(op, s, *terminal && s == *last))
                .collect()
        }
    }

    #[test]
    fn batches_start_after_the_ack_and_respect_the_maximum() {
        let ops = [spooled("a", 5, 2, false), spooled("b", 3, 0, false)];
        let mut read = reader(&[("a", 5, false), ("b", 3, false)]);
        let batch = plan_batch(&ops, 4, &mut read);
        let seqs: Vec<_> = batch.iter().map(|r| (r.op_id.as_str(), r.seq)).collect();
        assert_eq!(seqs, vec![("a", 3), ("a", 4), ("a", 5), ("b", 1)]);
    }

    #[test]
    fn the_terminal_report_waits_until_everything_before_it_is_acked() {
        let ops = [spooled("a", 3, 0, true)];
        let mut read = reader(&[("a", 3, true)]);
        let batch = plan_batch(&ops, 10, &mut read);
        assert_eq!(batch.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 2]);
        let ops = [spooled("a", 3, 2, true)];
        let batch = plan_batch(&ops, 10, &mut read);
        assert_eq!(batch.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![3]);
        assert!(batch[0].is_terminal());
    }

    #[test]
    fn acks_move_forward_only_and_complete_terminal_operations() {
        let ops = [
            spooled("a", 5, 2, false),
            spooled("b", 3, 1, true),
            spooled("c", 4, 4, false),
        ];
        let acks: BTreeMap<String, u64> =
            [("a".into(), 1), ("b".into(), 3), ("c".into(), 9)].into();
        assert_eq!(
            ack_steps(&ops, &acks),
            vec![AckStep {
                op_id: "b".into(),
                seq: 3,
                newly: 2,
                complete: true
            }]
        );
    }

    #[test]
    fn recovery_closes_unfinished_operations_and_numbering_continues() {
        let mut spool = crate::spool::MemorySpool::new();
        spool
            .append(&[report("old", 1, false), report("old", 2, false)])
            .unwrap();
        let intake = ReportIntake::recover(
            Box::new(spool),
            Arc::new(crate::clock::SystemClock),
            StatsCell::default(),
            Logger::root(slog::Discard, slog::o!()),
        )
        .unwrap();
        // Nothing may follow the recovery's terminal report.
        assert!(!intake.push(
            "old",
            ReportBody::Node(NodeReport {
                node: "n".into(),
                step: 1,
                state: State::Running,
                exit_code: None,
                message: None
            })
        ));
        assert!(intake.push("new", report("x", 0, false).body));
        let batch = intake.next_batch(10, 0, false).unwrap();
        let got: Vec<_> = batch.iter().map(|r| (r.op_id.as_str(), r.seq)).collect();
        assert_eq!(got, vec![("new", 1), ("old", 1), ("old", 2)]);
        let acks: BTreeMap<String, u64> = [("old".into(), 2)].into();
        intake.apply_acks(&acks).unwrap();
        let batch = intake.next_batch(10, 0, false).unwrap();
        let last = batch.iter().find(|r| r.op_id == "old").unwrap();
        assert_eq!(last.seq, 3);
        assert_eq!(
            last.body,
            ReportBody::Op(OpReport {
                state: State::Failed,
                message: Some(RESTARTED_MESSAGE.into())
            })
        );
    }
    /// A spool that counts the reports read back from it.
    struct CountingSpool {
        inner: crate::spool::MemorySpool,
        read: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl Spool for CountingSpool {
        fn append(&mut self, reports: &[Report]) -> Result<(), SpoolError> {
            self.inner.append(reports)
        }
        fn flush(&mut self) -> Result<(), SpoolError> {
            self.inner.flush()
        }
        fn read(&mut self, op_id: &str, after: u64, max: usize) -> Result<Vec<Report>, SpoolError> {
            let got = self.inner.read(op_id, after, max)?;
            self.read
                .fetch_add(got.len(), std::sync::atomic::Ordering::SeqCst);
            Ok(got)
        }
        fn ack(&mut self, op_id: &str, seq: u64) -> Result<(), SpoolError> {
            self.inner.ack(op_id, seq)
        }
        fn operations(&mut self) -> Result<Vec<SpooledOperation>, SpoolError> {
            self.inner.operations()
        }
        fn forget(&mut self, op_id: &str) -> Result<(), SpoolError> {
            self.inner.forget(op_id)
        }
    }

    #[test]
    fn batches_come_from_memory_and_the_spool_only_past_the_kept_tail() {
        let read = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let intake = ReportIntake::recover(
            Box::new(CountingSpool {
                inner: crate::spool::MemorySpool::new(),
                read: read.clone(),
            }),
            Arc::new(crate::clock::SystemClock),
            StatsCell::default(),
            Logger::root(slog::Discard, slog::o!()),
        )
        .unwrap();
        let total = RECENT_MAX as u64 + 100;
        for _ in 0..total {
            assert!(intake.push("flood", report("x", 0, false).body));
        }
        // The first 100 fell out of the kept tail: read back from the spool.
        let batch = intake.next_batch(150, 0, false).unwrap();
        assert_eq!(
            batch.iter().map(|r| r.seq).collect::<Vec<_>>(),
            (1..=150).collect::<Vec<_>>()
        );
        assert_eq!(read.load(std::sync::atomic::Ordering::SeqCst), 150);
        let acks: BTreeMap<String, u64> = [("flood".into(), 150)].into();
        intake.apply_acks(&acks).unwrap();
        // From the ack on, everything is in memory.
        let batch = intake.next_batch(usize::MAX, 0, false).unwrap();
        assert_eq!(batch.first().map(|r| r.seq), Some(151));
        assert_eq!(batch.last().map(|r| r.seq), Some(total));
        assert_eq!(batch.len() as u64, total - 150);
        assert_eq!(read.load(std::sync::atomic::Ordering::SeqCst), 150);
        // A resend after a lost answer gets the same reports again.
        let again = intake.next_batch(usize::MAX, 0, false).unwrap();
        assert_eq!(again, batch);
        let acks: BTreeMap<String, u64> = [("flood".into(), total)].into();
        intake.apply_acks(&acks).unwrap();
        assert!(intake.next_batch(10, 0, false).unwrap().is_empty());
        assert_eq!(intake.lock().recent_len, 0);
    }
}
