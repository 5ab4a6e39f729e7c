//! The HTTPS transport: `rdrunner_actors::ControlPlane` over awc + rustls.
//!
//! One `awc::Client` per thread (awc's client is `!Send`), kept in a
//! thread-local so that connections are reused across calls. Every request
//! carries the runner's bearer token, runner id and, after startup, the
//! replica id; every request has a deadline; every failure is mapped to the
//! `ControlPlaneError` class the actors act on. An HTTP proxy is used through
//! CONNECT by a TCP connector of our own plugged into awc's `Connector`.
//! A plain `http://` server URL is refused unless it names the loopback
//! host or `http.allowPlaintext` is set: the token would travel in clear.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::BufReader;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_tls::connect::{ConnectError as TcpConnectError, ConnectInfo, Connection};
use awc::http::{StatusCode, Uri};
use rdrunner_actors::model::{
    CheckinRequest, CheckinResponse, ClaimRequest, ClaimResponse, EncodedReport, ErrorBody,
    ErrorCode, ReportsRequest, ReportsResponse, ResumeRequest, ResumeResponse, ShutdownRequest,
    StartupRequest, StartupResponse,
};
use rdrunner_actors::{
    CallResult, ClaimOutcome, ControlPlane, ControlPlaneError, RuntimeConfig, TransportFailure,
};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::creds::{Credentials, Token};

/// Path prefix of the runner API.
pub const API_BASE: &str = "/api/runner/v1";

/// Largest answer body accepted (a check-in may carry many operations).
const MAX_BODY: usize = 64 * 1024 * 1024;

/// A transport that cannot be built (bad CA file, bad URL).
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("TLS CA file {path}: {message}")]
    CaFile { path: String, message: String },
    #[error("TLS setup failed: {0}")]
    Tls(String),
    #[error("server URL `{url}` is plain http:// to a host that is not loopback, so the runner token would travel unencrypted; use https://, or set http.allowPlaintext = true to accept that (a warning is logged at every start)")]
    Plaintext { url: String },
    #[error("server URL `{url}`: {message}; it must look like https://host[:port]")]
    BadUrl { url: String, message: String },
}

/// The connection to the control plane (`[http]`), its defaults written
/// here.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpSettings {
    /// Deadline of one request; a check-in gets the long-poll hold on top.
    pub request_timeout: Duration,
    /// TCP connect + TLS handshake deadline.
    pub connect_timeout: Duration,
    /// The HTTP proxy reached with CONNECT, if any.
    pub proxy: Option<ProxySettings>,
    /// Accept a plain `http://` server URL to a host other than loopback
    /// (the token then travels unencrypted).
    pub allow_plaintext: bool,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            // The runtime bounds every control plane call with the same
            // deadline: one value, the runtime's.
            request_timeout: RuntimeConfig::default().request_timeout,
            connect_timeout: Duration::from_secs(10),
            proxy: None,
            allow_plaintext: false,
        }
    }
}

/// An HTTP proxy reached with CONNECT.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxySettings {
    pub host: String,
    pub port: u16,
    /// Host suffixes not proxied (`NO_PROXY` form); `*` = none proxied.
    pub no_proxy: Vec<String>,
}

impl ProxySettings {
    /// Whether a connection to `host` goes through the proxy.
    pub fn applies_to(&self, host: &str) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        !self.no_proxy.iter().any(|n| {
            n == "*" || host == n || host.ends_with(&format!(".{}", n.trim_start_matches('.')))
        })
    }
}

/// How the control plane's certificate is checked (`[tls]`); the default
/// trusts the public roots and the system bundle.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TlsSettings {
    /// PEM bundle of extra trusted CAs (a private CA).
    pub ca_file: Option<PathBuf>,
    /// Turns certificate verification off. Never in production.
    pub insecure_skip_verify: bool,
}

/// What the transport needs: who the runner is (its credentials) and how
/// to reach the control plane.
#[derive(Debug, Clone)]
pub struct TransportSettings {
    /// e.g. `https://cp.example:4443`, no trailing slash.
    pub server_url: String,
    pub runner_id: String,
    pub token: Token,
    /// Sent as `User-Agent: rdrunner/<version>`.
    pub version: String,
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    pub tls: TlsSettings,
    pub proxy: Option<ProxySettings>,
    /// `http.allowPlaintext`.
    pub allow_plaintext: bool,
}

