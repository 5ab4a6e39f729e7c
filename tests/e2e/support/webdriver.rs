//! A small W3C WebDriver client on awc (the HTTP client the runner already
//! uses), driving Debian's `chromium` through `chromedriver`, headless. It
//! covers what the page's test needs: navigate, find, click, type, read
//! text and properties, run a script, take a screenshot. Every wait is
//! bounded.
//!
//! Why not a WebDriver crate: the dozen commands the test uses are plain
//! JSON over HTTP, and awc is already built for the runner, so this adds
//! no crate to the lock file. fantoccini, the usual choice, is built on
//! hyper with a TLS connector of its own (hyper-tls and openssl by
//! default): a second HTTP and TLS stack for what fits in this file.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The W3C key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// One WebDriver command may take this long (a navigation included).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// A failed WebDriver command: its `error` code and message.
#[derive(Debug, Clone)]
pub struct WdError {
    pub error: String,
    pub message: String,
}

impl std::fmt::Display for WdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.error, self.message)
    }
}

/// An element found on the page.
#[derive(Debug, Clone)]
pub struct Element(String);

/// A headless chromium session; the driver is killed when dropped.
pub struct Browser {
    http: awc::Client,
    base: String,
    session: String,
    driver: Child,
    /// Chromium's profile, removed with the browser.
    profile: tempfile::TempDir,
}

/// Why the browser cannot run here, if it cannot: the packages missing.
pub fn missing() -> Option<String> {
    let absent: Vec<&str> = [CHROMIUM, CHROMEDRIVER]
        .into_iter()
        .filter(|p| !Path::new(p).is_file())
        .collect();
    (!absent.is_empty()).then(|| {
        format!(
            "{} not found: install Debian's chromium and chromium-driver \
             (apt-get install chromium chromium-driver; scripts/test.sh does)",
            absent.join(" and ")
        )
    })
}

