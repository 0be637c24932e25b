//! `payrun sandbox`: a local emulator of the Hello Clever API (see
//! shared/api/helloclever.md) for tests, demos and `payrun run --sandbox`.
//!
//! It checks auth and the documented rules, keeps a ledger, moves statuses over time, and
//! injects the faults that cause double payments in real life — including the lost
//! response: the operation is applied and the connection dropped before the reply. It has
//! its own wire types and checks: it shares no serde type with payrun's client, so a
//! serialisation bug cannot pass on both sides at once.

mod api;
mod contacts;
mod exports;
pub mod faults;
mod finhub;
mod ledger;
mod methods;
pub mod paths;
mod payins;
mod payouts;
mod seed;

pub use faults::Faults;
pub use finhub::FinhubConfig;

/// The sandbox's payout methods, as `GET /v2/payouts/payout_method/params` describes each.
pub fn payout_method_records() -> Vec<serde_json::Value> {
    methods::PAYOUT.iter().map(|m| m.record("payout")).collect()
}

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use faults::{After, Before, Injector};
use hyper_util::rt::TokioIo;
use ledger::Ledger;
use rust_decimal::Decimal;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tower::ServiceExt;

/// How the emulator behaves.
#[derive(Debug, Clone)]
pub struct Config {
    pub app_id: String,
    pub secret_key: String,
    /// Time from KYC submission to its outcome.
    pub kyc_delay: Duration,
    /// Time from payout creation to `completed` (`processing` from half-way).
    pub payout_delay: Duration,
    /// Balances per currency; currencies not listed are unlimited.
    pub balances: BTreeMap<String, Decimal>,
    pub faults: Faults,
    pub seed: u64,
    /// Records of each exportable kind to create at start, spread over the last 400 days.
    pub seed_data: usize,
    /// The FinHub side: client credentials, tenant, token lifetime.
    pub finhub: FinhubConfig,
    /// A batch short of funds is paid through the merchant's PayTo agreement
    /// (`HC_PAYOUT2`) instead of waiting for a top-up (`HC_PAYOUT1`).
    pub payto_funding: bool,
    /// A batch still waiting for funds this long after its creation expires.
    pub unfunded_expiry: Option<Duration>,
    /// Payers pay each payin in full this long after it was created (if it has not
    /// expired by then); `None`: only `POST /v2/payins/simulate` pays one.
    pub payin_delay: Option<Duration>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            app_id: "sandbox-app".into(),
            secret_key: "sandbox-secret".into(),
            kyc_delay: Duration::from_secs(5),
            payout_delay: Duration::from_secs(10),
            balances: BTreeMap::new(),
            faults: Faults::default(),
            seed: 1,
            seed_data: 0,
            finhub: FinhubConfig::default(),
            payto_funding: false,
            unfunded_expiry: None,
            payin_delay: None,
        }
    }
}

/// The shared state of a running emulator.
pub(crate) struct App {
    pub config: Config,
    pub injector: Injector,
    pub ledger: Mutex<Ledger>,
    /// API requests being answered now, and the most at once (shown by the ledger: tests
    /// see a client's concurrency).
    pub in_flight: std::sync::atomic::AtomicUsize,
    pub peak_in_flight: std::sync::atomic::AtomicUsize,
}

