//! Fault injection, each option on its own: observed rates within statistical bounds for a
//! fixed seed, and — what matters for payments — whether the operation was applied.

use crate::sandbox_support::*;
use payrun::sandbox::{Config, Faults};
use std::io::BufRead;
use std::time::{Duration, Instant};

fn with(faults: Faults, seed: u64) -> Config {
    Config {
        faults,
        seed,
        ..Config::default()
    }
}

async fn statuses(seed: u64, n: usize) -> Vec<u16> {
    let s = start(with(
        Faults {
            error_rate: 0.2,
            ..Faults::default()
        },
        seed,
    ))
    .await;
    let c = client();
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(get(&c, &s, "/v2/payouts/payout_methods").await.0);
    }
    out
}

#[tokio::test]
async fn error_rate_is_seeded_and_within_bounds() {
    let a = statuses(42, 300).await;
    assert_eq!(
        a,
        statuses(42, 300).await,
        "the same seed gives the same faults"
    );
    let errors = a.iter().filter(|s| [500, 502, 503].contains(*s)).count();
    // Binomial(300, 0.2): mean 60, sd 6.9; allow 3.5 sd.
    assert!((36..=84).contains(&errors), "{errors} errors in 300 at 20%");
    assert_eq!(errors + a.iter().filter(|s| **s == 200).count(), 300);
}

