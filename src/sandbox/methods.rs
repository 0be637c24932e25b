//! The emulator's method catalogue. `au_bank_aud` parameters (`bsb`, `account_number`,
//! `account_name`) are our documented choice; `ph_bank_maya_php` follows the reference.

use serde_json::{Map, Value, json};

pub struct Method {
    pub name: &'static str,
    pub currency: &'static str,
    pub symbol: &'static str,
    pub description: &'static str,
    /// Parameter name and descriptor (`"string:Mandatory Bank Account Number"`).
    pub params: &'static [(&'static str, &'static str)],
    pub require_contact: bool,
    pub require_kyc: bool,
    pub min_amount: u64,
    pub max_amount: u64,
    pub refundable: bool,
    pub cancellable: bool,
}

impl Method {
    /// The parameters marked Mandatory.
    pub fn mandatory(&self) -> impl Iterator<Item = &'static str> {
        self.params
            .iter()
            .filter(|(_, d)| d.contains(":Mandatory"))
            .map(|(n, _)| *n)
    }

    pub fn record(&self, kind: &str) -> Value {
        let params: Map<String, Value> = self
            .params
            .iter()
            .map(|(n, d)| (n.to_string(), json!(d)))
            .collect();
        let mut r = json!({
            "currency": self.currency, "symbol": self.symbol, "logo": "",
            "description": self.description,
            "payment_type": if kind == "payout" { "pay_out" } else { "pay_in" },
            "is_refundable": self.refundable, "is_cancellable": self.cancellable,
            "require_contact": self.require_contact, "require_kyc": self.require_kyc,
            "min_amount": self.min_amount, "max_amount": self.max_amount,
        });
        r[format!("{kind}_method_name")] = json!(self.name);
        r[format!("{kind}_method_params")] = Value::Object(params);
        if kind == "payout" {
            r["banks"] = json!([{"code": "600", "name": "GCASH", "short_name": null}]);
        }
        r
    }
}

const fn m(
    name: &'static str,
    currency: &'static str,
    symbol: &'static str,
    description: &'static str,
    params: &'static [(&'static str, &'static str)],
) -> Method {
    Method {
        name,
        currency,
        symbol,
        description,
        params,
        require_contact: false,
        require_kyc: false,
        min_amount: 1,
        max_amount: 1_000_000,
        refundable: false,
        cancellable: false,
    }
}

pub const PAYOUT: &[Method] = &[
    Method {
        require_contact: true,
        max_amount: 100_000,
        ..m(
            "au_bank_aud",
            "AUD",
            "$",
            "Australian bank transfer (BSB and account)",
            &[
                ("bsb", "string:Mandatory BSB (6 digits)"),
                ("account_number", "string:Mandatory Bank Account Number"),
                ("account_name", "string:Mandatory Account Holder Name"),
            ],
        )
    },
    Method {
        min_amount: 200,
        max_amount: 50_000,
        ..m(
            "ph_bank_maya_php",
            "PHP",
            "₱",
            "MAYA",
            &[
                ("account_number", "string:Mandatory Bank Account Number"),
                ("account_name", "string:Mandatory Account Holder Name"),
                ("bank_code", "string:Mandatory Bank Code"),
            ],
        )
    },
    Method {
        require_contact: true,
        require_kyc: true,
        min_amount: 100,
        max_amount: 100_000,
        ..m(
            "ph_ewallet_gcash_php",
            "PHP",
            "₱",
            "GCASH",
            &[
                ("account_number", "string:Mandatory Wallet Number"),
                ("account_name", "string:Mandatory Account Holder Name"),
            ],
        )
    },
    Method {
        min_amount: 10_000,
        max_amount: 500_000_000,
        ..m(
            "id_bank_idr",
            "IDR",
            "Rp",
            "Indonesian bank transfer",
            &[
                ("bank_code", "string:Mandatory Bank Code"),
                ("account_number", "string:Mandatory Bank Account Number"),
                ("account_name", "string:Mandatory Account Holder Name"),
            ],
        )
    },
    Method {
        min_amount: 100,
        max_amount: 2_000_000,
        ..m(
            "th_bank_thb",
            "THB",
            "฿",
            "Thai bank transfer",
            &[
                ("bank_code", "string:Mandatory Bank Code"),
                ("account_number", "string:Mandatory Bank Account Number"),
                ("account_name", "string:Mandatory Account Holder Name"),
            ],
        )
    },
];

pub const PAYIN: &[Method] = &[
    Method {
        require_contact: true,
        min_amount: 20,
        max_amount: 10_000,
        refundable: true,
        cancellable: true,
        ..m(
            "au_payid_npp_aud",
            "AUD",
            "$",
            "New Payments Platform (NPP)",
            // As the reference's record of it has it.
            &[("callback_url", "string:Mandatory callback URL")],
        )
    },
    Method {
        min_amount: 200,
        max_amount: 50_000,
        refundable: true,
        cancellable: true,
        ..m(
            "ph_bank_maya_php",
            "PHP",
            "₱",
            "MAYA",
            &[
                (
                    "user_id",
                    "string:Optional user ID from the merchant system",
                ),
                (
                    "product_name",
                    "string:Optional product names from the merchant system",
                ),
            ],
        )
    },
    Method {
        min_amount: 100,
        max_amount: 100_000,
        cancellable: true,
        ..m("ph_ewallet_gcash_php", "PHP", "₱", "GCASH", &[])
    },
    // Neither refundable nor cancellable: what a job must not assume of every method.
    Method {
        min_amount: 100,
        max_amount: 1_000_000,
        ..m("jp_bank_jpy", "JPY", "¥", "Japanese bank transfer", &[])
    },
];

pub fn payout(name: &str) -> Option<&'static Method> {
    PAYOUT.iter().find(|m| m.name == name)
}

pub fn payin(name: &str) -> Option<&'static Method> {
    PAYIN.iter().find(|m| m.name == name)
}
