//! What every provider client shares: the reqwest client (rustls with the `ring`
//! provider: small, no system OpenSSL; the job's timeout), credentials that never print,
//! and how a transport failure reads.

use crate::provider::error::CallError;
use std::fmt;
use std::sync::Once;
use std::time::Duration;

/// Installs rustls's crypto provider once per process; reqwest needs it before any client
/// is built.
pub fn install_tls_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Another part of the process may have installed one already: that one is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Builds the shared client: per-request `timeout`, keep-alive pooling, no redirects (a
/// payment API that redirects is a misconfiguration, never something to follow blindly),
/// no retries of reqwest's own.
pub fn client(timeout: Duration, pool: usize) -> reqwest::Result<reqwest::Client> {
    install_tls_provider();
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .pool_max_idle_per_host(pool)
        .redirect(reqwest::redirect::Policy::none())
        // Every resend is payrun's decision, made under the idempotency protocol; and with
        // no retries, reqwest does not copy each request's headers in case of one.
        .retry(reqwest::retry::never().max_retries_per_request(0))
        .user_agent(concat!("payrun/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// A credential: kept in memory only; `Debug` shows nothing of it.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(****)")
    }
}

/// A reqwest failure as a [`CallError`]: whether anything may have reached the provider.
pub(crate) fn transport(e: reqwest::Error) -> CallError {
    if e.is_connect() {
        CallError::Connect(without_url(&e))
    } else if e.is_timeout() {
        CallError::Timeout
    } else {
        CallError::Transport(without_url(&e))
    }
}

/// reqwest's messages carry the URL; ours say what happened (the URL may hold an email).
fn without_url(e: &reqwest::Error) -> String {
    let mut source = std::error::Error::source(e);
    let mut last = e.without_url_ref().to_string();
    while let Some(s) = source {
        last = s.to_string();
        source = s.source();
    }
    last
}

trait WithoutUrl {
    fn without_url_ref(&self) -> String;
}

impl WithoutUrl for reqwest::Error {
    fn without_url_ref(&self) -> String {
        let mut s = self.to_string();
        if let Some(url) = self.url()
            && let Some(i) = s.find(&format!(" ({url})"))
        {
            s.truncate(i);
        }
        s
    }
}