impl TransportSettings {
    pub fn new(creds: &Credentials, http: &HttpSettings, tls: &TlsSettings, version: &str) -> Self {
        TransportSettings {
            server_url: creds.server_url.clone(),
            runner_id: creds.runner_id.clone(),
            token: creds.token.clone(),
            version: version.to_owned(),
            request_timeout: http.request_timeout,
            connect_timeout: http.connect_timeout,
            tls: tls.clone(),
            proxy: http.proxy.clone(),
            allow_plaintext: http.allow_plaintext,
        }
    }
}

/// Whether `url` is plain `http://` to a host other than loopback
/// (127.0.0.0/8, ::1, `localhost`): the one case where the token would
/// cross a network unencrypted. An `https://` URL answers false; any other
/// scheme, or no host, is an error.
pub fn is_plaintext_to_remote(url: &str) -> Result<bool, TransportError> {
    let bad = |message: &str| TransportError::BadUrl {
        url: url.to_owned(),
        message: message.to_owned(),
    };
    let uri: Uri = url
        .parse()
        .map_err(|e: awc::http::uri::InvalidUri| bad(&e.to_string()))?;
    let host = uri.host().ok_or_else(|| bad("it names no host"))?;
    match uri.scheme_str() {
        Some("https") => Ok(false),
        Some("http") => Ok(!is_loopback_host(host)),
        _ => Err(bad("the scheme is neither https:// nor http://")),
    }
}

/// `localhost`, or an address in 127.0.0.0/8 or ::1 (also IPv4-mapped).
fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(a)) => a.is_loopback(),
        Ok(IpAddr::V6(a)) => {
            a.is_loopback() || a.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        Err(_) => false,
    }
}

/// The control plane over HTTP(S). Cheap to clone; shareable across threads.
#[derive(Clone)]
pub struct HttpControlPlane {
    shared: Arc<Shared>,
}

struct Shared {
    /// Distinguishes instances in the per-thread client table.
    id: u64,
    base: String,
    settings: TransportSettings,
    tls: Arc<rustls::ClientConfig>,
    /// Remembered from the startup answer; sent as `X-Replica-Id`.
    replica_id: Mutex<Option<String>>,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    static CLIENTS: RefCell<HashMap<u64, awc::Client>> = RefCell::new(HashMap::new());
}

impl HttpControlPlane {
    /// Builds the transport. With `tls.insecureSkipVerify` a warning is
    /// logged to `log`, at every start.
    pub fn new(settings: TransportSettings, log: &slog::Logger) -> Result<Self, TransportError> {
        let plaintext = is_plaintext_to_remote(&settings.server_url)?;
        if plaintext && !settings.allow_plaintext {
            return Err(TransportError::Plaintext {
                url: settings.server_url.clone(),
            });
        }
        if settings.allow_plaintext {
            if plaintext {
                slog::warn!(log, "the runner token travels UNENCRYPTED to the control plane (plain http://, http.allowPlaintext = true): anyone on the network path can read it and act as this runner; use https://";
                    "server" => &settings.server_url);
            } else {
                slog::warn!(log, "http.allowPlaintext = true: a plain http:// server URL to a host other than loopback would be accepted; the current one is not plain text to another host, so remove the setting";
                    "server" => &settings.server_url);
            }
        }
        if settings.tls.insecure_skip_verify {
            slog::warn!(log, "TLS certificate verification is OFF (tls.insecureSkipVerify = true): anyone on the network path can impersonate the control plane; never use this in production";
                "server" => &settings.server_url);
        }
        let tls = Arc::new(client_tls_config(&settings.tls)?);
        Ok(HttpControlPlane {
            shared: Arc::new(Shared {
                id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                base: format!("{}{API_BASE}", settings.server_url.trim_end_matches('/')),
                settings,
                tls,
                replica_id: Mutex::new(None),
            }),
        })
    }

    /// The replica id from the last startup answer.
    pub fn replica_id(&self) -> Option<String> {
        self.shared
            .replica_id
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The base URL of the runner API.
    pub fn base_url(&self) -> &str {
        &self.shared.base
    }
}

impl Shared {
    fn client(&self) -> awc::Client {
        CLIENTS.with(|c| {
            c.borrow_mut()
                .entry(self.id)
                .or_insert_with(|| self.build_client())
                .clone()
        })
    }

