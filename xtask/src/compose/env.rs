//! A service's `environment:` (mapping or `KEY=VALUE` list), read with positions, and the byte
//! edits that set or add one variable in place. Pure.

use std::ops::Range;

use super::model::{at, block_entries, col0, newline_of, At, Service};
use crate::yaml::{self, Edit, Kind, Node, Pos, Style};

/// One variable of `environment:`.
#[derive(Clone, Debug)]
pub struct Entry {
    pub key: String,
    /// `None`: `KEY` without a value (taken from the shell) or a null.
    pub value: Option<String>,
    /// Where the value (or the entry) starts.
    pub at: Pos,
    /// The scalar holding the value: the mapping value, or the whole `KEY=VALUE` list item.
    pub scalar: Range<usize>,
    pub style: Option<Style>,
    /// For a list item: the value starts after this many bytes of the item's text (`KEY=`).
    pub list_prefix: Option<usize>,
    /// The scalar node itself.
    pub node: Node,
}

/// `environment:` of a service.
#[derive(Clone, Debug, Default)]
pub struct Env {
    pub entries: Vec<Entry>,
    /// Where `environment:` is inherited from (anchor or `<<`): not editable in place.
    pub inherited: Option<Pos>,
    pub present: bool,
}

pub fn read(svc: &Service) -> Result<Env, At> {
    let Some(l) = svc.node.get("environment") else {
        return Ok(Env::default());
    };
    let mut env = Env {
        inherited: l.inherited(),
        present: true,
        ..Env::default()
    };
    match &l.value.kind {
        Kind::Map { entries, .. } => {
            for (k, v) in entries {
                if k.is_merge_key() {
                    return Err(at(
                        k.start,
                        "`environment:` uses a `<<` merge: not supported here",
                    ));
                }
                let Some(key) = k.as_str() else { continue };
                env.entries.push(Entry {
                    key: key.to_string(),
                    value: (!v.is_null())
                        .then(|| v.as_str().map(str::to_string))
                        .flatten(),
                    at: v.start,
                    scalar: v.span.clone(),
                    style: v.style(),
                    list_prefix: None,
                    node: v.clone(),
                });
            }
        }
        Kind::Seq { items, .. } => {
            for it in items {
                let Some(s) = it.as_str() else {
                    return Err(at(it.start, "an `environment:` list item is not a string"));
                };
                let (key, value) = match s.split_once('=') {
                    Some((k, v)) => (k, Some(v.to_string())),
                    None => (s, None),
                };
                env.entries.push(Entry {
                    key: key.to_string(),
                    value,
                    at: it.start,
                    scalar: it.span.clone(),
                    style: it.style(),
                    list_prefix: Some(key.len() + 1),
                    node: it.clone(),
                });
            }
        }
        Kind::Scalar { .. } if l.value.is_null() => {}
        Kind::Scalar { .. } => {
            return Err(at(
                l.value.start,
                "`environment:` is a string; expected a mapping or a list",
            ))
        }
    }
    Ok(env)
}

/// The variables, for reading.
pub fn get(_text: &str, svc: &Service) -> Result<Vec<Entry>, At> {
    Ok(read(svc)?.entries)
}

/// Text for a scalar value in `style` (plain only when nothing in it needs quoting).
fn scalar_text(style: Option<Style>, v: &str) -> String {
    let plain_safe = !v.is_empty()
        && v.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'/' | b'-'))
        && !v.starts_with('-');
    match style {
        Some(Style::Plain) if plain_safe => v.to_string(),
        Some(Style::SingleQuoted) => format!("'{}'", v.replace('\'', "''")),
        _ => serde_json::to_string(v).unwrap_or_default(),
    }
}

fn not_in_place(p: Pos) -> At {
    at(
        p,
        "this `environment:` entry cannot be edited in place (multi-line or escaped notation): edit it by hand",
    )
}

/// The edit that sets an existing entry's value.
pub fn set(text: &str, e: &Entry, value: &str) -> Result<Edit, At> {
    match e.list_prefix {
        None => {
            if e.scalar.is_empty() {
                return Err(not_in_place(e.at));
            }
            if text[e.scalar.clone()].contains('\n') {
                return Err(not_in_place(e.at));
            }
            Ok(Edit {
                range: e.scalar.clone(),
                text: scalar_text(e.style, value),
            })
        }
        Some(prefix) => {
            let m = yaml::scalar_map(text, &e.node).ok_or_else(|| not_in_place(e.at))?;
            let inner = match e.style {
                Some(Style::DoubleQuoted) => {
                    let j = serde_json::to_string(value).unwrap_or_default();
                    j[1..j.len() - 1].to_string()
                }
                Some(Style::SingleQuoted) => value.replace('\'', "''"),
                _ => {
                    if value.contains([' ', '#', ':', '"', '\'', '{', '}', '[', ']', ',']) {
                        return Err(not_in_place(e.at));
                    }
                    value.to_string()
                }
            };
            let len = m.len() - 1;
            Ok(Edit {
                range: m[prefix]..m[len],
                text: inner,
            })
        }
    }
}

