//! A private OpenSSH server on loopback for tests, the demo and benchmarks:
//! its own host keys (ed25519 and ECDSA), client key, config and log in a
//! directory of the caller's, on a free port, killed when dropped.
//!
//! The server runs as the current user; logging in as that user with the
//! generated client key works without touching the system's own sshd, its
//! keys or `~/.ssh`.

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian and most distributions install the server.
pub const SSHD_PATH: &str = "/usr/sbin/sshd";

/// How long `start` waits for the server to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Knobs for a private sshd beyond the defaults of [`TestSshd::start`].
#[derive(Debug, Clone, Default)]
pub struct SshdOptions {
    /// Allow password authentication (`PasswordAuthentication yes`). Users
    /// then log in with their system password; see
    /// [`TestSshd::ensure_password_user`].
    pub password_auth: bool,
    /// Extra `sshd_config` lines, written verbatim before the defaults, so
    /// they override them (sshd keeps the first value of a keyword), e.g.
    /// `ChannelTimeout session:command=1s` or `LogLevel DEBUG`. No `Match`
    /// blocks.
    pub extra_config: Vec<String>,
    /// More loopback addresses to listen on, besides `127.0.0.1`, on the
    /// same port. Each is a listening socket of its own, with its own
    /// accept queue: OpenSSH listens with a fixed backlog of 128, so
    /// hundreds of clients connecting at once to one address overflow it,
    /// while the same clients spread over several addresses do not.
    pub also_listen_on: Vec<Ipv4Addr>,
}

/// A running private sshd. Dropping it kills the server.
#[derive(Debug)]
pub struct TestSshd {
    dir: PathBuf,
    port: u16,
    user: String,
    options: SshdOptions,
    child: Option<Child>,
}

impl TestSshd {
    /// Starts a server with key authentication only.
    pub fn start(dir: &Path) -> io::Result<TestSshd> {
        Self::start_with(dir, SshdOptions::default())
    }

