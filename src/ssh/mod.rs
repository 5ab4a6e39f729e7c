//! The SSH node executor: runs command, script and copy steps on a node over
//! one libssh2 session per node step, with host key checking, credentials
//! from the runner's key store, live output and abort by process group.
//!
//! Codemap: `settings` (the executor's settings and their defaults),
//! `session` (a connected session, shared by the parts below), `host_key`
//! (known_hosts policies), `connect` (TCP and handshake), `auth` (the key
//! store and its node bindings, password, agent), `remote` (the wrappers the
//! step runs in on the node), `channel` (the attached output loop and
//! abort), `detached` (a step detached from its connection, followed over
//! SFTP and reattached when the connection drops), `files` (SFTP upload for
//! scripts and copy steps). Each imports only modules listed before it.
//!
//! All libssh2 work is blocking work on the thread that calls `execute`; the
//! runtime gives every node step a thread of its own.

mod auth;
mod channel;
mod connect;
mod detached;
mod files;
mod host_key;
mod remote;
mod session;
mod settings;

pub use auth::{tighten_key_store, KEY_ATTRIBUTE, PASSWORD_ATTRIBUTE};
pub use settings::{
    expand_home, store_path, KeyBinding, KnownHostsPolicy, NodeSet, SshSettings, StepKey,
    DEFAULT_KNOWN_HOSTS_FILE,
};

use std::cell::RefCell;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use rdrunner_actors::model::{Node, Step};
use rdrunner_actors::{
    AbortReason, AbortSignal, ExecutorError, ExecutorErrorKind, ExecutorFigures, NodeExecutor,
    OutputSink, StepOutcome, StepRequest,
};
use slog::{debug, o, Logger};

use channel::reason_text;
use detached::{Dial, Reattach, Undetachable};
use session::Connection;

/// The SSH `NodeExecutor`.
pub struct SshExecutor {
    settings: Arc<SshSettings>,
    log: Logger,
    /// Nodes found unable to host a detached step.
    undetachable: Undetachable,
    /// Connect times (reattaching dials included) and errors by kind, for
    /// the runtime's counters.
    figures: Arc<Mutex<ExecutorFigures>>,
}

impl SshExecutor {
    pub fn new(settings: SshSettings, log: Logger) -> Self {
        SshExecutor {
            settings: Arc::new(settings),
            log,
            undetachable: Undetachable::default(),
            figures: Arc::new(Mutex::new(ExecutorFigures::default())),
        }
    }

    fn figures_mut(&self) -> MutexGuard<'_, ExecutorFigures> {
        lock_figures(&self.figures)
    }
}

fn lock_figures(figures: &Mutex<ExecutorFigures>) -> MutexGuard<'_, ExecutorFigures> {
    figures.lock().unwrap_or_else(|e| e.into_inner())
}

/// Connects to `node`, checks its host key and logs in as `user`; the time
/// that took goes into `figures`.
fn dial(
    settings: &SshSettings,
    credentials: &auth::Credentials,
    node: &Node,
    user: &str,
    log: &Logger,
    figures: &Mutex<ExecutorFigures>,
) -> Result<Connection, ExecutorError> {
    let connecting = Instant::now();
    let conn = connect::connect(node, settings)?;
    host_key::verify(&conn, settings, log)?;
    auth::authenticate(&conn, settings, credentials, node, user)?;
    lock_figures(figures)
        .connect_duration
        .observe(connecting.elapsed());
    Ok(conn)
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
            self.figures_mut().error(e.kind.name());
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
        // A step started by a previous process runs on the node whatever
        // happened since: an abort must still reach its process group.
        let again = req.reattach && !matches!(req.step, Step::Copy(_));
        if let Some(reason) = abort.reason().filter(|_| !again) {
            return Ok(aborted_before_start(reason));
        }
        // Which credentials this node may have is decided, and they are
        // read and checked, before anything is sent anywhere.
        let credentials = Arc::new(auth::Credentials::load(&self.settings, &req.node)?);
        let user = req
            .node
            .username
            .clone()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| self.settings.default_user.clone());
        let conn = if again {
            // The step runs on the node whatever happened to the runner: a
            // node briefly out of reach is dialled again within the window.
            let (settings, node, log2) = (self.settings.clone(), req.node.clone(), log.clone());
            let (creds, user2, figures) = (credentials.clone(), user.clone(), self.figures.clone());
            let d: Dial = Arc::new(move || dial(&settings, &creds, &node, &user2, &log2, &figures));
            detached::redial(&d, &self.settings, &req.node.name, abort, &log)?
        } else {
            dial(
                &self.settings,
                &credentials,
                &req.node,
                &user,
                &log,
                &self.figures,
            )?
        };
        debug!(log, "connected"; "target" => &conn.target, "user" => &user);
        // Connecting is bounded but not abortable: look again before starting.
        if let Some(reason) = abort.reason().filter(|_| !again) {
            conn.disconnect();
            return Ok(aborted_before_start(reason));
        }
        // A copy is idempotent: done again after a restart of the runner.
        if again && !self.settings.reattach {
            conn.disconnect();
            return Err(ExecutorError::new(
                ExecutorErrorKind::Config,
                format!(
                    "cannot re-attach to the step a previous process of the runner started on node '{}': runner.reattach is off; the step is not run again",
                    req.node.name
                ),
            ));
        }
        let reattach = self.settings.reattach.then(|| {
            let (settings, node, log) = (self.settings.clone(), req.node.clone(), log.clone());
            let figures = self.figures.clone();
            let dial: Dial =
                Arc::new(move || dial(&settings, &credentials, &node, &user, &log, &figures));
            Reattach {
                dial,
                undetachable: &self.undetachable,
                name: self
                    .settings
                    .step_key
                    .name(&req.op_id, req.step_index, &req.node.name),
                again,
                from: req.resume_at,
            }
        });
        let run = channel::Runner {
            conn: RefCell::new(conn),
            settings: &self.settings,
            log: &log,
            node: &req.node.name,
        };
        let outcome = match &req.step {
            Step::Command(c) => detached::run_step(
                &run,
                reattach.as_ref(),
                &req.env,
                &c.command,
                output,
                abort,
                req.kill_grace,
            ),
            Step::Script(s) => files::run_script(&run, reattach.as_ref(), req, s, output, abort),
            Step::Copy(c) => files::copy(&run, c, abort),
        };
        run.conn.into_inner().disconnect();
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
