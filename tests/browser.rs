//! End-to-end tests of the page in headless Chromium (Debian's `chromium`),
//! driven over the DevTools protocol, against the real binary on a real
//! redis-server. Each test starts its own browser with a fresh profile; the
//! tests take turns (one Chromium at a time is plenty on a small machine).
//! Screenshots land in `target/screenshots/`.

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use headless_chrome::protocol::cdp::{Emulation, Page};
use headless_chrome::Tab;
use serde_json::{json, Value};

use support::{http, open_page, Backend, Chrome, Likeboard};

/// Evaluates `expr` in the page and returns its value (via JSON).
fn js(tab: &Tab, expr: &str) -> Value {
    let wrapped = format!("(async () => JSON.stringify(await ({expr})))()");
    let result = tab.evaluate(&wrapped, true).expect("evaluating JS");
    match result.value {
        Some(Value::String(s)) => serde_json::from_str(&s).unwrap_or(Value::Null),
        _ => Value::Null,
    }
}

/// Polls `cond` (a JS expression) until it is true; panics after 20 s.
fn wait_for(tab: &Tab, cond: &str) -> Duration {
    wait_for_within(tab, cond, Duration::from_secs(20))
}

fn wait_for_within(tab: &Tab, cond: &str, limit: Duration) -> Duration {
    let start = Instant::now();
    while start.elapsed() < limit {
        if js(tab, cond) == json!(true) {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!(
        "waited {limit:?} for `{cond}`; badge: {}",
        js(tab, "document.getElementById('status').textContent")
    );
}

/// The board as the page shows it: [(id, score, liked, text)] in display order.
fn board(tab: &Tab) -> Vec<(u64, u64, bool, String)> {
    let v = js(
        tab,
        "[...document.querySelectorAll('#comments > li')].map(li => [Number(li.dataset.id), \
         Number(li.querySelector('.score').textContent), \
         li.querySelector('.like').getAttribute('aria-pressed') === 'true', \
         li.querySelector('.content').textContent])",
    );
    v.as_array()
        .expect("a list")
        .iter()
        .map(|r| {
            (
                r[0].as_u64().unwrap(),
                r[1].as_u64().unwrap(),
                r[2].as_bool().unwrap(),
                r[3].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// A real mouse click, in the foreground tab (a background tab gets no input).
fn click(tab: &Tab, selector: &str) {
    tab.activate().expect("bringing the tab to the front");
    tab.wait_for_element(selector)
        .expect("element to click")
        .click()
        .expect("clicking");
}

fn like_button(id: u64) -> String {
    format!("#comments > li[data-id='{id}'] .like")
}

/// Types a comment into the page's form and posts it.
fn post_via_form(tab: &Tab, nickname: &str, content: &str) {
    js(
        tab,
        &format!(
            "(() => {{ const f = document.getElementById('add'); f.nickname.value = {}; \
             f.content.value = {}; f.content.dispatchEvent(new Event('input')); \
             f.requestSubmit(); return true; }})()",
            json!(nickname),
            json!(content)
        ),
    );
}

fn post_as(lb: &Likeboard, nickname: &str, content: &str) -> u64 {
    lb.add_comment_as(nickname, content)
}

fn screenshot_dir() -> PathBuf {
    // target/debug/deps/browser-* -> target/
    let exe = std::env::current_exe().expect("test binary path");
    let target = exe
        .ancestors()
        .nth(3)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"));
    let dir = target.join("screenshots");
    std::fs::create_dir_all(&dir).expect("creating target/screenshots");
    dir
}

fn screenshot(tab: &Tab, name: &str) {
    // Let animations settle first.
    std::thread::sleep(Duration::from_millis(600));
    let png = tab
        .capture_screenshot(Page::CaptureScreenshotFormatOption::Png, None, None, true)
        .expect("screenshot");
    std::fs::write(screenshot_dir().join(name), png).expect("saving a screenshot");
}

/// Makes the tab a phone-sized screen (or back to desktop with `None`).
fn emulate_width(tab: &Tab, size: Option<(u32, u32)>) {
    if let Some((width, height)) = size {
        tab.call_method(Emulation::SetDeviceMetricsOverride {
            width,
            height,
            device_scale_factor: 2.0,
            mobile: true,
            scale: None,
            screen_width: None,
            screen_height: None,
            position_x: None,
            position_y: None,
            dont_set_visible_size: None,
            screen_orientation: None,
            viewport: None,
            display_feature: None,
            device_posture: None,
        })
        .expect("phone metrics");
    } else {
        tab.call_method(Emulation::ClearDeviceMetricsOverride(None))
            .expect("desktop metrics");
    }
}

/// A comment posted in one page appears in another; a like in one page moves
/// the other page's score and order within a second.
#[test]
fn comment_and_like_reach_the_other_page() {
    let backend = Backend::redis();
    let lb = backend.start(&[]);
    let first = post_as(&lb, "ada", "first comment");
    let second = post_as(&lb, "grace", "second comment");
    lb.like("POST", first, &support::visitor(1));
    let url = format!("http://{}/", lb.addr);
    let chrome = Chrome::launch();
    let a = chrome.tab(&url);
    let b = chrome.tab(&url);

    post_via_form(&a, "linus", "hello from page A");
    wait_for(
        &b,
        "[...document.querySelectorAll('#comments .content')].some(p => p.textContent === 'hello from page A')",
    );

    // `second` is below `first` (score 0 < 1). Two likes from A... A is one
    // visitor, so like `second` in A and once more through the API.
    assert_eq!(board(&b)[0].0, first);
    lb.like("POST", second, &support::visitor(2));
    wait_for(
        &b,
        &format!(
            "document.querySelector({}).textContent.includes('1')",
            json!(like_button(second))
        ),
    );
    // Clock the like in the pages themselves (one machine, one clock): from
    // A's click event to the moment B's list shows the new score and order.
    js(
        &a,
        "(() => { addEventListener('click', () => { window.__clickedAt = Date.now(); }, \
         { capture: true, once: true }); return true; })()",
    );
    js(
        &b,
        &format!(
            "(() => {{ const done = () => document.querySelector('#comments > li').dataset.id === '{second}' \
             && document.querySelector({}).textContent.trim() === '2'; \
             new MutationObserver((_, obs) => {{ if (done()) {{ window.__seenAt = Date.now(); obs.disconnect(); }} }}) \
             .observe(document.getElementById('comments'), {{ childList: true, subtree: true, characterData: true }}); \
             return true; }})()",
            json!(like_button(second))
        ),
    );
    click(&a, &like_button(second));
    wait_for(&b, "typeof window.__seenAt === 'number'");
    let clicked = js(&a, "window.__clickedAt")
        .as_u64()
        .expect("A saw its click");
    let seen = js(&b, "window.__seenAt").as_u64().unwrap();
    assert!(
        seen.saturating_sub(clicked) <= 1000,
        "page B showed the like and the new order {} ms after the click in A",
        seen.saturating_sub(clicked)
    );
    let shown = board(&b);
    assert_eq!((shown[0].0, shown[0].1), (second, 2));
    assert_eq!((shown[1].0, shown[1].1), (first, 1));
}

/// A reload keeps this visitor's liked state; another browser context is
/// another visitor and sees the same score, not liked.
#[test]
fn liked_state_survives_reload_and_contexts_are_visitors() {
    let backend = Backend::redis();
    let lb = backend.start(&[]);
    let id = post_as(&lb, "ada", "like me");
    let url = format!("http://{}/", lb.addr);
    let chrome = Chrome::launch();
    let a = chrome.tab(&url);
    click(&a, &like_button(id));
    wait_for(
        &a,
        &format!(
            "document.querySelector({}).getAttribute('aria-pressed') === 'true'",
            json!(like_button(id))
        ),
    );

    open_page(&a, &url);
    wait_for(
        &a,
        &format!(
            "document.querySelector({}).getAttribute('aria-pressed') === 'true'",
            json!(like_button(id))
        ),
    );
    assert_eq!(board(&a)[0], (id, 1, true, "like me".to_string()));

    let context = chrome
        .browser
        .new_context()
        .expect("a second browser context");
    let other = context.new_tab().expect("a tab in it");
    open_page(&other, &url);
    assert_eq!(board(&other)[0], (id, 1, false, "like me".to_string()));
    // The other visitor's like counts separately.
    click(&other, &like_button(id));
    wait_for(
        &a,
        &format!(
            "document.querySelector({}).textContent.trim() === '2'",
            json!(like_button(id))
        ),
    );
}

/// Markup in comments shows as text and runs nothing.
#[test]
fn hostile_comments_stay_text() {
    let backend = Backend::redis();
    let lb = backend.start(&[]);
    let url = format!("http://{}/", lb.addr);
    let chrome = Chrome::launch();
    let tab = chrome.tab(&url);
    // Anything that ran would call alert(); record it instead of blocking on a dialog.
    js(
        &tab,
        "(() => { window.alert = () => { window.__ran = true; }; return true; })()",
    );
    let payloads = [
        "<img src=x onerror=alert(1)>",
        "<script>alert(1)</script>",
        "<script>",
    ];
    for p in payloads {
        post_via_form(&tab, "<b>mallory</b>", p);
        std::thread::sleep(Duration::from_millis(150));
    }
    wait_for(
        &tab,
        "document.querySelectorAll('#comments > li').length === 3",
    );
    let texts: Vec<String> = board(&tab).into_iter().map(|r| r.3).collect();
    for p in payloads {
        assert!(
            texts.contains(&p.to_string()),
            "{p:?} not shown as text: {texts:?}"
        );
    }
    assert_eq!(
        js(
            &tab,
            "document.querySelectorAll('#comments img, #comments script, #comments b').length"
        ),
        json!(0)
    );
    assert_eq!(js(&tab, "window.__ran === true"), json!(false));
    // The server-rendered page escapes them too.
    open_page(&tab, &url);
    assert_eq!(
        js(
            &tab,
            "document.querySelectorAll('#comments img, #comments script').length"
        ),
        json!(0)
    );
    assert_eq!(js(&tab, "window.__ran === true"), json!(false));
}

/// A server restart while a page is open: the badge shows reconnecting, then
/// live, and the page ends with every like made while it was away.
#[test]
fn restart_reconnects_and_replays() {
    let backend = Backend::redis();
    let mut lb = backend.start(&[]);
    let ids: Vec<u64> = (0..3)
        .map(|i| post_as(&lb, "ada", &format!("comment {i}")))
        .collect();
    let addr = lb.addr;
    let url = format!("http://{addr}/");
    let chrome = Chrome::launch();
    let tab = chrome.tab(&url);

    lb.signal(libc::SIGTERM);
    assert!(
        lb.wait_exit(Duration::from_secs(10)).is_some(),
        "server did not stop"
    );
    wait_for(
        &tab,
        "document.getElementById('status').textContent.startsWith('reconnecting')",
    );
    let lb = backend.launch().listen(addr).start();
    // Likes while the page is still waiting out `retry:`.
    for (n, id) in ids.iter().enumerate() {
        for v in 0..=n as u64 {
            assert_eq!(lb.like("POST", *id, &support::visitor(10 + v)).status, 200);
        }
    }
    wait_for(
        &tab,
        "document.getElementById('status').textContent === 'live'",
    );
    wait_for(
        &tab,
        &format!(
            "[...document.querySelectorAll('#comments > li')].map(li => li.dataset.id + ':' + \
             li.querySelector('.score').textContent).join(',') === '{}:3,{}:2,{}:1'",
            ids[2], ids[1], ids[0]
        ),
    );
}

/// The wire view shows the frames of a like (id, event, data) and a heartbeat.
#[test]
fn wire_view_shows_a_like_and_a_heartbeat() {
    let backend = Backend::redis();
    let lb = backend.start(&["--heartbeat-secs", "1"]);
    let id = post_as(&lb, "ada", "watch the wire");
    let chrome = Chrome::launch();
    let tab = chrome.tab(&format!("http://{}/?wire=1", lb.addr));
    wait_for(&tab, "!document.getElementById('wire').hidden");
    wait_for(&tab, "[...document.querySelectorAll('#wire-log .frame pre')].some(p => p.textContent.startsWith('retry: 3000'))");
    assert_eq!(lb.like("POST", id, &support::visitor(1)).status, 200);
    let like = format!(
        "[...document.querySelectorAll('#wire-log .frame pre')].some(p => /^id: \\d+\\nevent: like\\ndata: \\{{\"id\":{id},\"score\":1\\}}$/.test(p.textContent))"
    );
    wait_for(&tab, &like);
    // Colours: each field has its own class.
    assert_eq!(
        js(
            &tab,
            "document.querySelectorAll('#wire-log .f-event').length > 0"
        ),
        json!(true)
    );
    wait_for(&tab, "[...document.querySelectorAll('#wire-log .frame .f-comment')].some(s => s.textContent === ': heartbeat')");
}

/// With `--classroom`, "answer 204" ends the EventSource for good and the badge says so.
#[test]
fn classroom_answer_204_stops_the_stream() {
    let backend = Backend::redis();
    let lb = backend.start(&["--classroom"]);
    post_as(&lb, "ada", "a fault is coming");
    let chrome = Chrome::launch();
    let tab = chrome.tab(&format!("http://{}/", lb.addr));
    click(&tab, "[data-fault='answer-204']");
    wait_for(
        &tab,
        "document.getElementById('status').textContent === 'offline'",
    );
    assert_eq!(
        js(
            &tab,
            "document.getElementById('status-note-text').textContent.includes('204')"
        ),
        json!(true)
    );
    // It stays offline: EventSource does not come back after a 204.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        js(&tab, "document.getElementById('status').textContent"),
        json!("offline")
    );
    // Without --classroom there is no panel and no fault route.
    let plain = backend.start(&[]);
    assert_eq!(
        http(
            plain.addr,
            "POST",
            "/api/classroom/0123456789abcdef0123456789abcdef/drop",
            &[],
            b""
        )
        .status,
        404
    );
}

/// Saves screenshots of the board (desktop and phone) and of the wire view.
#[test]
fn screenshots_of_board_phone_and_wire() {
    let backend = Backend::redis();
    let lb = backend.start(&["--heartbeat-secs", "2", "--classroom"]);
    let seed = [
        ("ada", "Server-Sent Events are plain HTTP: one response that never ends, one event per blank line."),
        ("grace", "Reload the page: your likes are still yours. They live in Redis, per visitor."),
        ("linus", "Open a second tab and like something. Both move at once."),
        ("margaret", "Kill the server, start it again: the page reconnects and replays what it missed."),
        ("mallory", "<img src=x onerror=alert(1)> shows as text, nothing runs."),
    ];
    let ids: Vec<u64> = seed.iter().map(|(n, c)| post_as(&lb, n, c)).collect();
    for (i, id) in ids.iter().enumerate() {
        for v in 0..7u64.saturating_sub(2 * i as u64) {
            lb.like("POST", *id, &support::visitor(100 + v));
        }
    }
    let chrome = Chrome::launch();
    let url = format!("http://{}/", lb.addr);
    let tab = chrome.tab(&url);
    click(&tab, &like_button(ids[1]));
    wait_for(
        &tab,
        &format!(
            "document.querySelector({}).getAttribute('aria-pressed') === 'true'",
            json!(like_button(ids[1]))
        ),
    );
    screenshot(&tab, "board-desktop.png");

    emulate_width(&tab, Some((390, 844)));
    open_page(&tab, &url);
    screenshot(&tab, "board-phone.png");
    emulate_width(&tab, None);

    open_page(&tab, &format!("{url}?wire=1"));
    wait_for(
        &tab,
        "[...document.querySelectorAll('#wire-log .f-comment')].length > 0",
    );
    lb.like("POST", ids[3], &support::visitor(1));
    post_as(
        &lb,
        "alan",
        "Watch the wire: id, event and data, then a blank line.",
    );
    wait_for(
        &tab,
        "document.querySelectorAll('#wire-log .f-event').length >= 2",
    );
    std::thread::sleep(Duration::from_secs(2));
    screenshot(&tab, "wire.png");
    for name in ["board-desktop.png", "board-phone.png", "wire.png"] {
        assert!(screenshot_dir().join(name).exists(), "{name}");
    }
}

/// The moderators' token of the moderation tests below.
const ADMIN_TOKEN: &str = "browser-suite-admin-token-0123456789abc";

/// A server on a real Redis with moderation on; the token file lives as long
/// as the returned directory.
fn moderated_server(backend: &Backend) -> (Likeboard, support::TempDir) {
    let dir = support::TempDir::new("browser-token");
    let path = dir.0.join("token");
    std::fs::write(&path, ADMIN_TOKEN).unwrap();
    let lb = backend.start(&["--admin-token-file", path.to_str().unwrap()]);
    (lb, dir)
}

/// Gives the moderator's page its token through its own form, and waits for
/// the panel and the controls on every comment.
fn sign_in(tab: &Tab) {
    js(
        tab,
        &format!(
            "(() => {{ document.getElementById('mod-token').value = {}; \
             document.getElementById('mod-login').requestSubmit(); return true; }})()",
            json!(ADMIN_TOKEN)
        ),
    );
    wait_for(
        tab,
        "!document.getElementById('mod-panel').hidden && document.body.classList.contains('moderating')",
    );
}

/// A moderator hides a comment on /admin in one browser context, and it
/// disappears from another visitor's page (another context: its own cookies
/// and its own shared stream) within a second of the click, and from the
/// moderator's own; the panel lists it as hidden; Restore brings it back to
/// both pages. The token lives in the tab's sessionStorage, never a cookie.
#[test]
fn a_hidden_comment_leaves_another_visitors_page() {
    let backend = Backend::redis();
    let (lb, _token) = moderated_server(&backend);
    let keep = post_as(&lb, "ada", "a fine comment");
    let spam = post_as(&lb, "spammer", "buy cheap pills");
    let chrome = Chrome::launch();
    let moderator = chrome.tab(&format!("http://{}/admin", lb.addr));
    sign_in(&moderator);
    assert_eq!(
        js(
            &moderator,
            "sessionStorage.getItem('likeboard.admin-token')"
        ),
        json!(ADMIN_TOKEN)
    );
    assert_eq!(
        js(&moderator, "document.cookie.includes('admin')"),
        json!(false)
    );

    let context = chrome
        .browser
        .new_context()
        .expect("a second browser context");
    let visitor = context.new_tab().expect("a tab in it");
    open_page(&visitor, &format!("http://{}/", lb.addr));
    assert_eq!(board(&visitor).len(), 2);
    assert_eq!(
        js(
            &visitor,
            "document.querySelectorAll('.mod-controls').length"
        ),
        json!(0),
        "an ordinary page has no moderator's controls"
    );
    // Clocked in the pages (one machine, one clock): from the click on Hide
    // to the moment the visitor's list no longer holds the comment.
    js(
        &visitor,
        &format!(
            "(() => {{ new MutationObserver((_, obs) => {{ \
             if (!document.querySelector(\"#comments > li[data-id='{spam}']\")) {{ \
             window.__goneAt = Date.now(); obs.disconnect(); }} }}) \
             .observe(document.getElementById('comments'), {{ childList: true }}); return true; }})()"
        ),
    );
    js(
        &moderator,
        "(() => { addEventListener('click', () => { window.__clickedAt = Date.now(); }, \
         { capture: true, once: true }); return true; })()",
    );
    click(
        &moderator,
        &format!("#comments > li[data-id='{spam}'] .mod-hide"),
    );
    wait_for(&visitor, "typeof window.__goneAt === 'number'");
    let clicked = js(&moderator, "window.__clickedAt")
        .as_u64()
        .expect("the click");
    let gone = js(&visitor, "window.__goneAt").as_u64().unwrap();
    assert!(
        gone.saturating_sub(clicked) <= 1000,
        "the visitor's page dropped the comment {} ms after the click",
        gone.saturating_sub(clicked)
    );
    assert_eq!(
        board(&visitor).iter().map(|c| c.0).collect::<Vec<_>>(),
        vec![keep]
    );
    wait_for(
        &moderator,
        &format!("!document.querySelector(\"#comments > li[data-id='{spam}']\")"),
    );
    wait_for(
        &moderator,
        "document.getElementById('mod-hidden').textContent.includes('buy cheap pills')",
    );
    wait_for(
        &moderator,
        "document.getElementById('mod-audit').textContent.includes('hide')",
    );
    screenshot(&moderator, "moderator.png");

    // Restore, from the panel's list: back on both pages, in its place.
    js(
        &moderator,
        "(() => { [...document.querySelectorAll('#mod-hidden button')] \
         .find(b => b.textContent === 'Restore').click(); return true; })()",
    );
    wait_for(
        &visitor,
        &format!("!!document.querySelector(\"#comments > li[data-id='{spam}']\")"),
    );
    assert_eq!(board(&visitor).len(), 2);
}

/// A locked board disables the form and every like button on an open page
/// at once (`event: locked`), and on a page loaded while it is locked, from
/// its first render; unlocking enables them again.
#[test]
fn a_locked_board_disables_the_form_and_likes() {
    let backend = Backend::redis();
    let (lb, _token) = moderated_server(&backend);
    post_as(&lb, "ada", "one");
    post_as(&lb, "grace", "two");
    let url = format!("http://{}/b/main", lb.addr);
    let chrome = Chrome::launch();
    let tab = chrome.tab(&url);
    let disabled = "document.getElementById('add-fields').disabled \
         && document.getElementById('content').matches(':disabled') \
         && [...document.querySelectorAll('#comments .like')].every(b => b.disabled) \
         && !document.getElementById('locked-note').hidden";
    let enabled = "!document.getElementById('add-fields').disabled \
         && [...document.querySelectorAll('#comments .like')].every(b => !b.disabled) \
         && document.getElementById('locked-note').hidden";
    assert_eq!(js(&tab, enabled), json!(true));
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let lock = |method: &str| {
        let r = http(
            lb.addr,
            method,
            "/api/admin/boards/main/lock",
            &[("Authorization", &auth)],
            b"",
        );
        assert_eq!(r.status, 200, "{}", r.text());
    };
    lock("POST");
    wait_for_within(&tab, disabled, Duration::from_secs(2));
    screenshot(&tab, "locked-board.png");

    // Loaded while locked: disabled in the server's HTML already, and after
    // the script has taken over.
    let html = http(lb.addr, "GET", "/b/main", &[], b"").text();
    assert!(
        html.contains("id=\"add-fields\" class=\"plain\" disabled"),
        "{html}"
    );
    let fresh = chrome.tab(&url);
    assert_eq!(js(&fresh, disabled), json!(true));
    assert_eq!(js(&fresh, "document.body.dataset.locked"), json!("1"));

    lock("DELETE");
    wait_for_within(&tab, enabled, Duration::from_secs(2));
    wait_for_within(&fresh, enabled, Duration::from_secs(2));
}
