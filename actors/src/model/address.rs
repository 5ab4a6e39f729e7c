//! A node as the runner acts on it: every field the control plane sent
//! checked, and the hostname and port parsed once into one canonical
//! address, the form both the allowedNodes filter and the SSH connector see.
//!
//! Hostile spellings are refused, never repaired: a hostname with
//! whitespace around it, brackets around anything but an IPv6 address, a
//! numeric IPv4 form other than four decimal parts (`127.1`, `2130706433`,
//! `0x7f.1`, `0177.0.0.1`), a trailing dot, a control character, or a port
//! given twice. What is accepted is written one way: IPv4 as four decimal
//! parts, IPv6 in its RFC 5952 form without brackets (an IPv4-mapped IPv6
//! address as the IPv4 address it reaches), names in lowercase.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use super::{ExecutorKind, Node};

/// The host part of a node's address, in its one canonical spelling.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    Ipv4(Ipv4Addr),
    Ipv6(Ipv6Addr),
    /// A DNS name: dot-separated labels of ASCII letters, digits, `-` and
    /// `_`, lowercase, without a trailing dot.
    Name(String),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ipv4(ip) => ip.fmt(f),
            Host::Ipv6(ip) => ip.fmt(f),
            Host::Name(name) => f.write_str(name),
        }
    }
}

/// Where a node is reached: a canonical host and, when the node names
/// one, a port (else the executor's default applies).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeAddress {
    pub host: Host,
    pub port: Option<u16>,
}

impl NodeAddress {
    /// `host:port` as it is dialled and printed (IPv6 in brackets), with
    /// `default_port` for a node that names none.
    pub fn endpoint(&self, default_port: u16) -> String {
        let port = self.port.unwrap_or(default_port);
        match &self.host {
            Host::Ipv6(ip) => format!("[{ip}]:{port}"),
            host => format!("{host}:{port}"),
        }
    }
}

/// A node field the runner refuses, and why; the message names the node,
/// the field, the value (control characters escaped) and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("node '{}': {field} '{}' {problem}; the runner refuses to run steps on it (fix the node's {field} in the control plane's node inventory)", printable(.node), printable(.value))]
pub struct NodeError {
    /// The node's name, as sent.
    pub node: String,
    /// The field: `name`, `hostname`, `port`, `username`, `tags` or
    /// `attribute KEY`.
    pub field: String,
    /// The refused value, as sent.
    pub value: String,
    /// What is wrong with it.
    pub problem: String,
}

/// `text` with every control character escaped (`\0`, `\t`, `\u{1b}`), for
/// messages and logs.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out
}

impl Node {
    /// The node's address, parsed from `hostname` and `port`; `None` when
    /// the hostname is empty. The one parser of node addresses: the runtime
    /// parses every node with it before anything else looks at the node,
    /// and an executor that dials parses with it too.
    pub fn address(&self) -> Result<Option<NodeAddress>, NodeError> {
        let refuse = |field: &str, value: String, problem: &str| NodeError {
            node: self.name.clone(),
            field: field.to_owned(),
            value,
            problem: problem.to_owned(),
        };
        if self.port == Some(0) {
            return Err(refuse("port", "0".into(), "is not a port (1 to 65535)"));
        }
        let hostname = self.hostname.as_str();
        if hostname.is_empty() {
            return Ok(None);
        }
        let (host, port) =
            split_host_port(hostname).map_err(|p| refuse("hostname", hostname.to_owned(), p))?;
        let port = match (port, self.port) {
            (Some(_), Some(_)) => {
                return Err(refuse(
                    "hostname",
                    hostname.to_owned(),
                    "names a port and the node's port field is set too: give the port once, in the port field",
                ))
            }
            (p, q) => p.or(q),
        };
        Ok(Some(NodeAddress { host, port }))
    }

