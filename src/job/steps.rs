//! Step types and the fields each one sends, named as the provider's API names them.

use crate::validate::ImageKind;

/// What a step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StepKind {
    Contact,
    Kyc,
    Payout,
    /// FinHub: create a customer (update it when its email exists).
    Customer,
    /// FinHub: create customers in chunks of `batch.size` with one call each.
    CustomersBulk,
    /// FinHub: attach a document descriptor to the row's customer.
    Documents,
    /// FinHub: set the row's customer's status.
    CustomerStatus,
    /// FinHub: post the row's customer's kycConfirmation.
    KycConfirmation,
    /// A payment request to the row's payer (Hello Clever payins).
    Payin,
    /// A refund of the row's received payin.
    Refund,
}

impl StepKind {
    pub const NAMES: [&'static str; 10] = [
        "contact",
        "kyc",
        "payout",
        "payin",
        "refund",
        "customer",
        "customers_bulk",
        "documents",
        "customer_status",
        "kyc_confirmation",
    ];
    const ALL: [StepKind; 10] = [
        StepKind::Contact,
        StepKind::Kyc,
        StepKind::Payout,
        StepKind::Payin,
        StepKind::Refund,
        StepKind::Customer,
        StepKind::CustomersBulk,
        StepKind::Documents,
        StepKind::CustomerStatus,
        StepKind::KycConfirmation,
    ];

    pub fn parse(s: &str) -> Option<StepKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::Contact => "contact",
            StepKind::Kyc => "kyc",
            StepKind::Payout => "payout",
            StepKind::Customer => "customer",
            StepKind::CustomersBulk => "customers_bulk",
            StepKind::Documents => "documents",
            StepKind::CustomerStatus => "customer_status",
            StepKind::KycConfirmation => "kyc_confirmation",
            StepKind::Payin => "payin",
            StepKind::Refund => "refund",
        }
    }

    /// The provider whose API the step calls.
    pub fn provider(self) -> crate::provider::ProviderKind {
        use crate::provider::ProviderKind::{FinHub, HelloClever};
        match self {
            StepKind::Contact
            | StepKind::Kyc
            | StepKind::Payout
            | StepKind::Payin
            | StepKind::Refund => HelloClever,
            _ => FinHub,
        }
    }

    /// The step kinds of a provider, for messages.
    pub fn names_for(p: crate::provider::ProviderKind) -> Vec<&'static str> {
        Self::ALL
            .into_iter()
            .filter(|k| k.provider() == p)
            .map(StepKind::as_str)
            .collect()
    }

    /// The order steps run in: a row enters a step only when the earlier ones succeeded.
    pub fn rank(self) -> u8 {
        match self {
            StepKind::Contact | StepKind::Customer | StepKind::CustomersBulk => 0,
            StepKind::Kyc | StepKind::Documents => 1,
            StepKind::Payout
            | StepKind::Payin
            | StepKind::CustomerStatus
            | StepKind::KycConfirmation => 2,
            StepKind::Refund => 3,
        }
    }

    /// Whether the step creates the row's FinHub customer (later steps use its id).
    pub fn creates_customer(self) -> bool {
        matches!(self, StepKind::Customer | StepKind::CustomersBulk)
    }

    pub fn fields(self) -> &'static [FieldSpec] {
        match self {
            StepKind::Contact => CONTACT,
            StepKind::Kyc => KYC,
            StepKind::Payout => PAYOUT,
            StepKind::Customer | StepKind::CustomersBulk => CUSTOMER,
            StepKind::Documents => DOCUMENT,
            StepKind::CustomerStatus => CUSTOMER_STATUS,
            StepKind::KycConfirmation => KYC_CONFIRMATION,
            StepKind::Payin => PAYIN,
            StepKind::Refund => REFUND,
        }
    }

    /// The fields of a step of this kind in `mode` (a contact step in `update` mode
    /// requires only the email), and whether an earlier step creates the row's FinHub
    /// customer (without one, a step on a customer takes its id from the row).
    pub fn fields_in(self, mode: ContactMode, customer_created: bool) -> &'static [FieldSpec] {
        match (self, mode, customer_created) {
            (StepKind::Contact, ContactMode::Update, _) => CONTACT_UPDATE,
            (StepKind::Documents, _, false) => DOCUMENT_BY_ID,
            (StepKind::CustomerStatus, _, false) => CUSTOMER_STATUS_BY_ID,
            (StepKind::KycConfirmation, _, false) => KYC_CONFIRMATION_BY_ID,
            _ => self.fields(),
        }
    }

    /// Whether the step acts on a customer created before it (or named by the row).
    pub fn needs_customer(self) -> bool {
        matches!(
            self,
            StepKind::Documents | StepKind::CustomerStatus | StepKind::KycConfirmation
        )
    }
}

