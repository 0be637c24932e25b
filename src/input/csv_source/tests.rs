use super::*;

type RowResult = Result<(u64, String, Vec<String>), String>;

fn rows(content: &[u8], key: &str) -> (Vec<String>, Vec<RowResult>) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("in.csv");
    std::fs::write(&p, content).unwrap();
    let mut src = CsvSource::open(&p, b',', &[key.to_string()]).unwrap();
    let header = src.header().names().to_vec();
    let mut rec = StringRecord::new();
    let mut key = String::new();
    let mut out = Vec::new();
    loop {
        match src.next_row(&mut rec, &mut key) {
            Ok(None) => break,
            Ok(Some(line)) => out.push(Ok((
                line,
                key.clone(),
                rec.iter().map(str::to_string).collect(),
            ))),
            Err(e) => out.push(Err(format!(
                "{}:{}:{}",
                e.line.unwrap_or(0),
                e.column.unwrap_or_default(),
                e.message
            ))),
        }
    }
    (header, out)
}

#[test]
fn bom_crlf_and_quotes() {
    let (header, out) = rows(
        b"\xEF\xBB\xBFid,name\r\n1,\"Doe, Jane\"\r\n2,\"multi\r\nline\"\r\n3,x\r\n",
        "id",
    );
    assert_eq!(header, ["id", "name"]);
    let ok: Vec<_> = out.into_iter().map(Result::unwrap).collect();
    assert_eq!(ok[0].2, ["1", "Doe, Jane"]);
    assert_eq!(ok[1].2, ["2", "multi\r\nline"]);
    assert_eq!((ok[2].0, ok[2].1.as_str()), (5, "3"));
}

#[test]
fn crlf_line_numbers_are_right() {
    let (_, out) = rows(b"id,name\r\n1,x\r\n2,\"a\r\nb\"\r\n3,x\r\n4,y,z\r\n", "id");
    let lines: Vec<u64> = out
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .map(|(line, _, _)| *line)
        .collect();
    assert_eq!(lines, [2, 3, 5]);
    assert_eq!(
        out[3].as_ref().unwrap_err(),
        "6::row has 3 fields but the header has 2"
    );
}

#[test]
fn blank_lines_do_not_shift_line_numbers() {
    for content in [
        &b"id,name\r\n1,x\r\n\r\n\r\n2,y\r\n3,\"a\r\n\r\nb\"\r\n\r\n4,z\r\n"[..],
        &b"id,name\n1,x\n\n\n2,y\n3,\"a\n\nb\"\n\n4,z\n"[..],
    ] {
        let (_, out) = rows(content, "id");
        let lines: Vec<u64> = out.iter().map(|r| r.as_ref().unwrap().0).collect();
        assert_eq!(lines, [2, 5, 6, 10], "{}", String::from_utf8_lossy(content));
    }
}

#[test]
fn ragged_and_bad_utf8_rows_are_reported_and_skipped() {
    let (_, out) = rows(b"id,name\n1,a\n2,b,extra\n3,\xff\xfe\n4,d\n", "id");
    assert!(out[0].is_ok());
    assert_eq!(
        out[1].as_ref().unwrap_err(),
        "3::row has 3 fields but the header has 2"
    );
    assert_eq!(
        out[2].as_ref().unwrap_err(),
        "4:name:field is not valid UTF-8 (save the file as UTF-8)"
    );
    assert_eq!(out[3].as_ref().unwrap().1, "4");
}

#[test]
fn missing_key_column_and_empty_key() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("in.csv");
    std::fs::write(&p, "employee,name\n,a\n").unwrap();
    let e = CsvSource::open(&p, b',', &["employee_id".into()])
        .err()
        .unwrap();
    assert_eq!(e.column.as_deref(), Some("employee_id"));
    assert!(
        e.message.contains("did you mean 'employee'?"),
        "{}",
        e.message
    );
    let (_, out) = rows(b"id,name\n,a\n", "id");
    assert_eq!(out[0].as_ref().unwrap_err(), "2:id:key column is empty");
}
