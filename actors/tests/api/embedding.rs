//! Embedding the runtime through its public API only, as the daemon and
//! other hosts do: a control plane and an executor of the host's own, one
//! operation run, then a drain that ends the runtime cleanly.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdrunner_actors::model::{
    CheckinRequest, CheckinResponse, CommandStep, Dispatch, ExecutionInfo, ExecutorKind, Node,
    Operation, Report, ReportsRequest, ReportsResponse, ShutdownRequest, StartupRequest,
    StartupResponse, State, Step, Stream,
};
use rdrunner_actors::{
    AbortSignal, CallResult, ClaimOutcome, ControlPlane, ExecutorError, NodeExecutor, OutputSink,
    Runtime, RuntimeConfig, StepOutcome, StepRequest,
};

/// Offers one operation once, stores reports by protocol v1's rules.
#[derive(Default)]
struct OneShot {
    offered: Mutex<bool>,
    stored: Mutex<BTreeMap<String, Vec<Report>>>,
    shutdowns: Mutex<u32>,
    /// Signalled after each `POST /reports`.
    reported: tokio::sync::Notify,
}

fn the_operation() -> Operation {
    Operation {
        id: "op-1".into(),
        execution: ExecutionInfo {
            id: 7,
            project: "demo".into(),
            job: "hello".into(),
            user: "u".into(),
        },
        steps: vec![Step::Command(CommandStep {
            command: "greet ${node.name}".into(),
        })],
        nodes: vec![Node::local("here")],
        dispatch: Dispatch::default(),
        options: Default::default(),
        secure_options: vec![],
        timeout_ms: None,
        step_timeout_ms: None,
    }
}

impl ControlPlane for OneShot {
    fn startup(&self, _: StartupRequest) -> CallResult<StartupResponse> {
        Box::pin(async {
            Ok(StartupResponse {
                replica_id: "r1".into(),
                poll_interval_ms: 200,
                long_poll_ms: 0,
                report_interval_ms: 20,
                report_batch_max: 100,
                lease_ms: 60_000,
            })
        })
    }

    fn checkin(&self, _: CheckinRequest, _: Duration) -> CallResult<CheckinResponse> {
        let first = !std::mem::replace(&mut *self.offered.lock().unwrap(), true);
        Box::pin(async move {
            Ok(CheckinResponse {
                operations: if first { vec![the_operation()] } else { vec![] },
                ..Default::default()
            })
        })
    }

    fn claim(&self, _: &str, _: &str) -> CallResult<ClaimOutcome> {
        Box::pin(async { Ok(ClaimOutcome::Claimed(Box::new(the_operation()))) })
    }

    fn reports(&self, req: ReportsRequest) -> CallResult<ReportsResponse> {
        let mut stored = self.stored.lock().unwrap();
        let mut acks = BTreeMap::new();
        for r in req.reports {
            let v = stored.entry(r.op_id.clone()).or_default();
            if r.seq == v.len() as u64 + 1 {
                v.push(r.clone());
            }
            acks.insert(r.op_id, v.len() as u64);
        }
        drop(stored);
        self.reported.notify_one();
        Box::pin(async move {
            Ok(ReportsResponse {
                acks,
                cancel: vec![],
            })
        })
    }

    fn shutdown(&self, _: ShutdownRequest) -> CallResult<()> {
        *self.shutdowns.lock().unwrap() += 1;
        Box::pin(async { Ok(()) })
    }
}

/// Prints the expanded command.
struct Echo;

impl NodeExecutor for Echo {
    fn execute(
        &self,
        req: &StepRequest,
        output: &mut dyn OutputSink,
        _abort: &AbortSignal,
    ) -> Result<StepOutcome, ExecutorError> {
        if let Step::Command(c) = &req.step {
            output.line(Stream::Stdout, c.command.clone());
        }
        Ok(StepOutcome::exited(0))
    }
}

#[actix_rt::test]
async fn a_host_runs_an_operation_and_drains() {
    let cp = Arc::new(OneShot::default());
    let config = RuntimeConfig {
        poll_interval: Duration::from_millis(200),
        report_interval: Duration::from_millis(20),
        ..RuntimeConfig::default()
    };
    let handle = Runtime::builder()
        .config(config)
        .control_plane(cp.clone())
        .executor(ExecutorKind::Local, Arc::new(Echo))
        .start()
        .expect("starts inside a System");
    // Bounded wait for the operation's terminal report.
    let done = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let complete = cp
                .stored
                .lock()
                .unwrap()
                .get("op-1")
                .and_then(|r| r.last().map(Report::is_terminal))
                .unwrap_or(false);
            if complete {
                break;
            }
            cp.reported.notified().await;
        }
    })
    .await;
    assert!(done.is_ok(), "operation did not complete");
    tokio::time::timeout(
        Duration::from_secs(10),
        handle.drain(Duration::from_secs(1)),
    )
    .await
    .expect("drain ends");
    assert_eq!(handle.wait().await, Ok(()));
    let stored = cp.stored.lock().unwrap().get("op-1").cloned().unwrap();
    let text = serde_json::to_value(&stored).unwrap();
    assert_eq!(text[2]["text"], "greet 'here'");
    assert_eq!(
        text.as_array().unwrap().last().unwrap()["state"],
        "succeeded"
    );
    assert!(matches!(
        &stored.last().unwrap().body,
        rdrunner_actors::model::ReportBody::Op(o) if o.state == State::Succeeded
    ));
    assert_eq!(*cp.shutdowns.lock().unwrap(), 1);
    let stats = handle.stats();
    assert_eq!(stats.replica_id.as_deref(), Some("r1"));
    assert_eq!(stats.reports_acked, stats.reports_spooled);
}
