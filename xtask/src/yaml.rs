//! A small YAML tree with byte spans, built from granit-parser events. Pure: no I/O.
//!
//! Shared by the compose engine (`compose`) and the workflow checks (`ci`).
//!
//! The tree keeps what the compose engine needs to edit text in place: every node's byte range,
//! 1-based line/column, scalar style, anchors and whether a node was reached through an alias.
//! Duplicate keys and repeated `<<` merge keys are collected as [`Issue`]s (check reports them,
//! apply refuses them); everything else that is not a single YAML document is a [`ParseError`].
//! [`parse`] wants one document whose root is a mapping (a compose file); [`parse_stream`] takes
//! the first document of a stream, whatever its shape (a workflow, checked by rules).

use std::collections::{HashMap, HashSet};
use std::ops::Range;

use granit_parser::{Event, Parser, ScalarStyle, StructureStyle};

/// A position in the source: byte offset, 1-based line and column (in characters).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Pos {
    pub offset: usize,
    pub line: usize,
    pub col: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    Plain,
    SingleQuoted,
    DoubleQuoted,
    Literal,
    Folded,
}

#[derive(Clone, Debug)]
pub enum Kind {
    Scalar {
        value: String,
        style: Style,
    },
    Seq {
        items: Vec<Node>,
        flow: bool,
    },
    Map {
        entries: Vec<(Node, Node)>,
        flow: bool,
    },
}

/// Where a node was reached through an alias (`*name`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AliasRef {
    pub name: String,
    pub at: Pos,
}

#[derive(Clone, Debug)]
pub struct Node {
    pub kind: Kind,
    /// Byte range of the node's content in the source (empty for implicit empty values).
    pub span: Range<usize>,
    pub start: Pos,
    pub anchor: Option<String>,
    pub alias: Option<AliasRef>,
}

/// A problem that does not stop parsing but makes the file ambiguous.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issue {
    pub at: Pos,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    pub at: Pos,
    pub message: String,
}

#[derive(Clone, Debug)]
pub struct Doc {
    pub root: Node,
    pub issues: Vec<Issue>,
}

/// The first document of a YAML stream, whatever its root (see [`parse_stream`]).
#[derive(Clone, Debug)]
pub struct Stream {
    /// `None` when the stream holds no document (empty, or comments only).
    pub root: Option<Node>,
    pub issues: Vec<Issue>,
    /// Where the stream ends: a position for findings about a missing document.
    pub end: Pos,
}

