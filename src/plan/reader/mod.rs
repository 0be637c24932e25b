//! The row pipeline. The CSV is cut into segments of about a quarter mebibyte that each
//! begin on a record boundary; worker threads parse and check whole segments (rows are
//! independent), and the caller merges their results in file order (what depends on
//! order: duplicate keys, totals, output). Parsing is the costliest part of reading, so it
//! runs on every core, not one.
//!
//! Where records begin is found by one light pass (the splitter) that follows only quotes
//! and newlines, exactly as the csv parser treats them: a newline starts a record unless
//! it is inside a quoted field. Its cost is a scan for two bytes, far below parsing.
//!
//! Each worker owns a pool of chunks (a segment's rows each) that the merge hands back, so
//! memory stays bounded by the chunks in flight, and the worker holding the earliest
//! unmerged segment can always go on (the chunks of the segments before it are all merged
//! and back in its pool), so the pipeline cannot stall for good.

use crate::input::{CsvSource, InputError, Row, Rows};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

#[cfg(test)]
mod tests;

/// Chunks each worker may have in flight: a worker can run this many segments ahead of
/// the merge (about 8,000 usual rows of ~90 bytes) before it waits.
const POOL: usize = 3;
const MAX_SEGMENT: u64 = 256 << 10;
const MIN_SEGMENT: u64 = 32 << 10;

/// One segment's rows in file order: each slot is a row read (fields, key, line, offset);
/// the rows that could not be read are in `bad`, each before the slot it preceded.
pub struct Chunk {
    owner: usize,
    pub rows: Rows,
    keys: String,
    key_ends: Vec<u32>,
    pub lines: Vec<u64>,
    /// Each row's byte offset (after any BOM), as `RecordReader` takes it.
    offsets: Vec<u64>,
    pub bad: Vec<(usize, InputError)>,
}

impl Chunk {
    fn new(owner: usize) -> Chunk {
        Chunk {
            owner,
            rows: Rows::default(),
            keys: String::new(),
            key_ends: Vec::new(),
            lines: Vec::new(),
            offsets: Vec::new(),
            bad: Vec::new(),
        }
    }

    /// Empties it for the next segment, keeping its buffers (`CsvSource::segment` empties
    /// the rows).
    fn clear(&mut self) {
        self.keys.clear();
        self.key_ends.clear();
        self.lines.clear();
        self.offsets.clear();
        self.bad.clear();
    }

    pub fn row(&self, slot: usize) -> Row<'_> {
        self.rows.row(slot)
    }

    /// The key of the row in `slot` (key columns joined by `/`).
    pub fn key(&self, slot: usize) -> &str {
        let start = slot.checked_sub(1).map_or(0, |s| self.key_ends[s] as usize);
        &self.keys[start..self.key_ends[slot] as usize]
    }

    /// The byte offset (after any BOM) of the row in `slot`, as `RecordReader` takes it.
    pub fn offset(&self, slot: usize) -> u64 {
        self.offsets[slot]
    }
}

/// A worker's chunks: made on the worker's thread as it first needs them (so their pages
/// are touched there, not all at once before the work starts), then handed back by the
/// merge. `None` when the merge has stopped.
struct Pool<R> {
    owner: usize,
    made: usize,
    free: Receiver<(Chunk, R)>,
}

impl<R: Default> Pool<R> {
    fn take(&mut self) -> Option<(Chunk, R)> {
        match self.free.try_recv() {
            Ok(slot) => Some(slot),
            Err(_) if self.made < POOL => {
                self.made += 1;
                Some((Chunk::new(self.owner), R::default()))
            }
            Err(_) => self.free.recv().ok(),
        }
    }
}

/// A byte range of the file that begins on a record boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Segment {
    index: usize,
    start: u64,
    end: u64,
    /// Newlines before `start`.
    lines_before: u64,
}

enum Done<R> {
    Chunk {
        segment: usize,
        chunk: Chunk,
        result: R,
    },
    /// An I/O error: nothing further can be read.
    Fatal(InputError),
}

/// Reads `src` to the end, runs `work` on each chunk on `workers` threads, and hands each
/// chunk with its result to `merge` on the calling thread, in file order. `merge` returning
/// `false` stops the pipeline early. A fatal read error (I/O) is returned.
///
/// Results are recycled with their chunks, so `work` gets one back as `merge` left it and
/// must clear what it reuses: buffers made on one thread and freed on another would
/// otherwise keep the allocator taking fresh pages.
pub fn pipeline<R: Default + Send>(
    src: CsvSource,
    (workers, max_record): (usize, u64),
    work: impl Fn(&Chunk, &mut R) + Sync,
    merge: impl FnMut(&Chunk, &mut R) -> bool,
) -> Result<(), InputError> {
    let size = std::fs::metadata(src.path()).map_or(0, |m| m.len());
    let segment = (size / 16).clamp(MIN_SEGMENT, MAX_SEGMENT);
    run(src, workers, (segment, max_record), work, merge)
}

