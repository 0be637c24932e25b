//! FinHub's legacy customer API (`customer/2.0.0`): bearer token and `tenantId` on every
//! call, customers, their documents and status, export by status.

pub mod client;

/// `customerStatus` literals, spelled as the reference spells them (`under_verificaiton`,
/// `bancrupted` included).
pub const CUSTOMER_STATUSES: [&str; 8] = [
    "new",
    "verified",
    "under_verificaiton",
    "blacklisted",
    "under_investigation",
    "dispute",
    "on_hold",
    "bancrupted",
];
pub const CUSTOMER_TYPES: [&str; 2] = ["Person", "Organization"];
pub const CATEGORIES: [&str; 3] = ["category1", "category2", "category3"];
pub const DOCUMENT_PURPOSES: [&str; 3] = ["KYB", "KYC", "PEP&SANCTION"];
pub const DOCUMENT_TYPES: [&str; 9] = [
    "ID front side",
    "ID back side",
    "Passport",
    "accountAuthority",
    "shareholderStructure",
    "operationAddress",
    "registeredAddress",
    "selfie",
    "livelinessDetection",
];
pub const DOCUMENT_STATUSES: [&str; 5] = [
    "underverification",
    "verified",
    "declined",
    "incomplete",
    "expired",
];

/// Where `kycConfirmation` is posted, relative to the customer API base: the reference
/// lists "Post update kycConfirmation" without a path; this is its best reading (titles
/// are built from path words, path parameters dropped). `provider.kyc_confirmation_path`
/// replaces it.
pub const KYC_CONFIRMATION_PATH: &str = "/update/kycConfirmation/{customerId}";

/// Path segments that hold arrays in the Customer object: a dotted field
/// `person.telephoneNumbers.number` builds `person.telephoneNumbers[0].number`.
const ARRAY_SEGMENTS: [&str; 3] = ["telephoneNumbers", "addresses", "streetNumber"];

/// Builds the nested request body from a step's flat, dotted fields.
pub fn nest(flat: &serde_json::Map<String, serde_json::Value>) -> serde_json::Value {
    use serde_json::{Map, Value};
    let mut root = Value::Object(Map::new());
    for (key, value) in flat {
        let parts: Vec<&str> = key.split('.').collect();
        let mut at = &mut root;
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            let is_array = ARRAY_SEGMENTS.contains(part);
            let Value::Object(map) = at else { break };
            if last {
                let v = if is_array {
                    Value::Array(vec![value.clone()])
                } else {
                    value.clone()
                };
                map.insert((*part).to_string(), v);
                break;
            }
            let slot = map.entry((*part).to_string()).or_insert_with(|| {
                if is_array {
                    Value::Array(vec![Value::Object(Map::new())])
                } else {
                    Value::Object(Map::new())
                }
            });
            at = match slot {
                Value::Array(items) => &mut items[0],
                other => other,
            };
        }
    }
    root
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dotted_fields_nest_with_arrays() {
        let flat = json!({"customerType": "Person", "person.email": "a@b.co",
            "person.firstName.name": "Ann", "person.telephoneNumbers.number": "+61412345678",
            "person.telephoneNumbers.phoneType": "fixed", "person.addresses.address.city": "Sydney"});
        let v = nest(flat.as_object().unwrap());
        assert_eq!(
            v,
            json!({"customerType": "Person", "person": {"email": "a@b.co", "firstName": {"name": "Ann"},
                "telephoneNumbers": [{"number": "+61412345678", "phoneType": "fixed"}],
                "addresses": [{"address": {"city": "Sydney"}}]}})
        );
    }
}
