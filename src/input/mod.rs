//! Input rows. CSV is read as a stream — one reused record buffer, never the whole file —
//! and every data error names the file, the line and the column.

mod csv_source;
mod rows;

pub use csv_source::{CsvSource, RecordReader, SegmentRows};
pub use rows::{Row, Rows};

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;

/// The column names of an input and their positions.
#[derive(Debug, Clone)]
pub struct Header {
    names: Vec<String>,
    index: HashMap<String, usize>,
}

impl Header {
    pub fn new(names: Vec<String>) -> Self {
        let mut index = HashMap::with_capacity(names.len());
        for (i, n) in names.iter().enumerate() {
            index.entry(n.clone()).or_insert(i);
        }
        Header { names, index }
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn index(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    pub fn name(&self, index: usize) -> Option<&str> {
        self.names.get(index).map(String::as_str)
    }
}

/// A problem with the input data, at a place in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    pub path: PathBuf,
    pub line: Option<u64>,
    pub column: Option<String>,
    pub message: String,
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        write!(f, ": ")?;
        if let Some(col) = &self.column {
            write!(f, "column '{col}': ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for InputError {}
