//! Export steps: resource, window, filters and output file.

use super::*;

impl Builder<'_> {
    /// Whether a step id is letters, digits, '-' or '_' (else says so).
    pub(super) fn step_id_ok(&mut self, id: &str, at: usize) -> bool {
        let ok = !id.is_empty()
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !ok {
            self.err_in_step(
                at,
                &["id"],
                format!("step id '{id}' must be letters, digits, '-' or '_'"),
            );
        }
        ok
    }

    /// An export step: its resource, window, filters and output file.
    pub(super) fn export(
        &mut self,
        sc: &config::StepConfig,
        dir: &Path,
        name: &str,
        scope: &str,
        vars: &BTreeMap<String, String>,
        provider: ProviderKind,
    ) -> Option<Export> {
        let id = sc.id.clone();
        if !self.step_id_ok(&id, sc.index) {
            return None;
        }
        if sc.when.is_some() || !sc.fields.is_empty() || sc.batch.is_some() || sc.wait.is_some() {
            self.err_in_step(sc.index, &["type"], format!("step '{id}': export steps take resource, from, to, filter and output (not when, fields, batch or wait)"));
        }
        let resource = self.export_resource(sc, provider)?;
        let job = BTreeMap::from([
            ("name".to_string(), name.to_string()),
            ("scope".to_string(), scope.to_string()),
        ]);
        let (from, to) = self.export_window(sc, resource, &job, vars);
        let filter = self.export_filters(sc, resource);
        let (path, format) = self.export_output(sc, dir, &job, vars)?;
        Some(Export {
            id,
            resource,
            from: from?,
            to: to?,
            filter,
            path,
            format,
        })
    }

    /// An export step's resource: known, the job's provider's, and with a window exactly
    /// when it takes dates.
    fn export_resource(
        &mut self,
        sc: &config::StepConfig,
        provider: ProviderKind,
    ) -> Option<Resource> {
        let id = &sc.id;
        let Some(resource_name) = &sc.resource else {
            self.err_in_step(
                sc.index,
                &["type"],
                format!(
                    "step '{id}': an export step needs a resource ({})",
                    Resource::NAMES.join(", ")
                ),
            );
            return None;
        };
        let Some(resource) = Resource::parse(resource_name) else {
            let hint = diag::did_you_mean(resource_name, Resource::NAMES);
            let d = Diagnostic::new(
                self.path,
                format!(
                    "unknown resource '{resource_name}' (expected {})",
                    Resource::NAMES.join(", ")
                ),
            );
            let d = self.locate_value(d, &Self::step_path(sc.index, &["resource"]), resource_name);
            self.diags.push(d.with_hint(hint));
            return None;
        };
        if resource.provider() != provider {
            self.err_in_step(
                sc.index,
                &["resource"],
                format!(
                    "step '{id}': {} is exported from {}, but the job's provider is {}",
                    resource.as_str(),
                    resource.provider().as_str(),
                    provider.as_str()
                ),
            );
            return None;
        }
        if !resource.has_window() && (sc.from.is_some() || sc.to.is_some()) {
            self.err_in_step(
                sc.index,
                &["from"],
                format!(
                    "step '{id}': {} has no date filter; leave out from and to",
                    resource.as_str()
                ),
            );
            return None;
        }
        if sc.from.is_none() && resource.has_window() {
            self.err_in_step(sc.index, &["type"], format!("step '{id}': an export step needs from (e.g. -1d, yesterday, 2026-11-01, or 'last_run or -7d')"));
            return None;
        }
        Some(resource)
    }

    /// An export step's window (`from`, `to`), rendered and parsed; `now` for a resource
    /// without dates.
    fn export_window(
        &mut self,
        sc: &config::StepConfig,
        resource: Resource,
        job: &BTreeMap<String, String>,
        vars: &BTreeMap<String, String>,
    ) -> (Option<When>, Option<When>) {
        let id = &sc.id;
        let when = |b: &mut Self, key: &str, v: Option<&config::Scalar>, default: &str| {
            let text = v
                .cloned()
                .map_or(default.to_string(), config::Scalar::into_text);
            match render_static(&text, job, vars).and_then(|t| When::parse(&t)) {
                Ok(w) => Some(w),
                Err(e) => {
                    b.err_in_step(sc.index, &[key], format!("step '{id}' {key}: {e}"));
                    None
                }
            }
        };
        let (from, to) = if resource.has_window() {
            (
                when(self, "from", sc.from.as_ref(), ""),
                when(self, "to", sc.to.as_ref(), "now"),
            )
        } else {
            (Some(When::Now), Some(When::Now))
        };
        if matches!(to, Some(When::LastRun(_))) {
            self.err_in_step(
                sc.index,
                &["to"],
                format!("step '{id}' to: last_run is for 'from'"),
            );
        }
        if let (Some(When::At(f)), Some(When::At(t))) = (&from, &to)
            && f > t
        {
            self.err_in_step(
                sc.index,
                &["to"],
                format!("step '{id}': 'to' ({t}) is before 'from' ({f})"),
            );
        }
        (from, to)
    }

    /// An export step's filters: those its resource takes, statuses among the provider's.
    fn export_filters(
        &mut self,
        sc: &config::StepConfig,
        resource: Resource,
    ) -> Vec<(String, String)> {
        let id = &sc.id;
        let mut filter = Vec::new();
        for (k, v) in &sc.filter {
            let v = v.clone().into_text();
            if !resource.filters().contains(&k.as_str()) {
                let allowed = match resource.filters() {
                    [] => format!("{} takes no filter", resource.as_str()),
                    f => format!("{} takes: {}", resource.as_str(), f.join(", ")),
                };
                self.err_in_step(
                    sc.index,
                    &["filter", k],
                    format!("step '{id}': unknown filter '{k}' ({allowed})"),
                );
                continue;
            }
            let statuses: Option<(&str, &[&str])> = match resource {
                Resource::CardPayments => {
                    Some(("card payment", &crate::provider::helloclever::CARD_STATUSES))
                }
                Resource::CustomersByStatus => {
                    Some(("customer", &crate::provider::finhub::CUSTOMER_STATUSES))
                }
                _ => None,
            };
            if let Some((what, allowed)) = statuses
                && k == "status"
                && !allowed.contains(&v.as_str())
            {
                let hint = diag::did_you_mean(&v, allowed.iter().copied());
                let d = self.locate(
                    Diagnostic::new(
                        self.path,
                        format!(
                            "step '{id}': {what} status '{v}' is not one of {}",
                            allowed.join(", ")
                        ),
                    ),
                    &Self::step_path(sc.index, &["filter", k]),
                );
                self.diags.push(d.with_hint(hint));
                continue;
            }
            filter.push((k.clone(), v));
        }
        filter
    }

    /// Where an export step writes, and in which format (from the path's extension when
    /// not given).
    fn export_output(
        &mut self,
        sc: &config::StepConfig,
        dir: &Path,
        job: &BTreeMap<String, String>,
        vars: &BTreeMap<String, String>,
    ) -> Option<(PathBuf, Format)> {
        let id = &sc.id;
        let Some(output) = &sc.output else {
            self.err_in_step(
                sc.index,
                &["type"],
                format!("step '{id}': an export step needs output: {{ path: ..., format: csv }}"),
            );
            return None;
        };
        for var in vars_used(&output.path) {
            if let Some(why) = vars.get(&var).and_then(|v| path_value_problem(v)) {
                self.err_in_step(
                    sc.index,
                    &["output", "path"],
                    format!("step '{id}': output.path uses vars.{var}, which holds {why}: a value that names a file must not move it"),
                );
                return None;
            }
        }
        let path = match render_static(&output.path, job, vars) {
            Ok(p) if !p.trim().is_empty() => lexical_clean(&dir.join(p)),
            Ok(_) => {
                self.err_in_step(
                    sc.index,
                    &["output", "path"],
                    format!("step '{id}': output.path is empty"),
                );
                return None;
            }
            Err(e) => {
                self.err_in_step(
                    sc.index,
                    &["output", "path"],
                    format!("step '{id}' output.path: {e}"),
                );
                return None;
            }
        };
        let format = match output.format.as_deref() {
            Some(f) => {
                match Format::parse(f) {
                    Some(f) => f,
                    None => {
                        self.err_in_step(sc.index, &["output", "format"], format!("step '{id}': unknown output format '{f}' (expected csv, jsonl or json)"));
                        return None;
                    }
                }
            }
            None => path
                .extension()
                .and_then(|e| Format::parse(&e.to_string_lossy()))
                .unwrap_or(Format::Csv),
        };
        Some((path, format))
    }
}