/// A contact step's `mode`: what it does with a contact that exists, or does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ContactMode {
    /// Create it, or bring the existing one to the row's values (the default).
    #[default]
    Upsert,
    /// Create it; one that exists already is left as it is.
    Create,
    /// Update the existing one with the configured fields; one that does not exist fails
    /// its row (nothing is created).
    Update,
}

impl ContactMode {
    pub const NAMES: &[&str] = &["upsert", "create", "update"];

    pub fn parse(s: &str) -> Option<ContactMode> {
        match s {
            "upsert" => Some(ContactMode::Upsert),
            "create" => Some(ContactMode::Create),
            "update" => Some(ContactMode::Update),
            _ => None,
        }
    }
}

/// How a field's rendered value is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    Text {
        min: usize,
        max: usize,
    },
    Email,
    /// People's names: letters of any script, apostrophes, hyphens, full stops (see
    /// `validate::payee_name`).
    PayeeName,
    Enum(&'static [&'static str]),
    Date,
    PastDate,
    Timestamp,
    Country,
    Currency,
    Amount,
    Phone,
    /// A file path relative to the CSV, holding one of these image kinds.
    Image(&'static [ImageKind]),
    /// A map of names to templates (`payout_method_params`).
    Map,
    PayoutMethod,
    /// A payin method's name (`au_payid_npp_aud`): its shape, and its currency.
    PayinMethod,
    /// `true` or `false`, sent as a JSON boolean.
    Flag,
    /// A time ahead of now by more than the provider's minimum (a payin's `expired_at`).
    Expiry,
}

/// A field a step type knows.
#[derive(Debug, Clone, Copy)]
pub struct FieldSpec {
    pub name: &'static str,
    pub kind: FieldKind,
    pub required: Required,
    /// Masked to its last 3 characters wherever payrun shows or stores it.
    pub sensitive: bool,
}

/// When a field must be configured (and render non-empty).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Required {
    Always,
    Optional,
    /// Required for KYC by documents; not allowed with a share token.
    DocumentKyc,
}

const fn f(name: &'static str, kind: FieldKind, required: Required) -> FieldSpec {
    FieldSpec {
        name,
        kind,
        required,
        sensitive: false,
    }
}

const TEXT: FieldKind = FieldKind::Text { min: 1, max: 255 };
use Required::{Always, DocumentKyc, Optional};

// Create contact: the API schema marks every field required; reg_no matters only for
// organisations (checked across fields in `plan`).
const CONTACT_FIELDS: [FieldSpec; 13] = [
    f("email", FieldKind::Email, Always),
    f("first_name", FieldKind::Text { min: 1, max: 100 }, Always),
    f("last_name", FieldKind::Text { min: 1, max: 100 }, Always),
    f(
        "type",
        FieldKind::Enum(&["individual", "organization"]),
        Always,
    ),
    f("dob", FieldKind::PastDate, Always),
    f("reg_no", TEXT, Optional),
    f("phone", FieldKind::Phone, Always),
    f("gender", FieldKind::Enum(&["male", "female"]), Always),
    f("street", TEXT, Always),
    f("city", TEXT, Always),
    f("postal_code", FieldKind::Text { min: 1, max: 20 }, Always),
    f("state", TEXT, Always),
    f("country", FieldKind::Country, Always),
];
const CONTACT: &[FieldSpec] = &CONTACT_FIELDS;
/// `mode: update`: the email finds the contact; every other field is optional, and only
/// those configured and not empty are sent.
const CONTACT_UPDATE: &[FieldSpec] = &optional_after_first(CONTACT_FIELDS);