#[tokio::test]
async fn server_errors_come_before_anything_is_applied() {
    let s = start(with(
        Faults {
            error_rate: 0.5,
            ..Faults::default()
        },
        7,
    ))
    .await;
    let c = client();
    let mut created = 0;
    for i in 0..40 {
        if post(
            &c,
            &s,
            "/v2/contacts",
            &contact(&format!("e{i}@example.com")),
        )
        .await
        .0 == 200
        {
            created += 1;
        }
    }
    assert!((8..=32).contains(&created), "{created}");
    assert_eq!(
        ledger(&s).await["contacts"].as_array().unwrap().len(),
        created
    );
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after() {
    let s = start(with(
        Faults {
            rate_limit: Some(20),
            ..Faults::default()
        },
        1,
    ))
    .await;
    let c = client();
    let url = format!("{}/v2/payouts/payout_methods", s.base_url());
    let started = Instant::now();
    let replies = futures_join(&c, &url, 60).await;
    // Each one-second window the burst touches lets 20 through.
    let windows = started.elapsed().as_secs() as usize + 2;
    let limited: Vec<&(u16, Option<String>)> =
        replies.iter().filter(|(st, _)| *st == 429).collect();
    let ok = replies.iter().filter(|(st, _)| *st == 200).count();
    assert!(
        ok >= 20 && ok <= 20 * windows,
        "{ok} passed over {windows} windows"
    );
    if windows == 2 {
        assert!(
            !limited.is_empty(),
            "60 requests in under a second must meet the limit"
        );
    }
    assert!(
        limited.iter().all(|(_, ra)| ra.as_deref() == Some("1")),
        "Retry-After: 1 on every 429"
    );
}

async fn futures_join(c: &reqwest::Client, url: &str, n: usize) -> Vec<(u16, Option<String>)> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (c, url) = (c.clone(), url.to_string());
            tokio::spawn(async move {
                let r = c.get(url).send().await.unwrap();
                let ra = r
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                (r.status().as_u16(), ra)
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

/// Creates `n` contacts one by one; returns how many requests failed at the client.
async fn create_contacts(s: &payrun::sandbox::Sandbox, c: &reqwest::Client, n: usize) -> usize {
    let mut failed = 0;
    for i in 0..n {
        let r = c
            .post(format!("{}/v2/contacts", s.base_url()))
            .json(&contact(&format!("x{i}@example.com")))
            .send()
            .await;
        match r {
            Ok(r) => assert_eq!(r.status(), 200),
            Err(_) => failed += 1,
        }
    }
    failed
}

#[tokio::test]
async fn resets_drop_the_connection_before_applying() {
    let s = start(with(
        Faults {
            reset_rate: 0.3,
            ..Faults::default()
        },
        3,
    ))
    .await;
    let failed = create_contacts(&s, &client(), 60).await;
    assert!((6..=32).contains(&failed), "{failed} resets in 60 at 30%");
    assert_eq!(
        ledger(&s).await["contacts"].as_array().unwrap().len(),
        60 - failed,
        "a reset applies nothing"
    );
}

#[tokio::test]
async fn lost_responses_are_applied_but_never_answered() {
    let s = start(with(
        Faults {
            lost_response_rate: 0.3,
            ..Faults::default()
        },
        5,
    ))
    .await;
    let failed = create_contacts(&s, &client(), 60).await;
    assert!((6..=32).contains(&failed), "{failed} lost in 60 at 30%");
    // The case that makes double payments: the client saw an error, the server applied it.
    let l = ledger(&s).await;
    assert_eq!(l["contacts"].as_array().unwrap().len(), 60);
    assert_eq!(
        l["requests"]["POST /api/v2/contacts"]["dropped"], failed,
        "dropped replies are counted: {}",
        l["requests"]
    );
}

#[tokio::test]
async fn late_replies_are_applied_and_outlast_the_client() {
    let faults = Faults {
        timeout_rate: 0.3,
        timeout_delay: Duration::from_secs(30),
        ..Faults::default()
    };
    let s = start(with(faults, 9)).await;
    let failed = create_contacts(&s, &client_with(Duration::from_millis(300)), 30).await;
    assert!((2..=18).contains(&failed), "{failed} timeouts in 30 at 30%");
    assert_eq!(ledger(&s).await["contacts"].as_array().unwrap().len(), 30);
    s.stop().await;
}

#[tokio::test]
async fn latency_is_added_to_api_calls_only() {
    let faults = Faults {
        latency: Some((Duration::from_millis(50), Duration::from_millis(60))),
        ..Faults::default()
    };
    let s = start(with(faults, 1)).await;
    let c = client();
    for _ in 0..5 {
        let t = Instant::now();
        assert_eq!(get(&c, &s, "/v2/payouts/payout_methods").await.0, 200);
        assert!(
            t.elapsed() >= Duration::from_millis(50),
            "{:?}",
            t.elapsed()
        );
    }
}

#[tokio::test]
async fn the_test_endpoints_are_never_faulted() {
    let s = start(with(
        Faults {
            error_rate: 1.0,
            ..Faults::default()
        },
        1,
    ))
    .await;
    let c = client();
    assert_eq!(
        get(&c, &s, "/v2/payouts/payout_methods").await.0 / 100,
        5,
        "every API call fails"
    );
    assert!(
        ledger(&s).await["requests"].is_object(),
        "the ledger still answers"
    );
}

#[test]
fn binary_announces_its_address_on_the_first_line() {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_payrun"))
        .args(["sandbox", "--port", "0", "--seed-data", "2"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let addr = line
        .trim()
        .strip_prefix("payrun sandbox listening on http://127.0.0.1:")
        .unwrap_or_else(|| panic!("first line: {line:?}"));
    assert!(addr.parse::<u16>().is_ok_and(|p| p > 0), "{line:?}");
}

#[tokio::test]
async fn late_applied_requests_land_after_the_client_gave_up() {
    let faults = Faults {
        late_apply_rate: 1.0,
        late_apply_delay: Duration::from_millis(600),
        ..Faults::default()
    };
    let s = start(with(faults, 4)).await;
    let quick = client_with(Duration::from_millis(200));
    let t = Instant::now();
    let sent = quick
        .post(format!("{}/v2/contacts", s.base_url()))
        .json(&contact("late@example.com"))
        .send()
        .await;
    assert!(sent.is_err(), "the client times out: {sent:?}");
    // Reads are never held: a lookup right after the timeout answers at once — not found.
    let (status, _) = get(&client(), &s, "/v2/contacts/detail?email=late@example.com").await;
    assert_ne!(status, 200, "nothing is applied before the delay");
    assert!(
        t.elapsed() < Duration::from_millis(550),
        "{:?}",
        t.elapsed()
    );
    let applied =
        eventually(|| async { ledger(&s).await["contacts"].as_array().unwrap().len() == 1 }).await;
    assert!(
        applied,
        "applied after the delay, with the client long gone"
    );
    assert!(
        t.elapsed() >= Duration::from_millis(600),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn listings_show_new_records_only_after_the_lag() {
    let faults = Faults {
        listing_lag: Duration::from_millis(700),
        ..Faults::default()
    };
    let s = start(with(faults, 4)).await;
    let c = client();
    assert_eq!(
        post(&c, &s, "/v2/contacts", &contact("lag@example.com"))
            .await
            .0,
        200
    );
    let (_, b) = post(
        &c,
        &s,
        "/v2/payouts",
        &payout("lag@example.com", "10", "lagged"),
    )
    .await;
    let uuid = b["uuid"].as_str().unwrap().to_string();
    let day = chrono::Duration::days(1);
    let at = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H:%M:%S").to_string();
    let now = chrono::Utc::now();
    let window = format!("from_date={}&to_date={}", at(now - day), at(now + day));
    // Lookups by key see them at once; listings do not, yet.
    assert_eq!(
        get(&c, &s, &format!("/v2/payouts/detail?uuid={uuid}"))
            .await
            .0,
        200
    );
    assert_eq!(
        get(&c, &s, "/v2/contacts/detail?email=lag@example.com")
            .await
            .0,
        200
    );
    let listed = |path: String| {
        let c = c.clone();
        let s = &s;
        async move {
            get(&c, s, &path).await.1["records"]
                .as_array()
                .map_or(0, Vec::len)
        }
    };
    let payouts = format!("/v2/payouts/all?{window}&page=1");
    assert_eq!(listed(payouts.clone()).await, 0);
    assert_eq!(listed("/v2/contacts/?page=1".into()).await, 0);
    let t = Instant::now();
    assert!(
        eventually(|| {
            let f = listed(payouts.clone());
            async move { f.await == 1 }
        })
        .await
    );
    assert!(
        eventually(|| {
            let f = listed("/v2/contacts/?page=1".into());
            async move { f.await == 1 }
        })
        .await
    );
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
}