fn run<R: Default + Send>(
    mut src: CsvSource,
    workers: usize,
    (segment_size, max_record): (u64, u64),
    work: impl Fn(&Chunk, &mut R) + Sync,
    mut merge: impl FnMut(&Chunk, &mut R) -> bool,
) -> Result<(), InputError> {
    let workers = workers.max(1);
    let (data_start, lines_before) = src.data_start();
    let (segment_tx, segment_rx) = sync_channel::<Segment>(4 * workers);
    let segment_rx = Arc::new(Mutex::new(segment_rx));
    let (done_tx, done_rx) = sync_channel::<Done<R>>(POOL * workers);
    let mut pools = Vec::with_capacity(workers);
    let mut free_txs = Vec::with_capacity(workers);
    for owner in 0..workers {
        let (tx, rx) = sync_channel::<(Chunk, R)>(POOL);
        free_txs.push(tx);
        pools.push(Pool {
            owner,
            made: 0,
            free: rx,
        });
    }
    let src = &src;
    let work = &work;
    // The scope's closure owns the channels' ends, so returning early drops them and so
    // stops the splitter and the workers before the scope waits for them.
    std::thread::scope(move |scope| {
        let splitter_done = done_tx.clone();
        scope.spawn(move || {
            let start = Segment {
                index: 0,
                start: data_start,
                end: data_start,
                lines_before,
            };
            let split = split(
                src.path(),
                src.delimiter(),
                start,
                (segment_size, max_record),
                &mut |s| segment_tx.send(s).is_ok(),
            );
            let failed = match split {
                Ok(()) => None,
                Err(SplitError::Io(e)) => Some(InputError {
                    path: src.path().to_path_buf(),
                    line: None,
                    column: None,
                    message: format!("cannot read CSV file: {e}"),
                }),
                Err(SplitError::TooLong { line, quote }) => Some(InputError {
                    path: src.path().to_path_buf(),
                    line: Some(line),
                    column: None,
                    message: match quote {
                        Some(q) => format!(
                            "the quote opened on line {q} is never closed: the record grows past {max_record} bytes (input.max_record_bytes)"
                        ),
                        None => format!(
                            "the record is longer than {max_record} bytes (input.max_record_bytes)"
                        ),
                    },
                }),
            };
            if let Some(e) = failed {
                let _ = splitter_done.send(Done::Fatal(e));
            }
        });
        for mut pool in pools {
            let (segments, done) = (segment_rx.clone(), done_tx.clone());
            scope.spawn(move || {
                let file = match File::open(src.path()) {
                    Ok(file) => file,
                    Err(e) => {
                        let _ = done.send(Done::Fatal(InputError {
                            path: src.path().to_path_buf(),
                            line: None,
                            column: None,
                            message: format!("cannot open CSV file: {e}"),
                        }));
                        return;
                    }
                };
                let mut key = String::new();
                loop {
                    let next = segments.lock().unwrap_or_else(|p| p.into_inner()).recv();
                    let Ok(segment) = next else { return };
                    match read_segment(src, &file, segment, &mut key, &mut pool, &done, work) {
                        Ok(true) => {}
                        Ok(false) => return,
                        Err(e) => {
                            let _ = done.send(Done::Fatal(e));
                            return;
                        }
                    }
                }
            });
        }
        drop(done_tx);
        // Workers finish out of order; hold chunks until their turn.
        let mut waiting = BTreeMap::new();
        let mut next = 0;
        for done in done_rx.iter() {
            let (segment, chunk, result) = match done {
                Done::Fatal(e) => return Err(e),
                Done::Chunk {
                    segment,
                    chunk,
                    result,
                } => (segment, chunk, result),
            };
            waiting.insert(segment, (chunk, result));
            while let Some((chunk, mut result)) = waiting.remove(&next) {
                next += 1;
                if !merge(&chunk, &mut result) {
                    // Returning drops the channels, which stops the splitter and workers.
                    return Ok(());
                }
                // The worker may have finished and dropped its pool: then recycling is moot.
                let _ = free_txs[chunk.owner].send((chunk, result));
            }
        }
        debug_assert!(waiting.is_empty(), "a chunk was never merged");
        Ok(())
    })
}

/// Parses one segment into a chunk from `pool`, checks it with `work` and sends it on.
/// Returns `false` when the merge has stopped.
fn read_segment<R: Default>(
    src: &CsvSource,
    file: &File,
    segment: Segment,
    key: &mut String,
    pool: &mut Pool<R>,
    done: &SyncSender<Done<R>>,
    work: &(impl Fn(&Chunk, &mut R) + Sync),
) -> Result<bool, InputError> {
    let Some((mut chunk, mut result)) = pool.take() else {
        return Ok(false);
    };
    chunk.clear();
    let (start, end) = (segment.start, segment.end);
    let mut rows = src.segment(file, start, end, segment.lines_before, &mut chunk.rows)?;
    loop {
        let slot = chunk.lines.len();
        match rows.next_row(&mut chunk.rows, key) {
            Ok(None) => break,
            Ok(Some((line, offset))) => {
                chunk.lines.push(line);
                chunk.offsets.push(offset);
                chunk.keys.push_str(key);
                chunk.key_ends.push(chunk.keys.len() as u32);
            }
            Err(e) if e.line.is_none() => return Err(e),
            Err(e) => chunk.bad.push((slot, e)),
        }
    }
    work(&chunk, &mut result);
    let sent = done.send(Done::Chunk {
        segment: segment.index,
        chunk,
        result,
    });
    Ok(sent.is_ok())
}

