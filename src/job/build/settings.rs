//! The job's settings: provider, limits, input, report and notification.

use super::*;

impl Builder<'_> {
    /// The provider: its kind, and the settings that kind takes, each with its value or
    /// the diagnostic of its unset variable (kept for `run`).
    pub(super) fn provider(
        &mut self,
        p: &ProviderConfig,
        deferred: Vec<(String, Diagnostic)>,
    ) -> Provider {
        let kind = ProviderKind::parse(&p.kind).unwrap_or_else(|| {
            let hint = diag::did_you_mean(&p.kind, ProviderKind::NAMES);
            self.diags.push(
                self.locate(
                    Diagnostic::new(
                        self.path,
                        format!(
                            "unknown provider kind '{}' (expected helloclever or finhub)",
                            p.kind
                        ),
                    ),
                    &[Seg::Key("provider"), Seg::Key("kind")],
                )
                .with_hint(hint),
            );
            ProviderKind::HelloClever
        });
        let written = [
            ("base_url", &p.base_url),
            ("app_id", &p.app_id),
            ("secret_key", &p.secret_key),
            ("tenant_id", &p.tenant_id),
            ("token", &p.token),
            ("token_url", &p.token_url),
            ("client_id", &p.client_id),
            ("client_secret", &p.client_secret),
            ("base_path", &p.base_path),
            ("kyc_confirmation_path", &p.kyc_confirmation_path),
        ];
        let takes = ProviderSettings::keys(kind);
        let callbacks_written = ("callbacks", p.callbacks.as_ref().map(|_| String::new()));
        for (name, value) in written
            .iter()
            .map(|(n, v)| (n, v.as_ref()))
            .chain([(&callbacks_written.0, callbacks_written.1.as_ref())])
        {
            if value.is_some() && !takes.contains(name) {
                let d = Diagnostic::new(
                    self.path,
                    format!(
                        "provider.{name} is not a {} setting (it takes kind, {})",
                        kind.as_str(),
                        takes.join(", ")
                    ),
                );
                let d = self.locate(d, &[Seg::Key("provider"), Seg::Key(name)]);
                self.diags.push(d);
            }
        }
        let mut deferred = deferred;
        let callbacks = match kind {
            ProviderKind::HelloClever => p
                .callbacks
                .as_ref()
                .map(|c| self.callbacks(c, &mut deferred)),
            ProviderKind::FinHub => None,
        };
        let mut setting = |name: &str| -> Setting {
            let (_, value) = written.iter().find(|(n, _)| *n == name)?;
            let value = (*value).clone()?;
            let key = format!("provider.{name}");
            Some(match deferred.iter().position(|(path, _)| *path == key) {
                Some(i) => Err(Box::new(deferred.swap_remove(i).1)),
                None => Ok(value),
            })
        };
        let settings = match kind {
            ProviderKind::HelloClever => ProviderSettings::HelloClever {
                base_url: setting("base_url"),
                app_id: setting("app_id"),
                secret_key: setting("secret_key"),
                callbacks,
            },
            ProviderKind::FinHub => ProviderSettings::FinHub {
                base_url: setting("base_url"),
                tenant_id: setting("tenant_id"),
                token: setting("token"),
                token_url: setting("token_url"),
                client_id: setting("client_id"),
                client_secret: setting("client_secret"),
                base_path: setting("base_path"),
                kyc_confirmation_path: setting("kyc_confirmation_path"),
            },
        };
        Provider { kind, settings }
    }

    /// `provider.callbacks`: the URL must be https (Hello Clever posts only over TLS); both
    /// values may wait for their variables until a run needs them.
    fn callbacks(
        &mut self,
        c: &config::CallbacksConfig,
        deferred: &mut Vec<(String, Diagnostic)>,
    ) -> crate::job::Callbacks {
        let mut take = |key: &str, value: &str| -> Setting {
            let path = format!("provider.callbacks.{key}");
            Some(match deferred.iter().position(|(p, _)| *p == path) {
                Some(i) => Err(Box::new(deferred.swap_remove(i).1)),
                None => Ok(value.to_string()),
            })
        };
        let endpoint_url = take("endpoint_url", &c.endpoint_url);
        let authorization_header = c
            .authorization_header
            .as_deref()
            .and_then(|h| take("authorization_header", h));
        if let Some(Ok(url)) = &endpoint_url
            && !crate::validate::https_url(url)
        {
            self.err(
                &["provider", "callbacks", "endpoint_url"],
                "provider.callbacks.endpoint_url must be an https:// URL (Hello Clever posts \
                 callbacks only over TLS)",
            );
        }
        crate::job::Callbacks {
            endpoint_url,
            authorization_header,
        }
    }

    pub(super) fn duration(
        &mut self,
        keys: &[&str],
        value: Option<&str>,
        default: Duration,
    ) -> Duration {
        match value.map(parse_duration) {
            None => default,
            Some(Ok(d)) => d,
            Some(Err(e)) => {
                self.err(keys, e);
                default
            }
        }
    }

    pub(super) fn decimal(&mut self, keys: &[&str], value: config::Scalar) -> Option<Decimal> {
        let text = value.into_text();
        match crate::validate::amount(&text, None) {
            Ok(d) => Some(d),
            Err(e) => {
                self.err(keys, format!("{e} (got '{text}')"));
                None
            }
        }
    }

    pub(super) fn limits(&mut self, l: config::LimitsConfig) -> Limits {
        let rate = match l.rate.as_deref().map(parse_rate) {
            None => Rate {
                count: 10,
                per: Duration::from_secs(1),
            },
            Some(Ok(r)) => r,
            Some(Err(e)) => {
                self.err(&["limits", "rate"], e);
                Rate {
                    count: 1,
                    per: Duration::from_secs(1),
                }
            }
        };
        let positive = |b: &mut Self, key: &str, v: Option<u32>, default: u32| match v {
            Some(0) => {
                b.err(&["limits", key], format!("limits.{key} must be at least 1"));
                default
            }
            Some(n) => n,
            None => default,
        };
        let burst = positive(self, "burst", l.burst, 5);
        let concurrency = positive(self, "concurrency", l.concurrency, 4);
        let max_batch_size = positive(self, "max_batch_size", l.max_batch_size, 1000);
        let timeout = self.duration(
            &["limits", "timeout"],
            l.timeout.as_deref(),
            Duration::from_secs(30),
        );
        let retry = match l.retry {
            None => Retry {
                attempts: 5,
                base: Duration::from_millis(500),
                max: Duration::from_secs(30),
                max_elapsed: Duration::from_secs(300),
            },
            Some(r) => Retry {
                attempts: r.attempts.unwrap_or(5),
                base: self.duration(
                    &["limits", "retry", "base"],
                    r.base.as_deref(),
                    Duration::from_millis(500),
                ),
                max: self.duration(
                    &["limits", "retry", "max"],
                    r.max.as_deref(),
                    Duration::from_secs(30),
                ),
                max_elapsed: self.duration(
                    &["limits", "retry", "max_elapsed"],
                    r.max_elapsed.as_deref(),
                    Duration::from_secs(300),
                ),
            },
        };
        let mut max_total = BTreeMap::new();
        for (ccy, v) in l.max_total {
            if let Err(e) = crate::validate::currency(&ccy) {
                self.err(
                    &["limits", "max_total", &ccy],
                    format!("max_total: {e} (got '{ccy}')"),
                );
                continue;
            }
            if let Some(d) = self.decimal(&["limits", "max_total", &ccy], v) {
                max_total.insert(ccy, d);
            }
        }
        let max_amount = l
            .max_amount
            .and_then(|v| self.decimal(&["limits", "max_amount"], v));
        // Long enough for real gateways to give up on a request themselves.
        let settle = self.duration(
            &["limits", "settle"],
            l.settle.as_deref(),
            (timeout * 2).max(Duration::from_secs(120)),
        );
        let settle_recheck = self.duration(
            &["limits", "settle_recheck"],
            l.settle_recheck.as_deref(),
            Duration::from_secs(10),
        );
        let lookback = self.duration(
            &["limits", "lookback"],
            l.lookback.as_deref(),
            Duration::from_secs(90 * 86_400),
        );
        if l.max_rows == Some(0) {
            self.err(
                &["limits", "max_rows"],
                "limits.max_rows must be at least 1",
            );
        }
        Limits {
            rate,
            burst,
            concurrency,
            timeout,
            retry,
            max_total,
            max_amount,
            max_rows: l.max_rows,
            max_batch_size,
            settle,
            settle_recheck,
            lookback,
        }
    }

    pub(super) fn input(&mut self, i: &config::InputConfig, dir: &Path) -> Option<Input> {
        let key = match &i.key {
            KeyColumns::One(k) => vec![k.clone()],
            KeyColumns::Many(ks) => ks.clone(),
        };
        if key.is_empty() || key.iter().any(String::is_empty) {
            self.err(&["input", "key"], "input.key must name at least one column");
            return None;
        }
        let delimiter = match i.delimiter.as_deref() {
            None => b',',
            Some("\\t" | "\t" | "tab") => b'\t',
            Some(d) if d.len() == 1 && d.is_ascii() && d != "\"" && d != "\n" => d.as_bytes()[0],
            Some(d) => {
                self.err(
                    &["input", "delimiter"],
                    format!("delimiter must be one ASCII character or 'tab' (got '{d}')"),
                );
                return None;
            }
        };
        if i.csv.is_empty() {
            self.err(&["input", "csv"], "input.csv must name a file");
            return None;
        }
        let csv = dir.join(&i.csv);
        let files_root = match i.files_root.as_deref() {
            Some(r) => lexical_clean(&dir.join(r)),
            None => csv.parent().map(Path::to_path_buf).unwrap_or_default(),
        };
        let max_record_bytes = match i.max_record_bytes {
            Some(0) => {
                self.err(
                    &["input", "max_record_bytes"],
                    "input.max_record_bytes must be at least 1",
                );
                return None;
            }
            Some(n) => n,
            None => crate::job::MAX_RECORD_BYTES,
        };
        Some(Input {
            csv,
            key,
            delimiter,
            files_root,
            max_record_bytes,
        })
    }

    pub(super) fn report(&mut self, r: Option<config::ReportConfig>, dir: &Path) -> Report {
        let r = r.unwrap_or(config::ReportConfig {
            dir: None,
            formats: None,
        });
        let formats = r
            .formats
            .unwrap_or_else(|| REPORT_FORMATS.iter().map(|s| s.to_string()).collect());
        for (i, f) in formats.iter().enumerate() {
            if !REPORT_FORMATS.contains(&f.as_str()) {
                let hint = diag::did_you_mean(f, REPORT_FORMATS);
                let d = self
                    .locate_value(
                        Diagnostic::new(
                            self.path,
                            format!(
                                "unknown report format '{f}' (expected csv, json, junit or html)"
                            ),
                        ),
                        &[Seg::Key("report"), Seg::Key("formats"), Seg::Index(i)],
                        f,
                    )
                    .with_hint(hint);
                self.diags.push(d);
            }
        }
        Report {
            dir: dir.join(r.dir.as_deref().unwrap_or("reports")),
            formats,
        }
    }

    pub(super) fn notify(&mut self, n: &config::NotifyConfig) -> Option<crate::job::Notify> {
        let always = match n.when.as_deref() {
            None | Some("failures") => false,
            Some("always") => true,
            Some(other) => {
                self.err(
                    &["notify", "when"],
                    format!("notify.when must be failures or always (got '{other}')"),
                );
                return None;
            }
        };
        let unresolved = n.webhook_url.contains("${");
        let url_ok = unresolved
            || n.webhook_url.starts_with("https://")
            || n.webhook_url.starts_with("http://");
        if !url_ok {
            self.err(
                &["notify", "webhook_url"],
                "notify.webhook_url must be an http:// or https:// URL",
            );
            return None;
        }
        Some(crate::job::Notify {
            url: n.webhook_url.clone(),
            always,
            unresolved,
        })
    }

    pub(super) fn approval(&mut self, a: &config::ApprovalConfig) -> Option<crate::job::Approval> {
        let before = self.diags.len();
        let mut seen = std::collections::HashSet::new();
        for name in &a.approvers {
            if !crate::job::approver_name_ok(name) {
                self.err(
                    &["approval", "approvers"],
                    format!(
                        "approver '{}' must be 1-64 letters, digits, '.', '_', '-' or '@'",
                        name.escape_debug()
                    ),
                );
            } else if !seen.insert(name.as_str()) {
                self.err(
                    &["approval", "approvers"],
                    format!("approver '{name}' is listed twice"),
                );
            }
        }
        if a.required == 0 || a.required as usize > a.approvers.len() {
            self.err(
                &["approval", "required"],
                format!(
                    "approval.required must be from 1 to the number of approvers ({}), got {}",
                    a.approvers.len(),
                    a.required
                ),
            );
        }
        let expires = match a.expires.as_deref().map(parse_duration) {
            None => None,
            Some(Ok(d)) if !d.is_zero() => Some(d),
            Some(Ok(_)) => {
                self.err(
                    &["approval", "expires"],
                    "approval.expires must be longer than 0s",
                );
                None
            }
            Some(Err(e)) => {
                self.err(&["approval", "expires"], e);
                None
            }
        };
        let hold_other_steps = match a.other_steps.as_deref() {
            None | Some("proceed") => false,
            Some("wait") => true,
            Some(other) => {
                self.err(
                    &["approval", "other_steps"],
                    format!("approval.other_steps must be proceed or wait (got '{other}')"),
                );
                false
            }
        };
        (self.diags.len() == before).then(|| crate::job::Approval {
            required: a.required,
            approvers: a.approvers.clone(),
            expires,
            preparer_may_approve: a.preparer_may_approve.unwrap_or(false),
            hold_other_steps,
        })
    }

    pub(super) fn guards(&mut self, g: Option<&config::GuardsConfig>) -> crate::job::Guards {
        let mut guards = crate::job::Guards::default();
        let Some(g) = g else { return guards };
        guards.duplicate_window = self.duration(
            &["guards", "duplicate_window"],
            g.duplicate_window.as_deref(),
            crate::job::DUPLICATE_WINDOW,
        );
        guards.shared_accounts = match g.shared_accounts.as_deref() {
            None | Some("refuse") => false,
            Some("allow") => true,
            Some(other) => {
                self.err(
                    &["guards", "shared_accounts"],
                    format!("guards.shared_accounts must be refuse or allow (got '{other}')"),
                );
                false
            }
        };
        guards
    }
}
