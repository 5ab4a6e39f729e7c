//! A compromised control plane for the end-to-end tests: it speaks the
//! runner API (startup, check-in, claim, reports, shutdown) and offers
//! whatever operation JSON a test hands it, with no validation at all, the
//! way an attacker who owns the control plane would. It stores every report
//! the runner sends, so that a test can read what left the segment.
//!
//! Loopback only, on a free port, served by actix-web on a thread of its
//! own; stopped when dropped.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use rdrunner_actors::model::{Report, ReportBody, ReportsRequest, State};
use serde_json::{json, Value};

/// What the hostile control plane holds and has seen.
#[derive(Default)]
struct Inner {
    /// Operations offered at every check-in until claimed, by id.
    offers: BTreeMap<String, Value>,
    /// Claimed operations, by id.
    claimed: BTreeMap<String, Value>,
    /// Every report stored, in arrival order, duplicates dropped.
    reports: Vec<Report>,
    /// Highest contiguous seq stored, per operation.
    acks: BTreeMap<String, u64>,
    /// When each check-in arrived.
    checkins: Vec<Instant>,
    /// Answer the next check-ins with 503 and this `Retry-After` value.
    retry_after: Option<(String, u32)>,
    /// Every request body received, raw, for leak checks.
    bodies: Vec<Vec<u8>>,
}

/// The hostile control plane.
pub struct HostileControlPlane {
    url: String,
    inner: Arc<Mutex<Inner>>,
    handle: actix_web::dev::ServerHandle,
    thread: Option<JoinHandle<()>>,
}

