//! Pure value validators for the fields payrun sends: emails, names, dates, countries,
//! currencies, amounts, phone numbers and KYC image files. Each returns a plain-English
//! reason on failure; callers add the place (file, line, column) and the offending value.

pub mod image;
pub mod iso;

use chrono::NaiveDate;
use rust_decimal::Decimal;
use std::str::FromStr;

pub use image::{ImageKind, check_image, check_image_bytes, confined};

/// Bytes allowed in an email's local part (RFC 5321 atext and '.').
const LOCAL_PART: [bool; 256] = alphanumeric_and(b"!#$%&'*+/=?^_`{|}~.-");

/// The bytes that are ASCII letters or digits, and `extra`: a table is one load per byte
/// where the test is several comparisons.
const fn alphanumeric_and(extra: &[u8]) -> [bool; 256] {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        t[c] = (c as u8).is_ascii_alphanumeric();
        c += 1;
    }
    let mut i = 0;
    while i < extra.len() {
        t[extra[i] as usize] = true;
        i += 1;
    }
    t
}

/// Bytes allowed in a host name (the labels and the dots between them).
const HOST_NAME: [bool; 256] = alphanumeric_and(b"-.");

/// Bytes allowed in a payee name.
const PAYEE_NAME: [bool; 256] = alphanumeric_and(b" ");

/// Checks an email address with the pragmatic subset of RFC 5321 that payment APIs accept.
/// A few passes over the bytes without branches: it runs for every row of every file.
pub fn email(value: &str) -> Result<(), String> {
    let b = value.as_bytes();
    if b.len() > 254 {
        return Err("email is longer than 254 characters".into());
    }
    let Some(at) = memchr::memchr(b'@', b) else {
        return Err("email has no '@'".into());
    };
    let (local, domain) = (&b[..at], &b[at + 1..]);
    if local.is_empty() || local.len() > 64 {
        return Err("email's local part must be 1 to 64 characters".into());
    }
    // Folds, not `all`: without an early exit per byte the loops run far faster, and a
    // valid address (the usual case) is read to the end either way.
    let local_ok = local
        .iter()
        .fold(true, |ok, &c| ok & LOCAL_PART[usize::from(c)])
        && local[0] != b'.'
        && local[local.len() - 1] != b'.'
        && !local.windows(2).any(|w| w == b"..");
    if !local_ok {
        return Err("email's local part has characters that are not allowed".into());
    }
    // Labels: 1-63 of [A-Za-z0-9-], not starting or ending with '-'; at least two.
    let chars_ok = domain
        .iter()
        .fold(true, |ok, &c| ok & HOST_NAME[usize::from(c)]);
    let mut labels = 0;
    for label in domain.split(|&c| c == b'.') {
        let ok = chars_ok
            && !label.is_empty()
            && label.len() <= 63
            && label[0] != b'-'
            && label[label.len() - 1] != b'-';
        if !ok {
            return Err("email's domain is not a valid host name".into());
        }
        labels += 1;
    }
    if labels < 2 {
        return Err("email's domain has no dot".into());
    }
    let tld = domain.rsplit(|&c| c == b'.').next().unwrap_or_default();
    if tld.len() < 2 || !tld.iter().all(u8::is_ascii_alphabetic) {
        return Err("email's domain has no valid top-level domain".into());
    }
    Ok(())
}

