//! The HTTPS transport against a small actix-web control plane on
//! 127.0.0.1:0: headers, replica id, status mapping, claim conflicts,
//! deadlines, TLS trust through `tls.caFile`, and the CONNECT proxy.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use rdrunner::creds::Token;
use rdrunner::transport::{HttpControlPlane, ProxySettings, TlsSettings, TransportSettings};
use rdrunner_actors::model::{CheckinRequest, ReportsRequest, ShutdownRequest, StartupRequest};
use rdrunner_actors::{ClaimOutcome, ControlPlane, ControlPlaneError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "tok-very-secret";

/// (path, authorization, runner id, replica id, user agent) of a request.
type Seen = (String, String, String, String, String);

#[derive(Default)]
struct State {
    seen: Mutex<Vec<Seen>>,
    /// The next answer to /reports: status and Retry-After.
    reports_status: Mutex<Option<(u16, Option<&'static str>)>>,
}

fn header(req: &HttpRequest, name: &str) -> String {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

async fn handle(req: HttpRequest, body: web::Bytes, state: web::Data<State>) -> HttpResponse {
    let path = req.path().to_owned();
    state.seen.lock().unwrap().push((
        format!("{}?{}", path, req.query_string()),
        header(&req, "authorization"),
        header(&req, "x-runner-id"),
        header(&req, "x-replica-id"),
        header(&req, "user-agent"),
    ));
    let rest = path.strip_prefix("/api/runner/v1").unwrap_or("");
    if header(&req, "authorization") != format!("Bearer {TOKEN}") {
        return HttpResponse::Unauthorized()
            .json(serde_json::json!({"error": "unauthorized", "message": "bad token"}));
    }
    match rest {
        "/startup" => {
            let _: StartupRequest = serde_json::from_slice(&body).unwrap();
            HttpResponse::Ok()
                .json(serde_json::json!({"replicaId": "rep-1", "pollIntervalMs": 5000}))
        }
        "/checkin" => {
            if req.query_string() == "waitMs=2000" {
                // Holds past the client's deadline.
                actix_rt::time::sleep(Duration::from_secs(5)).await;
            }
            HttpResponse::Ok().json(serde_json::json!({"operations": [], "cancel": ["op-x"]}))
        }
        "/operations/op-taken/claim" => HttpResponse::Conflict()
            .json(serde_json::json!({"error": "taken", "message": "another replica"})),
        "/operations/op-cancelled/claim" => HttpResponse::Conflict()
            .json(serde_json::json!({"error": "cancelled", "message": "cancelled"})),
        "/operations/op-gone/claim" => HttpResponse::NotFound()
            .json(serde_json::json!({"error": "not_found", "message": "no such operation"})),
        "/operations/op-1/claim" => HttpResponse::Ok().json(serde_json::json!({"operation": {
            "id": "op-1", "execution": {"id": 1}, "steps": [{"type": "command", "command": "true"}],
            "nodes": [{"name": "n1"}]}})),
        "/reports" => match state.reports_status.lock().unwrap().take() {
            Some((status, retry)) => {
                let mut r =
                    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap());
                if let Some(s) = retry {
                    r.insert_header(("Retry-After", s));
                }
                r.json(serde_json::json!({"error": "busy", "message": "later"}))
            }
            None => HttpResponse::Ok().body("{not json"),
        },
        "/shutdown" => HttpResponse::NoContent().finish(),
        _ => HttpResponse::NotFound().finish(),
    }
}

/// Starts the test control plane; with `tls`, serves HTTPS with that config.
fn serve(state: web::Data<State>, tls: Option<rustls::ServerConfig>) -> u16 {
    let s = state.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(s.clone())
            .default_service(web::to(handle))
    })
    .workers(1)
    .disable_signals();
    let server = match tls {
        None => server.bind(("127.0.0.1", 0)).unwrap(),
        Some(cfg) => server.bind_rustls_0_23(("127.0.0.1", 0), cfg).unwrap(),
    };
    let port = server.addrs()[0].port();
    actix_rt::spawn(server.run());
    port
}

fn settings(url: String) -> TransportSettings {
    TransportSettings {
        server_url: url,
        runner_id: "runner-7".into(),
        token: Token::new(TOKEN),
        version: "1.2.3".into(),
        request_timeout: Duration::from_millis(700),
        connect_timeout: Duration::from_secs(2),
        tls: TlsSettings {
            ca_file: None,
            insecure_skip_verify: false,
        },
        proxy: None,
        allow_plaintext: false,
    }
}

fn discard() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}

fn startup_req() -> StartupRequest {
    StartupRequest {
        hostname: "h".into(),
        version: "1.2.3".into(),
        pid: 1,
        max_running: 5,
        tags: vec![],
    }
}

fn checkin_req() -> CheckinRequest {
    CheckinRequest {
        replica_id: "rep-1".into(),
        running: vec![],
        queued: 0,
        max_running: 5,
        uptime_s: 0,
        version: "1.2.3".into(),
        pongs: vec![],
    }
}