const fn optional_after_first<const N: usize>(mut specs: [FieldSpec; N]) -> [FieldSpec; N] {
    let mut i = 1;
    while i < N {
        specs[i].required = Optional;
        i += 1;
    }
    specs
}

const JPEG: &[ImageKind] = &[ImageKind::Jpeg];
const JPEG_OR_PNG: &[ImageKind] = &[ImageKind::Jpeg, ImageKind::Png];

const KYC: &[FieldSpec] = &[
    f("email", FieldKind::Email, Always),
    f(
        "document_type",
        FieldKind::Enum(&["passport", "id_card", "driving_license"]),
        DocumentKyc,
    ),
    FieldSpec {
        sensitive: true,
        ..f("document_number", TEXT, DocumentKyc)
    },
    f("document_username", TEXT, DocumentKyc),
    f("issue_date", FieldKind::Date, Optional),
    f("expiry_date", FieldKind::Date, DocumentKyc),
    f("issue_country", FieldKind::Country, DocumentKyc),
    f("nationality", FieldKind::Country, DocumentKyc),
    f("selfie", FieldKind::Image(JPEG), DocumentKyc),
    f(
        "id_doc_front_side",
        FieldKind::Image(JPEG_OR_PNG),
        DocumentKyc,
    ),
    f(
        "id_doc_back_side",
        FieldKind::Image(JPEG_OR_PNG),
        DocumentKyc,
    ),
    FieldSpec {
        sensitive: true,
        ..f("token", FieldKind::Text { min: 1, max: 4096 }, Optional)
    },
];

// Batch-level fields (currency, payout_method_name, description, scheduled_at) are rendered
// per row too; rows that agree on them share a batch.
const PAYOUT: &[FieldSpec] = &[
    f("currency", FieldKind::Currency, Always),
    f("payout_method_name", FieldKind::PayoutMethod, Always),
    f("description", FieldKind::Text { min: 5, max: 90 }, Always),
    f("scheduled_at", FieldKind::Timestamp, Optional),
    f("external_id", TEXT, Optional),
    f("first_name", FieldKind::PayeeName, Always),
    f("last_name", FieldKind::PayeeName, Always),
    f("email", FieldKind::Email, Always),
    f("amount", FieldKind::Amount, Always),
    f("payout_method_params", FieldKind::Map, Always),
];

// Create payin (P3): `gst` is a flag (false when not set); `webhook_notification` comes
// from the job's callbacks; `expired_at` must be more than 15 minutes ahead.
const PAYIN: &[FieldSpec] = &[
    f("currency", FieldKind::Currency, Always),
    f("amount", FieldKind::Amount, Always),
    f("gst", FieldKind::Flag, Optional),
    f("name", TEXT, Always),
    f("email", FieldKind::Email, Always),
    f("description", TEXT, Always),
    f("payin_method_name", FieldKind::PayinMethod, Always),
    f("payin_method_params", FieldKind::Map, Optional),
    f("expired_at", FieldKind::Expiry, Optional),
    f("external_id", TEXT, Optional),
];

// Refund payin (P7): the payin is the row's from the job's payin step, or named by the
// row (`payin`: its uuid); no `amount` refunds what was paid; the reason is required.
const REFUND: &[FieldSpec] = &[
    f("payin", TEXT, Optional),
    f("amount", FieldKind::Amount, Optional),
    f("currency", FieldKind::Currency, Optional),
    f("description", FieldKind::Text { min: 5, max: 255 }, Always),
];

/// A refund step's field naming the payin it refunds.
pub const PAYIN_ID: &str = "payin";

