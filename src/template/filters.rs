//! Filters that read a spreadsheet's values on purpose: `date_from("dd/mm/yyyy")` turns a
//! date written in a stated form into `yyyy-mm-dd`, and `amount_from("1,234.56")` an amount
//! with a currency symbol and thousands separators into a plain decimal. A value that does
//! not match fails its row (with the row's line and column); a pattern that cannot be read
//! fails the job when it loads ([`PATTERN`] marks those errors for the load-time probe).

use minijinja::{Error, ErrorKind};

/// The start of every error about a filter's own argument, not the row's value.
pub const PATTERN: &str = "the pattern of ";

/// The filters' names, for "did you mean".
pub const NAMES: &[&str] = &["date_from", "amount_from"];

fn pattern_error(filter: &str, message: String) -> Error {
    Error::new(
        ErrorKind::InvalidOperation,
        format!("{PATTERN}{filter}: {message}"),
    )
}

fn value_error(message: String) -> Error {
    Error::new(ErrorKind::InvalidOperation, message)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Year,
    Month,
    MonthName { full: bool },
    Day,
    Literal(char),
}

/// `dd/mm/yyyy`, `d.m.yyyy`, `mmm d, yyyy`, `yyyymmdd`…: `yyyy` a four-digit year, `mm` or
/// `m` a month number, `mmm` (`Mar`) or `mmmm` (`March`) its English name, `dd` or `d` a
/// day; anything else that is not a letter is written as it is.
fn date_pattern(pattern: &str) -> Result<Vec<Part>, Error> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut parts = Vec::new();
    let mut i = 0;
    let (mut year, mut month, mut day) = (0, 0, 0);
    while i < chars.len() {
        let c = chars[i];
        let run = chars[i..].iter().take_while(|&&x| x == c).count();
        let part = match (c, run) {
            ('y', 4) => {
                year += 1;
                Part::Year
            }
            ('y', _) => {
                return Err(pattern_error(
                    "date_from",
                    format!(
                        "'{pattern}' has a {run}-letter year; write yyyy (a two-digit year \
                         could be either century)"
                    ),
                ));
            }
            ('m', 1 | 2) => {
                month += 1;
                Part::Month
            }
            ('m', 3 | 4) => {
                month += 1;
                Part::MonthName { full: run == 4 }
            }
            ('d', 1 | 2) => {
                day += 1;
                Part::Day
            }
            (c, _) if c.is_alphabetic() || c.is_ascii_digit() => {
                return Err(pattern_error(
                    "date_from",
                    format!(
                        "'{pattern}' has '{}', which is not a part of a date (yyyy, mm, m, \
                         mmm, mmmm, dd, d, and separators)",
                        chars[i..i + run].iter().collect::<String>()
                    ),
                ));
            }
            (c, _) => {
                i += 1;
                parts.push(Part::Literal(c));
                continue;
            }
        };
        parts.push(part);
        i += run;
    }
    if (year, month, day) != (1, 1, 1) {
        return Err(pattern_error(
            "date_from",
            format!("'{pattern}' must name the year (yyyy), month and day once each"),
        ));
    }
    Ok(parts)
}

const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];

/// `{{ row.dob | date_from("dd/mm/yyyy") }}` → `1985-03-13`.
pub fn date_from(value: &str, pattern: &str) -> Result<String, Error> {
    let parts = date_pattern(pattern)?;
    let mismatch = || value_error(format!("'{value}' is not a date written as {pattern}"));
    let text = value.trim();
    let mut rest = text;
    let (mut y, mut m, mut d) = (0i32, 0u32, 0u32);
    // A number of `min..=max` digits at the start of `rest`.
    let number = |rest: &mut &str, min: usize, max: usize| -> Option<u32> {
        let n = rest
            .bytes()
            .take(max)
            .take_while(u8::is_ascii_digit)
            .count();
        if n < min {
            return None;
        }
        let v = rest[..n].parse().ok()?;
        *rest = &rest[n..];
        Some(v)
    };
    for part in parts {
        match part {
            Part::Year => y = number(&mut rest, 4, 4).ok_or_else(mismatch)? as i32,
            Part::Month => m = number(&mut rest, 1, 2).ok_or_else(mismatch)?,
            Part::Day => d = number(&mut rest, 1, 2).ok_or_else(mismatch)?,
            Part::MonthName { full } => {
                let word: String = rest.chars().take_while(|c| c.is_alphabetic()).collect();
                let lower = word.to_lowercase();
                let found = MONTHS.iter().position(|name| {
                    if full {
                        *name == lower
                    } else {
                        lower.chars().count() == 3 && name.starts_with(&lower)
                    }
                });
                m = found.ok_or_else(mismatch)? as u32 + 1;
                rest = &rest[word.len()..];
            }
            Part::Literal(c) => rest = rest.strip_prefix(c).ok_or_else(mismatch)?,
        }
    }
    if !rest.is_empty() {
        return Err(mismatch());
    }
    let date = chrono::NaiveDate::from_ymd_opt(y, m, d)
        .ok_or_else(|| value_error(format!("'{value}' is not a real date (read as {pattern})")))?;
    Ok(date.format("%Y-%m-%d").to_string())
}

