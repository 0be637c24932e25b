use super::*;
use csv::StringRecord;

/// Every row as line and fields, or an error line, read by the pipeline. Each row's
/// offset must read the same row back (after a CRLF, one reader of the whole file
/// places a record on the '\n' before it and a segment's reader after it: both work).
fn read_all(content: &[u8], segment: u64, workers: usize) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("in.csv");
    std::fs::write(&p, content).unwrap();
    let src = CsvSource::open(&p, b',', &["id".to_string()]).unwrap();
    let mut again = crate::input::RecordReader::open(&p, b',').unwrap();
    let mut out = Vec::new();
    run(
        src,
        workers,
        (segment, u64::MAX),
        |_, _: &mut ()| (),
        |chunk, _| {
            let mut bad = chunk.bad.iter().peekable();
            for (slot, &line) in chunk.lines.iter().enumerate() {
                while let Some((_, e)) = bad.next_if(|(s, _)| *s == slot) {
                    out.push(format!("{}: {}", e.line.unwrap_or(0), e.message));
                }
                let fields: Vec<_> = chunk.row(slot).iter().collect();
                let back = again.read_at(chunk.offset(slot), line).unwrap();
                assert_eq!(back.iter().collect::<Vec<_>>(), fields);
                out.push(format!("{line} {} {fields:?}", chunk.key(slot)));
            }
            for (_, e) in bad {
                out.push(format!("{}: {}", e.line.unwrap_or(0), e.message));
            }
            true
        },
    )
    .unwrap();
    out
}

/// What one csv parser of the whole file reports, in the same form.
fn sequential(content: &[u8]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("in.csv");
    std::fs::write(&p, content).unwrap();
    let mut src = CsvSource::open(&p, b',', &["id".to_string()]).unwrap();
    let (mut record, mut key) = (StringRecord::new(), String::new());
    let mut out = Vec::new();
    loop {
        match src.next_row(&mut record, &mut key) {
            Ok(None) => break,
            Ok(Some(line)) => {
                let fields: Vec<_> = record.iter().collect();
                out.push(format!("{line} {key} {fields:?}"));
            }
            Err(e) => out.push(format!("{}: {}", e.line.unwrap_or(0), e.message)),
        }
    }
    out
}

/// A file with a BOM, the header `id,name,note` and a CRLF, then `rows(i, x)` for each
/// row `i` and a pseudo-random `x` (xorshift from `seed`), then a last row with no line
/// end.
fn generated(seed: u64, rows: u64, row: impl Fn(u64, u64) -> Vec<u8>) -> Vec<u8> {
    let mut content = b"\xEF\xBB\xBFid,name,note\r\n".to_vec();
    let mut x = seed;
    for i in 0..rows {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        content.extend_from_slice(&row(i, x));
    }
    content.extend_from_slice(b"last,no,newline");
    content
}

/// Reads `content` in segments of every size in `sizes`, with 1 to 3 workers, and
/// checks each reading against one csv parser's.
fn assert_read_as_one_parser_does(content: &[u8], sizes: &[u64], rows: usize) {
    let whole = sequential(content);
    assert_eq!(whole.len(), rows);
    for &segment in sizes {
        for workers in [1, 2, 3] {
            let got = read_all(content, segment, workers);
            let first_difference = got.iter().zip(&whole).position(|(a, b)| a != b);
            assert_eq!(
                (got.len(), first_difference.map(|i| (&got[i], &whole[i]))),
                (whole.len(), None),
                "segment {segment}, {workers} workers"
            );
        }
    }
}

#[test]
fn segments_without_quotes_read_exactly_as_the_csv_parser_does() {
    // Read without the csv parser: LF, CRLF and lone CR line ends, blank lines, empty
    // fields, a trailing delimiter, multi-byte UTF-8 (also astride the eight-byte
    // words the line splitter tests), ragged rows, an empty key, long fields and a last
    // line with no line end.
    let content = generated(0x2545_F491_4F6C_DD1D, 800, |i, x| {
        match x % 11 {
            0 => format!("{i},Zoë Ångström,naïve café\r\n"),
            1 => format!("{i},,\n"),
            2 => format!("{i},a,b\r"),
            3 => format!("\n\r\n{i},x,y\n\n"),
            4 => format!("{i},ragged\n"),
            5 => format!("{i},x,y,\n"),
            6 => ",no key,x\n".to_string(),
            7 => format!("{i},{},{}\r\n", "long".repeat(40), "字".repeat(9)),
            8 => format!("{i},  spaced  , x \n"),
            _ => format!("{i},plain,row\n"),
        }
        .into_bytes()
    });
    assert_read_as_one_parser_does(&content, &[1, 5, 64, 1000, 1 << 20], 801);
    // Bad UTF-8 in a segment: that segment goes to the csv parser.
    let mut bad = b"id,name\n1,a\n2,\xff\xfe\n3,c\n".to_vec();
    bad.extend_from_slice(b"4,d\r\n5,e\r\n");
    assert_read_as_one_parser_does(&bad, &[1, 8, 1000], 5);
}

#[test]
fn segments_read_exactly_as_one_reader_does() {
    // Quotes that open fields, doubled quotes, quoted newlines and delimiters, a quote
    // inside an unquoted field, junk after a closing quote, CRLF, blank lines, a
    // ragged row and bad UTF-8.
    let content = generated(0x9E37_79B9_7F4A_7C15, 600, |i, x| {
        let row = match x % 9 {
            0 => format!("{i},\"Doe, Jane\",\"say \"\"hi\"\"\"\r\n"),
            1 => format!("{i},\"multi\nline\",x\n"),
            2 => format!("{i},5\" screen,\"\"\n"),
            3 => format!("{i},\"a\"b,c\n"),
            4 => format!("{i},\"\r\n\",\"\"\"\"\r\n\r\n"),
            5 => format!("{i},ragged\n"),
            6 => format!("{i},x,\"quoted\nnewline, and \"\"quote\"\"\"\n"),
            _ => format!("{i},plain,row\r\n"),
        };
        let mut row = row.into_bytes();
        if i == 300 {
            row.extend_from_slice(b"bad,\xff\xfe,x\n");
        }
        row
    });
    assert_read_as_one_parser_does(&content, &[1, 2, 3, 7, 64, 1000], 602);
}

#[test]
fn splits_fall_on_record_starts_only() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("in.csv");
    std::fs::write(&p, "a,\"x\ny\"\nb,\"\"\"\n\"\nc,d\n").unwrap();
    let mut cuts = Vec::new();
    let first = Segment {
        index: 0,
        start: 0,
        end: 0,
        lines_before: 0,
    };
    split(&p, b',', first, (1, u64::MAX), &mut |s| {
        cuts.push((s.start, s.end, s.lines_before));
        true
    })
    .unwrap();
    // Records start at 0, 8 and 16; the newlines inside quotes are passed over.
    assert_eq!(cuts, [(0, 8, 0), (8, 16, 2), (16, 20, 4), (20, 20, 5)]);
}

#[test]
fn an_empty_input_is_one_empty_segment() {
    assert!(read_all(b"id,name\n", 1, 2).is_empty());
    assert!(read_all(b"id,name", 1, 2).is_empty());
}
