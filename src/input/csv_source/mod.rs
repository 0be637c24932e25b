//! A streaming CSV reader: UTF-8 with or without BOM, LF or CRLF, quoted fields.

use super::{Header, InputError, Row, Rows};
use csv::StringRecord;
use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Take};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

mod rows;
#[cfg(test)]
mod tests;

pub use rows::SegmentRows;
use rows::*;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Reads the rows of one CSV file in order.
pub struct CsvSource {
    path: PathBuf,
    reader: csv::Reader<Counting<BufReader<Take<File>>>>,
    header: Arc<Header>,
    key_indexes: Vec<usize>,
    delimiter: u8,
    /// Length of the BOM at the start of the file, if any.
    bom: u64,
    /// Where this reader's first byte is in the file, counted after the BOM.
    origin: u64,
}

/// Line numbers by byte offset. The csv crate's own line count is wrong for CRLF files,
/// so newlines are counted as the bytes stream past; only the offsets still ahead of the
/// current record are kept, so memory stays bounded by the read buffers.
#[derive(Default)]
struct Lines {
    /// Newlines before the first offset in `ahead`.
    passed: u64,
    /// Each newline's offset, and where its line starts when that line is blank (empty or
    /// a lone CR), else `u64::MAX`.
    ahead: VecDeque<(u64, u64)>,
    read: u64,
    /// Where the line being read starts, and the last byte read.
    line_start: u64,
    last: u8,
}

impl Lines {
    /// The 1-based line of a record that csv says starts at byte `offset`; offsets must not
    /// decrease between calls. csv reports where its search for the record began: after a
    /// CRLF that is the `\n`, and it includes any blank lines it skipped, so newlines at
    /// `offset` and blank lines right after it are behind the record.
    fn line_of(&mut self, offset: u64) -> u64 {
        let mut at = offset;
        while let Some(&(nl, blank_from)) = self.ahead.front() {
            if nl > at && blank_from > at + 1 {
                break;
            }
            at = at.max(nl);
            self.ahead.pop_front();
            self.passed += 1;
        }
        self.passed + 1
    }

    /// Newlines strictly before `offset`.
    fn before(&self, offset: u64) -> u64 {
        self.passed + self.ahead.iter().filter(|&&(nl, _)| nl < offset).count() as u64
    }

    fn scan(&mut self, buf: &[u8]) {
        let base = self.read;
        for i in memchr::memchr_iter(b'\n', buf) {
            let nl = base + i as u64;
            let before = if i > 0 { buf[i - 1] } else { self.last };
            let blank = nl == self.line_start || (nl == self.line_start + 1 && before == b'\r');
            self.ahead
                .push_back((nl, if blank { self.line_start } else { u64::MAX }));
            self.line_start = nl + 1;
        }
        if let Some(&b) = buf.last() {
            self.last = b;
        }
        self.read += buf.len() as u64;
    }
}

struct Counting<R> {
    inner: R,
    lines: Lines,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.lines.scan(&buf[..n]);
        Ok(n)
    }
}

impl CsvSource {
    /// Opens `path`, reads the header and checks that the key columns exist.
    pub fn open(
        path: &Path,
        delimiter: u8,
        key_columns: &[String],
    ) -> Result<CsvSource, InputError> {
        let err = |line, message: String| InputError {
            path: path.to_path_buf(),
            line,
            column: None,
            message,
        };
        let file = File::open(path).map_err(|e| err(None, format!("cannot open CSV file: {e}")))?;
        let mut buf = BufReader::with_capacity(256 * 1024, file.take(u64::MAX));
        let bom = if buf
            .fill_buf()
            .map_err(|e| err(None, format!("cannot read CSV file: {e}")))?
            .starts_with(BOM)
        {
            buf.consume(BOM.len());
            BOM.len() as u64
        } else {
            0
        };
        let mut reader = reader(delimiter, true, buf, Lines::default());
        let names: Vec<String> = match reader.headers() {
            Ok(h) => h.iter().map(str::to_string).collect(),
            Err(e) => return Err(err(Some(1), header_error(&e))),
        };
        if names.is_empty() || (names.len() == 1 && names[0].is_empty()) {
            return Err(err(
                Some(1),
                "CSV file is empty: it has no header line".into(),
            ));
        }
        let header = Header::new(names);
        let mut seen = std::collections::HashSet::new();
        for name in header.names() {
            if name.is_empty() {
                return Err(err(Some(1), "header has an empty column name".into()));
            }
            if !seen.insert(name.as_str()) {
                return Err(InputError {
                    column: Some(name.clone()),
                    ..err(Some(1), "header names this column twice".into())
                });
            }
        }
        // One column holding another separator is a file in another dialect.
        if let [only] = header.names()
            && let Some(sep) = [';', '\t', '|', ',']
                .into_iter()
                .find(|c| only.contains(*c) && *c as u8 != delimiter)
        {
            let shown = if sep == '\t' {
                "tab".to_string()
            } else {
                format!("\"{sep}\"")
            };
            return Err(err(
                Some(1),
                format!(
                    "the header is a single column, '{only}': the file seems to be separated by {shown}; set input.delimiter: {shown}"
                ),
            ));
        }
        let mut key_indexes = Vec::with_capacity(key_columns.len());
        for k in key_columns {
            match header.index(k) {
                Some(i) => key_indexes.push(i),
                None => {
                    let hint = crate::job::diag::did_you_mean(
                        k,
                        header.names().iter().map(String::as_str),
                    );
                    return Err(InputError {
                        column: Some(k.clone()),
                        ..err(
                            Some(1),
                            format!(
                                "key column is missing from the header{}",
                                hint.map(|h| format!("; {h}")).unwrap_or_default()
                            ),
                        )
                    });
                }
            }
        }
        Ok(CsvSource {
            path: path.to_path_buf(),
            reader,
            header: Arc::new(header),
            key_indexes,
            delimiter,
            bom,
            origin: 0,
        })
    }