/// Checks a person's name as people write them: letters of any script with their marks,
/// digits, inner spaces, apostrophes (`'` and `’`), hyphens and full stops — `O'Brien`,
/// `Jean-Luc`, `Zoë`, `Nguyễn`, `D’Arcy`, `St. John`. Not empty, no space at either end, and
/// nothing that could be read as something else: control characters, template characters
/// (`{`, `}`, `%`, `$`), or a first character that starts a spreadsheet formula (`=`, `+`,
/// `-`, `@`).
pub fn payee_name(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("name is empty".into());
    }
    if value.starts_with(char::is_whitespace) || value.ends_with(char::is_whitespace) {
        return Err("name has a leading or trailing space".into());
    }
    // Plain ASCII letters, digits and spaces, as most names are, take one table lookup each.
    if value.bytes().all(|c| PAYEE_NAME[usize::from(c)]) {
        return Ok(());
    }
    if let Some(c) = value
        .chars()
        .next()
        .filter(|c| matches!(c, '=' | '+' | '-' | '@'))
    {
        return Err(format!("name must not start with '{c}'"));
    }
    match value.chars().find(|&c| !name_char(c)) {
        Some(c) if c.is_control() => Err(format!(
            "name must not hold a control character (U+{:04X})",
            c as u32
        )),
        Some(c) => Err(format!(
            "name may hold letters, digits, spaces, apostrophes, hyphens and full stops, not '{c}'"
        )),
        None => Ok(()),
    }
}

/// A character a name may hold (see [`payee_name`]).
fn name_char(c: char) -> bool {
    c.is_alphabetic()
        || c.is_ascii_digit()
        || matches!(c, ' ' | '\'' | '\u{2019}' | '-' | '.')
        || combining_mark(c)
}

/// Combining marks that are not letters themselves (a decomposed `é` is `e` + U+0301):
/// the combining diacritical blocks. Marks of other scripts' vowels are letters already.
fn combining_mark(c: char) -> bool {
    matches!(c, '\u{0300}'..='\u{036F}' | '\u{1AB0}'..='\u{1AFF}' | '\u{1DC0}'..='\u{1DFF}' | '\u{20D0}'..='\u{20FF}' | '\u{FE20}'..='\u{FE2F}')
}

/// Parses a `yyyy-mm-dd` calendar date that really exists (no 2026-02-30).
pub fn date(value: &str) -> Result<NaiveDate, String> {
    let b = value.as_bytes();
    let shape_ok = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if !shape_ok {
        return Err("date must be written yyyy-mm-dd".into());
    }
    NaiveDate::from_str(value).map_err(|_| "date does not exist in the calendar".into())
}

/// Parses a date of birth: a real date in the past, not before 1900.
pub fn date_of_birth(value: &str, today: NaiveDate) -> Result<NaiveDate, String> {
    let d = date(value)?;
    if d >= today {
        return Err("date of birth must be in the past".into());
    }
    if d < NaiveDate::from_ymd_opt(1900, 1, 1).expect("valid constant date") {
        return Err("date of birth is before 1900".into());
    }
    Ok(d)
}

/// Parses a UTC timestamp written `YYYY-MM-DDTHH:mm:ss`, as the payout API's `scheduled_at`.
pub fn timestamp(value: &str) -> Result<chrono::NaiveDateTime, String> {
    chrono::NaiveDateTime::parse_from_str(value, "%Y-%m-%dT%H:%M:%S")
        .ok()
        .filter(|_| value.len() == 19)
        .ok_or_else(|| "timestamp must be written YYYY-MM-DDTHH:mm:ss (UTC)".into())
}

/// Checks an ISO 3166-1 alpha-2 country code (upper case, as the API expects).
pub fn country(value: &str) -> Result<(), String> {
    if iso::is_country(value) {
        Ok(())
    } else if iso::is_country(&value.to_ascii_uppercase()) {
        Err("country code must be upper case (ISO 3166-1 alpha-2)".into())
    } else {
        Err("not an ISO 3166-1 alpha-2 country code".into())
    }
}

/// Checks an ISO 4217 currency code and returns its minor units.
pub fn currency(value: &str) -> Result<u32, String> {
    iso::currency_minor_units(value).ok_or_else(|| {
        if iso::currency_minor_units(&value.to_ascii_uppercase()).is_some() {
            "currency code must be upper case (ISO 4217)".to_string()
        } else {
            "not an ISO 4217 currency code".to_string()
        }
    })
}

