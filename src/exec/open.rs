//! Opening a run: the provider's settings resolved, its client, the database thread, the
//! plan and the run's record under the lock.

use super::*;
use crate::provider::error::CallError;

/// The provider settings `run` needs, resolved.
enum Settings {
    HelloClever {
        base: String,
        app_id: String,
        secret: String,
        callbacks: Option<crate::provider::helloclever::client::Callbacks>,
    },
    FinHub {
        base: String,
        tenant: String,
        auth: crate::provider::finhub::client::Auth,
        kyc_confirmation_path: String,
    },
}

/// A setting `run` needs: its value, else an error naming the unset variable or the key.
fn need(job: &Job, key: &str, setting: &crate::job::Setting) -> Result<String, RunError> {
    match setting {
        Some(Ok(v)) if !v.is_empty() => Ok(v.clone()),
        Some(Err(d)) => Err(RunError::Setting(d.clone())),
        _ => Err(RunError::Config(format!(
            "{}: provider.{key} is required to run",
            job.path.display()
        ))),
    }
}

/// A setting `run` can do without: its value if written, an error if its variable is unset.
fn optional(setting: &crate::job::Setting) -> Result<Option<String>, RunError> {
    match setting {
        Some(Ok(v)) => Ok(Some(v.clone())),
        Some(Err(d)) => Err(RunError::Setting(d.clone())),
        None => Ok(None),
    }
}

/// Resolves the provider settings `run` needs; a missing variable is an error naming it.
fn provider_settings(job: &Job, opts: &RunOptions) -> Result<Settings, RunError> {
    use crate::job::ProviderSettings;
    use crate::provider::finhub::client::Auth;
    use crate::provider::http::Secret;
    match &job.provider.settings {
        ProviderSettings::HelloClever {
            base_url,
            app_id,
            secret_key,
            callbacks,
        } => {
            let base = match &opts.base_url {
                Some(b) => b.clone(),
                None => optional(base_url)?
                    .unwrap_or_else(|| crate::provider::helloclever::SANDBOX_BASE_URL.to_string()),
            };
            let (app_id, secret) = match &opts.credentials {
                Some(c) => c.clone(),
                None => (
                    need(job, "app_id", app_id)?,
                    need(job, "secret_key", secret_key)?,
                ),
            };
            let callbacks = match callbacks {
                None => None,
                Some(c) => Some(crate::provider::helloclever::client::Callbacks {
                    endpoint_url: need(job, "callbacks.endpoint_url", &c.endpoint_url)?,
                    authorization_header: optional(&c.authorization_header)?.map(Secret::new),
                }),
            };
            Ok(Settings::HelloClever {
                base,
                app_id,
                secret,
                callbacks,
            })
        }
        ProviderSettings::FinHub {
            base_url,
            tenant_id,
            token,
            token_url,
            client_id,
            client_secret,
            base_path,
            kyc_confirmation_path,
        } => {
            let base = match &opts.base_url {
                Some(b) => b.clone(),
                None => need(job, "base_url", base_url)?,
            };
            let (tenant, auth) = match &opts.credentials {
                // The embedded sandbox: its client, its tenant.
                Some((id, secret)) => (
                    crate::sandbox::FinhubConfig::default().tenant,
                    Auth::ClientCredentials {
                        token_url: format!("{base}/oauth/token"),
                        client_id: Secret::new(id.clone()),
                        client_secret: Secret::new(secret.clone()),
                    },
                ),
                None => {
                    let tenant = need(job, "tenant_id", tenant_id)?;
                    let auth = match token {
                        Some(Ok(t)) if !t.is_empty() => Auth::Static(Secret::new(t.clone())),
                        _ => {
                            for s in [token_url, client_id, client_secret] {
                                optional(s)?;
                            }
                            // A token whose variable is unset was meant to be used.
                            optional(token)?;
                            Auth::ClientCredentials {
                                token_url: need(job, "token_url", token_url)?,
                                client_id: Secret::new(need(job, "client_id", client_id)?),
                                client_secret: Secret::new(need(
                                    job,
                                    "client_secret",
                                    client_secret,
                                )?),
                            }
                        }
                    };
                    (tenant, auth)
                }
            };
            let path = optional(base_path)?.unwrap_or_else(|| "/customer/2.0.0".into());
            Ok(Settings::FinHub {
                base: format!("{}{}", base.trim_end_matches('/'), path),
                tenant,
                auth,
                kyc_confirmation_path: optional(kyc_confirmation_path)?
                    .unwrap_or_else(|| crate::provider::finhub::KYC_CONFIRMATION_PATH.to_string()),
            })
        }
    }
}

