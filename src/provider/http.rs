//! The HTTP client payrun talks to providers with: one shared reqwest client, rustls with
//! the `ring` provider (small, no system OpenSSL), the job's timeout.

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
/// payment API that redirects is a misconfiguration, never something to follow blindly).
pub fn client(timeout: Duration, pool: usize) -> reqwest::Result<reqwest::Client> {
    install_tls_provider();
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .pool_max_idle_per_host(pool)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("payrun/", env!("CARGO_PKG_VERSION")))
        .build()
}