impl App {
    pub fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running emulator; dropping it (or [`Sandbox::stop`]) shuts it down.
pub struct Sandbox {
    pub addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Sandbox {
    /// The Hello Clever API base URL of this emulator (`http://127.0.0.1:PORT/api`).
    pub fn base_url(&self) -> String {
        format!("http://{}{}", self.addr, paths::API)
    }

    /// The FinHub gateway of this emulator (`http://127.0.0.1:PORT/finhub`): the token
    /// endpoint is `{this}/oauth/token`, the customer API `{this}/customer/2.0.0`.
    pub fn finhub_url(&self) -> String {
        format!("http://{}{}", self.addr, paths::FINHUB)
    }

    /// Stops accepting, closes every connection and waits for the server to end.
    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

/// Starts the emulator on `listener` (bind `127.0.0.1:0` for a free port).
pub async fn start(listener: TcpListener, config: Config) -> std::io::Result<Sandbox> {
    let addr = listener.local_addr()?;
    let mut ledger = Ledger::new(config.seed, config.balances.clone());
    if config.seed_data > 0 {
        seed::populate(&mut ledger, config.seed_data);
    }
    let app = Arc::new(App {
        injector: Injector::new(config.faults.clone(), config.seed),
        ledger: Mutex::new(ledger),
        config,
        in_flight: Default::default(),
        peak_in_flight: Default::default(),
    });
    let router = router(app);
    let (shutdown, watcher) = watch::channel(false);
    let task = tokio::spawn(accept_loop(listener, router, watcher));
    Ok(Sandbox {
        addr,
        shutdown,
        task: Some(task),
    })
}

/// A per-connection switch a handler pulls to drop its connection without replying.
#[derive(Clone)]
struct Kill(Arc<Notify>);

async fn accept_loop(listener: TcpListener, router: Router, mut shutdown: watch::Receiver<bool>) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Out of descriptors and the like: back off instead of spinning.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let _ = stream.set_nodelay(true);
        let (router, mut shutdown) = (router.clone(), shutdown.clone());
        tokio::spawn(async move {
            let kill = Arc::new(Notify::new());
            let switch = Kill(kill.clone());
            let service =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let mut req = req.map(Body::new);
                    req.extensions_mut().insert(switch.clone());
                    router.clone().oneshot(req)
                });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            // Whichever ends first; dropping `conn` closes the socket with no reply.
            tokio::select! {
                _ = conn => {}
                _ = kill.notified() => {}
                _ = shutdown.wait_for(|stop| *stop) => {}
            }
        });
    }
}

fn router(app: Arc<App>) -> Router {
    use paths::*;
    let api = Router::new()
        .route(CONTACTS, post(contacts::create).delete(contacts::delete))
        .route(CONTACTS_LIST, get(contacts::list))
        .route(CONTACT_DETAIL, get(contacts::detail))
        .route(CONTACT_UPDATE, put(contacts::update))
        .route(KYC_SUBMIT, post(contacts::submit_kyc))
        .route(KYC_SHARE_TOKEN, post(contacts::submit_kyc_token))
        .route(PAYOUT_METHODS, get(payouts::methods))
        .route(PAYOUT_METHOD_PARAMS, get(payouts::method_params))
        .route(PAYOUTS, post(payouts::create))
        .route(PAYOUT_DETAIL, get(payouts::detail))
        .route(PAYOUTS_LIST, get(payouts::list))
        .route(PAYOUT_SIMULATE, post(payouts::simulate))
        .route(PAYOUT_CANCEL_SCHEDULED, post(payouts::cancel_scheduled))
        .route(PAYIN_METHODS, get(payins::methods))
        .route(PAYIN_METHOD_PARAMS, get(payins::method_params))
        .route(PAYINS, post(payins::create))
        .route(PAYINS_LIST, get(payins::list))
        .route(PAYIN_DETAIL, get(payins::detail))
        .route(PAYIN_SIMULATE, post(payins::simulate))
        .route(PAYIN_REFUND, post(payins::refund))
        .route(PAYIN_CANCEL, post(payins::cancel))
        .route(PAYTO_SEARCH, get(exports::payto_search))
        .route(CARD_PAYMENTS, get(exports::card_payments))
        .fallback(api::not_found)
        // Three images of up to 10 MiB each, plus the text parts.
        .layer(DefaultBodyLimit::max(
            3 * contacts::MAX_IMAGE_BYTES + (1 << 20),
        ))
        .layer(middleware::from_fn_with_state(app.clone(), authenticate))
        .layer(middleware::from_fn_with_state(app.clone(), inject_faults));
    // FinHub: the same faults, its own auth; served versioned and unversioned.
    let customer = Router::new()
        .route(paths::FH_CREATE, post(finhub::create))
        .route(paths::FH_CREATE_BULK, post(finhub::create_bulk))
        .route(paths::FH_DETAILS, get(finhub::details))
        .route(paths::FH_UPDATE, put(finhub::update))
        .route(paths::FH_UPDATE_STATUS, post(finhub::update_status))
        .route(paths::FH_KYC_CONFIRMATION, post(finhub::kyc_confirmation))
        .route(paths::FH_CREATE_DOCUMENTS, post(finhub::create_documents))
        .route(paths::FH_DOCUMENTS, get(finhub::documents))
        .route(paths::FH_BY_STATUS, post(finhub::by_status))
        .layer(middleware::from_fn_with_state(
            app.clone(),
            finhub::authenticate,
        ))
        .layer(middleware::from_fn_with_state(app.clone(), inject_faults));
    let fh = Router::new()
        .route(paths::FH_TOKEN, post(finhub::token))
        .nest(paths::FH_CUSTOMER_V2, customer.clone())
        .nest(paths::FH_CUSTOMER, customer)
        .layer(middleware::from_fn(finhub::error_shape));
    Router::new()
        .nest(API, api)
        .nest(paths::FINHUB, fh)
        .route(LEDGER, get(ledger::show))
        .route(RESET, post(ledger::reset))
        .route(TOP_UP, post(ledger::top_up))
        .layer(middleware::from_fn_with_state(app.clone(), count))
        .with_state(app)
}

