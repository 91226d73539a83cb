//! The web console of `redis-retry consume --metrics-addr`, against a real broker and Redis:
//! in headless Chromium (driven through chromedriver) for what an operator sees and clicks,
//! and over plain HTTP for what a stranger might try (no token, a wrong one, another site).
//!
//! Screenshots go to `$CARGO_TARGET_TMPDIR`, or to `$REDIS_RETRY_SCREENSHOTS` when set (the
//! README's come from a run with `REDIS_RETRY_SCREENSHOTS=docs`).

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, Locator};
use redis_retry::{DlqReason, RedisTask};
use support::binary::{assert_config_error, run, stack_env, Consumer};
use support::stack::{wait_until, Stack};
use support::unique;

const TOKEN: &str = "console-token-for-the-tests-0123";
/// The value of every seeded task: it must never reach the page or the log.
const SECRET: &str = "value-never-shown";

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn temp_file(name: &str, contents: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("{}-{name}", unique("redis-retry")));
    std::fs::write(&path, contents).unwrap();
    path
}

fn free_addr() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    format!("127.0.0.1:{port}")
}

/// One HTTP/1.1 request: status code and body.
fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to the console");
    stream.set_read_timeout(Some(Duration::from_secs(90))).unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("the console answers");
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("JSON expected ({e}): {body}"))
}

async fn wait_for_console(addr: &str) {
    wait_until("the console to answer", Duration::from_secs(30), || {
        let up = TcpStream::connect(addr).is_ok() && http(addr, "GET", "/health", &[], "").0 != 0;
        async move { up }
    })
    .await;
}

