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

/// Text from a file or a provider as one printable line: control characters (a newline in
/// a CSV key, an escape sequence in a provider's message) are shown escaped (`\n`,
/// `\u{1b}`), so no value can forge a line of payrun's own or move a terminal's cursor.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Masks what may be an account or document number in free text (a provider's message, an
/// error): every run of 7 or more digits keeps only its last 3. (payrun's own messages mask
/// at the source; this is the backstop for text from elsewhere. Shorter runs are mostly
/// amounts and limits, which readers need.)
pub fn scrub(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut digits = String::new();
    let flush = |digits: &mut String, out: &mut String| {
        if digits.len() >= 7 {
            out.push_str(&mask_tail(digits));
        } else {
            out.push_str(digits);
        }
        digits.clear();
    };
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
        } else {
            flush(&mut digits, &mut out);
            out.push(c);
        }
    }
    flush(&mut digits, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_from_elsewhere_prints_as_one_line() {
        assert_eq!(
            printable("E1\n2026 INFO run finished"),
            "E1\\n2026 INFO run finished"
        );
        assert_eq!(printable("a\u{1b}[2Jb\r"), "a\\u{1b}[2Jb\\r");
        assert!(matches!(
            printable("Zoë O'Brien"),
            std::borrow::Cow::Borrowed("Zoë O'Brien")
        ));
    }

    #[test]
    fn masks_to_last_three() {
        assert_eq!(mask_tail("12345678"), "*****678");
        assert_eq!(mask_tail("PA1234567"), "******567");
        assert_eq!(mask_tail("abc"), "***");
        assert_eq!(mask_tail(""), "");
    }

    #[test]
    fn scrubbing_free_text() {
        assert_eq!(
            scrub("account 12345678 rejected"),
            "account *****678 rejected"
        );
        assert_eq!(scrub("row 42, amount 1500.00"), "row 42, amount 1500.00");
        assert_eq!(
            scrub("between 1 and 100000 AUD"),
            "between 1 and 100000 AUD"
        );
        assert_eq!(scrub("PA1234567"), "PA****567");
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
