//! The Runner Management page in a real browser (headless chromium over
//! WebDriver), through the flow the documentation describes: sign in,
//! paste a project's nodes, create a runner, download its credentials,
//! start the real `rdrunner` binary with them, see it healthy, assign a
//! project with a filter, run a job and watch its output arrive, abort a
//! long one, regenerate the credentials (the running runner is refused),
//! delete the runner, sign out. A runner name and an output line that are
//! HTML must show as text. With `RDRUNNER_SCREENSHOTS=1` each main page is
//! saved at 1280x800 into `docs/images/`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rdrunner_harness::sshd::TestSshd;
use rdrunner_harness::{Cadence, CreateRunner, Harness, HarnessConfig};
use serde_json::{json, Value};

use crate::support::webdriver::{self, Browser};
use crate::support::{runner_toml, Runner};

const PROJECT: &str = "shop";
const HOSTILE_NAME: &str = "<img src=x onerror=alert(1)>";
const HOSTILE_LINE: &str = "<script>alert(1)</script>";
/// Answers the page's admin API calls as a later control plane might:
/// statuses and replica fields this page does not know beside the ones it
/// does (`statusReason`, `warnings`, replicas with `ip`, `startedAt`,
/// `uptimeSecs`, `queued`), and a ping answered at once.
const FUTURE_CONTROL_PLANE: &str = r#"
const now = new Date().toISOString();
const replica = { id: 'rep-1', hostname: 'edge-1', ip: '10.1.2.3', version: '0.2.0', pid: 7,
  maxRunning: 4, status: 'healthy', lastCheckin: now, running: 1, queued: 2,
  startedAt: now, uptimeSecs: 125, drainState: 'draining' };
const future = { id: 'runner-future', name: 'future', description: '', tags: [], projects: {},
  status: 'unhealthy', statusReason: 'no check-in for 45 s', warnings: ['clock skew of 3 s'],
  lastCheckin: now, replicas: [replica] };
const odd = { id: 'runner-odd', name: 'odd', description: '', tags: [], projects: {},
  status: 'rebooting', lastCheckin: null, replicas: [] };
const answer = (body) => Promise.resolve(new Response(JSON.stringify(body),
  { status: 200, headers: { 'Content-Type': 'application/json' } }));
window.realFetch = window.realFetch || window.fetch;
window.fetch = (url, init) => {
  const path = String(url);
  const method = (init && init.method) || 'GET';
  if (path === '/api/v1/runners') return answer([future, odd]);
  if (path === '/api/v1/runners/runner-future') return answer(future);
  if (path === '/api/v1/runners/runner-future/ping' && method === 'POST') return answer({ pingId: 'p1' });
  if (path === '/api/v1/runners/runner-future/ping/p1') return answer({ state: 'answered', roundTripMs: 42 });
  return window.realFetch(url, init);
};
"#;

/// The longest any one thing on the page may take to appear.
const WAIT: Duration = Duration::from_secs(20);

