//! Building the stored form of a checked item: canonical JSON of its fields (masked copy
//! for display, SHA-256 of the full values for change detection), its batch group and its
//! external id.

use super::check::{ItemPlan, Rendered};
use super::{external_id, hex};
use crate::job::steps::{BATCH_FIELDS, FieldKind, StepKind};
use crate::job::{Job, Step};
use crate::redact;
use rust_decimal::Decimal;
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::path::Path;

/// The full (unmasked) value of one field of an item.
enum FieldValue<'a> {
    Text(Cow<'a, str>),
    /// Entries sorted by key, each key once (the last given wins, as in a JSON object).
    Map(Vec<(&'a str, &'a str)>),
}

/// One field of an item: its name (`name#sha256` for an image's content hash), its value,
/// and whether the stored copy masks it.
struct Entry<'a> {
    name: Cow<'a, str>,
    value: FieldValue<'a>,
    sensitive: bool,
}

impl Entry<'_> {
    fn is_image_hash(&self) -> bool {
        self.name.contains('#')
    }
}

/// The item's fields by name, in key order: the canonical form that is hashed and stored.
struct Fields<'a> {
    entries: Vec<Entry<'a>>,
}

impl<'a> Fields<'a> {
    fn text(&self, name: &str) -> &str {
        self.entries
            .iter()
            .find_map(|e| match &e.value {
                FieldValue::Text(t) if e.name == name => Some(t.as_ref()),
                _ => None,
            })
            .unwrap_or("")
    }

    /// Compact JSON with keys in byte order, exactly what serde_json prints for the same
    /// object held in its (ordered) `Map`. `shown`: sensitive values masked; `hashes`: the
    /// image hashes (`name#sha256`) kept.
    fn json(&self, shown: bool, hashes: bool) -> String {
        let mut out = Vec::with_capacity(256);
        out.push(b'{');
        let mut first = true;
        for e in &self.entries {
            if !hashes && e.is_image_hash() {
                continue;
            }
            if !std::mem::take(&mut first) {
                out.push(b',');
            }
            json_str(&mut out, &e.name);
            out.push(b':');
            match &e.value {
                FieldValue::Text(t) if shown && e.sensitive => {
                    json_str(&mut out, &redact::mask_tail(t))
                }
                FieldValue::Text(t) => json_str(&mut out, t),
                FieldValue::Map(entries) => {
                    out.push(b'{');
                    for (i, (k, v)) in entries.iter().enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        json_str(&mut out, k);
                        out.push(b':');
                        if shown {
                            json_str(&mut out, &redact::for_display(k, v));
                        } else {
                            json_str(&mut out, v);
                        }
                    }
                    out.push(b'}');
                }
            }
        }
        out.push(b'}');
        // Only whole UTF-8 strings and ASCII punctuation went in.
        String::from_utf8(out).unwrap_or_default()
    }

    /// The account a payout pays (see [`account_text`]).
    fn account(&self) -> Option<String> {
        let params = self.entries.iter().find_map(|e| match &e.value {
            FieldValue::Map(m) if e.name == "payout_method_params" => Some(m.as_slice()),
            _ => None,
        });
        account_text(
            self.text("payout_method_name"),
            params.unwrap_or_default().iter().copied(),
        )
    }

    /// The keyed hash of the account a payout pays and its amount `a`: what the
    /// duplicate-payroll guard compares (128 bits tell payments apart; the state keeps no
    /// more than it needs).
    fn payee_hash(&self, a: Decimal, hasher: &crate::state::key::ContentKey) -> Option<String> {
        let account = self.account()?;
        let currency = self.text("currency");
        let mut h =
            hasher.hash(format!("{account}\u{1f}{currency}\u{1f}{}", a.normalize()).as_bytes());
        h.truncate(32);
        Some(h)
    }

    fn has_image_hashes(&self) -> bool {
        self.entries.iter().any(Entry::is_image_hash)
    }
}

/// The account a payout pays, as text: its method and the method's parameters in key
/// order (of a key given twice, the last), but any whose name holds `name` (an account's
/// holder may be written two ways: it is the same account), each value without spaces or
/// dashes and in ASCII lower case. `None` when there is neither.
pub fn account_text<'a>(
    method: &str,
    params: impl Iterator<Item = (&'a str, &'a str)>,
) -> Option<String> {
    let mut text = Vec::with_capacity(64);
    account_bytes(method, params, &mut |b| text.push(b))
        .then(|| String::from_utf8_lossy(&text).into_owned())
}

