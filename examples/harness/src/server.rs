//! The HTTP layer: actix-web handlers over [`ControlState`], built from the
//! route table, with one error shape (`{"error","message"}`) for everything
//! that is refused — bad JSON, oversize bodies, unknown paths included.

use rdrunner_actors::model::ErrorCode;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use actix_web::dev::Service;
use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, ResponseError};
use futures_util::StreamExt;
use rdrunner_actors::model::{
    CheckinRequest, ClaimRequest, ClaimResponse, ReportsRequest, ResumeRequest, ShutdownRequest,
    StartupRequest,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::admin_api::{CreateRunner, ProjectAssignment, StoredReports, SubmitExecution};
use crate::error::ApiError;
use crate::faults::FaultPlan;
use crate::persist;
use crate::routes::{FaultTable, Method, RouteName, ROUTES};
use crate::state::{constant_time_eq, token_hash, CheckinPoll, ControlState};

/// Everything the handlers share.
pub(crate) struct Shared {
    pub state: Mutex<ControlState>,
    pub admin_token_hash: [u8; 32],
    pub body_limit: usize,
    /// Longest long poll granted, whatever `waitMs` asks.
    pub max_wait: Duration,
    pub state_file: Option<PathBuf>,
    /// Serialises state file writes so a newer snapshot is never overwritten
    /// by an older one.
    pub save_lock: Mutex<()>,
    pub faults: FaultTable,
    /// Check-ins held open now, waiting for work (for `/metrics`).
    pub checkins_held: AtomicU64,
}

/// Counts one held check-in while it lives: dropped when the check-in is
/// answered, or when its client goes away and the handler with it.
struct Held<'a>(&'a AtomicU64);