/// Builds what a run or a reconcile works with: the provider client, the database thread,
/// the plan (created when `create_plan`), and a run record holding the plan's lock.
pub(super) async fn open(
    job: &Job,
    opts: &RunOptions,
    create_plan: bool,
) -> Result<(Arc<Ctx>, Db, i64, i64), RunError> {
    use crate::provider::http::Secret;
    let settings = provider_settings(job, opts)?;
    let http = crate::provider::http::client(job.limits.timeout, job.limits.concurrency as usize)
        .map_err(RunError::Http)?;
    let client = match settings {
        Settings::HelloClever {
            base,
            app_id,
            secret,
            callbacks,
        } => {
            let hc = HelloClever::new(http, &base, Secret::new(app_id), Secret::new(secret))
                .map_err(|e| RunError::Config(format!("{}: {e}", job.path.display())))?;
            Client::HelloClever(Arc::new(match callbacks {
                Some(c) => hc.with_callbacks(c),
                None => hc,
            }))
        }
        Settings::FinHub {
            base,
            tenant,
            auth,
            kyc_confirmation_path,
        } => Client::FinHub(Arc::new(crate::provider::finhub::client::FinHub::new(
            http,
            &base,
            Secret::new(tenant),
            auth,
            &kyc_confirmation_path,
        ))),
    };
    // The lock first: a run that cannot have it touches nothing.
    let lock = crate::state::lock::try_take(&opts.state_path, &job.name, &job.scope).map_err(
        |source| RunError::Lock {
            path: crate::state::shown(&opts.state_path).into(),
            source,
        },
    )?;
    let db = Db::open(&opts.state_path)?;
    let Some(lock) = lock else {
        let (name, scope) = (job.name.clone(), job.scope.clone());
        let held = db
            .read(move |c| {
                let plan = work::plan_id(c, &name, &scope)?;
                Ok(crate::state::lock::Held::read(c, plan))
            })
            .await?;
        return Err(RunError::Locked(held));
    };
    let (name, scope) = (job.name.clone(), job.scope.clone());
    let plan_id = db
        .write(move |c| {
            if create_plan {
                work::create_plan(c, &name, &scope)?;
            }
            work::plan_id(c, &name, &scope)
        })
        .await?
        .ok_or_else(|| {
            RunError::Config(format!(
                "'{}' scope '{}' has not been run yet: nothing to reconcile",
                job.name, job.scope
            ))
        })?;
    if let Some(fence) = lock.fence() {
        db.fence(fence).await?;
    }
    let lock = Arc::new(lock);
    let held = lock.clone();
    let run_id = db
        .write(move |c| crate::state::lock::start_run(c, plan_id, &held))
        .await?
        .map_err(RunError::Locked)?;
    let lock = crate::state::lock::Heartbeat::start(lock, db.clone(), plan_id, run_id);
    let ctx = Arc::new(Ctx {
        client,
        directory: finhub::Directory::default(),
        run_started: tokio::time::Instant::now(),
        pacer: Pacer::new(
            &job.limits.rate,
            job.limits.burst,
            job.limits.concurrency,
            job.limits.retry.clone(),
        ),
        db: db.clone(),
        plan_id,
        run_id,
        stop: opts.stop.clone(),
        halt: std::sync::Mutex::new(None),
        poll_cap: opts.poll_cap,
        progress: progress::Progress::new(opts.show_progress),
        any_success: AtomicBool::new(false),
        same_answer: std::sync::Mutex::new(None),
        started_at: work::now(),
        settle: job.limits.settle,
        settle_recheck: job.limits.settle_recheck,
        lookback: job.limits.lookback,
        entered_doubt: Default::default(),
        lock: std::sync::Mutex::new(Some(lock)),
    });
    Ok((ctx, db, plan_id, run_id))
}

