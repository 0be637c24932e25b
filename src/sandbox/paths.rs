//! Every path the emulator serves, in one place. Paths the reference documents are used as
//! written; where it says a path is not documented, this is our choice by analogy with the
//! sibling paths (see the table in docs/sandbox.md), kept here so it is easy to change.

/// All Hello Clever paths live under this prefix, as on the real hosts.
pub const API: &str = "/api";

// Contacts and KYC.
pub const CONTACTS: &str = "/v2/contacts";
pub const CONTACTS_LIST: &str = "/v2/contacts/";
pub const CONTACT_DETAIL: &str = "/v2/contacts/detail";
pub const CONTACT_UPDATE: &str = "/v2/contact/update_info";
/// Not documented: `DELETE /v2/contacts?email=` (our choice).
pub const CONTACT_DELETE: &str = "/v2/contacts";
pub const KYC_SUBMIT: &str = "/v2/contacts/submit_kyc";
pub const KYC_SHARE_TOKEN: &str = "/v2/contacts/share_token";

// Payouts v2.
/// Not documented: `GET /v2/payouts/payout_methods` (our choice).
pub const PAYOUT_METHODS: &str = "/v2/payouts/payout_methods";
pub const PAYOUT_METHOD_PARAMS: &str = "/v2/payouts/payout_method/params";
pub const PAYOUTS: &str = "/v2/payouts";
pub const PAYOUT_DETAIL: &str = "/v2/payouts/detail";
pub const PAYOUTS_LIST: &str = "/v2/payouts/all";
/// Not documented: `POST /v2/payouts/simulate` (our choice).
pub const PAYOUT_SIMULATE: &str = "/v2/payouts/simulate";
pub const PAYOUT_CANCEL_SCHEDULED: &str = "/v2/payouts/cancel_scheduled";

// Payins v2.
/// Not documented: `GET /v2/payins/payin_methods` (our choice).
pub const PAYIN_METHODS: &str = "/v2/payins/payin_methods";
pub const PAYIN_METHOD_PARAMS: &str = "/v2/payins/payin_method/params";
pub const PAYINS: &str = "/v2/payins";
pub const PAYINS_LIST: &str = "/v2/payins/all";
pub const PAYIN_DETAIL: &str = "/v2/payins/detail";
pub const PAYIN_SIMULATE: &str = "/v2/payins/simulate";
pub const PAYIN_REFUND: &str = "/v2/payins/refund";
/// Not documented: `POST /v2/payins/cancel` (our choice).
pub const PAYIN_CANCEL: &str = "/v2/payins/cancel";

// Exports.
pub const PAYTO_SEARCH: &str = "/v1/pay_to/payment_agreement/search";
pub const CARD_PAYMENTS: &str = "/v2/cards/payments";

// The emulator's own, for tests; never faulted, never authenticated.
pub const LEDGER: &str = "/__sandbox/ledger";
pub const RESET: &str = "/__sandbox/reset";
/// `{"currency": "AUD", "amount": "500.00"}`: adds funds, then pays batches waiting for them.
pub const TOP_UP: &str = "/__sandbox/top_up";

// FinHub, under its own prefix (the gateway host's stand-in).
pub const FINHUB: &str = "/finhub";
pub const FH_TOKEN: &str = "/oauth/token";
pub const FH_CUSTOMER_V2: &str = "/customer/2.0.0";
pub const FH_CUSTOMER: &str = "/customer";
pub const FH_CREATE: &str = "/create";
pub const FH_CREATE_BULK: &str = "/createBulk";
pub const FH_DETAILS: &str = "/getDetailsById/{id}";
pub const FH_UPDATE: &str = "/update/{id}";
pub const FH_UPDATE_STATUS: &str = "/update/{id}/status/{status}";
/// Not documented: our reading of "Post update kycConfirmation".
pub const FH_KYC_CONFIRMATION: &str = "/update/kycConfirmation/{id}";
pub const FH_CREATE_DOCUMENTS: &str = "/createDocuments/{id}";
/// Documented on a mirror of the API only.
pub const FH_DOCUMENTS: &str = "/getDocuments/{id}";
pub const FH_BY_STATUS: &str = "/getByCustomerStatus/{status}";
