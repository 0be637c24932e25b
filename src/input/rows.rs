//! Rows held as one text and the bounds of each field in it. A segment of a file with no
//! quotes is its own text: reading its rows copies no field, it only notes where each one
//! starts and ends.

use csv::StringRecord;

/// The fields of many rows: field `f` is `text[bounds[f].0..bounds[f].1]`.
#[derive(Debug, Default, Clone)]
pub struct Rows {
    pub(super) text: String,
    pub(super) bounds: Vec<(u32, u32)>,
    /// Per row: the index of its first field in `bounds`.
    pub(super) firsts: Vec<u32>,
}

/// One row's fields.
#[derive(Debug, Clone, Copy)]
pub struct Row<'a> {
    pub(super) text: &'a str,
    pub(super) bounds: &'a [(u32, u32)],
}

impl Rows {
    /// Rows of one record each, copied: for tests and for rows read one at a time.
    pub fn from_records<'a>(records: impl IntoIterator<Item = &'a StringRecord>) -> Rows {
        let mut rows = Rows::default();
        for record in records {
            rows.push_record(record);
        }
        rows
    }

    /// Appends a row, copying the record's fields into the text.
    pub(super) fn push_record(&mut self, record: &StringRecord) {
        self.start_row();
        for field in record {
            self.push_field(field);
        }
    }

    /// Empties it, keeping its buffers.
    pub fn clear(&mut self) {
        self.text.clear();
        self.bounds.clear();
        self.firsts.clear();
    }

    pub fn len(&self) -> usize {
        self.firsts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.firsts.is_empty()
    }

    /// Row `i`; panics when there is none.
    pub fn row(&self, i: usize) -> Row<'_> {
        let first = self.firsts[i] as usize;
        let end = self
            .firsts
            .get(i + 1)
            .map_or(self.bounds.len(), |&f| f as usize);
        Row {
            text: &self.text,
            bounds: &self.bounds[first..end],
        }
    }

    /// Begins a row; its fields follow.
    fn start_row(&mut self) {
        self.firsts.push(self.bounds.len() as u32);
    }

    /// Appends a field to the row begun last, copying it into the text.
    fn push_field(&mut self, field: &str) {
        let start = self.text.len();
        self.text.push_str(field);
        self.bounds.push((start as u32, self.text.len() as u32));
    }
}

impl<'a> Row<'a> {
    pub fn len(&self) -> usize {
        self.bounds.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bounds.is_empty()
    }

    pub fn get(&self, i: usize) -> Option<&'a str> {
        let &(start, end) = self.bounds.get(i)?;
        self.text.get(start as usize..end as usize)
    }

    pub fn iter(&self) -> impl Iterator<Item = &'a str> + use<'a> {
        let text = self.text;
        self.bounds
            .iter()
            .map(move |&(s, e)| text.get(s as usize..e as usize).unwrap_or(""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_keep_their_fields_apart() {
        let a = StringRecord::from(vec!["1", "Zoë", ""]);
        let b = StringRecord::from(vec!["2"]);
        let rows = Rows::from_records([&a, &b]);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows.row(0).iter().collect::<Vec<_>>(), ["1", "Zoë", ""]);
        assert_eq!(rows.row(1).iter().collect::<Vec<_>>(), ["2"]);
        assert_eq!(
            (rows.row(0).get(1), rows.row(0).get(3)),
            (Some("Zoë"), None)
        );
    }
}
