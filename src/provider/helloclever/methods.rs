//! The payout methods payrun knows, with the parameters each one needs.
//!
//! The reference documents `ph_bank_maya_php` in full; the `au_bank_aud` parameters
//! (`bsb`, `account_number`, `account_name`) are our documented choice, as the vendor page
//! for them could not be retrieved. Methods not listed here are accepted when their name
//! has the documented shape, and the provider has the last word on their parameters.

/// A payout method's requirements.
#[derive(Debug)]
pub struct PayoutMethod {
    pub name: &'static str,
    pub currency: &'static str,
    pub params: &'static [Param],
    /// Amount limits in whole currency units, where documented.
    pub min_amount: Option<u32>,
    pub max_amount: Option<u32>,
}

/// One parameter of a payout method, with its check.
#[derive(Debug)]
pub struct Param {
    pub name: &'static str,
    pub check: fn(&str) -> Result<(), String>,
}

fn non_empty(v: &str) -> Result<(), String> {
    if v.trim().is_empty() {
        Err("is empty".into())
    } else {
        Ok(())
    }
}

fn bsb(v: &str) -> Result<(), String> {
    let b = v.as_bytes();
    let digits = |s: &[u8]| s.iter().all(u8::is_ascii_digit);
    let ok = match b.len() {
        6 => digits(b),
        7 => b[3] == b'-' && digits(&b[..3]) && digits(&b[4..]),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err("BSB must be 6 digits (e.g. 062000 or 062-000)".into())
    }
}

fn au_account_number(v: &str) -> Result<(), String> {
    if (5..=9).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err("account number must be 5 to 9 digits".into())
    }
}

fn digits(v: &str) -> Result<(), String> {
    if !v.is_empty() && v.len() <= 34 && v.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err("account number must be digits only".into())
    }
}

const fn p(name: &'static str, check: fn(&str) -> Result<(), String>) -> Param {
    Param { name, check }
}

pub const PAYOUT_METHODS: &[PayoutMethod] = &[
    PayoutMethod {
        name: "au_bank_aud",
        currency: "AUD",
        params: &[
            p("bsb", bsb),
            p("account_number", au_account_number),
            p("account_name", non_empty),
        ],
        min_amount: None,
        max_amount: None,
    },
    PayoutMethod {
        name: "ph_bank_maya_php",
        currency: "PHP",
        params: &[
            p("account_number", digits),
            p("account_name", non_empty),
            p("bank_code", non_empty),
        ],
        min_amount: Some(200),
        max_amount: Some(50_000),
    },
    PayoutMethod {
        name: "ph_ewallet_gcash_php",
        currency: "PHP",
        params: &[p("account_number", digits), p("account_name", non_empty)],
        min_amount: None,
        max_amount: None,
    },
    PayoutMethod {
        name: "id_bank_idr",
        currency: "IDR",
        params: &[
            p("bank_code", non_empty),
            p("account_number", digits),
            p("account_name", non_empty),
        ],
        min_amount: None,
        max_amount: None,
    },
];

/// A payin method payrun knows from the reference: its currency, amount limits (whole
/// units) and what may be done with its payins. Methods not listed are accepted when their
/// name has the documented shape; the provider has the last word on them.
#[derive(Debug)]
pub struct PayinMethod {
    pub name: &'static str,
    pub currency: &'static str,
    pub min_amount: Option<u32>,
    pub max_amount: Option<u32>,
}

pub const PAYIN_METHODS: &[PayinMethod] = &[
    PayinMethod {
        name: "au_payid_npp_aud",
        currency: "AUD",
        min_amount: Some(20),
        max_amount: Some(10_000),
    },
    PayinMethod {
        name: "ph_bank_maya_php",
        currency: "PHP",
        min_amount: None,
        max_amount: None,
    },
    PayinMethod {
        name: "ph_ewallet_gcash_php",
        currency: "PHP",
        min_amount: None,
        max_amount: None,
    },
];

/// Looks up a known payin method.
pub fn payin_method(name: &str) -> Option<&'static PayinMethod> {
    PAYIN_METHODS.iter().find(|m| m.name == name)
}

/// Checks a payin method name's shape and returns its currency.
pub fn payin_currency(name: &str) -> Result<String, String> {
    match payin_method(name) {
        Some(m) => Ok(m.currency.to_string()),
        None => shape_currency(name).ok_or_else(|| {
            "payin method name must look like au_payid_npp_aud (<country>_<kind>_<currency>)".into()
        }),
    }
}

/// Looks up a known payout method.
pub fn payout_method(name: &str) -> Option<&'static PayoutMethod> {
    PAYOUT_METHODS.iter().find(|m| m.name == name)
}

/// Checks a method name's shape (`<cc>_<kind>[_<brand>]_<ccy>`) and returns its currency.
pub fn method_currency(name: &str) -> Result<String, String> {
    if let Some(m) = payout_method(name) {
        return Ok(m.currency.to_string());
    }
    shape_currency(name).ok_or_else(|| {
        "payout method name must look like au_bank_aud (<country>_<kind>_<currency>)".into()
    })
}

/// The currency of a method name of the documented shape (`<cc>_<kind>[_<brand>]_<ccy>`).
fn shape_currency(name: &str) -> Option<String> {
    let parts: Vec<&str> = name.split('_').collect();
    let ok = parts.len() >= 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
        && parts[0].len() == 2;
    let ccy = parts.last().copied().unwrap_or_default();
    (ok && (3..=4).contains(&ccy.len())).then(|| ccy.to_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params() {
        assert!(bsb("062000").is_ok() && bsb("062-000").is_ok());
        assert!(bsb("62000").is_err() && bsb("0620001").is_err() && bsb("06-2000").is_err());
        assert!(au_account_number("12345678").is_ok());
        assert!(au_account_number("1234").is_err() && au_account_number("12 345 678").is_err());
    }

    #[test]
    fn method_names() {
        assert_eq!(method_currency("au_bank_aud").unwrap(), "AUD");
        assert_eq!(method_currency("my_ewallet_boost_myr").unwrap(), "MYR");
        assert!(method_currency("bank").is_err());
        assert!(method_currency("AU_BANK_AUD").is_err());
        assert_eq!(payin_currency("au_payid_npp_aud").unwrap(), "AUD");
        assert_eq!(payin_currency("th_qrpay_thb").unwrap(), "THB");
        assert!(payin_currency("payid").is_err());
    }
}