/// Feeds [`account_text`]'s bytes to `out`, one at a time (nothing allocated); `false`
/// when there is no account.
fn account_bytes<'a>(
    method: &str,
    params: impl Iterator<Item = (&'a str, &'a str)>,
    out: &mut impl FnMut(u8),
) -> bool {
    let mut params: smallvec::SmallVec<[(&str, &str); 8]> = params.collect();
    // Stable: of equal keys the last given is kept, as in the item's JSON.
    params.sort_by(|a, b| a.0.cmp(b.0));
    params.dedup_by(|later, earlier| {
        let same = later.0 == earlier.0;
        if same {
            earlier.1 = later.1;
        }
        same
    });
    params.retain(|(k, _)| account_key(k));
    account_bytes_in_order(method, params.into_iter(), out)
}

/// Whether a method parameter named `key` is part of the account it names.
pub(super) fn account_key(key: &str) -> bool {
    !key.contains("name")
}

/// [`account_bytes`] of parameters already in key order, each key once, holders' names
/// left out.
fn account_bytes_in_order<'a>(
    method: &str,
    params: impl Iterator<Item = (&'a str, &'a str)> + Clone,
    out: &mut impl FnMut(u8),
) -> bool {
    if method.is_empty() && params.clone().all(|(_, v)| v.is_empty()) {
        return false;
    }
    method.bytes().for_each(&mut *out);
    for (k, v) in params.filter(|(_, v)| !v.is_empty()) {
        out(0x1f);
        k.bytes().for_each(&mut *out);
        out(b'=');
        // `062-000` and `062 000` are BSB 062000; a PayID's case is not its own.
        for b in v.bytes().filter(|b| !matches!(b, b' ' | b'-')) {
            out(b.to_ascii_lowercase());
        }
    }
    true
}

