//! Fault injection per route of the runner API: which faults are in force
//! ([`FaultPlan`], set at start through `HarnessConfig::faults` or the
//! `--fault` flags, and at run time through `PUT /api/v1/faults`), the seeded
//! draw that decides whether one request gets one ([`FaultTable`]), and how
//! a drawn fault is applied to the request ([`apply`]).
//!
//! Every request of a named route passes through [`FaultTable::fault_for`]
//! once. For a route with rules, one number is drawn from a generator seeded
//! with the plan's seed; the rules of that route share the interval [0, 1)
//! in their order, so at most one fault hits a request and a seed replays the
//! same sequence of faults for the same sequence of requests.

use rdrunner_actors::model::ErrorCode;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use futures_util::future::LocalBoxFuture;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::routes::{RouteName, ROUTES, RUNNER_BASE};

/// How long a `hang` holds a request when the client never gives up; then
/// it is answered 503 so that no connection is held for ever.
pub const HANG_LIMIT: Duration = Duration::from_secs(600);

/// A fault to inject into one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self", tag = "kind", rename_all = "camelCase")]
pub enum Fault {
    /// Runs the request, then closes the connection without answering: the
    /// request may have taken effect, its answer is lost.
    Drop,
    /// Holds the request this long, then serves it normally.
    Delay { ms: u64 },
    /// Refuses the request with this 5xx status (500, 503, ...) without
    /// running it.
    Status { status: u16 },
    /// Refuses the request with 429 and `Retry-After: seconds` without
    /// running it.
    RetryAfter { seconds: u64 },
    /// Runs the request, then sends the head (with the full
    /// `Content-Length`) and only the first half of the body before closing.
    Truncate,
    /// Runs the request, then answers 200 with a body that is not JSON.
    Garbage,
    /// Never answers: holds the request until the client gives up (at most
    /// [`HANG_LIMIT`]), without running it.
    Hang,
}

// `kind` is a name on the wire: `"kind": 0` must be refused, not read as
// the first variant (`drop`), which serde's derived impl would do.
rdrunner_actors::string_tagged_serde!(Fault, "kind");

impl Fault {
    /// The kind's name as it appears in JSON and in `--fault`.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Drop => "drop",
            Fault::Delay { .. } => "delay",
            Fault::Status { .. } => "status",
            Fault::RetryAfter { .. } => "retryAfter",
            Fault::Truncate => "truncate",
            Fault::Garbage => "garbage",
            Fault::Hang => "hang",
        }
    }
}

/// One rule: `fault` hits a request of `route` with `probability`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultRule {
    pub route: RouteName,
    #[serde(flatten)]
    pub fault: Fault,
    /// In [0, 1]; the rules of one route may not add up to more than 1.
    pub probability: f64,
}

impl FaultRule {
    pub fn new(route: RouteName, fault: Fault, probability: f64) -> Self {
        FaultRule {
            route,
            fault,
            probability,
        }
    }
}

/// The faults in force and the seed of the draw (`PUT /api/v1/faults`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultPlan {
    /// Reseeds the draw; `None` (the field left out) keeps the current
    /// generator (at start: a random seed, reported by `GET /api/v1/faults`).
    #[serde(
        default,
        deserialize_with = "present_seed",
        skip_serializing_if = "Option::is_none"
    )]
    pub seed: Option<u64>,
    /// Required on the wire: a plan without `rules` is refused rather than
    /// read as "no rules", which would silently clear every rule.
    pub rules: Vec<FaultRule>,
}

/// `seed`, when given, is a number: `"seed": null` is refused, so that a
/// client that meant to reseed is not quietly left on the old generator.
fn present_seed<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match Option::<u64>::deserialize(d)? {
        Some(seed) => Ok(Some(seed)),
        None => Err(serde::de::Error::custom(
            "`seed` is null; give a number from 0 to 18446744073709551615, or leave `seed` out to keep the current generator",
        )),
    }
}

