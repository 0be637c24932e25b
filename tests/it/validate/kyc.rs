//! KYC steps: by documents or share token, images checked by content.

use super::*;

const KYC_JOB: &str = r#"version: 1
name: kyc
provider: { kind: helloclever, app_id: "${HC_TEST_APP_ID}", secret_key: "${HC_TEST_SECRET_KEY}" }
input: { csv: people.csv, key: id }
steps:
  - id: kyc
    type: kyc
    when: "{{ row.kyc == 'yes' }}"
    fields:
      email: "{{ row.email }}"
      document_type: passport
      document_number: "{{ row.doc }}"
      document_username: "{{ row.name }}"
      issue_date: "2020-01-01"
      expiry_date: "{{ row.expiry }}"
      issue_country: AU
      nationality: AU
      selfie: "{{ row.selfie }}"
      id_doc_front_side: "{{ row.front }}"
      id_doc_back_side: "{{ row.back }}"
"#;
const JPEG: &[u8] = include_bytes!("../../../examples/kyc/E1003-selfie.jpg");
const PNG: &[u8] = include_bytes!("../../../examples/kyc/E1003-id-front.png");

fn fixture(rows: &[&str]) -> Fixture {
    let f = Fixture::new(KYC_JOB, &[]);
    let mut csv = "id,kyc,email,doc,name,expiry,selfie,front,back\n".to_string();
    for r in rows {
        csv.push_str(r);
        csv.push('\n');
    }
    f.write("people.csv", csv.as_bytes());
    f.write("img/s.jpg", JPEG);
    f.write("img/f.png", PNG);
    f.write("img/b.jpg", JPEG);
    f.write("img/png-named.jpg", PNG);
    f
}

#[test]
fn kyc_files_stay_inside_the_csv_folder_and_are_images() {
    // A file outside the CSV's folder, reached three ways, and a fake JPEG inside.
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("passport.jpg");
    std::fs::write(&secret, JPEG).unwrap();
    let f = fixture(&[]);
    std::os::unix::fs::symlink(&secret, f.path("img/link.jpg")).unwrap();
    f.write(
        "img/fake.jpg",
        &[
            0xFF, 0xD8, 0xFF, 0xE0, b'n', b'o', b't', b' ', b'a', b'n', b' ', b'i', b'm', b'g',
        ],
    );
    let row = |i: u32, selfie: &str| {
        format!(
            "{i},yes,a{i}@example.com,PA1234567,Ann Lee,2031-01-01,{selfie},img/f.png,img/b.jpg"
        )
    };
    let rows = [
        row(1, secret.to_str().unwrap()),
        row(2, "../passport.jpg"),
        row(3, "img/link.jpg"),
        row(4, "img/fake.jpg"),
    ];
    let mut csv = "id,kyc,email,doc,name,expiry,selfie,front,back\n".to_string();
    for r in &rows {
        csv.push_str(r);
        csv.push('\n');
    }
    f.write("people.csv", csv.as_bytes());
    assert_invalid(
        &validate(&f),
        &[
            "people.csv:2: column 'selfie': image path",
            "is absolute; it must be relative to",
            "people.csv:3: column 'selfie': image path '../passport.jpg' climbs out of",
            "people.csv:4: column 'selfie': image path 'img/link.jpg' leads out of",
            "people.csv:5: column 'selfie': image file",
            "fake.jpg starts like a JPEG image but is not one",
        ],
    );
}

#[test]
fn good_kyc_rows_and_skipped_rows_pass() {
    let f = fixture(&[
        "1,yes,a@example.com,PA1234567,Ann Lee,2031-01-01,img/s.jpg,img/f.png,img/b.jpg",
        "2,no,b@example.com,,,,,,",
    ]);
    let out = validate(&f);
    assert_eq!(out.code, 0, "{}", out.stderr);
}

#[test]
fn missing_image() {
    let f = fixture(&[
        "1,yes,a@example.com,PA1234567,Ann Lee,2031-01-01,img/nope.jpg,img/f.png,img/b.jpg",
    ]);
    assert_invalid(
        &validate(&f),
        &[
            "people.csv:2: column 'selfie': image file",
            "img/nope.jpg does not exist",
        ],
    );
}

#[test]
fn png_renamed_jpg() {
    let f = fixture(&[
        "1,yes,a@example.com,PA1234567,Ann Lee,2031-01-01,img/s.jpg,img/f.png,img/png-named.jpg",
    ]);
    assert_invalid(
        &validate(&f),
        &[
            "people.csv:2: column 'back': image file",
            "png-named.jpg is a PNG image but its name says JPEG",
        ],
    );
}

#[test]
fn expiry_before_issue() {
    let f = fixture(&[
        "1,yes,a@example.com,PA1234567,Ann Lee,2019-01-01,img/s.jpg,img/f.png,img/b.jpg",
    ]);
    assert_invalid(
        &validate(&f),
        &[
            "people.csv:2: column 'expiry': expiry_date must be after issue_date 2020-01-01 (got '2019-01-01')",
        ],
    );
}

#[test]
fn token_and_documents_do_not_mix() {
    let job = KYC_JOB.replace(
        "      nationality: AU\n",
        "      nationality: AU\n      token: \"{{ row.doc }}\"\n",
    );
    let f = Fixture::new(&job, &[]);
    f.write(
        "people.csv",
        b"id,kyc,email,doc,name,expiry,selfie,front,back\n",
    );
    assert_invalid(
        &validate(&f),
        &[
            "field 'document_type' is for KYC by documents; with 'token' only email and token are sent",
        ],
    );
}