/// Dead letters as `redis-retry dlq list --json` shows them: `(position, key)`.
fn dlq_entries(stack: &Stack, group: &str) -> Vec<(String, String)> {
    let out = run(&["dlq", "list", "--json"], &stack_env(stack, group), b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .map(|l| {
            let row = json(l);
            (
                format!("{}:{}", row["partition"], row["offset"]),
                row["key"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Dead letters of several kinds, captured some time ago.
fn seed_dead_letters(stack: &Stack) {
    let ago = |secs: i64| chrono::Utc::now() - chrono::Duration::seconds(secs);
    let cases: [(RedisTask, &str, DlqReason, &str, i64, u32); 5] = [
        (
            RedisTask::set("user:1001", SECRET, Duration::from_secs(3600)).unwrap(),
            "UserRepository.save",
            DlqReason::MaxRetries,
            "READONLY You can't write against a read only replica.",
            2 * 3600,
            3,
        ),
        (
            RedisTask::set("session:9f2c", SECRET, Duration::ZERO).unwrap(),
            "SessionStore.touch",
            DlqReason::Expired,
            "task older than max_age (24h)",
            26 * 3600,
            0,
        ),
        (
            RedisTask::set("order:3", SECRET, Duration::ZERO).unwrap(),
            "OrderRepository.place",
            DlqReason::PermanentError,
            "WRONGTYPE Operation against a key holding the wrong kind of value",
            25 * 60,
            1,
        ),
        (
            RedisTask::hset("cart:77", "sku-1", SECRET).unwrap(),
            "CartService.add",
            DlqReason::MaxRetries,
            "Connection refused (os error 111)",
            50 * 60,
            3,
        ),
        (
            RedisTask::set("user:1002", SECRET, Duration::ZERO).unwrap(),
            "UserRepository.save",
            DlqReason::TimedOut,
            "no reply from Redis within 5s",
            4 * 60,
            3,
        ),
    ];
    for (task, source, reason, error, age, retries) in cases {
        let mut task = task.with_source(source);
        task.captured_at = ago(age);
        task.retry_count = retries;
        stack.producer.dead_letter(&task, reason, error).unwrap();
    }
    stack.producer.flush(Duration::from_secs(10)).unwrap();
}

/// chromedriver and the headless Chromium it starts, in a process group of their own so that
/// both go when the test ends, however it ends.
struct Browser {
    driver: Child,
    client: Option<Client>,
    _profile: TempDir,
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Browser {
    async fn start() -> Browser {
        use std::os::unix::process::CommandExt;
        let port = free_addr().rsplit(':').next().unwrap().to_string();
        let profile = TempDir(std::env::temp_dir().join(unique("redis-retry-chromium")));
        std::fs::create_dir_all(&profile.0).unwrap();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("chromedriver (Debian package chromium-driver; scripts/test installs it)");
        let mut browser = Browser { driver, client: None, _profile: profile };
        let caps: serde_json::Map<String, serde_json::Value> = serde_json::from_value(serde_json::json!({
            "goog:chromeOptions": {
                "binary": chromium_binary(),
                // Without the networking switches Chromium calls home from a closed network.
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1400,1000", "--hide-scrollbars",
                    format!("--user-data-dir={}", browser._profile.0.display()),
                ],
            }
        }))
        .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match Client::with_capabilities_and_connector(&url, &caps, connector).await {
                Ok(c) => break c,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("no WebDriver session from chromedriver: {e}"),
            }
        };
        browser.client = Some(client);
        browser
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("a session")
    }

    /// Polls `check` on the page until it holds (30 s at most).
    async fn wait_for(&self, what: &str, script: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = serde_json::Value::Null;
        while Instant::now() < deadline {
            match self.client().execute(script, vec![]).await {
                Ok(serde_json::Value::Bool(true)) => return,
                Ok(other) => last = other,
                Err(e) => last = serde_json::json!(e.to_string()),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let page = self.client().source().await.unwrap_or_default();
        panic!("timed out waiting for {what} (last: {last}); page:\n{page}");
    }

    async fn css(&self, selector: &str) -> fantoccini::elements::Element {
        self.client()
            .wait()
            .at_most(Duration::from_secs(30))
            .for_element(Locator::Css(selector))
            .await
            .unwrap_or_else(|e| panic!("{selector}: {e}"))
    }

    async fn set_input(&self, selector: &str, value: &str) {
        let input = self.css(selector).await;
        input.clear().await.unwrap();
        if !value.is_empty() {
            input.send_keys(value).await.unwrap();
        }
    }

    async fn text_of(&self, selector: &str) -> String {
        self.css(selector).await.text().await.unwrap()
    }

    /// Asks for a replay of the one ticked entry, checks that the confirmation names it
    /// (`key`), and confirms.
    async fn replay_ticked_entry(&self, key: &str) {
        self.css("#replay-selected").await.click().await.unwrap();
        let confirm = self.text_of("#confirm").await;
        assert!(confirm.contains("Replay 1 dead letter(s)") && confirm.contains(key), "{confirm}");
        self.css("#confirm-action").await.click().await.unwrap();
    }

    async fn screenshot(&self, name: &str) {
        let dir = std::env::var_os("REDIS_RETRY_SCREENSHOTS")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
        std::fs::create_dir_all(&dir).unwrap();
        let png = self.client().screenshot().await.expect("a screenshot");
        std::fs::write(dir.join(name), png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The whole group: chromedriver and every Chromium process it started.
        // SAFETY: kill(2) has no memory-safety preconditions; the group is our child's.
        unsafe { libc::kill(-(self.driver.id() as i32), libc::SIGKILL) };
        let _ = self.driver.wait();
    }
}

fn chromium_binary() -> String {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"]
        .iter()
        .find(|p| std::path::Path::new(p).is_file())
        .unwrap_or(&"chromium")
        .to_string()
}

/// The rows of the dead-letter table, as `(position, text)`.
const ROWS: &str = "return [...document.querySelectorAll('#dlq-table tbody tr[data-at]')]\
                    .map(r => [r.dataset.at, r.innerText]);";

async fn rows(browser: &Browser) -> Vec<(String, String)> {
    let value = browser.client().execute(ROWS, vec![]).await.unwrap();
    serde_json::from_value(value).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_browser_the_console_shows_filters_and_replays_dead_letters_and_refuses_without_the_token() {
    let stack = Stack::start().await;
    seed_dead_letters(&stack);
    let group = unique("group");
    let addr = free_addr();
    let token_file = temp_file("console.token", &format!("{TOKEN}\n"));
    let consumer = Consumer::start(
        &stack,
        &group,
        &["--metrics-addr", &addr, "--console-token-file", token_file.to_str().unwrap()],
    );
    wait_for_console(&addr).await;
    // A task through the pipeline: the group has applied and committed something, as a
    // running one has (some brokers list a group only once it has committed offsets).
    stack.producer.publish_and_wait(&RedisTask::set("warm:up", "1", Duration::ZERO).unwrap()).await.unwrap();
    let mut redis = stack.conn().await;
    wait_until("the first task applied", Duration::from_secs(30), || {
        let mut redis = redis.clone();
        async move { redis::cmd("EXISTS").arg("warm:up").query_async::<u32>(&mut redis).await.ok() == Some(1) }
    })
    .await;
    let browser = Browser::start().await;
    let base = format!("http://{addr}/");

    // Overview: lag per partition (the DLQ read by its cursor group), the group's member.
    browser.client().goto(&format!("{base}#overview")).await.unwrap();
    let dlq_topic = format!("{}.dlq", stack.topic);
    browser
        .wait_for(
            "the DLQ's lag of 5 on the overview",
            &format!(
                "return [...document.querySelectorAll('#lag-table tbody tr')].some(r => \
                 r.cells[0].innerText === '{dlq_topic}' && r.cells[1].innerText === '{group}.dlq' \
                 && r.cells[5].innerText === '5');"
            ),
        )
        .await;
    browser
        .wait_for(
            "a member of the consumer group",
            "return [...document.querySelectorAll('#members tbody tr')].some(r => r.cells.length === 3 \
             && r.cells[2].innerText.length > 0);",
        )
        .await;
    browser
        .wait_for(
            "the applied task counted and the first rates",
            "return document.getElementById('total-applied').innerText === '1 since start' \
             && document.getElementById('rate-applied').innerText.endsWith('/s');",
        )
        .await;
    assert_eq!(browser.text_of("#redis-state").await, "reachable");
    assert_eq!(browser.text_of("#consumer-state").await, "running");
    browser.screenshot("console-overview.png").await;

    // Dead letters: every seeded entry with its reason, never a value.
    browser.client().goto(&format!("{base}#dead-letters")).await.unwrap();
    browser
        .wait_for(
            "five dead letters",
            "return document.querySelectorAll('#dlq-table tbody tr[data-at]').length === 5;",
        )
        .await;
    let listed = rows(&browser).await;
    for reason in ["max_retries", "expired", "permanent_error", "timed_out"] {
        assert!(listed.iter().any(|(_, t)| t.contains(reason)), "{reason} shown: {listed:?}");
    }
    assert!(listed.iter().any(|(_, t)| t.contains("OrderRepository.place") && t.contains("set [order:3]")));
    let page = browser.client().source().await.unwrap();
    assert!(!page.contains(SECRET), "values never reach the page");
    browser.css("#dlq-table a.position").await.click().await.unwrap();
    browser.wait_for("an entry's detail", "return !document.getElementById('detail').hidden;").await;
    browser.css("#close-detail").await.click().await.unwrap();
    browser.screenshot("console-dead-letters.png").await;

    // A filter narrows the list.
    browser.set_input("#filter-source", "OrderRepository.*").await;
    browser.css("#apply-filters").await.click().await.unwrap();
    browser
        .wait_for(
            "one row for the source filter",
            "return document.querySelectorAll('#dlq-table tbody tr[data-at]').length === 1;",
        )
        .await;
    let filtered = rows(&browser).await;
    assert!(filtered[0].1.contains("order:3"), "{filtered:?}");
    let order_at = filtered[0].0.clone();
    browser.set_input("#filter-source", "").await;
    browser.set_input("#filter-age", "1h").await;
    browser.css("#apply-filters").await.click().await.unwrap();
    browser
        .wait_for(
            "two rows older than an hour",
            "return document.querySelectorAll('#dlq-table tbody tr[data-at]').length === 2;",
        )
        .await;
    browser.set_input("#filter-age", "").await;
    browser.set_input("#filter-source", "OrderRepository.*").await;
    browser.css("#apply-filters").await.click().await.unwrap();
    browser
        .wait_for(
            "the order row again",
            "return document.querySelectorAll('#dlq-table tbody tr[data-at]').length === 1;",
        )
        .await;

    // Without the token the page's replay is refused, and nothing moves.
    browser.set_input("#token", "").await;
    browser.css(&format!("input.select-entry[data-at='{order_at}']")).await.click().await.unwrap();
    browser.replay_ticked_entry("order:3").await;
    browser
        .wait_for(
            "the refusal",
            "return document.getElementById('action-result').innerText.includes('refused');",
        )
        .await;
    assert!(browser.text_of("#action-result").await.contains("token is missing"));
    assert_eq!(dlq_entries(&stack, &group).len(), 5, "a refused action changes nothing");

    // With the token, the replay goes through its confirmation and the consumer applies it
    // (the refused selection is still ticked, as the operator left it).
    browser.set_input("#token", TOKEN).await;
    browser
        .wait_for(
            "the selection kept after the refusal",
            &format!("return document.querySelector(\"input.select-entry[data-at='{order_at}']\").checked;"),
        )
        .await;
    browser.replay_ticked_entry("order:3").await;
    browser
        .wait_for(
            "the replay's result",
            "return document.getElementById('action-result').innerText.includes('Replayed 1.');",
        )
        .await;
    wait_until("the consumer to apply the replayed task", Duration::from_secs(30), || {
        let mut redis = redis.clone();
        async move {
            redis::cmd("GET")
                .arg("order:3")
                .query_async::<Option<String>>(&mut redis)
                .await
                .ok()
                .flatten()
                .as_deref()
                == Some(SECRET)
        }
    })
    .await;
    let exists: u32 =
        redis::cmd("EXISTS").arg("user:1001").arg("cart:77").query_async(&mut redis).await.unwrap();
    assert_eq!(exists, 0, "only the chosen entry was replayed");
    let mut keys: Vec<String> = dlq_entries(&stack, &group).into_iter().map(|(_, k)| k).collect();
    keys.sort();
    assert_eq!(keys, ["cart:77", "session:9f2c", "user:1001", "user:1002"], "the others stay dead letters");
    browser
        .wait_for(
            "the reloaded list without the replayed entry",
            "return document.querySelectorAll('#dlq-table tbody tr[data-at]').length === 0;",
        )
        .await;

    let log = consumer.log();
    assert!(log.contains("console action") && log.contains("replay"), "the action is logged:\n{log}");
    assert!(log.contains("console action refused"), "so is the refusal:\n{log}");
    assert!(!log.contains(SECRET) && !log.contains(TOKEN), "no value or token in the log:\n{log}");
    if let Some(client) = browser.client.clone() {
        let _ = client.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_need_the_token_and_the_consoles_own_origin_and_gone_positions_are_left_alone() {
    let stack = Stack::start().await;
    seed_dead_letters(&stack);
    let group = unique("group");
    let addr = free_addr();
    let consumer = Consumer::start(&stack, &group, &["--metrics-addr", &addr, "--console-token", TOKEN]);
    let read_only_addr = free_addr();
    let _read_only = Consumer::start(&stack, &group, &["--metrics-addr", &read_only_addr]);
    wait_for_console(&addr).await;
    wait_for_console(&read_only_addr).await;
    let before = dlq_entries(&stack, &group);
    assert_eq!(before.len(), 5);
    let first = before[0].0.clone();
    let body = format!("{{\"at\":[\"{first}\"],\"operator\":\"alice\"}}");
    let bearer = format!("Bearer {TOKEN}");
    let json_type = ("Content-Type", "application/json");
    let own_origin = format!("http://{addr}");

    // (headers, console, expected status, what the message says)
    type Case<'a> = (Vec<(&'a str, &'a str)>, &'a str, u16, &'a str);
    let cases: Vec<Case> = vec![
        (vec![json_type], &addr, 401, "token is missing"),
        (
            vec![json_type, ("Authorization", "Bearer not-the-token-at-all-000")],
            &addr,
            401,
            "wrong console token",
        ),
        (
            vec![json_type, ("Authorization", &bearer), ("Origin", "http://evil.example")],
            &addr,
            403,
            "cross-site",
        ),
        (
            vec![json_type, ("Authorization", &bearer), ("Sec-Fetch-Site", "cross-site")],
            &addr,
            403,
            "cross-site",
        ),
        (vec![("Content-Type", "text/plain"), ("Authorization", &bearer)], &addr, 415, "JSON"),
        (vec![json_type, ("Authorization", &bearer)], &read_only_addr, 403, "read-only"),
    ];
    for (headers, console, status, says) in &cases {
        for action in ["replay", "purge"] {
            let (got, answer) = http(console, "POST", &format!("/api/dead-letters/{action}"), headers, &body);
            assert_eq!(got, *status, "{action} with {headers:?}: {answer}");
            assert!(json(&answer)["error"].as_str().unwrap_or_default().contains(says), "{answer}");
        }
    }
    assert_eq!(dlq_entries(&stack, &group), before, "nothing refused was done");
    let (_, session) = http(&read_only_addr, "GET", "/api/session", &[], "");
    assert_eq!(json(&session)["actions_enabled"], false, "the page shows actions disabled");

    // The console's own page: accepted. A position nobody holds: left alone and named.
    let ok_headers =
        [json_type, ("Authorization", &bearer), ("Origin", &own_origin), ("Sec-Fetch-Site", "same-origin")];
    let (status, answer) =
        http(&addr, "POST", "/api/dead-letters/purge", &ok_headers, r#"{"at":["0:999999"]}"#);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(json(&answer)["missing"], serde_json::json!(["0:999999"]));
    assert_eq!(json(&answer)["chosen"], 0);
    assert_eq!(dlq_entries(&stack, &group), before, "nothing else was done, nothing moved");

    let (status, answer) = http(&addr, "POST", "/api/dead-letters/purge", &ok_headers, &body);
    assert_eq!((status, json(&answer)["chosen"].clone()), (200, serde_json::json!(1)), "{answer}");
    let after = dlq_entries(&stack, &group);
    assert_eq!(after.len(), 4);
    assert!(!after.iter().any(|(_, k)| *k == before[0].1), "the chosen entry is gone: {after:?}");
    // The same selection again names an entry that is gone: another entry is not purged in
    // its place, although the kept ones were appended again at new positions.
    let (status, answer) = http(&addr, "POST", "/api/dead-letters/purge", &ok_headers, &body);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (json(&answer)["chosen"].clone(), json(&answer)["missing"].clone()),
        (serde_json::json!(0), serde_json::json!([first]))
    );
    assert_eq!(dlq_entries(&stack, &group).len(), 4);

    // Bad input is a clear 400, never a crash.
    for bad in ["not json", r#"{"at":[]}"#, r#"{"at":["x:y"]}"#, r#"{"at":"0:1"}"#] {
        let (status, answer) = http(&addr, "POST", "/api/dead-letters/replay", &ok_headers, bad);
        assert_eq!(status, 400, "{bad}: {answer}");
        assert!(json(&answer)["error"].is_string(), "{answer}");
    }
    let (status, answer) = http(&addr, "GET", "/api/dead-letters?age=soon", &[], "");
    assert_eq!(status, 400, "{answer}");
    let (status, answer) = http(&addr, "GET", "/api/dead-letters/entry?at=0:999999", &[], "");
    assert_eq!(status, 404, "{answer}");

    let log = consumer.log();
    assert!(log.contains("console action refused"), "{log}");
    assert!(log.contains("alice") && log.contains("action=\"purge\""), "who and what:\n{log}");
    assert!(!log.contains(SECRET) && !log.contains(TOKEN), "no value or token in the log:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_keeps_off_other_sites_and_the_list_is_paginated() {
    let stack = Stack::start().await;
    for i in 0..120 {
        let task = RedisTask::del(format!("bulk:{i:03}")).unwrap().with_source("Bulk.job");
        stack.producer.dead_letter(&task, DlqReason::MaxRetries, "ERR boom").unwrap();
    }
    stack.producer.flush(Duration::from_secs(10)).unwrap();
    let group = unique("group");
    let addr = free_addr();
    let _consumer = Consumer::start(&stack, &group, &["--metrics-addr", &addr]);
    wait_for_console(&addr).await;

    let mut stream = TcpStream::connect(&addr).unwrap();
    write!(stream, "GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let head = response.split("\r\n\r\n").next().unwrap().to_ascii_lowercase();
    assert!(head.contains("content-security-policy: default-src 'self'"), "{head}");
    assert!(head.contains("x-frame-options: deny"), "{head}");
    assert!(!head.contains("access-control-allow-origin"), "no CORS: {head}");
    assert!(response.contains("console.js"), "the page");
    // A name re-pointed at 127.0.0.1 by another site (DNS rebinding) gets nothing.
    let mut stream = TcpStream::connect(&addr).unwrap();
    let port = addr.rsplit(':').next().unwrap();
    write!(
        stream,
        "GET /api/dead-letters HTTP/1.1\r\nHost: evil.example:{port}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut rebound = String::new();
    stream.read_to_string(&mut rebound).unwrap();
    assert!(rebound.starts_with("HTTP/1.1 421"), "{rebound}");
    assert!(!rebound.contains("bulk:"), "no dead letter shown: {rebound}");
    let (status, _) = http(&format!("localhost:{port}"), "GET", "/api/session", &[], "");
    assert_eq!(status, 200, "localhost is the console's own name too");
    assert!(!response.contains("http://") && !response.contains("https://"), "nothing loaded from elsewhere");
    for asset in ["/console.js", "/console.css"] {
        let (status, body) = http(&addr, "GET", asset, &[], "");
        assert_eq!(status, 200);
        assert!(!body.contains("//fonts.") && !body.contains("cdn"), "{asset} loads nothing from elsewhere");
    }

    let page = |query: &str| json(&http(&addr, "GET", &format!("/api/dead-letters?{query}"), &[], "").1);
    let third = page("per_page=50&page=3");
    assert_eq!(
        (third["matching"].clone(), third["pages"].clone()),
        (serde_json::json!(120), serde_json::json!(3))
    );
    assert_eq!(third["entries"].as_array().unwrap().len(), 20);
    let keys: Vec<String> = page("per_page=50&page=1")["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(keys.first().map(String::as_str), Some("bulk:000"));
    assert_eq!(keys.len(), 50);
    let past = page("per_page=50&page=99");
    assert_eq!(past["page"], 3, "a page past the end shows the last");
    let filtered = page("key=bulk:11*&per_page=5");
    assert_eq!(
        (filtered["matching"].clone(), filtered["pages"].clone()),
        (serde_json::json!(10), serde_json::json!(2))
    );
    let (status, answer) = http(&addr, "GET", "/api/dead-letters?per_page=0", &[], "");
    assert_eq!(status, 400, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_broker_down_the_console_answers_with_an_error_instead_of_hanging() {
    let mut stack = Stack::start().await;
    let group = unique("group");
    let addr = free_addr();
    let _consumer = Consumer::start(&stack, &group, &["--metrics-addr", &addr]);
    wait_for_console(&addr).await;
    let (status, overview) = http(&addr, "GET", "/api/overview", &[], "");
    assert_eq!(status, 200, "{overview}");
    assert!(json(&overview)["topics"].is_array(), "{overview}");
    stack.kafka.stop();
    let (status, overview) = http(&addr, "GET", "/api/overview", &[], "");
    assert_eq!(status, 200, "{overview}");
    let overview = json(&overview);
    assert!(overview["kafka_error"].as_str().is_some_and(|e| !e.is_empty()), "{overview}");
    assert_eq!(overview["redis"], "reachable", "the rest of the overview is still there");
    let (status, list) = http(&addr, "GET", "/api/dead-letters", &[], "");
    assert!(status == 502 || status == 504, "{status}: {list}");
    assert!(json(&list)["error"].as_str().unwrap_or_default().contains("dead letters"), "{list}");
}

#[test]
fn the_console_token_comes_from_a_flag_a_file_the_environment_or_toml_and_is_never_printed() {
    let file = temp_file("console.token", &format!("{TOKEN}\n"));
    let toml = temp_file("settings.toml", &format!("console_token = \"{TOKEN}\"\n"));
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, String)>);
    let cases: Vec<Case> = vec![
        (vec!["config", "--console-token", TOKEN], vec![]),
        (vec!["config", "--console-token-file", file.to_str().unwrap()], vec![]),
        (vec!["config"], vec![("REDIS_RETRY_CONSOLE_TOKEN", TOKEN.to_string())]),
        (vec!["config", "--config", toml.to_str().unwrap()], vec![]),
    ];
    for (args, env) in cases {
        let out = run(&args, &env, b"");
        let shown = text(&out.stdout);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        assert!(shown.contains("console_token = \"***\""), "{args:?}: set, and masked:\n{shown}");
        assert!(!shown.contains(TOKEN), "{args:?}: never printed:\n{shown}");
    }
    let unset = text(&run(&["config"], &[], b"").stdout);
    assert!(!unset.contains("console_token"), "read-only by default:\n{unset}");
    let stderr = assert_config_error(&["config", "--console-token", "short"], &[], "console_token");
    assert!(
        stderr.contains("at least 16") && !stderr.contains("short"),
        "the token is not repeated: {stderr}"
    );
    assert_config_error(&["config", "--console-token", "has a space in it, sixteen+"], &[], "console_token");
    assert_config_error(
        &["config", "--console-token-file", "/nonexistent/console.token"],
        &[],
        "--console-token-file",
    );
    let both =
        run(&["config", "--console-token", TOKEN, "--console-token-file", file.to_str().unwrap()], &[], b"");
    assert_eq!(both.status.code(), Some(2), "a token from two places is refused");
}