impl Node {
    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            Kind::Scalar { value, .. } => Some(value),
            _ => None,
        }
    }
    pub fn style(&self) -> Option<Style> {
        match &self.kind {
            Kind::Scalar { style, .. } => Some(*style),
            _ => None,
        }
    }
    pub fn entries(&self) -> Option<&[(Node, Node)]> {
        match &self.kind {
            Kind::Map { entries, .. } => Some(entries),
            _ => None,
        }
    }
    pub fn items(&self) -> Option<&[Node]> {
        match &self.kind {
            Kind::Seq { items, .. } => Some(items),
            _ => None,
        }
    }
    pub fn is_merge_key(&self) -> bool {
        matches!(&self.kind, Kind::Scalar { value, style: Style::Plain } if value == "<<")
    }
    /// A null scalar (`~`, `null`, empty).
    pub fn is_null(&self) -> bool {
        matches!(&self.kind, Kind::Scalar { value, style: Style::Plain }
            if value.is_empty() || value == "~" || value == "null" || value == "Null" || value == "NULL")
    }

    /// The value of `key` in this mapping, with `<<` merge keys applied (own keys win, then the
    /// merged mappings in order). `inherited` is true when the value came through a merge key.
    pub fn get(&self, key: &str) -> Option<Lookup<'_>> {
        if let Some(own) = self.own(key) {
            return Some(own);
        }
        for (k, v) in self.entries()? {
            if !k.is_merge_key() {
                continue;
            }
            let sources: Vec<&Node> = match &v.kind {
                Kind::Seq { items, .. } => items.iter().collect(),
                _ => vec![v],
            };
            for s in sources {
                if let Some(found) = s.get(key) {
                    return Some(Lookup {
                        merged_from: Some(found.merged_from.unwrap_or(k.start)),
                        ..found
                    });
                }
            }
        }
        None
    }

    /// The value of `key` among this mapping's own entries (the first one), `<<` merge keys not
    /// applied: for formats without merge keys, such as GitHub workflows.
    pub fn own(&self, key: &str) -> Option<Lookup<'_>> {
        self.entries()?
            .iter()
            .find(|(k, _)| !k.is_merge_key() && k.as_str() == Some(key))
            .map(|(k, v)| Lookup {
                key: k,
                value: v,
                merged_from: None,
            })
    }

    /// Keys of this mapping, merged keys included, in first-seen order.
    pub fn keys(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        let Some(entries) = self.entries() else {
            return out;
        };
        for (k, v) in entries {
            if k.is_merge_key() {
                let sources: Vec<&Node> = match &v.kind {
                    Kind::Seq { items, .. } => items.iter().collect(),
                    _ => vec![v],
                };
                for s in sources {
                    for mk in s.keys() {
                        if !out.contains(&mk) {
                            out.push(mk);
                        }
                    }
                }
            } else if let Some(s) = k.as_str() {
                if !out.contains(&s) {
                    out.push(s);
                }
            }
        }
        out
    }

    /// A JSON view of the node: aliases resolved, merge keys expanded, scalars as strings.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match &self.kind {
            Kind::Scalar { value, style } => {
                if *style == Style::Plain && self.is_null() {
                    Value::Null
                } else {
                    Value::String(value.clone())
                }
            }
            Kind::Seq { items, .. } => Value::Array(items.iter().map(Node::to_json).collect()),
            Kind::Map { entries, .. } => {
                // Linear: merged mappings first (earlier ones win), then own keys (which win).
                let mut m = serde_json::Map::new();
                for (_, v) in entries.iter().filter(|(k, _)| k.is_merge_key()) {
                    let sources: Vec<&Node> = match &v.kind {
                        Kind::Seq { items, .. } => items.iter().rev().collect(),
                        _ => vec![v],
                    };
                    for src in sources {
                        if let Value::Object(o) = src.to_json() {
                            m.extend(o);
                        }
                    }
                }
                for (k, v) in entries.iter().filter(|(k, _)| !k.is_merge_key()) {
                    let key = match k.as_str() {
                        Some(s) => s.to_string(),
                        None => k.to_json().to_string(),
                    };
                    m.insert(key, v.to_json());
                }
                Value::Object(m)
            }
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Lookup<'a> {
    pub key: &'a Node,
    pub value: &'a Node,
    /// Position of the `<<` key the value was merged through, if any.
    pub merged_from: Option<Pos>,
}

impl Lookup<'_> {
    /// Where the value is inherited from, when it cannot be edited in place for this mapping only.
    pub fn inherited(&self) -> Option<Pos> {
        self.merged_from
            .or_else(|| self.value.alias.as_ref().map(|a| a.at))
    }
}

/// Upper bound on nodes created (alias expansion included): a guard against "billion laughs".
const MAX_NODES: usize = 1_000_000;

enum Frame {
    Seq {
        node: Node,
        id: usize,
        items: Vec<Node>,
    },
    Map {
        node: Node,
        id: usize,
        entries: Vec<(Node, Node)>,
        key: Option<Node>,
        seen: HashSet<String>,
        merges: usize,
    },
}

fn pos(m: &granit_parser::Marker, text: &str) -> Pos {
    Pos {
        offset: m.byte_offset().unwrap_or(0).min(text.len()),
        line: m.line(),
        col: m.col() + 1,
    }
}

/// Position of a byte offset (for errors not coming from the parser, e.g. invalid UTF-8).
pub fn pos_of(bytes: &[u8], offset: usize) -> Pos {
    let offset = offset.min(bytes.len());
    let before = &bytes[..offset];
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1);
    let col = String::from_utf8_lossy(&before[line_start..])
        .chars()
        .count()
        + 1;
    Pos { offset, line, col }
}

