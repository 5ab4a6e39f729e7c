//! The runner under test, started from its working directory as an operator
//! would: the `rdrunner` binary with `run`, reading `runner.toml` and
//! `.rdrunner-creds` from there; stopped with SIGTERM (drain).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A running `rdrunner run`. Killed if dropped while still running.
pub struct Runner {
    child: Option<Child>,
    stderr_path: PathBuf,
}

impl Runner {
    /// Starts `rdrunner run` in `work`; its stdout and stderr go to
    /// `work/runner.stdout` and `work/runner.stderr`.
    pub fn start(work: &Path) -> Runner {
        let stdout = File::create(work.join("runner.stdout")).unwrap();
        let stderr_path = work.join("runner.stderr");
        let stderr = File::create(&stderr_path).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_rdrunner"))
            .arg("run")
            .current_dir(work)
            .env_remove("RUNNER_RUNDECK_CLIENT_ID")
            .env_remove("RUNNER_RUNDECK_SERVER_TOKEN")
            .env_remove("RUNNER_RUNDECK_SERVER_URL")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("start the rdrunner binary");
        Runner {
            child: Some(child),
            stderr_path,
        }
    }

    /// What the runner printed on stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// `kill -9`: the process dies at once, as under the OOM killer.
    pub fn kill9(mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().expect("SIGKILL the runner");
        let _ = child.wait();
    }

    /// SIGTERM, then waits (at most 20 s) for the drain to end.
    pub fn stop(mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM {} failed", child.id());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().expect("wait for rdrunner") {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "rdrunner did not exit within 20 s of SIGTERM; stderr:\n{}",
                    self.stderr()
                );
            }
            // A child's exit gives no event to await without a reaper thread.
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