    /// The node with every field checked and its address in canonical form
    /// (`hostname` the canonical host, `port` the port it names, if any).
    /// Nothing the runner does with a node sees it before this.
    pub fn canonical(&self) -> Result<Node, NodeError> {
        let refuse = |field: &str, value: &str, problem: &str| NodeError {
            node: self.name.clone(),
            field: field.to_owned(),
            value: value.to_owned(),
            problem: problem.to_owned(),
        };
        let word = |field: &str, value: &str| -> Result<(), NodeError> {
            if value.chars().any(char::is_control) {
                Err(refuse(field, value, "contains a control character"))
            } else if value.trim() != value {
                Err(refuse(field, value, "has whitespace around it"))
            } else {
                Ok(())
            }
        };
        if self.name.is_empty() {
            return Err(refuse("name", "", "is empty"));
        }
        word("name", &self.name)?;
        if let Some(user) = &self.username {
            word("username", user)?;
        }
        for tag in &self.tags {
            word("tags", tag)?;
        }
        for (key, value) in &self.attributes {
            let field = format!("attribute {}", printable(key));
            if key.is_empty() || key.chars().any(char::is_control) {
                return Err(refuse(&field, key, "is not a usable attribute name"));
            }
            // Attributes reach steps as environment variables, which
            // cannot hold a NUL byte.
            if value.contains('\0') {
                return Err(refuse(&field, value, "contains a NUL byte"));
            }
        }
        let address = self.address()?;
        let mut node = self.clone();
        match address {
            Some(a) => {
                node.hostname = a.host.to_string();
                node.port = a.port;
            }
            None if self.executor == ExecutorKind::Local => {}
            None => {
                return Err(refuse(
                    "hostname",
                    "",
                    "is empty: an ssh node needs a hostname",
                ))
            }
        }
        Ok(node)
    }
}

/// `host`, `host:port`, `[ipv6]`, `[ipv6]:port` or a bare IPv6 address,
/// into the canonical host and the port it names.
fn split_host_port(text: &str) -> Result<(Host, Option<u16>), &'static str> {
    if text.chars().any(char::is_control) {
        return Err("contains a control character");
    }
    if text.trim() != text {
        return Err("has whitespace around it");
    }
    if let Some(rest) = text.strip_prefix('[') {
        let (inner, tail) = rest
            .split_once(']')
            .ok_or("opens a bracket it does not close")?;
        let ip: Ipv6Addr = inner.parse().map_err(|_| {
            "has brackets around something that is not an IPv6 address: brackets are only for IPv6 addresses such as [::1]"
        })?;
        let port = match tail {
            "" => None,
            t => Some(port(
                t.strip_prefix(':')
                    .ok_or("has text after its closing bracket")?,
            )?),
        };
        return Ok((ipv6(ip), port));
    }
    match text.matches(':').count() {
        0 => Ok((host(text)?, None)),
        1 => {
            let (h, p) = text.split_once(':').ok_or("is not host:port")?;
            if h.is_empty() {
                return Err("has a port but no host");
            }
            Ok((host(h)?, Some(port(p)?)))
        }
        _ => text
            .parse::<Ipv6Addr>()
            .map(|ip| (ipv6(ip), None))
            .map_err(|_| "is neither a host name, host:port nor an IPv6 address (a port after an IPv6 address needs brackets: [::1]:22)"),
    }
}

/// An IPv4-mapped IPv6 address reaches the IPv4 address: it is that address.
fn ipv6(ip: Ipv6Addr) -> Host {
    match ip.to_ipv4_mapped() {
        Some(v4) => Host::Ipv4(v4),
        None => Host::Ipv6(ip),
    }
}

/// A port written in plain decimal, 1 to 65535.
fn port(text: &str) -> Result<u16, &'static str> {
    let plain = !text.is_empty()
        && text.len() <= 5
        && text.bytes().all(|b| b.is_ascii_digit())
        && !(text.len() > 1 && text.starts_with('0'));
    match text.parse::<u16>() {
        Ok(p) if plain && p > 0 => Ok(p),
        _ => Err("has a port that is not a number from 1 to 65535 in plain decimal"),
    }
}

