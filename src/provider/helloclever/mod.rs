//! Hello Clever (see shared/api/helloclever.md).

pub mod client;
pub mod methods;
pub mod wire;

/// The real API's sandbox base URL, the default for jobs that do not set one.
pub const SANDBOX_BASE_URL: &str = "https://api.cleverhub.co/api";

/// The card payment statuses (§3.6), the card list's `status` filter.
pub const CARD_STATUSES: [&str; 13] = [
    "pending",
    "authorised",
    "waiting",
    "received",
    "expired",
    "return_pending",
    "return_expired",
    "partially_refunded",
    "return_received",
    "return_rejected",
    "failed",
    "in_dispute",
    "dispute_lost",
];