    fn build_client(&self) -> awc::Client {
        let proxy = self.settings.proxy.clone();
        let connect_timeout = self.settings.connect_timeout;
        let tcp = actix_service::fn_service(move |req: ConnectInfo<Uri>| {
            let proxy = proxy.clone();
            async move { connect_tcp(req, proxy, connect_timeout).await }
        });
        let connector = awc::Connector::new()
            .connector(tcp)
            .rustls_0_23(self.tls.clone())
            .timeout(connect_timeout)
            .handshake_timeout(connect_timeout);
        awc::Client::builder()
            .connector(connector)
            // Deadlines are set per request.
            .disable_timeout()
            .add_default_header(("User-Agent", format!("rdrunner/{}", self.settings.version)))
            .finish()
    }

    /// POSTs `body` as JSON to `path` with a deadline; returns status and
    /// body bytes.
    async fn post<T: serde::Serialize>(
        &self,
        path: &str,
        body: &T,
        deadline: Duration,
    ) -> Result<(StatusCode, Option<Duration>, Vec<u8>), ControlPlaneError> {
        let json = serde_json::to_vec(body).map_err(|e| {
            ControlPlaneError::Transport(TransportFailure::caused_by(
                format!("{}{path}: cannot encode the request", self.base),
                e,
            ))
        })?;
        self.post_json(path, json, deadline).await
    }

    /// POSTs `json`, a JSON document, to `path` with a deadline.
    async fn post_json(
        &self,
        path: &str,
        json: Vec<u8>,
        deadline: Duration,
    ) -> Result<(StatusCode, Option<Duration>, Vec<u8>), ControlPlaneError> {
        let url = format!("{}{path}", self.base);
        let client = self.client();
        let mut req = client
            .post(&url)
            .timeout(deadline)
            .insert_header((
                "Authorization",
                format!("Bearer {}", self.settings.token.expose()),
            ))
            .insert_header(("X-Runner-Id", self.settings.runner_id.clone()));
        if let Some(replica) = self
            .replica_id
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            req = req.insert_header(("X-Replica-Id", replica));
        }
        let call = async {
            let mut resp = req
                .insert_header(("Content-Type", "application/json"))
                .send_body(json)
                .await
                .map_err(|e| send_error(&url, e, deadline))?;
            let status = resp.status();
            let retry_after = resp
                .headers()
                .get("Retry-After")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let bytes = resp.body().limit(MAX_BODY).await.map_err(|e| {
                ControlPlaneError::Transport(TransportFailure::caused_by(
                    format!("{url}: reading the answer: {e}"),
                    e,
                ))
            })?;
            Ok((status, retry_after, bytes.to_vec()))
        };
        match tokio::time::timeout(deadline, call).await {
            Ok(r) => r,
            Err(_) => Err(ControlPlaneError::Timeout(deadline)),
        }
    }

    /// Maps a non-2xx answer to its error class.
    fn error(status: StatusCode, retry_after: Option<Duration>, body: &[u8]) -> ControlPlaneError {
        let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
        let message = parsed
            .as_ref()
            .map(|b| b.message.clone())
            .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned());
        let code = parsed.map(|b| b.error).unwrap_or_default();
        let s = status.as_u16();
        match s {
            401 => ControlPlaneError::Unauthorized { message },
            403 => ControlPlaneError::Forbidden { message },
            429 | 503 => ControlPlaneError::Throttled {
                status: s,
                retry_after,
            },
            500..=599 => ControlPlaneError::Server { status: s, message },
            _ => ControlPlaneError::Rejected {
                status: s,
                code,
                message,
            },
        }
    }

    async fn call<T: serde::Serialize, R: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &T,
        deadline: Duration,
    ) -> Result<R, ControlPlaneError> {
        let (status, retry_after, bytes) = self.post(path, body, deadline).await?;
        if !status.is_success() {
            return Err(Self::error(status, retry_after, &bytes));
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| ControlPlaneError::Protocol(format!("{}{path}: {e}", self.base)))
    }
}

