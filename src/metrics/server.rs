//! The metrics endpoint's listener: bound when the runner is assembled (so
//! a bad or busy address stops the start with its name), served once the
//! runtime runs, on an actix Arbiter (thread) of its own: under load the
//! System's thread is busy with the operations, and a liveness probe that
//! waits on it could get the runner killed. Every connection gets
//! one bounded task: the head must arrive within [`READ_TIMEOUT`] and fit
//! in [`MAX_HEAD`], at most [`MAX_CONNECTIONS`] are answered at once (more
//! are closed at once), and the answer is written within [`WRITE_TIMEOUT`].
//! A scrape only takes a snapshot of the counters (a few short locks), so
//! it never holds up a check-in or an operation.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rdrunner_actors::{RuntimeHandle, RuntimeStats};
use slog::{debug, info, warn, Logger};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::exposition::{render, CONTENT_TYPE};
use super::http::{head_end, parse, Request, RequestError, Response, Route, MAX_HEAD};
use super::settings::MetricsSettings;

/// Time a scraper has to send its whole request head.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a scraper has to take the answer.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections answered at the same time.
pub const MAX_CONNECTIONS: usize = 16;
/// After refusing a request: how long, and how much, of what the client
/// still sends is read before the connection is closed.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);
const DRAIN_MAX: usize = 64 * 1024;

/// Why the endpoint could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot listen on metrics.listen {addr}: {source}; choose a free address and port, or leave metrics.listen empty")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot serve metrics on {addr}: {source}")]
    Serve {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A bound, not yet serving, metrics endpoint.
#[derive(Debug)]
pub struct MetricsEndpoint {
    listener: std::net::TcpListener,
    addr: SocketAddr,
}

impl MetricsEndpoint {
    /// Binds `settings.listen`; `None` when the endpoint is off.
    pub fn bind(settings: &MetricsSettings) -> Result<Option<Self>, MetricsError> {
        let Some(addr) = settings.listen else {
            return Ok(None);
        };
        let bind = |addr| -> std::io::Result<std::net::TcpListener> {
            let l = std::net::TcpListener::bind(addr)?;
            l.set_nonblocking(true)?;
            Ok(l)
        };
        let listener = bind(addr).map_err(|source| MetricsError::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| MetricsError::Bind { addr, source })?;
        Ok(Some(MetricsEndpoint { listener, addr }))
    }

    /// The address bound (the port chosen when `listen` gave 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves `handle`'s figures on a thread of its own until the actix
    /// System stops. Call inside the System.
    pub fn serve(
        self,
        handle: RuntimeHandle,
        version: &str,
        log: Logger,
    ) -> Result<(), MetricsError> {
        let addr = self.addr;
        let std_listener = self.listener;
        let version = Arc::<str>::from(version);
        let arbiter = actix_rt::Arbiter::new();
        let spawned = arbiter.spawn(async move {
            match TcpListener::from_std(std_listener) {
                Ok(listener) => {
                    info!(log, "metrics endpoint listening"; "addr" => %addr,
                        "paths" => "/metrics /health /ready");
                    accept(listener, handle, version, log).await;
                }
                Err(e) => {
                    slog::error!(log, "cannot serve metrics"; "addr" => %addr, "error" => %e);
                }
            }
        });
        if spawned {
            Ok(())
        } else {
            Err(MetricsError::Serve {
                addr,
                source: std::io::Error::other("the endpoint's thread did not start"),
            })
        }
    }
}

async fn accept(listener: TcpListener, handle: RuntimeHandle, version: Arc<str>, log: Logger) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors and the like: wait instead of spinning.
                warn!(log, "metrics endpoint: accept failed"; "error" => %e);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            debug!(log, "metrics endpoint: too many connections; closed"; "peer" => %peer);
            continue;
        };
        let (handle, version, log) = (handle.clone(), version.clone(), log.clone());
        actix_rt::spawn(async move {
            answer(stream, &handle, &version, &log).await;
            drop(slot);
        });
    }
}