impl<'a> Held<'a> {
    fn new(count: &'a AtomicU64) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Held(count)
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, ControlState> {
        // A panic while holding the lock must not take the harness down with it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes the state file if anything persisted changed.
    pub fn persist(&self) -> Result<(), ApiError> {
        let Some(path) = &self.state_file else {
            return Ok(());
        };
        let _order = self.save_lock.lock().unwrap_or_else(|p| p.into_inner());
        let bytes = {
            let mut st = self.lock();
            if !st.take_dirty() {
                return Ok(());
            }
            serde_json::to_vec(st.snapshot()).map_err(|e| {
                ApiError::new(
                    500,
                    ErrorCode::StateWriteFailed,
                    format!("could not encode the state: {e}"),
                )
            })?
        };
        persist::write_atomic(path, &bytes).map_err(|e| {
            ApiError::new(
                500,
                ErrorCode::StateWriteFailed,
                format!("could not write the state file {}: {e}", path.display()),
            )
        })
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status_code()).json(self.body())
    }
}

type Data = web::Data<Arc<Shared>>;
type Answer = Result<HttpResponse, ApiError>;

/// Adds every route of [`ROUTES`], grouped by path, to `cfg`.
pub(crate) fn configure(cfg: &mut web::ServiceConfig, faults: FaultTable) {
    // One resource per distinct path (routes sharing a path need not be
    // adjacent in the table): actix matches a resource by path first.
    let mut paths: Vec<&'static str> = Vec::new();
    for r in ROUTES {
        if !paths.contains(&r.path) {
            paths.push(r.path);
        }
    }
    for path in paths {
        let mut resource = web::resource(path);
        let mut names = Vec::new();
        for r in ROUTES.iter().filter(|r| r.path == path) {
            let route = match r.method {
                Method::Get => web::get(),
                Method::Post => web::post(),
                Method::Put => web::put(),
                Method::Delete => web::delete(),
            };
            resource = resource.route(handler(r.name, route));
            names.push((r.method.as_str().to_ascii_uppercase(), r.name));
        }
        // RFC 9110 §15.5.6: a 405 lists the methods the resource does serve.
        let allow = names
            .iter()
            .map(|(m, _)| m.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let faults = faults.clone();
        let resource = resource
            .default_service(web::to(move |req: HttpRequest| {
                let allow = allow.clone();
                async move { method_not_allowed(req, allow) }
            }))
            .wrap_fn(move |req, srv| {
                // The fault seam: every request of a named route passes here.
                let name = names.iter().find(|(m, _)| m == req.method().as_str());
                let fault = name.and_then(|(_, name)| faults.fault_for(*name));
                match fault {
                    Some(fault) => crate::faults::apply(fault, req, srv),
                    None => {
                        let fut = srv.call(req);
                        Box::pin(async move { Ok(fut.await?.map_into_boxed_body()) })
                    }
                }
            });
        cfg.service(resource);
    }
}

fn handler(name: RouteName, route: actix_web::Route) -> actix_web::Route {
    match name {
        RouteName::Startup => route.to(startup),
        RouteName::Checkin => route.to(checkin),
        RouteName::Claim => route.to(claim),
        RouteName::Reports => route.to(reports),
        RouteName::Shutdown => route.to(shutdown),
        RouteName::Resume => route.to(resume),
        RouteName::CreateRunner => route.to(create_runner),
        RouteName::ListRunners => route.to(list_runners),
        RouteName::GetRunner => route.to(get_runner),
        RouteName::DeleteRunner => route.to(delete_runner),
        RouteName::Credentials => route.to(credentials),
        RouteName::RegenerateCredentials => route.to(regenerate_credentials),
        RouteName::AssignProject => route.to(assign_project),
        RouteName::UnassignProject => route.to(unassign_project),
        RouteName::SetNodes => route.to(set_nodes),
        RouteName::GetNodes => route.to(get_nodes),
        RouteName::SubmitExecution => route.to(submit_execution),
        RouteName::ListExecutions => route.to(list_executions),
        RouteName::GetExecution => route.to(get_execution),
        RouteName::Output => route.to(output),
        RouteName::Abort => route.to(abort),
        RouteName::ObserveRunner => route.to(observe_runner),
        RouteName::ObserveReports => route.to(observe_reports),
        RouteName::GetFaults => route.to(get_faults),
        RouteName::SetFaults => route.to(set_faults),
        RouteName::ClearFaults => route.to(clear_faults),
        RouteName::Ping => route.to(ping),
        RouteName::GetPing => route.to(get_ping),
        RouteName::Metrics => route.to(metrics),
    }
}

/// The whole application.
pub(crate) fn app(
    shared: Arc<Shared>,
) -> App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let faults = shared.faults.clone();
    let limit = shared.body_limit;
    App::new()
        .app_data(web::Data::new(shared))
        // Handlers read bodies themselves (see `read_json`); these make any
        // extractor that might be added later answer in the same shape.
        .app_data(web::PayloadConfig::new(limit))
        .app_data(
            web::JsonConfig::default()
                .limit(limit)
                .error_handler(|e, _| ApiError::bad_request(format!("request body: {e}")).into()),
        )
        .app_data(
            web::QueryConfig::default()
                .error_handler(|e, _| ApiError::bad_request(format!("query string: {e}")).into()),
        )
        .app_data(
            web::PathConfig::default()
                .error_handler(|e, _| ApiError::bad_request(format!("path: {e}")).into()),
        )
        .configure(move |cfg| configure(cfg, faults))
        .configure(crate::page::configure)
        .default_service(web::to(not_found))
}

async fn not_found(req: HttpRequest) -> Answer {
    Err(ApiError::not_found(
        ErrorCode::NotFound,
        format!(
            "no route {} {}; see docs/protocol.md",
            req.method(),
            req.path()
        ),
    ))
}

/// The 405 of a path: the common error body, plus the `Allow` header.
fn method_not_allowed(req: HttpRequest, allow: String) -> HttpResponse {
    let error = ApiError::new(
        405,
        ErrorCode::MethodNotAllowed,
        format!(
            "{} is not allowed on {}; use {allow}",
            req.method(),
            req.path()
        ),
    );
    HttpResponse::MethodNotAllowed()
        .insert_header((actix_web::http::header::ALLOW, allow))
        .json(error.body())
}

/// Reads the body up to the limit and decodes it; every failure is a 4xx.
async fn read_json<T: DeserializeOwned>(
    mut payload: web::Payload,
    shared: &Shared,
    what: &str,
) -> Result<T, ApiError> {
    let limit = shared.body_limit;
    let too_large = || {
        ApiError::new(
            413,
            ErrorCode::BodyTooLarge,
            format!("the {what} body is larger than the limit of {limit} bytes"),
        )
    };
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| match e {
            actix_web::error::PayloadError::Overflow => too_large(),
            other => ApiError::bad_request(format!("could not read the {what} body: {other}")),
        })?;
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    let direct = serde_json::from_slice(&body);
    let error = match direct {
        Ok(value) => return Ok(value),
        Err(e) => e,
    };
    // JSON has one number type: `4.0` is the integer 4 to JSON Schema (and so
    // to docs/openapi.yaml), while serde refuses it for an integer field. A
    // body with integral fractions is read again with those made integers;
    // when that fails too, the first error (which has a position) is given.
    serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|mut value| integral_numbers(&mut value).then_some(value))
        .and_then(|value| serde_json::from_value(value).ok())
        .ok_or_else(|| {
            ApiError::new(
                400,
                ErrorCode::BadJson,
                format!("the {what} body is not valid: {error}"),
            )
        })
}