fn send_error(url: &str, e: awc::error::SendRequestError, deadline: Duration) -> ControlPlaneError {
    use awc::error::{ConnectError, SendRequestError};
    match e {
        SendRequestError::Timeout | SendRequestError::Connect(ConnectError::Timeout) => {
            ControlPlaneError::Timeout(deadline)
        }
        SendRequestError::Connect(ConnectError::Io(io)) => {
            let hint = TlsProblem::of_io(&io)
                .map(|p| format!("; {}", p.hint()))
                .unwrap_or_default();
            ControlPlaneError::Transport(TransportFailure::caused_by(
                format!("{url}: {io}{hint}"),
                io,
            ))
        }
        other => {
            let text = other.to_string();
            let hint = TlsProblem::of_text(&text)
                .map(|p| format!("; {}", p.hint()))
                .unwrap_or_default();
            ControlPlaneError::Transport(format!("{url}: {text}{hint}").into())
        }
    }
}

/// A TLS failure class with a fix of its own: what the generic "check the
/// TLS settings" leaves a newcomer to work out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsProblem {
    /// The certificate chains to no CA the runner trusts (a private CA).
    UnknownIssuer,
    /// The certificate's validity ended.
    Expired,
    /// The certificate's validity has not begun (a clock is wrong).
    NotValidYet,
    /// The certificate does not name the host the runner dialled.
    NameMismatch,
}

impl TlsProblem {
    /// The class of a rustls error, if it is one of these.
    pub fn of_rustls(e: &rustls::Error) -> Option<TlsProblem> {
        use rustls::CertificateError as C;
        match e {
            rustls::Error::InvalidCertificate(c) => match c {
                C::UnknownIssuer => Some(TlsProblem::UnknownIssuer),
                C::Expired | C::ExpiredContext { .. } => Some(TlsProblem::Expired),
                C::NotValidYet | C::NotValidYetContext { .. } => Some(TlsProblem::NotValidYet),
                C::NotValidForName | C::NotValidForNameContext { .. } => {
                    Some(TlsProblem::NameMismatch)
                }
                _ => None,
            },
            _ => None,
        }
    }

    /// The class of an I/O error carrying a rustls error (what the TLS
    /// stream gives back), falling back to its text.
    pub fn of_io(e: &std::io::Error) -> Option<TlsProblem> {
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .and_then(TlsProblem::of_rustls)
            .or_else(|| TlsProblem::of_text(&e.to_string()))
    }

    /// The class from an error's text, for errors that carry only that
    /// (rustls's `Display` of each class).
    pub fn of_text(text: &str) -> Option<TlsProblem> {
        let has = |needles: &[&str]| needles.iter().any(|n| text.contains(n));
        if has(&["UnknownIssuer", "unknown issuer"]) {
            Some(TlsProblem::UnknownIssuer)
        } else if has(&["NotValidForName", "not valid for name"]) {
            Some(TlsProblem::NameMismatch)
        } else if has(&["NotValidYet", "certificate not valid yet"]) {
            Some(TlsProblem::NotValidYet)
        } else if has(&["Expired", "certificate expired"]) {
            Some(TlsProblem::Expired)
        } else {
            None
        }
    }

    /// The class of a failed control plane call, if TLS failed that way.
    pub fn of_error(e: &ControlPlaneError) -> Option<TlsProblem> {
        let ControlPlaneError::Transport(failure) = e else {
            return None;
        };
        let mut next: Option<&(dyn std::error::Error + 'static)> = Some(failure);
        while let Some(err) = next {
            if let Some(r) = err.downcast_ref::<rustls::Error>() {
                if let Some(p) = TlsProblem::of_rustls(r) {
                    return Some(p);
                }
            }
            if let Some(p) = err
                .downcast_ref::<std::io::Error>()
                .and_then(TlsProblem::of_io)
            {
                return Some(p);
            }
            next = err.source();
        }
        TlsProblem::of_text(failure.message())
    }

    /// What to do about it.
    pub fn hint(self) -> &'static str {
        match self {
            TlsProblem::UnknownIssuer => {
                "the control plane's certificate is signed by a CA this runner does not trust: set `tls.caFile` to the CA that signed the control plane's certificate (a PEM file)"
            }
            TlsProblem::Expired => {
                "the control plane's certificate has expired: renew it where TLS ends (the control plane or its TLS front), and check this host's clock"
            }
            TlsProblem::NotValidYet => {
                "the control plane's certificate is not valid yet: check the clock of this host and of the control plane"
            }
            TlsProblem::NameMismatch => {
                "the control plane's certificate is not issued for the host in RUNDECK_SERVER_URL: use a name the certificate lists (its subjectAltName) in the server URL, or reissue the certificate for this name"
            }
        }
    }
}