/// An IPv4 address in four decimal parts, or a DNS name. A name whose last
/// label is a number would be read by the system resolver as an IPv4
/// address in one of its shorthand forms, so it must be exactly that.
fn host(text: &str) -> Result<Host, &'static str> {
    let last = text.rsplit('.').next().unwrap_or(text);
    let numeric = !last.is_empty()
        && (last.bytes().all(|b| b.is_ascii_digit())
            || last
                .strip_prefix("0x")
                .or_else(|| last.strip_prefix("0X"))
                .is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit())));
    if numeric {
        return dotted_quad(text).map(Host::Ipv4).ok_or(
            "is a numeric IPv4 form other than four decimal parts (such as 127.1, 2130706433, 0x7f.1 or 0177.0.0.1): write the address as four decimal numbers, e.g. 10.0.0.5",
        );
    }
    if text.ends_with('.') {
        return Err("ends with a dot: write the name without it");
    }
    if !text.is_ascii() {
        return Err("is not ASCII: write the name in its ASCII (xn--) form");
    }
    if text.len() > 253 {
        return Err("is longer than 253 characters");
    }
    for label in text.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("has an empty label or one longer than 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err("has a character other than letters, digits, '-', '_' and '.'");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("has a label that starts or ends with '-'");
        }
    }
    Ok(Host::Name(text.to_ascii_lowercase()))
}

