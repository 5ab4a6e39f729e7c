//! Reaching a node: name resolution, a TCP connection bounded by the
//! connect timeout, and the SSH handshake, each failure a clear error class.

use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::unix::io::AsRawFd;

use rdrunner_actors::model::{printable, Host, Node, NodeAddress};
use rdrunner_actors::{ExecutorError, ExecutorErrorKind};
use ssh2::{ErrorCode, MethodType, Session};

use super::host_key;
use super::session::{millis, Connection, LIBSSH2_ERROR_TIMEOUT};
use super::settings::SshSettings;

/// The host and port to dial for `node`, from its address as the one
/// parser of node addresses (`Node::address`) gives it: the form the
/// allowedNodes filter was shown. A hostname that parser refuses is refused
/// here too, so that nothing but a canonical address is ever dialled.
pub(crate) fn target(node: &Node, default_port: u16) -> Result<(Host, u16), ExecutorError> {
    let address = node
        .address()
        .map_err(|e| ExecutorError::new(ExecutorErrorKind::Config, e.to_string()))?
        .ok_or_else(|| {
            ExecutorError::new(
                ExecutorErrorKind::Config,
                format!(
                    "node '{}' has no hostname: set its hostname attribute",
                    printable(&node.name)
                ),
            )
        })?;
    Ok((address.host, address.port.unwrap_or(default_port)))
}

/// Connects to `node` and does the SSH handshake.
pub(crate) fn connect(node: &Node, settings: &SshSettings) -> Result<Connection, ExecutorError> {
    let (parsed, port) = target(node, settings.default_port)?;
    let target = NodeAddress {
        host: parsed.clone(),
        port: Some(port),
    }
    .endpoint(port);
    let host = parsed.to_string();
    // An address is dialled as it is; only a name goes to the resolver.
    let addrs: Vec<SocketAddr> = match parsed {
        Host::Ipv4(ip) => vec![SocketAddr::from((ip, port))],
        Host::Ipv6(ip) => vec![SocketAddr::from((ip, port))],
        Host::Name(name) => (name.as_str(), port)
            .to_socket_addrs()
            .map_err(|e| resolve_error(&node.name, &host, &e.to_string()))?
            .collect(),
    };
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
    prefer_fast_ciphers(&session);
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

/// Ciphers in the order the runner offers them: AES-GCM first, which the
/// crypto library runs on the CPU's AES instructions, where libssh2's own
/// ChaCha20-Poly1305 (its first choice otherwise) is portable C that costs
/// the runner more CPU than the rest of a step's output path. Every one of
/// them is an authenticated or counter mode that OpenSSH offers by default;
/// names this libssh2 lacks are left out of the offer.
const CIPHERS: &str = "aes128-gcm@openssh.com,aes256-gcm@openssh.com,aes128-ctr,aes192-ctr,aes256-ctr,chacha20-poly1305@openssh.com";

fn prefer_fast_ciphers(session: &Session) {
    for method in [MethodType::CryptCs, MethodType::CryptSc] {
        let _ = session.method_pref(method, CIPHERS);
    }
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
        // `.invalid` never resolves (RFC 6761).
        let e = connect(&node("nowhere.invalid", Some(22)), &SshSettings::default())
            .err()
            .unwrap();
        assert_eq!(e.kind, ExecutorErrorKind::NameResolution);
        assert!(e.message.contains("node 'n1'"), "{}", e.message);
    }

    #[test]
    fn targets_are_the_canonical_address() {
        let t = |host: &str, port: Option<u16>| {
            target(&node(host, port), 22).map(|(h, p)| (h.to_string(), p))
        };
        assert_eq!(t("h", None).unwrap(), ("h".into(), 22));
        assert_eq!(t("H:2200", None).unwrap(), ("h".into(), 2200));
        assert_eq!(t("[::1]:23", None).unwrap(), ("::1".into(), 23));
        assert_eq!(t("::1", Some(7)).unwrap(), ("::1".into(), 7));
        assert_eq!(
            t("::ffff:127.0.0.1", None).unwrap(),
            ("127.0.0.1".into(), 22)
        );
        // What an allowedNodes filter on the hostname could not see.
        for bad in [
            "",
            "h:x",
            "h:2200:1",
            " 127.0.0.1",
            "127.0.0.1 ",
            "[127.0.0.1]",
            "2130706433",
            "127.1",
            "0x7f.1",
            "0177.0.0.1",
            "bad\0host",
        ] {
            let e = t(bad, None).unwrap_err();
            assert_eq!(e.kind, ExecutorErrorKind::Config, "{bad:?}");
            assert!(e.message.contains("node 'n1'"), "{bad:?}: {}", e.message);
        }
        assert_eq!(
            t("h:2200", Some(7)).unwrap_err().kind,
            ExecutorErrorKind::Config,
            "a port given twice"
        );
    }
}