/// TCP connection for awc, directly or through the proxy's CONNECT tunnel.
async fn connect_tcp(
    req: ConnectInfo<Uri>,
    proxy: Option<ProxySettings>,
    timeout: Duration,
) -> Result<Connection<Uri, TcpStream>, TcpConnectError> {
    let uri = req.request().clone();
    let host = req
        .hostname()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
        Some("https") => 443,
        _ => 80,
    });
    let io = |kind, msg: String| TcpConnectError::Io(std::io::Error::new(kind, msg));
    let fut = async {
        match proxy.filter(|p| p.applies_to(&host)) {
            None => TcpStream::connect((host.as_str(), port))
                .await
                .map_err(TcpConnectError::Io),
            Some(p) => {
                let mut s = TcpStream::connect((p.host.as_str(), p.port))
                    .await
                    .map_err(|e| io(e.kind(), format!("proxy {}:{}: {e}", p.host, p.port)))?;
                let target = if host.contains(':') {
                    format!("[{host}]:{port}")
                } else {
                    format!("{host}:{port}")
                };
                let hello = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
                s.write_all(hello.as_bytes())
                    .await
                    .map_err(TcpConnectError::Io)?;
                // Read the proxy's answer head byte by byte, so that nothing
                // of the tunnelled stream is consumed.
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") {
                    if head.len() > 8192 {
                        return Err(io(
                            std::io::ErrorKind::InvalidData,
                            format!("proxy {}:{}: answer to CONNECT too long", p.host, p.port),
                        ));
                    }
                    let b = s.read_u8().await.map_err(TcpConnectError::Io)?;
                    head.push(b);
                }
                let status_line = String::from_utf8_lossy(&head);
                let status_line = status_line.lines().next().unwrap_or_default();
                let ok = status_line
                    .split_whitespace()
                    .nth(1)
                    .is_some_and(|c| c.starts_with('2'));
                if !ok {
                    return Err(io(
                        std::io::ErrorKind::ConnectionRefused,
                        format!(
                            "proxy {}:{} refused CONNECT {target}: {status_line}",
                            p.host, p.port
                        ),
                    ));
                }
                Ok(s)
            }
        }
    };
    let stream = tokio::time::timeout(timeout, fut).await.map_err(|_| {
        io(
            std::io::ErrorKind::TimedOut,
            format!(
                "connecting to {host}:{port} took over {} ms",
                timeout.as_millis()
            ),
        )
    })??;
    let _ = stream.set_nodelay(true);
    Ok(Connection::new(uri, stream))
}

/// The rustls client config: webpki roots + the system bundle when there is
/// one + `tls.caFile`; or no verification when explicitly asked.
pub fn client_tls_config(tls: &TlsSettings) -> Result<rustls::ClientConfig, TransportError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TransportError::Tls(e.to_string()))?;
    let mut config = if tls.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
            .with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        // The distribution's bundle, when present, adds CAs an organisation
        // installed system-wide. Unparseable entries are skipped.
        for bundle in [
            "/etc/ssl/certs/ca-certificates.crt",
            "/etc/pki/tls/certs/ca-bundle.crt",
        ] {
            if let Ok(f) = std::fs::File::open(bundle) {
                let mut reader = BufReader::new(f);
                let certs = rustls_pemfile::certs(&mut reader).flatten();
                roots.add_parsable_certificates(certs);
                break;
            }
        }
        if let Some(path) = &tls.ca_file {
            add_ca_file(&mut roots, path)?;
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn add_ca_file(roots: &mut rustls::RootCertStore, path: &Path) -> Result<(), TransportError> {
    let err = |message: String| TransportError::CaFile {
        path: path.display().to_string(),
        message,
    };
    let f = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut BufReader::new(f))
        .collect::<Result<_, _>>()
        .map_err(|e| err(format!("not a PEM file: {e}")))?;
    if certs.is_empty() {
        return Err(err(
            "holds no certificate (expected PEM blocks `-----BEGIN CERTIFICATE-----`)".into(),
        ));
    }
    for c in certs {
        roots
            .add(c)
            .map_err(|e| err(format!("unusable certificate: {e}")))?;
    }
    Ok(())
}

/// `tls.insecureSkipVerify`: accepts any certificate, still checks the
/// handshake signatures so that the connection is at least encrypted.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