impl HostileControlPlane {
    pub fn start() -> HostileControlPlane {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let (tx, rx) = std::sync::mpsc::channel();
        let state = inner.clone();
        let thread = std::thread::spawn(move || {
            let sys = actix_rt::System::new();
            sys.block_on(async move {
                let data = web::Data::new(state);
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(data.clone())
                        .app_data(web::PayloadConfig::new(64 << 20))
                        .route("/api/runner/v1/startup", web::post().to(startup))
                        .route("/api/runner/v1/checkin", web::post().to(checkin))
                        .route(
                            "/api/runner/v1/operations/{id}/claim",
                            web::post().to(claim),
                        )
                        .route("/api/runner/v1/reports", web::post().to(reports))
                        .route("/api/runner/v1/shutdown", web::post().to(shutdown))
                })
                .workers(1)
                .bind(("127.0.0.1", 0))
                .expect("bind the hostile control plane");
                let addr = server.addrs()[0];
                let server = server.run();
                tx.send((addr, server.handle()))
                    .expect("hand over the address");
                let _ = server.await;
            });
        });
        let (addr, handle) = rx.recv().expect("the hostile control plane starts");
        HostileControlPlane {
            url: format!("http://{addr}"),
            inner,
            handle,
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Offers `op` (any JSON; its `id` names it) at every check-in until
    /// the runner claims it.
    pub fn offer(&self, op: Value) {
        let id = op["id"].as_str().expect("an operation id").to_owned();
        self.lock().offers.insert(id, op);
    }

    /// Answers the next `times` check-ins with 503 and `Retry-After: value`.
    pub fn refuse_checkins(&self, value: &str, times: u32) {
        self.lock().retry_after = Some((value.to_owned(), times));
    }

    pub fn checkins(&self) -> Vec<Instant> {
        self.lock().checkins.clone()
    }

    pub fn claimed(&self, id: &str) -> bool {
        self.lock().claimed.contains_key(id)
    }

    /// Every report of operation `id` stored so far.
    pub fn reports(&self, id: &str) -> Vec<Report> {
        self.lock()
            .reports
            .iter()
            .filter(|r| r.op_id == id)
            .cloned()
            .collect()
    }

    /// Every byte the runner sent, request bodies joined.
    pub fn received(&self) -> Vec<u8> {
        self.lock().bodies.concat()
    }

    /// Waits (at most `timeout`) for the terminal `op` report of `id` and
    /// returns every report of it.
    pub fn wait_terminal(&self, id: &str, timeout: Duration) -> Vec<Report> {
        let start = Instant::now();
        loop {
            let reports = self.reports(id);
            if reports.iter().any(Report::is_terminal) {
                return reports;
            }
            assert!(
                start.elapsed() < timeout,
                "operation {id} did not end within {timeout:?}; reports so far: {reports:#?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for HostileControlPlane {
    fn drop(&mut self) {
        // The stop command is sent at once; the future only says when the
        // server is gone, which the thread's end says too.
        drop(self.handle.stop(false));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

type Shared = web::Data<Arc<Mutex<Inner>>>;

fn lock(state: &Shared) -> MutexGuard<'_, Inner> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

fn remember(state: &Shared, body: &web::Bytes) {
    lock(state).bodies.push(body.to_vec());
}

async fn startup(state: Shared, body: web::Bytes) -> HttpResponse {
    remember(&state, &body);
    HttpResponse::Ok().json(json!({
        "replicaId": "rep-hostile",
        "pollIntervalMs": 200,
        "longPollMs": 0,
        "reportIntervalMs": 50,
        "reportBatchMax": 1000,
        "leaseMs": 60000
    }))
}

async fn checkin(state: Shared, body: web::Bytes) -> HttpResponse {
    remember(&state, &body);
    let mut s = lock(&state);
    s.checkins.push(Instant::now());
    if let Some((value, times)) = s.retry_after.take() {
        if times > 1 {
            s.retry_after = Some((value.clone(), times - 1));
        }
        return HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", value))
            .json(json!({"error": "unavailable", "message": "come back later"}));
    }
    let offers: Vec<Value> = s.offers.values().cloned().collect();
    HttpResponse::Ok().json(json!({"operations": offers, "cancel": []}))
}

async fn claim(state: Shared, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    remember(&state, &body);
    let id = req.match_info().get("id").unwrap_or_default().to_owned();
    let mut s = lock(&state);
    let op = match s.offers.remove(&id) {
        Some(op) => op,
        None => match s.claimed.get(&id) {
            Some(op) => op.clone(),
            None => {
                return HttpResponse::NotFound()
                    .json(json!({"error": "unknown_operation", "message": id}))
            }
        },
    };
    s.claimed.insert(id, op.clone());
    HttpResponse::Ok().json(json!({ "operation": op }))
}

async fn reports(state: Shared, body: web::Bytes) -> HttpResponse {
    remember(&state, &body);
    let batch: ReportsRequest = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return HttpResponse::BadRequest()
                .json(json!({"error": "bad_request", "message": e.to_string()}))
        }
    };
    let mut reports = batch.reports;
    reports.sort_by(|a, b| (&a.op_id, a.seq).cmp(&(&b.op_id, b.seq)));
    let mut s = lock(&state);
    let mut acks = BTreeMap::new();
    for r in reports {
        let acked = s.acks.get(&r.op_id).copied().unwrap_or(0);
        if r.seq == acked + 1 {
            s.acks.insert(r.op_id.clone(), r.seq);
            s.reports.push(r.clone());
        }
        acks.insert(r.op_id.clone(), s.acks.get(&r.op_id).copied().unwrap_or(0));
    }
    HttpResponse::Ok().json(json!({"acks": acks, "cancel": []}))
}

async fn shutdown(state: Shared, body: web::Bytes) -> HttpResponse {
    remember(&state, &body);
    HttpResponse::NoContent().finish()
}

/// What one node did in an operation, from its reports.
#[derive(Debug, Default, Clone)]
pub struct NodeOutcome {
    /// The state of its last node report.
    pub state: Option<State>,
    /// Every message of its node reports, joined by newlines.
    pub messages: String,
    /// Its stdout lines.
    pub stdout: Vec<String>,
    /// Its stderr and system lines.
    pub other: Vec<String>,
}

/// Every node's outcome in `reports`, by node name.
pub fn outcomes(reports: &[Report]) -> BTreeMap<String, NodeOutcome> {
    let mut out: BTreeMap<String, NodeOutcome> = BTreeMap::new();
    for r in reports {
        match &r.body {
            ReportBody::Node(n) => {
                let o = out.entry(n.node.clone()).or_default();
                o.state = Some(n.state);
                if let Some(m) = &n.message {
                    o.messages.push_str(m);
                    o.messages.push('\n');
                }
            }
            ReportBody::Log(l) => {
                let o = out.entry(l.node.clone()).or_default();
                match l.stream {
                    rdrunner_actors::model::Stream::Stdout => o.stdout.push(l.text.clone()),
                    _ => o.other.push(l.text.clone()),
                }
            }
            ReportBody::Op(_) => {}
        }
    }
    out
}
