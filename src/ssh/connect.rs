//! Reaching a node: name resolution, a TCP connection bounded by the
//! connect timeout, and the SSH handshake, each failure a clear error class.

use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::unix::io::AsRawFd;

use rdrunner_actors::model::Node;
use rdrunner_actors::{ExecutorError, ExecutorErrorKind};
use ssh2::{ErrorCode, Session};

use super::host_key;
use super::session::{millis, Connection, LIBSSH2_ERROR_TIMEOUT};
use super::settings::SshSettings;

/// The host and port to dial for `node`: `hostname` may carry a `:port`
/// (when `port` is not set) or be a bracketed IPv6 address.
pub(crate) fn target(node: &Node, default_port: u16) -> Result<(String, u16), ExecutorError> {
    let raw = node.hostname.trim();
    if raw.is_empty() {
        return Err(ExecutorError::new(
            ExecutorErrorKind::Config,
            format!(
                "node '{}' has no hostname: set its hostname attribute",
                node.name
            ),
        ));
    }
    let (host, port_in_name) = if let Some(rest) = raw.strip_prefix('[') {
        match rest.split_once(']') {
            Some((h, tail)) => (h.to_owned(), tail.strip_prefix(':').map(str::to_owned)),
            None => (raw.to_owned(), None),
        }
    } else if raw.matches(':').count() == 1 {
        let (h, p) = raw.split_once(':').unwrap_or((raw, ""));
        (h.to_owned(), Some(p.to_owned()))
    } else {
        (raw.to_owned(), None)
    };
    let port = match (node.port, port_in_name) {
        (Some(p), _) => p,
        (None, Some(p)) => p.parse().map_err(|_| {
            ExecutorError::new(
                ExecutorErrorKind::Config,
                format!(
                    "node '{}' has hostname '{}' whose port is not a number",
                    node.name, node.hostname
                ),
            )
        })?,
        (None, None) => default_port,
    };
    Ok((host, port))
}

/// Connects to `node` and does the SSH handshake.
pub(crate) fn connect(node: &Node, settings: &SshSettings) -> Result<Connection, ExecutorError> {
    let (host, port) = target(node, settings.default_port)?;
    let target = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let addrs: Vec<SocketAddr> = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| resolve_error(&node.name, &host, &e.to_string()))?
        .collect();
    if addrs.is_empty() {
        return Err(resolve_error(&node.name, &host, "no address found"));
    }
    let tcp = dial(&addrs, settings, &node.name, &target)?;
    let _ = tcp.set_nodelay(true);
    let fd = tcp.as_raw_fd();
    let mut session = Session::new().map_err(|e| {
        ExecutorError::new(
            ExecutorErrorKind::Protocol,
            format!("cannot create an SSH session for node '{}': {e}", node.name),
        )
    })?;
    // The handshake is part of connecting: bounded by the connect timeout.
    session.set_timeout(millis(settings.connect_timeout));
    host_key::prefer_known_types(&session, settings, &host, port);
    session.set_tcp_stream(tcp);
    session.handshake().map_err(|e| {
        if e.code() == ErrorCode::Session(LIBSSH2_ERROR_TIMEOUT) {
            ExecutorError::new(
                ExecutorErrorKind::ConnectTimeout,
                format!(
                    "SSH handshake with {target} (node '{}') timed out after {:?}: the port answers but no SSH server spoke; check that sshd listens there",
                    node.name, settings.connect_timeout
                ),
            )
        } else {
            ExecutorError::new(
                ExecutorErrorKind::Protocol,
                format!(
                    "SSH handshake with {target} (node '{}') failed: {e}; check that the port is an SSH server",
                    node.name
                ),
            )
        }
    })?;
    session.set_timeout(millis(settings.call_timeout));
    session.set_keepalive(false, settings.keepalive_interval.as_secs().max(1) as u32);
    Ok(Connection {
        session,
        fd,
        host,
        port,
        target,
        node: node.name.clone(),
    })
}

fn dial(
    addrs: &[SocketAddr],
    settings: &SshSettings,
    node: &str,
    target: &str,
) -> Result<TcpStream, ExecutorError> {
    let mut refused = None;
    let mut timed_out = false;
    let mut other = None;
    for addr in addrs {
        match TcpStream::connect_timeout(addr, settings.connect_timeout) {
            Ok(s) => return Ok(s),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => refused = Some(e),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
                ) =>
            {
                timed_out = true
            }
            Err(e) => other = Some(e),
        }
    }
    if timed_out {
        return Err(ExecutorError::new(
            ExecutorErrorKind::ConnectTimeout,
            format!(
                "no answer from {target} (node '{node}') within {:?}: check the network path, firewalls and the node's hostname and port",
                settings.connect_timeout
            ),
        ));
    }
    if let Some(e) = refused {
        return Err(ExecutorError::new(
            ExecutorErrorKind::ConnectionRefused,
            format!("connection to {target} (node '{node}') refused ({e}): check that sshd runs on the node and listens on that port"),
        ));
    }
    let e = other.map(|e| e.to_string()).unwrap_or_default();
    Err(ExecutorError::new(
        ExecutorErrorKind::ConnectionRefused,
        format!(
            "cannot connect to {target} (node '{node}'): {e}; check the network path to the node"
        ),
    ))
}

fn resolve_error(node: &str, host: &str, why: &str) -> ExecutorError {
    ExecutorError::new(
        ExecutorErrorKind::NameResolution,
        format!("cannot resolve hostname '{host}' of node '{node}': {why}; check the node's hostname and the runner's DNS"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(host: &str, port: Option<u16>) -> Node {
        let mut n = Node::new("n1", host);
        n.port = port;
        n
    }

    #[test]
    fn an_unresolvable_name_is_a_name_resolution_error() {
        // A NUL byte fails before any DNS query is sent.
        let e = connect(&node("bad\0host", Some(22)), &SshSettings::default())
            .err()
            .unwrap();
        assert_eq!(e.kind, ExecutorErrorKind::NameResolution);
        assert!(e.message.contains("node 'n1'"), "{}", e.message);
    }

    #[test]
    fn targets() {
        assert_eq!(target(&node("h", None), 22).unwrap(), ("h".into(), 22));
        assert_eq!(
            target(&node("h:2200", None), 22).unwrap(),
            ("h".into(), 2200)
        );
        assert_eq!(
            target(&node("h:2200", Some(7)), 22).unwrap(),
            ("h".into(), 7)
        );
        assert_eq!(
            target(&node("[::1]:23", None), 22).unwrap(),
            ("::1".into(), 23)
        );
        assert_eq!(target(&node("::1", None), 22).unwrap(), ("::1".into(), 22));
        assert_eq!(
            target(&node("", None), 22).unwrap_err().kind,
            ExecutorErrorKind::Config
        );
        assert_eq!(
            target(&node("h:x", None), 22).unwrap_err().kind,
            ExecutorErrorKind::Config
        );
    }
}