impl ControlPlane for HttpControlPlane {
    fn startup(&self, req: StartupRequest) -> CallResult<StartupResponse> {
        let s = self.shared.clone();
        Box::pin(async move {
            let deadline = s.settings.request_timeout;
            let resp: StartupResponse = s.call("/startup", &req, deadline).await?;
            *s.replica_id.lock().unwrap_or_else(|e| e.into_inner()) = Some(resp.replica_id.clone());
            Ok(resp)
        })
    }

    fn checkin(&self, req: CheckinRequest, wait: Duration) -> CallResult<CheckinResponse> {
        let s = self.shared.clone();
        Box::pin(async move {
            let deadline = wait + s.settings.request_timeout;
            let path = format!("/checkin?waitMs={}", wait.as_millis());
            s.call(&path, &req, deadline).await
        })
    }

    fn claim(&self, op_id: &str, replica_id: &str) -> CallResult<ClaimOutcome> {
        let s = self.shared.clone();
        let path = format!("/operations/{}/claim", encode_path_segment(op_id));
        let req = ClaimRequest {
            replica_id: replica_id.to_owned(),
        };
        Box::pin(async move {
            let (status, retry_after, bytes) =
                s.post(&path, &req, s.settings.request_timeout).await?;
            if status.is_success() {
                let r: ClaimResponse = serde_json::from_slice(&bytes)
                    .map_err(|e| ControlPlaneError::Protocol(format!("{}{path}: {e}", s.base)))?;
                return Ok(ClaimOutcome::Claimed(Box::new(r.operation)));
            }
            if status == StatusCode::CONFLICT {
                let code = serde_json::from_slice::<ErrorBody>(&bytes)
                    .map(|b| b.error)
                    .unwrap_or_default();
                match ErrorCode::parse(&code) {
                    Some(ErrorCode::Taken) => return Ok(ClaimOutcome::Taken),
                    Some(ErrorCode::Cancelled) => return Ok(ClaimOutcome::Cancelled),
                    _ => {}
                }
            }
            Err(Shared::error(status, retry_after, &bytes))
        })
    }

    fn resume(&self, req: ResumeRequest) -> CallResult<ResumeResponse> {
        let s = self.shared.clone();
        Box::pin(async move { s.call("/resume", &req, s.settings.request_timeout).await })
    }

    fn reports(&self, req: ReportsRequest) -> CallResult<ReportsResponse> {
        let s = self.shared.clone();
        Box::pin(async move { s.call("/reports", &req, s.settings.request_timeout).await })
    }

    fn reports_encoded(
        &self,
        replica_id: String,
        reports: Vec<EncodedReport>,
    ) -> CallResult<ReportsResponse> {
        let s = self.shared.clone();
        Box::pin(async move {
            let body = reports_body(&replica_id, &reports);
            let path = "/reports";
            let (status, retry_after, bytes) =
                s.post_json(path, body, s.settings.request_timeout).await?;
            if !status.is_success() {
                return Err(Shared::error(status, retry_after, &bytes));
            }
            serde_json::from_slice(&bytes)
                .map_err(|e| ControlPlaneError::Protocol(format!("{}{path}: {e}", s.base)))
        })
    }

    fn shutdown(&self, req: ShutdownRequest) -> CallResult<()> {
        let s = self.shared.clone();
        Box::pin(async move {
            let (status, retry_after, bytes) = s
                .post("/shutdown", &req, s.settings.request_timeout)
                .await?;
            if status.is_success() {
                Ok(())
            } else {
                Err(Shared::error(status, retry_after, &bytes))
            }
        })
    }
}

/// The body of `POST /reports` (a `ReportsRequest`), the reports' JSON as
/// they were encoded when made.
fn reports_body(replica_id: &str, reports: &[EncodedReport]) -> Vec<u8> {
    let size: usize = reports.iter().map(|r| r.json.len() + 1).sum();
    let mut body = Vec::with_capacity(size + replica_id.len() + 32);
    body.extend_from_slice(b"{\"replicaId\":");
    // A string is always serializable.
    body.extend_from_slice(&serde_json::to_vec(replica_id).unwrap_or_default());
    body.extend_from_slice(b",\"reports\":[");
    for (i, r) in reports.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(r.json.as_bytes());
    }
    body.extend_from_slice(b"]}");
    body
}

