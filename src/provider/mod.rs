//! Payment providers: what payrun knows of each API — the shared HTTP client, how failures
//! are classified, and per provider its client, wire types and the facts validation needs.

pub mod error;
pub mod finhub;
pub mod helloclever;
pub mod http;

/// Which API a job talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    HelloClever,
    FinHub,
}

impl ProviderKind {
    pub const NAMES: [&'static str; 2] = ["helloclever", "finhub"];

    pub fn parse(s: &str) -> Option<ProviderKind> {
        match s {
            "helloclever" => Some(ProviderKind::HelloClever),
            "finhub" => Some(ProviderKind::FinHub),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::HelloClever => "helloclever",
            ProviderKind::FinHub => "finhub",
        }
    }
}
