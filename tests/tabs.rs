//! Many tabs of one board in one headless Chromium profile, over plain HTTP/1.1
//! on loopback (issue 16). A browser opens at most 6 connections per host; the
//! tabs share one event stream (`static/stream-worker.js`: a SharedWorker, or
//! with `?share=locks` one tab elected with Web Locks relaying over
//! BroadcastChannel), so all ten load, every like reaches all of them, and
//! closing the tab that holds the stream loses no event.
//!
//! Each test starts its own browser with a fresh profile, one at a time
//! (`support::Chrome`, shared with `tests/browser.rs`).

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use headless_chrome::Tab;
use serde_json::{json, Value};

use support::{Backend, Chrome, Likeboard};

/// How many tabs: more than the browser's 6 connections per host.
const TABS: usize = 10;
/// The longest a like may take to show in every tab.
const EVERY_TAB_WITHIN: Duration = Duration::from_secs(2);
/// The longest any other wait in these tests may take.
const PATIENCE: Duration = Duration::from_secs(20);

/// `n` tabs of `url` in one profile, opened one after another, each waited on
/// until live. With a stream per tab the seventh would never load: its `GET /`
/// would wait behind six open streams.
fn open_tabs(chrome: &Chrome, url: &str, n: usize) -> Vec<Arc<Tab>> {
    (0..n).map(|_| chrome.tab(url)).collect()
}

const BADGE_LIVE: &str = "document.getElementById('status').textContent === 'live'";

/// Evaluates `expr` in the page and returns its value (via JSON).
fn js(tab: &Tab, expr: &str) -> Value {
    let wrapped = format!("(async () => JSON.stringify(await ({expr})))()");
    match tab.evaluate(&wrapped, true).expect("evaluating JS").value {
        Some(Value::String(s)) => serde_json::from_str(&s).unwrap_or(Value::Null),
        _ => Value::Null,
    }
}

