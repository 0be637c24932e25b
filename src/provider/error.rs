//! What can go wrong with a provider call, and the one function that decides what it means
//! for retrying and for "could this have been applied?".

use std::time::Duration;

/// A failed provider call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The connection could not be made: nothing was sent.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// No reply within the timeout: the request may have been applied.
    #[error("no reply within the timeout")]
    Timeout,
    /// The connection broke after the request was sent: it may have been applied.
    #[error("connection lost: {0}")]
    Transport(String),
    /// The provider answered with an error status.
    #[error("HTTP {status}{}: {message}", code.as_ref().map(|c| format!(" {c}")).unwrap_or_default())]
    Status {
        status: u16,
        code: Option<String>,
        message: String,
        retry_after: Option<Duration>,
    },
    /// A 2xx reply that does not parse: the operation happened; what it returned is unknown.
    #[error("unreadable reply: {0}")]
    Decode(String),
}

/// What a failure means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Try again; `maybe_applied` means ask the provider before sending again.
    Retry {
        maybe_applied: bool,
        after: Option<Duration>,
    },
    /// The provider refused it: the item fails with the provider's message.
    Reject,
}

impl CallError {
    /// An error status; a reply without a message reads `HTTP <status>`.
    pub fn status(
        status: u16,
        code: Option<String>,
        message: String,
        retry_after: Option<Duration>,
    ) -> CallError {
        CallError::Status {
            status,
            code,
            message: if message.is_empty() {
                format!("HTTP {status}")
            } else {
                message
            },
            retry_after,
        }
    }

    /// Classifies a failure. Retryable: connect errors, timeouts, broken connections,
    /// 429 and 500/502/503/504; everything else is a rejection.
    pub fn verdict(&self) -> Verdict {
        match self {
            CallError::Connect(_) => Verdict::Retry {
                maybe_applied: false,
                after: None,
            },
            CallError::Timeout | CallError::Transport(_) | CallError::Decode(_) => Verdict::Retry {
                maybe_applied: true,
                after: None,
            },
            CallError::Status {
                status: 429,
                retry_after,
                ..
            } => Verdict::Retry {
                maybe_applied: false,
                after: *retry_after,
            },
            // A 5xx may come after the body was applied: treat as in doubt.
            CallError::Status {
                status: 500 | 502 | 503 | 504,
                retry_after,
                ..
            } => Verdict::Retry {
                maybe_applied: true,
                after: *retry_after,
            },
            CallError::Status { .. } => Verdict::Reject,
        }
    }

    /// The provider's error code, when it gave one (or the HTTP status).
    pub fn code(&self) -> String {
        match self {
            CallError::Status { code: Some(c), .. } => c.clone(),
            CallError::Status { status, .. } => format!("HTTP_{status}"),
            CallError::Connect(_) => "CONNECT".into(),
            CallError::Timeout => "TIMEOUT".into(),
            CallError::Transport(_) => "TRANSPORT".into(),
            CallError::Decode(_) => "DECODE".into(),
        }
    }

    pub fn is_rate_limited(&self) -> bool {
        matches!(self, CallError::Status { status: 429, .. })
    }
}

/// A provider's error answer: its status, its `Retry-After`, and the code and message that
/// `words` finds in its body (each provider words them its own way).
pub async fn status_error(
    response: reqwest::Response,
    words: fn(&serde_json::Value) -> (Option<String>, String),
) -> CallError {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let body: serde_json::Value = response.json().await.unwrap_or(serde_json::Value::Null);
    let (code, message) = words(&body);
    CallError::status(status, code, message, retry_after)
}

/// Parses `Retry-After`: seconds, or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let wait = at.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(s: u16) -> CallError {
        CallError::Status {
            status: s,
            code: None,
            message: String::new(),
            retry_after: None,
        }
    }

    #[test]
    fn classification() {
        assert_eq!(
            CallError::Connect("x".into()).verdict(),
            Verdict::Retry {
                maybe_applied: false,
                after: None
            }
        );
        assert_eq!(
            CallError::Timeout.verdict(),
            Verdict::Retry {
                maybe_applied: true,
                after: None
            }
        );
        assert!(matches!(
            status(429).verdict(),
            Verdict::Retry {
                maybe_applied: false,
                ..
            }
        ));
        for s in [500, 502, 503, 504] {
            assert!(
                matches!(
                    status(s).verdict(),
                    Verdict::Retry {
                        maybe_applied: true,
                        ..
                    }
                ),
                "{s}"
            );
        }
        for s in [400, 401, 404, 409, 422, 501] {
            assert_eq!(status(s).verdict(), Verdict::Reject, "{s}");
        }
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        let later = (chrono::Utc::now() + chrono::Duration::seconds(30)).to_rfc2822();
        let d = parse_retry_after(&later).unwrap();
        assert!(
            d > Duration::from_secs(25) && d <= Duration::from_secs(30),
            "{d:?}"
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