/// Parses a positive money amount written as plain digits with an optional decimal point.
///
/// Thousands separators, currency symbols, signs, exponents and spaces are rejected rather
/// than guessed at: `1,000.00` might mean one thousand or one, depending on the locale.
/// With `minor_units`, more decimals than the currency has is an error too.
pub fn amount(value: &str, minor_units: Option<u32>) -> Result<Decimal, String> {
    let b = value.as_bytes();
    // The common case, `1234.50`, is recognised in one pass; anything else is explained.
    let mut dot = None;
    let plain = !b.is_empty()
        && b.iter().enumerate().all(|(i, &c)| match c {
            b'0'..=b'9' => true,
            b'.' if dot.is_none() => {
                dot = Some(i);
                true
            }
            _ => false,
        });
    if !plain {
        return Err(explain_bad_amount(value));
    }
    let decimals = match dot {
        Some(0) => return Err("amount must be a plain number such as 1234.50".into()),
        Some(i) if i + 1 == b.len() => {
            return Err("amount must be a plain number such as 1234.50".into());
        }
        Some(i) => (b.len() - i - 1) as u32,
        None => 0,
    };
    if let Some(max) = minor_units
        && decimals > max
    {
        return Err(match max {
            0 => "amount must be a whole number for this currency".into(),
            1 => "amount has more than 1 decimal place for this currency".into(),
            n => format!("amount has more than {n} decimal places for this currency"),
        });
    }
    // The shape is checked: accumulate the digits as an integer mantissa (a Decimal holds
    // 28). Leading zeros add nothing to it: `00000000000000000000000000001.00` is 1.
    let lead = b.iter().take_while(|c| **c == b'0').count();
    let b = &b[lead..];
    let digits = b.len() - usize::from(dot.is_some());
    if digits > 28 {
        let whole = dot.map_or(b.len(), |i| i - lead);
        return Err(if whole > 28 {
            "amount is too large".into()
        } else {
            "amount has more digits than an exact amount can hold (28)".into()
        });
    }
    let figures = b.iter().filter(|c| **c != b'.').map(|c| c - b'0');
    let d = if digits <= 18 {
        // The usual amount fits an i64, which builds a Decimal far more cheaply.
        Decimal::new(figures.fold(0i64, |m, f| m * 10 + i64::from(f)), decimals)
    } else {
        let mantissa = figures.fold(0i128, |m, f| m * 10 + i128::from(f));
        Decimal::try_from_i128_with_scale(mantissa, decimals)
            .map_err(|_| "amount is too large".to_string())?
    };
    if d.is_zero() {
        return Err("amount must be greater than zero".into());
    }
    Ok(d)
}

/// Says what is wrong with an amount that is not plain digits and one optional point.
fn explain_bad_amount(value: &str) -> String {
    if value.is_empty() {
        "amount is empty".into()
    } else if value.trim() != value {
        "amount has leading or trailing spaces".into()
    } else if value.starts_with('-') {
        "amount must be positive".into()
    } else if value.starts_with('+') {
        "amount must be plain digits, without a sign".into()
    } else if value.contains([',', '_', ' ', '\'']) {
        "amount must not contain thousands separators".into()
    } else if value.chars().any(|c| {
        matches!(c, '$' | '€' | '£' | '¥' | '₱' | '₹' | '₩' | '₫' | '¢') || c.is_ascii_alphabetic()
    }) {
        "amount must be a plain number, without a currency symbol or code".into()
    } else {
        "amount must be a plain number such as 1234.50".into()
    }
}

/// Checks a phone number: an optional leading `+`, then 6 to 20 digits with optional single
/// spaces or hyphens between them (`+61-412345678`, `+61 412 345 678`).
pub fn phone(value: &str) -> Result<(), String> {
    let body = value.strip_prefix('+').unwrap_or(value);
    let digits = body.bytes().filter(u8::is_ascii_digit).count();
    let shape_ok = body
        .bytes()
        .all(|b| b.is_ascii_digit() || b == b' ' || b == b'-')
        && body.starts_with(|c: char| c.is_ascii_digit())
        && body.ends_with(|c: char| c.is_ascii_digit())
        && !body.contains("  ")
        && !body.contains("--");
    if !shape_ok || !(6..=20).contains(&digits) {
        return Err("phone must be digits with an optional leading '+' (e.g. +61412345678)".into());
    }
    Ok(())
}