/// The edit that adds `vars` (`key`, `value`) to the service's environment (creating
/// `environment:` when there is none), placed before the first entry so no multi-line value is
/// split.
pub fn add(text: &str, svc: &Service, env: &Env, vars: &[(String, String)]) -> Result<Edit, At> {
    let keys = vars
        .iter()
        .map(|(k, _)| k.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    if let Some(p) = env.inherited {
        return Err(at(
            p,
            format!("`environment:` is inherited through an anchor or `<<` merge: adding {keys} here would change every service that shares it; give the service its own `environment:` and run again"),
        ));
    }
    let q = |v: &str| serde_json::to_string(v).unwrap_or_default();
    let nl = newline_of(text);
    let Some(l) = svc.node.get("environment").filter(|l| !l.value.is_null()) else {
        // No environment: a new block entry before the service's first key.
        let (_, first) = block_entries(
            svc.node,
            format!("the service is not a block mapping: add {keys} to its `environment:` by hand"),
            "the service is empty",
        )?;
        if svc.node.get("environment").is_some() {
            return Err(at(
                svc.node.start,
                format!("`environment:` is empty: add {keys} under it by hand"),
            ));
        }
        let indent = " ".repeat(col0(text, first.span.start));
        let body: String = vars
            .iter()
            .map(|(k, v)| format!("{nl}{indent}  {k}: {}", q(v)))
            .collect();
        return Ok(Edit {
            range: first.span.start..first.span.start,
            text: format!("environment:{body}{nl}{indent}"),
        });
    };
    let node = l.value;
    match &node.kind {
        Kind::Map { entries, flow } => {
            if *flow {
                // `{A: b}` / `{}`: right after the brace.
                let open = node.span.start;
                if text.as_bytes().get(open) != Some(&b'{') {
                    return Err(at(node.start, "cannot edit this `environment:` in place"));
                }
                let sep = if entries.is_empty() { "" } else { "," };
                let body = vars
                    .iter()
                    .map(|(k, v)| format!(" {k}: {}", q(v)))
                    .collect::<Vec<_>>()
                    .join(",");
                return Ok(Edit {
                    range: open + 1..open + 1,
                    text: format!("{body}{sep}"),
                });
            }
            let (first, _) = entries
                .first()
                .ok_or_else(|| at(node.start, "empty `environment:`"))?;
            let indent = " ".repeat(col0(text, first.span.start));
            Ok(Edit {
                range: first.span.start..first.span.start,
                text: vars
                    .iter()
                    .map(|(k, v)| format!("{k}: {}{nl}{indent}", q(v)))
                    .collect(),
            })
        }
        Kind::Seq { items, flow } => {
            let item = |k: &str, v: &str| q(&format!("{k}={v}"));
            if *flow {
                let open = node.span.start;
                if text.as_bytes().get(open) != Some(&b'[') {
                    return Err(at(node.start, "cannot edit this `environment:` in place"));
                }
                let sep = if items.is_empty() { "" } else { ", " };
                let body = vars
                    .iter()
                    .map(|(k, v)| item(k, v))
                    .collect::<Vec<_>>()
                    .join(", ");
                return Ok(Edit {
                    range: open + 1..open + 1,
                    text: format!("{body}{sep}"),
                });
            }
            let first = items
                .first()
                .ok_or_else(|| at(node.start, "empty `environment:`"))?;
            // Back from the first item to its dash.
            let b = text.as_bytes();
            let mut dash = first.span.start;
            while dash > 0 && b[dash - 1] == b' ' {
                dash -= 1;
            }
            if dash == 0 || b[dash - 1] != b'-' {
                return Err(at(
                    first.start,
                    "cannot edit this `environment:` list in place",
                ));
            }
            dash -= 1;
            let indent = " ".repeat(col0(text, dash));
            let gap = &text[dash + 1..first.span.start];
            Ok(Edit {
                range: dash..dash,
                text: vars
                    .iter()
                    .map(|(k, v)| format!("-{gap}{}{nl}{indent}", item(k, v)))
                    .collect(),
            })
        }
        Kind::Scalar { .. } => Err(at(node.start, "`environment:` is not a mapping or a list")),
    }
}

/// `environment:` as a JSON object (list items `K=V` as keys), for comparing meaning.
pub fn as_json(node: &Node) -> serde_json::Value {
    match &node.kind {
        Kind::Seq { items, .. } => serde_json::Value::Object(
            items
                .iter()
                .filter_map(|i| i.as_str())
                .map(|s| match s.split_once('=') {
                    Some((k, v)) => (k.to_string(), serde_json::Value::String(v.to_string())),
                    None => (s.to_string(), serde_json::Value::Null),
                })
                .collect(),
        ),
        Kind::Map { .. } => match node.to_json() {
            serde_json::Value::Object(o) => serde_json::Value::Object(
                o.into_iter()
                    .map(|(k, v)| {
                        let v = match v {
                            serde_json::Value::Null => serde_json::Value::Null,
                            serde_json::Value::String(s) => serde_json::Value::String(s),
                            other => serde_json::Value::String(other.to_string()),
                        };
                        (k, v)
                    })
                    .collect(),
            ),
            other => other,
        },
        _ => serde_json::Value::Object(Default::default()),
    }
}