/// A Hello Clever client for a command's few requests (no callbacks: it creates nothing),
/// and its base URL; a FinHub job is refused with `finhub`.
fn one_off_client(
    job: &Job,
    opts: &RunOptions,
    finhub: &str,
) -> Result<(String, HelloClever), RunError> {
    use crate::provider::http::Secret;
    let Settings::HelloClever {
        base,
        app_id,
        secret,
        ..
    } = provider_settings(job, opts)?
    else {
        return Err(RunError::Config(format!(
            "{}: {finhub}",
            job.path.display()
        )));
    };
    let http = crate::provider::http::client(job.limits.timeout, 1).map_err(RunError::Http)?;
    let hc = HelloClever::new(http, &base, Secret::new(app_id), Secret::new(secret))
        .map_err(|e| RunError::Config(format!("{}: {e}", job.path.display())))?;
    Ok((base, hc))
}

/// The provider's payout methods, each as its required-fields record describes it, and the
/// URL they were read from (their cache's key). Sequential: there are a handful.
pub async fn payout_methods(
    job: &Job,
    opts: &RunOptions,
) -> Result<
    (
        String,
        Vec<crate::provider::helloclever::wire::MethodRecord>,
    ),
    RunError,
> {
    let (base, hc) = one_off_client(job, opts, "FinHub has no payout methods")?;
    let failed = |what: &str, e: CallError| {
        RunError::Config(format!("the provider's {what} could not be read: {e}"))
    };
    let listed = hc
        .payout_methods()
        .await
        .map_err(|e| failed("payout methods", e))?;
    let mut methods = Vec::with_capacity(listed.len());
    for m in listed {
        // The listing's records may be brief: each method's own record is the reference.
        let full = hc
            .payout_method(&m.payout_method_name)
            .await
            .map_err(|e| failed(&format!("required fields of {}", m.payout_method_name), e))?;
        methods.push(full);
    }
    Ok((base, methods))
}

/// The URL of a Hello Clever job's provider, as `run` would use it (the key of its cached
/// payout methods); `None` for a FinHub job.
pub fn provider_base(job: &Job) -> Result<Option<String>, RunError> {
    match &job.provider.settings {
        crate::job::ProviderSettings::HelloClever { base_url, .. } => {
            Ok(Some(optional(base_url)?.unwrap_or_else(|| {
                crate::provider::helloclever::SANDBOX_BASE_URL.to_string()
            })))
        }
        crate::job::ProviderSettings::FinHub { .. } => Ok(None),
    }
}

/// What became of a batch `payrun cancel` was asked to recall.
#[derive(Debug)]
pub enum Recall {
    /// The provider no longer holds it as scheduled (its status now).
    Cancelled(String),
    /// It was not scheduled (its status): nothing was asked.
    NotScheduled(String),
    /// The provider could not be asked, or refused (why).
    Failed(String),
}

/// Recalls each scheduled batch of `uuids`: its status is read first (only a `scheduled`
/// batch is recalled), then read again after the request, so an answer lost on the way
/// still tells what happened.
pub async fn recall_scheduled(
    job: &Job,
    opts: &RunOptions,
    uuids: &[String],
) -> Result<Vec<Recall>, RunError> {
    let (_, hc) = one_off_client(job, opts, "FinHub has no payouts to cancel")?;
    let mut out = Vec::with_capacity(uuids.len());
    for uuid in uuids {
        let status = match hc.payout(uuid).await {
            Ok(b) => b.status.unwrap_or_default(),
            Err(e) => {
                out.push(Recall::Failed(format!("its status could not be read: {e}")));
                continue;
            }
        };
        if status != "scheduled" {
            out.push(Recall::NotScheduled(status));
            continue;
        }
        let asked = hc.cancel_scheduled(uuid).await.map_err(|e| e.to_string());
        let now = hc.payout(uuid).await.map(|b| b.status.unwrap_or_default());
        out.push(after_recall(asked, now.map_err(|e| e.to_string())));
    }
    Ok(out)
}

/// The provider's record of each payin method of `names` (`Err`: why it could not be
/// read, or the provider's refusal of the name).
pub async fn payin_methods(
    job: &Job,
    opts: &RunOptions,
    names: &[String],
) -> Result<Vec<Result<crate::provider::helloclever::wire::MethodRecord, CallError>>, RunError> {
    let (_, hc) = one_off_client(job, opts, "FinHub has no payin methods")?;
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        out.push(hc.payin_method(name).await);
    }
    Ok(out)
}

