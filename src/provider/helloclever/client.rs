//! The Hello Clever client: one shared reqwest client, credentials in headers (never
//! logged), typed replies (`wire`), failures as [`CallError`].

use super::wire::{Contact, MethodRecord, Payin, PayoutBatch, PayoutPage, Refund};
use crate::provider::error::CallError;
pub use crate::provider::http::Secret;
use crate::provider::http::transport;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderValue};
use reqwest::{Method, RequestBuilder, Response, Url};
use serde::de::{DeserializeOwned, IgnoredAny};
use serde_json::Value;

/// `base` with `path` after its own path.
fn joined(base: &Url, path: &str) -> Url {
    let mut url = base.clone();
    url.set_path(&format!("{}{path}", base.path().trim_end_matches('/')));
    url
}

/// A KYC image to upload.
#[derive(Clone)]
pub struct Upload {
    pub part: &'static str,
    pub file_name: String,
    pub mime: &'static str,
    pub bytes: Vec<u8>,
}

#[derive(Clone, Debug)]
pub struct HelloClever {
    http: reqwest::Client,
    /// Parsed once: a request only sets its path on a copy.
    base: Url,
    /// `POST /v2/contacts`, the one call made once per row of an onboarding: built once.
    contacts: Url,
    /// `app-id`, `secret-key` (both marked sensitive: `Debug` hides them) and `accept`.
    headers: HeaderMap,
    /// Where Hello Clever posts status changes of what this client creates; none when the
    /// job configures no callbacks (an empty notification object is sent).
    callbacks: Option<Callbacks>,
}

/// The notification object of KYC and payout requests: the URL, and the `Authorization`
/// header Hello Clever sends with each callback (a secret; `Debug` hides it).
#[derive(Clone, Debug)]
pub struct Callbacks {
    pub endpoint_url: String,
    pub authorization_header: Option<Secret>,
}

/// A request body with the client's notification object beside the caller's fields.
#[derive(serde::Serialize)]
struct Notified<'a> {
    #[serde(flatten)]
    body: &'a Value,
    webhook_notification: Value,
}

impl HelloClever {
    /// Fails when `base_url` is not an http(s) URL, or a credential cannot be a header.
    pub fn new(
        http: reqwest::Client,
        base_url: &str,
        app_id: Secret,
        secret_key: Secret,
    ) -> Result<HelloClever, String> {
        let base = Url::parse(base_url.trim_end_matches('/'))
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
            .ok_or_else(|| format!("provider.base_url '{base_url}' is not an http(s) URL"))?;
        let secret = |name: &str, s: &Secret| {
            let mut v = HeaderValue::from_str(s.expose())
                .map_err(|_| format!("provider.{name} holds characters a header cannot carry"))?;
            v.set_sensitive(true);
            Ok::<_, String>(v)
        };
        let mut headers = HeaderMap::new();
        headers.insert("app-id", secret("app_id", &app_id)?);
        headers.insert("secret-key", secret("secret_key", &secret_key)?);
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        Ok(HelloClever {
            http,
            contacts: joined(&base, "/v2/contacts"),
            base,
            headers,
            callbacks: None,
        })
    }

    /// Sends `callbacks` as the notification object of every KYC and payout request.
    pub fn with_callbacks(mut self, callbacks: Callbacks) -> HelloClever {
        self.callbacks = Some(callbacks);
        self
    }

    /// The `webhook_notification` object: `{}` without callbacks.
    fn notification(&self) -> Value {
        let mut object = serde_json::Map::new();
        if let Some(c) = &self.callbacks {
            object.insert("endpoint_url".into(), Value::String(c.endpoint_url.clone()));
            if let Some(h) = &c.authorization_header {
                object.insert(
                    "authorization_header".into(),
                    Value::String(h.expose().to_string()),
                );
            }
        }
        Value::Object(object)
    }

