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

/// Whether a field or parameter name holds a value to be masked: account, card, wallet and
/// document numbers, phone numbers of wallets, PayIDs and credentials, however a provider
/// or a job spells them (`account_number`, `accountNumber`, `account_no`, `acct-no`, …).
pub fn is_sensitive_name(name: &str) -> bool {
    let n: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    // Contained anywhere in the name.
    const PARTS: &[&str] = &[
        "accountnumber",
        "accountnum",
        "accountno",
        "acctnumber",
        "acctnum",
        "acctno",
        "iban",
        "cardnumber",
        "cardno",
        "walletnumber",
        "walletid",
        "mobilenumber",
        "phonenumber",
        "msisdn",
        "payid",
        "documentnumber",
        "docnumber",
        "passportnumber",
        "licencenumber",
        "licensenumber",
        "taxfilenumber",
        "token",
        "secret",
        "password",
    ];
    // Whole names only (short ones would match inside longer words).
    const WHOLE: &[&str] = &["pin", "cvv", "cvc", "tfn", "ssn", "pan"];
    PARTS.iter().any(|p| n.contains(p)) || WHOLE.contains(&n.as_str())
}

/// Masks `value` when `name` marks it as sensitive.
pub fn for_display(name: &str, value: &str) -> String {
    if is_sensitive_name(name) {
        mask_tail(value)
    } else {
        value.to_string()
    }
}

/// A URL as it may be shown: its password, if any, as `****` (`postgresql://ann:****@db/pay`).
/// Text that is not a URL is shown as it is, but for anything between `:` and `@` after
/// the scheme, which would be a password.
pub fn url_without_password(text: &str) -> String {
    if let Ok(mut url) = reqwest::Url::parse(text) {
        if url.password().is_some() {
            let _ = url.set_password(Some("****"));
        }
        return url.to_string();
    }
    match (text.find("://"), text.rfind('@')) {
        (Some(s), Some(at)) if at > s => match text[s + 3..at].find(':') {
            Some(colon) => format!("{}:****{}", &text[..s + 3 + colon], &text[at..]),
            None => text.to_string(),
        },
        _ => text.to_string(),
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

/// Masks what may be an account, card or document number in free text (a provider's
/// message, an error) before payrun stores, writes or prints it: every run of 5 or more
/// digits keeps only its last 3 — but an amount is left as it is: a run in a decimal
/// (`1234.56`), or followed by a currency code (`100000 AUD`). payrun's own messages mask
/// at the source; this is the backstop for text from elsewhere.
pub fn scrub(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        if !chars[i].is_ascii_digit() {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && chars[i].is_ascii_digit() {
            i += 1;
        }
        let run: String = chars[start..i].iter().collect();
        if run.len() >= 5 && !amount_at(&chars, start, i) {
            out.push_str(&mask_tail(&run));
        } else {
            out.push_str(&run);
        }
    }
    out
}

/// Whether the digits `chars[start..end]` are (part of) an amount: in a decimal number, or
/// followed by an ISO currency code.
fn amount_at(chars: &[char], start: usize, end: usize) -> bool {
    let digit = |i: usize| chars.get(i).is_some_and(char::is_ascii_digit);
    let decimal_after = chars.get(end) == Some(&'.') && digit(end + 1);
    let decimal_before = start >= 2 && chars[start - 1] == '.' && digit(start - 2);
    let mut j = end;
    if chars.get(j) == Some(&' ') {
        j += 1;
    }
    let code: String = chars.iter().skip(j).take(3).collect();
    let bounded = !chars.get(j + 3).is_some_and(|c| c.is_ascii_alphanumeric());
    let currency = code.len() == 3
        && code.chars().all(|c| c.is_ascii_uppercase())
        && bounded
        && crate::validate::currency(&code).is_ok();
    decimal_after || decimal_before || currency
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
    fn urls_are_shown_without_their_password() {
        assert_eq!(
            url_without_password("postgresql://ann:s3cret@db:5432/pay?sslmode=require"),
            "postgresql://ann:****@db:5432/pay?sslmode=require"
        );
        assert_eq!(
            url_without_password("postgres://ann@db/pay"),
            "postgres://ann@db/pay"
        );
        // Not a URL the parser takes (a bad port): the password is still hidden.
        assert_eq!(
            url_without_password("postgres://ann:s3cret@db:99999/pay"),
            "postgres://ann:****@db:99999/pay"
        );
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
        // Five and six digits are account numbers too (a BSB-less account, a wallet).
        assert_eq!(scrub("acct 98765 closed"), "acct **765 closed");
        assert_eq!(scrub("acct 987654321"), "acct ******321");
        assert_eq!(scrub("wallet 123456"), "wallet ***456");
        assert_eq!(
            scrub("limit 25000.50, fee 12345.6"),
            "limit 25000.50, fee 12345.6"
        );
        assert_eq!(scrub("at most 250000 PHP"), "at most 250000 PHP");
        assert_eq!(scrub("id 12345 ABCD"), "id **345 ABCD");
    }

    #[test]
    fn names() {
        assert!(is_sensitive_name("account_number"));
        assert!(is_sensitive_name("document_number"));
        assert!(is_sensitive_name("client_secret"));
        assert!(!is_sensitive_name("bsb"));
        assert!(!is_sensitive_name("account_name"));
        for n in [
            "accountNumber",
            "account_no",
            "acct-no",
            "AccountNum",
            "iban",
            "walletNumber",
            "mobile_number",
            "payid",
            "pin",
        ] {
            assert!(is_sensitive_name(n), "{n}");
        }
        for n in [
            "company",
            "shipping",
            "phone",
            "email",
            "bank_code",
            "amount",
        ] {
            assert!(!is_sensitive_name(n), "{n}");
        }
        assert_eq!(for_display("account_number", "12345678"), "*****678");
        assert_eq!(for_display("email", "a@b.co"), "a@b.co");
    }
}