/// Cancels each pending payin of `uuids` whose method the provider says may be cancelled
/// (`is_cancellable`): its status is read first (only a `pending` payin is cancelled), then
/// again after the request, so an answer lost on the way still tells what happened.
pub async fn cancel_payins(
    job: &Job,
    opts: &RunOptions,
    uuids: &[String],
) -> Result<Vec<Recall>, RunError> {
    let (_, hc) = one_off_client(job, opts, "FinHub has no payins to cancel")?;
    let mut out = Vec::with_capacity(uuids.len());
    for uuid in uuids {
        let p = match hc.payin(uuid).await {
            Ok(p) => p,
            Err(e) => {
                out.push(Recall::Failed(format!("its status could not be read: {e}")));
                continue;
            }
        };
        let status = p.status.unwrap_or_default();
        if status != "pending" {
            out.push(Recall::NotScheduled(status));
            continue;
        }
        let method = p.payment_method.unwrap_or_default();
        match hc.payin_method(&method).await.map(|m| m.is_cancellable) {
            Ok(true) => {}
            Ok(false) => {
                out.push(Recall::Failed(format!(
                    "its method {method} does not allow cancelling (is_cancellable is false)"
                )));
                continue;
            }
            Err(e) => {
                out.push(Recall::Failed(format!(
                    "whether its method {method} may be cancelled could not be read: {e}"
                )));
                continue;
            }
        }
        let asked = hc.cancel_payin(uuid).await.map_err(|e| e.to_string());
        let now = hc.payin(uuid).await.map(|p| p.status.unwrap_or_default());
        out.push(match (asked, now.map_err(|e| e.to_string())) {
            (_, Ok(s)) if s == "expired" => Recall::Cancelled(s),
            (_, Ok(s)) if s != "pending" => Recall::NotScheduled(s),
            (Err(e), _) => Recall::Failed(format!("the provider refused or did not answer: {e}")),
            (Ok(()), Ok(_)) => {
                Recall::Failed("the provider accepted, yet still shows it pending".into())
            }
            (Ok(()), Err(e)) => Recall::Failed(format!(
                "the provider accepted; its status could not be read after: {e}"
            )),
        });
    }
    Ok(out)
}

/// What a recall came to, from the provider's answer and the batch's status read after it.
/// Only a status that means recalled (`expired`, as the sandbox reads it, or `cancelled`)
/// counts: a batch whose time came meanwhile (`processing`, `completed`) may pay, and
/// recording it cancelled would let `--retry-failed` pay its rows a second time.
fn after_recall(asked: Result<(), String>, now: Result<String, String>) -> Recall {
    match (asked, now) {
        (_, Ok(status)) if matches!(status.as_str(), "expired" | "cancelled" | "canceled") => {
            Recall::Cancelled(status)
        }
        (_, Ok(status)) if status != "scheduled" => Recall::NotScheduled(status),
        (Err(e), _) => Recall::Failed(format!("the provider refused or did not answer: {e}")),
        (Ok(()), Ok(_)) => {
            Recall::Failed("the provider accepted, yet still shows it scheduled".into())
        }
        (Ok(()), Err(e)) => Recall::Failed(format!(
            "the provider accepted; its status could not be read again: {e}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_recalled_status_records_a_batch_cancelled() {
        let ok = || Ok(());
        assert!(matches!(
            after_recall(ok(), Ok("expired".into())),
            Recall::Cancelled(_)
        ));
        // Its time came between the read and the recall: it may pay, so it is not cancelled.
        assert!(matches!(
            after_recall(ok(), Ok("processing".into())),
            Recall::NotScheduled(s) if s == "processing"
        ));
        assert!(matches!(
            after_recall(Err("timeout".into()), Ok("completed".into())),
            Recall::NotScheduled(_)
        ));
        assert!(matches!(
            after_recall(ok(), Ok("scheduled".into())),
            Recall::Failed(_)
        ));
        assert!(matches!(
            after_recall(Err("timeout".into()), Err("reset".into())),
            Recall::Failed(_)
        ));
    }
}