/// Turns every number with a zero fraction (`4.0`, `1e3`) that fits an
/// `i64` or a `u64` into that integer, in place; answers whether any was.
fn integral_numbers(value: &mut serde_json::Value) -> bool {
    use serde_json::Value;
    match value {
        Value::Number(n) => {
            let Some(f) = n.as_f64().filter(|f| n.is_f64() && f.fract() == 0.0) else {
                return false;
            };
            // 2^63 and 2^64 are exact as f64; the bounds keep `as` exact.
            let integer = if (-9_223_372_036_854_775_808.0..0.0).contains(&f) {
                Some(Value::from(f as i64))
            } else if (0.0..18_446_744_073_709_551_616.0).contains(&f) {
                Some(Value::from(f as u64))
            } else {
                None
            };
            match integer {
                Some(i) => {
                    *value = i;
                    true
                }
                None => false,
            }
        }
        Value::Array(items) => items
            .iter_mut()
            .fold(false, |any, item| integral_numbers(item) | any),
        Value::Object(fields) => fields
            .values_mut()
            .fold(false, |any, field| integral_numbers(field) | any),
        _ => false,
    }
}

fn bearer(req: &HttpRequest) -> Option<&str> {
    req.headers()
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

fn admin_auth(req: &HttpRequest, shared: &Shared) -> Result<(), ApiError> {
    match bearer(req) {
        Some(t) if constant_time_eq(&token_hash(t), &shared.admin_token_hash) => Ok(()),
        Some(_) => Err(ApiError::unauthorized("the admin token is wrong")),
        None => Err(ApiError::unauthorized(
            "admin calls need `Authorization: Bearer <admin token>`",
        )),
    }
}

/// Returns the calling runner's id once its credentials check out.
fn runner_auth(req: &HttpRequest, shared: &Shared) -> Result<String, ApiError> {
    let id = req
        .headers()
        .get("x-runner-id")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::unauthorized("runner calls need an `X-Runner-Id` header"))?;
    let token = bearer(req).ok_or_else(|| {
        ApiError::unauthorized("runner calls need `Authorization: Bearer <runner token>`")
    })?;
    shared.lock().authenticate(id, token)?;
    Ok(id.to_owned())
}

fn param<'a>(req: &'a HttpRequest, name: &str) -> &'a str {
    req.match_info().get(name).unwrap_or_default()
}

fn execution_id(req: &HttpRequest) -> Result<u64, ApiError> {
    let raw = param(req, "id");
    raw.parse().map_err(|_| {
        ApiError::not_found(
            ErrorCode::UnknownExecution,
            format!("`{raw}` is not an execution id"),
        )
    })
}