#[actix_rt::test]
async fn headers_replica_id_and_every_call() {
    let state = web::Data::new(State::default());
    let port = serve(state.clone(), None);
    let cp =
        HttpControlPlane::new(settings(format!("http://127.0.0.1:{port}")), &discard()).unwrap();

    let up = cp.startup(startup_req()).await.unwrap();
    assert_eq!(up.replica_id, "rep-1");
    assert_eq!(cp.replica_id().as_deref(), Some("rep-1"));
    let ck = cp.checkin(checkin_req(), Duration::ZERO).await.unwrap();
    assert_eq!(ck.cancel, vec!["op-x"]);
    match cp.claim("op-1", "rep-1").await.unwrap() {
        ClaimOutcome::Claimed(op) => assert_eq!(op.id, "op-1"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        cp.claim("op-taken", "rep-1").await.unwrap(),
        ClaimOutcome::Taken
    );
    assert_eq!(
        cp.claim("op-cancelled", "rep-1").await.unwrap(),
        ClaimOutcome::Cancelled
    );
    match cp.claim("op-gone", "rep-1").await.unwrap_err() {
        ControlPlaneError::Rejected {
            status: 404, code, ..
        } => assert_eq!(code, "not_found"),
        other => panic!("{other:?}"),
    }
    cp.shutdown(ShutdownRequest {
        replica_id: "rep-1".into(),
        reason: "test".into(),
    })
    .await
    .unwrap();

    let seen = state.seen.lock().unwrap().clone();
    assert_eq!(seen[0].0, "/api/runner/v1/startup?");
    assert_eq!(seen[0].3, "", "no replica id before startup");
    assert_eq!(seen[1].0, "/api/runner/v1/checkin?waitMs=0");
    for (path, auth, runner, replica, agent) in &seen[1..] {
        assert_eq!(auth, &format!("Bearer {TOKEN}"), "{path}");
        assert_eq!(runner, "runner-7", "{path}");
        assert_eq!(replica, "rep-1", "{path}");
        assert_eq!(agent, "rdrunner/1.2.3", "{path}");
    }
}

#[actix_rt::test]
async fn status_mapping_bad_json_and_deadline() {
    let state = web::Data::new(State::default());
    let port = serve(state.clone(), None);
    let cp =
        HttpControlPlane::new(settings(format!("http://127.0.0.1:{port}")), &discard()).unwrap();
    let reports = || ReportsRequest {
        replica_id: "rep-1".into(),
        reports: vec![],
    };
    let cases: [(u16, Option<&'static str>); 4] =
        [(429, Some("7")), (503, None), (502, None), (403, None)];
    for (status, retry) in cases {
        *state.reports_status.lock().unwrap() = Some((status, retry));
        let err = cp.reports(reports()).await.unwrap_err();
        match (status, &err) {
            (
                429,
                ControlPlaneError::Throttled {
                    status: 429,
                    retry_after,
                },
            ) => {
                assert_eq!(*retry_after, Some(Duration::from_secs(7)))
            }
            (
                503,
                ControlPlaneError::Throttled {
                    status: 503,
                    retry_after: None,
                },
            ) => {}
            (
                502,
                ControlPlaneError::Server {
                    status: 502,
                    message,
                },
            ) => assert_eq!(message, "later"),
            (403, ControlPlaneError::Forbidden { .. }) => {}
            _ => panic!("{status}: {err:?}"),
        }
    }
    // 200 with a body that is not JSON.
    assert!(matches!(
        cp.reports(reports()).await.unwrap_err(),
        ControlPlaneError::Protocol(_)
    ));

    // A check-in gets waitMs + the request timeout (700 ms) as its deadline.
    let t = std::time::Instant::now();
    let err = cp
        .checkin(checkin_req(), Duration::from_millis(2000))
        .await
        .unwrap_err();
    assert_eq!(err, ControlPlaneError::Timeout(Duration::from_millis(2700)));
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());

    // Wrong token: 401, and the token never shows in the error.
    let mut s = settings(format!("http://127.0.0.1:{port}"));
    s.token = Token::new("wrong-token");
    let bad = HttpControlPlane::new(s, &discard()).unwrap();
    let err = bad.startup(startup_req()).await.unwrap_err();
    assert!(err.is_auth(), "{err:?}");
    assert!(!format!("{err} {err:?}").contains("wrong-token"));
}

#[actix_rt::test]
async fn unreachable_server_is_a_transport_error() {
    // Bind and drop to get a port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cp =
        HttpControlPlane::new(settings(format!("http://127.0.0.1:{port}")), &discard()).unwrap();
    let err = cp.startup(startup_req()).await.unwrap_err();
    match err {
        ControlPlaneError::Transport(m) => assert!(m.contains(&format!("127.0.0.1:{port}")), "{m}"),
        other => panic!("{other:?}"),
    }
}

struct Pki {
    ca_pem: String,
    server: rustls::ServerConfig,
}

fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "rdrunner test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![leaf.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
    )
    .unwrap();
    Pki {
        ca_pem: ca.pem(),
        server,
    }
}