/// Decode file bytes as UTF-8, with the position of the first invalid byte on failure.
pub fn decode(bytes: &[u8]) -> Result<&str, ParseError> {
    std::str::from_utf8(bytes).map_err(|e| ParseError {
        at: pos_of(bytes, e.valid_up_to()),
        message: "the file is not valid UTF-8".into(),
    })
}

/// Parse one YAML document whose root is a mapping.
pub fn parse(text: &str) -> Result<Doc, ParseError> {
    let Stream { root, issues, .. } = build(text, true)?;
    let root = root.ok_or_else(|| ParseError {
        at: Pos {
            offset: 0,
            line: 1,
            col: 1,
        },
        message: "the file is empty: expected a compose mapping with `services:`".into(),
    })?;
    if !matches!(root.kind, Kind::Map { .. }) {
        return Err(ParseError {
            at: root.start,
            message: "the document root is not a mapping: a compose file starts with keys like `services:`".into(),
        });
    }
    Ok(Doc { root, issues })
}

/// Parse the first document of a YAML stream, any root (or none). Later documents are read for
/// syntax errors only.
pub fn parse_stream(text: &str) -> Result<Stream, ParseError> {
    build(text, false)
}

/// The tree of the first document. `one_document`: a second document is an error (else skipped).
fn build(text: &str, one_document: bool) -> Result<Stream, ParseError> {
    let opts = granit_parser::options! { emit_anchor_events: true, emit_comments: false };
    let mut stack: Vec<Frame> = Vec::new();
    let mut root: Option<Node> = None;
    let mut anchors: HashMap<usize, Node> = HashMap::new();
    let mut anchor_names: HashMap<usize, String> = HashMap::new();
    let mut issues = Vec::new();
    let mut docs = 0usize;
    let mut end = Pos::default();
    let mut nodes = 0usize;
    // The anchor id of the last scalar pushed (anchor events follow their node).
    let mut last_scalar_anchor: usize = 0;

    for ev in Parser::new_from_str_with_options(text, opts) {
        let (event, span) = ev.map_err(|e| {
            let mut at = pos(e.marker(), text);
            // Point at the offending tab itself, not after it.
            if at.offset > 0 && at.col > 1 && text.as_bytes().get(at.offset - 1) == Some(&b'\t') {
                at.offset -= 1;
                at.col -= 1;
            }
            ParseError {
                at,
                message: e.info().to_string(),
            }
        })?;
        let start = pos(&span.start, text);
        let range = start.offset
            ..span
                .end
                .byte_offset()
                .unwrap_or(start.offset)
                .min(text.len());
        let fresh = |kind: Kind| Node {
            kind,
            span: range.clone(),
            start,
            anchor: None,
            alias: None,
        };
        match event {
            Event::DocumentStart(..) => docs += 1,
            Event::StreamEnd => end = start,
            _ => {}
        }
        if docs > 1 && !one_document {
            continue;
        }
        let completed: Option<Node> = match event {
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => None,
            Event::DocumentStart(..) => {
                if docs > 1 {
                    return Err(ParseError {
                        at: start,
                        message: "more than one YAML document in the file: a compose file is one document".into(),
                    });
                }
                None
            }
            Event::Comment(..) => None,
            Event::Anchor(id, name) => {
                let name = name.into_owned();
                anchor_names.insert(id, name.clone());
                if id == last_scalar_anchor {
                    // Attach to the scalar just pushed (last item / pending key / last value).
                    let target = match stack.last_mut() {
                        Some(Frame::Seq { items, .. }) => items.last_mut(),
                        Some(Frame::Map { entries, key, .. }) => match key {
                            Some(k) => Some(k),
                            None => entries.last_mut().map(|(_, v)| v),
                        },
                        None => root.as_mut(),
                    };
                    if let Some(t) = target {
                        t.anchor = Some(name);
                        anchors.insert(id, t.clone());
                    }
                } else {
                    match stack.last_mut() {
                        Some(Frame::Seq { node, .. }) | Some(Frame::Map { node, .. }) => {
                            node.anchor = Some(name);
                        }
                        None => {}
                    }
                }
                None
            }
            Event::Alias(id) => {
                let Some(target) = anchors.get(&id) else {
                    return Err(ParseError {
                        at: start,
                        message: "alias to an anchor that is not defined before it".into(),
                    });
                };
                nodes += count(target);
                if nodes > MAX_NODES {
                    return Err(ParseError {
                        at: start,
                        message: "aliases expand to too many nodes".into(),
                    });
                }
                let mut n = target.clone();
                n.alias = Some(AliasRef {
                    name: anchor_names.get(&id).cloned().unwrap_or_default(),
                    at: start,
                });
                Some(n)
            }
            Event::UnresolvedAlias(_) => {
                return Err(ParseError {
                    at: start,
                    message: "alias to an undefined anchor".into(),
                })
            }
            Event::Scalar(value, style, anchor_id, _tag) => {
                nodes += 1;
                last_scalar_anchor = anchor_id;
                let style = match style {
                    ScalarStyle::Plain => Style::Plain,
                    ScalarStyle::SingleQuoted => Style::SingleQuoted,
                    ScalarStyle::DoubleQuoted => Style::DoubleQuoted,
                    ScalarStyle::Literal => Style::Literal,
                    ScalarStyle::Folded => Style::Folded,
                };
                Some(fresh(Kind::Scalar {
                    value: value.into_owned(),
                    style,
                }))
            }
            Event::SequenceStart(st, id, _) => {
                nodes += 1;
                last_scalar_anchor = 0;
                stack.push(Frame::Seq {
                    node: fresh(Kind::Seq {
                        items: Vec::new(),
                        flow: st == StructureStyle::Flow,
                    }),
                    id,
                    items: Vec::new(),
                });
                None
            }
            Event::MappingStart(st, id, _) => {
                nodes += 1;
                last_scalar_anchor = 0;
                stack.push(Frame::Map {
                    node: fresh(Kind::Map {
                        entries: Vec::new(),
                        flow: st == StructureStyle::Flow,
                    }),
                    id,
                    entries: Vec::new(),
                    key: None,
                    seen: HashSet::new(),
                    merges: 0,
                });
                None
            }
            Event::SequenceEnd => match stack.pop() {
                Some(Frame::Seq {
                    mut node,
                    id,
                    items,
                }) => {
                    node.span.end = node.span.end.max(range.end);
                    if let Kind::Seq { items: slot, .. } = &mut node.kind {
                        *slot = items;
                    }
                    if id != 0 {
                        anchors.insert(id, node.clone());
                    }
                    Some(node)
                }
                _ => None,
            },
            Event::MappingEnd => match stack.pop() {
                Some(Frame::Map {
                    mut node,
                    id,
                    entries,
                    ..
                }) => {
                    node.span.end = node.span.end.max(range.end);
                    if let Kind::Map { entries: slot, .. } = &mut node.kind {
                        *slot = entries;
                    }
                    if id != 0 {
                        anchors.insert(id, node.clone());
                    }
                    Some(node)
                }
                _ => None,
            },
            _ => None,
        };
        let Some(n) = completed else { continue };
        if nodes > MAX_NODES {
            return Err(ParseError {
                at: start,
                message: "the document has too many nodes".into(),
            });
        }
        match stack.last_mut() {
            None => root = Some(n),
            Some(Frame::Seq { items, .. }) => items.push(n),
            Some(Frame::Map {
                entries,
                key,
                seen,
                merges,
                ..
            }) => match key.take() {
                None => {
                    if n.is_merge_key() {
                        *merges += 1;
                        if *merges > 1 {
                            issues.push(Issue {
                                at: n.start,
                                message: "repeated `<<` merge key in one mapping (Compose rejects it): merge a list instead, `<<: [*a, *b]`".into(),
                            });
                        }
                    } else if let Some(k) = n.as_str() {
                        if !seen.insert(k.to_string()) {
                            issues.push(Issue {
                                at: n.start,
                                message: format!(
                                    "duplicate key `{k}` in one mapping (YAML forbids it; which one wins depends on the tool)"
                                ),
                            });
                        }
                    }
                    *key = Some(n);
                }
                Some(k) => entries.push((k, n)),
            },
        }
    }
    Ok(Stream { root, issues, end })
}

