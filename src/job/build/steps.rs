//! Row steps: their ids, types, when, batch, wait, and every field's template.

use super::*;

impl Builder<'_> {
    pub(super) fn steps(
        &mut self,
        configs: &[config::StepConfig],
        templates: &mut Templates,
        max_batch: u32,
        provider: ProviderKind,
    ) -> Vec<Step> {
        if configs.is_empty() {
            self.err(&["steps"], "the job has no steps");
        }
        let mut steps: Vec<Step> = Vec::new();
        for sc in configs {
            let id = sc.id.clone();
            if !self.step_id_ok(&id, sc.index) {
                continue;
            }
            if steps.iter().any(|s| s.id == id) {
                self.err_in_step(sc.index, &["id"], format!("step id '{id}' is used twice"));
                continue;
            }
            if sc.resource.is_some()
                || sc.from.is_some()
                || sc.to.is_some()
                || sc.output.is_some()
                || !sc.filter.is_empty()
            {
                self.err_in_step(
                    sc.index,
                    &["type"],
                    format!("step '{id}': resource, from, to, filter and output belong to export steps (type: export)"),
                );
            }
            let Some(kind) = self.step_kind(sc, provider, steps.last()) else {
                continue;
            };
            let when = sc.when.as_ref().and_then(|src| {
                match templates.compile(&format!("{id}.when"), src) {
                    Ok(t) => Some(t),
                    Err(e) => {
                        self.err_in_step(sc.index, &["when"], format!("step '{id}' when: {e}"));
                        None
                    }
                }
            });
            let mode = self.mode(sc, kind);
            let creator = steps.iter().find(|s| s.kind.creates_customer());
            if let Some(creator) = creator
                && kind.needs_customer()
                && sc.fields.contains_key(CUSTOMER_ID)
            {
                self.err_in_step(
                    sc.index,
                    &["fields", CUSTOMER_ID],
                    format!(
                        "step '{id}': the row's customer comes from step '{}', which creates it; \
                         remove {CUSTOMER_ID} here",
                        creator.id
                    ),
                );
            }
            if kind == StepKind::Refund
                && !sc.fields.contains_key(crate::job::steps::PAYIN_ID)
                && !steps.iter().any(|s| s.kind == StepKind::Payin)
            {
                self.err_in_step(
                    sc.index,
                    &["fields"],
                    format!(
                        "step '{id}': a refund needs the payin it refunds: a payin step before it, \
                         or fields.{} naming the payin (its uuid)",
                        crate::job::steps::PAYIN_ID
                    ),
                );
            }
            let specs = kind.fields_in(mode, creator.is_some());
            let fields = self.fields(&id, sc.index, (kind, specs), &sc.fields, templates);
            let batch_size = self.batch_size(sc, kind, max_batch);
            let wait = self.wait(sc, kind);
            steps.push(Step {
                id,
                kind,
                mode,
                when,
                fields,
                batch_size,
                wait,
            });
        }
        steps
    }

    /// A row step's type: known, of the job's provider, and in the order steps run
    /// (after `prev`).
    fn step_kind(
        &mut self,
        sc: &config::StepConfig,
        provider: ProviderKind,
        prev: Option<&Step>,
    ) -> Option<StepKind> {
        let id = &sc.id;
        let Some(kind) = StepKind::parse(&sc.kind) else {
            let hint =
                diag::did_you_mean(&sc.kind, StepKind::NAMES.iter().copied().chain(["export"]));
            let d = Diagnostic::new(
                self.path,
                format!(
                    "unknown step type '{}' (expected {}, or export)",
                    sc.kind,
                    StepKind::names_for(provider).join(", ")
                ),
            );
            let d = self.locate_value(d, &Self::step_path(sc.index, &["type"]), &sc.kind);
            self.diags.push(d.with_hint(hint));
            return None;
        };
        if kind.provider() != provider {
            self.err_in_step(
                sc.index,
                &["type"],
                format!(
                    "step '{id}': '{}' is a {} step, but the job's provider is {} (its steps: {}, export)",
                    kind.as_str(),
                    kind.provider().as_str(),
                    provider.as_str(),
                    StepKind::names_for(provider).join(", ")
                ),
            );
            return None;
        }
        if let Some(prev) = prev
            && prev.kind.rank() > kind.rank()
        {
            let order = match provider {
                ProviderKind::HelloClever => {
                    "contact, then kyc, then payout and payin, then refund"
                }
                ProviderKind::FinHub => {
                    "customer (or customers_bulk), then documents, then customer_status and kyc_confirmation"
                }
            };
            self.err_in_step(
                sc.index,
                &["type"],
                format!(
                    "step '{id}' ({}) cannot come after step '{}' ({}): steps run {order}",
                    kind.as_str(),
                    prev.id,
                    prev.kind.as_str()
                ),
            );
        }
        Some(kind)
    }

    /// A step's batch size: `batch.size` for the steps that batch, within
    /// `limits.max_batch_size`.
    fn batch_size(&mut self, sc: &config::StepConfig, kind: StepKind, max_batch: u32) -> u32 {
        let id = &sc.id;
        match (&sc.batch, kind) {
            (None, _) => DEFAULT_BATCH_SIZE.min(max_batch),
            (Some(b), StepKind::Payout | StepKind::CustomersBulk) => {
                match b.size {
                    None => DEFAULT_BATCH_SIZE.min(max_batch),
                    Some(n) if n >= 1 && n <= max_batch => n,
                    Some(n) => {
                        self.err_in_step(sc.index, &["batch", "size"], format!("batch.size must be 1 to {max_batch} (limits.max_batch_size), not {n}"));
                        0
                    }
                }
            }
            (Some(_), _) => {
                self.err_in_step(
                    sc.index,
                    &["batch"],
                    format!("step '{id}': batch applies to payout and customers_bulk steps only"),
                );
                0
            }
        }
    }

    /// A step's wait: what it waits for (KYC approved, payouts completed, payins received),
    /// how long and how often it asks.
    fn wait(&mut self, sc: &config::StepConfig, kind: StepKind) -> Option<Wait> {
        let id = &sc.id;
        let w = sc.wait.as_ref()?;
        let expected = match kind {
            StepKind::Kyc => "approved",
            StepKind::Payout => "completed",
            StepKind::Payin => "received",
            other => {
                self.err_in_step(
                    sc.index,
                    &["wait"],
                    format!(
                        "step '{id}': {} steps have nothing to wait for",
                        other.as_str()
                    ),
                );
                return None;
            }
        };
        if w.until != expected {
            self.err_in_step(
                sc.index,
                &["wait", "until"],
                format!(
                    "step '{id}': wait.until must be '{expected}' for a {} step (got '{}')",
                    kind.as_str(),
                    w.until
                ),
            );
        }
        let timeout = w
            .timeout
            .as_deref()
            .map_or(Ok(Duration::from_secs(1800)), parse_duration);
        let poll = w
            .poll
            .as_deref()
            .map_or(Ok(Duration::from_secs(10)), parse_duration);
        match (timeout, poll) {
            (Ok(timeout), Ok(poll)) => Some(Wait {
                until: w.until.clone(),
                timeout,
                poll,
            }),
            (Err(e), _) => {
                self.err_in_step(sc.index, &["wait", "timeout"], e);
                None
            }
            (_, Err(e)) => {
                self.err_in_step(sc.index, &["wait", "poll"], e);
                None
            }
        }
    }

    /// A contact step's `mode`; refused on other steps.
    fn mode(&mut self, sc: &config::StepConfig, kind: StepKind) -> ContactMode {
        let Some(written) = &sc.mode else {
            return ContactMode::default();
        };
        if kind != StepKind::Contact {
            self.err_in_step(
                sc.index,
                &["mode"],
                format!("step '{}': mode belongs to contact steps", sc.id),
            );
            return ContactMode::default();
        }
        ContactMode::parse(written).unwrap_or_else(|| {
            self.err_in_step(
                sc.index,
                &["mode"],
                format!(
                    "step '{}': mode must be upsert, create or update (got '{written}')",
                    sc.id
                ),
            );
            ContactMode::default()
        })
    }

    pub(super) fn fields(
        &mut self,
        id: &str,
        at: usize,
        (kind, specs): (StepKind, &'static [FieldSpec]),
        configs: &BTreeMap<String, FieldConfig>,
        templates: &mut Templates,
    ) -> Vec<Field> {
        let by_token = configs.contains_key("token");
        let mut fields = Vec::new();
        for (name, value) in configs {
            let Some(spec) = specs.iter().find(|f| f.name == name) else {
                if name == CUSTOMER_ID && kind.needs_customer() {
                    continue; // said above
                }
                let hint = diag::did_you_mean(name, specs.iter().map(|f| f.name));
                let d = Diagnostic::new(
                    self.path,
                    format!("unknown field '{name}' for a {} step", kind.as_str()),
                );
                let d = self.locate(d, &Self::step_path(at, &["fields", name]));
                self.diags.push(d.with_hint(hint));
                continue;
            };
            if by_token && spec.required == Required::DocumentKyc {
                self.err_in_step(at, &["fields", name], format!("step '{id}': field '{name}' is for KYC by documents; with 'token' only email and token are sent"));
                continue;
            }
            let label = format!("{id}.{name}");
            let compiled = match (value, spec.kind) {
                (FieldConfig::Map(map), FieldKind::Map) => {
                    let mut entries = Vec::new();
                    for (k, v) in map {
                        match templates.compile(&format!("{label}.{k}"), &v.clone().into_text()) {
                            Ok((t, u)) => entries.push((k.clone(), t, u)),
                            Err(e) => self.err_in_step(
                                at,
                                &["fields", name, k],
                                format!("field '{label}.{k}': {e}"),
                            ),
                        }
                    }
                    Some(FieldValue::Map(entries))
                }
                (FieldConfig::Map(_), _) => {
                    self.err_in_step(
                        at,
                        &["fields", name],
                        format!("field '{label}' takes a single value, not a map"),
                    );
                    None
                }
                (FieldConfig::Value(_), FieldKind::Map) => {
                    self.err_in_step(
                        at,
                        &["fields", name],
                        format!("field '{label}' takes a map of names to values"),
                    );
                    None
                }
                (FieldConfig::Value(v), _) => match templates
                    .compile(&label, &v.clone().into_text())
                {
                    Ok((t, u)) => Some(FieldValue::One(t, u)),
                    Err(e) => {
                        self.err_in_step(at, &["fields", name], format!("field '{label}': {e}"));
                        None
                    }
                },
            };
            if let Some(value) = compiled {
                let line = self
                    .marks
                    .get(Self::step_path(at, &["fields", name]))
                    .map(|p| p.key.0);
                fields.push(Field { spec, value, line });
            }
        }
        for spec in specs {
            let needed = match spec.required {
                Required::Always => true,
                Required::DocumentKyc => !by_token,
                Required::Optional => false,
            };
            if needed && !configs.contains_key(spec.name) {
                let alt = if spec.required == Required::DocumentKyc {
                    " (or use 'token' for KYC by share token)"
                } else if spec.name == CUSTOMER_ID {
                    " (no earlier step creates the row's customer: name it from the row, \
                     e.g. customerId: \"{{ row.customer_id }}\")"
                } else {
                    ""
                };
                self.err_in_step(
                    at,
                    &["fields"],
                    format!(
                        "step '{id}' ({}) is missing required field '{}'{alt}",
                        kind.as_str(),
                        spec.name
                    ),
                );
            }
        }
        fields
    }
}