fn query<T: DeserializeOwned>(req: &HttpRequest) -> Result<T, ApiError> {
    web::Query::<T>::from_query(req.query_string())
        .map(|q| q.into_inner())
        .map_err(|e| ApiError::bad_request(format!("query string `{}`: {e}", req.query_string())))
}

fn ok<T: Serialize>(body: &T) -> Answer {
    Ok(HttpResponse::Ok().json(body))
}

// ---- runner API -------------------------------------------------------------

async fn startup(req: HttpRequest, payload: web::Payload, data: Data) -> Answer {
    let now = Instant::now();
    let runner = runner_auth(&req, &data)?;
    let body: StartupRequest = read_json(payload, &data, "startup").await?;
    let replica = format!("rep-{}", crate::random_id(8));
    let peer = req.peer_addr().map(|a| a.ip());
    let answer = data.lock().startup(&runner, body, replica, peer, now)?;
    data.persist()?;
    ok(&answer)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WaitQuery {
    #[serde(default)]
    wait_ms: u64,
}

async fn checkin(req: HttpRequest, payload: web::Payload, data: Data) -> Answer {
    // The check-in counts from its arrival, not from when its answer is ready.
    let arrived = Instant::now();
    let runner = runner_auth(&req, &data)?;
    let wait: WaitQuery = query(&req)?;
    let body: CheckinRequest = read_json(payload, &data, "check-in").await?;
    let deadline = arrived + Duration::from_millis(wait.wait_ms).min(data.max_wait);
    let peer = req.peer_addr().map(|a| a.ip());
    let mut wakeup = {
        let mut st = data.lock();
        st.record_checkin(&runner, &body, peer, arrived)?;
        st.subscribe(&runner)
    };
    // Counted from the first wait to the answer (dropped with the handler
    // if the client goes away).
    let mut held: Option<Held<'_>> = None;
    loop {
        let now = Instant::now();
        let poll = data
            .lock()
            .poll_checkin(&runner, &body.replica_id, now, now >= deadline)?;
        match poll {
            CheckinPoll::Ready(answer) => return ok(&answer),
            CheckinPoll::Wait { recheck_at } => {
                if held.is_none() {
                    held = Some(Held::new(&data.checkins_held));
                }
                let until = recheck_at.map_or(deadline, |r| r.min(deadline));
                tokio::select! {
                    changed = wakeup.changed() => {
                        if changed.is_err() {
                            actix_rt::time::sleep_until(until.into()).await;
                        }
                    }
                    _ = actix_rt::time::sleep_until(until.into()) => {}
                }
            }
        }
    }
}

async fn claim(req: HttpRequest, payload: web::Payload, data: Data) -> Answer {
    let runner = runner_auth(&req, &data)?;
    let body: ClaimRequest = read_json(payload, &data, "claim").await?;
    let op_id = param(&req, "opId");
    let operation = data.lock().claim(&runner, op_id, &body.replica_id)?;
    data.persist()?;
    ok(&ClaimResponse { operation })
}

async fn reports(req: HttpRequest, payload: web::Payload, data: Data) -> Answer {
    let runner = runner_auth(&req, &data)?;
    let body: ReportsRequest = read_json(payload, &data, "reports").await?;
    let answer = data.lock().reports(&runner, body)?;
    data.persist()?;
    ok(&answer)
}

async fn shutdown(req: HttpRequest, payload: web::Payload, data: Data) -> Answer {
    let now = Instant::now();
    let runner = runner_auth(&req, &data)?;
    let body: ShutdownRequest = read_json(payload, &data, "shutdown").await?;
    data.lock().shutdown(&runner, &body, now)?;
    data.persist()?;
    Ok(HttpResponse::NoContent().finish())
}

async fn resume(req: HttpRequest, payload: web::Payload, data: Data) -> Answer {
    let now = Instant::now();
    let runner = runner_auth(&req, &data)?;
    let body: ResumeRequest = read_json(payload, &data, "resume").await?;
    let answer = data.lock().resume(&runner, &body, now)?;
    data.persist()?;
    ok(&answer)
}

// ---- admin API --------------------------------------------------------------

async fn create_runner(req: HttpRequest, payload: web::Payload, data: Data) -> Answer {
    admin_auth(&req, &data)?;
    let body: CreateRunner = read_json(payload, &data, "runner").await?;
    let id = format!("runner-{}", crate::random_id(6));
    let answer = data.lock().create_runner(body, id, crate::random_token())?;
    data.persist()?;
    Ok(HttpResponse::Created().json(answer))
}

async fn list_runners(req: HttpRequest, data: Data) -> Answer {
    admin_auth(&req, &data)?;
    ok(&data.lock().list_runners(Instant::now()))
}

async fn get_runner(req: HttpRequest, data: Data) -> Answer {
    admin_auth(&req, &data)?;
    ok(&data.lock().get_runner(param(&req, "id"), Instant::now())?)
}

async fn delete_runner(req: HttpRequest, data: Data) -> Answer {
    admin_auth(&req, &data)?;
    data.lock().delete_runner(param(&req, "id"))?;
    data.persist()?;
    Ok(HttpResponse::NoContent().finish())
}

async fn credentials(req: HttpRequest, data: Data) -> Answer {
    admin_auth(&req, &data)?;
    let text = data.lock().credentials(param(&req, "id"))?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body(text))
}