/// Percent-encodes everything but unreserved characters, so that an
/// operation id can never change the request path.
fn encode_path_segment(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reports_body_of_encoded_reports_is_the_request_serde_would_write() {
        use rdrunner_actors::model::{LogReport, OpReport, Report, ReportBody, State, Stream};
        let reports = vec![
            Report {
                op_id: "op \"1\"".into(),
                seq: 1,
                ts: "2026-11-30T08:00:00.000Z".into(),
                body: ReportBody::Log(LogReport {
                    node: "n\u{1}".into(),
                    step: 1,
                    stream: Stream::Stdout,
                    text: "<line> \\ \u{7f} é".into(),
                }),
            },
            Report {
                op_id: "op \"1\"".into(),
                seq: 2,
                ts: "2026-11-30T08:00:00.001Z".into(),
                body: ReportBody::Op(OpReport {
                    state: State::Succeeded,
                    message: None,
                }),
            },
        ];
        let encoded: Vec<EncodedReport> = reports.iter().map(EncodedReport::of).collect();
        let replica = "replica \"x\"";
        let body = reports_body(replica, &encoded);
        let want = serde_json::to_vec(&ReportsRequest {
            replica_id: replica.into(),
            reports: reports.clone(),
        })
        .unwrap();
        assert_eq!(
            String::from_utf8(body.clone()).unwrap(),
            String::from_utf8(want).unwrap()
        );
        let back: ReportsRequest = serde_json::from_slice(&body).unwrap();
        assert_eq!(back.reports, reports);
        assert!(encoded[1].terminal && !encoded[0].terminal);
        assert_eq!(
            reports_body(replica, &[]),
            br#"{"replicaId":"replica \"x\"","reports":[]}"#
        );
    }

    /// The error a TLS stream gives when the handshake fails on `c`.
    fn tls_failure(c: rustls::CertificateError) -> ControlPlaneError {
        let rustls_error = rustls::Error::InvalidCertificate(c);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, rustls_error);
        let url = "https://cp.example:4443/api/runner/v1/startup";
        send_error(
            url,
            awc::error::SendRequestError::Connect(awc::error::ConnectError::Io(io)),
            Duration::from_secs(5),
        )
    }

    #[test]
    fn an_unknown_issuer_says_to_set_the_ca_file() {
        let e = tls_failure(rustls::CertificateError::UnknownIssuer);
        assert_eq!(TlsProblem::of_error(&e), Some(TlsProblem::UnknownIssuer));
        let text = e.to_string();
        assert!(text.contains("UnknownIssuer"), "{text}");
        assert!(
            text.contains("set `tls.caFile` to the CA that signed the control plane's certificate"),
            "{text}"
        );
    }

    #[test]
    fn an_expired_certificate_says_to_renew_it() {
        for c in [
            rustls::CertificateError::Expired,
            rustls::CertificateError::ExpiredContext {
                time: UnixTime::since_unix_epoch(Duration::from_secs(2_000_000_000)),
                not_after: UnixTime::since_unix_epoch(Duration::from_secs(1_900_000_000)),
            },
        ] {
            let e = tls_failure(c);
            assert_eq!(TlsProblem::of_error(&e), Some(TlsProblem::Expired));
            assert!(e.to_string().contains("has expired: renew it"), "{e}");
        }
        let e = tls_failure(rustls::CertificateError::NotValidYet);
        assert_eq!(TlsProblem::of_error(&e), Some(TlsProblem::NotValidYet));
        assert!(e.to_string().contains("clock"), "{e}");
    }

    #[test]
    fn a_name_mismatch_says_which_name_to_use() {
        let e = tls_failure(rustls::CertificateError::NotValidForName);
        assert_eq!(TlsProblem::of_error(&e), Some(TlsProblem::NameMismatch));
        assert!(e.to_string().contains("subjectAltName"), "{e}");
    }

    #[test]
    fn other_transport_failures_get_no_tls_hint() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let e = send_error(
            "https://cp.example",
            awc::error::SendRequestError::Connect(awc::error::ConnectError::Io(io)),
            Duration::from_secs(5),
        );
        assert_eq!(TlsProblem::of_error(&e), None);
        assert!(!e.to_string().contains("tls.caFile"), "{e}");
        // Text alone (an error that kept no type) is classified the same.
        assert_eq!(
            TlsProblem::of_text("invalid peer certificate: UnknownIssuer"),
            Some(TlsProblem::UnknownIssuer)
        );
    }

    #[test]
    fn status_mapping() {
        let body = br#"{"error":"bad_request","message":"no"}"#;
        let e = |s: u16, ra| Shared::error(StatusCode::from_u16(s).unwrap(), ra, body);
        assert!(
            matches!(e(401, None), ControlPlaneError::Unauthorized { message } if message == "no")
        );
        assert!(matches!(e(403, None), ControlPlaneError::Forbidden { .. }));
        assert_eq!(
            e(429, Some(Duration::from_secs(3))).retry_after(),
            Some(Duration::from_secs(3))
        );
        assert!(matches!(
            e(503, None),
            ControlPlaneError::Throttled { status: 503, .. }
        ));
        assert!(matches!(
            e(502, None),
            ControlPlaneError::Server { status: 502, .. }
        ));
        assert!(
            matches!(e(400, None), ControlPlaneError::Rejected { status: 400, code, .. } if code == "bad_request")
        );
    }

    #[test]
    fn plain_http_is_plaintext_unless_to_loopback() {
        for url in [
            "https://cp.example:4443",
            "https://10.0.0.1",
            "http://127.0.0.1:4440",
            "http://127.9.8.7",
            "http://localhost:80",
            "http://LOCALHOST",
            "http://[::1]:4440",
            "http://[::ffff:127.0.0.1]:4440",
        ] {
            assert!(!is_plaintext_to_remote(url).unwrap(), "{url}");
        }
        for url in [
            "http://cp.example:4440",
            "http://10.0.0.1",
            "http://128.0.0.1",
            "http://[::2]",
            "http://localhost.evil.example",
            "http://127.0.0.1.evil.example",
            "HTTP://cp.example",
        ] {
            assert!(is_plaintext_to_remote(url).unwrap(), "{url}");
        }
        for url in ["ftp://cp.example", "cp.example:4443", "http://"] {
            assert!(is_plaintext_to_remote(url).is_err(), "{url}");
        }
    }

    fn settings(url: &str, allow_plaintext: bool) -> TransportSettings {
        let creds = Credentials {
            runner_id: "runner-1".into(),
            token: Token::new("tok"),
            server_url: url.into(),
        };
        let http = HttpSettings {
            allow_plaintext,
            ..HttpSettings::default()
        };
        TransportSettings::new(&creds, &http, &TlsSettings::default(), "0")
    }

    /// A logger that keeps its messages, to see the warnings.
    fn recording() -> (slog::Logger, Arc<Mutex<Vec<String>>>) {
        struct Keep(Arc<Mutex<Vec<String>>>);
        impl slog::Drain for Keep {
            type Ok = ();
            type Err = slog::Never;
            fn log(&self, record: &slog::Record, _: &slog::OwnedKVList) -> Result<(), slog::Never> {
                self.0.lock().unwrap().push(record.msg().to_string());
                Ok(())
            }
        }
        let lines = Arc::new(Mutex::new(Vec::new()));
        let log = slog::Logger::root(Keep(lines.clone()), slog::o!());
        (log, lines)
    }

    #[test]
    fn plain_http_to_another_host_is_refused_unless_allowed_and_then_warned_about() {
        let (log, lines) = recording();
        let e = HttpControlPlane::new(settings("http://cp.example:4440", false), &log)
            .err()
            .expect("refused");
        assert!(matches!(e, TransportError::Plaintext { .. }), "{e}");
        let text = e.to_string();
        assert!(text.contains("http://cp.example:4440"), "{text}");
        assert!(text.contains("http.allowPlaintext"), "{text}");
        assert!(lines.lock().unwrap().is_empty());

        HttpControlPlane::new(settings("http://cp.example:4440", true), &log).unwrap();
        let warned = lines.lock().unwrap().clone();
        assert_eq!(warned.len(), 1, "{warned:?}");
        assert!(warned[0].contains("UNENCRYPTED"), "{warned:?}");

        // Loopback and https need nothing; the setting is still warned about.
        lines.lock().unwrap().clear();
        HttpControlPlane::new(settings("http://127.0.0.1:4440", false), &log).unwrap();
        HttpControlPlane::new(settings("https://cp.example", false), &log).unwrap();
        assert!(lines.lock().unwrap().is_empty());
        HttpControlPlane::new(settings("https://cp.example", true), &log).unwrap();
        assert_eq!(lines.lock().unwrap().len(), 1);
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(encode_path_segment("op-1_a.b"), "op-1_a.b");
        assert_eq!(encode_path_segment("a/../b c"), "a%2F..%2Fb%20c");
    }
}
