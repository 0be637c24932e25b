//! Job-file diagnostics: an error with its place (`file:line:col`), the source line with a
//! caret under the culprit, and a "did you mean" hint drawn from the keys that are allowed.

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem in a job file, pointing at where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    /// 1-based line and column, when the place is known.
    pub pos: Option<(usize, usize)>,
    pub message: String,
    pub hint: Option<String>,
    /// The source line at `pos` and how many columns to underline.
    snippet: Option<(String, usize)>,
}

impl Diagnostic {
    pub fn new(file: &Path, message: impl Into<String>) -> Self {
        Diagnostic {
            file: file.to_path_buf(),
            pos: None,
            message: message.into(),
            hint: None,
            snippet: None,
        }
    }

    /// Places the diagnostic at a 1-based line and column of `source`, underlining `width`.
    pub fn at(mut self, source: &str, line: usize, col: usize, width: usize) -> Self {
        self.pos = Some((line, col));
        if let Some(text) = source.lines().nth(line.saturating_sub(1)) {
            self.snippet = Some((text.to_string(), width.max(1)));
        }
        self
    }

    /// Places the diagnostic at the first occurrence of `needle` in `source` at or after
    /// 1-based line `from`, if there is one.
    pub fn near(self, source: &str, from: usize, needle: &str) -> Self {
        match find_text(source, from, needle) {
            Some((line, col)) => self.at(source, line, col, needle.chars().count()),
            None => self,
        }
    }

    pub fn with_hint(mut self, hint: Option<String>) -> Self {
        self.hint = hint;
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        match self.pos {
            Some((line, 0)) => write!(f, ":{line}")?,
            Some((line, col)) => write!(f, ":{line}:{col}")?,
            None => {}
        }
        write!(f, ": {}", self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "; {hint}")?;
        }
        if let (Some((text, width)), Some((line, col))) = (&self.snippet, self.pos)
            && col > 0
        {
            let gutter = line.to_string().len();
            let pad: String = text
                .chars()
                .take(col.saturating_sub(1))
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            write!(
                f,
                "\n{:gutter$} |\n{line} | {text}\n{:gutter$} | {pad}{}",
                "",
                "",
                "^".repeat(*width)
            )?;
        }
        Ok(())
    }
}

/// Finds `needle` in `source` at or after 1-based line `from`; returns 1-based line, column.
pub fn find_text(source: &str, from: usize, needle: &str) -> Option<(usize, usize)> {
    source
        .lines()
        .enumerate()
        .skip(from.saturating_sub(1))
        .find_map(|(i, line)| {
            line.find(needle)
                .map(|byte| (i + 1, line[..byte].chars().count() + 1))
        })
}

/// Suggests the closest of `candidates` to a mistyped `word`, if one is close enough.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    let limit = (word.chars().count() / 3).max(2);
    // A prefix of a real name (`employee` for `employee_id`) is a likely slip too.
    let prefix = |c: &str| {
        word.len() >= 3
            && (c.starts_with(word) || word.starts_with(c))
            && c.len().min(word.len()) >= 3
    };
    candidates
        .into_iter()
        .map(|c| (if prefix(c) { 1 } else { edit_distance(word, c) }, c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| format!("did you mean '{c}'?"))
}

/// Levenshtein distance between two strings, by characters.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        assert_eq!(edit_distance("concurency", "concurrency"), 1);
        assert_eq!(
            did_you_mean("concurency", ["rate", "burst", "concurrency"]),
            Some("did you mean 'concurrency'?".into())
        );
        assert_eq!(did_you_mean("zzz", ["rate", "burst"]), None);
    }

    #[test]
    fn renders_place_and_caret() {
        let src = "a: 1\nlimits:\n  concurency: 8\n";
        let d = Diagnostic::new(Path::new("job.yaml"), "unknown key 'concurency'")
            .at(src, 3, 3, 10)
            .with_hint(Some("did you mean 'concurrency'?".into()));
        let text = d.to_string();
        assert!(text.starts_with("job.yaml:3:3: unknown key 'concurency'; did you mean"));
        assert!(
            text.contains("3 |   concurency: 8\n  |   ^^^^^^^^^^"),
            "{text}"
        );
    }
}