/// How many times one fault kind hit one route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InjectedCount {
    pub route: RouteName,
    pub kind: String,
    pub count: u64,
}

/// `GET /api/v1/faults`: the plan in force, its seed, and what it did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultStatus {
    /// The seed the draw was last seeded with (replays the same faults).
    pub seed: u64,
    pub rules: Vec<FaultRule>,
    /// Faults injected since start, per route and kind.
    pub injected: Vec<InjectedCount>,
    /// Requests received per route since start.
    pub requests: BTreeMap<RouteName, u64>,
}

/// Why a fault plan was refused; the text names the rule and what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("fault plan refused: {0}")]
pub struct FaultPlanError(pub String);

impl FaultPlan {
    /// Checks every rule: a runner API route, a probability in [0, 1] and
    /// at most 1 per route, a 5xx status.
    pub fn validate(&self) -> Result<(), FaultPlanError> {
        let mut per_route: BTreeMap<RouteName, f64> = BTreeMap::new();
        for (i, rule) in self.rules.iter().enumerate() {
            let n = i + 1;
            let route = ROUTES
                .iter()
                .find(|r| r.name == rule.route)
                .expect("every route name is in the table");
            if !route.path.starts_with(RUNNER_BASE) {
                return Err(FaultPlanError(format!(
                    "rule {n}: {:?} is not a runner API route; faults apply to startup, checkin, claim, reports and shutdown",
                    rule.route
                )));
            }
            if !(0.0..=1.0).contains(&rule.probability) || rule.probability.is_nan() {
                return Err(FaultPlanError(format!(
                    "rule {n}: probability {} is outside [0, 1]",
                    rule.probability
                )));
            }
            if let Fault::Status { status } = rule.fault {
                if !(500..600).contains(&status) {
                    return Err(FaultPlanError(format!(
                        "rule {n}: status {status} is not a 5xx; use retryAfter for 429"
                    )));
                }
            }
            let sum = per_route.entry(rule.route).or_default();
            *sum += rule.probability;
            if *sum > 1.0 + 1e-9 {
                return Err(FaultPlanError(format!(
                    "rule {n}: the probabilities of the {:?} rules add up to {sum:.3}, more than 1",
                    rule.route
                )));
            }
        }
        Ok(())
    }
}

/// Per-route faults, the seeded draw, and counts of requests and faults.
/// Cheap to clone; clones share everything.
#[derive(Debug, Clone)]
pub struct FaultTable {
    inner: Arc<Mutex<FaultTableInner>>,
}

