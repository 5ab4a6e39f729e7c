//! The report intake: numbers reports per operation and appends them to the
//! spool at once, keeps a copy of the newest unacked ones in memory, and
//! applies the control plane's acks. A named store the runtime owns, shared
//! by every producer (node-step threads, the registry) and every LogShipper
//! instance, so memory stays bounded by the spool whatever the output
//! volume, a producer never waits on the network, and a restarted
//! LogShipper (panic) or process (spool on disk) resumes from the spool
//! without losing anything.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use slog::{debug, error, warn, Logger};
use tokio::sync::{watch, Notify};

use crate::backlog::Backlog;
use crate::batch::{ack_steps, plan_batch};
use crate::clock::Clock;
use crate::model::{rfc3339, EncodedReport, OpReport, Report, ReportBody, State};
use crate::spool::{JournalEntry, ProgressMap, Spool, SpoolError, SpooledOperation};
use crate::stats::StatsCell;

/// The message of the terminal report of an operation found unfinished in
/// the spool at startup.
pub const RESTARTED_MESSAGE: &str =
    "runner restarted while the operation was running; its steps may have run";

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
    /// Unacked reports and when they were spooled. A lock of its own, taken
    /// inside `inner`'s and never the other way round, so that reading the
    /// figures (every scrape) does not queue behind spool writes.
    backlog: Mutex<Backlog>,
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
    /// Operations a previous process left unfinished, held open until the
    /// Poller's resume either carries on with them or ends them.
    held: HashSet<String>,
    forgotten: VecDeque<String>,
    /// Reports appended since the last batch was taken.
    waiting: usize,
    /// The newest reports spooled per operation, contiguous in seq, not yet
    /// acked: a copy of the spool's tail, [`RECENT_MAX`] at most in all.
    recent: HashMap<String, VecDeque<EncodedReport>>,
    recent_len: usize,
    batch_max: usize,
}