async fn regenerate_credentials(req: HttpRequest, data: Data) -> Answer {
    admin_auth(&req, &data)?;
    let answer = data
        .lock()
        .regenerate_credentials(param(&req, "id"), crate::random_token())?;
    data.persist()?;
    ok(&answer)
}

async fn assign_project(req: HttpRequest, payload: web::Payload, data: Data) -> Answer {
    admin_auth(&req, &data)?;
    let body: ProjectAssignment = read_json(payload, &data, "project assignment").await?;
    let answer =
        data.lock()
            .assign_project(param(&req, "id"), param(&req, "project"), &body.node_filter)?;
    data.persist()?;
    ok(&answer)
}

async fn set_nodes(req: HttpRequest, payload: web::Payload, data: Data) -> Answer {
    admin_auth(&req, &data)?;
    let body: Vec<rdrunner_actors::model::Node> =
        read_json(payload, &data, "node inventory").await?;
    let project = param(&req, "project");
    data.lock().set_nodes(project, body)?;
    data.persist()?;
    ok(&data.lock().nodes(project)?)
}

#[derive(Deserialize)]
struct NodesQuery {
    filter: Option<String>,
}

async fn get_nodes(req: HttpRequest, data: Data) -> Answer {
    admin_auth(&req, &data)?;
    let q: NodesQuery = query(&req)?;
    ok(&data
        .lock()
        .nodes_matching(param(&req, "project"), q.filter.as_deref())?)
}

async fn unassign_project(req: HttpRequest, data: Data) -> Answer {
    admin_auth(&req, &data)?;
    let answer = data
        .lock()
        .unassign_project(param(&req, "id"), param(&req, "project"))?;
    data.persist()?;
    ok(&answer)
}

#[derive(Deserialize)]
struct ExecutionsQuery {
    #[serde(default = "default_executions_limit")]
    limit: u64,
}

fn default_executions_limit() -> u64 {
    20
}

async fn list_executions(req: HttpRequest, data: Data) -> Answer {
    admin_auth(&req, &data)?;
    let q: ExecutionsQuery = query(&req)?;
    let limit = usize::try_from(q.limit).unwrap_or(usize::MAX);
    ok(&data.lock().list_executions(limit))
}

async fn submit_execution(req: HttpRequest, payload: web::Payload, data: Data) -> Answer {
    admin_auth(&req, &data)?;
    let body: SubmitExecution = read_json(payload, &data, "execution").await?;
    let answer = data.lock().submit_execution(param(&req, "project"), body)?;
    data.persist()?;
    Ok(HttpResponse::Created().json(answer))
}