/// Counts requests by endpoint and status code, for the ledger. A request whose
/// connection was dropped (reset, lost response) never completes: it counts as status 0,
/// shown as `dropped`.
async fn count(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    use std::sync::atomic::Ordering;
    struct Pending(Arc<App>, Option<String>);
    impl Drop for Pending {
        fn drop(&mut self) {
            self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
            if let Some(endpoint) = self.1.take() {
                self.0.ledger().count(endpoint, 0);
            }
        }
    }
    let now = app.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    app.peak_in_flight.fetch_max(now, Ordering::SeqCst);
    let mut pending = Pending(app, Some(format!("{} {}", req.method(), req.uri().path())));
    let response = next.run(req).await;
    if let Some(endpoint) = pending.1.take() {
        pending
            .0
            .ledger()
            .count(endpoint, response.status().as_u16());
    }
    response
}

/// Checks `app-id` and `secret-key` on every API call.
async fn authenticate(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let ok = {
        // Scoped: a borrow of the request must not live across the await below.
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
        };
        constant_time_eq(header("app-id"), &app.config.app_id)
            && constant_time_eq(header("secret-key"), &app.config.secret_key)
    };
    if !ok {
        return api::ApiError::unauthorised().into_response();
    }
    next.run(req).await
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Latency, rate limit, 5xx and resets before the handler; lost and late replies after.
async fn inject_faults(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    if let Some(latency) = app.injector.latency() {
        tokio::time::sleep(latency).await;
    }
    let kill = req.extensions().get::<Kill>().cloned();
    // FinHub reads customers by status with a POST: it changes nothing.
    let changes = req.method() != axum::http::Method::GET
        && !req.uri().path().contains("/getByCustomerStatus/");
    match app.injector.before(changes) {
        Before::Proceed => {}
        Before::RateLimited(secs) => {
            let mut r = api::ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "RATE_LIMITED",
                "Too many requests",
            )
            .into_response();
            r.headers_mut()
                .insert("retry-after", HeaderValue::from(secs));
            return r;
        }
        Before::ServerError(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return api::ApiError::new(status, "SERVER_ERROR", "Injected server error")
                .into_response();
        }
        Before::Reset => return drop_connection(kill).await,
        Before::LateApply => return apply_late(&app, req, next).await,
    }
    let response = next.run(req).await;
    match app.injector.after(changes) {
        After::Reply => response,
        After::Lose => drop_connection(kill).await,
        After::Delay => {
            tokio::time::sleep(app.config.faults.timeout_delay).await;
            response
        }
        // Applied, and answered with a page no client can read (only a success: an
        // error's answer is left alone).
        After::Garble if response.status().is_success() => (
            [(axum::http::header::CONTENT_TYPE, "text/html")],
            "<html><body>502 upstream answered</body></html>",
        )
            .into_response(),
        After::Garble => response,
    }
}

/// Holds a request for `late_apply_delay`, then applies it — on a task of its own, so it is
/// applied even when the client gave up and closed the connection meanwhile (the body is
/// read first, as a gateway would have it).
async fn apply_late(app: &App, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 64 << 20).await else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let req = Request::from_parts(parts, Body::from(bytes));
    let delay = app.config.faults.late_apply_delay;
    let applied = tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        next.run(req).await
    });
    applied
        .await
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// Drops the request's connection: the client gets no reply at all.
async fn drop_connection(kill: Option<Kill>) -> Response {
    match kill {
        Some(Kill(notify)) => {
            notify.notify_one();
            // The connection task drops this future with the connection.
            std::future::pending().await
        }
        None => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