    /// Starts a server with `options`: generates the host key and a client
    /// key pair in `dir` (kept when they already exist), writes
    /// `sshd_config`, runs sshd on a free loopback port and waits until it
    /// accepts connections.
    pub fn start_with(dir: &Path, options: SshdOptions) -> io::Result<TestSshd> {
        if !Path::new(SSHD_PATH).is_file() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{SSHD_PATH} is missing: install openssh-server (apt-get install openssh-server) to run the SSH tests"),
            ));
        }
        // sshd refuses to start without its privilege-separation directory.
        let _ = fs::create_dir_all("/run/sshd");
        fs::create_dir_all(dir)?;
        let dir = dir.canonicalize()?;
        let user = current_user()?;
        let mut sshd = TestSshd {
            dir,
            port: 0,
            user,
            options,
            child: None,
        };
        if !sshd.host_key_path().exists() {
            keygen(&sshd.host_key_path(), None)?;
        }
        if !sshd.ecdsa_host_key_path().exists() {
            keygen_typed(&sshd.ecdsa_host_key_path(), "ecdsa", None)?;
        }
        if !sshd.client_key().exists() {
            keygen(&sshd.client_key(), None)?;
        }
        let authorized = sshd.dir.join("authorized_keys");
        if !authorized.exists() {
            fs::write(
                &authorized,
                fs::read_to_string(pub_path(&sshd.client_key()))?,
            )?;
        }
        // A free port can be taken by someone else between our probe and
        // sshd's bind; try a few before giving up.
        let mut last_err = None;
        for _ in 0..5 {
            sshd.port = free_port(&sshd.options.also_listen_on)?;
            match sshd.spawn() {
                Ok(()) => return Ok(sshd),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| io::Error::other("sshd did not start")))
    }

    /// The loopback address the server listens on.
    pub fn host(&self) -> &str {
        "127.0.0.1"
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The user to log in as: the user the tests run as.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The directory holding the keys, config and log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The private key (OpenSSH format, no passphrase) whose public half is
    /// authorized.
    pub fn client_key(&self) -> PathBuf {
        self.dir.join("client_ed25519")
    }

    /// The server's public ed25519 host key, as in a `.pub` file
    /// (`ssh-ed25519 AAAA... comment`). The server also has an ECDSA host
    /// key ([`TestSshd::ecdsa_host_public_key`]), which clients such as
    /// libssh2 prefer by default: a client that knows only the ed25519 key
    /// (as OpenSSH's client records it) must ask for that one.
    pub fn host_public_key(&self) -> io::Result<String> {
        Ok(fs::read_to_string(pub_path(&self.host_key_path()))?
            .trim()
            .to_owned())
    }

    /// The server's public ECDSA (nistp256) host key, as in a `.pub` file.
    pub fn ecdsa_host_public_key(&self) -> io::Result<String> {
        Ok(fs::read_to_string(pub_path(&self.ecdsa_host_key_path()))?
            .trim()
            .to_owned())
    }

    /// A `known_hosts` line for this server's ed25519 key:
    /// `[127.0.0.1]:PORT ssh-ed25519 BASE64`.
    pub fn known_hosts_line(&self) -> io::Result<String> {
        self.known_hosts_line_for(&self.host_public_key()?)
    }

    /// A `known_hosts` line for this server and `public_key` (a `.pub` line).
    pub fn known_hosts_line_for(&self, public_key: &str) -> io::Result<String> {
        self.known_hosts_line_at(self.host(), public_key)
    }

    /// A `known_hosts` line for this server reached at `host` (one of
    /// [`TestSshd::addresses`]) and `public_key` (a `.pub` line).
    pub fn known_hosts_line_at(&self, host: &str, public_key: &str) -> io::Result<String> {
        let mut parts = public_key.split_whitespace();
        let (kind, blob) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        Ok(format!("[{host}]:{} {kind} {blob}", self.port))
    }

    /// Every address the server listens on: `127.0.0.1` first, then
    /// [`SshdOptions::also_listen_on`], all on [`TestSshd::port`].
    pub fn addresses(&self) -> Vec<SocketAddr> {
        std::iter::once(Ipv4Addr::LOCALHOST)
            .chain(
                self.options
                    .also_listen_on
                    .iter()
                    .copied()
                    .filter(|a| *a != Ipv4Addr::LOCALHOST),
            )
            .map(|a| SocketAddr::from((a, self.port)))
            .collect()
    }

    /// Generates another client key pair named `name` in the directory,
    /// encrypted with `passphrase` when given, and authorizes it when
    /// `authorize` is true. Returns the private key's path.
    pub fn new_client_key(
        &self,
        name: &str,
        passphrase: Option<&str>,
        authorize: bool,
    ) -> io::Result<PathBuf> {
        let path = self.dir.join(name);
        let _ = fs::remove_file(&path);
        let _ = fs::remove_file(pub_path(&path));
        keygen(&path, passphrase)?;
        if authorize {
            let line = fs::read_to_string(pub_path(&path))?;
            let mut keys = fs::read_to_string(self.dir.join("authorized_keys"))?;
            keys.push_str(&line);
            fs::write(self.dir.join("authorized_keys"), keys)?;
        }
        Ok(path)
    }

    /// Replaces the host keys with new ones and restarts the server on the
    /// same port (what a reinstalled or impersonated node looks like).
    pub fn regenerate_host_key(&mut self) -> io::Result<()> {
        for (key, kind) in [
            (self.host_key_path(), "ed25519"),
            (self.ecdsa_host_key_path(), "ecdsa"),
        ] {
            let _ = fs::remove_file(&key);
            let _ = fs::remove_file(pub_path(&key));
            keygen_typed(&key, kind, None)?;
        }
        self.restart()
    }

    /// Stops and starts the server again on the same port.
    pub fn restart(&mut self) -> io::Result<()> {
        self.stop();
        self.spawn()
    }

    /// Stops the server (`start`-ed state is gone until `restart`).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The server's log so far (`-E` file), for test failure messages.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
    }

    /// Makes sure a local account `name` exists with password `password`, so
    /// that password authentication can be tested. Needs root (it runs
    /// `useradd` and `chpasswd`) and changes the system's accounts: meant for
    /// throwaway test machines and CI containers only. The caller's sshd must
    /// have been started with `password_auth`.
    pub fn ensure_password_user(&self, name: &str, password: &str) -> io::Result<()> {
        // Tests run in parallel: two creating the same account would race.
        static ACCOUNTS: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _guard = ACCOUNTS.lock().unwrap_or_else(|e| e.into_inner());
        let exists = Command::new("id")
            .arg(name)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?
            .success();
        if !exists {
            run(Command::new("useradd").args(["-m", "-s", "/bin/sh", name]))?;
        }
        let mut child = Command::new("chpasswd")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().expect("piped stdin");
            writeln!(stdin, "{name}:{password}")?;
        }
        let out = child.wait_with_output()?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "chpasswd for {name} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(())
    }

    fn host_key_path(&self) -> PathBuf {
        self.dir.join("host_ed25519")
    }

    fn ecdsa_host_key_path(&self) -> PathBuf {
        self.dir.join("host_ecdsa")
    }

    fn write_config(&self) -> io::Result<PathBuf> {
        let mut c = String::new();
        // sshd keeps the first value it reads for a keyword: the caller's
        // lines go first so that they override the defaults below.
        for line in &self.options.extra_config {
            let _ = writeln!(c, "{line}");
        }
        let d = self.dir.display();
        for addr in self.addresses() {
            let _ = writeln!(c, "ListenAddress {addr}");
        }
        let _ = writeln!(c, "HostKey {d}/host_ed25519");
        let _ = writeln!(c, "HostKey {d}/host_ecdsa");
        let _ = writeln!(c, "PidFile {d}/sshd.pid");
        let _ = writeln!(c, "AuthorizedKeysFile {d}/authorized_keys");
        let _ = writeln!(c, "PermitRootLogin yes");
        let _ = writeln!(c, "PubkeyAuthentication yes");
        let yes_no = if self.options.password_auth {
            "yes"
        } else {
            "no"
        };
        let _ = writeln!(c, "PasswordAuthentication {yes_no}");
        let _ = writeln!(c, "KbdInteractiveAuthentication no");
        let _ = writeln!(c, "UsePAM no");
        let _ = writeln!(c, "StrictModes no");
        let _ = writeln!(c, "MaxStartups 1000:30:1000");
        let _ = writeln!(c, "MaxSessions 100");
        let _ = writeln!(c, "MaxAuthTries 50");
        let _ = writeln!(c, "LogLevel VERBOSE");
        let _ = writeln!(c, "Subsystem sftp internal-sftp");
        // Debian's bash reads ~/.bashrc for a command sent over ssh unless
        // SHLVL says it runs nested in another shell: with it set, the login
        // user's startup files (a version manager taking a lock, say) stay
        // out of the sessions of the tests.
        let _ = writeln!(c, "SetEnv SHLVL=1");
        let path = self.dir.join("sshd_config");
        fs::write(&path, c)?;
        Ok(path)
    }

    fn spawn(&mut self) -> io::Result<()> {
        let config = self.write_config()?;
        let log = self.dir.join("sshd.log");
        // sshd needs an absolute path to re-execute itself per connection.
        let mut child = Command::new(SSHD_PATH)
            .arg("-D")
            .arg("-f")
            .arg(&config)
            .arg("-E")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot run {SSHD_PATH}: {e}")))?;
        let addresses = self.addresses();
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait()? {
                return Err(io::Error::other(format!(
                    "sshd exited ({status}) before accepting connections on port {}; its log:\n{}",
                    self.port,
                    self.log()
                )));
            }
            // Ready when the port's listener is this sshd's (another
            // process may have taken the port between our probe and sshd's
            // bind) and it greets like an SSH server. Neither depends on
            // the server's LogLevel, which callers may turn down.
            if listener_owned_by(child.id(), self.port) != Some(false)
                && addresses.iter().all(greets_with_ssh)
            {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "sshd did not accept connections on port {} within {:?}; its log:\n{}",
                        self.port,
                        READY_TIMEOUT,
                        self.log()
                    ),
                ));
            }
            // sshd gives no readiness signal other than the open port.
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Whether the process `pid` holds the socket listening on loopback `port`
/// (from `/proc/net/tcp` and `/proc/PID/fd`); `None` when `/proc` cannot
/// tell.
fn listener_owned_by(pid: u32, port: u16) -> Option<bool> {
    let table = fs::read_to_string("/proc/net/tcp").ok()?;
    let local = format!("0100007F:{port:04X}");
    // Columns: sl local_address rem_address st ... inode (the tenth).
    let inode = table.lines().skip(1).find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        (cols.get(1) == Some(&local.as_str()) && cols.get(3) == Some(&"0A"))
            .then(|| cols.get(9).map(|i| i.to_string()))
            .flatten()
    });
    let Some(inode) = inode else {
        return Some(false);
    };
    let wanted = format!("socket:[{inode}]");
    let fds = fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    Some(fds.flatten().any(|fd| {
        fs::read_link(fd.path()).is_ok_and(|target| target.as_os_str() == wanted.as_str())
    }))
}

