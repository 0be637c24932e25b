//! Sandbox benchmark: requests/s of `POST /v2/contacts` (faults off) measured with `wrk`,
//! next to the same `wrk` run against a trivial axum handler in the same process and run.
//!
//! Run: `cargo bench --bench sandbox` (needs `wrk`: `apt-get install wrk`).
//! DURATION=10s and CONNECTIONS=32 may be set.

use axum::Json;
use axum::routing::post;
use payrun::sandbox::{self, Config};
use serde_json::json;
use std::process::Command;

/// Each request creates a new contact: a counter per wrk thread keeps emails unique.
const SCRIPT: &str = r#"
local counter = 0
local id = 0
setup = function(thread) id = id + 1; thread:set("tid", id) end
request = function()
  counter = counter + 1
  local body = string.format('{"email":"bench-%d-%d@example.com","first_name":"Luxy","last_name":"Tran","type":"individual","dob":"1991-12-24","reg_no":"123","phone":"+6123224242","gender":"male","street":"338 George Street","city":"Sydney","postal_code":"2000","state":"NSW","country":"AU"}', tid, counter)
  return wrk.format("POST", nil, {["content-type"]="application/json", ["app-id"]="sandbox-app", ["secret-key"]="sandbox-secret"}, body)
end
"#;

fn main() {
    let duration = std::env::var("DURATION").unwrap_or_else(|_| "5s".into());
    let connections = std::env::var("CONNECTIONS").unwrap_or_else(|_| "32".into());
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let script = dir.join("bench-contacts.lua");
    std::fs::write(&script, SCRIPT).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (sandbox_url, trivial_url, sb) = rt.block_on(async {
        let sb = sandbox::start(
            tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
            Config::default(),
        )
        .await
        .unwrap();
        let trivial = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let trivial_addr = trivial.local_addr().unwrap();
        let app = axum::Router::new().route(
            "/api/v2/contacts",
            post(|| async { Json(json!({"email": "trivial@example.com"})) }),
        );
        tokio::spawn(async move { axum::serve(trivial, app).await.unwrap() });
        (
            format!("{}/v2/contacts", sb.base_url()),
            format!("http://{trivial_addr}/api/v2/contacts"),
            sb,
        )
    });
    let _guard = rt.enter();
    let run = |url: &str| -> f64 {
        let out = Command::new("wrk")
            .args([
                "-t2",
                "-c",
                &connections,
                "-d",
                &duration,
                "-s",
                script.to_str().unwrap(),
                url,
            ])
            .output()
            .expect("wrk is needed: apt-get install wrk");
        let text = String::from_utf8_lossy(&out.stdout);
        print!("{text}");
        assert!(!text.contains("Non-2xx"), "every request must succeed");
        text.lines()
            .find_map(|l| l.strip_prefix("Requests/sec:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("wrk prints Requests/sec")
    };
    println!("== trivial axum handler");
    let trivial = run(&trivial_url);
    println!("== payrun sandbox POST /v2/contacts (auth, validation, ledger)");
    let sandbox = run(&sandbox_url);
    println!();
    println!(
        "sandbox {sandbox:.0} req/s, trivial {trivial:.0} req/s, ratio {:.2} ({connections} connections, {duration})",
        sandbox / trivial
    );
    drop(sb);
}
