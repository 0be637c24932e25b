//! Hello Clever (see shared/api/helloclever.md).

pub mod client;
pub mod methods;
pub mod wire;

/// The real API's sandbox base URL, the default for jobs that do not set one.
pub const SANDBOX_BASE_URL: &str = "https://api.cleverhub.co/api";
