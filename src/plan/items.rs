//! Building the stored form of a checked item: canonical JSON of its fields (masked copy
//! for display, SHA-256 of the full values for change detection), its batch group and its
//! external id.

use super::check::{ItemPlan, Rendered};
use super::{external_id, hex};
use crate::job::steps::{BATCH_FIELDS, FieldKind, StepKind};
use crate::job::{Job, Step};
use crate::redact;
use rust_decimal::Decimal;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::path::Path;

/// Builds the item for one rendered, valid step of a row.
#[allow(clippy::too_many_arguments)]
pub fn build_item(
    job: &Job,
    si: usize,
    step: &Step,
    key: &str,
    values: &[Rendered],
    amount: Option<Decimal>,
    csv_dir: &Path,
    keep_full: bool,
) -> Result<ItemPlan, String> {
    let mut full = Map::new();
    let mut shown = Map::new();
    for (field, value) in step.fields.iter().zip(values) {
        let name = field.spec.name;
        match value {
            Rendered::Text(v) if v.is_empty() => {}
            Rendered::Text(v) => {
                let v = match (field.spec.kind, amount) {
                    (FieldKind::Amount, Some(a)) => a.to_string(),
                    _ => v.to_string(),
                };
                if let FieldKind::Image(_) = field.spec.kind {
                    // The image's content is part of what was planned: a replaced file is a change.
                    let path = csv_dir.join(&v);
                    let bytes = std::fs::read(&path).map_err(|e| {
                        format!("image file {} cannot be read: {e}", path.display())
                    })?;
                    full.insert(
                        format!("{name}#sha256"),
                        Value::String(hex(&Sha256::digest(&bytes))),
                    );
                }
                // Rendering to send needs no display copy.
                if !keep_full {
                    let masked = if field.spec.sensitive {
                        redact::mask_tail(&v)
                    } else {
                        v.clone()
                    };
                    shown.insert(name.into(), Value::String(masked));
                }
                full.insert(name.into(), Value::String(v));
            }
            Rendered::Map(entries) => {
                let mut f = Map::new();
                let mut s = Map::new();
                for (k, v) in entries {
                    f.insert((*k).into(), Value::String(v.to_string()));
                    s.insert((*k).into(), Value::String(redact::for_display(k, v)));
                }
                full.insert(name.into(), Value::Object(f));
                shown.insert(name.into(), Value::Object(s));
            }
        }
    }
    let get = |n: &str| {
        full.get(n)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let (currency, group, ext) = if step.kind == StepKind::Payout {
        let group = BATCH_FIELDS
            .iter()
            .map(|f| get(f))
            .collect::<Vec<_>>()
            .join("\u{1f}");
        let ext = match full.get("external_id").and_then(Value::as_str) {
            Some(user) => user.to_string(),
            None => external_id(&[&job.name, &job.scope, &step.id, key]),
        };
        (Some(get("currency")), Some(group), Some(ext))
    } else {
        (None, None, None)
    };
    // serde_json's Map is ordered by key, so the JSON text is canonical.
    // What a request carries: the full values, without the image-content hashes.
    let send = keep_full.then(|| {
        full.iter()
            .filter(|(k, _)| !k.contains('#'))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<Map<String, Value>>()
    });
    let full_text = Value::Object(full).to_string();
    Ok(ItemPlan {
        step: si,
        skipped: false,
        payload: Value::Object(shown).to_string(),
        hash: hex(&Sha256::digest(full_text.as_bytes())),
        amount,
        currency,
        group,
        external_id: ext,
        send,
    })
}

/// The item of a row that does not take part in a step (`when` was false).
pub fn skipped_item(si: usize) -> ItemPlan {
    ItemPlan {
        step: si,
        skipped: true,
        payload: "{}".into(),
        hash: hex(&Sha256::digest(b"skipped")),
        amount: None,
        currency: None,
        group: None,
        external_id: None,
        send: None,
    }
}