/// Reads one request head, answers it and closes the connection.
async fn answer(mut stream: TcpStream, handle: &RuntimeHandle, version: &str, log: &Logger) {
    let (response, refused) = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await
    {
        Err(_) => (
            Response::text(408, "the request head did not arrive in time"),
            true,
        ),
        Ok(Err(Failure::Io)) => return,
        Ok(Err(Failure::Refused(e))) => (Response::refusal(&e), true),
        Ok(Ok(request)) => (respond(request, handle, version), false),
    };
    let write = async {
        stream.write_all(&response.to_bytes()).await?;
        stream.shutdown().await
    };
    match tokio::time::timeout(WRITE_TIMEOUT, write).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => debug!(log, "metrics endpoint: answer not delivered"; "error" => %e),
        Err(_) => debug!(log, "metrics endpoint: answer not taken in time"),
    }
    if refused {
        // Closing with unread bytes would reset the connection and lose the
        // answer: read what the client still sends, a little and briefly.
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, drain(&mut stream)).await;
    }
}

/// Reads and drops at most [`DRAIN_MAX`] bytes, until the client closes.
async fn drain(stream: &mut TcpStream) {
    let mut chunk = [0u8; 1024];
    let mut total = 0;
    while total < DRAIN_MAX {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => total += n,
        }
    }
}

enum Failure {
    /// The connection failed or closed early: nothing to answer.
    Io,
    Refused(RequestError),
}

async fn read_head(stream: &mut TcpStream) -> Result<Request, Failure> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await.map_err(|_| Failure::Io)?;
        if n == 0 {
            return Err(Failure::Io);
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = head_end(&buf) {
            return parse(&buf[..end]).map_err(Failure::Refused);
        }
        if buf.len() > MAX_HEAD {
            return Err(Failure::Refused(RequestError::TooLarge));
        }
    }
}

/// The answer to a parsed request, from the runtime's figures now.
pub(crate) fn respond(request: Request, handle: &RuntimeHandle, version: &str) -> Response {
    match request {
        Request::NotFound => Response::text(404, "not found; try /metrics, /health or /ready"),
        Request::MethodNotAllowed => Response::text(405, "only GET is served"),
        Request::Get(route) => answer_route(route, handle.stats(), version),
    }
}

fn answer_route(route: Route, stats: RuntimeStats, version: &str) -> Response {
    match route {
        Route::Metrics => match render(stats, version) {
            Ok(text) => Response::new(200, CONTENT_TYPE, text),
            Err(_) => Response::text(500, "the metrics could not be written"),
        },
        Route::Health => {
            let l = rdrunner_actors::liveness(&stats);
            let status = if l.alive { 200 } else { 503 };
            Response::json(
                status,
                &serde_json::json!({ "alive": l.alive, "reason": l.reason }),
            )
        }
        Route::Ready => {
            let r = rdrunner_actors::readiness(&stats);
            let status = if r.ready { 200 } else { 503 };
            Response::json(
                status,
                &serde_json::json!({ "ready": r.ready, "reason": r.reason }),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_and_health_answer_503_with_the_reason() {
        let mut s = RuntimeStats {
            checkin_interval: Duration::from_secs(5),
            last_checkin_success_age: Some(Duration::from_secs(41)),
            checkin_error: Some("checkin: connection refused".into()),
            ..RuntimeStats::default()
        };
        let r = answer_route(Route::Ready, s.clone(), "0");
        assert_eq!(r.status, 503);
        assert_eq!(
            r.body,
            "{\"ready\":false,\"reason\":\"last successful check-in 41 s ago: checkin: connection refused\"}\n"
        );
        let h = answer_route(Route::Health, s.clone(), "0");
        assert_eq!(h.status, 503, "no Poller running");
        s.children_running.insert("poller".into(), 1);
        s.last_checkin_success_age = Some(Duration::from_secs(1));
        assert_eq!(answer_route(Route::Health, s.clone(), "0").status, 200);
        assert_eq!(answer_route(Route::Ready, s.clone(), "0").status, 200);
        let m = answer_route(Route::Metrics, s, "0");
        assert_eq!((m.status, m.content_type), (200, CONTENT_TYPE));
    }

    #[test]
    fn a_busy_address_is_refused_with_its_name() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let err = MetricsEndpoint::bind(&MetricsSettings { listen: Some(addr) }).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("metrics.listen") && text.contains(&addr.to_string()),
            "{text}"
        );
        assert!(MetricsEndpoint::bind(&MetricsSettings::default())
            .unwrap()
            .is_none());
    }
}
