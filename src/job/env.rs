//! `${VAR}` and `${VAR:-default}` interpolation from the process environment and an optional
//! `.env` file beside the job. The process environment wins over `.env`, as with dotenv.

use std::collections::HashMap;
use std::path::Path;

/// Where variable values come from.
#[derive(Debug, Default, Clone)]
pub struct Env {
    dotenv: HashMap<String, String>,
    /// Overrides the process environment (tests inject values here).
    overrides: HashMap<String, String>,
    use_process_env: bool,
}

impl Env {
    /// Reads the process environment and `.env` in `dir`, if present.
    pub fn load(dir: &Path) -> Result<Env, String> {
        let path = dir.join(".env");
        let dotenv = match std::fs::read_to_string(&path) {
            Ok(text) => parse_dotenv(&text).map_err(|e| format!("{}:{e}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
            Err(e) => return Err(format!("{}: cannot read: {e}", path.display())),
        };
        Ok(Env {
            dotenv,
            overrides: HashMap::new(),
            use_process_env: true,
        })
    }

    /// Builds an environment from explicit pairs only (no process environment).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Env {
        Env {
            dotenv: HashMap::new(),
            overrides: pairs
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            use_process_env: false,
        }
    }

    pub fn get(&self, name: &str) -> Option<String> {
        if let Some(v) = self.overrides.get(name) {
            return Some(v.clone());
        }
        if self.use_process_env
            && let Ok(v) = std::env::var(name)
        {
            return Some(v);
        }
        self.dotenv.get(name).cloned()
    }
}

/// The outcome of interpolating one string.
#[derive(Debug, PartialEq, Eq)]
pub enum Interpolated {
    Done(String),
    /// Names of variables that are not set and have no default.
    Missing(Vec<String>),
}

/// Replaces `${NAME}` and `${NAME:-default}` in `text`; `$$` stands for a literal `$`.
pub fn interpolate(text: &str, env: &Env) -> Result<Interpolated, String> {
    if !text.contains('$') {
        return Ok(Interpolated::Done(text.to_string()));
    }
    let mut out = String::with_capacity(text.len());
    let mut missing = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body
                .find('}')
                .ok_or_else(|| format!("unclosed '${{' in '{text}'"))?;
            let expr = &body[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (expr, None),
            };
            if name.is_empty()
                || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                || name.starts_with(|c: char| c.is_ascii_digit())
            {
                return Err(format!("'${{{expr}}}' is not a valid variable name"));
            }
            match (env.get(name), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => missing.push(name.to_string()),
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(if missing.is_empty() {
        Interpolated::Done(out)
    } else {
        Interpolated::Missing(missing)
    })
}

/// Parses `KEY=value` lines: `#` comments, optional `export `, single or double quotes.
fn parse_dotenv(text: &str) -> Result<HashMap<String, String>, String> {
    let mut vars = HashMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| format!("{}: expected KEY=value", i + 1))?;
        let key = key.trim();
        let value = value.trim();
        let value = if value.len() >= 2
            && ((value.starts_with('"') && value.ends_with('"'))
                || (value.starts_with('\'') && value.ends_with('\'')))
        {
            &value[1..value.len() - 1]
        } else {
            value.split(" #").next().unwrap_or(value).trim_end()
        };
        vars.insert(key.to_string(), value.to_string());
    }
    Ok(vars)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolates_with_defaults_and_escapes() {
        let env = Env::from_pairs([("HOST", "h.example"), ("EMPTY", "")]);
        let done = |s: &str| match interpolate(s, &env).unwrap() {
            Interpolated::Done(v) => v,
            other => panic!("{other:?}"),
        };
        assert_eq!(done("https://${HOST}/api"), "https://h.example/api");
        assert_eq!(done("${NOPE:-fallback}"), "fallback");
        assert_eq!(done("${EMPTY:-fallback}"), "");
        assert_eq!(done("cost $$5 and $x"), "cost $5 and $x");
        assert_eq!(
            interpolate("${A}-${B:-b}-${C}", &env).unwrap(),
            Interpolated::Missing(vec!["A".into(), "C".into()])
        );
        assert!(interpolate("${OPEN", &env).is_err());
        assert!(interpolate("${1X}", &env).is_err());
    }

    #[test]
    fn dotenv_lines() {
        let vars =
            parse_dotenv("# comment\nexport A=1\nB = \"two words\"\nC='x#y'\nD=plain # trailing\n")
                .unwrap();
        assert_eq!(vars["A"], "1");
        assert_eq!(vars["B"], "two words");
        assert_eq!(vars["C"], "x#y");
        assert_eq!(vars["D"], "plain");
        assert!(parse_dotenv("novalue\n").is_err());
    }
}