/// `a.b.c.d`, each part decimal 0-255 without leading zeros.
fn dotted_quad(text: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = text.split('.').collect();
    if parts.len() != 4 {
        return None;
    }
    let mut octets = [0u8; 4];
    for (octet, part) in octets.iter_mut().zip(parts) {
        let plain = !part.is_empty()
            && part.len() <= 3
            && part.bytes().all(|b| b.is_ascii_digit())
            && !(part.len() > 1 && part.starts_with('0'));
        if !plain {
            return None;
        }
        *octet = part.parse().ok()?;
    }
    Some(Ipv4Addr::from(octets))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(hostname: &str, port: Option<u16>) -> Result<Option<NodeAddress>, NodeError> {
        let mut n = Node::new("n1", hostname);
        n.port = port;
        n.address()
    }

    fn ok(hostname: &str, port: Option<u16>) -> (String, Option<u16>) {
        let a = addr(hostname, port)
            .unwrap_or_else(|e| panic!("{hostname:?}: {e}"))
            .unwrap_or_else(|| panic!("{hostname:?}: no address"));
        (a.host.to_string(), a.port)
    }

    fn refused(hostname: &str, port: Option<u16>) -> String {
        match addr(hostname, port) {
            Err(e) => e.to_string(),
            Ok(a) => panic!("{hostname:?} was accepted as {a:?}"),
        }
    }

    #[test]
    fn accepted_spellings_have_one_canonical_form() {
        assert_eq!(ok("10.0.0.5", None), ("10.0.0.5".into(), None));
        assert_eq!(ok("10.0.0.5", Some(2222)), ("10.0.0.5".into(), Some(2222)));
        assert_eq!(ok("0.0.0.0", None), ("0.0.0.0".into(), None));
        assert_eq!(
            ok("Web1.Example.COM", None),
            ("web1.example.com".into(), None)
        );
        assert_eq!(ok("db_2.corp", None), ("db_2.corp".into(), None));
        assert_eq!(ok("web1:2200", None), ("web1".into(), Some(2200)));
        assert_eq!(ok("::1", None), ("::1".into(), None));
        assert_eq!(ok("[::1]", Some(22)), ("::1".into(), Some(22)));
        assert_eq!(ok("[0:0::1]:23", None), ("::1".into(), Some(23)));
        assert_eq!(ok("FE80::1", None), ("fe80::1".into(), None));
        // An IPv4-mapped address dials the IPv4 address: it is that address.
        assert_eq!(ok("::ffff:127.0.0.1", None), ("127.0.0.1".into(), None));
        assert_eq!(
            ok("[::ffff:7f00:1]:22", None),
            ("127.0.0.1".into(), Some(22))
        );
        assert_eq!(addr("", None).unwrap(), None);
        let a = addr("[::1]", Some(2222)).unwrap().unwrap();
        assert_eq!(a.endpoint(22), "[::1]:2222");
        assert_eq!(addr("h", None).unwrap().unwrap().endpoint(22), "h:22");
    }

    #[test]
    fn every_other_spelling_of_an_address_is_refused_with_why() {
        let cases = [
            (" 127.0.0.1", "whitespace"),
            ("127.0.0.1 ", "whitespace"),
            ("127.0.0.1\n", "control character"),
            ("127.0.0.1\0evil", "control character"),
            ("[127.0.0.1]", "brackets"),
            ("[localhost]:22", "brackets"),
            ("[::1", "bracket"),
            ("[::1]x", "after its closing bracket"),
            ("2130706433", "numeric IPv4"),
            ("127.1", "numeric IPv4"),
            ("0x7f.1", "numeric IPv4"),
            ("0x7f000001", "numeric IPv4"),
            ("0177.0.0.1", "numeric IPv4"),
            ("127.0.0.01", "numeric IPv4"),
            ("256.0.0.1", "numeric IPv4"),
            ("127.0.0.1.", "ends with a dot"),
            ("localhost.", "ends with a dot"),
            ("web 1", "character other than"),
            ("a..b", "empty label"),
            ("-oProxyCommand=x", "character other than"),
            ("-host", "starts or ends with '-'"),
            ("wéb", "ASCII"),
            ("h:0", "port"),
            ("h:022", "port"),
            ("h:+22", "port"),
            ("h:65536", "port"),
            (":22", "no host"),
            ("fe80::1%eth0", "IPv6"),
            ("::1:22:x", "IPv6"),
        ];
        for (hostname, why) in cases {
            let e = refused(hostname, None);
            assert!(e.contains(why), "{hostname:?}: {e}");
            assert!(e.contains("node 'n1'") && e.contains("hostname"), "{e}");
            assert!(!e.chars().any(char::is_control), "{e:?}");
        }
        let e = refused("web1:2200", Some(2200));
        assert!(e.contains("port field is set too"), "{e}");
        let e = refused("web1", Some(0));
        assert!(e.contains("port '0'"), "{e}");
    }

    #[test]
    fn canonical_checks_every_field_and_rewrites_the_address() {
        let mut n = Node::new("web1", "WEB1.corp:2200");
        n.username = Some("deploy".into());
        n.tags = vec!["web".into()];
        n.attributes.insert("osFamily".into(), "unix\nlinux".into());
        let c = n.canonical().unwrap();
        assert_eq!((c.hostname.as_str(), c.port), ("web1.corp", Some(2200)));
        assert_eq!(
            c.canonical().unwrap(),
            c,
            "the canonical form is a fixed point"
        );
        assert_eq!(
            Node::local("here").canonical().unwrap().hostname,
            "localhost"
        );
        let mut local = Node::local("here");
        local.hostname.clear();
        assert_eq!(local.canonical().unwrap().hostname, "");

        let bad = |edit: &dyn Fn(&mut Node), why: &str| {
            let mut n = Node::new("web1", "10.0.0.5");
            edit(&mut n);
            let e = n.canonical().unwrap_err().to_string();
            assert!(e.contains(why), "{e}");
            assert!(!e.chars().any(char::is_control), "{e:?}");
        };
        bad(
            &|n| n.name = "web\0x".into(),
            "name 'web\\0x' contains a control character",
        );
        bad(&|n| n.name = "web1\u{1b}[2J".into(), "control character");
        bad(&|n| n.name = " web1".into(), "whitespace");
        bad(&|n| n.name.clear(), "name '' is empty");
        bad(&|n| n.username = Some("root\0".into()), "username");
        bad(&|n| n.username = Some("root ".into()), "username");
        bad(&|n| n.tags = vec!["web\n".into()], "tags");
        bad(
            &|n| {
                n.attributes.insert("k".into(), "a\0b".into());
            },
            "NUL",
        );
        bad(
            &|n| {
                n.attributes.insert("k\0".into(), "v".into());
            },
            "attribute name",
        );
        bad(&|n| n.hostname.clear(), "an ssh node needs a hostname");
        bad(&|n| n.hostname = "127.1".into(), "numeric IPv4");
    }
}
