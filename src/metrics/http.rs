//! The metrics endpoint's HTTP/1.1 as plain values: the request head read
//! from a scraper (hostile until parsed: bounded, GET only), the route it
//! asks for, and the response written back. One request per connection;
//! the connection is closed after the answer.

use std::fmt::Write as _;

/// The longest request head taken (request line and headers); a longer one
/// is answered 431.
pub const MAX_HEAD: usize = 8 * 1024;

/// What the endpoint serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Metrics,
    Health,
    Ready,
}

/// A request head that asks for something the endpoint answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Get(Route),
    /// A path the endpoint does not serve (404).
    NotFound,
    /// A method other than GET on a served path (405).
    MethodNotAllowed,
}

/// Why a request head was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("request head longer than {MAX_HEAD} bytes")]
    TooLarge,
    #[error("malformed request: {0}")]
    Malformed(&'static str),
}

/// Where the head ends (the index after its blank line), if `buf` holds it
/// whole.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// Parses a complete request head (up to and including its blank line).
pub fn parse(head: &[u8]) -> Result<Request, RequestError> {
    if head.len() > MAX_HEAD {
        return Err(RequestError::TooLarge);
    }
    let text = std::str::from_utf8(head).map_err(|_| RequestError::Malformed("not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let line = lines.next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(RequestError::Malformed("request line"));
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(RequestError::Malformed("method"));
    }
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(RequestError::Malformed("version"));
    }
    if !target.starts_with('/') || target.bytes().any(|b| b.is_ascii_control()) {
        return Err(RequestError::Malformed("target"));
    }
    for header in lines.take_while(|l| !l.is_empty()) {
        let Some((name, _)) = header.split_once(':') else {
            return Err(RequestError::Malformed("header"));
        };
        if name.is_empty() || name.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(RequestError::Malformed("header name"));
        }
    }
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    let route = match path {
        "/metrics" => Route::Metrics,
        "/health" => Route::Health,
        "/ready" => Route::Ready,
        _ => return Ok(Request::NotFound),
    };
    if method == "GET" {
        Ok(Request::Get(route))
    } else {
        Ok(Request::MethodNotAllowed)
    }
}

/// A response to write back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl Response {
    pub fn new(status: u16, content_type: &'static str, body: String) -> Self {
        Response {
            status,
            content_type,
            body,
        }
    }

    pub fn text(status: u16, body: &str) -> Self {
        Response::new(status, "text/plain; charset=utf-8", format!("{body}\n"))
    }

    pub fn json(status: u16, body: &serde_json::Value) -> Self {
        Response::new(status, "application/json", format!("{body}\n"))
    }

    /// The answer to a refused request head.
    pub fn refusal(e: &RequestError) -> Self {
        match e {
            RequestError::TooLarge => Response::text(431, &e.to_string()),
            RequestError::Malformed(_) => Response::text(400, &e.to_string()),
        }
    }

    /// The bytes on the wire, `Connection: close` always.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut head = String::with_capacity(160);
        let _ = write!(
            head,
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len()
        );
        if self.status == 405 {
            head.push_str("Allow: GET\r\n");
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(self.body.as_bytes());
        bytes
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_on_each_served_path_is_routed() {
        let req = |t: &str| parse(t.as_bytes());
        assert_eq!(
            req("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Ok(Request::Get(Route::Metrics))
        );
        assert_eq!(
            req("GET /health HTTP/1.0\r\n\r\n"),
            Ok(Request::Get(Route::Health))
        );
        assert_eq!(
            req("GET /ready?verbose=1 HTTP/1.1\r\nAccept: */*\r\n\r\n"),
            Ok(Request::Get(Route::Ready))
        );
    }

    #[test]
    fn other_paths_are_404_and_other_methods_405() {
        let req = |t: &str| parse(t.as_bytes());
        assert_eq!(req("GET / HTTP/1.1\r\n\r\n"), Ok(Request::NotFound));
        assert_eq!(
            req("GET /metrics/../etc HTTP/1.1\r\n\r\n"),
            Ok(Request::NotFound)
        );
        assert_eq!(
            req("POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n"),
            Ok(Request::MethodNotAllowed)
        );
        assert_eq!(
            req("HEAD /ready HTTP/1.1\r\n\r\n"),
            Ok(Request::MethodNotAllowed)
        );
        let r = Response::text(405, "only GET").to_bytes();
        let r = String::from_utf8(r).unwrap();
        assert!(r.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"), "{r}");
        assert!(r.contains("\r\nAllow: GET\r\n"), "{r}");
    }

    #[test]
    fn hostile_heads_are_refused() {
        let bad = [
            "GET /metrics\r\n\r\n",
            "GET  /metrics HTTP/1.1\r\n\r\n",
            "get /metrics HTTP/1.1\r\n\r\n",
            "GET /metrics HTTP/2\r\n\r\n",
            "GET metrics HTTP/1.1\r\n\r\n",
            "GET /met\x01rics HTTP/1.1\r\n\r\n",
            "GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n",
            "GET /metrics HTTP/1.1\r\nBad Name: x\r\n\r\n",
            "G\u{e9}T /metrics HTTP/1.1\r\n\r\n",
        ];
        for b in bad {
            assert!(
                matches!(parse(b.as_bytes()), Err(RequestError::Malformed(_))),
                "{b:?} was taken"
            );
        }
        assert!(matches!(
            parse(&[0xff, 0xfe, b'\r', b'\n', b'\r', b'\n']),
            Err(RequestError::Malformed(_))
        ));
        let long = format!(
            "GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n",
            "a".repeat(MAX_HEAD)
        );
        assert_eq!(parse(long.as_bytes()), Err(RequestError::TooLarge));
        assert_eq!(
            Response::refusal(&RequestError::TooLarge).status,
            431,
            "too large is 431"
        );
    }

    #[test]
    fn the_head_ends_at_the_first_blank_line() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nbody"), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: x\r\n"), None);
    }

    #[test]
    fn responses_carry_their_length_and_close() {
        let r = Response::json(503, &serde_json::json!({"ready": false}));
        let text = String::from_utf8(r.to_bytes()).unwrap();
        assert!(text.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(text.contains("Content-Length: 16\r\n"), "{text}");
        assert!(text.contains("Connection: close\r\n"));
        assert!(text.ends_with("\r\n\r\n{\"ready\":false}\n"));
    }
}