/// Why the splitter stopped.
#[derive(Debug)]
enum SplitError {
    Io(std::io::Error),
    /// A record grew past the limit: it began on `line`, and is in the quoted field a quote
    /// on line `quote` opened, if so.
    TooLong {
        line: u64,
        quote: Option<u64>,
    },
}

impl From<std::io::Error> for SplitError {
    fn from(e: std::io::Error) -> Self {
        SplitError::Io(e)
    }
}

/// Cuts the file from `first.start` to its end into segments of about `size` bytes that
/// begin on record boundaries, and hands each to `emit` (which returns `false` to stop).
/// A record longer than `max_record` bytes stops it: no segment ever holds one, so memory
/// stays bounded whatever the file holds (an unterminated quote, a line without end).
///
/// It follows the csv parser's rules for quotes (`"`, doubled inside a quoted field):
/// a quote opens a quoted field only at the start of a field; inside one, a quote followed
/// by another is a literal quote and any other quote closes it. A newline outside quoted
/// fields ends a record, so the byte after it may start a segment.
fn split(
    path: &Path,
    delimiter: u8,
    first: Segment,
    (size, max_record): (u64, u64),
    emit: &mut dyn FnMut(Segment) -> bool,
) -> Result<(), SplitError> {
    const QUOTE: u8 = b'"';
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(first.start))?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut current = first;
    let mut lines = first.lines_before;
    let mut target = first.start.saturating_add(size);
    let mut pos = first.start;
    let (mut in_quotes, mut quote_pending, mut prev) = (false, false, b'\n');
    // Where the record being read began (offset, line), and the line of the quote that
    // opened the quoted field it is in, if it is in one.
    let (mut record_start, mut record_line) = (first.start, lines + 1);
    let mut quote_line = 0;
    // Ends the current segment at file offset `end` (just after a newline).
    let mut cut = |current: &mut Segment, end: u64, lines: u64| {
        let done = Segment { end, ..*current };
        *current = Segment {
            index: current.index + 1,
            start: end,
            end,
            lines_before: lines,
        };
        emit(done)
    };
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        let b = &buf[..n];
        let mut i = 0;
        if quote_pending {
            // The block before ended on a quote inside a quoted field.
            quote_pending = false;
            if b[0] == QUOTE {
                i = 1;
            } else {
                in_quotes = false;
            }
        }
        if !in_quotes && memchr::memchr(QUOTE, &b[i..]).is_none() {
            // No quotes: every newline ends a record.
            while target < pos + n as u64 {
                let from = (target.max(pos + i as u64) - pos) as usize;
                let Some(k) = memchr::memchr(b'\n', &b[from..]) else {
                    break;
                };
                let nl = from + k;
                lines += count_newlines(&b[i..=nl]);
                i = nl + 1;
                let end = pos + i as u64;
                if !cut(&mut current, end, lines) {
                    return Ok(());
                }
                target = end.saturating_add(size);
            }
            lines += count_newlines(&b[i..]);
            if let Some(k) = memchr::memrchr(b'\n', &b[i..]) {
                (record_start, record_line) = (pos + (i + k + 1) as u64, lines + 1);
            }
        } else {
            let mut j = i;
            while let Some(k) = memchr::memchr2(QUOTE, b'\n', &b[j..]) {
                let p = j + k;
                j = p + 1;
                if b[p] == b'\n' {
                    lines += 1;
                    let end = pos + j as u64;
                    if !in_quotes {
                        (record_start, record_line) = (end, lines + 1);
                    }
                    if !in_quotes && end >= target {
                        if !cut(&mut current, end, lines) {
                            return Ok(());
                        }
                        target = end.saturating_add(size);
                    }
                } else if in_quotes {
                    match b.get(p + 1) {
                        None => quote_pending = true,
                        Some(&QUOTE) => j = p + 2,
                        Some(_) => in_quotes = false,
                    }
                } else {
                    let before = if p > 0 { b[p - 1] } else { prev };
                    in_quotes = before == delimiter || before == b'\n' || before == b'\r';
                    quote_line = lines + 1;
                }
            }
        }
        prev = b[n - 1];
        pos += n as u64;
        if pos - record_start > max_record {
            return Err(SplitError::TooLong {
                line: record_line,
                quote: in_quotes.then_some(quote_line),
            });
        }
    }
    let last = Segment {
        end: pos,
        ..current
    };
    emit(last);
    Ok(())
}

fn count_newlines(b: &[u8]) -> u64 {
    memchr::memchr_iter(b'\n', b).count() as u64
}