/// How a spreadsheet writes amounts, from a sample of 1234.56: its thousands separator
/// (if any) and its decimal mark.
fn amount_style(sample: &str) -> Result<(Option<char>, char), Error> {
    let chars: Vec<char> = sample.chars().collect();
    let bad = || {
        pattern_error(
            "amount_from",
            format!(
                "'{sample}' is not 1234.56 written with a thousands separator and a decimal \
                 mark (like 1,234.56, 1.234,56, 1 234,56 or 1234.56)"
            ),
        )
    };
    let digits = |s: &[char], want: &str| s.iter().collect::<String>() == want;
    match chars.as_slice() {
        [one, sep, rest @ ..] if *one == '1' && rest.len() == 6 => {
            let (group, tail) = rest.split_at(3);
            let mark = tail[0];
            let ok = digits(group, "234")
                && digits(&tail[1..], "56")
                && matches!(sep, ',' | '.' | ' ' | '\u{a0}' | '\u{202f}' | '\'' | '’')
                && matches!(mark, '.' | ',')
                && *sep != mark;
            if ok {
                return Ok((Some(*sep), mark));
            }
            Err(bad())
        }
        [a, b, c, d, mark, e, f] if digits(&[*a, *b, *c, *d, *e, *f], "123456") => {
            if matches!(mark, '.' | ',') {
                Ok((None, *mark))
            } else {
                Err(bad())
            }
        }
        _ => Err(bad()),
    }
}

/// `{{ row.net_pay | amount_from("1,234.56") }}`: `$6,874.07`, `AUD 6,874.07`, `A$6874.07`
/// → `6874.07`. A currency symbol or code may stand before or after the number; thousands
/// separators, when used, must group by three. The decimals are kept as written (the
/// amount's own check, against the currency, follows).
pub fn amount_from(value: &str, sample: Option<&str>) -> Result<String, Error> {
    let sample = sample.unwrap_or("1,234.56");
    let (group, mark) = amount_style(sample)?;
    let mismatch = || {
        value_error(format!(
            "'{value}' is not an amount written like {sample} (a currency symbol or code \
             may stand before or after it)"
        ))
    };
    let currency = |c: char| c.is_alphabetic() || is_currency_symbol(c);
    let text = value.trim();
    let (sign, text) = match text.strip_prefix('-') {
        Some(rest) => ("-", rest.trim_start()),
        None => ("", text),
    };
    let text = text.trim_start_matches(currency).trim_start();
    let text = text.trim_end_matches(currency).trim_end();
    let (sign, text) = match (sign, text.strip_prefix('-')) {
        ("", Some(rest)) => ("-", rest),
        _ => (sign, text),
    };
    let (whole, decimals) = match text.split_once(mark) {
        Some((w, d)) => (w, Some(d)),
        None => (text, None),
    };
    let mut plain = String::with_capacity(text.len() + 1);
    plain.push_str(sign);
    let groups: Vec<&str> = match group {
        Some(g) if whole.contains(g) => whole.split(g).collect(),
        _ => vec![whole],
    };
    for (i, g) in groups.iter().enumerate() {
        let ok = !g.is_empty()
            && g.bytes().all(|b| b.is_ascii_digit())
            && (groups.len() == 1 || (i == 0 && g.len() <= 3) || g.len() == 3);
        if !ok {
            return Err(mismatch());
        }
        plain.push_str(g);
    }
    if let Some(d) = decimals {
        if d.is_empty() || !d.bytes().all(|b| b.is_ascii_digit()) {
            return Err(mismatch());
        }
        plain.push('.');
        plain.push_str(d);
    }
    Ok(plain)
}