#[derive(Debug)]
struct FaultTableInner {
    rules: Vec<FaultRule>,
    seed: u64,
    rng: StdRng,
    hits: BTreeMap<RouteName, u64>,
    injected: BTreeMap<(RouteName, &'static str), u64>,
}

impl Default for FaultTable {
    fn default() -> Self {
        FaultTable::new(rand::random())
    }
}

impl FaultTable {
    /// An empty table whose draw is seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        FaultTable {
            inner: Arc::new(Mutex::new(FaultTableInner {
                rules: Vec::new(),
                seed,
                rng: StdRng::seed_from_u64(seed),
                hits: BTreeMap::new(),
                injected: BTreeMap::new(),
            })),
        }
    }

    /// A table in force with `plan` (random seed when the plan has none).
    pub fn with_plan(plan: &FaultPlan) -> Result<Self, FaultPlanError> {
        let table = FaultTable::new(plan.seed.unwrap_or_else(rand::random));
        table.set(plan.clone())?;
        Ok(table)
    }

    fn lock(&self) -> MutexGuard<'_, FaultTableInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Called once per request before its handler; counts the hit and
    /// returns the fault to apply, if any.
    pub fn fault_for(&self, route: RouteName) -> Option<Fault> {
        let mut inner = self.lock();
        *inner.hits.entry(route).or_default() += 1;
        if !inner.rules.iter().any(|r| r.route == route) {
            return None;
        }
        let draw: f64 = inner.rng.gen();
        let mut upper = 0.0;
        let mut chosen = None;
        for rule in inner.rules.iter().filter(|r| r.route == route) {
            upper += rule.probability;
            if draw < upper {
                chosen = Some(rule.fault.clone());
                break;
            }
        }
        if let Some(f) = &chosen {
            *inner.injected.entry((route, f.kind())).or_default() += 1;
        }
        chosen
    }

    /// Replaces the rules (and reseeds when the plan has a seed).
    pub fn set(&self, plan: FaultPlan) -> Result<(), FaultPlanError> {
        plan.validate()?;
        let mut inner = self.lock();
        if let Some(seed) = plan.seed {
            inner.seed = seed;
            inner.rng = StdRng::seed_from_u64(seed);
        }
        inner.rules = plan.rules;
        Ok(())
    }

    /// Removes every rule; counts and the generator stay.
    pub fn clear(&self) {
        self.lock().rules.clear();
    }

    /// The seed the draw was last seeded with.
    pub fn seed(&self) -> u64 {
        self.lock().seed
    }

    /// Requests received per route since start.
    pub fn hits(&self) -> BTreeMap<RouteName, u64> {
        self.lock().hits.clone()
    }

    /// Faults injected into `route` since start, all kinds together.
    pub fn injected(&self, route: RouteName) -> u64 {
        self.lock()
            .injected
            .iter()
            .filter(|((r, _), _)| *r == route)
            .map(|(_, n)| n)
            .sum()
    }

    /// The plan in force, its seed and the counts.
    pub fn status(&self) -> FaultStatus {
        let inner = self.lock();
        FaultStatus {
            seed: inner.seed,
            rules: inner.rules.clone(),
            injected: inner
                .injected
                .iter()
                .map(|((route, kind), count)| InjectedCount {
                    route: *route,
                    kind: (*kind).to_owned(),
                    count: *count,
                })
                .collect(),
            requests: inner.hits.clone(),
        }
    }
}

/// Parses one `--fault` flag: `ROUTE:KIND[=VALUE]@PROBABILITY`, e.g.
/// `checkin:drop@0.1`, `reports:status=503@0.2`, `checkin:delay=2000@1`,
/// `claim:retryAfter=2@0.1`, `reports:truncate@0.05`, `checkin:hang@0.01`.
pub fn parse_rule(text: &str) -> Result<FaultRule, FaultPlanError> {
    let bad = |why: String| {
        FaultPlanError(format!(
            "`{text}`: {why}; the form is ROUTE:KIND[=VALUE]@PROBABILITY, e.g. reports:status=503@0.2"
        ))
    };
    let (head, probability) = text
        .rsplit_once('@')
        .ok_or_else(|| bad("no @PROBABILITY".into()))?;
    let probability: f64 = probability
        .parse()
        .map_err(|_| bad(format!("`{probability}` is not a probability")))?;
    let (route, kind) = head
        .split_once(':')
        .ok_or_else(|| bad("no ROUTE:".into()))?;
    let route: RouteName = serde_json::from_value(serde_json::Value::String(route.into()))
        .map_err(|_| bad(format!("unknown route `{route}`")))?;
    let (kind, value) = match kind.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (kind, None),
    };
    let number = |what: &str| -> Result<u64, FaultPlanError> {
        let v = value.ok_or_else(|| bad(format!("{kind} needs ={what}")))?;
        v.parse()
            .map_err(|_| bad(format!("`{v}` is not a number of {what}")))
    };
    let fault = match kind {
        "drop" => Fault::Drop,
        "delay" => Fault::Delay {
            ms: number("milliseconds")?,
        },
        "status" => Fault::Status {
            status: u16::try_from(number("an HTTP status")?)
                .map_err(|_| bad("the status is too large".into()))?,
        },
        "retryAfter" | "retry-after" => Fault::RetryAfter {
            seconds: number("seconds")?,
        },
        "truncate" => Fault::Truncate,
        "garbage" => Fault::Garbage,
        "hang" => Fault::Hang,
        other => {
            return Err(bad(format!(
                "unknown kind `{other}` (drop, delay, status, retryAfter, truncate, garbage, hang)"
            )))
        }
    };
    let rule = FaultRule::new(route, fault, probability);
    FaultPlan {
        seed: None,
        rules: vec![rule.clone()],
    }
    .validate()?;
    Ok(rule)
}

