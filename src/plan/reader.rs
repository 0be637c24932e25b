//! The row pipeline: one thread reads the CSV (parsing is sequential), worker threads
//! check chunks of rows (rows are independent), and the caller merges the results in file
//! order (what depends on order: duplicate keys, totals, output). Chunks are recycled, so
//! the steady state allocates little and memory stays bounded by the chunks in flight.

use crate::input::{CsvSource, InputError};
use csv::StringRecord;
use std::collections::BTreeMap;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

const CHUNK_ROWS: usize = 512;

/// A run of rows in file order: each slot is a row (record, key, line) or a row error.
pub struct Chunk {
    seq: u64,
    pub records: Vec<StringRecord>,
    pub keys: Vec<String>,
    pub lines: Vec<Result<u64, InputError>>,
}

impl Chunk {
    fn new() -> Chunk {
        Chunk {
            seq: 0,
            records: vec![StringRecord::new(); CHUNK_ROWS],
            keys: vec![String::new(); CHUNK_ROWS],
            lines: Vec::with_capacity(CHUNK_ROWS),
        }
    }
}

/// Reads `src` to the end, runs `work` on each chunk on `workers` threads, and hands each
/// chunk with its result to `merge` on the calling thread, in file order. `merge` returning
/// `false` stops the pipeline early. A fatal read error (I/O) is returned.
pub fn pipeline<R: Send>(
    src: CsvSource,
    workers: usize,
    work: impl Fn(&Chunk) -> R + Sync,
    mut merge: impl FnMut(&Chunk, R) -> bool,
) -> Result<(), InputError> {
    let workers = workers.max(1);
    let in_flight = 2 * workers + 2;
    let (free_tx, free_rx) = sync_channel::<Chunk>(in_flight);
    let (work_tx, work_rx) = sync_channel::<Chunk>(in_flight);
    let (done_tx, done_rx) = sync_channel::<(Chunk, R)>(in_flight);
    for _ in 0..in_flight {
        free_tx.send(Chunk::new()).expect("channel has room");
    }
    let work_rx = Arc::new(Mutex::new(work_rx));
    std::thread::scope(|scope| {
        let reader = scope.spawn(move || produce(src, &work_tx, &free_rx));
        for _ in 0..workers {
            let (rx, tx, work) = (work_rx.clone(), done_tx.clone(), &work);
            scope.spawn(move || {
                loop {
                    let next = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                    let Ok(chunk) = next else { return };
                    let result = work(&chunk);
                    if tx.send((chunk, result)).is_err() {
                        return;
                    }
                }
            });
        }
        drop(done_tx);
        // Workers finish out of order; hold results until their turn.
        let mut waiting = BTreeMap::new();
        let mut next = 0;
        'merge: for (chunk, result) in done_rx.iter() {
            waiting.insert(chunk.seq, (chunk, result));
            while let Some((chunk, result)) = waiting.remove(&next) {
                next += 1;
                if !merge(&chunk, result) {
                    break 'merge;
                }
                // The reader may have finished and dropped its end: then recycling is moot.
                let _ = free_tx.send(chunk);
            }
        }
        // Closing the channels stops the reader and workers if they are still going.
        drop(done_rx);
        drop(free_tx);
        match reader.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

fn produce(
    mut src: CsvSource,
    work: &SyncSender<Chunk>,
    free: &Receiver<Chunk>,
) -> Result<(), InputError> {
    let mut seq = 0;
    loop {
        let Ok(mut chunk) = free.recv() else {
            return Ok(());
        };
        chunk.lines.clear();
        chunk.seq = seq;
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
        if !chunk.lines.is_empty() {
            if work.send(chunk).is_err() {
                return Ok(());
            }
            seq += 1;
        }
        if at_end {
            return Ok(());
        }
    }
}