    /// `body` with the notification object.
    fn notified<'a>(&self, body: &'a Value) -> Notified<'a> {
        Notified {
            body,
            webhook_notification: self.notification(),
        }
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.request_to(method, joined(&self.base, path))
    }

    fn request_to(&self, method: Method, url: Url) -> RequestBuilder {
        self.http.request(method, url).headers(self.headers.clone())
    }

    async fn send<T: DeserializeOwned>(&self, req: RequestBuilder) -> Result<T, CallError> {
        let response = req.send().await.map_err(transport)?;
        let status = response.status();
        if status.is_success() {
            let bytes = response.bytes().await.map_err(transport)?;
            return serde_json::from_slice(&bytes).map_err(|e| CallError::Decode(e.to_string()));
        }
        Err(status_error(response).await)
    }

    /// `POST /v2/contacts`, with the contact's fields as JSON text.
    pub async fn create_contact(&self, body: String) -> Result<(), CallError> {
        let req = self
            .request_to(Method::POST, self.contacts.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(body);
        // The reply is checked to be JSON, and not kept: nothing in it is needed.
        self.send::<IgnoredAny>(req).await.map(drop)
    }

    /// `GET /v2/contacts/detail?email=`; `Ok(None)` when the contact does not exist.
    pub async fn contact(&self, email: &str) -> Result<Option<Contact>, CallError> {
        match self
            .send(
                self.request(Method::GET, "/v2/contacts/detail")
                    .query(&[("email", email)]),
            )
            .await
        {
            Ok(c) => Ok(Some(c)),
            // The API answers an unknown email with 400 (404 in other readings).
            Err(CallError::Status {
                status: 400 | 404, ..
            }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `PUT /v2/contact/update_info`.
    pub async fn update_contact(
        &self,
        body: &serde_json::Map<String, Value>,
    ) -> Result<Value, CallError> {
        self.send(
            self.request(Method::PUT, "/v2/contact/update_info")
                .json(body),
        )
        .await
    }

    /// `POST /v2/contacts/submit_kyc` (multipart).
    pub async fn submit_kyc(
        &self,
        fields: &serde_json::Map<String, Value>,
        uploads: Vec<Upload>,
    ) -> Result<Value, CallError> {
        let mut form = reqwest::multipart::Form::new();
        for (k, v) in fields {
            let text = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            form = form.text(k.clone(), text);
        }
        // A multipart form carries the object as one text part holding its JSON.
        form = form.text("webhook_notification", self.notification().to_string());
        for u in uploads {
            let part = reqwest::multipart::Part::bytes(u.bytes)
                .file_name(u.file_name)
                .mime_str(u.mime)
                .map_err(|e| CallError::Decode(e.to_string()))?;
            form = form.part(u.part, part);
        }
        self.send(
            self.request(Method::POST, "/v2/contacts/submit_kyc")
                .multipart(form),
        )
        .await
    }

    /// `POST /v2/contacts/share_token`.
    pub async fn submit_kyc_token(&self, body: &Value) -> Result<Value, CallError> {
        self.send(
            self.request(Method::POST, "/v2/contacts/share_token")
                .json(&self.notified(body)),
        )
        .await
    }

    /// `GET /v2/payouts/payout_method/params?payout_method_name=`: the method as the
    /// provider describes it, its parameters with their descriptors.
    pub async fn payout_method(&self, method: &str) -> Result<MethodRecord, CallError> {
        #[derive(serde::Deserialize)]
        struct Reply {
            record: MethodRecord,
        }
        let reply: Reply = self
            .send(
                self.request(Method::GET, "/v2/payouts/payout_method/params")
                    .query(&[("payout_method_name", method)]),
            )
            .await?;
        Ok(reply.record)
    }

    /// "Get payout methods": the methods this account may use. The reference gives no path;
    /// `GET /v2/payouts/payout_methods` is payrun's reading (the sandbox's too).
    pub async fn payout_methods(&self) -> Result<Vec<MethodRecord>, CallError> {
        #[derive(serde::Deserialize)]
        struct Reply {
            records: Vec<MethodRecord>,
        }
        let reply: Reply = self
            .send(self.request(Method::GET, "/v2/payouts/payout_methods"))
            .await?;
        Ok(reply.records)
    }

    /// `POST /v2/payouts`.
    pub async fn create_payout(&self, body: &Value) -> Result<PayoutBatch, CallError> {
        self.send(
            self.request(Method::POST, "/v2/payouts")
                .json(&self.notified(body)),
        )
        .await
    }

    /// `POST /v2/payouts/cancel_scheduled`: recalls a batch still waiting for its
    /// `scheduled_at`.
    pub async fn cancel_scheduled(&self, uuid: &str) -> Result<(), CallError> {
        self.send::<IgnoredAny>(
            self.request(Method::POST, "/v2/payouts/cancel_scheduled")
                .json(&serde_json::json!({ "uuid": uuid })),
        )
        .await
        .map(drop)
    }

    /// `GET /v2/payouts/detail?uuid=`.
    pub async fn payout(&self, uuid: &str) -> Result<PayoutBatch, CallError> {
        self.send(
            self.request(Method::GET, "/v2/payouts/detail")
                .query(&[("uuid", uuid)]),
        )
        .await
    }

    /// `POST /v2/payins`: a payment request (the job's callbacks as its
    /// `webhook_notification`).
    pub async fn create_payin(&self, body: &Value) -> Result<Payin, CallError> {
        self.send(
            self.request(Method::POST, "/v2/payins")
                .json(&self.notified(body)),
        )
        .await
    }

    /// `GET /v2/payins/payin_method/params?payin_method_name=`: a payin method's record
    /// (its parameters, limits, and whether its payins may be cancelled).
    pub async fn payin_method(&self, method: &str) -> Result<MethodRecord, CallError> {
        #[derive(serde::Deserialize)]
        struct Reply {
            record: MethodRecord,
        }
        let reply: Reply = self
            .send(
                self.request(Method::GET, "/v2/payins/payin_method/params")
                    .query(&[("payin_method_name", method)]),
            )
            .await?;
        Ok(reply.record)
    }

    /// `GET /v2/payins/detail?uuid=`.
    pub async fn payin(&self, uuid: &str) -> Result<Payin, CallError> {
        self.send(
            self.request(Method::GET, "/v2/payins/detail")
                .query(&[("uuid", uuid)]),
        )
        .await
    }

    /// `POST /v2/payins/refund`: refunds a received payin, whole (`amount` `None`) or in
    /// part; `reason` is required by the provider (five characters at least).
    pub async fn refund_payin(
        &self,
        uuid: &str,
        amount: Option<rust_decimal::Decimal>,
        reason: &str,
    ) -> Result<Refund, CallError> {
        let mut body = serde_json::json!({ "uuid": uuid, "description": reason });
        if let Some(a) = amount {
            // A JSON number with the amount's exact digits (no float on the way).
            body["amount"] = serde_json::from_str(&a.to_string()).unwrap_or(Value::Null);
        }
        self.send(self.request(Method::POST, "/v2/payins/refund").json(&body))
            .await
    }

    /// Cancels a pending payin of a cancellable method. The reference names no path for
    /// it: `POST /v2/payins/cancel`, as the sandbox answers it.
    pub async fn cancel_payin(&self, uuid: &str) -> Result<(), CallError> {
        self.send::<IgnoredAny>(
            self.request(Method::POST, "/v2/payins/cancel")
                .json(&serde_json::json!({ "uuid": uuid })),
        )
        .await
        .map(drop)
    }

    /// One page of a list endpoint (`GET path?query`), as the provider sent it.
    pub async fn list_page(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<Value, CallError> {
        self.send(self.request(Method::GET, path).query(query))
            .await
    }

    /// `GET /v2/payouts/all` for one page of a window (dates as `YYYY-MM-DDThh:mm:ss`, UTC).
    pub async fn payouts(&self, from: &str, to: &str, page: u64) -> Result<PayoutPage, CallError> {
        let page = page.to_string();
        self.send(self.request(Method::GET, "/v2/payouts/all").query(&[
            ("from_date", from),
            ("to_date", to),
            ("page", page.as_str()),
        ]))
        .await
    }
}

async fn status_error(response: Response) -> CallError {
    crate::provider::error::status_error(response, words).await
}

/// Hello Clever's code and message of an error answer (`{"errors": {code, message}}`).
fn words(body: &Value) -> (Option<String>, String) {
    let errors = &body["errors"];
    let code = errors["code"].as_str().map(str::to_string);
    let message = match errors {
        Value::Object(map) => match map.get("message").and_then(Value::as_str) {
            Some(m) => m.to_string(),
            // The field-keyed 422 form: `{"refund_amount": "can't be blank"}`.
            None => map
                .iter()
                .filter(|(k, _)| *k != "code")
                .map(|(k, v)| format!("{k} {}", v.as_str().unwrap_or_default().trim()))
                .collect::<Vec<_>>()
                .join("; "),
        },
        _ => String::new(),
    };
    (code, message)
}
