//! Where each key and value of a job file is, from the YAML parser's own marks: one pass
//! over the parser's events builds a path → place index, so pointing a diagnostic at
//! `steps[3].fields.amount` is a lookup, not a search of the text. The parser is libyaml's
//! Rust port, the one `yaml_serde` reads the file with, so the places agree with the
//! places in its own errors.

use libyaml_rs as sys;
use std::collections::HashMap;
use std::mem::MaybeUninit;

/// A 1-based line and column (in characters).
pub type Pos = (usize, usize);

/// The place of one node: where its key starts (for a sequence item, the item itself) and
/// where its value starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    pub key: Pos,
    pub value: Pos,
}

/// One step of a path into the document.
#[derive(Debug, Clone, Copy)]
pub enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

impl<'a> From<&'a str> for Seg<'a> {
    fn from(k: &'a str) -> Self {
        Seg::Key(k)
    }
}

impl From<usize> for Seg<'_> {
    fn from(i: usize) -> Self {
        Seg::Index(i)
    }
}

/// The places of every mapping key and sequence item of a document.
#[derive(Debug, Default)]
pub struct Marks {
    places: HashMap<String, Place>,
}

/// Joins path segments; a unit separator cannot be confused with a key's own characters
/// in any job file worth reading.
const SEP: char = '\u{1f}';

fn push_seg(path: &mut String, seg: Seg<'_>) {
    if !path.is_empty() {
        path.push(SEP);
    }
    match seg {
        Seg::Key(k) => path.push_str(k),
        Seg::Index(i) => {
            path.push('#');
            path.push_str(&i.to_string());
        }
    }
}

impl Marks {
    /// Indexes `source`. A document the parser rejects is indexed up to the error (the
    /// error itself is reported by the deserializer, with its own place).
    pub fn of(source: &str) -> Marks {
        let mut index = Indexer::default();
        for event in events(source) {
            index.event(event);
        }
        Marks {
            places: index.places,
        }
    }

    /// The place of the node at `path`, if it is in the file.
    pub fn get<'a>(&self, path: impl IntoIterator<Item = Seg<'a>>) -> Option<Place> {
        let mut key = String::new();
        for seg in path {
            push_seg(&mut key, seg);
        }
        self.places.get(&key).copied()
    }

    /// The place of the deepest node along `path` that is in the file, with how many of the
    /// path's segments it matched (0 when not even the first is there).
    pub fn deepest<'a>(&self, path: impl IntoIterator<Item = Seg<'a>>) -> Option<(Place, usize)> {
        let mut key = String::new();
        let mut best = None;
        for (i, seg) in path.into_iter().enumerate() {
            push_seg(&mut key, seg);
            match self.places.get(&key) {
                Some(p) => best = Some((*p, i + 1)),
                None => break,
            }
        }
        best
    }
}

/// What the index needs of one parser event.
enum Event {
    Scalar(String, Pos),
    /// A collection starts: a mapping when the flag is set, else a sequence.
    Start(Pos, bool),
    End,
    Other,
}

/// The document's events, read with libyaml's event API.
fn events(source: &str) -> Vec<Event> {
    let mut out = Vec::new();
    let mut parser = Box::new(MaybeUninit::<sys::yaml_parser_t>::uninit());
    let p = parser.as_mut_ptr();
    // SAFETY: the parser lives in a box that does not move while it is used (libyaml keeps
    // a pointer to it), reads `source`, which outlives it, and is deleted once at the end.
    // Each event is read only after a successful parse into it, then deleted once.
    unsafe {
        if sys::yaml_parser_initialize(p).fail {
            return out;
        }
        sys::yaml_parser_set_encoding(p, sys::YAML_UTF8_ENCODING);
        sys::yaml_parser_set_input_string(p, source.as_ptr(), source.len() as u64);
        loop {
            let mut event = MaybeUninit::<sys::yaml_event_t>::uninit();
            let e = event.as_mut_ptr();
            if sys::yaml_parser_parse(p, e).fail {
                break;
            }
            let pos = (
                (*e).start_mark.line as usize + 1,
                (*e).start_mark.column as usize + 1,
            );
            let kind = (*e).type_;
            let ev = match kind {
                sys::YAML_SCALAR_EVENT => {
                    let s = (*e).data.scalar;
                    let bytes = std::slice::from_raw_parts(s.value, s.length as usize);
                    Event::Scalar(String::from_utf8_lossy(bytes).into_owned(), pos)
                }
                sys::YAML_ALIAS_EVENT => Event::Scalar(String::new(), pos),
                sys::YAML_SEQUENCE_START_EVENT => Event::Start(pos, false),
                sys::YAML_MAPPING_START_EVENT => Event::Start(pos, true),
                sys::YAML_SEQUENCE_END_EVENT | sys::YAML_MAPPING_END_EVENT => Event::End,
                _ => Event::Other,
            };
            sys::yaml_event_delete(e);
            out.push(ev);
            if kind == sys::YAML_STREAM_END_EVENT {
                break;
            }
        }
        sys::yaml_parser_delete(p);
    }
    out
}

