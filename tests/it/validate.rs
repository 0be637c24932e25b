//! `payrun validate`: the examples pass; each kind of bad input exits 2 with a message that
//! names the file, the line and the column (or key) at fault.

use crate::support::{Fixture, JOB, Output, payrun_in, repo, rows};

mod places;

fn validate(f: &Fixture) -> Output {
    f.payrun(&["validate", "job.yaml"])
}

/// Asserts exit 2 and that stderr holds every one of `needles`.
fn assert_invalid(out: &Output, needles: &[&str]) {
    assert_eq!(
        out.code, 2,
        "expected exit 2\nstdout:\n{}\nstderr:\n{}",
        out.stdout, out.stderr
    );
    for n in needles {
        assert!(
            out.stderr.contains(n),
            "stderr lacks {n:?}:\n{}",
            out.stderr
        );
    }
}

fn with_row(i: usize, row: &str) -> Fixture {
    let mut r = rows();
    r[i] = row.to_string();
    Fixture::new(JOB, &r)
}

#[test]
fn example_jobs_validate_cleanly() {
    for job in [
        "jobs/payroll.yaml",
        "jobs/onboard-contacts.yaml",
        "jobs/collect-payins.yaml",
    ] {
        let out = payrun_in(&repo(), &["validate", job]);
        assert_eq!(out.code, 0, "{job}: {}{}", out.stdout, out.stderr);
        assert!(out.stdout.contains("no problems"), "{}", out.stdout);
    }
}

#[test]
fn clean_fixture_passes_and_writes_nothing() {
    let f = Fixture::standard();
    let out = validate(&f);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("3 rows × 2 steps"), "{}", out.stdout);
    assert!(
        out.stdout.contains("AUD 4999.50 in 3 payouts"),
        "{}",
        out.stdout
    );
    assert!(!f.path(".payrun").exists(), "validate must not write state");
}

#[test]
fn unknown_key_points_at_it_with_a_suggestion() {
    let f = Fixture::new(&JOB.replace("  concurrency: 4", "  concurency: 4"), &rows());
    assert_invalid(
        &validate(&f),
        &[
            "job.yaml:13:3: unknown key 'concurency' in limits",
            "did you mean 'concurrency'?",
            "^^^^^^^^^^",
        ],
    );
}

#[test]
fn wrong_type_names_the_place() {
    let f = Fixture::new(
        &JOB.replace("  concurrency: 4", "  concurrency: lots"),
        &rows(),
    );
    assert_invalid(
        &validate(&f),
        &["job.yaml:13:16: limits.concurrency: invalid type: string \"lots\""],
    );
}

#[test]
fn missing_env_var_is_named() {
    let f = Fixture::new(
        &JOB.replace("period: \"2026-11\"", "period: ${PERIOD}"),
        &rows(),
    );
    assert_invalid(
        &validate(&f),
        &["job.yaml:5:11: environment variable PERIOD is not set"],
    );
}

