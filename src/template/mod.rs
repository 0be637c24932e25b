//! Field templates: `{{ row.email | lower }}` and friends, rendered once per CSV row.
//!
//! Templates are minijinja with `row`, `vars` and `job` in scope. The common shapes — a
//! literal, or one column with `lower`/`upper`/`trim` filters — are compiled to direct
//! column access, because minijinja per field per row would dominate a million-row
//! validation. The fast path gives the same output as minijinja (tested below).

use crate::input::{Header, Row};
use minijinja::value::{Object, Value};
use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use std::collections::BTreeMap;
use std::sync::Arc;

pub mod filters;

/// minijinja's built-in filters, for "did you mean".
const FILTERS: &[&str] = &[
    "abs",
    "attr",
    "batch",
    "bool",
    "capitalize",
    "count",
    "d",
    "default",
    "dictsort",
    "e",
    "escape",
    "first",
    "float",
    "groupby",
    "indent",
    "int",
    "items",
    "join",
    "last",
    "length",
    "lines",
    "list",
    "lower",
    "map",
    "max",
    "min",
    "pprint",
    "reject",
    "rejectattr",
    "replace",
    "reverse",
    "round",
    "safe",
    "select",
    "selectattr",
    "slice",
    "sort",
    "split",
    "string",
    "sum",
    "title",
    "tojson",
    "trim",
    "unique",
    "upper",
    "urlencode",
];

/// A compiled template.
#[derive(Debug, Clone)]
pub enum Template {
    Literal(String),
    Column { index: usize, filters: Vec<Filter> },
    Jinja { name: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    Lower,
    Upper,
    Trim,
}

/// What a template reads from the row: the columns it names (for error messages).
#[derive(Debug, Clone, Default)]
pub struct Uses {
    pub columns: Vec<String>,
}

/// All templates of a job, compiled against one CSV header.
pub struct Templates {
    env: Environment<'static>,
    header: Arc<Header>,
    vars: Value,
    job: Value,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates").finish_non_exhaustive()
    }
}

impl Templates {
    pub fn new(
        header: Arc<Header>,
        vars: &BTreeMap<String, String>,
        job: &BTreeMap<String, String>,
    ) -> Self {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.add_filter("date_from", |v: &str, pattern: &str| {
            filters::date_from(v, pattern)
        });
        env.add_filter("amount_from", |v: &str, sample: Option<&str>| {
            filters::amount_from(v, sample)
        });
        Templates {
            env,
            header,
            vars: Value::from(vars.clone()),
            job: Value::from(job.clone()),
        }
    }

    /// Compiles `source` under `name`; checks every `row.x`, `vars.x` and `job.x` it names.
    pub fn compile(&mut self, name: &str, source: &str) -> Result<(Template, Uses), String> {
        if !source.contains("{{") && !source.contains("{%") && !source.contains("{#") {
            return Ok((Template::Literal(source.to_string()), Uses::default()));
        }
        self.env
            .add_template_owned(name.to_string(), source.to_string())
            .map_err(|e| {
                format!(
                    "template does not parse: {}",
                    e.detail().unwrap_or("syntax error")
                )
            })?;
        let tmpl = self.env.get_template(name).map_err(|e| e.to_string())?;
        let mut uses = Uses::default();
        let mut names: Vec<String> = tmpl.undeclared_variables(true).into_iter().collect();
        names.sort();
        for var in names {
            let (root, attr) = match var.split_once('.') {
                Some((r, a)) => (r, Some(a)),
                None => (var.as_str(), None),
            };
            match (root, attr) {
                ("row", Some(col)) => {
                    if self.header.index(col).is_none() {
                        let hint = crate::job::diag::did_you_mean(
                            col,
                            self.header.names().iter().map(String::as_str),
                        );
                        return Err(format!(
                            "template uses column '{col}', which the CSV header does not have{}",
                            hint.map(|h| format!("; {h}")).unwrap_or_default()
                        ));
                    }
                    uses.columns.push(col.to_string());
                }
                ("vars", Some(key)) if self.vars.get_attr(key).is_ok_and(|v| v.is_undefined()) => {
                    return Err(format!(
                        "template uses vars.{key}, which is not defined in vars"
                    ));
                }
                ("job", Some(key)) if !["name", "scope"].contains(&key) => {
                    return Err(format!(
                        "template uses job.{key}; job has only name and scope"
                    ));
                }
                ("row" | "vars" | "job", _) => {}
                (other, _) if self.env.globals().any(|(g, _)| g == other) => {}
                (other, _) => {
                    return Err(format!(
                        "template uses '{other}', which is not defined (use row.<column>, vars.<name> or job.name)"
                    ));
                }
            }
        }
        let reads_row = tmpl.undeclared_variables(false).contains("row");
        let template = if !reads_row {
            // Only vars and job: the same for every row, so render it once now.
            let ctx = minijinja::context! { vars => self.vars.clone(), job => self.job.clone() };
            let text = tmpl.render(ctx).map_err(|e| {
                format!("template failed: {}", e.detail().unwrap_or("render error"))
            })?;
            Template::Literal(text)
        } else {
            match fast_path(source, &self.header) {
                Some(fast) => fast,
                None => {
                    self.probe(&tmpl, source)?;
                    Template::Jinja {
                        name: name.to_string(),
                    }
                }
            }
        };
        Ok((template, uses))
    }