    /// Where the rows begin, once the header has been read: the file offset of the byte
    /// after the header and the number of newlines before it.
    pub fn data_start(&mut self) -> (u64, u64) {
        let at = self.reader.position().byte();
        (self.bom + at, self.reader.get_ref().lines.before(at))
    }

    /// A reader of the rows in the file bytes `start..end`, which must begin on a record
    /// boundary (see `plan::reader`); `lines_before` newlines precede `start`. It reports
    /// lines and offsets as a reader of the whole file would, and puts the rows it reads in
    /// `rows`. `file` is this source's file, opened once by the caller.
    ///
    /// Most segments hold no quote and are valid UTF-8: then the segment, read whole, is
    /// the rows' text, a record is a line and a field is what lies between delimiters,
    /// which a scan for those bytes finds far faster than the csv parser's byte-by-byte
    /// automaton. Any other segment is read by the csv parser, its fields copied.
    pub fn segment(
        &self,
        file: &File,
        start: u64,
        end: u64,
        lines_before: u64,
        rows: &mut Rows,
    ) -> Result<SegmentRows<'_>, InputError> {
        let err = |e: std::io::Error| InputError {
            path: self.path.clone(),
            line: None,
            column: None,
            message: format!("cannot read CSV file: {e}"),
        };
        let mut bytes = std::mem::take(&mut rows.text).into_bytes();
        rows.clear();
        let len = usize::try_from(end.saturating_sub(start)).unwrap_or(usize::MAX);
        // A delimiter that is a quote, a line end or not ASCII is left to the csv parser.
        let plain_delimiter =
            self.delimiter.is_ascii() && !matches!(self.delimiter, b'"' | b'\n' | b'\r');
        if len <= MAX_PLAIN_SEGMENT && plain_delimiter {
            // Only what the last segment did not reach is zeroed before it is read over.
            bytes.resize(len, 0);
            file.read_exact_at(&mut bytes, start).map_err(err)?;
            // One scan finds the first quote or CR; a CR means a look for quotes after it.
            let (quote, cr) = match memchr::memchr2(b'"', b'\r', &bytes) {
                None => (false, false),
                Some(i) if bytes[i] == b'"' => (true, true),
                Some(i) => (memchr::memchr(b'"', &bytes[i..]).is_some(), true),
            };
            if !quote {
                match String::from_utf8(bytes) {
                    Ok(text) => {
                        rows.text = text;
                        return Ok(SegmentRows::Plain(PlainRows {
                            src: self,
                            at: 0,
                            lines: lines_before,
                            origin: start.saturating_sub(self.bom),
                            cr,
                        }));
                    }
                    Err(e) => bytes = e.into_bytes(),
                }
            }
        }
        // Keep the buffer for the next segment.
        bytes.clear();
        rows.text = String::from_utf8(bytes).unwrap_or_default();
        self.csv_segment(start, end, lines_before)
            .map(|src| {
                SegmentRows::Csv(Box::new(CsvRows {
                    src,
                    record: StringRecord::new(),
                }))
            })
            .map_err(err)
    }

    fn csv_segment(
        &self,
        start: u64,
        end: u64,
        lines_before: u64,
    ) -> Result<CsvSource, std::io::Error> {
        let mut file = File::open(&self.path)?;
        file.seek(SeekFrom::Start(start))?;
        // No buffer of its own: csv's buffer is large, and reads go straight into it.
        let buf = BufReader::with_capacity(0, file.take(end.saturating_sub(start)));
        let lines = Lines {
            passed: lines_before,
            ..Lines::default()
        };
        Ok(CsvSource {
            path: self.path.clone(),
            reader: reader(self.delimiter, false, buf, lines),
            header: self.header.clone(),
            key_indexes: self.key_indexes.clone(),
            delimiter: self.delimiter,
            bom: self.bom,
            origin: start.saturating_sub(self.bom),
        })
    }

    pub fn delimiter(&self) -> u8 {
        self.delimiter
    }

    pub fn header(&self) -> &Arc<Header> {
        &self.header
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the next row into `record` and its key (key columns joined by `/`) into `key`;
    /// returns the row's 1-based line, or `Ok(None)` at the end of the file. A bad row is an
    /// error, after which reading may go on with the next row.
    pub fn next_row(
        &mut self,
        record: &mut StringRecord,
        key: &mut String,
    ) -> Result<Option<u64>, InputError> {
        match self.reader.read_record(record) {
            Ok(false) => Ok(None),
            Ok(true) => {
                let line = self.line_of(record.position());
                self.check_row(&*record, key, line).map(Some)
            }
            Err(e) => Err(self.row_error(&e)),
        }
    }

    /// Checks a row read at `line` against the header and puts its key in `key`. Readers
    /// are flexible (a segment has no header to count against), so the field count is
    /// checked here.
    fn check_row(
        &self,
        record: &impl Fields,
        key: &mut String,
        line: u64,
    ) -> Result<u64, InputError> {
        let expected = self.header.names().len();
        if record.count() != expected {
            return Err(InputError {
                path: self.path.clone(),
                line: Some(line),
                column: None,
                message: format!(
                    "row has {} fields but the header has {expected}",
                    record.count()
                ),
            });
        }
        key.clear();
        for (n, &i) in self.key_indexes.iter().enumerate() {
            let part = record.field(i).unwrap_or("");
            if part.trim().is_empty() {
                return Err(InputError {
                    path: self.path.clone(),
                    line: Some(line),
                    column: self.header.name(i).map(str::to_string),
                    message: "key column is empty".into(),
                });
            }
            if n > 0 {
                key.push('/');
            }
            key.push_str(part);
        }
        Ok(line)
    }

    fn line_of(&mut self, pos: Option<&csv::Position>) -> u64 {
        let offset = pos.map_or(0, csv::Position::byte);
        self.reader.get_mut().lines.line_of(offset)
    }

    fn row_error(&mut self, e: &csv::Error) -> InputError {
        let (line, column, message) = match e.kind() {
            csv::ErrorKind::Utf8 { pos, err } => (
                Some(self.line_of(pos.as_ref())),
                self.header.name(err.field()).map(str::to_string),
                "field is not valid UTF-8 (save the file as UTF-8)".to_string(),
            ),
            csv::ErrorKind::Io(io) => (None, None, format!("cannot read CSV file: {io}")),
            _ => (Some(self.line_of(e.position())), None, e.to_string()),
        };
        InputError {
            path: self.path.clone(),
            line,
            column,
            message,
        }
    }
}

