//! The records of a segment of the file: through the csv crate where a field is quoted, split by hand where none is (the common case, and the fast one).

use super::*;

/// The largest segment read whole into memory (`plan::reader` cuts them at half a mebibyte
/// plus one record).
pub(super) const MAX_PLAIN_SEGMENT: usize = 4 << 20;

/// The rows of one segment of the file.
pub enum SegmentRows<'s> {
    /// No quote anywhere and valid UTF-8: split at line ends and delimiters.
    Plain(PlainRows<'s>),
    /// Read by the csv parser.
    Csv(Box<CsvRows>),
}

impl SegmentRows<'_> {
    /// As `CsvSource::next_row`, but the row goes to the end of `rows` (the ones `segment`
    /// was given) and its offset (counted after any BOM) comes back with its line. A bad
    /// row adds nothing to `rows`.
    pub fn next_row(
        &mut self,
        rows: &mut Rows,
        key: &mut String,
    ) -> Result<Option<(u64, u64)>, InputError> {
        match self {
            SegmentRows::Plain(plain) => plain.next_row(rows, key),
            SegmentRows::Csv(csv) => csv.next_row(rows, key),
        }
    }
}

/// A segment read by the csv parser; each record's fields are copied into the rows.
pub struct CsvRows {
    pub(super) src: CsvSource,
    pub(super) record: StringRecord,
}

impl CsvRows {
    fn next_row(
        &mut self,
        rows: &mut Rows,
        key: &mut String,
    ) -> Result<Option<(u64, u64)>, InputError> {
        let Some(line) = self.src.next_row(&mut self.record, key)? else {
            return Ok(None);
        };
        let size = self.record.as_slice().len();
        if rows.text.len().saturating_add(size) > u32::MAX as usize {
            return Err(InputError {
                path: self.src.path.clone(),
                line: Some(line),
                column: None,
                message: format!("row is too large to read ({size} bytes)"),
            });
        }
        rows.push_record(&self.record);
        let offset = self.src.origin + self.record.position().map_or(0, csv::Position::byte);
        Ok(Some((line, offset)))
    }
}

/// A segment with no quote, valid UTF-8, read as the csv parser would read it: a record
/// ends at `\n`, `\r` or `\r\n`, blank lines are skipped, and with no quote a field is
/// exactly the text between delimiters. The segment is the rows' text.
pub struct PlainRows<'s> {
    pub(super) src: &'s CsvSource,
    /// The next byte to read.
    pub(super) at: usize,
    /// Newlines before `at`, in the whole file.
    pub(super) lines: u64,
    pub(super) origin: u64,
    /// The segment holds a CR: line ends are looked for as CR too, not only LF.
    pub(super) cr: bool,
}

impl PlainRows<'_> {
    fn next_row(
        &mut self,
        rows: &mut Rows,
        key: &mut String,
    ) -> Result<Option<(u64, u64)>, InputError> {
        let Rows {
            text,
            bounds,
            firsts,
        } = rows;
        let b = text.as_bytes();
        // Line ends left by the last record, and blank lines.
        loop {
            match b.get(self.at) {
                None => return Ok(None),
                Some(b'\n') => self.lines += 1,
                Some(b'\r') => {}
                Some(_) => break,
            }
            self.at += 1;
        }
        let start = self.at;
        let first = bounds.len();
        // Every cut is at an ASCII byte, so each piece is whole UTF-8. A plain segment is
        // at most `MAX_PLAIN_SEGMENT` long, so its offsets fit in `u32`.
        let mut from = start as u32;
        let field_end = |i: usize| {
            bounds.push((from, i as u32));
            from = i as u32 + 1;
        };
        let delimiter = self.src.delimiter;
        let end = if self.cr {
            split_line::<true>(b, start, delimiter, field_end)
        } else {
            split_line::<false>(b, start, delimiter, field_end)
        };
        bounds.push((from, end as u32));
        self.at = end;
        let line = self.lines + 1;
        let row = Row {
            text,
            bounds: &bounds[first..],
        };
        match self.src.check_row(&row, key, line) {
            Ok(line) => {
                firsts.push(first as u32);
                Ok(Some((line, self.origin + start as u64)))
            }
            Err(e) => {
                bounds.truncate(first);
                Err(e)
            }
        }
    }
}

/// What a row check needs of a row's fields.
pub(super) trait Fields {
    fn count(&self) -> usize;
    fn field(&self, i: usize) -> Option<&str>;
}

impl Fields for StringRecord {
    fn count(&self) -> usize {
        self.len()
    }

    fn field(&self, i: usize) -> Option<&str> {
        self.get(i)
    }
}

impl Fields for Row<'_> {
    fn count(&self) -> usize {
        self.len()
    }

    fn field(&self, i: usize) -> Option<&str> {
        self.get(i)
    }
}

/// Finds the end of the line that starts at `start` (its `\n` or `\r`, or the end of `b`)
/// and calls `field_end` with each delimiter's offset before it. Eight bytes are tested at
/// a time: on short fields, a scan per field costs more in calls than in bytes. With `CR`
/// false, the caller knows `b` holds no `\r`, and the words are not tested for one.
pub(super) fn split_line<const CR: bool>(
    b: &[u8],
    start: usize,
    delimiter: u8,
    mut field_end: impl FnMut(usize),
) -> usize {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const LOW7: u64 = u64::from_ne_bytes([0x7f; 8]);
    // The top bit of each byte of `v` that is zero, and no other bit.
    let zero = |v: u64| !(((v & LOW7) + LOW7) | v | LOW7);
    let (delim, lf, cr) = (ONES * u64::from(delimiter), ONES * 0x0a, ONES * 0x0d);
    let mut at = start;
    while let Some(word) = b.get(at..at + 8) {
        let w = u64::from_le_bytes(word.try_into().expect("eight bytes"));
        let ends = if CR {
            zero(w ^ lf) | zero(w ^ cr)
        } else {
            zero(w ^ lf)
        };
        let mut delims = zero(w ^ delim);
        if ends != 0 {
            let end = at + (ends.trailing_zeros() / 8) as usize;
            // Only the delimiters before the line end.
            delims &= (ends & ends.wrapping_neg()) - 1;
            while delims != 0 {
                field_end(at + (delims.trailing_zeros() / 8) as usize);
                delims &= delims - 1;
            }
            return end;
        }
        while delims != 0 {
            field_end(at + (delims.trailing_zeros() / 8) as usize);
            delims &= delims - 1;
        }
        at += 8;
    }
    for (i, &c) in b.iter().enumerate().skip(at) {
        if c == b'\n' || c == b'\r' {
            return i;
        }
        if c == delimiter {
            field_end(i);
        }
    }
    b.len()
}