/// Currency signs: `$`, `€`, `£`, `¥`, `₱`, `₹`, `₫`, … (Unicode's Sc category, which
/// the standard library does not expose: its blocks).
fn is_currency_symbol(c: char) -> bool {
    matches!(
        c,
        '$' | '¢' | '£' | '¤' | '¥' | '֏' | '؋' | '৲' | '৳' | '฿' | '៛' | '₠'
            ..='⃀' | '﷼' | '﹩' | '＄' | '￠' | '￡' | '￥' | '￦'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_in_a_stated_form() {
        for (value, pattern, want) in [
            ("13/03/1985", "dd/mm/yyyy", "1985-03-13"),
            ("3/3/1985", "d/m/yyyy", "1985-03-03"),
            ("3/03/1985", "dd/mm/yyyy", "1985-03-03"),
            ("03/13/1985", "mm/dd/yyyy", "1985-03-13"),
            ("13.03.1985", "dd.mm.yyyy", "1985-03-13"),
            ("19850313", "yyyymmdd", "1985-03-13"),
            ("13 Mar 1985", "d mmm yyyy", "1985-03-13"),
            ("March 13, 1985", "mmmm d, yyyy", "1985-03-13"),
            (" 29/02/2024 ", "dd/mm/yyyy", "2024-02-29"),
        ] {
            assert_eq!(
                date_from(value, pattern).unwrap(),
                want,
                "{value} as {pattern}"
            );
        }
        for (value, pattern, why) in [
            ("13/13/1985", "dd/mm/yyyy", "not a real date"),
            ("29/02/2023", "dd/mm/yyyy", "not a real date"),
            (
                "1985-03-13",
                "dd/mm/yyyy",
                "not a date written as dd/mm/yyyy",
            ),
            ("13/03/85", "dd/mm/yyyy", "not a date written as"),
            ("13/03/1985x", "dd/mm/yyyy", "not a date written as"),
            ("", "dd/mm/yyyy", "not a date written as"),
            ("13 Mrz 1985", "d mmm yyyy", "not a date written as"),
        ] {
            let e = date_from(value, pattern).unwrap_err();
            assert!(e.detail().unwrap().contains(why), "{value}: {e}");
            assert!(!e.detail().unwrap().starts_with(PATTERN));
        }
        for pattern in [
            "dd/mm/yy",
            "dd/mm",
            "dd/mm/yyyy/yyyy",
            "dd/qq/yyyy",
            "YYYY-MM-DD",
        ] {
            let e = date_from("13/03/1985", pattern).unwrap_err();
            assert!(e.detail().unwrap().starts_with(PATTERN), "{pattern}: {e}");
        }
    }

    #[test]
    fn amounts_from_spreadsheets() {
        for (value, sample, want) in [
            ("$6,874.07", None, "6874.07"),
            ("6874.07", None, "6874.07"),
            ("AUD 1,234,567.8", None, "1234567.8"),
            ("A$ 12.00", None, "12.00"),
            ("6,874.07 AUD", None, "6874.07"),
            ("-$5.00", None, "-5.00"),
            ("$-5.00", None, "-5.00"),
            ("€ 1.234,56", Some("1.234,56"), "1234.56"),
            ("1 234,56 €", Some("1 234,56"), "1234.56"),
            ("1234,56", Some("1234,56"), "1234.56"),
            ("₱200", None, "200"),
        ] {
            assert_eq!(amount_from(value, sample).unwrap(), want, "{value}");
        }
        for (value, sample) in [
            ("$6,87.07", None),
            ("$6874,07", None),
            ("1.234,56", None),
            ("12a.00", None),
            ("", None),
            ("$", None),
            ("1,234.", None),
            ("6.874.07", None),
            ("1,234.56", Some("1.234,56")),
        ] {
            let e = amount_from(value, sample).unwrap_err();
            assert!(
                e.detail()
                    .unwrap()
                    .contains("is not an amount written like"),
                "{value}: {e}"
            );
        }
        for sample in ["1,234,56", "1234", "12,34.56", "1x234.56"] {
            let e = amount_from("1", Some(sample)).unwrap_err();
            assert!(e.detail().unwrap().starts_with(PATTERN), "{sample}: {e}");
        }
    }
}
