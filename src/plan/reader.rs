//! Reading rows on a second thread: CSV parsing is sequential, so it runs beside the
//! checker rather than before it. Rows travel in recycled chunks, so the steady state
//! allocates nothing and memory stays bounded (a few chunks in flight).

use crate::input::{CsvSource, InputError};
use csv::StringRecord;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

const CHUNK_ROWS: usize = 1024;
const CHUNKS_IN_FLIGHT: usize = 4;

/// A run of rows in file order: each slot is a row (record, key, line) or a row error.
pub struct Chunk {
    pub records: Vec<StringRecord>,
    pub keys: Vec<String>,
    pub lines: Vec<Result<u64, InputError>>,
}

impl Chunk {
    fn new() -> Chunk {
        Chunk {
            records: vec![StringRecord::new(); CHUNK_ROWS],
            keys: vec![String::new(); CHUNK_ROWS],
            lines: Vec::with_capacity(CHUNK_ROWS),
        }
    }
}

/// Reads `src` to the end on a scoped thread and hands chunks to `each`, in order. A
/// fatal read error (I/O) ends the stream and is returned.
pub fn for_each_chunk<E>(
    src: CsvSource,
    mut each: impl FnMut(&Chunk) -> Result<(), E>,
) -> Result<Result<(), E>, InputError> {
    let (full_tx, full_rx) = sync_channel::<Chunk>(CHUNKS_IN_FLIGHT);
    let (free_tx, free_rx) = sync_channel::<Chunk>(CHUNKS_IN_FLIGHT);
    for _ in 0..CHUNKS_IN_FLIGHT {
        free_tx.send(Chunk::new()).expect("channel has room");
    }
    std::thread::scope(|scope| {
        let reader = scope.spawn(move || produce(src, &full_tx, &free_rx));
        let mut outcome = Ok(());
        for chunk in full_rx.iter() {
            outcome = each(&chunk);
            if outcome.is_err() {
                break;
            }
            // The reader may have finished and dropped its end: then recycling is moot.
            let _ = free_tx.send(chunk);
        }
        // Closing both channels stops a reader that is still going (after an error).
        drop(full_rx);
        drop(free_tx);
        match reader.join() {
            Ok(Ok(())) => Ok(outcome),
            Ok(Err(fatal)) => Err(fatal),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

fn produce(
    mut src: CsvSource,
    full: &SyncSender<Chunk>,
    free: &Receiver<Chunk>,
) -> Result<(), InputError> {
    loop {
        let Ok(mut chunk) = free.recv() else {
            return Ok(());
        };
        chunk.lines.clear();
        let mut at_end = false;
        while chunk.lines.len() < CHUNK_ROWS {
            let i = chunk.lines.len();
            let (records, keys) = (&mut chunk.records, &mut chunk.keys);
            match src.next_row(&mut records[i], &mut keys[i]) {
                Ok(None) => {
                    at_end = true;
                    break;
                }
                Ok(Some(line)) => chunk.lines.push(Ok(line)),
                // An I/O error: nothing further can be read.
                Err(e) if e.line.is_none() => return Err(e),
                Err(e) => chunk.lines.push(Err(e)),
            }
        }
        if !chunk.lines.is_empty() && full.send(chunk).is_err() {
            return Ok(());
        }
        if at_end {
            return Ok(());
        }
    }
}