/// Whether the server at `addr` accepts a connection and sends an SSH-2.0
/// identification line, within a second.
fn greets_with_ssh(addr: &SocketAddr) -> bool {
    use std::io::Read;
    let Ok(mut stream) = TcpStream::connect_timeout(addr, Duration::from_millis(200)) else {
        return false;
    };
    if stream
        .set_read_timeout(Some(Duration::from_secs(1)))
        .is_err()
    {
        return false;
    }
    let mut greeting = Vec::new();
    let mut buf = [0u8; 256];
    while !greeting.contains(&b'\n') && greeting.len() < 256 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => greeting.extend_from_slice(&buf[..n]),
        }
    }
    greeting.starts_with(b"SSH-2.0-")
}

impl Drop for TestSshd {
    fn drop(&mut self) {
        self.stop();
    }
}

fn pub_path(key: &Path) -> PathBuf {
    let mut s = key.as_os_str().to_owned();
    s.push(".pub");
    PathBuf::from(s)
}

fn keygen(path: &Path, passphrase: Option<&str>) -> io::Result<()> {
    keygen_typed(path, "ed25519", passphrase)
}

fn keygen_typed(path: &Path, kind: &str, passphrase: Option<&str>) -> io::Result<()> {
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", kind, "-C", "rdrunner-test", "-N"])
        .arg(passphrase.unwrap_or(""))
        .arg("-f")
        .arg(path))
}

