//! FinHub steps on customers that exist already: named by the row when no step of the job
//! creates them; an upsert keeps an existing customer's status.

use super::*;

/// `AFTER` with each step naming its customer from the row.
fn after_by_id() -> String {
    AFTER
        .replace(
            "    fields:\n      purpose: KYC",
            "    fields:\n      customerId: \"{{ row.customer_id }}\"\n      purpose: KYC",
        )
        .replace(
            "fields: { kycConfirmation: confirmed }",
            "fields: { customerId: \"{{ row.customer_id }}\", kycConfirmation: confirmed }",
        )
        .replace(
            "fields: { status: \"{{ row.status }}\" }",
            "fields: { customerId: \"{{ row.customer_id }}\", status: \"{{ row.status }}\" }",
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_and_status_for_customers_created_earlier() {
    let s = start(config(Faults::default())).await;
    // Customers onboarded by an earlier job, created as `new`.
    let created = CUSTOMER.replace(
        "      customerType: Person\n",
        "      customerType: Person\n      customerStatus: new\n",
    );
    let first = Dir::new(&job(&created, RETRY), &people(3, &[]));
    assert_eq!(first.run(&s).await.exit_code, 0);
    let l = ledger(&s).await;
    let emails: Vec<String> = (0..3).map(|i| format!("ann{i}@example.com")).collect();
    let ids: Vec<String> = emails
        .iter()
        .map(|e| {
            exactly_one_each(&l, &emails)[e]["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    // Later, a file of their ids: documents, confirmation and status, no customer step.
    let mut csv = String::from("id,customer_id,status\n");
    for (i, (id, status)) in ids
        .iter()
        .zip(["verified", "on_hold", "verified"])
        .enumerate()
    {
        csv.push_str(&format!("K{i},{id},{status}\n"));
    }
    let later = Dir::new(&job(&after_by_id(), RETRY), &csv);
    let r = later.run(&s).await;
    assert_eq!(r.exit_code, 0, "{}", r.counts);
    let l = ledger(&s).await;
    let by_email = exactly_one_each(&l, &emails);
    for (e, want) in emails.iter().zip(["verified", "on_hold", "verified"]) {
        let c = &by_email[e];
        assert_eq!(c["status"], want, "{e}");
        assert_eq!(c["kycConfirmation"], "confirmed");
        let docs = c["documents"].as_array().unwrap();
        assert_eq!(docs.len(), 1, "{e}");
        // The descriptor sent is the document's fields: the id is the path, not a field.
        assert!(docs[0].get("customerId").is_none(), "{}", docs[0]);
    }
    // The onboarding job again, another scope of it: the customers exist, their details
    // are brought up to date, and the verified ones stay verified (`customerStatus: new`
    // is what a new customer starts as).
    let again = Dir::new(
        &job(&created, RETRY).replace("name: fh", "name: fh-again"),
        &people(3, &[]),
    );
    let r = again.run(&s).await;
    assert_eq!(r.exit_code, 0, "{}", r.counts);
    let items = again.items();
    assert_eq!(items["R000"]["customer"].0, "succeeded");
    let by_email = exactly_one_each(&ledger(&s).await, &emails);
    assert_eq!(by_email["ann0@example.com"]["status"], "verified");
    assert_eq!(by_email["ann1@example.com"]["status"], "on_hold");
}

#[test]
fn a_step_on_customers_needs_their_id_from_the_row_or_an_earlier_step() {
    let validate = |steps: &str| {
        let d = Dir::new(
            &job(steps, RETRY),
            "id,customer_id,status,first,last,email\n",
        );
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_payrun"))
            .args(["validate", "job.yaml"])
            .current_dir(d.0.path())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = validate(AFTER);
    assert_eq!(code, Some(2));
    assert!(
        err.contains(
            "is missing required field 'customerId' (no earlier step creates the row's customer"
        ),
        "{err}"
    );
    let (code, err) = validate(&format!("{CUSTOMER}{}", after_by_id()));
    assert_eq!(code, Some(2));
    assert!(
        err.contains("the row's customer comes from step 'customer', which creates it; remove customerId here"),
        "{err}"
    );
    assert_eq!(validate(&after_by_id()).0, Some(0));
}