fn count(n: &Node) -> usize {
    match &n.kind {
        Kind::Scalar { .. } => 1,
        Kind::Seq { items, .. } => 1 + items.iter().map(count).sum::<usize>(),
        Kind::Map { entries, .. } => {
            1 + entries
                .iter()
                .map(|(k, v)| count(k) + count(v))
                .sum::<usize>()
        }
    }
}

/// For a scalar node: for every byte boundary `i` of its value (`0..=len`), the byte offset in the
/// source where the value's byte `i` comes from (insertions at `i` go there). `None` when the
/// scalar's notation cannot be mapped (multi-line plain or double-quoted scalars, complex blocks).
pub fn scalar_map(text: &str, node: &Node) -> Option<Vec<usize>> {
    let Kind::Scalar { value, style } = &node.kind else {
        return None;
    };
    let raw = text.get(node.span.clone())?;
    let base = node.span.start;
    let mut dec: Vec<u8> = Vec::new();
    let mut map: Vec<usize> = Vec::new();
    match style {
        Style::Plain => {
            if raw != value {
                return None;
            }
            map.extend((0..=raw.len()).map(|i| base + i));
            return Some(map);
        }
        Style::SingleQuoted => {
            let inner = raw.strip_prefix('\'')?.strip_suffix('\'')?;
            if inner.contains(['\n', '\r']) {
                return None;
            }
            let b = inner.as_bytes();
            let mut i = 0;
            while i < b.len() {
                dec.push(b[i]);
                map.push(base + 1 + i);
                i += if b[i] == b'\'' { 2 } else { 1 };
            }
            map.push(base + 1 + inner.len());
        }
        Style::DoubleQuoted => {
            let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
            if inner.contains(['\n', '\r']) {
                return None;
            }
            let b = inner.as_bytes();
            let mut i = 0;
            while i < b.len() {
                if b[i] != b'\\' {
                    dec.push(b[i]);
                    map.push(base + 1 + i);
                    i += 1;
                    continue;
                }
                let e = *b.get(i + 1)?;
                let (ch, len): (char, usize) = match e {
                    b'x' | b'u' | b'U' => {
                        let n = match e {
                            b'x' => 2,
                            b'u' => 4,
                            _ => 8,
                        };
                        let hex = inner.get(i + 2..i + 2 + n)?;
                        (char::from_u32(u32::from_str_radix(hex, 16).ok()?)?, 2 + n)
                    }
                    b'0' => ('\0', 2),
                    b'a' => ('\x07', 2),
                    b'b' => ('\x08', 2),
                    b't' | b'\t' => ('\t', 2),
                    b'n' => ('\n', 2),
                    b'v' => ('\x0b', 2),
                    b'f' => ('\x0c', 2),
                    b'r' => ('\r', 2),
                    b'e' => ('\x1b', 2),
                    b' ' => (' ', 2),
                    b'"' => ('"', 2),
                    b'/' => ('/', 2),
                    b'\\' => ('\\', 2),
                    b'N' => ('\u{85}', 2),
                    b'_' => ('\u{a0}', 2),
                    b'L' => ('\u{2028}', 2),
                    b'P' => ('\u{2029}', 2),
                    _ => return None,
                };
                let mut buf = [0u8; 4];
                for byte in ch.encode_utf8(&mut buf).bytes() {
                    dec.push(byte);
                    map.push(base + 1 + i);
                }
                i += len;
            }
            map.push(base + 1 + inner.len());
        }
        Style::Literal | Style::Folded => {
            // The span starts at the first content character; its column is the indentation.
            let indent = node.start.col.checked_sub(1)?;
            let mut off = node.span.start.checked_sub(indent)?;
            if !text.is_char_boundary(off) {
                return None;
            }
            let folded = *style == Style::Folded;
            let mut prev_content = false;
            let mut pending_break: Option<usize> = None;
            while dec.len() < value.len() && off < text.len() {
                let line_end = text[off..].find('\n').map_or(text.len(), |i| off + i);
                let mut content_end = line_end;
                if content_end > off && text.as_bytes()[content_end - 1] == b'\r' {
                    content_end -= 1;
                }
                let line = &text[off..content_end];
                let blank = line.trim_start_matches(' ').is_empty() && line.len() <= indent
                    || line.bytes().all(|c| c == b' ');
                if !blank {
                    if line.len() < indent || !line.as_bytes()[..indent].iter().all(|c| *c == b' ')
                    {
                        break; // dedent: end of the block
                    }
                    let body = &line[indent..];
                    if folded && body.starts_with([' ', '\t']) {
                        return None; // more-indented lines fold differently
                    }
                    if let Some(br) = pending_break.take() {
                        if folded && prev_content {
                            dec.push(b' ');
                            map.push(br);
                        } else if !folded {
                            dec.push(b'\n');
                            map.push(br);
                        }
                    }
                    for (i, byte) in body.bytes().enumerate() {
                        dec.push(byte);
                        map.push(off + indent + i);
                    }
                    prev_content = true;
                } else {
                    if let Some(br) = pending_break.take() {
                        if !folded || !prev_content {
                            dec.push(b'\n');
                            map.push(br);
                        }
                    }
                    dec.push(b'\n');
                    map.push(content_end);
                    prev_content = false;
                    if line_end >= text.len() {
                        break;
                    }
                    off = line_end + 1;
                    continue;
                }
                pending_break = Some(content_end);
                if line_end >= text.len() {
                    break;
                }
                off = line_end + 1;
            }
            if let Some(br) = pending_break {
                if dec.len() < value.len() {
                    dec.push(b'\n');
                    map.push(br);
                }
            }
            if dec.len() < value.len() || &dec[..value.len()] != value.as_bytes() {
                return None;
            }
            map.truncate(value.len());
            // Insertions at the end go before the final line break (if the value has one).
            let end = if value.ends_with('\n') {
                map.last().copied()?
            } else {
                match map.last() {
                    Some(&last) => last + text[last..].chars().next().map_or(1, char::len_utf8),
                    None => node.span.start,
                }
            };
            map.push(end);
            return Some(map);
        }
    }
    (dec == value.as_bytes()).then_some(map)
}