/// Polls `cond` (a JS expression) until it is true; panics after `limit`.
fn wait_until(tab: &Tab, cond: &str, limit: Duration) {
    let start = Instant::now();
    loop {
        if js(tab, cond) == json!(true) {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "waited {limit:?} for `{cond}`; badge: {}, sharing: {}",
            js(tab, "document.getElementById('status').textContent"),
            js(tab, "document.documentElement.dataset.share ?? null"),
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// The score comment `id` shows in this tab (None if it is not on the board).
fn score_in(tab: &Tab, id: u64) -> Value {
    js(
        tab,
        &format!("document.querySelector(\"#comments > li[data-id='{id}'] .score\")?.textContent"),
    )
}

/// A JS condition: every comment in `scores` shows its score.
fn shows(scores: &[(u64, u64)]) -> String {
    scores
        .iter()
        .map(|(id, score)| {
            format!(
                "document.querySelector(\"#comments > li[data-id='{id}'] .score\")?.textContent === '{score}'"
            )
        })
        .collect::<Vec<_>>()
        .join(" && ")
}

/// Waits until every tab shows `scores`, all within `limit` of now.
fn every_tab_shows(tabs: &[Arc<Tab>], scores: &[(u64, u64)], limit: Duration) {
    let start = Instant::now();
    let cond = shows(scores);
    for (i, tab) in tabs.iter().enumerate() {
        let left = limit.saturating_sub(start.elapsed());
        if js(tab, &cond) != json!(true) {
            assert!(
                !left.is_zero(),
                "tab {} did not show {scores:?} within {limit:?}: {:?}",
                i + 1,
                scores
                    .iter()
                    .map(|(id, _)| score_in(tab, *id))
                    .collect::<Vec<_>>()
            );
            wait_until(tab, &cond, left);
        }
    }
}

/// A real click on comment `id`'s like button, in the foreground (a background
/// tab gets no input); waits until the server's answer shows it liked.
fn click_like(tab: &Tab, id: u64) {
    let button = format!("#comments > li[data-id='{id}'] .like");
    tab.activate().expect("bringing the tab to the front");
    tab.wait_for_element(&button)
        .expect("the like button")
        .click()
        .expect("clicking");
    wait_until(
        tab,
        &format!("document.querySelector(\"{button}\").getAttribute('aria-pressed') === 'true'"),
        PATIENCE,
    );
}

/// How each tab gets its events: `data-share` on the page ("worker", "locks", "tab").
fn sharing(tabs: &[Arc<Tab>]) -> Vec<Value> {
    tabs.iter()
        .map(|t| js(t, "document.documentElement.dataset.share ?? null"))
        .collect()
}

/// Which tab holds the stream (Web Locks), or None while the lock changes hands.
fn holder(tabs: &[Arc<Tab>]) -> Option<usize> {
    let holders: Vec<usize> = (0..tabs.len())
        .filter(|&i| {
            js(
                &tabs[i],
                "document.documentElement.dataset.holdsStream === 'true'",
            ) == json!(true)
        })
        .collect();
    assert!(
        holders.len() <= 1,
        "more than one tab holds the stream: {holders:?}"
    );
    holders.first().copied()
}

/// Three comments to like, and the server, with fast heartbeats so a closed
/// tab's stream is noticed (and uncounted) within two seconds.
fn board() -> (Likeboard, Vec<u64>) {
    let lb = Backend::memory().start(&["--heartbeat-secs", "1"]);
    let ids = ["first", "second", "third"]
        .iter()
        .map(|c| lb.add_comment(c))
        .collect();
    (lb, ids)
}

fn like(lb: &Likeboard, id: u64, visitor: u64) {
    let res = lb.like("POST", id, &support::visitor(visitor));
    assert_eq!(res.status, 200, "{}", res.text());
}

/// Ten tabs share one SharedWorker stream: the server sees one stream, an API
/// like shows in all ten within 2 s, a like clicked in the tenth shows in the
/// first, and after the first tab closes the other nine still get every like.
#[test]
fn ten_tabs_share_one_stream_in_a_shared_worker() {
    let (lb, ids) = board();
    let chrome = Chrome::launch();
    let mut tabs = open_tabs(&chrome, &format!("http://{}/", lb.addr), TABS);
    assert_eq!(sharing(&tabs), vec![json!("worker"); TABS]);
    lb.wait_subscribers(1, PATIENCE);

    like(&lb, ids[0], 1);
    every_tab_shows(&tabs, &[(ids[0], 1)], EVERY_TAB_WITHIN);

    click_like(&tabs[TABS - 1], ids[1]);
    wait_until(&tabs[0], &shows(&[(ids[1], 1)]), EVERY_TAB_WITHIN);

    tabs.remove(0).close(true).expect("closing the first tab");
    for v in 2..8 {
        like(&lb, ids[(v % 3) as usize], v);
    }
    every_tab_shows(&tabs, &[(ids[0], 3), (ids[1], 3), (ids[2], 2)], PATIENCE);
    lb.wait_subscribers(1, PATIENCE);
}

/// The Web Locks fallback (`?share=locks`): one tab holds the stream and relays
/// it; when that tab closes another takes over from the last id it saw, and no
/// like or comment made during the handover is missed by any tab.
#[test]
fn ten_tabs_share_one_stream_through_web_locks() {
    let (lb, ids) = board();
    let chrome = Chrome::launch();
    let mut tabs = open_tabs(&chrome, &format!("http://{}/?share=locks", lb.addr), TABS);
    assert_eq!(sharing(&tabs), vec![json!("locks"); TABS]);
    let first_holder = holder(&tabs).expect("a tab holds the stream");
    lb.wait_subscribers(1, PATIENCE);

    like(&lb, ids[0], 1);
    every_tab_shows(&tabs, &[(ids[0], 1)], EVERY_TAB_WITHIN);

    click_like(&tabs[TABS - 1], ids[1]);
    wait_until(&tabs[0], &shows(&[(ids[1], 1)]), EVERY_TAB_WITHIN);

    // Close the holder and keep the board busy while the lock changes hands.
    tabs.remove(first_holder)
        .close(true)
        .expect("closing the tab that holds the stream");
    for v in 2..8 {
        like(&lb, ids[(v % 3) as usize], v);
    }
    let late = lb.add_comment("posted during the handover");
    like(&lb, late, 1);
    let start = Instant::now();
    let next = loop {
        if let Some(i) = holder(&tabs) {
            break i;
        }
        assert!(start.elapsed() < PATIENCE, "no tab took the stream over");
        std::thread::sleep(Duration::from_millis(50));
    };
    every_tab_shows(
        &tabs,
        &[(ids[0], 3), (ids[1], 3), (ids[2], 2), (late, 1)],
        PATIENCE,
    );
    for tab in &tabs {
        wait_until(tab, BADGE_LIVE, PATIENCE);
    }
    // The old holder's stream is gone and the new one is the only one.
    lb.wait_subscribers(1, PATIENCE);

    // The new holder relays live events too.
    like(&lb, ids[2], 9);
    every_tab_shows(&tabs, &[(ids[2], 3)], EVERY_TAB_WITHIN);
    assert_eq!(holder(&tabs), Some(next));
}

/// With `--classroom`, a fault pressed in one tab disturbs the stream it shares
/// with the others: "answer 204" stops it, and every tab's badge says offline
/// and why.
fn a_fault_in_one_tab_stops_the_shared_stream(query: &str) {
    let lb = Backend::memory().start(&["--classroom"]);
    lb.add_comment("a fault is coming");
    let chrome = Chrome::launch();
    let tabs = open_tabs(&chrome, &format!("http://{}/{query}", lb.addr), 2);
    let button = "[data-fault='answer-204']";
    // With Web Locks, a tab that does not hold the stream presses the button.
    let presser = &tabs[if holder(&tabs) == Some(1) { 0 } else { 1 }];
    presser.activate().expect("bringing the tab to the front");
    presser
        .wait_for_element(button)
        .expect("the fault button")
        .click()
        .expect("clicking");
    for tab in &tabs {
        wait_until(
            tab,
            "document.getElementById('status').textContent === 'offline' && \
             document.getElementById('status-note-text').textContent.includes('204')",
            PATIENCE,
        );
    }
    lb.wait_subscribers(0, PATIENCE);
}

/// The fault panel reaches the SharedWorker's stream.
#[test]
fn a_fault_in_one_tab_stops_the_shared_worker_stream() {
    a_fault_in_one_tab_stops_the_shared_stream("");
}

/// The fault panel of a tab that does not hold the stream reaches the one that does.
#[test]
fn a_fault_in_one_tab_stops_the_locked_stream() {
    a_fault_in_one_tab_stops_the_shared_stream("?share=locks");
}

/// `?share=off` is the teaching switch back to one stream per tab: the server
/// then counts one stream for each.
#[test]
fn share_off_gives_each_tab_its_own_stream() {
    let (lb, _) = board();
    let chrome = Chrome::launch();
    let tabs = open_tabs(&chrome, &format!("http://{}/?share=off", lb.addr), 3);
    assert_eq!(sharing(&tabs), vec![json!("tab"); 3]);
    lb.wait_subscribers(3, PATIENCE);
}

/// Posts a comment on `board` through the API and returns its id.
fn comment_on(lb: &Likeboard, board: &str, content: &str) -> u64 {
    let body = json!({ "content": content, "nickname": "t" }).to_string();
    let res = support::http(
        lb.addr,
        "POST",
        &format!("/api/boards/{board}/comments"),
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    );
    assert_eq!(res.status, 201, "{}", res.text());
    res.json()["id"].as_u64().expect("the comment's id")
}

/// Likes comment `id` of `board` through the API as visitor `n`.
fn like_on(lb: &Likeboard, board: &str, id: u64, n: u64) {
    let cookie = format!("lb_visitor={}", support::visitor(n));
    let res = support::http(
        lb.addr,
        "POST",
        &format!("/api/boards/{board}/comments/{id}/like"),
        &[("Cookie", &cookie)],
        b"",
    );
    assert_eq!(res.status, 200, "{}", res.text());
}

/// Two boards open side by side, five tabs each, in one profile: each board is
/// its own shared stream (two on the server for ten tabs), and a like on one
/// board shows in all of its tabs and in none of the other's (ids are per
/// board, so both boards have a comment 1).
#[test]
fn two_boards_in_tabs_side_by_side_are_two_streams() {
    let lb = Backend::memory().start(&["--heartbeat-secs", "1"]);
    let (one, two) = (
        comment_on(&lb, "one", "on one"),
        comment_on(&lb, "two", "on two"),
    );
    assert_eq!((one, two), (1, 1));
    let chrome = Chrome::launch();
    let (mut on_one, mut on_two) = (Vec::new(), Vec::new());
    for _ in 0..TABS / 2 {
        on_one.push(chrome.tab(&format!("http://{}/b/one", lb.addr)));
        on_two.push(chrome.tab(&format!("http://{}/b/two", lb.addr)));
    }
    lb.wait_subscribers(2, PATIENCE);

    like_on(&lb, "one", one, 1);
    every_tab_shows(&on_one, &[(one, 1)], EVERY_TAB_WITHIN);
    click_like(on_two.last().unwrap(), two);
    every_tab_shows(&on_two, &[(two, 1)], EVERY_TAB_WITHIN);
    like_on(&lb, "two", two, 2);
    every_tab_shows(&on_two, &[(two, 2)], EVERY_TAB_WITHIN);
    // Board one heard nothing of board two's likes.
    every_tab_shows(&on_one, &[(one, 1)], EVERY_TAB_WITHIN);
    // A comment posted on board two appears live in its tabs only.
    let second = comment_on(&lb, "two", "only on two");
    every_tab_shows(&on_two, &[(second, 0), (two, 2)], EVERY_TAB_WITHIN);
    let has_second = "[...document.querySelectorAll('#comments .content')]\
         .some(p => p.textContent === 'only on two')";
    for tab in on_two.iter() {
        assert_eq!(js(tab, has_second), json!(true));
    }
    for tab in on_one.iter() {
        assert_eq!(
            js(tab, has_second),
            json!(false),
            "board one shows board two's comment"
        );
    }
    // Each page knows its board: its name, its title, and links to the others.
    assert_eq!(
        js(
            &on_one[0],
            "document.getElementById('board-name').textContent"
        ),
        json!("one")
    );
    assert_eq!(js(&on_two[0], "document.title"), json!("two · likeboard"));
    assert_eq!(
        js(
            &on_one[0],
            "[...document.querySelectorAll('nav.boards a')].map(a => a.getAttribute('href')).sort().join(' ')"
        ),
        json!("/b/main /b/one /b/two")
    );

    // Closing a tab of one board leaves the other board's stream alone.
    on_one.remove(0).close(true).expect("closing a tab");
    on_two.remove(0).close(true).expect("closing a tab");
    like_on(&lb, "one", one, 3);
    every_tab_shows(&on_one, &[(one, 2)], PATIENCE);
    every_tab_shows(&on_two, &[(two, 2)], PATIENCE);
    lb.wait_subscribers(2, PATIENCE);
}