    /// Renders a row template on made-up rows (every column empty, then every column `1`)
    /// for what no row can fix — a filter, test, function or method that does not exist —
    /// so it is said once when the job loads, not once per row. Other failures depend on
    /// the values, and stay the rows' own.
    fn probe(&self, tmpl: &minijinja::Template<'_, '_>, source: &str) -> Result<(), String> {
        use minijinja::ErrorKind;
        for value in ["", "1"] {
            let ctx = Value::from_object(Context {
                row: Value::from_object(RowObject {
                    header: self.header.clone(),
                    values: vec![value.to_string(); self.header.names().len()],
                }),
                vars: self.vars.clone(),
                job: self.job.clone(),
            });
            let Err(e) = tmpl.render(ctx) else { continue };
            // A conversion filter's pattern that cannot be read: no row can fix it.
            if let Some(detail) = e.detail()
                && detail.starts_with(filters::PATTERN)
            {
                return Err(format!("template failed: {detail}"));
            }
            let what = match e.kind() {
                ErrorKind::UnknownFilter => "filter",
                ErrorKind::UnknownTest => "test",
                ErrorKind::UnknownFunction => "function",
                ErrorKind::UnknownMethod => "method",
                _ => continue,
            };
            // minijinja does not name it: a filter is the name after a `|` that is not one.
            let unknown = (what == "filter")
                .then(|| {
                    source
                        .split('|')
                        .skip(1)
                        .map(|s| {
                            s.trim_start()
                                .split(|c: char| !c.is_alphanumeric() && c != '_')
                                .next()
                                .unwrap_or_default()
                        })
                        .find(|f| {
                            !f.is_empty() && !FILTERS.contains(f) && !filters::NAMES.contains(f)
                        })
                })
                .flatten();
            return Err(match unknown {
                Some(name) => format!(
                    "template uses filter '{name}', which does not exist{}",
                    crate::job::diag::did_you_mean(
                        name,
                        FILTERS.iter().chain(filters::NAMES).copied()
                    )
                    .map(|h| format!("; {h}"))
                    .unwrap_or_default()
                ),
                None => format!("template uses a {what} that does not exist"),
            });
        }
        Ok(())
    }

    /// The value of a constant or of a column taken as it is, the common cases, without
    /// a call; `None` for a template that needs `render`.
    #[inline]
    pub fn plain<'r>(&self, template: &'r Template, row: Row<'r>) -> Option<&'r str> {
        match template {
            Template::Literal(s) => Some(s),
            Template::Column { index, filters } if filters.is_empty() => {
                Some(row.get(*index).unwrap_or(""))
            }
            _ => None,
        }
    }

