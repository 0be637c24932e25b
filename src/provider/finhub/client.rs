//! The FinHub client: `Authorization: Bearer` and `tenantId` on every call. The token is
//! either given (`provider.token`) or obtained by OAuth2 client credentials, cached, and
//! renewed at 80% of its lifetime — and once more when a call answers 401.

use crate::provider::error::CallError;
use crate::provider::http::{Secret, transport};
use reqwest::{Method, Response};
use serde_json::{Value, json};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How the client gets its bearer token.
pub enum Auth {
    Static(Secret),
    ClientCredentials {
        token_url: String,
        client_id: Secret,
        client_secret: Secret,
    },
}

struct Cached {
    token: Secret,
    renew_at: Instant,
}

pub struct FinHub {
    http: reqwest::Client,
    base: String,
    tenant: Secret,
    auth: Auth,
    cached: Mutex<Option<Cached>>,
    /// One token request at a time: concurrent callers wait for it and share it.
    renewing: tokio::sync::Mutex<()>,
    kyc_confirmation_path: String,
}

impl std::fmt::Debug for FinHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FinHub")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl FinHub {
    pub fn new(
        http: reqwest::Client,
        base_url: &str,
        tenant: Secret,
        auth: Auth,
        kyc_confirmation_path: &str,
    ) -> FinHub {
        FinHub {
            http,
            base: base_url.trim_end_matches('/').to_string(),
            tenant,
            auth,
            cached: Mutex::new(None),
            renewing: tokio::sync::Mutex::new(()),
            kyc_confirmation_path: kyc_confirmation_path.to_string(),
        }
    }

    fn cached(&self) -> Option<Secret> {
        let c = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        c.as_ref()
            .filter(|c| Instant::now() < c.renew_at)
            .map(|c| c.token.clone())
    }

    /// The token to send: the given one, or a cached one still young enough, or a new one.
    async fn token(&self) -> Result<Secret, CallError> {
        let (url, id, secret) = match &self.auth {
            Auth::Static(t) => return Ok(t.clone()),
            Auth::ClientCredentials {
                token_url,
                client_id,
                client_secret,
            } => (token_url, client_id, client_secret),
        };
        if let Some(t) = self.cached() {
            return Ok(t);
        }
        let _one = self.renewing.lock().await;
        if let Some(t) = self.cached() {
            return Ok(t);
        }
        let body = json!({
            "grant_type": "client_credentials",
            "client_id": id.expose(),
            "client_secret": secret.expose(),
        });
        let response = self
            .http
            .post(url)
            .header("tenantId", self.tenant.expose())
            .json(&body)
            .send()
            .await
            .map_err(transport)?;
        if !response.status().is_success() {
            let e = status_error(response).await;
            return Err(match e {
                CallError::Status {
                    status,
                    code,
                    message,
                    retry_after,
                } => CallError::Status {
                    status,
                    code,
                    message: format!("token request refused: {message}"),
                    retry_after,
                },
                other => other,
            });
        }
        let v: Value = response
            .json()
            .await
            .map_err(|e| CallError::Decode(e.to_string()))?;
        let token = v["access_token"]
            .as_str()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| CallError::Decode("the token reply has no access_token".into()))?;
        let lifetime = v["expires_in"].as_u64().unwrap_or(3600);
        let token = Secret::new(token);
        *self.cached.lock().unwrap_or_else(|p| p.into_inner()) = Some(Cached {
            token: token.clone(),
            renew_at: Instant::now() + Duration::from_millis(lifetime * 800),
        });
        tracing::debug!(expires_in = lifetime, "FinHub token obtained");
        Ok(token)
    }

    /// Forgets `used` (a 401 said it is no longer good), unless a newer one replaced it.
    fn forget(&self, used: &Secret) {
        let mut c = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if c.as_ref()
            .is_some_and(|c| c.token.expose() == used.expose())
        {
            *c = None;
        }
    }

    /// One call; a 401 with client credentials renews the token and tries once more.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, CallError> {
        let mut renewed = false;
        loop {
            let token = self.token().await?;
            let mut req = self
                .http
                .request(method.clone(), format!("{}{path}", self.base))
                .bearer_auth(token.expose())
                .header("tenantId", self.tenant.expose())
                .header("accept", "application/json");
            if let Some(b) = body {
                req = req.json(b);
            }
            let response = req.send().await.map_err(transport)?;
            let status = response.status();
            if status.is_success() {
                let bytes = response.bytes().await.map_err(transport)?;
                if bytes.is_empty() {
                    return Ok(Value::Null);
                }
                return serde_json::from_slice(&bytes)
                    .map_err(|e| CallError::Decode(e.to_string()));
            }
            if status.as_u16() == 401
                && !renewed
                && matches!(self.auth, Auth::ClientCredentials { .. })
            {
                self.forget(&token);
                renewed = true;
                continue;
            }
            return Err(status_error(response).await);
        }
    }

    /// `POST /create`: the created customer (`{"customer": {...}}`).
    pub async fn create(&self, customer: &Value) -> Result<Value, CallError> {
        self.call(Method::POST, "/create", Some(customer)).await
    }

    /// `POST /createBulk` with a top-level array of customers.
    pub async fn create_bulk(&self, customers: &[Value]) -> Result<Value, CallError> {
        let body = Value::Array(customers.to_vec());
        self.call(Method::POST, "/createBulk", Some(&body)).await
    }

    /// `PUT /update/{customerId}`.
    pub async fn update(&self, id: &str, customer: &Value) -> Result<Value, CallError> {
        self.call(Method::PUT, &format!("/update/{}", seg(id)), Some(customer))
            .await
    }

    /// `POST /update/{customerId}/status/{status}`.
    pub async fn update_status(&self, id: &str, status: &str) -> Result<Value, CallError> {
        let body = json!({"id": id, "customerStatus": status});
        self.call(
            Method::POST,
            &format!("/update/{}/status/{}", seg(id), seg(status)),
            Some(&body),
        )
        .await
    }

    /// `POST` kycConfirmation at the configured path (`{customerId}` replaced).
    pub async fn kyc_confirmation(&self, id: &str, value: &str) -> Result<Value, CallError> {
        let path = self.kyc_confirmation_path.replace("{customerId}", &seg(id));
        let body = json!({"id": id, "kycConfirmation": value});
        self.call(Method::POST, &path, Some(&body)).await
    }

    /// `POST /createDocuments/{customerId}` with a top-level array of documents.
    pub async fn create_documents(
        &self,
        id: &str,
        documents: &[Value],
    ) -> Result<Value, CallError> {
        let body = Value::Array(documents.to_vec());
        self.call(
            Method::POST,
            &format!("/createDocuments/{}", seg(id)),
            Some(&body),
        )
        .await
    }

    /// `GET /getDetailsById/{customerId}`: the customer (`{"customer": {...}}`).
    pub async fn details(&self, id: &str) -> Result<Value, CallError> {
        self.call(Method::GET, &format!("/getDetailsById/{}", seg(id)), None)
            .await
    }

    /// `GET /getDocuments/{customerId}`: the customer's documents.
    pub async fn documents(&self, id: &str) -> Result<Vec<Value>, CallError> {
        let v = self
            .call(Method::GET, &format!("/getDocuments/{}", seg(id)), None)
            .await?;
        Ok(v["documents"].as_array().cloned().unwrap_or_default())
    }

    /// `POST /getByCustomerStatus/{status}`: one page (`pageNumber` from 1, our reading).
    pub async fn by_status(&self, status: &str, page: u64, size: u64) -> Result<Value, CallError> {
        let body =
            json!({"type": "", "created": "", "status": "", "pageNumber": page, "pageSize": size});
        self.call(
            Method::POST,
            &format!("/getByCustomerStatus/{}", seg(status)),
            Some(&body),
        )
        .await
    }
}

/// A path segment, percent-encoded (ids and statuses are plain, but never trust that).
fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Errors in the shape the reference's mirror documents (`{reason, path, method, message,
/// timestamp, status}`), or the newer `{code, message, data: {error}}`; anything else
/// keeps its status.
async fn status_error(response: Response) -> CallError {
    crate::provider::error::status_error(response, words).await
}

fn words(body: &Value) -> (Option<String>, String) {
    let message = body["message"]
        .as_str()
        .or_else(|| body["data"]["error"].as_str())
        .unwrap_or_default()
        .to_string();
    let code = body["code"]
        .as_str()
        .map(str::to_string)
        .or_else(|| body["reason"].as_str().map(str::to_string));
    (code, message)
}
