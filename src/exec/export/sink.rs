//! Where an export's records go: a partial file, renamed into place when the export completes.

use super::*;

/// Where the records go.
pub(super) enum Sink {
    Csv(Box<csv::Writer<BufWriter<File>>>),
    Jsonl(BufWriter<File>),
    Json { out: BufWriter<File>, first: bool },
}

impl Sink {
    pub(super) fn open(path: &Path, format: Format, resource: Resource) -> std::io::Result<Sink> {
        let file = BufWriter::with_capacity(256 << 10, crate::private::create(path)?);
        Ok(match format {
            Format::Csv => {
                let mut w = csv::Writer::from_writer(file);
                w.write_record(columns(resource))?;
                Sink::Csv(Box::new(w))
            }
            Format::Jsonl => Sink::Jsonl(file),
            Format::Json => {
                let mut out = file;
                out.write_all(b"[")?;
                Sink::Json { out, first: true }
            }
        })
    }

    /// Writes one record (CSV: one line; a payout batch, one line per transaction).
    pub(super) fn write(&mut self, record: &Value, ep: &Endpoint) -> std::io::Result<()> {
        match self {
            Sink::Csv(w) => {
                let txs = record
                    .get("payout_transactions")
                    .and_then(Value::as_array)
                    .filter(|t| {
                        !t.is_empty() && ep.columns.iter().any(|c| c.path.starts_with("tx."))
                    });
                match txs {
                    Some(txs) => {
                        for tx in txs {
                            w.write_record(ep.columns.iter().map(|c| cell(record, Some(tx), c)))?;
                        }
                    }
                    None => w.write_record(ep.columns.iter().map(|c| cell(record, None, c)))?,
                }
                Ok(())
            }
            Sink::Jsonl(out) => {
                serde_json::to_writer(&mut *out, record)?;
                out.write_all(b"\n")
            }
            Sink::Json { out, first } => {
                out.write_all(if *first { b"\n" } else { b",\n" })?;
                *first = false;
                serde_json::to_writer(&mut *out, record).map_err(std::io::Error::from)
            }
        }
    }

    /// Flushes and syncs the file to disk.
    pub(super) fn close(self) -> std::io::Result<()> {
        let out = match self {
            Sink::Csv(w) => (*w).into_inner().map_err(|e| e.into_error())?,
            Sink::Jsonl(out) => out,
            Sink::Json { mut out, .. } => {
                out.write_all(b"\n]\n")?;
                out
            }
        };
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()
    }
}

/// The partial file beside `path`.
pub(super) fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    path.with_file_name(name)
}