/// A text edit in file byte coordinates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Edit {
    pub range: Range<usize>,
    pub text: String,
}

/// Apply non-overlapping edits (any order) to `text`. `None` if edits overlap or are out of range.
pub fn apply_edits(text: &str, edits: &[Edit]) -> Option<String> {
    let mut sorted: Vec<&Edit> = edits.iter().collect();
    sorted.sort_by_key(|e| (e.range.start, e.range.end));
    let mut out = String::with_capacity(text.len() + 64);
    let mut at = 0;
    for e in sorted {
        if e.range.start < at || e.range.end > text.len() || e.range.start > e.range.end {
            return None;
        }
        out.push_str(text.get(at..e.range.start)?);
        out.push_str(&e.text);
        at = e.range.end;
    }
    out.push_str(text.get(at..)?);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar_at<'a>(doc: &'a Doc, key: &str) -> &'a Node {
        doc.root.get(key).unwrap().value
    }

    #[test]
    fn maps_every_scalar_style_back_to_the_source() {
        let text = "a: plain text\nb: 'it''s'\nc: \"x\\ty\\u00e9z\"\nd: |\n  one\n  two\ne: >-\n  f1\n  f2\n";
        let doc = parse(text).unwrap();
        for key in ["a", "b", "c", "d", "e"] {
            let n = scalar_at(&doc, key);
            let map = scalar_map(text, n).unwrap_or_else(|| panic!("{key}"));
            assert_eq!(map.len(), n.as_str().unwrap().len() + 1, "{key}");
        }
        let b = scalar_at(&doc, "b");
        let m = scalar_map(text, b).unwrap();
        // "it's": the `'` comes from the first quote of `''`.
        assert_eq!(&text[m[2]..m[2] + 2], "''");
        let e = scalar_at(&doc, "e");
        assert_eq!(e.as_str(), Some("f1 f2"));
        let m = scalar_map(text, e).unwrap();
        assert_eq!(&text[m[3]..m[5]], "f2");
    }

    #[test]
    fn crlf_literal_blocks_map() {
        let text = "b: |\r\n  x y\r\n  z\r\n";
        let doc = parse(text).unwrap();
        let n = scalar_at(&doc, "b");
        let m = scalar_map(text, n).unwrap();
        assert_eq!(&text[m[4]..m[5]], "z");
    }

    #[test]
    fn duplicates_and_repeated_merges_are_issues() {
        let doc = parse("a: 1\nb: 2\na: 3\nx: &x {k: 1}\ny:\n  <<: *x\n  <<: *x\n").unwrap();
        assert_eq!(doc.issues.len(), 2);
        assert_eq!((doc.issues[0].at.line, doc.issues[0].at.col), (3, 1));
        assert_eq!((doc.issues[1].at.line, doc.issues[1].at.col), (7, 3));
    }

    #[test]
    fn merge_keys_and_aliases_resolve() {
        let doc =
            parse("base: &b\n  image: redis\n  command: x\nsvc:\n  <<: *b\n  image: valkey\n")
                .unwrap();
        let svc = doc.root.get("svc").unwrap().value;
        assert_eq!(svc.get("image").unwrap().value.as_str(), Some("valkey"));
        let c = svc.get("command").unwrap();
        assert_eq!(c.value.as_str(), Some("x"));
        assert_eq!(c.inherited().map(|p| p.line), Some(5));
    }

    #[test]
    fn errors_have_positions() {
        let e = parse("a: [1, 2\n").unwrap_err();
        assert_eq!((e.at.line, e.at.col), (1, 4));
        let e = parse("a:\n\tb: 1\n").unwrap_err();
        assert_eq!(e.at.line, 2);
        let e = parse("- a\n").unwrap_err();
        assert!(e.message.contains("not a mapping"));
        let e = decode(b"a: 1\nb: \xff\n").unwrap_err();
        assert_eq!((e.at.line, e.at.col), (2, 4));
    }

    #[test]
    fn own_lookups_skip_merge_keys_and_take_the_first_entry() {
        let doc =
            parse("base: &b {image: redis}\nsvc:\n  <<: *b\n  command: x\n  command: y\n").unwrap();
        let svc = doc.root.get("svc").unwrap().value;
        assert!(svc.get("image").is_some());
        assert!(svc.own("image").is_none());
        assert!(svc.own("<<").is_none());
        let c = svc.own("command").unwrap();
        assert_eq!(c.value.as_str(), Some("x"));
        assert_eq!((c.key.start.line, c.key.start.col), (4, 3));
        assert_eq!(c.merged_from, None);
        assert!(c.value.own("command").is_none());
    }

    #[test]
    fn streams_give_the_first_document_of_any_shape() {
        let s = parse_stream("").unwrap();
        assert!(s.root.is_none());
        assert_eq!((s.end.line, s.end.col), (1, 1));
        let s = parse_stream("# a\n# b\n").unwrap();
        assert!(s.root.is_none());
        assert_eq!((s.end.line, s.end.col), (3, 1));
        let s = parse_stream("- a\n- b\n").unwrap();
        assert_eq!(s.root.unwrap().items().map(<[Node]>::len), Some(2));
        let s = parse_stream("a: 1\na: 2\n---\nb: 2\n").unwrap();
        let root = s.root.unwrap();
        assert_eq!(root.get("a").unwrap().value.as_str(), Some("1"));
        assert!(root.get("b").is_none());
        assert_eq!(s.issues.len(), 1);
        // Later documents are still read for syntax errors; `parse` refuses them outright.
        let e = parse_stream("a: 1\n---\nb: [\n").unwrap_err();
        assert_eq!(e.at.line, 3);
        let e = parse("a: 1\n---\nb: 2\n").unwrap_err();
        assert!(e.message.contains("more than one YAML document"), "{e:?}");
    }

    #[test]
    fn edits_apply_in_any_order() {
        let edits = [
            Edit {
                range: 4..5,
                text: "Z".into(),
            },
            Edit {
                range: 0..0,
                text: ">".into(),
            },
        ];
        assert_eq!(apply_edits("abcdef", &edits).unwrap(), ">abcdZf");
    }
}