    /// Renders a template for one row.
    pub fn render<'r>(
        &self,
        template: &'r Template,
        row: Row<'r>,
    ) -> Result<std::borrow::Cow<'r, str>, String> {
        self.render_reusing(template, row, String::new())
    }

    /// Renders a template for one row; a value that must be built is built in `buf` when
    /// it can be, so a caller rendering row after row can hand back the last one's string
    /// instead of allocating anew.
    pub fn render_reusing<'r>(
        &self,
        template: &'r Template,
        row: Row<'r>,
        mut buf: String,
    ) -> Result<std::borrow::Cow<'r, str>, String> {
        use std::borrow::Cow;
        if let Some(plain) = self.plain(template, row) {
            return Ok(Cow::Borrowed(plain));
        }
        match template {
            Template::Literal(s) => Ok(Cow::Borrowed(s)),
            Template::Column { index, filters } => {
                let raw = row.get(*index).unwrap_or("");
                // ASCII values that a case filter would not change are returned as they are.
                if let [f @ (Filter::Lower | Filter::Upper)] = filters.as_slice()
                    && raw.is_ascii()
                {
                    // A fold, not `any`: without the early exit it is vectorised.
                    let unchanged = match f {
                        Filter::Lower => {
                            !raw.bytes().fold(false, |up, b| up | b.is_ascii_uppercase())
                        }
                        _ => !raw
                            .bytes()
                            .fold(false, |low, b| low | b.is_ascii_lowercase()),
                    };
                    if unchanged {
                        return Ok(Cow::Borrowed(raw));
                    }
                    buf.clear();
                    buf.push_str(raw);
                    match f {
                        Filter::Lower => buf.make_ascii_lowercase(),
                        _ => buf.make_ascii_uppercase(),
                    }
                    return Ok(Cow::Owned(buf));
                }
                let mut s = raw.to_string();
                for f in filters {
                    s = match f {
                        Filter::Lower => s.to_lowercase(),
                        Filter::Upper => s.to_uppercase(),
                        Filter::Trim => s.trim().to_string(),
                    };
                }
                Ok(Cow::Owned(s))
            }
            Template::Jinja { name } => {
                let tmpl = self.env.get_template(name).map_err(|e| e.to_string())?;
                let ctx = Value::from_object(Context {
                    row: Value::from_object(RowObject {
                        header: self.header.clone(),
                        values: row.iter().map(str::to_string).collect(),
                    }),
                    vars: self.vars.clone(),
                    job: self.job.clone(),
                });
                tmpl.render(ctx).map(Cow::Owned).map_err(|e| {
                    let detail = e
                        .detail()
                        .map(str::to_string)
                        .unwrap_or_else(|| e.kind().to_string());
                    format!("template failed: {detail}")
                })
            }
        }
    }
}

#[derive(Debug)]
struct Context {
    row: Value,
    vars: Value,
    job: Value,
}

impl Object for Context {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        match key.as_str()? {
            "row" => Some(self.row.clone()),
            "vars" => Some(self.vars.clone()),
            "job" => Some(self.job.clone()),
            _ => None,
        }
    }
}

#[derive(Debug)]
struct RowObject {
    header: Arc<Header>,
    values: Vec<String>,
}

impl Object for RowObject {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let i = self.header.index(key.as_str()?)?;
        Some(Value::from(self.values.get(i).map_or("", String::as_str)))
    }

    fn enumerate(self: &Arc<Self>) -> minijinja::value::Enumerator {
        let keys: Vec<Value> = self
            .header
            .names()
            .iter()
            .map(|n| Value::from(n.as_str()))
            .collect();
        minijinja::value::Enumerator::Values(keys)
    }
}