/// A collection being read: a mapping (waiting for a key, or holding the key whose value
/// comes next) or a sequence (counting its items).
enum Frame {
    Map {
        key: Option<(String, Pos)>,
        /// The path's length before this collection's segments.
        base: usize,
    },
    Seq {
        next: usize,
        base: usize,
    },
    /// A collection used as a key, or inside one: nothing under it is indexed.
    Skip {
        base: usize,
    },
}

#[derive(Default)]
struct Indexer {
    places: HashMap<String, Place>,
    path: String,
    stack: Vec<Frame>,
}

impl Indexer {
    fn event(&mut self, event: Event) {
        match event {
            Event::Other => {}
            Event::End => {
                if let Some(
                    Frame::Map { base, .. } | Frame::Seq { base, .. } | Frame::Skip { base },
                ) = self.stack.pop()
                {
                    self.path.truncate(base);
                }
            }
            Event::Scalar(text, pos) => {
                if let Some(Frame::Map {
                    key: key @ None, ..
                }) = self.stack.last_mut()
                {
                    *key = Some((text, pos));
                } else {
                    let parent = self.path.len();
                    self.node(pos);
                    self.path.truncate(parent);
                }
            }
            Event::Start(pos, is_map) => {
                let base = self.path.len();
                match self.stack.last_mut() {
                    Some(Frame::Map {
                        key: key @ None, ..
                    }) => {
                        *key = Some((String::from("?"), pos));
                        self.stack.push(Frame::Skip { base });
                        return;
                    }
                    Some(Frame::Skip { .. }) => {
                        self.stack.push(Frame::Skip { base });
                        return;
                    }
                    _ => {}
                }
                self.node(pos);
                self.stack.push(if is_map {
                    Frame::Map { key: None, base }
                } else {
                    Frame::Seq { next: 0, base }
                });
            }
        }
    }

    /// A value node starts at `pos`: names it (by its key or its index), extends the path
    /// with that name and records its place.
    fn node(&mut self, pos: Pos) {
        let place = match self.stack.last_mut() {
            None | Some(Frame::Skip { .. }) => return,
            Some(Frame::Map { key, .. }) => {
                let (name, at) = key.take().unwrap_or_default();
                push_seg(&mut self.path, Seg::Key(&name));
                Place {
                    key: at,
                    value: pos,
                }
            }
            Some(Frame::Seq { next, .. }) => {
                push_seg(&mut self.path, Seg::Index(*next));
                *next += 1;
                Place {
                    key: pos,
                    value: pos,
                }
            }
        };
        self.places.entry(self.path.clone()).or_insert(place);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JOB: &str = "\
version: 1
steps:
  - id: pay
    type: payout
    fields: { amount: '{{ row.amount }}', currency: AUD }
  - id: pay_bonus
    type: payout
    fields:
      amount: '{{ row.bonus }}'
";

    #[test]
    fn keys_values_and_items_have_their_places() {
        let m = Marks::of(JOB);
        let at = |p: &[Seg]| m.get(p.iter().copied()).unwrap();
        assert_eq!(at(&["version".into()]).key, (1, 1));
        assert_eq!(at(&["version".into()]).value, (1, 10));
        assert_eq!(at(&["steps".into(), 0.into()]).key, (3, 5));
        assert_eq!(at(&["steps".into(), 1.into(), "id".into()]).value, (6, 9));
        let amount = ["steps".into(), 0.into(), "fields".into(), "amount".into()];
        assert_eq!(at(&amount).key, (5, 15));
        let amount = ["steps".into(), 1.into(), "fields".into(), "amount".into()];
        assert_eq!(at(&amount).key, (9, 7));
        assert!(m.get(["steps".into(), 2.into()]).is_none());
    }

    #[test]
    fn the_deepest_known_node_stands_in_for_a_missing_one() {
        let m = Marks::of(JOB);
        let path = ["steps".into(), 1.into(), "batch".into(), "size".into()];
        let (place, depth) = m.deepest(path).unwrap();
        assert_eq!((place.key, depth), ((6, 5), 2));
    }

    #[test]
    fn a_collection_as_a_key_is_skipped() {
        let m = Marks::of("? [a, b]\n: 1\nc: 2\n");
        assert_eq!(m.get(["c".into()]).unwrap().key, (3, 1));
        assert!(m.get([0.into()]).is_none());
    }

    #[test]
    fn a_broken_document_is_indexed_up_to_its_error() {
        let m = Marks::of("name: x\nsteps: [\n");
        assert_eq!(m.get(["name".into()]).unwrap().key, (1, 1));
    }
}