/// Saves the viewport as `docs/images/NAME.png` when asked to.
async fn screenshot(browser: &Browser, name: &str) {
    if std::env::var("RDRUNNER_SCREENSHOTS").as_deref() != Ok("1") {
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/images");
    fs::create_dir_all(&dir).unwrap();
    // Each page from its top; the last refresh and focus ring settled.
    browser
        .execute("window.scrollTo(0, 0)", json!([]))
        .await
        .expect("scroll to the top");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let png = browser.screenshot().await.expect("screenshot");
    fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

/// The project's nodes as a user pastes them: two web nodes and a db node,
/// all served by the private sshd.
fn inventory(sshd: &TestSshd) -> Value {
    let node = |name: &str, tag: &str| {
        json!({"name": name, "hostname": sshd.host(), "port": sshd.port(), "username": sshd.user(),
               "tags": [tag], "attributes": {"ssh-key-storage-path": "node-key"}})
    };
    json!([node("web1", "web"), node("web2", "web"), node("db1", "db")])
}

/// The runner's working directory, as an operator prepares it: the key
/// store, known_hosts and runner.toml (the credentials come from the page).
fn prepare_work(work: &Path, sshd: &TestSshd) {
    fs::create_dir_all(work.join("keys")).unwrap();
    fs::copy(sshd.client_key(), work.join("keys/node-key")).unwrap();
    fs::write(
        work.join("known_hosts"),
        format!("{}\n", sshd.known_hosts_line().unwrap()),
    )
    .unwrap();
    fs::create_dir_all(work.join("remote-tmp")).unwrap();
    fs::write(work.join("runner.toml"), runner_toml(work)).unwrap();
}

async fn click(browser: &Browser, css: &str) {
    let e = browser.wait_for(css, WAIT).await;
    browser
        .click(&e)
        .await
        .unwrap_or_else(|e| panic!("click {css}: {e}"));
}

async fn fill(browser: &Browser, css: &str, text: &str) {
    let e = browser.wait_for(css, WAIT).await;
    browser
        .fill(&e, text)
        .await
        .unwrap_or_else(|e| panic!("type into {css}: {e}"));
}

async fn script(browser: &Browser, body: &str) -> Value {
    browser
        .execute(body, json!([]))
        .await
        .unwrap_or_else(|e| panic!("script {body}: {e}"))
}

#[actix_rt::test]
async fn the_runner_management_page_takes_a_runner_from_creation_to_deletion() {
    if let Some(why) = webdriver::missing() {
        panic!("the browser test cannot run: {why}");
    }
    tokio::time::timeout(Duration::from_secs(240), flow())
        .await
        .expect("the browser flow ends within 240 s");
}

async fn flow() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("runner");
    let downloads = dir.path().join("downloads");
    fs::create_dir_all(&work).unwrap();
    fs::create_dir_all(&downloads).unwrap();
    let harness = Harness::start(HarnessConfig {
        cadence: Cadence {
            poll_interval_ms: 500,
            long_poll_ms: 500,
            report_interval_ms: 50,
            ..Cadence::default()
        },
        ..HarnessConfig::default()
    })
    .expect("harness starts");
    let base = harness.base_url();
    let sshd = TestSshd::start(&dir.path().join("sshd")).expect("private sshd starts");
    prepare_work(&work, &sshd);

    // The page's files carry a CSP that forbids inline scripts and other origins.
    let mut resp = awc::Client::default()
        .get(format!("{base}/"))
        .send()
        .await
        .expect("GET /");
    let csp = resp
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("default-src 'none'"),
        "{csp}"
    );
    let html = resp.body().await.expect("the page");
    assert!(String::from_utf8_lossy(&html).contains("/app.js"));

    let browser = Browser::start(&downloads)
        .await
        .unwrap_or_else(|e| panic!("the browser test cannot run: {e}"));

    // 1. Sign in: a wrong token is refused next to the field, the right one
    //    is kept in sessionStorage and never in the URL.
    browser
        .goto(&format!("{base}/"))
        .await
        .expect("open the page");
    fill(&browser, "#sign-in input[type=password]", "not-the-token").await;
    screenshot(&browser, "sign-in").await;
    click(&browser, "#sign-in button[type=submit]").await;
    browser
        .wait_text("#sign-in .field-error", WAIT, |t| t.contains("401"))
        .await;
    fill(
        &browser,
        "#sign-in input[type=password]",
        harness.admin_token(),
    )
    .await;
    // From the keyboard: Enter in the field signs in.
    let field = browser.find("#sign-in input[type=password]").await.unwrap();
    browser.keys(&field, "\u{E007}").await.unwrap();
    browser
        .wait_text("main", WAIT, |t| t.contains("No runners yet"))
        .await;
    let stored = script(
        &browser,
        "return sessionStorage.getItem('rdrunner.adminToken')",
    )
    .await;
    assert_eq!(stored, json!(harness.admin_token()));
    assert!(!browser.url().await.unwrap().contains(harness.admin_token()));
    screenshot(&browser, "runners-empty").await;

    // 2. The project's nodes, pasted as JSON: a parse error and an API
    //    refusal show next to the field, then the inventory is stored.
    browser
        .goto(&format!("{base}/#/projects/{PROJECT}"))
        .await
        .unwrap();
    browser
        .wait_text("#nodes", WAIT, |t| t.contains("no node inventory"))
        .await;
    fill(&browser, "#inventory", "[{\"name\": \"web1\",").await;
    click(&browser, "#inventory-form button[type=submit]").await;
    browser
        .wait_text("#inventory-form .field-error", WAIT, |t| {
            t.contains("Not valid JSON")
        })
        .await;
    fill(
        &browser,
        "#inventory",
        r#"[{"name": "web1", "hostname": "10.0.0.5", "tags": ["a\u0007b"]}]"#,
    )
    .await;
    click(&browser, "#inventory-form button[type=submit]").await;
    browser
        .wait_text("#inventory-form .field-error", WAIT, |t| {
            t.contains("422 control_character") && t.contains("tags[0]")
        })
        .await;
    fill(&browser, "#inventory", &inventory(&sshd).to_string()).await;
    click(&browser, "#inventory-form button[type=submit]").await;
    browser
        .wait_text("#nodes", WAIT, |t| {
            t.contains("3 nodes") && t.contains("web2") && t.contains("db1")
        })
        .await;
    fill(&browser, "#project-area .node-filter", "tags: web").await;
    browser
        .wait_text("#project-area .matches", WAIT, |t| {
            t.starts_with("matches 2 nodes")
        })
        .await;
    screenshot(&browser, "projects").await;

    // 3. Create a runner: a bad filter is refused next to its row, then
    //    the credentials are shown once.
    browser
        .goto(&format!("{base}/#/runners/new"))
        .await
        .unwrap();
    fill(&browser, "#create-runner input[type=text]", "shop-runner").await;
    let inputs = browser
        .find_all("#create-runner > .field input")
        .await
        .unwrap();
    browser
        .fill(&inputs[1], "runs the shop's web tier")
        .await
        .unwrap();
    browser.fill(&inputs[2], "dc1, web").await.unwrap();
    click(&browser, "#create-runner fieldset > button").await;
    fill(&browser, "#create-runner .project-name", "staging").await;
    fill(
        &browser,
        "#create-runner .project-row .node-filter",
        "name: (",
    )
    .await;
    click(&browser, "#create-runner button[type=submit]").await;
    // The refusal shows under the filter that caused it, which is marked.
    browser
        .wait_text(
            "#create-runner .project-row .field:has(.node-filter) .field-error",
            WAIT,
            |t| t.contains("400 bad_filter") && t.contains("projects.staging"),
        )
        .await;
    browser
        .wait_for("#create-runner .node-filter[aria-invalid=true]", WAIT)
        .await;
    screenshot(&browser, "create-runner").await;
    fill(&browser, "#create-runner .project-row .node-filter", ".*").await;
    browser
        .wait_for("#create-runner .node-filter:not([aria-invalid])", WAIT)
        .await;
    click(&browser, "#create-runner button[type=submit]").await;
    let panel = browser
        .wait_text(".credentials", WAIT, |t| {
            t.contains("will not be shown again")
        })
        .await;
    assert!(panel.contains("chmod 600 .rdrunner-creds"), "{panel}");
    assert!(panel.contains("rdrunner run"), "{panel}");
    assert!(panel.contains(&base), "the server URL: {panel}");
    screenshot(&browser, "credentials").await;

    // 4. Download the credentials and start the real runner next to them.
    click(&browser, "#download-creds").await;
    let file = webdriver::downloaded(&downloads, WAIT).await;
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.ends_with("rdrunner-creds"), "downloaded as {name}");
    let creds = fs::read_to_string(&file).unwrap();
    assert!(creds.contains("RUNDECK_RUNNER_TOKEN="), "{creds}");
    assert!(
        creds.contains(&format!("RUNDECK_SERVER_URL={base}\n")),
        "{creds}"
    );
    let creds_path: PathBuf = work.join(".rdrunner-creds");
    fs::copy(&file, &creds_path).unwrap();
    fs::set_permissions(&creds_path, fs::Permissions::from_mode(0o600)).unwrap();
    let runner_id = creds
        .lines()
        .find_map(|l| l.strip_prefix("RUNDECK_RUNNER_ID="))
        .expect("the runner id in the file")
        .to_owned();
    let runner = Runner::start(&work);

    // A second runner, named with HTML, to see it shown as text.
    let admin = harness.admin();
    let hostile = admin
        .create_runner(&CreateRunner {
            name: HOSTILE_NAME.into(),
            ..CreateRunner::default()
        })
        .await
        .expect("create the hostile runner");

    // 5. The runner turns healthy with a recent check-in.
    browser.goto(&format!("{base}/#/runners")).await.unwrap();
    let row = format!("tr[data-runner='{runner_id}']");
    browser
        .wait_text(&row, Duration::from_secs(30), |t| t.contains("healthy"))
        .await;
    let checkin = browser
        .wait_text(&format!("{row} .last-checkin"), WAIT, |t| {
            t == "just now" || t.ends_with(" s ago")
        })
        .await;
    if let Some(s) = checkin.strip_suffix(" s ago") {
        let s: u64 = s.parse().unwrap();
        assert!(s < 10, "last check-in {checkin}");
    }
    let shown = browser
        .wait_text(
            &format!("tr[data-runner='{}'] th a", hostile.runner_id),
            WAIT,
            |t| !t.is_empty(),
        )
        .await;
    assert_eq!(shown, HOSTILE_NAME);
    let imgs = script(
        &browser,
        "return document.querySelectorAll('main img').length",
    )
    .await;
    assert_eq!(imgs, json!(0));
    assert_eq!(browser.alert_text().await, None, "a script ran");
    screenshot(&browser, "runners").await;
    admin.delete_runner(&hostile.runner_id).await.unwrap();

    // 6. The runner's page: replicas, then assignments: add `shop` for the
    //    web nodes, change and remove `staging`; the running runner answers
    //    a ping.
    click(&browser, &format!("{row} th a")).await;
    browser
        .wait_text("#replicas", WAIT, |t| t.contains("e2e-host"))
        .await;
    fill(&browser, "#assign-project", PROJECT).await;
    fill(&browser, "#assign-filter", "tags: web").await;
    click(&browser, "#assign-form button[type=submit]").await;
    browser
        .wait_text(
            &format!("tr[data-project='{PROJECT}'] .selected"),
            WAIT,
            |t| t == "2 nodes: web1, web2",
        )
        .await;
    fill(
        &browser,
        "tr[data-project='staging'] input",
        "name: nothing",
    )
    .await;
    let old_row = browser.find("tr[data-project='staging']").await.unwrap();
    click(&browser, "tr[data-project='staging'] button.secondary").await;
    // The assignments are drawn again from the API's answer.
    let start = std::time::Instant::now();
    while browser.property(&old_row, "isConnected").await.ok() == Some(json!(true)) {
        assert!(
            start.elapsed() < WAIT,
            "the assignments were not drawn again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let info = admin.get_runner(&runner_id).await.unwrap();
    assert_eq!(info.projects["staging"], "name: nothing", "{info:?}");
    let remove = browser
        .find_all("tr[data-project='staging'] button")
        .await
        .unwrap();
    browser.click(&remove[1]).await.unwrap();
    let start = std::time::Instant::now();
    while browser.find("tr[data-project='staging']").await.is_ok() {
        assert!(start.elapsed() < WAIT, "staging is still listed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!admin
        .get_runner(&runner_id)
        .await
        .unwrap()
        .projects
        .contains_key("staging"));
    click(&browser, "#ping").await;
    browser
        .wait_text("#ping-result", WAIT, |t| {
            t.starts_with("Answered in ") && t.ends_with(" ms.")
        })
        .await;
    screenshot(&browser, "runner").await;

    // 7. A job from the page; its output arrives while it runs, with node
    //    and step prefixes, stderr marked, HTML shown as text, secure
    //    values masked.
    browser
        .goto(&format!("{base}/#/executions/new"))
        .await
        .unwrap();
    fill(&browser, "#submit-form input[list]", PROJECT).await;
    fill(
        &browser,
        "#submit-form .step-text",
        &format!(
            "echo first ${{node.name}}; echo '{HOSTILE_LINE}'; echo oops >&2; \
             echo pw=${{option.pw}}; sleep 3; echo second ${{node.name}}"
        ),
    )
    .await;
    fill(&browser, "#submit-form .node-filter", "tags: web").await;
    browser
        .wait_text("#submit-form .matches", WAIT, |t| {
            t.starts_with("matches 2 nodes")
        })
        .await;
    fill(&browser, "#submit-form input[type=number]", "2").await;
    click(&browser, "#submit-form .secure-rows + button").await;
    fill(&browser, "#submit-form .secure-row input[type=text]", "pw").await;
    fill(
        &browser,
        "#submit-form .secure-row input[type=password]",
        "s3cret-value",
    )
    .await;
    screenshot(&browser, "submit").await;
    click(&browser, "#submit-form button[type=submit]").await;
    browser
        .wait_text("#output", WAIT, |t| {
            t.contains("web1 step 1") && t.contains("first web1") && t.contains("first web2")
        })
        .await;
    // Each node sleeps 3 s between its first and its last line: the first
    // lines are on the page while the job still runs.
    let live = browser
        .text(&browser.find("#output").await.unwrap())
        .await
        .unwrap();
    assert!(
        !live.contains("second"),
        "the output came only at the end: {live}"
    );
    browser
        .wait_text("#summary", Duration::from_secs(30), |t| {
            t.contains("succeeded")
        })
        .await;
    let output = browser
        .wait_text("#output", WAIT, |t| t.contains("second web2"))
        .await;
    assert!(!output.contains("s3cret-value"), "{output}");
    assert!(output.contains("pw=[SECURE]"), "{output}");
    let lines = script(
        &browser,
        "return [...document.querySelectorAll('#output .text')].map(e => e.textContent)",
    )
    .await;
    assert!(
        lines.as_array().unwrap().contains(&json!(HOSTILE_LINE)),
        "{lines}"
    );
    let scripts = script(
        &browser,
        "return document.querySelectorAll('#output script').length",
    )
    .await;
    assert_eq!(scripts, json!(0));
    let stderr = script(
        &browser,
        "return [...document.querySelectorAll('#output .stderr')].map(e => e.textContent)",
    )
    .await;
    assert!(
        stderr
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l.as_str().unwrap().contains("stderr") && l.as_str().unwrap().contains("oops")),
        "{stderr}"
    );
    let nodes = browser
        .wait_text("#execution-nodes", WAIT, |t| t.contains("web2"))
        .await;
    assert!(nodes.contains("succeeded"), "{nodes}");
    assert!(nodes.contains(" s"), "durations: {nodes}");
    screenshot(&browser, "execution").await;

    // 8. A long job, aborted from the page.
    browser
        .goto(&format!("{base}/#/executions/new"))
        .await
        .unwrap();
    fill(&browser, "#submit-form input[list]", PROJECT).await;
    fill(
        &browser,
        "#submit-form .step-text",
        "echo started ${node.name}; sleep 300; echo not reached",
    )
    .await;
    fill(&browser, "#submit-form input[type=number]", "2").await;
    click(&browser, "#submit-form button[type=submit]").await;
    browser
        .wait_text("#output", WAIT, |t| {
            t.contains("started web1") && t.contains("started web2")
        })
        .await;
    click(&browser, "#abort").await;
    browser
        .wait_text("#summary", Duration::from_secs(30), |t| {
            t.contains("aborted")
        })
        .await;
    assert!(!browser.body_text().await.contains("not reached"));
    browser.goto(&format!("{base}/#/executions")).await.unwrap();
    browser
        .wait_text("#executions", WAIT, |t| {
            t.contains("#2") && t.contains("aborted") && t.contains("succeeded")
        })
        .await;
    screenshot(&browser, "executions").await;

    // 9. Regenerate the credentials: after a confirmation, the new file is
    //    offered once, and the running runner is refused.
    browser
        .goto(&format!("{base}/#/runners/{runner_id}"))
        .await
        .unwrap();
    click(&browser, "#regenerate").await;
    browser
        .wait_text("#confirm-slot", WAIT, |t| {
            t.contains("stops working at once")
        })
        .await;
    click(&browser, "#confirm-slot button.danger").await;
    browser
        .wait_text("#confirm-slot .credentials", WAIT, |t| {
            t.contains("will not be shown again")
        })
        .await;
    let start = std::time::Instant::now();
    while !runner.stderr().contains("(401)") {
        assert!(
            start.elapsed() < WAIT,
            "the runner was not refused after the regeneration; its stderr:\n{}",
            runner.stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // 10. Delete it, after a confirmation naming it.
    click(&browser, "#delete").await;
    let confirm = browser
        .wait_text("#confirm-slot .confirm", WAIT, |t| {
            t.contains("Delete runner")
        })
        .await;
    assert!(confirm.contains("shop-runner"), "{confirm}");
    click(&browser, "#confirm-slot button.danger").await;
    browser
        .wait_text("main", WAIT, |t| {
            t.contains("Runner shop-runner deleted") && t.contains("No runners yet")
        })
        .await;
    assert!(admin.get_runner(&runner_id).await.is_err());

    // A control plane with a newer status model: statuses this page does
    // not know are shown as they come, with a reason and warnings; replica
    // fields beyond today's are shown; a ping is answered. The admin API is
    // played by the page's own fetch, replaced for this part.
    script(&browser, FUTURE_CONTROL_PLANE).await;
    browser.goto(&format!("{base}/#/runners")).await.unwrap();
    let row = browser
        .wait_text("tr[data-runner='runner-future']", WAIT, |t| {
            t.contains("unhealthy")
        })
        .await;
    assert!(row.contains("no check-in for 45 s"), "{row}");
    assert!(row.contains("clock skew of 3 s"), "{row}");
    assert!(row.contains("1 / 2"), "running / queued: {row}");
    let odd = browser
        .wait_text("tr[data-runner='runner-odd']", WAIT, |t| !t.is_empty())
        .await;
    assert!(odd.contains("rebooting"), "{odd}");
    browser
        .goto(&format!("{base}/#/runners/runner-future"))
        .await
        .unwrap();
    let replicas = browser
        .wait_text("#replicas", WAIT, |t| t.contains("10.1.2.3"))
        .await;
    for expected in ["IP", "Uptime", "Queued", "2 min", "draining"] {
        assert!(replicas.contains(expected), "{expected}: {replicas}");
    }
    click(&browser, "#ping").await;
    browser
        .wait_text("#ping-result", WAIT, |t| t == "Answered in 42 ms.")
        .await;
    script(&browser, "window.fetch = window.realFetch").await;

    // At 200% zoom (half the width in CSS pixels) the pages reflow: no
    // sideways scrolling of the page itself (wide tables scroll in place).
    browser.set_viewport(640, 800).await.unwrap();
    for (hash, ready) in [
        ("#/executions/1", "#summary-text"),
        ("#/executions/new", "#submit-form"),
        ("#/projects/shop", "#nodes table"),
        ("#/runners", "#runners"),
    ] {
        browser.goto(&format!("{base}/{hash}")).await.unwrap();
        browser.wait_for(ready, WAIT).await;
        let fits = script(
            &browser,
            "return document.documentElement.scrollWidth <= window.innerWidth",
        )
        .await;
        assert_eq!(fits, json!(true), "{hash} scrolls sideways at 200% zoom");
    }

    // Sign out: the token leaves the tab.
    click(&browser, "#sign-out").await;
    browser.wait_for("#sign-in", WAIT).await;
    let stored = script(
        &browser,
        "return sessionStorage.getItem('rdrunner.adminToken')",
    )
    .await;
    assert_eq!(stored, Value::Null);

    browser.quit().await;
    drop(runner);
    drop(sshd);
    harness.stop();
}