#[test]
fn env_default_and_dotenv_fill_variables() {
    let f = Fixture::new(
        &JOB.replace("period: \"2026-11\"", "period: ${PERIOD}"),
        &rows(),
    );
    f.write(".env", b"# test\nPERIOD=2027-01\n");
    let out = f.payrun(&["plan", "job.yaml"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("scope '2027-01'"), "{}", out.stdout);
}

#[test]
fn credentials_are_not_needed_to_validate_or_plan() {
    // HC_TEST_APP_ID and HC_TEST_SECRET_KEY are unset in the fixture environment.
    let f = Fixture::standard();
    assert_eq!(validate(&f).code, 0);
    assert_eq!(f.payrun(&["plan", "job.yaml"]).code, 0);
}

#[test]
fn unknown_template_column_is_caught_at_load() {
    let f = Fixture::new(
        &JOB.replace("{{ row.net_pay }}", "{{ row.netpay }}"),
        &rows(),
    );
    assert_invalid(
        &validate(&f),
        &[
            "job.yaml:45:7: field 'pay.amount': template uses column 'netpay', which the CSV header does not have",
            "did you mean 'net_pay'?",
        ],
    );
}

#[test]
fn unknown_step_field_and_type() {
    let f = Fixture::new(&JOB.replace("      amount:", "      amont:"), &rows());
    assert_invalid(
        &validate(&f),
        &[
            "job.yaml:45:7: unknown field 'amont' for a payout step",
            "did you mean 'amount'?",
            "missing required field 'amount'",
        ],
    );
    let f = Fixture::new(&JOB.replace("type: payout", "type: payuot"), &rows());
    assert_invalid(
        &validate(&f),
        &[
            "job.yaml:36:11: unknown step type 'payuot'",
            "did you mean 'payout'?",
        ],
    );
}

#[test]
fn ragged_row() {
    let f = with_row(1, "E2,Bob,Ng,bob@example.com,AU,1985-05-06,2500.50,062000");
    assert_invalid(
        &validate(&f),
        &["payroll.csv:3: row has 8 fields but the header has 9"],
    );
}

#[test]
fn invalid_utf8() {
    let f = Fixture::standard();
    let mut csv = std::fs::read(f.path("payroll.csv")).unwrap();
    let at = csv.windows(3).position(|w| w == b"Bob").unwrap();
    csv[at + 1] = 0xFF;
    f.write("payroll.csv", &csv);
    assert_invalid(
        &validate(&f),
        &["payroll.csv:3: column 'first_name': field is not valid UTF-8"],
    );
}

#[test]
fn bom_and_crlf_pass() {
    let f = Fixture::standard();
    let csv = std::fs::read_to_string(f.path("payroll.csv"))
        .unwrap()
        .replace('\n', "\r\n");
    let mut bytes = b"\xEF\xBB\xBF".to_vec();
    bytes.extend_from_slice(csv.as_bytes());
    f.write("payroll.csv", &bytes);
    let out = validate(&f);
    assert_eq!(out.code, 0, "{}", out.stderr);
}

#[test]
fn duplicate_key() {
    let f = with_row(
        2,
        "E1,Cat,Wu,cat@example.com,AU,1979-12-31,999,033000,11223344",
    );
    assert_invalid(
        &validate(&f),
        &["payroll.csv:4: column 'employee_id': duplicate key 'E1' (first used on line 2)"],
    );
}

#[test]
fn missing_key_column() {
    let f = Fixture::new(&JOB.replace("key: employee_id", "key: employee"), &rows());
    assert_invalid(
        &validate(&f),
        &[
            "payroll.csv:1: column 'employee': key column is missing from the header",
            "did you mean 'employee_id'?",
        ],
    );
}

#[test]
fn negative_amount() {
    let f = with_row(
        0,
        "E1,Ann,Lee,ann@example.com,AU,1990-01-02,-5.00,062000,12345678",
    );
    assert_invalid(
        &validate(&f),
        &["payroll.csv:2: column 'net_pay': amount must be positive (got '-5.00')"],
    );
}

#[test]
fn too_many_decimals() {
    let f = with_row(
        0,
        "E1,Ann,Lee,ann@example.com,AU,1990-01-02,10.005,062000,12345678",
    );
    assert_invalid(
        &validate(&f),
        &[
            "payroll.csv:2: column 'net_pay': amount has more than 2 decimal places for this currency (got '10.005')",
        ],
    );
}

#[test]
fn thousands_separator() {
    let f = with_row(
        0,
        "E1,Ann,Lee,ann@example.com,AU,1990-01-02,\"1,000.00\",062000,12345678",
    );
    assert_invalid(
        &validate(&f),
        &[
            "payroll.csv:2: column 'net_pay': amount must not contain thousands separators (got '1,000.00')",
        ],
    );
}

#[test]
fn currency_symbol() {
    let f = with_row(
        0,
        "E1,Ann,Lee,ann@example.com,AU,1990-01-02,$100,062000,12345678",
    );
    assert_invalid(
        &validate(&f),
        &[
            "column 'net_pay': amount must be a plain number, without a currency symbol or code (got '$100')",
        ],
    );
}

#[test]
fn bad_country() {
    let f = with_row(
        1,
        "E2,Bob,Ng,bob@example.com,UK,1985-05-06,2500.50,062000,87654321",
    );
    assert_invalid(
        &validate(&f),
        &["payroll.csv:3: column 'country': not an ISO 3166-1 alpha-2 country code (got 'UK')"],
    );
}

#[test]
fn bad_date() {
    let f = with_row(
        1,
        "E2,Bob,Ng,bob@example.com,AU,1985-02-30,2500.50,062000,87654321",
    );
    assert_invalid(
        &validate(&f),
        &["payroll.csv:3: column 'dob': date does not exist in the calendar (got '1985-02-30')"],
    );
}

#[test]
fn bad_email_name_and_bank_details() {
    let f = with_row(
        1,
        "E2,Bo{b,Ng,bob@example,AU,1985-05-06,2500.50,06200,87654321999",
    );
    assert_invalid(
        &validate(&f),
        &[
            "payroll.csv:3: column 'email': email's domain has no dot (got 'bob@example')",
            "payroll.csv:3: column 'first_name': name may hold letters, digits, spaces, apostrophes, hyphens and full stops, not '{' (got 'Bo{b')",
            "payroll.csv:3: column 'bsb': BSB must be 6 digits",
            // Account numbers are masked even in error messages.
            "column 'account_number': account number must be 5 to 9 digits (got '********999')",
        ],
    );
}

#[test]
fn payout_method_params_are_found_by_name_not_place() {
    // The job lists the parameters in another order than the method does, and leaves one out.
    let job = JOB.replace(
        "        bsb: \"{{ row.bsb }}\"\n        account_number: \"{{ row.account_number }}\"\n        account_name: \"{{ row.first_name }} {{ row.last_name }}\"\n",
        "        account_name: \"{{ row.first_name }}\"\n        bsb: \"{{ row.bsb }}\"\n",
    );
    assert_ne!(job, JOB);
    let mut r = rows();
    r[2] = "E3,Cat,Wu,cat@example.com,AU,1979-12-31,999,03300,11223344".into();
    assert_invalid(
        &validate(&Fixture::new(&job, &r)),
        &[
            "payroll.csv:2: field 'pay.payout_method_params': payout method au_bank_aud needs parameter 'account_number'",
            "payroll.csv:4: column 'bsb': BSB must be 6 digits (e.g. 062000 or 062-000) (got '03300')",
        ],
    );
}

#[test]
fn every_error_is_reported_not_just_the_first() {
    let mut r = rows();
    r[0] = "E1,Ann,Lee,ann@example.com,XX,1990-01-02,1500.00,062000,12345678".into();
    r[2] = "E3,Cat,Wu,cat@example.com,AU,1979-12-31,0,033000,11223344".into();
    let out = validate(&Fixture::new(JOB, &r));
    assert_invalid(
        &out,
        &[
            "payroll.csv:2: column 'country'",
            "payroll.csv:4: column 'net_pay': amount must be greater than zero",
        ],
    );
    assert!(out.stdout.contains("2 problems"), "{}", out.stdout);
}

#[test]
fn max_amount_and_max_total_guardrails() {
    let mut r = rows();
    r.push("E4,Dan,Oh,dan@example.com,AU,1979-12-31,4800.00,033000,11223344".into());
    r.push("E5,Eve,Li,eve@example.com,AU,1979-12-31,4000.00,033000,11223344".into());
    r.push("E6,Fay,Yu,fay@example.com,AU,1979-12-31,5000.01,033000,11223344".into());
    let out = validate(&Fixture::new(JOB, &r));
    assert_invalid(
        &out,
        &[
            "payroll.csv:7: column 'net_pay': amount is over limits.max_amount 5000.00 (got '5000.01')",
            "payroll.csv:6: column 'net_pay': limits.max_total for AUD is 10000.00 but the planned total is 13799.50; row 'E5' is the first to pass the limit",
        ],
    );
}

#[test]
fn max_rows_guardrail() {
    let f = Fixture::new(
        &JOB.replace(
            "  max_amount: \"5000.00\"",
            "  max_amount: \"5000.00\"\n  max_rows: 2",
        ),
        &rows(),
    );
    assert_invalid(
        &validate(&f),
        &[
            "payroll.csv:4: limits.max_rows is 2 but the input has 3 rows; row 'E3' is the first over the limit",
        ],
    );
}

mod kyc;

#[test]
fn constant_field_problems_point_at_the_job_file() {
    let f = Fixture::new(
        &JOB.replace("      currency: AUD", "      currency: AUX"),
        &rows(),
    );
    let out = validate(&f);
    assert_invalid(
        &out,
        &["job.yaml:39: field 'pay.currency': not an ISO 4217 currency code (got 'AUX')"],
    );
    // Reported once, not once per row.
    assert_eq!(
        out.stderr.matches("pay.currency").count(),
        1,
        "{}",
        out.stderr
    );
    let f = Fixture::new(
        &JOB.replace(
            "payout_method_name: au_bank_aud",
            "payout_method_name: ph_bank_maya_php",
        ),
        &rows(),
    );
    assert_invalid(
        &validate(&f),
        &[
            "field 'pay.payout_method_name': payout method ph_bank_maya_php pays PHP, but the currency is AUD",
        ],
    );
}

#[test]
fn empty_and_foreign_dialect_csv_files() {
    let f = Fixture::standard();
    f.write("payroll.csv", b"");
    assert_invalid(&validate(&f), &["payroll.csv:1: CSV file is empty"]);
    let csv = std::fs::read_to_string(f.path("job.yaml")).unwrap();
    assert!(csv.contains("key: employee_id"));
    f.write(
        "payroll.csv",
        crate::support::PAYOUT_HEADER.replace(',', ";").as_bytes(),
    );
    assert_invalid(
        &validate(&f),
        &["the file seems to be separated by \";\"; set input.delimiter: \";\""],
    );
}

#[test]
fn semicolon_delimiter_is_honoured() {
    let job = JOB.replace(
        "  key: employee_id",
        "  key: employee_id\n  delimiter: \";\"",
    );
    let f = Fixture::new(&job, &[]);
    let mut csv = crate::support::PAYOUT_HEADER.replace(',', ";");
    for r in rows() {
        csv.push('\n');
        csv.push_str(&r.replace(',', ";"));
    }
    f.write("payroll.csv", csv.as_bytes());
    let out = validate(&f);
    assert_eq!(out.code, 0, "{}", out.stderr);
}

#[test]
fn missing_section_is_named() {
    let f = Fixture::new("version: 1\nname: x\n", &rows());
    assert_invalid(
        &validate(&f),
        &["job.yaml:1:1: missing required key 'provider'"],
    );
}

/// A file read in many segments and chunks (6,000 rows, CRLF, quoted fields, a blank line
/// after every seventh row) reports what one reader would: exact lines, in file order, and
/// the guardrails' first offending rows deep in the file.
#[test]
fn a_large_file_reports_exact_lines_across_segments() {
    let row = |i: usize| {
        let name = if i.is_multiple_of(3) {
            "\"Lee\""
        } else {
            "Lee"
        };
        format!("E{i},Ann,{name},ann{i}@example.com,AU,1990-01-02,1.00,062000,12345678")
    };
    let mut rows: Vec<String> = (1..=6000).map(row).collect();
    rows[2999] = "E3000,Ann,Lee,ragged".into();
    rows[4499] = row(100).replace(",ann100@", ",ann4500@");
    rows[5499] = rows[5499].replace(",AU,", ",XX,");
    let mut r = Vec::new();
    for (i, text) in rows.into_iter().enumerate() {
        r.push(text);
        if (i + 1).is_multiple_of(7) {
            r.push(String::new());
        }
    }
    // Row i starts on line 2 + (i - 1) + (i - 1) / 7.
    let line = |i: usize| 2 + (i - 1) + (i - 1) / 7;
    let job = JOB
        .replace(
            "max_total: { AUD: \"10000.00\" }",
            "max_total: { AUD: \"4000.00\" }",
        )
        .replace(
            "  max_amount: \"5000.00\"",
            "  max_amount: \"5000.00\"\n  max_rows: 5000",
        );
    let f = Fixture::new(&job, &r);
    let csv = f.dir.path().join("payroll.csv");
    let text = std::fs::read_to_string(&csv).unwrap().replace('\n', "\r\n");
    std::fs::write(&csv, text.replace("\r\r\n", "\r\n")).unwrap();
    let out = validate(&f);
    let expected = [
        format!(
            "payroll.csv:{}: row has 4 fields but the header has 9",
            line(3000)
        ),
        format!("payroll.csv:{}: column 'country'", line(5500)),
        format!(
            "payroll.csv:{}: column 'employee_id': duplicate key 'E100' (first used on line {})",
            line(4500),
            line(100)
        ),
        format!(
            "payroll.csv:{}: limits.max_rows is 5000 but the input has 5999 rows; row 'E5002' is the first over the limit",
            line(5002)
        ),
        format!(
            "payroll.csv:{}: column 'net_pay': limits.max_total for AUD is 4000.00",
            line(4002)
        ),
    ];
    assert_invalid(
        &out,
        &expected.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    // In file order, duplicates and guardrails last.
    let at = |needle: &str| out.stderr.find(needle).unwrap();
    let positions: Vec<usize> = expected.iter().map(|e| at(e)).collect();
    assert!(positions.is_sorted(), "{}", out.stderr);
}

/// `JOB` with its payout step replaced by a payin step with `fields` (YAML lines under
/// `fields:`) and `rest` after it.
fn payin_job(fields: &str, rest: &str) -> String {
    let head = &JOB[..JOB.find("  - id: pay\n").unwrap()];
    format!(
        "{head}  - id: collect\n    type: payin\n    fields:\n      currency: AUD\n      amount: \"{{{{ row.net_pay }}}}\"\n      name: \"{{{{ row.first_name }}}}\"\n      email: \"{{{{ row.email }}}}\"\n      description: Invoice\n{fields}{rest}"
    )
}

#[test]
fn payin_and_refund_steps_are_checked_like_payouts() {
    // A clean payin step.
    let ok = Fixture::new(
        &payin_job("      payin_method_name: au_payid_npp_aud\n", ""),
        &rows(),
    );
    let out = validate(&ok);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    // What the file asks of payers, as payouts' totals are said.
    assert!(
        out.stdout.contains("AUD 4999.50 asked in 3 payins"),
        "{}",
        out.stdout
    );
    // expired_at too soon, a method of another currency, gst not a flag, an amount over
    // the method's limit (PayID: 20 to 10000 AUD), and a wait for the wrong thing.
    let soon = (chrono::Utc::now() + chrono::Duration::minutes(5))
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string();
    let bad = Fixture::new(
        &payin_job(
            &format!(
                "      payin_method_name: ph_bank_maya_php\n      expired_at: \"{soon}\"\n      gst: \"yes\"\n"
            ),
            "",
        ),
        &rows(),
    );
    assert_invalid(
        &validate(&bad),
        &[
            "payin method ph_bank_maya_php collects PHP, but the currency is AUD",
            "must be more than 15 minutes from now (UTC), as the provider requires",
            "must be true or false",
        ],
    );
    let wait = Fixture::new(
        &payin_job(
            "      payin_method_name: au_payid_npp_aud\n",
            "    wait: { until: completed }\n",
        ),
        &rows(),
    );
    assert_invalid(
        &validate(&wait),
        &["wait.until must be 'received' for a payin step (got 'completed')"],
    );
    let over = with_row(
        0,
        "E1,Ann,Lee,ann@example.com,AU,1990-01-02,19.99,062000,12345678",
    );
    std::fs::write(
        over.path("job.yaml"),
        payin_job("      payin_method_name: au_payid_npp_aud\n", ""),
    )
    .unwrap();
    assert_invalid(
        &validate(&over),
        &["amount must be between 20 and 10000 AUD for au_payid_npp_aud"],
    );
    // A refund needs its payin: from a payin step before it, or named by the row.
    let head = &JOB[..JOB.find("  - id: pay\n").unwrap()];
    let orphan = Fixture::new(
        &format!(
            "{head}  - id: refund\n    type: refund\n    fields:\n      description: Credit note\n"
        ),
        &rows(),
    );
    assert_invalid(
        &validate(&orphan),
        &["step 'refund': a refund needs the payin it refunds"],
    );
    let named = Fixture::new(
        &format!(
            "{head}  - id: refund\n    type: refund\n    fields:\n      payin: \"{{{{ row.bsb }}}}\"\n      description: Credit note\n"
        ),
        &rows(),
    );
    let out = validate(&named);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
}
