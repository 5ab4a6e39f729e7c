//! The SSH node executor: runs command, script and copy steps on a node over
//! one libssh2 session per node step, with host key checking, credentials
//! from the runner's key store, live output and abort by process group.
//!
//! Codemap: `settings` (the executor's settings and their defaults),
//! `session` (a connected session, shared by the parts below), `host_key`
//! (known_hosts policies), `connect` (TCP and handshake), `auth` (the key
//! store and its node bindings, password, agent), `remote` (the wrapper the
//! step runs in on the node), `channel` (the output loop and abort),
//! `files` (SFTP upload for scripts and copy steps). Each imports only
//! modules listed before it.
//!
//! All libssh2 work is blocking work on the thread that calls `execute`; the
//! runtime gives every node step a thread of its own.

mod auth;
mod channel;
mod connect;
mod files;
mod host_key;
mod remote;
mod session;
mod settings;

pub use auth::{tighten_key_store, KEY_ATTRIBUTE, PASSWORD_ATTRIBUTE};
pub use settings::{
    expand_home, store_path, KeyBinding, KnownHostsPolicy, NodeSet, SshSettings,
    DEFAULT_KNOWN_HOSTS_FILE,
};

use rdrunner_actors::model::Step;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use rdrunner_actors::{
    AbortReason, AbortSignal, ExecutorError, ExecutorFigures, NodeExecutor, OutputSink,
    StepOutcome, StepRequest,
};
use slog::{debug, o, Logger};

use channel::reason_text;

/// The SSH `NodeExecutor`.
pub struct SshExecutor {
    settings: SshSettings,
    log: Logger,
    /// Connect times and errors by kind, for the runtime's counters.
    figures: Mutex<ExecutorFigures>,
}

impl SshExecutor {
    pub fn new(settings: SshSettings, log: Logger) -> Self {
        SshExecutor {
            settings,
            log,
            figures: Mutex::new(ExecutorFigures::default()),
        }
    }

    fn figures_mut(&self) -> MutexGuard<'_, ExecutorFigures> {
        self.figures.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl NodeExecutor for SshExecutor {
    fn execute(
        &self,
        req: &StepRequest,
        output: &mut dyn OutputSink,
        abort: &AbortSignal,
    ) -> Result<StepOutcome, ExecutorError> {
        let result = self.run_step(req, output, abort);
        if let Err(e) = &result {
            self.figures_mut().error(e.kind);
        }
        result
    }

    fn figures(&self) -> Option<ExecutorFigures> {
        Some(self.figures_mut().clone())
    }
}

impl SshExecutor {
    fn run_step(
        &self,
        req: &StepRequest,
        output: &mut dyn OutputSink,
        abort: &AbortSignal,
    ) -> Result<StepOutcome, ExecutorError> {
        let log = self.log.new(o!(
            "op" => req.op_id.clone(),
            "node" => req.node.name.clone(),
            "step" => req.step_index,
        ));
        if let Some(reason) = abort.reason() {
            return Ok(aborted_before_start(reason));
        }
        // Which credentials this node may have is decided, and they are
        // read and checked, before anything is sent anywhere.
        let credentials = auth::Credentials::load(&self.settings, &req.node)?;
        let connecting = Instant::now();
        let conn = connect::connect(&req.node, &self.settings)?;
        host_key::verify(&conn, &self.settings, &log)?;
        let user = req
            .node
            .username
            .clone()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| self.settings.default_user.clone());
        auth::authenticate(&conn, &self.settings, &credentials, &req.node, &user)?;
        self.figures_mut()
            .connect_duration
            .observe(connecting.elapsed());
        debug!(log, "connected"; "target" => &conn.target, "user" => &user);
        // Connecting is bounded but not abortable: look again before starting.
        if let Some(reason) = abort.reason() {
            conn.disconnect();
            return Ok(aborted_before_start(reason));
        }
        let run = channel::Runner {
            conn: &conn,
            settings: &self.settings,
            log: &log,
            node: &req.node.name,
        };
        let outcome = match &req.step {
            Step::Command(c) => run.run(&req.env, &c.command, output, abort, req.kill_grace),
            Step::Script(s) => files::run_script(&run, req, s, output, abort),
            Step::Copy(c) => files::copy(&run, c, abort),
        };
        conn.disconnect();
        outcome
    }
}

fn aborted_before_start(reason: AbortReason) -> StepOutcome {
    StepOutcome {
        exit_code: None,
        signal: None,
        message: Some(format!("{} before the step started", reason_text(reason))),
    }
}