#[actix_rt::test]
async fn https_trusted_through_ca_file_and_refused_otherwise() {
    let pki = pki();
    let state = web::Data::new(State::default());
    let port = serve(state.clone(), Some(pki.server));
    let url = format!("https://127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();

    // Not trusted: the private CA is not among the roots.
    let cp = HttpControlPlane::new(settings(url.clone()), &discard()).unwrap();
    match cp.startup(startup_req()).await.unwrap_err() {
        ControlPlaneError::Transport(m) => assert!(m.to_lowercase().contains("certificate"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(
        state.seen.lock().unwrap().is_empty(),
        "no request may pass an untrusted TLS session"
    );

    // Trusted through tls.caFile.
    let mut s = settings(url.clone());
    s.tls.ca_file = Some(ca_file.clone());
    let cp = HttpControlPlane::new(s, &discard()).unwrap();
    assert_eq!(cp.startup(startup_req()).await.unwrap().replica_id, "rep-1");

    // insecureSkipVerify accepts it too, and warns.
    let mut s = settings(url);
    s.tls.insecure_skip_verify = true;
    let (log, lines) = capture();
    let cp = HttpControlPlane::new(s, &log).unwrap();
    assert_eq!(cp.startup(startup_req()).await.unwrap().replica_id, "rep-1");
    assert!(lines
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("verification is OFF")));

    // A CA file without certificates is refused when the transport is built.
    std::fs::write(&ca_file, "not a certificate\n").unwrap();
    let mut s = settings("https://127.0.0.1:1".into());
    s.tls.ca_file = Some(ca_file);
    let err = HttpControlPlane::new(s, &discard())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("ca.pem") && err.contains("no certificate"),
        "{err}"
    );
}

/// A logger that keeps its messages.
fn capture() -> (slog::Logger, Arc<Mutex<Vec<String>>>) {
    struct Keep(Arc<Mutex<Vec<String>>>);
    impl slog::Drain for Keep {
        type Ok = ();
        type Err = slog::Never;
        fn log(&self, r: &slog::Record, _: &slog::OwnedKVList) -> Result<(), slog::Never> {
            self.0.lock().unwrap().push(r.msg().to_string());
            Ok(())
        }
    }
    let lines = Arc::new(Mutex::new(Vec::new()));
    (
        slog::Logger::root(slog::Fuse(Keep(lines.clone())), slog::o!()),
        lines,
    )
}

/// A CONNECT proxy on 127.0.0.1:0 that counts tunnels; refuses all with `refuse`.
async fn proxy(refuse: bool) -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    actix_rt::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                return;
            };
            let c = c.clone();
            actix_rt::spawn(async move {
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") {
                    head.push(client.read_u8().await.unwrap());
                }
                let head = String::from_utf8(head).unwrap();
                let target = head.split_whitespace().nth(1).unwrap().to_owned();
                assert!(head.starts_with("CONNECT "), "{head}");
                if refuse {
                    client
                        .write_all(b"HTTP/1.1 403 Forbidden\r\n\r\n")
                        .await
                        .unwrap();
                    return;
                }
                c.fetch_add(1, Ordering::SeqCst);
                let mut upstream = tokio::net::TcpStream::connect(target).await.unwrap();
                client
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .await
                    .unwrap();
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    (port, count)
}

#[actix_rt::test]
async fn https_through_a_connect_proxy() {
    let pki = pki();
    let state = web::Data::new(State::default());
    let port = serve(state.clone(), Some(pki.server));
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    let (proxy_port, tunnels) = proxy(false).await;

    let mut s = settings(format!("https://127.0.0.1:{port}"));
    s.tls.ca_file = Some(ca_file.clone());
    s.proxy = Some(ProxySettings {
        host: "127.0.0.1".into(),
        port: proxy_port,
        no_proxy: vec![],
    });
    let cp = HttpControlPlane::new(s.clone(), &discard()).unwrap();
    cp.startup(startup_req()).await.unwrap();
    cp.checkin(checkin_req(), Duration::ZERO).await.unwrap();
    // Two calls, one tunnel: the connection is reused.
    assert_eq!(tunnels.load(Ordering::SeqCst), 1);
    assert_eq!(state.seen.lock().unwrap().len(), 2);

    // NO_PROXY bypasses it.
    s.proxy.as_mut().unwrap().no_proxy = vec!["127.0.0.1".into()];
    let cp = HttpControlPlane::new(s.clone(), &discard()).unwrap();
    cp.startup(startup_req()).await.unwrap();
    assert_eq!(tunnels.load(Ordering::SeqCst), 1);

    // A proxy that refuses the tunnel is a transport error naming it.
    let (refusing, _) = proxy(true).await;
    s.proxy = Some(ProxySettings {
        host: "127.0.0.1".into(),
        port: refusing,
        no_proxy: vec![],
    });
    let cp = HttpControlPlane::new(s, &discard()).unwrap();
    match cp.startup(startup_req()).await.unwrap_err() {
        ControlPlaneError::Transport(m) => {
            assert!(
                m.contains(&format!("proxy 127.0.0.1:{refusing}")) && m.contains("403"),
                "{m}"
            )
        }
        other => panic!("{other:?}"),
    }
}