/// The connection's socket, kept per connection (`HttpServer::on_connect`)
/// so that `drop` and `truncate` can close it under actix's feet.
#[derive(Clone)]
pub(crate) struct ConnSocket(pub Rc<socket2::Socket>);

impl ConnSocket {
    /// A second handle on a plain TCP connection's socket; `None` for TLS
    /// (where `drop` and `truncate` end the answer by a body error instead).
    pub fn of(io: &dyn std::any::Any) -> Option<ConnSocket> {
        let tcp = io.downcast_ref::<actix_rt::net::TcpStream>()?;
        socket2::SockRef::from(tcp)
            .try_clone()
            .ok()
            .map(|s| ConnSocket(Rc::new(s)))
    }

    fn kill(&self) {
        // RST rather than FIN where the kernel lets us, as a failing network would.
        let _ = self.0.set_linger(Some(Duration::ZERO));
        let _ = self.0.shutdown(std::net::Shutdown::Both);
    }
}

#[derive(Debug)]
struct Injected(&'static str);

impl std::fmt::Display for Injected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "fault injected: {}", self.0)
    }
}

impl std::error::Error for Injected {}

fn refusal(status: u16, code: ErrorCode, message: &str) -> HttpResponse {
    HttpResponse::build(StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE))
        .json(serde_json::json!({"error": code.as_str(), "message": message}))
}