async fn get_execution(req: HttpRequest, data: Data) -> Answer {
    admin_auth(&req, &data)?;
    ok(&data.lock().execution(execution_id(&req)?)?)
}

#[derive(Deserialize)]
struct OutputQuery {
    #[serde(default)]
    after: u64,
    #[serde(default = "default_output_limit")]
    limit: u64,
}

fn default_output_limit() -> u64 {
    10_000
}

async fn output(req: HttpRequest, data: Data) -> Answer {
    admin_auth(&req, &data)?;
    let q: OutputQuery = query(&req)?;
    // A page of no entries never advances the cursor: 0 is out of range
    // (protocol.md §1), not silently raised to 1.
    if q.limit == 0 {
        return Err(ApiError::bad_request(
            "`limit` 0 is out of range; ask for at least 1 entry, or leave `limit` out for 10000",
        ));
    }
    let limit = usize::try_from(q.limit).unwrap_or(usize::MAX);
    ok(&data.lock().output(execution_id(&req)?, q.after, limit)?)
}

async fn abort(req: HttpRequest, data: Data) -> Answer {
    admin_auth(&req, &data)?;
    let answer = data.lock().abort(execution_id(&req)?)?;
    data.persist()?;
    ok(&answer)
}

async fn observe_runner(req: HttpRequest, data: Data) -> Answer {
    admin_auth(&req, &data)?;
    ok(&data.lock().observe_runner(param(&req, "id"))?)
}

async fn observe_reports(req: HttpRequest, data: Data) -> Answer {
    admin_auth(&req, &data)?;
    let op_id = param(&req, "opId");
    let reports = data.lock().stored_reports(op_id).ok_or_else(|| {
        ApiError::not_found(
            ErrorCode::UnknownOperation,
            format!("no operation `{op_id}`"),
        )
    })?;
    ok(&StoredReports {
        op_id: op_id.to_owned(),
        reports,
    })
}

async fn ping(req: HttpRequest, data: Data) -> Answer {
    admin_auth(&req, &data)?;
    let id = format!("ping-{}", crate::random_id(8));
    let answer = data.lock().ping(param(&req, "id"), id, Instant::now())?;
    Ok(HttpResponse::Created().json(answer))
}

async fn get_ping(req: HttpRequest, data: Data) -> Answer {
    admin_auth(&req, &data)?;
    let answer =
        data.lock()
            .ping_status(param(&req, "id"), param(&req, "pingId"), Instant::now())?;
    ok(&answer)
}

/// `/metrics` takes no token: it holds counts only (no runner, replica or
/// project name), and a Prometheus scrape usually carries none.
async fn metrics(data: Data) -> Answer {
    let census = data.lock().census(Instant::now());
    let held = data.checkins_held.load(Ordering::Relaxed);
    // Writing into a String fails only if a collector does, which these
    // never do; were it to happen, the scrape fails, the harness goes on.
    Ok(match crate::metrics::render(census, held) {
        Ok(text) => HttpResponse::Ok()
            .content_type(crate::metrics::CONTENT_TYPE)
            .body(text),
        Err(e) => HttpResponse::InternalServerError()
            .content_type("text/plain; charset=utf-8")
            .body(format!("could not write the metrics: {e}\n")),
    })
}

// ---- fault injection --------------------------------------------------------

async fn get_faults(req: HttpRequest, data: Data) -> Answer {
    admin_auth(&req, &data)?;
    ok(&data.faults.status())
}

async fn set_faults(req: HttpRequest, payload: web::Payload, data: Data) -> Answer {
    admin_auth(&req, &data)?;
    let plan: FaultPlan = read_json(payload, &data, "fault plan").await?;
    data.faults
        .set(plan)
        .map_err(|e| ApiError::new(422, ErrorCode::BadFaultPlan, e.to_string()))?;
    ok(&data.faults.status())
}

async fn clear_faults(req: HttpRequest, data: Data) -> Answer {
    admin_auth(&req, &data)?;
    data.faults.clear();
    ok(&data.faults.status())
}