impl Browser {
    /// Starts chromedriver on a free loopback port and a headless chromium
    /// session with a 1280x800 window that saves downloads in `downloads`.
    pub async fn start(downloads: &Path) -> Result<Browser, String> {
        if let Some(why) = missing() {
            return Err(why);
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port for chromedriver: {e}"))?
            .port();
        let log = downloads
            .parent()
            .unwrap_or(downloads)
            .join("chromedriver.log");
        // A process group of its own, with the browser it starts: a test
        // that fails mid-way ends them all (see `Drop`).
        let driver = Command::new(CHROMEDRIVER)
            .process_group(0)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {CHROMEDRIVER}: {e}"))?;
        let profile = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut browser = Browser {
            http: awc::Client::builder().timeout(COMMAND_TIMEOUT).finish(),
            base: format!("http://127.0.0.1:{port}"),
            session: String::new(),
            driver,
            profile,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = browser.raw("GET", "/status", None).await;
            if matches!(&ready, Ok(v) if v["ready"] == json!(true)) {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "chromedriver did not get ready within 20 s ({ready:?}); its log: {}",
                    log.display()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "timeouts": {"script": 10_000, "pageLoad": 20_000, "implicit": 0},
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu",
                    "--disable-dev-shm-usage", "--window-size=1280,800",
                    "--no-first-run", "--no-default-browser-check",
                    "--force-device-scale-factor=1", "--hide-scrollbars",
                    format!("--user-data-dir={}", browser.profile.path().display()),
                ],
                "prefs": {
                    "download.default_directory": downloads.display().to_string(),
                    "download.prompt_for_download": false,
                    "download.directory_upgrade": true,
                    "safebrowsing.enabled": false,
                },
            },
        }}});
        let created = browser
            .raw("POST", "/session", Some(caps))
            .await
            .map_err(|e| {
                format!(
                    "chromium did not start: {e} (chromedriver log: {})",
                    log.display()
                )
            })?;
        browser.session = created["sessionId"]
            .as_str()
            .ok_or_else(|| format!("no session id in {created}"))?
            .to_owned();
        // Headless chromium saves downloads only when told where (the
        // preference alone is not always honoured).
        let _ = browser
            .cmd(
                "POST",
                "/goog/cdp/execute",
                json!({"cmd": "Page.setDownloadBehavior",
                       "params": {"behavior": "allow", "downloadPath": downloads.display().to_string()}}),
            )
            .await;
        browser
            .set_viewport(1280, 800)
            .await
            .map_err(|e| e.to_string())?;
        Ok(browser)
    }

    async fn raw(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, WdError> {
        let url = format!("{}{path}", self.base);
        let req = match method {
            "GET" => self.http.get(&url),
            "DELETE" => self.http.delete(&url),
            _ => self.http.post(&url),
        };
        let sent = match body {
            Some(b) => req.send_json(&b).await,
            None => req.send().await,
        };
        let mut resp = sent.map_err(|e| WdError {
            error: "transport".into(),
            message: format!("{method} {url}: {e}"),
        })?;
        let bytes = resp.body().limit(64 << 20).await.map_err(|e| WdError {
            error: "transport".into(),
            message: format!("{method} {url}: reading the answer: {e}"),
        })?;
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| WdError {
            error: "protocol".into(),
            message: format!("{method} {url}: {e}"),
        })?;
        let value = v.get("value").cloned().unwrap_or(Value::Null);
        if let Some(error) = value.get("error").and_then(Value::as_str) {
            return Err(WdError {
                error: error.to_owned(),
                message: value["message"].as_str().unwrap_or_default().to_owned(),
            });
        }
        Ok(value)
    }

    /// A command of this session.
    pub async fn cmd(&self, method: &str, path: &str, body: Value) -> Result<Value, WdError> {
        let path = format!("/session/{}{path}", self.session);
        let body = (method == "POST").then_some(body);
        self.raw(method, &path, body).await
    }

    /// Sizes the window so that the page itself (what a screenshot
    /// shows) is `width` x `height`: the window's frame is added.
    pub async fn set_viewport(&self, width: u32, height: u32) -> Result<(), WdError> {
        self.set_window(width, height).await?;
        let inner = self
            .execute("return [window.innerWidth, window.innerHeight]", json!([]))
            .await?;
        let frame = |i: usize, want: u32| {
            let got = inner[i].as_u64().map_or(want, |v| v as u32);
            want + want.saturating_sub(got)
        };
        self.set_window(frame(0, width), frame(1, height)).await
    }

    pub async fn set_window(&self, width: u32, height: u32) -> Result<(), WdError> {
        self.cmd(
            "POST",
            "/window/rect",
            json!({"width": width, "height": height}),
        )
        .await
        .map(drop)
    }

    pub async fn goto(&self, url: &str) -> Result<(), WdError> {
        self.cmd("POST", "/url", json!({ "url": url }))
            .await
            .map(drop)
    }

    pub async fn url(&self) -> Result<String, WdError> {
        let v = self.cmd("GET", "/url", Value::Null).await?;
        Ok(v.as_str().unwrap_or_default().to_owned())
    }

    pub async fn find(&self, css: &str) -> Result<Element, WdError> {
        let v = self
            .cmd(
                "POST",
                "/element",
                json!({"using": "css selector", "value": css}),
            )
            .await?;
        Ok(Element(v[ELEMENT].as_str().unwrap_or_default().to_owned()))
    }

    pub async fn find_all(&self, css: &str) -> Result<Vec<Element>, WdError> {
        let v = self
            .cmd(
                "POST",
                "/elements",
                json!({"using": "css selector", "value": css}),
            )
            .await?;
        Ok(v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e[ELEMENT].as_str().map(|s| Element(s.to_owned())))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The first element matching `css`, once there is one, within `timeout`.
    pub async fn wait_for(&self, css: &str, timeout: Duration) -> Element {
        let start = Instant::now();
        loop {
            match self.find(css).await {
                Ok(e) => return e,
                Err(e) if start.elapsed() > timeout => {
                    panic!(
                        "no `{css}` within {timeout:?} ({e}); the page says:\n{}",
                        self.body_text().await
                    )
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// The text of the first `css` once `pred` holds for it, within `timeout`.
    pub async fn wait_text(
        &self,
        css: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let start = Instant::now();
        let mut last = String::new();
        loop {
            if let Ok(e) = self.find(css).await {
                if let Ok(t) = self.text(&e).await {
                    if pred(&t) {
                        return t;
                    }
                    last = t;
                }
            }
            assert!(
                start.elapsed() < timeout,
                "`{css}` did not show what was awaited within {timeout:?}; last text: {last:?}; the page says:\n{}",
                self.body_text().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn click(&self, e: &Element) -> Result<(), WdError> {
        self.cmd("POST", &format!("/element/{}/click", e.0), json!({}))
            .await
            .map(drop)
    }

    /// Clears the field, then types `text` into it.
    pub async fn fill(&self, e: &Element, text: &str) -> Result<(), WdError> {
        self.cmd("POST", &format!("/element/{}/clear", e.0), json!({}))
            .await?;
        self.cmd(
            "POST",
            &format!("/element/{}/value", e.0),
            json!({ "text": text }),
        )
        .await
        .map(drop)
    }

    /// Types `text` into the element as it is (`\u{E007}` is Enter).
    pub async fn keys(&self, e: &Element, text: &str) -> Result<(), WdError> {
        self.cmd(
            "POST",
            &format!("/element/{}/value", e.0),
            json!({ "text": text }),
        )
        .await
        .map(drop)
    }

    pub async fn text(&self, e: &Element) -> Result<String, WdError> {
        let v = self
            .cmd("GET", &format!("/element/{}/text", e.0), Value::Null)
            .await?;
        Ok(v.as_str().unwrap_or_default().to_owned())
    }

    pub async fn property(&self, e: &Element, name: &str) -> Result<Value, WdError> {
        self.cmd(
            "GET",
            &format!("/element/{}/property/{name}", e.0),
            Value::Null,
        )
        .await
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page.
    pub async fn execute(&self, script: &str, args: Value) -> Result<Value, WdError> {
        self.cmd(
            "POST",
            "/execute/sync",
            json!({"script": script, "args": args}),
        )
        .await
    }

    /// The text of an open alert, if one is open.
    pub async fn alert_text(&self) -> Option<String> {
        self.cmd("GET", "/alert/text", Value::Null)
            .await
            .ok()
            .map(|v| v.as_str().unwrap_or_default().to_owned())
    }

    /// The viewport as PNG bytes.
    pub async fn screenshot(&self) -> Result<Vec<u8>, WdError> {
        use base64::Engine as _;
        let v = self.cmd("GET", "/screenshot", Value::Null).await?;
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or_default())
            .map_err(|e| WdError {
                error: "protocol".into(),
                message: e.to_string(),
            })
    }

    /// Where the page is and what it shows as text (for failure messages).
    pub async fn body_text(&self) -> String {
        let url = self.url().await.unwrap_or_default();
        match self.find("body").await {
            Ok(b) => format!("({url})\n{}", self.text(&b).await.unwrap_or_default()),
            Err(e) => format!("({url}) no body: {e}"),
        }
    }

    /// Ends the session (chromium exits), then the driver (`Drop`).
    pub async fn quit(self) {
        let _ = self.cmd("DELETE", "", Value::Null).await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The driver and every chromium process it started: a killed
        // driver alone would leave the browser running.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.driver.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// The file chromium finished downloading into `dir` (no `.crdownload`
/// left), within `timeout`.
pub async fn downloaded(dir: &Path, timeout: Duration) -> PathBuf {
    let start = Instant::now();
    loop {
        let files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        let partial = files
            .iter()
            .any(|p| p.extension().is_some_and(|x| x == "crdownload"));
        if let (false, Some(done)) = (partial, files.first()) {
            return done.clone();
        }
        assert!(
            start.elapsed() < timeout,
            "no finished download in {} within {timeout:?}: {files:?}",
            dir.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