fn run(cmd: &mut Command) -> io::Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot run {cmd:?}: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// A port free on loopback and on every address of `also` (the first
/// one that is, of a few tried).
fn free_port(also: &[Ipv4Addr]) -> io::Result<u16> {
    let mut port = 0;
    for _ in 0..20 {
        port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port();
        if also.iter().all(|a| TcpListener::bind((*a, port)).is_ok()) {
            break;
        }
    }
    Ok(port)
}

/// The name of the user this process runs as (`id -un`; `$USER` may be unset
/// in containers and services).
fn current_user() -> io::Result<String> {
    let out = Command::new("id").arg("-un").output()?;
    let name = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if out.status.success() && !name.is_empty() {
        Ok(name)
    } else {
        Err(io::Error::other(
            "cannot tell the current user: `id -un` failed",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn banner(port: u16) -> io::Result<String> {
        let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    #[test]
    fn is_ready_whatever_its_log_level() {
        // The benchmark runs its sshd with LogLevel ERROR, which writes no
        // "Server listening" line.
        let dir = tempfile::tempdir().unwrap();
        let sshd = TestSshd::start_with(
            dir.path(),
            SshdOptions {
                extra_config: vec!["LogLevel ERROR".to_owned()],
                ..Default::default()
            },
        )
        .unwrap();
        assert!(banner(sshd.port()).unwrap().starts_with("SSH-2.0-OpenSSH"));
        assert!(!sshd.log().contains("Server listening"), "{}", sshd.log());
    }

    #[test]
    fn listens_on_every_address_it_is_given() {
        let dir = tempfile::tempdir().unwrap();
        let also = [Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 9)];
        let sshd = TestSshd::start_with(
            dir.path(),
            SshdOptions {
                also_listen_on: also.to_vec(),
                ..Default::default()
            },
        )
        .unwrap();
        let addresses = sshd.addresses();
        assert_eq!(addresses.len(), 3, "{addresses:?}");
        for addr in &addresses {
            assert!(greets_with_ssh(addr), "no greeting at {addr}");
        }
        let key = sshd.host_public_key().unwrap();
        let line = sshd.known_hosts_line_at("127.0.0.9", &key).unwrap();
        assert!(
            line.starts_with(&format!("[127.0.0.9]:{} ssh-ed25519 ", sshd.port())),
            "{line}"
        );
    }

    #[test]
    fn a_port_held_by_another_process_is_not_taken_for_ours() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        // This test process holds the listener; a child of ours does not.
        assert_eq!(listener_owned_by(std::process::id(), port), Some(true));
        let mut other = Command::new("sleep").arg("5").spawn().unwrap();
        assert_eq!(listener_owned_by(other.id(), port), Some(false));
        let _ = other.kill();
        let _ = other.wait();
        // It accepts but never greets: not an SSH server.
        assert!(!greets_with_ssh(&listener.local_addr().unwrap()));
    }

    #[test]
    fn starts_restarts_with_new_keys_and_stops_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let mut sshd = TestSshd::start(dir.path()).unwrap();
        let port = sshd.port();
        assert!(banner(port).unwrap().starts_with("SSH-2.0-OpenSSH"));
        let line = sshd.known_hosts_line().unwrap();
        assert!(
            line.starts_with(&format!("[127.0.0.1]:{port} ssh-ed25519 AAAA")),
            "{line}"
        );
        assert!(sshd.client_key().is_file());
        assert!(!sshd.user().is_empty());

        let old = sshd.host_public_key().unwrap();
        sshd.regenerate_host_key().unwrap();
        assert_eq!(sshd.port(), port);
        assert_ne!(sshd.host_public_key().unwrap(), old);
        assert!(banner(port).unwrap().starts_with("SSH-2.0-OpenSSH"));

        drop(sshd);
        let refused = TcpStream::connect((Ipv4Addr::LOCALHOST, port));
        assert_eq!(
            refused.err().map(|e| e.kind()),
            Some(io::ErrorKind::ConnectionRefused)
        );
    }
}
