//! Redaction: the one place that decides how sensitive values look when payrun shows or
//! stores them. Account and document numbers keep their last 3 characters; credentials
//! keep nothing.

/// Masks all but the last 3 characters: `12345678` → `*****678`.
pub fn mask_tail(value: &str) -> String {
    let n = value.chars().count();
    if n <= 3 {
        return "*".repeat(n);
    }
    let mut out = "*".repeat(n - 3);
    out.extend(value.chars().skip(n - 3));
    out
}

/// Whether a field or parameter name holds a value to be masked.
pub fn is_sensitive_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "account_number",
        "document_number",
        "iban",
        "card_number",
        "token",
        "secret",
        "password",
    ]
    .iter()
    .any(|s| n.contains(s))
}

/// Masks `value` when `name` marks it as sensitive.
pub fn for_display(name: &str, value: &str) -> String {
    if is_sensitive_name(name) {
        mask_tail(value)
    } else {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_to_last_three() {
        assert_eq!(mask_tail("12345678"), "*****678");
        assert_eq!(mask_tail("PA1234567"), "******567");
        assert_eq!(mask_tail("abc"), "***");
        assert_eq!(mask_tail(""), "");
    }

    #[test]
    fn names() {
        assert!(is_sensitive_name("account_number"));
        assert!(is_sensitive_name("document_number"));
        assert!(is_sensitive_name("client_secret"));
        assert!(!is_sensitive_name("bsb"));
        assert!(!is_sensitive_name("account_name"));
        assert_eq!(for_display("account_number", "12345678"), "*****678");
        assert_eq!(for_display("email", "a@b.co"), "a@b.co");
    }
}