/// Runs `req` through `srv` with `fault` applied.
pub(crate) fn apply<S, B>(
    fault: Fault,
    req: ServiceRequest,
    srv: &S,
) -> LocalBoxFuture<'static, Result<ServiceResponse<BoxBody>, actix_web::Error>>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
    S::Future: 'static,
    B: MessageBody + 'static,
{
    let socket = req.conn_data::<ConnSocket>().cloned();
    match fault {
        Fault::Status { status } => {
            let (req, _) = req.into_parts();
            let resp = refusal(status, ErrorCode::FaultInjected, "injected server error");
            Box::pin(async move { Ok(ServiceResponse::new(req, resp)) })
        }
        Fault::RetryAfter { seconds } => {
            let (req, _) = req.into_parts();
            let mut resp = refusal(429, ErrorCode::TooManyRequests, "injected: back off");
            resp.headers_mut().insert(
                actix_web::http::header::RETRY_AFTER,
                actix_web::http::header::HeaderValue::from(seconds),
            );
            Box::pin(async move { Ok(ServiceResponse::new(req, resp)) })
        }
        Fault::Hang => {
            let (req, _) = req.into_parts();
            Box::pin(async move {
                actix_rt::time::sleep(HANG_LIMIT).await;
                let resp = refusal(503, ErrorCode::FaultInjected, "injected hang ended");
                Ok(ServiceResponse::new(req, resp))
            })
        }
        Fault::Delay { ms } => {
            let fut = srv.call(req);
            Box::pin(async move {
                actix_rt::time::sleep(Duration::from_millis(ms)).await;
                Ok(fut.await?.map_into_boxed_body())
            })
        }
        Fault::Drop => {
            let fut = srv.call(req);
            Box::pin(async move {
                let res = fut.await?;
                if let Some(s) = &socket {
                    s.kill();
                }
                // Whatever is left of the connection gets no answer: the
                // body fails before its first byte.
                let (req, _) = res.into_parts();
                let body = futures_util::stream::once(async {
                    Err::<actix_web::web::Bytes, _>(Injected("drop"))
                });
                Ok(ServiceResponse::new(
                    req,
                    HttpResponse::Ok().streaming(body),
                ))
            })
        }
        Fault::Truncate => {
            let fut = srv.call(req);
            Box::pin(async move {
                let res = fut.await?;
                let (req, resp) = res.into_parts();
                let status = resp.status();
                let headers = resp.headers().clone();
                let bytes = actix_web::body::to_bytes(resp.into_body())
                    .await
                    .map_err(|e| {
                        actix_web::error::ErrorInternalServerError(e.into().to_string())
                    })?;
                let full = bytes.len() as u64;
                let half = bytes.slice(..bytes.len() / 2);
                let body = futures_util::stream::unfold(0u8, move |step| {
                    let half = half.clone();
                    let socket = socket.clone();
                    async move {
                        match step {
                            0 => Some((Ok::<_, Injected>(half), 1)),
                            1 => {
                                // Let the half go out before the connection dies.
                                actix_rt::time::sleep(Duration::from_millis(30)).await;
                                if let Some(s) = &socket {
                                    s.kill();
                                }
                                Some((Err(Injected("truncate")), 2))
                            }
                            _ => None,
                        }
                    }
                });
                let mut builder = HttpResponse::build(status);
                for (name, value) in headers.iter() {
                    if name != actix_web::http::header::CONTENT_LENGTH {
                        builder.insert_header((name.clone(), value.clone()));
                    }
                }
                Ok(ServiceResponse::new(
                    req,
                    builder.no_chunking(full).streaming(body),
                ))
            })
        }
        Fault::Garbage => {
            let fut = srv.call(req);
            Box::pin(async move {
                let res = fut.await?;
                let (req, _) = res.into_parts();
                let resp = HttpResponse::Ok()
                    .content_type("application/json")
                    .body("<html><body>502 Bad Gateway (injected garbage, not JSON)</body></html>\n\u{0}\u{1}{\"acks\":");
                Ok(ServiceResponse::new(req, resp))
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(seed: u64, rules: Vec<FaultRule>) -> FaultPlan {
        FaultPlan {
            seed: Some(seed),
            rules,
        }
    }

    fn draws(table: &FaultTable, route: RouteName, n: usize) -> Vec<Option<Fault>> {
        (0..n).map(|_| table.fault_for(route)).collect()
    }

    #[test]
    fn the_same_seed_draws_the_same_faults() {
        let p = plan(
            7,
            vec![
                FaultRule::new(RouteName::Checkin, Fault::Drop, 0.2),
                FaultRule::new(RouteName::Checkin, Fault::Status { status: 503 }, 0.2),
            ],
        );
        let a = FaultTable::with_plan(&p).unwrap();
        let b = FaultTable::with_plan(&p).unwrap();
        let (da, db) = (
            draws(&a, RouteName::Checkin, 200),
            draws(&b, RouteName::Checkin, 200),
        );
        assert_eq!(da, db);
        let c = FaultTable::with_plan(&plan(8, p.rules.clone())).unwrap();
        assert_ne!(da, draws(&c, RouteName::Checkin, 200));
        assert_eq!(a.seed(), 7);
    }

    #[test]
    fn each_rule_hits_about_its_probability_and_only_its_route() {
        let t = FaultTable::with_plan(&plan(
            42,
            vec![
                FaultRule::new(RouteName::Reports, Fault::Garbage, 0.1),
                FaultRule::new(RouteName::Reports, Fault::Truncate, 0.3),
            ],
        ))
        .unwrap();
        let d = draws(&t, RouteName::Reports, 10_000);
        let garbage = d.iter().filter(|f| **f == Some(Fault::Garbage)).count();
        let truncate = d.iter().filter(|f| **f == Some(Fault::Truncate)).count();
        assert!((800..1200).contains(&garbage), "{garbage}");
        assert!((2700..3300).contains(&truncate), "{truncate}");
        assert!(draws(&t, RouteName::Checkin, 1000)
            .iter()
            .all(Option::is_none));
        assert_eq!(t.injected(RouteName::Reports), (garbage + truncate) as u64);
        assert_eq!(t.hits()[&RouteName::Reports], 10_000);
        let status = t.status();
        assert_eq!(status.seed, 42);
        assert_eq!(status.injected.len(), 2);
    }

    #[test]
    fn probability_one_always_and_zero_never_hits() {
        let t = FaultTable::with_plan(&plan(
            1,
            vec![
                FaultRule::new(RouteName::Claim, Fault::Hang, 1.0),
                FaultRule::new(RouteName::Startup, Fault::Drop, 0.0),
            ],
        ))
        .unwrap();
        assert!(draws(&t, RouteName::Claim, 100)
            .iter()
            .all(|f| *f == Some(Fault::Hang)));
        assert!(draws(&t, RouteName::Startup, 100)
            .iter()
            .all(Option::is_none));
        t.clear();
        assert!(draws(&t, RouteName::Claim, 100).iter().all(Option::is_none));
    }

    #[test]
    fn bad_plans_are_refused_with_the_rule_named() {
        let refuse = |rules: Vec<FaultRule>| plan(1, rules).validate().unwrap_err().0;
        assert!(refuse(vec![FaultRule::new(
            RouteName::ListRunners,
            Fault::Drop,
            0.5
        )])
        .contains("not a runner API route"));
        assert!(
            refuse(vec![FaultRule::new(RouteName::Checkin, Fault::Drop, 1.5)])
                .contains("outside [0, 1]")
        );
        assert!(refuse(vec![FaultRule::new(
            RouteName::Checkin,
            Fault::Status { status: 404 },
            0.5
        )])
        .contains("not a 5xx"));
        assert!(refuse(vec![
            FaultRule::new(RouteName::Checkin, Fault::Drop, 0.6),
            FaultRule::new(RouteName::Checkin, Fault::Garbage, 0.6),
        ])
        .contains("rule 2"));
    }

    #[test]
    fn flags_parse_into_rules() {
        assert_eq!(
            parse_rule("reports:status=503@0.2").unwrap(),
            FaultRule::new(RouteName::Reports, Fault::Status { status: 503 }, 0.2)
        );
        assert_eq!(
            parse_rule("checkin:delay=2000@1").unwrap(),
            FaultRule::new(RouteName::Checkin, Fault::Delay { ms: 2000 }, 1.0)
        );
        assert_eq!(
            parse_rule("claim:retryAfter=2@0.1").unwrap().fault,
            Fault::RetryAfter { seconds: 2 }
        );
        for kind in ["drop", "truncate", "garbage", "hang"] {
            assert_eq!(
                parse_rule(&format!("startup:{kind}@0.5"))
                    .unwrap()
                    .fault
                    .kind(),
                kind
            );
        }
        assert!(parse_rule("checkin:drop")
            .unwrap_err()
            .0
            .contains("@PROBABILITY"));
        assert!(parse_rule("nowhere:drop@1")
            .unwrap_err()
            .0
            .contains("unknown route"));
        assert!(parse_rule("checkin:melt@1")
            .unwrap_err()
            .0
            .contains("unknown kind"));
        assert!(parse_rule("checkin:delay@1")
            .unwrap_err()
            .0
            .contains("needs"));
    }

    #[test]
    fn rules_round_trip_through_json() {
        let p = plan(
            3,
            vec![FaultRule::new(
                RouteName::Checkin,
                Fault::Delay { ms: 5 },
                0.5,
            )],
        );
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"seed": 3, "rules": [{"route": "checkin", "kind": "delay", "ms": 5, "probability": 0.5}]})
        );
        assert_eq!(serde_json::from_value::<FaultPlan>(json).unwrap(), p);
    }
}