/// A flexible reader: the field count is checked per row against the header.
fn reader<R: Read>(
    delimiter: u8,
    headers: bool,
    inner: R,
    lines: Lines,
) -> csv::Reader<Counting<R>> {
    csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .buffer_capacity(64 * 1024)
        .has_headers(headers)
        .flexible(true)
        .from_reader(Counting { inner, lines })
}

fn header_error(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::Utf8 { .. } => "header is not valid UTF-8 (save the file as UTF-8)".into(),
        _ => format!("cannot read the header: {e}"),
    }
}

/// Reads single records back by the byte offset `plan` stored, so the executor needs no
/// copy of the file in memory. One csv reader is kept and moved (building one per record
/// would cost more than the read).
pub struct RecordReader {
    path: PathBuf,
    reader: csv::Reader<File>,
    bom: u64,
}

impl RecordReader {
    pub fn open(path: &Path, delimiter: u8) -> Result<RecordReader, InputError> {
        let err = |message: String| InputError {
            path: path.to_path_buf(),
            line: None,
            column: None,
            message,
        };
        let mut file = File::open(path).map_err(|e| err(format!("cannot open CSV file: {e}")))?;
        let mut head = [0u8; 3];
        let n = file
            .read(&mut head)
            .map_err(|e| err(format!("cannot read CSV file: {e}")))?;
        let bom = if head[..n] == *BOM {
            BOM.len() as u64
        } else {
            0
        };
        let reader = csv::ReaderBuilder::new()
            .delimiter(delimiter)
            .has_headers(false)
            .flexible(true)
            .from_reader(file);
        Ok(RecordReader {
            path: path.to_path_buf(),
            reader,
            bom,
        })
    }

    /// The record that starts at `offset` (as csv reported it when planning). After a CRLF
    /// that offset is the '\n' before the record, which csv skips as an empty line.
    pub fn read_at(&mut self, offset: u64, line: u64) -> Result<StringRecord, InputError> {
        let err = |message: String| InputError {
            path: self.path.clone(),
            line: Some(line),
            column: None,
            message,
        };
        let mut pos = csv::Position::new();
        pos.set_byte(self.bom + offset);
        self.reader
            .seek(pos)
            .map_err(|e| err(format!("cannot read CSV file: {e}")))?;
        let mut record = StringRecord::new();
        match self.reader.read_record(&mut record) {
            Ok(true) => Ok(record),
            Ok(false) => Err(err(
                "the row is no longer in the file (it changed since it was planned)".into(),
            )),
            Err(e) => Err(err(format!("cannot read the row again: {e}"))),
        }
    }
}