/// A 64-bit hash of the account a payout pays (see [`account_text`]): its method, and
/// its parameters already in key order, each key once, holders' names left out. For
/// finding two rows that pay one account; not collision-proof.
pub(super) fn account_hash<'a>(
    method: &str,
    params: impl Iterator<Item = (&'a str, &'a str)> + Clone,
) -> Option<u64> {
    if method.is_empty() && params.clone().all(|(_, v)| v.is_empty()) {
        return None;
    }
    // Each part taken eight bytes at a time where it is (most values need no change), its
    // last word carrying its length: the same parts as [`account_text`]'s, the same hash.
    let mix = |mut h: u64, part: &[u8]| {
        let mut words = part.chunks_exact(8);
        for w in &mut words {
            let w = u64::from_le_bytes(w.try_into().expect("eight bytes"));
            h = (h ^ w).wrapping_mul(0xff51_afd7_ed55_8ccd).rotate_left(31);
        }
        let rest = words.remainder();
        let mut last = [0u8; 8];
        last[..rest.len()].copy_from_slice(rest);
        // At most seven bytes are left: the eighth holds the length.
        let last = u64::from_le_bytes(last) ^ ((part.len() as u64) << 56);
        (h ^ last)
            .wrapping_mul(0xc4ce_b9fe_1a85_ec53)
            .rotate_left(29)
    };
    let mut h = mix(0x9e37_79b9_7f4a_7c15, method.as_bytes());
    for (k, v) in params.filter(|(_, v)| !v.is_empty()) {
        h = mix(h, k.as_bytes());
        let plain = !v.bytes().fold(false, |odd, b| {
            odd | (b == b' ') | (b == b'-') | b.is_ascii_uppercase()
        });
        h = if plain {
            mix(h, v.as_bytes())
        } else {
            let normal: smallvec::SmallVec<[u8; 64]> = v
                .bytes()
                .filter(|b| !matches!(b, b' ' | b'-'))
                .map(|b| b.to_ascii_lowercase())
                .collect();
            mix(h, &normal)
        };
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    Some(h ^ (h >> 33))
}

/// A JSON string, escaped as serde_json escapes it.
fn json_str(out: &mut Vec<u8>, s: &str) {
    // Most values need no escape: one vectorised pass (a fold, no early exit) says so, and
    // they are copied whole; serde_json's writer looks each byte up in a table.
    let plain = !s.bytes().fold(false, |esc, b| {
        esc | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if plain {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
        return;
    }
    // Writing to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Builds the item for one rendered, valid step of a row.
pub fn build_item(
    job: &Job,
    (si, step): (usize, &Step),
    key: &str,
    values: &[Rendered],
    amount: Option<Decimal>,
    csv_dir: &Path,
    (keep_full, hasher): (bool, &crate::state::key::ContentKey),
) -> Result<ItemPlan, String> {
    let mut entries = Vec::with_capacity(values.len() + 1);
    for (field, value) in step.fields.iter().zip(values) {
        let name = field.spec.name;
        match value {
            Rendered::Text(v) if v.is_empty() => {}
            Rendered::Text(v) => {
                let v = match (field.spec.kind, amount) {
                    (FieldKind::Amount, Some(a)) => Cow::Owned(a.to_string()),
                    _ => Cow::Borrowed(v.as_ref()),
                };
                if let FieldKind::Image(_) = field.spec.kind {
                    // The image's content is part of what was planned: a replaced file is a change.
                    let path = crate::validate::confined(csv_dir, v.as_ref())?;
                    let bytes = std::fs::read(&path).map_err(|e| {
                        format!("image file {} cannot be read: {e}", path.display())
                    })?;
                    entries.push(Entry {
                        name: Cow::Owned(format!("{name}#sha256")),
                        value: FieldValue::Text(Cow::Owned(hex(&Sha256::digest(&bytes)))),
                        sensitive: false,
                    });
                }
                entries.push(Entry {
                    name: Cow::Borrowed(name),
                    value: FieldValue::Text(v),
                    sensitive: field.spec.sensitive,
                });
            }
            Rendered::Map(given) => {
                let mut sorted: Vec<(&str, &str)> =
                    given.iter().map(|(k, v)| (*k, v.as_ref())).collect();
                // Stable: of equal keys the last given stays last, and is the one kept.
                sorted.sort_by(|a, b| a.0.cmp(b.0));
                let mut map: Vec<(&str, &str)> = Vec::with_capacity(sorted.len());
                for (k, v) in sorted {
                    match map.last_mut() {
                        Some(last) if last.0 == k => last.1 = v,
                        _ => map.push((k, v)),
                    }
                }
                entries.push(Entry {
                    name: Cow::Borrowed(name),
                    value: FieldValue::Map(map),
                    sensitive: false,
                });
            }
        }
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    let fields = Fields { entries };
    let ext = || match fields.text("external_id") {
        "" => external_id(&[&job.name, &job.scope, &step.id, key]),
        user => user.to_string(),
    };
    let currency = || Some(fields.text("currency").to_string()).filter(|c| !c.is_empty());
    let (currency, group, ext) = match step.kind {
        StepKind::Payout => {
            let group = BATCH_FIELDS
                .iter()
                .map(|f| fields.text(f))
                .collect::<Vec<_>>()
                .join("\u{1f}");
            (currency(), Some(group), Some(ext()))
        }
        // A payin is found again by its external id, in the provider's listing.
        StepKind::Payin => (currency(), None, Some(ext())),
        StepKind::Refund => (currency(), None, None),
        _ => (None, None, None),
    };
    let hashed = fields.json(false, true);
    // What the plan's digest takes of a payout or a refund, and the duplicate-payroll
    // guard of a payout; not when rendering to send.
    let (digest, payee) = match (step.kind, amount) {
        (StepKind::Payout, Some(a)) if !keep_full => (
            Some(super::digest::content(&hashed)),
            fields.payee_hash(a, hasher),
        ),
        (StepKind::Refund, _) if !keep_full => (Some(super::digest::content(&hashed)), None),
        _ => (None, None),
    };
    let send = keep_full.then(|| {
        if fields.has_image_hashes() {
            fields.json(false, false)
        } else {
            hashed.clone()
        }
    });
    Ok(ItemPlan {
        step: si,
        skipped: false,
        // Rendering to send needs no display copy.
        payload: if keep_full {
            String::new()
        } else {
            fields.json(true, false)
        },
        hash: hasher.hash(hashed.as_bytes()),
        legacy_hash: hasher.legacy_hash(hashed.as_bytes()),
        amount,
        currency,
        group,
        external_id: ext,
        send,
        digest,
        payee,
    })
}

/// The item of a row that does not take part in a step (`when` was false).
pub fn skipped_item(si: usize, hasher: &crate::state::key::ContentKey) -> ItemPlan {
    ItemPlan {
        step: si,
        skipped: true,
        payload: "{}".into(),
        hash: hasher.hash(b"skipped"),
        legacy_hash: hasher.legacy_hash(b"skipped"),
        amount: None,
        currency: None,
        group: None,
        external_id: None,
        send: None,
        digest: None,
        payee: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;

    #[test]
    fn an_account_is_its_method_and_parameters_however_spelled_but_not_its_holder() {
        let acct = |method, params: &[(&'static str, &'static str)]| {
            account_text(method, params.iter().copied())
        };
        let a = acct(
            "au_bank_aud",
            &[
                ("bsb", "062000"),
                ("account_number", "12345678"),
                ("account_name", "Ann Lee"),
            ],
        );
        let b = acct(
            "au_bank_aud",
            &[
                ("account_name", "A Lee"),
                ("account_number", "1234 5678"),
                ("bsb", "062-000"),
            ],
        );
        assert_eq!(a, b);
        assert_ne!(
            a,
            acct(
                "au_bank_aud",
                &[("bsb", "062000"), ("account_number", "12345679")]
            )
        );
        assert_ne!(
            a,
            acct(
                "nz_bank_nzd",
                &[("bsb", "062000"), ("account_number", "12345678")]
            )
        );
        assert_eq!(
            acct("payid", &[("payid", "Ann@Example.com")]),
            acct("payid", &[("payid", "ann@example.com")])
        );
        assert_eq!(acct("", &[]), None);
    }

    /// The stored hash of every planned item comes from this text: it must stay exactly
    /// what serde_json prints for the same object, or a re-plan would see every row changed.
    #[test]
    fn canonical_json_is_serde_jsons_text_of_the_same_object() {
        let tricky = [
            "plain",
            "quote \" backslash \\ slash /",
            "tab\tnewline\ncr\r bell\u{7} nul\u{0} del\u{7f}",
            "é ü 日本 😀 \u{2028}",
            "",
        ];
        let params = vec![
            ("bsb", "062000"),
            ("account_number", "12345678"),
            ("a\"b", tricky[2]),
            ("bsb", "062001"),
        ];
        let mut sorted = params.clone();
        sorted.sort_by(|a, b| a.0.cmp(b.0));
        sorted.dedup_by(|later, earlier| {
            if later.0 == earlier.0 {
                earlier.1 = later.1;
                true
            } else {
                false
            }
        });
        let entry = |name: String, value, sensitive| Entry {
            name: Cow::Owned(name),
            value,
            sensitive,
        };
        let mut entries: Vec<Entry> = tricky
            .iter()
            .enumerate()
            .map(|(i, t)| entry(format!("f{i}"), FieldValue::Text(Cow::Borrowed(*t)), i == 1))
            .collect();
        entries.push(entry(
            "f1#sha256".into(),
            FieldValue::Text("abc".into()),
            false,
        ));
        entries.push(entry(
            "payout_method_params".into(),
            FieldValue::Map(sorted),
            false,
        ));
        entries.push(entry(
            "Zed".into(),
            FieldValue::Text("upper first".into()),
            false,
        ));
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        let fields = Fields { entries };

        let mut full = Map::new();
        let mut shown = Map::new();
        for (i, t) in tricky.iter().enumerate() {
            full.insert(format!("f{i}"), serde_json::Value::String(t.to_string()));
            let s = if i == 1 {
                redact::mask_tail(t)
            } else {
                t.to_string()
            };
            shown.insert(format!("f{i}"), serde_json::Value::String(s));
        }
        full.insert("f1#sha256".into(), "abc".into());
        let (mut f, mut s) = (Map::new(), Map::new());
        for (k, v) in &params {
            f.insert(k.to_string(), serde_json::Value::String(v.to_string()));
            s.insert(
                k.to_string(),
                serde_json::Value::String(redact::for_display(k, v)),
            );
        }
        full.insert("payout_method_params".into(), serde_json::Value::Object(f));
        shown.insert("payout_method_params".into(), serde_json::Value::Object(s));
        full.insert("Zed".into(), "upper first".into());
        shown.insert("Zed".into(), "upper first".into());

        assert_eq!(
            fields.json(false, true),
            serde_json::Value::Object(full.clone()).to_string()
        );
        assert_eq!(
            fields.json(true, false),
            serde_json::Value::Object(shown).to_string()
        );
        full.remove("f1#sha256");
        assert_eq!(
            fields.json(false, false),
            serde_json::Value::Object(full).to_string()
        );
    }
}