impl ReportIntake {
    /// Opens the intake over `spool`. Every operation a previous process
    /// left without a terminal report is closed with a failed one, or, with
    /// `hold_open`, kept open (numbered on from its last report) for the
    /// Poller's resume to carry on with or end ([`ReportIntake::end_held`]).
    pub fn recover(
        mut spool: Box<dyn Spool>,
        clock: Arc<dyn Clock>,
        stats: StatsCell,
        log: Logger,
        hold_open: bool,
    ) -> Result<Self, SpoolError> {
        let mut next_seq = HashMap::new();
        let mut closed = HashSet::new();
        let mut held = HashSet::new();
        let ops = spool.operations()?;
        let ts = rfc3339(clock.wall());
        let mut backlog = Backlog::default();
        let now = clock.now();
        for op in ops {
            if op.terminal {
                backlog.recovered(&op.op_id, op.acked, op.last_seq, now);
                closed.insert(op.op_id);
                continue;
            }
            if hold_open {
                // Its next report is spooled through `push`, which counts it.
                backlog.recovered(&op.op_id, op.acked, op.last_seq, now);
                next_seq.insert(op.op_id.clone(), op.last_seq + 1);
                held.insert(op.op_id);
                continue;
            }
            backlog.recovered(&op.op_id, op.acked, op.last_seq + 1, now);
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
                held,
                forgotten: VecDeque::new(),
                waiting: 0,
                recent: HashMap::new(),
                recent_len: 0,
                batch_max: 1000,
            }),
            wake: Notify::new(),
            arrived: Notify::new(),
            acked: watch::channel(0).0,
            backlog: Mutex::new(backlog),
            clock,
            stats,
            log,
        })
    }

    fn lock(&self) -> MutexGuard<'_, IntakeInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_backlog(&self) -> MutexGuard<'_, Backlog> {
        self.backlog.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The wall clock report times are read from.
    pub fn wall(&self) -> std::time::SystemTime {
        self.clock.wall()
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
        // Encoded once: the spool stores these bytes and `POST /reports`
        // sends them.
        let encoded = EncodedReport::of(&report);
        if let Err(e) = g.spool.append_encoded(&report, &encoded.json) {
            error!(self.log, "could not spool a report"; "op" => op_id, "error" => %e);
            self.stats.error(e.to_string());
            return false;
        }
        let bytes = encoded.json.len() as u64;
        g.keep_recent(encoded);
        self.lock_backlog().spooled(op_id, seq, self.clock.now());
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
        self.stats.update(|s| {
            s.reports_spooled += 1;
            s.report_bytes += bytes;
        });
        if full {
            self.wake.notify_one();
        } else if first {
            self.arrived.notify_one();
        }
        true
    }

    /// Operations a previous process left unfinished and nothing has
    /// carried on with or ended yet.
    #[cfg(test)]
    pub(crate) fn held(&self) -> Vec<String> {
        let mut held: Vec<String> = self.lock().held.iter().cloned().collect();
        held.sort();
        held
    }

    /// `op_id` is carried on with: no longer held.
    pub(crate) fn carry_on(&self, op_id: &str) {
        self.lock().held.remove(op_id);
    }

    /// Ends every operation still held with a failed report saying
    /// `message`; returns their ids.
    pub(crate) fn end_held(&self, message: &str) -> Vec<String> {
        let held: Vec<String> = std::mem::take(&mut self.lock().held).into_iter().collect();
        for op in &held {
            self.push(
                op,
                ReportBody::Op(OpReport {
                    state: State::Failed,
                    message: Some(message.to_owned()),
                }),
            );
        }
        held
    }

    /// Records a mark of a step's output stream (see `Spool::mark`); a
    /// failure only costs reading more after a restart.
    pub(crate) fn mark(
        &self,
        op_id: &str,
        step: u32,
        node: &str,
        stream: crate::model::Stream,
        mark: crate::spool::Mark,
    ) {
        if let Err(e) = self.lock().spool.mark(op_id, step, node, stream, mark) {
            debug!(self.log, "could not record a mark of a step's output"; "op" => op_id, "error" => %e);
        }
    }

    /// Where each node step of `op_id` stands, from the spool.
    pub(crate) fn progress(&self, op_id: &str) -> Result<ProgressMap, SpoolError> {
        let mut map = ProgressMap::default();
        for p in self.lock().spool.progress(op_id)? {
            map.set(p);
        }
        Ok(map)
    }

    /// Wakes the LogShipper now (a batch is full, or a drain flushes).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Resolves on the next [`ReportIntake::wake`] (or a full batch).
    pub(crate) fn woken(&self) -> tokio::sync::futures::Notified<'_> {
        self.wake.notified()
    }

    /// Resolves when the first report after the last batch was taken is
    /// spooled.
    pub(crate) fn arrival(&self) -> tokio::sync::futures::Notified<'_> {
        self.arrived.notified()
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
    pub(crate) fn next_batch(
        &self,
        batch_max: usize,
        cursor: usize,
        single_op: bool,
    ) -> Result<Vec<EncodedReport>, SpoolError> {
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
            spool.read_encoded(op, after, max).unwrap_or_else(|e| {
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
    pub(crate) fn drop_operation(&self, op_id: &str) -> Result<u64, SpoolError> {
        let mut g = self.lock();
        let unacked = g
            .spool
            .operations()?
            .into_iter()
            .find(|o| o.op_id == op_id)
            .map_or(0, |o| o.last_seq.saturating_sub(o.acked));
        g.spool.forget(op_id)?;
        g.spool.journal_release(op_id)?;
        g.forget_recent(op_id);
        self.lock_backlog().forget(op_id);
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

    /// Journals the intent to claim `op_id` for `replica_id`, durably,
    /// before the claim request is sent.
    pub(crate) fn journal_claim(&self, op_id: &str, replica_id: &str) -> Result<(), SpoolError> {
        self.lock().spool.journal_claim(op_id, replica_id)
    }

    /// Journals that the claim of `op_id` was answered with the operation.
    pub(crate) fn journal_claimed(&self, op_id: &str, replica_id: &str) -> Result<(), SpoolError> {
        self.lock().spool.journal_claimed(op_id, replica_id)
    }

    /// Drops `op_id` from the claim journal.
    pub(crate) fn journal_release(&self, op_id: &str) -> Result<(), SpoolError> {
        self.lock().spool.journal_release(op_id)
    }

    /// The claim journal and the spooled operations, read together.
    pub(crate) fn journal(&self) -> Result<(Vec<JournalEntry>, Vec<SpooledOperation>), SpoolError> {
        let mut g = self.lock();
        Ok((g.spool.journal()?, g.spool.operations()?))
    }

    /// Records the replica id this process registered as.
    pub(crate) fn record_replica(&self, replica_id: &str) -> Result<(), SpoolError> {
        self.lock().spool.record_replica(replica_id)
    }

    /// The replica id recorded last.
    pub(crate) fn recorded_replica(&self) -> Result<Option<String>, SpoolError> {
        self.lock().spool.recorded_replica()
    }

    /// Reports spooled and not acknowledged, and when the oldest of them
    /// was spooled (within [`crate::backlog::MARK_EVERY`]).
    pub(crate) fn backlog(&self) -> (u64, Option<Instant>) {
        let b = self.lock_backlog();
        (b.pending(), b.oldest())
    }

    /// Applies the control plane's acks; returns how many reports they newly
    /// cover.
    pub(crate) fn apply_acks(&self, acks: &BTreeMap<String, u64>) -> Result<u64, SpoolError> {
        let mut g = self.lock();
        let ops = g.spool.operations()?;
        let mut newly = 0;
        for step in ack_steps(&ops, acks) {
            g.spool.ack(&step.op_id, step.seq)?;
            g.acked_recent(&step.op_id, step.seq);
            self.lock_backlog().acked(&step.op_id, step.seq);
            newly += step.newly;
            if step.complete {
                g.spool.forget(&step.op_id)?;
                // The terminal report is acked: the claim is settled.
                g.spool.journal_release(&step.op_id)?;
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
    fn keep_recent(&mut self, report: EncodedReport) {
        let op_id = report.op_id.clone();
        let kept = self.recent.entry(op_id.clone()).or_default();
        kept.push_back(report);
        self.recent_len += 1;
        while self.recent_len > RECENT_MAX {
            // The operation's own oldest first; when it has nothing older,
            // the whole copy goes (the spool still holds everything).
            let kept = self.recent.get_mut(&op_id).expect("just inserted");
            if kept.len() > 1 {
                kept.pop_front();
                self.recent_len -= 1;
            } else {
                self.recent.retain(|op, _| op == &op_id);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::tests::report;
    use crate::model::NodeReport;
    use crate::spool::SpooledOperation;

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
            false,
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
            last.decode().unwrap().body,
            ReportBody::Op(OpReport {
                state: State::Failed,
                message: Some(RESTARTED_MESSAGE.into())
            })
        );
    }
    #[test]
    fn held_operations_number_on_until_carried_on_with_or_ended() {
        let mut spool = crate::spool::MemorySpool::new();
        spool
            .append(&[report("a", 1, false), report("b", 1, false)])
            .unwrap();
        spool.append(&[report("done", 1, true)]).unwrap();
        let intake = ReportIntake::recover(
            Box::new(spool),
            Arc::new(crate::clock::SystemClock),
            StatsCell::default(),
            Logger::root(slog::Discard, slog::o!()),
            true,
        )
        .unwrap();
        assert_eq!(intake.held(), vec!["a".to_owned(), "b".to_owned()]);
        // Nothing was closed at open: a report of a held operation follows on.
        assert!(intake.push("a", report("x", 0, false).body));
        intake.carry_on("a");
        assert_eq!(intake.end_held("gone"), vec!["b".to_owned()]);
        assert!(intake.held().is_empty());
        let batch = intake.next_batch(10, 0, false).unwrap();
        let got: Vec<_> = batch
            .iter()
            .map(|r| (r.op_id.as_str(), r.seq, r.terminal))
            .collect();
        assert_eq!(
            got,
            vec![
                ("a", 1, false),
                ("a", 2, false),
                ("b", 1, false),
                ("done", 1, true)
            ]
        );
        // The failed report of the ended one goes once the rest is acked.
        let acks: BTreeMap<String, u64> = [("a".into(), 2), ("b".into(), 1)].into();
        intake.apply_acks(&acks).unwrap();
        let batch = intake.next_batch(10, 0, false).unwrap();
        let ended = batch.iter().find(|r| r.op_id == "b").unwrap();
        assert_eq!(
            (ended.seq, &ended.decode().unwrap().body),
            (
                2,
                &ReportBody::Op(OpReport {
                    state: State::Failed,
                    message: Some("gone".into())
                })
            )
        );
        // An ended one takes nothing more.
        assert!(!intake.push("b", report("x", 0, false).body));
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
            false,
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
