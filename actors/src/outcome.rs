//! How an operation ends on this replica, whoever ends it (its StepWorker,
//! the registry for a queued or cancelled one, the supervisor's exit hook
//! for a worker that died): the terminal report is spooled once, the
//! operations.log end record written, the slot freed and the registry told
//! through its inbox.

use std::sync::Arc;

use slog::{info, Logger};

use crate::clock::Clock;
use crate::inbox::{RegistryCommand, RegistryInbox};
use crate::intake::ReportIntake;
use crate::model::{OpReport, ReportBody, State};
use crate::operations::OperationStore;

/// Ends operations; safe to use from any thread.
pub struct Outcomes {
    pub(crate) intake: Arc<ReportIntake>,
    pub(crate) operations: Arc<OperationStore>,
    pub(crate) inbox: Arc<RegistryInbox>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) ops_log: Logger,
}

impl Outcomes {
    /// Spools `op_id`'s terminal report (once: later calls do nothing),
    /// writes its operations.log end record, frees its slot and wakes the
    /// registry to start the next queued operation.
    pub fn finish(&self, op_id: &str, state: State, message: Option<String>) {
        let body = ReportBody::Op(OpReport {
            state,
            message: message.clone(),
        });
        if !self.intake.push(op_id, body) {
            return;
        }
        self.operations.count_finished(state);
        let summary = self.operations.lock().finished(op_id, state);
        if let Some(s) = summary {
            let duration_ms = s
                .started
                .map(|t| self.clock.now().saturating_duration_since(t).as_millis() as u64)
                .unwrap_or(0);
            info!(self.ops_log, "operation ended";
                "op" => op_id, "execution" => s.execution, "project" => &s.project,
                "job" => &s.job, "nodes" => s.nodes, "outcome" => state.as_str(),
                "duration_ms" => duration_ms, "message" => message.unwrap_or_default());
        }
        self.operations.refresh_counts();
        self.inbox.push(RegistryCommand::Finished(op_id.to_owned()));
    }
}