/// Checks that `value` is one of `allowed`, naming them when it is not.
pub fn one_of(value: &str, allowed: &[&str]) -> Result<(), String> {
    if allowed.contains(&value) {
        Ok(())
    } else {
        Err(format!("must be one of {}", allowed.join(", ")))
    }
}

/// Checks a text's length in characters.
pub fn length(value: &str, min: usize, max: usize) -> Result<(), String> {
    let n = value.chars().count();
    if n < min || n > max {
        Err(format!("must be {min} to {max} characters long, not {n}"))
    } else {
        Ok(())
    }
}

/// Whether `value` is an absolute `https://` URL with a host.
pub fn https_url(value: &str) -> bool {
    reqwest::Url::parse(value).is_ok_and(|u| u.scheme() == "https" && u.has_host())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        for good in [
            "a@b.co",
            "jane.doe+pay@example.com.au",
            "X_Y@sub-d.example.org",
        ] {
            assert_eq!(email(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "plain",
            "@example.com",
            "a@",
            "a@b",
            "a b@example.com",
            "a@exa mple.com",
            "a..b@example.com",
            ".a@example.com",
            "a.@example.com",
            "jané@example.com",
            "a@-example.com",
            "a@example-.com",
            "a@example..com",
            "a@exa_mple.com",
            "a@example.c",
            "a@example.123",
            "a@@example.com",
        ] {
            assert!(email(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn payee_names() {
        for good in [
            "John",
            "Mary Ann",
            "O Brien 2",
            "X",
            "O'Brien",
            "Jean-Luc",
            "Zoë",
            "Siobhán",
            "Nguyễn",
            "Nguye\u{0302}\u{0303}n",
            "D’Arcy",
            "St. John",
            "José Ng",
            "Ólafur",
            "Анна",
            "李",
        ] {
            assert_eq!(payee_name(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            " John",
            "John ",
            "   ",
            "=SUM(A1)",
            "-Ann",
            "+Ann",
            "@Ann",
            "{{ row.x }}",
            "Ann%",
            "Ann$",
            "Ann<b>",
            "Ann\u{0007}",
            "Ann\tLee",
        ] {
            assert!(payee_name(bad).is_err(), "{bad}");
        }
        assert_eq!(
            payee_name("Bo{b"),
            Err(
                "name may hold letters, digits, spaces, apostrophes, hyphens and full stops, not '{'"
                    .into()
            )
        );
    }

    #[test]
    fn dates() {
        assert!(date("2024-02-29").is_ok());
        for bad in [
            "2023-02-29",
            "2024-13-01",
            "2024-1-05",
            "24-01-05",
            "2024/01/05",
            "",
            "2024-01-05T00:00:00",
        ] {
            assert!(date(bad).is_err(), "{bad}");
        }
        let today = NaiveDate::from_ymd_opt(2026, 11, 21).unwrap();
        assert!(date_of_birth("1990-05-17", today).is_ok());
        assert!(date_of_birth("2026-11-21", today).is_err());
        assert!(date_of_birth("2030-01-01", today).is_err());
        assert!(date_of_birth("1899-12-31", today).is_err());
    }

    #[test]
    fn timestamps() {
        assert!(timestamp("2026-11-28T09:00:00").is_ok());
        for bad in [
            "2026-11-28",
            "2026-11-28 09:00:00",
            "2026-11-28T09:00:00Z",
            "2026-11-28T25:00:00",
        ] {
            assert!(timestamp(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn countries_and_currencies() {
        assert!(country("AU").is_ok());
        assert!(country("au").unwrap_err().contains("upper case"));
        assert!(country("ZZ").unwrap_err().contains("ISO 3166-1"));
        assert_eq!(currency("PHP"), Ok(2));
        assert!(currency("aud").unwrap_err().contains("upper case"));
        assert!(currency("ABC").is_err());
    }

    #[test]
    fn amounts() {
        let d = |s: &str| Decimal::from_str(s).unwrap();
        assert_eq!(amount("1234.50", Some(2)), Ok(d("1234.50")));
        assert_eq!(amount("100", Some(2)).unwrap().to_string(), "100");
        assert_eq!(amount("0.01", Some(2)), Ok(d("0.01")));
        assert_eq!(amount("5000", Some(0)), Ok(d("5000")));
        assert_eq!(amount("1.5", Some(2)).unwrap().to_string(), "1.5");
        let err = |s: &str, mu| amount(s, mu).unwrap_err();
        assert!(err("-5.00", Some(2)).contains("positive"));
        assert!(err("0", Some(2)).contains("greater than zero"));
        assert!(err("0.00", Some(2)).contains("greater than zero"));
        assert!(err("1,000.00", Some(2)).contains("thousands"));
        assert!(err("1 000", Some(2)).contains("thousands"));
        assert!(err("$100", Some(2)).contains("currency symbol"));
        assert!(
            err("100 AUD", Some(2)).contains("thousands")
                || err("100AUD", Some(2)).contains("currency")
        );
        assert!(err("100AUD", Some(2)).contains("currency"));
        assert!(err("10.005", Some(2)).contains("more than 2 decimal"));
        assert!(err("10.5", Some(0)).contains("whole number"));
        assert!(err("1e3", Some(2)).contains("currency") || err("1e3", Some(2)).contains("plain"));
        assert!(err("+5", Some(2)).contains("sign"));
        assert!(err("1.", Some(2)).contains("plain number"));
        assert!(err(".5", Some(2)).contains("plain number"));
        assert!(err("1.2.3", Some(2)).contains("plain number"));
        assert!(err(" 5", Some(2)).contains("spaces"));
        assert!(err("", Some(2)).contains("empty"));
        assert!(err("99999999999999999999999999999999", None).contains("too large"));
        // Leading zeros are not digits of the amount.
        assert_eq!(
            amount("0000000000000000000000000000000001234.50", Some(2)),
            Ok(d("1234.50"))
        );
        assert_eq!(amount("000.5", Some(2)), Ok(d("0.5")));
        assert!(err("00000000000000000000000000000000", Some(2)).contains("greater than zero"));
        assert!(err("0.00000000000000000000000000001", None).contains("28"));
        // Either side of the 18 digits an i64 mantissa takes, and the 28 a Decimal holds.
        for big in [
            "999999999999999999",
            "1234567890.12345678",
            "0.000000000000000001",
            "1234567890123456789",
            "123456789012345678.9",
            "9999999999999999999999999999",
            "0.000000000000000000000000001",
        ] {
            assert_eq!(amount(big, None), Ok(d(big)), "{big}");
        }
    }

    #[test]
    fn phones() {
        for good in [
            "+61412345678",
            "+61-412345678",
            "+61 412 345 678",
            "0412345678",
        ] {
            assert_eq!(phone(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "+",
            "12345",
            "+61 (4) 1234",
            "phone",
            "+61--412345678",
            "+61412345678-",
        ] {
            assert!(phone(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn enums_and_lengths() {
        assert!(one_of("male", &["male", "female"]).is_ok());
        assert_eq!(
            one_of("Male", &["male", "female"]).unwrap_err(),
            "must be one of male, female"
        );
        assert!(length("Payroll", 5, 90).is_ok());
        assert!(length("Pay", 5, 90).unwrap_err().contains("not 3"));
        assert!(length(&"x".repeat(91), 5, 90).is_err());
    }
}
