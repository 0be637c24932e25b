//! The checks of one value, and those across a row's fields (payout method parameters, amounts against limits).

use super::*;

/// The string a slot's last value owns, if any, for the next value to be built in.
pub(super) fn take_text(slot: &mut Rendered) -> String {
    match std::mem::replace(slot, Rendered::Text(Cow::Borrowed(""))) {
        Rendered::Text(Cow::Owned(s)) => s,
        _ => String::new(),
    }
}

pub(super) fn literal(field: &Field) -> Option<&str> {
    match &field.value {
        FieldValue::One(Template::Literal(s), _) => Some(s),
        _ => None,
    }
}

pub(super) fn required(field: &Field) -> bool {
    matches!(
        field.spec.required,
        Required::Always | Required::DocumentKyc
    )
}

/// ` (got 'value')`, masked when sensitive and shortened when long.
pub(super) fn got_suffix(got: Option<&str>, sensitive: bool) -> String {
    let Some(g) = got else { return String::new() };
    let shown = if sensitive {
        crate::redact::mask_tail(g)
    } else {
        g.to_string()
    };
    let short: String = shown.chars().take(80).collect();
    let ellipsis = if short.len() < shown.len() { "…" } else { "" };
    format!(" (got '{short}{ellipsis}')")
}

/// Checks payout method parameters: (parameter, message, offending value). `slots`, when
/// known, gives each parameter's place among `entries`.
pub(super) fn check_params<'v>(
    entries: &'v [(&str, Cow<str>)],
    method: Option<&methods::PayoutMethod>,
    slots: Option<&[Option<usize>]>,
) -> Vec<(Option<&'v str>, String, Option<&'v str>)> {
    let mut out = Vec::new();
    let Some(m) = method else {
        for (k, v) in entries {
            if v.trim().is_empty() {
                out.push((Some(*k), format!("{k} is empty"), None));
            }
        }
        return out;
    };
    for (n, p) in m.params.iter().enumerate() {
        let entry = match slots {
            Some(slots) => slots[n].and_then(|i| entries.get(i)),
            None => entries.iter().find(|(k, _)| *k == p.name),
        };
        match entry {
            None => out.push((
                None,
                format!("payout method {} needs parameter '{}'", m.name, p.name),
                None,
            )),
            Some((k, v)) => {
                if let Err(e) = (p.check)(v) {
                    out.push((Some(*k), e, Some(v.as_ref())));
                }
            }
        }
    }
    out
}

/// Checks between fields of one step; problems as (field index, offending value, message).
pub(super) fn cross_checks<'v>(
    step: &Step,
    rules: &StepRules,
    values: &'v [Rendered],
    amount: Option<Decimal>,
    today: NaiveDate,
    problems: &mut Vec<(usize, Option<&'v str>, String)>,
) {
    let idx = &rules.idx;
    let text = |i: Option<usize>| i.and_then(|i| values[i].text());
    match step.kind {
        // In update mode the contact has its registration number already, or the row sets it.
        StepKind::Contact if step.mode != crate::job::steps::ContactMode::Update => {
            if text(idx.kind) == Some("organization")
                && text(idx.reg_no).is_none()
                && let Some(i) = idx.reg_no.or(idx.kind)
            {
                problems.push((
                    i,
                    None,
                    "\u{0}reg_no is required for an organization".into(),
                ));
            }
        }
        StepKind::Kyc => {
            let issue = text(idx.issue_date).and_then(|d| validate::date(d).ok());
            let expiry = text(idx.expiry_date).and_then(|d| validate::date(d).ok());
            if let (Some(ei), Some(e)) = (idx.expiry_date, expiry) {
                if let Some(i) = issue.filter(|i| e <= *i) {
                    problems.push((
                        ei,
                        text(idx.expiry_date),
                        format!("\u{0}expiry_date must be after issue_date {i}"),
                    ));
                } else if e < today {
                    problems.push((
                        ei,
                        text(idx.expiry_date),
                        "\u{0}the document has expired".into(),
                    ));
                }
            }
            if let (Some(ii), Some(i)) = (idx.issue_date, issue)
                && i > today
            {
                problems.push((
                    ii,
                    text(idx.issue_date),
                    "\u{0}issue_date is in the future".into(),
                ));
            }
        }
        StepKind::Payout | StepKind::Payin => {
            // The method's name, currency and amount limits, where payrun knows them.
            let limits = if step.kind == StepKind::Payout {
                rules
                    .method(values)
                    .map(|m| (m.name, m.currency, m.min_amount, m.max_amount))
            } else {
                text(idx.payin_method)
                    .and_then(methods::payin_method)
                    .map(|m| (m.name, m.currency, m.min_amount, m.max_amount))
            };
            if let (Some((name, currency, min, max)), Some(a), Some(ai)) =
                (limits, amount, idx.amount)
                && (min.is_some_and(|min| a < Decimal::from(min))
                    || max.is_some_and(|max| a > Decimal::from(max)))
            {
                let msg = format!(
                    "\u{0}amount must be between {} and {} {currency} for {name}",
                    min.unwrap_or(0),
                    max.map_or("any".to_string(), |x| x.to_string()),
                );
                problems.push((ai, text(idx.amount), msg));
            }
        }
        _ => {}
    }
}

/// A field's name for messages (`pay.amount`, `pay.payout_method_params.bsb`), formatted
/// only when a message needs it.
pub(super) struct Label<'a>(
    pub(super) &'a str,
    pub(super) &'a str,
    pub(super) Option<&'a str>,
);

impl std::fmt::Display for Label<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.0, self.1)?;
        if let Some(sub) = self.2 {
            write!(f, ".{sub}")?;
        }
        Ok(())
    }
}