/// Recognises `{{ row.col }}` / `{{ row['col'] }}` with `lower`, `upper`, `trim` filters.
fn fast_path(source: &str, header: &Header) -> Option<Template> {
    let inner = source.strip_prefix("{{")?.strip_suffix("}}")?;
    if inner.contains("{{")
        || inner.contains("}}")
        || inner.starts_with('-')
        || inner.ends_with('-')
    {
        return None;
    }
    let mut parts = inner.split('|').map(str::trim);
    let target = parts.next()?;
    let column = if let Some(col) = target.strip_prefix("row.") {
        col.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
            .then_some(col)?
    } else {
        let quoted = target.strip_prefix("row[")?.strip_suffix(']')?;
        let q = quoted.chars().next()?;
        if !(q == '\'' || q == '"') {
            return None;
        }
        let col = quoted.strip_prefix(q)?.strip_suffix(q)?;
        (!col.contains(['\\', '\'', '"'])).then_some(col)?
    };
    let index = header.index(column)?;
    let filters = parts
        .map(|f| match f {
            "lower" => Some(Filter::Lower),
            "upper" => Some(Filter::Upper),
            "trim" => Some(Filter::Trim),
            _ => None,
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Template::Column { index, filters })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::Rows;

    fn setup() -> (Templates, Rows) {
        let header = Arc::new(Header::new(vec![
            "email".into(),
            "first name".into(),
            "kyc".into(),
        ]));
        let vars = BTreeMap::from([("period".to_string(), "2026-11".to_string())]);
        let job = BTreeMap::from([
            ("name".to_string(), "payroll".to_string()),
            ("scope".to_string(), "2026-11".to_string()),
        ]);
        let row = csv::StringRecord::from(vec![" Jane@Example.COM ", "Jane", "yes"]);
        let row = Rows::from_records([&row]);
        (Templates::new(header, &vars, &job), row)
    }

    #[test]
    fn fast_path_matches_minijinja() {
        let (mut t, row) = setup();
        for (i, src) in [
            "{{ row.email }}",
            "{{ row.email | lower }}",
            "{{row.email|trim|lower}}",
            "{{ row.email | upper | trim }}",
            "{{ row['first name'] }}",
        ]
        .iter()
        .enumerate()
        {
            let (fast, _) = t.compile(&format!("f{i}"), src).unwrap();
            assert!(
                matches!(fast, Template::Column { .. }),
                "{src} should take the fast path"
            );
            let slow = Template::Jinja {
                name: format!("f{i}"),
            };
            assert_eq!(
                t.render(&fast, row.row(0)).unwrap(),
                t.render(&slow, row.row(0)).unwrap(),
                "{src}"
            );
        }
    }

    #[test]
    fn jinja_sees_row_vars_and_job() {
        let (mut t, row) = setup();
        let (tpl, uses) = t.compile("w", "{{ row.kyc == 'yes' }}").unwrap();
        assert!(matches!(tpl, Template::Jinja { .. }));
        assert_eq!(uses.columns, vec!["kyc"]);
        // minijinja 3 renders booleans Python-style; `when` accepts either case.
        assert_eq!(t.render(&tpl, row.row(0)).unwrap(), "True");
        let (tpl, _) = t
            .compile("d", "Pay {{ vars.period }} for {{ job.name }}")
            .unwrap();
        assert!(
            matches!(tpl, Template::Literal(_)),
            "row-free templates are folded at compile time"
        );
        assert_eq!(
            t.render(&tpl, row.row(0)).unwrap(),
            "Pay 2026-11 for payroll"
        );
        let (tpl, _) = t
            .compile("m", "{{ vars.period }}-{{ row['first name'] | upper }}")
            .unwrap();
        assert_eq!(t.render(&tpl, row.row(0)).unwrap(), "2026-11-JANE");
        let (tpl, _) = t.compile("l", "plain text").unwrap();
        assert!(matches!(tpl, Template::Literal(_)));
    }

    #[test]
    fn unknown_names_are_caught_at_compile_time() {
        let (mut t, _) = setup();
        let e = t.compile("a", "{{ row.emial }}").unwrap_err();
        assert!(
            e.contains("column 'emial'") && e.contains("did you mean 'email'?"),
            "{e}"
        );
        assert!(
            t.compile("b", "{{ vars.nope }}")
                .unwrap_err()
                .contains("vars.nope")
        );
        assert!(
            t.compile("c", "{{ job.owner }}")
                .unwrap_err()
                .contains("job.owner")
        );
        assert!(
            t.compile("d", "{{ rows.email }}")
                .unwrap_err()
                .contains("'rows'")
        );
        assert!(
            t.compile("e", "{{ row.email ")
                .unwrap_err()
                .contains("does not parse")
        );
    }
}