// FinHub's Customer object (shared/api/finhub.md §2.0), as dotted paths: an array segment
// (`telephoneNumbers`, `addresses`) holds one entry built from its fields. Names and enum
// literals are the reference's, misspellings included. The reference marks nothing as
// required; payrun requires the type and, to find a customer again, its email.
use crate::provider::finhub as fh;
const CUSTOMER: &[FieldSpec] = &[
    f("customerType", FieldKind::Enum(&fh::CUSTOMER_TYPES), Always),
    f("customerName", TEXT, Optional),
    f(
        "customerStatus",
        FieldKind::Enum(&fh::CUSTOMER_STATUSES),
        Optional,
    ),
    f("categorization", FieldKind::Enum(&fh::CATEGORIES), Optional),
    f("person.email", FieldKind::Email, Always),
    f("person.firstName.name", TEXT, Optional),
    f("person.lastName.name", TEXT, Optional),
    f("person.fullName", TEXT, Optional),
    f("person.gender", TEXT, Optional),
    f("person.dateOfBirth", FieldKind::PastDate, Optional),
    f("person.placeOfBirth", TEXT, Optional),
    f("person.nationality", TEXT, Optional),
    f("person.telephoneNumbers.number", FieldKind::Phone, Optional),
    f("person.telephoneNumbers.phoneType", TEXT, Optional),
    f("person.telephoneNumbers.country", TEXT, Optional),
    f("person.addresses.addressPurpose", TEXT, Optional),
    f("person.addresses.address.country", TEXT, Optional),
    f("person.addresses.address.city", TEXT, Optional),
    f("person.addresses.address.zipCode", TEXT, Optional),
    f("person.addresses.address.street", TEXT, Optional),
];

const DOCUMENT_FIELDS: [FieldSpec; 6] = [
    f("purpose", FieldKind::Enum(&fh::DOCUMENT_PURPOSES), Always),
    f("documentType", FieldKind::Enum(&fh::DOCUMENT_TYPES), Always),
    f("name", TEXT, Always),
    f("location", FieldKind::Text { min: 1, max: 2048 }, Always),
    f("status", FieldKind::Enum(&fh::DOCUMENT_STATUSES), Optional),
    f(
        "verificationResponse",
        FieldKind::Text { min: 0, max: 4096 },
        Optional,
    ),
];
const DOCUMENT: &[FieldSpec] = &DOCUMENT_FIELDS;

const CUSTOMER_STATUS_FIELDS: [FieldSpec; 1] =
    [f("status", FieldKind::Enum(&fh::CUSTOMER_STATUSES), Always)];
const CUSTOMER_STATUS: &[FieldSpec] = &CUSTOMER_STATUS_FIELDS;

const KYC_CONFIRMATION_FIELDS: [FieldSpec; 1] = [f("kycConfirmation", TEXT, Always)];
const KYC_CONFIRMATION: &[FieldSpec] = &KYC_CONFIRMATION_FIELDS;

/// The FinHub customer a step acts on, from the row: required when no earlier step of the
/// job creates the row's customer.
pub const CUSTOMER_ID: &str = "customerId";

const DOCUMENT_BY_ID: &[FieldSpec] = &with_customer_id::<6, 7>(DOCUMENT_FIELDS);
const CUSTOMER_STATUS_BY_ID: &[FieldSpec] = &with_customer_id::<1, 2>(CUSTOMER_STATUS_FIELDS);
const KYC_CONFIRMATION_BY_ID: &[FieldSpec] = &with_customer_id::<1, 2>(KYC_CONFIRMATION_FIELDS);

/// `specs` after a required `customerId` (`M` is `N + 1`).
const fn with_customer_id<const N: usize, const M: usize>(specs: [FieldSpec; N]) -> [FieldSpec; M] {
    assert!(M == N + 1);
    let mut out = [f(CUSTOMER_ID, FieldKind::Text { min: 1, max: 255 }, Always); M];
    let mut i = 0;
    while i < N {
        out[i + 1] = specs[i];
        i += 1;
    }
    out
}

/// The payout fields that decide which batch a row goes into.
pub const BATCH_FIELDS: [&str; 4] = [
    "currency",
    "payout_method_name",
    "description",
    "scheduled_at",
];

/// Payout method parameters whose values are masked when shown or stored.
pub const SENSITIVE_PARAMS: [&str; 3] = ["account_number", "iban", "card_number"];
