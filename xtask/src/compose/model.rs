//! The redis service of a compose file, read from the YAML tree: which service it is, the words of
//! its command (whatever the form), the `redis-server` arguments, the mount at `/data`. Pure.
//!
//! Every word keeps a map back to file byte offsets so the editor can change exactly its bytes.

use std::ops::Range;

use super::shell::{self, Dialect, Tok};
use crate::yaml::{self, Kind, Node, Pos, Style};

/// A problem at a position in the file (becomes `file:line:col: message`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct At {
    pub at: Pos,
    pub message: String,
}

pub fn at(p: Pos, message: impl Into<String>) -> At {
    At {
        at: p,
        message: message.into(),
    }
}

/// Position of a byte offset of `text`.
pub fn pos_in(text: &str, offset: usize) -> Pos {
    yaml::pos_of(text.as_bytes(), offset)
}

/// Column (0-based, bytes) of offset `off` in its line.
pub fn col0(text: &str, off: usize) -> usize {
    off - text[..off].rfind('\n').map_or(0, |i| i + 1)
}

/// The file's line ending: `\r\n` if it has one anywhere, else `\n`.
pub fn newline_of(text: &str) -> &'static str {
    if text.contains("\r\n") {
        "\r\n"
    } else {
        "\n"
    }
}

/// A mapping's key/value pairs.
pub type MapEntries = [(Node, Node)];

/// A block mapping's entries and its first key (a new key goes before it, at its indent); `not_block`
/// is the message for a flow mapping or anything else, `empty` for a mapping without a key.
pub fn block_entries<'a>(
    node: &'a Node,
    not_block: impl Into<String>,
    empty: &str,
) -> Result<(&'a MapEntries, &'a Node), At> {
    let Kind::Map {
        flow: false,
        entries,
    } = &node.kind
    else {
        return Err(at(node.start, not_block));
    };
    let Some((first, _)) = entries.first() else {
        return Err(at(node.start, empty));
    };
    Ok((entries, first))
}

/// A service found in `services:`.
#[derive(Clone, Copy, Debug)]
pub struct Service<'a> {
    pub name: &'a str,
    pub key: &'a Node,
    pub node: &'a Node,
}

const SERVER_BINARIES: [&str; 3] = ["redis-server", "valkey-server", "keydb-server"];

pub fn basename(w: &str) -> &str {
    w.rsplit('/').next().unwrap_or(w)
}

fn is_server(w: &str) -> bool {
    SERVER_BINARIES.contains(&basename(w))
}

pub fn services(root: &Node) -> Result<Vec<Service<'_>>, At> {
    let Some(l) = root.get("services") else {
        return Err(at(root.start, "no `services:` mapping in the file"));
    };
    let Some(entries) = l.value.entries() else {
        return Err(at(l.value.start, "`services:` is not a mapping"));
    };
    let mut out = Vec::new();
    for (k, v) in entries {
        if k.is_merge_key() {
            continue;
        }
        if let Some(name) = k.as_str() {
            out.push(Service {
                name,
                key: k,
                node: v,
            });
        }
    }
    Ok(out)
}

/// Whether a service looks like Redis: image with `redis`/`valkey`, or a command running the server.
fn looks_like_redis(text: &str, s: &Service) -> bool {
    let image = s
        .node
        .get("image")
        .and_then(|l| l.value.as_str())
        .unwrap_or("");
    let image_name = image.rsplit('/').next().unwrap_or(image);
    if ["redis", "valkey", "keydb", "dragonfly"]
        .iter()
        .any(|n| image_name.contains(n))
    {
        return true;
    }
    match s.node.get("command") {
        Some(l) => command_words(text, l.value)
            .map(|ws| {
                ws.iter().any(|w| {
                    let server = |x: &str| is_server(x) || basename(x) == "dragonfly";
                    server(&w.value)
                        || w.value
                            .split_whitespace()
                            .any(|x| server(x.trim_matches(['"', '\''])))
                })
            })
            .unwrap_or(false),
        None => false,
    }
}

/// The redis service: `wanted` by name, else `redis`, else the one service that looks like Redis.
pub fn find_redis<'a>(text: &str, root: &'a Node, wanted: Option<&str>) -> Result<Service<'a>, At> {
    let all = services(root)?;
    let services_at = root.get("services").map_or(root.start, |l| l.key.start);
    if let Some(name) = wanted {
        return all.into_iter().find(|s| s.name == name).ok_or_else(|| {
            at(
                services_at,
                format!("no service `{name}` under `services:` (the environment names it as the redis service)"),
            )
        });
    }
    if let Some(s) = all.iter().find(|s| s.name == "redis") {
        return Ok(*s);
    }
    let found: Vec<Service> = all
        .into_iter()
        .filter(|s| looks_like_redis(text, s))
        .collect();
    match found.len() {
        1 => Ok(found[0]),
        0 => Err(at(
            services_at,
            match root.get("include") {
                Some(_) => "no redis service in this file: none is named `redis`, has a redis/valkey/keydb image or runs the server; this file has `include:`: run on the included file that defines it (--file)",
                None => "no redis service: none is named `redis`, has a redis/valkey/keydb image or runs redis-server",
            },
        )),
        _ => Err(at(
            found[1].key.start,
            format!(
                "more than one service looks like Redis ({}): name it `redis` or use --env with a services.redis entry",
                found.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
            ),
        )),
    }
}

/// A word of the command, with where its bytes are in the file.
#[derive(Clone, Debug)]
pub struct Word {
    pub value: String,
    pub at: Pos,
    /// File offset of every value byte boundary (`None`: not editable in place).
    pub map: Option<Vec<usize>>,
    /// File range of the whole raw word (quotes included).
    pub raw: Option<Range<usize>>,
    /// Index in the YAML list, when the word is a list element.
    pub elem: Option<usize>,
}

/// The words of a `command:` (or `entrypoint:`) value: list elements, or a string split like Compose.
pub fn command_words(text: &str, node: &Node) -> Result<Vec<Word>, At> {
    match &node.kind {
        Kind::Seq { items, .. } => items
            .iter()
            .enumerate()
            .map(|(i, it)| match it.as_str() {
                Some(v) => Ok(Word {
                    value: v.to_string(),
                    at: it.start,
                    map: yaml::scalar_map(text, it),
                    raw: Some(it.span.clone()),
                    elem: Some(i),
                }),
                None => Err(at(it.start, "a command list element is not a string")),
            })
            .collect(),
        Kind::Scalar { value, .. } => {
            if node.is_null() {
                return Ok(Vec::new());
            }
            let smap = yaml::scalar_map(text, node);
            sub_words(text, value, smap.as_deref(), node.start, Dialect::Compose).map(|(ws, _)| ws)
        }
        Kind::Map { .. } => Err(at(
            node.start,
            "`command:` is a mapping; expected a string or a list",
        )),
    }
}

/// Split `value` (whose bytes map to the file through `smap`) into words; also return separators.
pub fn sub_words(
    text: &str,
    value: &str,
    smap: Option<&[usize]>,
    start: Pos,
    dialect: Dialect,
) -> Result<(Vec<Word>, Vec<Vec<String>>), At> {
    let toks = shell::lex(value, dialect).map_err(|(off, msg)| {
        let p = smap
            .and_then(|m| m.get(off))
            .map_or(start, |&o| pos_in(text, o));
        at(p, format!("cannot split the command: {msg}"))
    })?;
    let mut words = Vec::new();
    // For each word: the separators that follow it.
    let mut seps: Vec<Vec<String>> = Vec::new();
    for t in toks {
        match t {
            Tok::Word(w) => {
                let map = smap.map(|m| w.map.iter().map(|&k| m[k]).collect::<Vec<_>>());
                let raw = smap.map(|m| m[w.raw.start]..m[w.raw.end]);
                let p = map.as_ref().map_or(start, |m| pos_in(text, m[0]));
                words.push(Word {
                    value: w.value,
                    at: p,
                    map,
                    raw,
                    elem: None,
                });
                seps.push(Vec::new());
            }
            Tok::Sep(op, _) => {
                if let Some(last) = seps.last_mut() {
                    last.push(op);
                }
            }
        }
    }
    Ok((words, seps))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Container {
    /// No `command:`: the image's default (`redis-server` without arguments).
    Absent,
    /// The arguments are elements of a YAML list (flow or block).
    List { flow: bool },
    /// The arguments are words inside one string (a string command or an `sh -c` script).
    Text,
}

/// How the redis service starts the server.
#[derive(Clone, Debug)]
pub struct Invocation {
    /// The `command:` node, if any.
    pub node: Option<Node>,
    /// Where `command:` is inherited from (alias or `<<`), if it is.
    pub inherited: Option<Pos>,
    pub container: Container,
    /// The command's words as Compose passes them to the container.
    pub words: Vec<Word>,
    /// The `redis-server` word (absent when the command is arguments only, for the image's entrypoint).
    pub server: Option<Word>,
    /// The server's arguments, up to a shell separator.
    pub args: Vec<Word>,
    /// In an `sh -c` script.
    pub in_script: bool,
    /// Every token of the command except the server arguments (script words and separators
    /// included), so an edit can prove it touched nothing else.
    pub outside: Vec<String>,
}

impl Invocation {
    pub fn arg_values(&self) -> Vec<String> {
        self.args.iter().map(|w| w.value.clone()).collect()
    }
}

/// Read the redis service's invocation. Errors when there is a command but no redis-server in it.
pub fn invocation(text: &str, svc: &Service) -> Result<Invocation, At> {
    let Some(l) = svc.node.get("command") else {
        return Ok(Invocation {
            node: None,
            inherited: None,
            container: Container::Absent,
            words: Vec::new(),
            server: None,
            args: Vec::new(),
            in_script: false,
            outside: Vec::new(),
        });
    };
    let node = l.value;
    let inherited = l.inherited();
    let words = command_words(text, node)?;
    let list = match &node.kind {
        Kind::Seq { flow, .. } => Some(*flow),
        _ => None,
    };
    let top_container = match list {
        Some(flow) => Container::List { flow },
        None => Container::Text,
    };
    let mk = |container, server, args, in_script, outside| Invocation {
        node: Some(node.clone()),
        inherited,
        container,
        words: words.clone(),
        server,
        args,
        in_script,
        outside,
    };
    if words.is_empty() {
        return Ok(mk(top_container, None, Vec::new(), false, Vec::new()));
    }
    // `sh -c SCRIPT` (also bash/ash/dash, `-ec`, `/bin/sh`).
    if matches!(
        basename(&words[0].value),
        "sh" | "bash" | "ash" | "dash" | "zsh"
    ) {
        let flag = words.iter().skip(1).position(|w| {
            w.value.starts_with('-')
                && !w.value.starts_with("--")
                && w.value[1..].bytes().all(|c| c.is_ascii_lowercase())
                && w.value.contains('c')
        });
        if let Some(fi) = flag {
            let Some(script) = words.get(fi + 2) else {
                return Err(at(words[fi + 1].at, "`-c` without a script"));
            };
            let (sw, seps) = sub_words(
                text,
                &script.value,
                script.map.as_deref(),
                script.at,
                Dialect::Sh,
            )?;
            let Some(si) = sw.iter().position(|w| is_server(&w.value)) else {
                return Err(at(
                    script.at,
                    "the `sh -c` script does not run redis-server (or valkey-server)",
                ));
            };
            let mut args = Vec::new();
            if seps[si].is_empty() {
                for (j, w) in sw.iter().enumerate().skip(si + 1) {
                    args.push(w.clone());
                    if !seps[j].is_empty() {
                        break;
                    }
                }
            }
            let mut outside: Vec<String> = words
                .iter()
                .enumerate()
                .filter(|(k, _)| *k != fi + 2)
                .map(|(_, w)| w.value.clone())
                .collect();
            outside.push("\0script".into());
            for (j, w) in sw.iter().enumerate() {
                if j <= si || j > si + args.len() {
                    outside.push(w.value.clone());
                }
                outside.extend(seps[j].iter().map(|x| format!("\0{x}")));
            }
            return Ok(mk(
                Container::Text,
                Some(sw[si].clone()),
                args,
                true,
                outside,
            ));
        }
    }
    if let Some(si) = words.iter().position(|w| is_server(&w.value)) {
        let args = words[si + 1..].to_vec();
        let outside = words[..=si].iter().map(|w| w.value.clone()).collect();
        return Ok(mk(
            top_container,
            Some(words[si].clone()),
            args,
            false,
            outside,
        ));
    }
    if words[0].value.starts_with('-') {
        // The official images' entrypoint prepends redis-server when the first argument is a flag.
        return Ok(mk(top_container, None, words.clone(), false, Vec::new()));
    }
    Err(at(
        node.start,
        format!(
            "the redis command does not run redis-server (first word `{}`): cannot tell its persistence settings",
            words[0].value
        ),
    ))
}

/// One `--name value...` option of redis-server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Opt {
    /// Lowercase name without `--`.
    pub name: String,
    /// Index of the `--name` word in the argument list.
    pub index: usize,
    /// Indices of its values.
    pub values: Vec<usize>,
}

/// Split redis-server arguments into an optional leading config file and options.
pub fn parse_server_args(args: &[String]) -> (Option<usize>, Vec<Opt>) {
    let mut conf = None;
    let mut opts: Vec<Opt> = Vec::new();
    for (i, a) in args.iter().enumerate() {
        if i == 0 && (!a.starts_with('-') || a == "-") {
            conf = Some(0);
            continue;
        }
        if let Some(name) = a.strip_prefix("--").filter(|n| !n.is_empty()) {
            opts.push(Opt {
                name: name.to_ascii_lowercase(),
                index: i,
                values: Vec::new(),
            });
        } else if let Some(o) = opts.last_mut() {
            o.values.push(i);
        }
    }
    (conf, opts)
}

/// The effective value of an option (last one wins, as in redis-server), joined by spaces.
pub fn effective(args: &[String], name: &str) -> Option<String> {
    let (_, opts) = parse_server_args(args);
    opts.iter().rev().find(|o| o.name == name).map(|o| {
        o.values
            .iter()
            .map(|&i| args[i].as_str())
            .collect::<Vec<_>>()
            .join(" ")
    })
}

/// Options whose values are secrets and must not be passed on a command line.
pub const SECRET_OPTIONS: [&str; 3] = ["requirepass", "masterauth", "masteruser"];

/// Whether an environment-style key names a secret (`REDIS_PASSWORD`, `API_TOKEN`, ...).
fn secret_key(key: &str) -> bool {
    let k = key
        .trim_matches(|c: char| matches!(c, '"' | '\'' | '[' | ',' | '-' | '{'))
        .to_ascii_uppercase();
    !k.is_empty()
        && ["PASSWORD", "PASSWD", "SECRET", "TOKEN", "AUTH"]
            .iter()
            .any(|s| k.contains(s))
}

/// Replace the value after a password option (`--requirepass X`, `-a X`, `requirepass X`), and the
/// literal value of a secret-named variable (`REDIS_PASSWORD: X`, `- REDIS_PASSWORD=X`), in a
/// line of text with `***`, for anything printed (diffs, findings). `${VAR}` references are kept.
pub fn redact(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut hide_next = false;
    let mut rest = line;
    while !rest.is_empty() {
        let ws_end = rest
            .find(|c: char| !c.is_whitespace())
            .unwrap_or(rest.len());
        out.push_str(&rest[..ws_end]);
        rest = &rest[ws_end..];
        if rest.is_empty() {
            break;
        }
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let word = &rest[..end];
        if let Some((key, value)) = word.split_once('=').filter(|(k, v)| {
            !hide_next && secret_key(k) && !v.trim_start_matches(['"', '\'']).starts_with('$')
        }) {
            let tail: String = value
                .chars()
                .rev()
                .take_while(|c| matches!(c, '"' | '\'' | ']' | ',' | ')' | '}'))
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            out.push_str(key);
            out.push('=');
            if !value.is_empty() {
                out.push_str("***");
            }
            out.push_str(&tail);
        } else if hide_next && word.trim_start_matches(['"', '\'']).starts_with('$') {
            // A `$VAR` reference is not the secret itself.
            out.push_str(word);
            hide_next = false;
        } else if hide_next {
            // Keep closing quotes/brackets that belong to the YAML around the value.
            let tail: String = word
                .chars()
                .rev()
                .take_while(|c| matches!(c, '"' | '\'' | ']' | ',' | ')'))
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            out.push_str("***");
            out.push_str(&tail);
            hide_next = false;
        } else {
            out.push_str(word);
            let bare = word.trim_matches(|c: char| matches!(c, '"' | '\'' | '[' | ',' | '-'));
            hide_next = SECRET_OPTIONS.contains(&bare.to_ascii_lowercase().as_str())
                || word == "-a"
                || word == "--pass"
                || word.strip_suffix(':').is_some_and(secret_key);
        }
        rest = &rest[end..];
    }
    out
}

/// The server arguments without the config-file path and without secret options.
pub fn public_args(args: &[String]) -> Vec<String> {
    let (_, opts) = parse_server_args(args);
    let mut out = Vec::new();
    for o in opts {
        if SECRET_OPTIONS.contains(&o.name.as_str()) {
            continue;
        }
        out.push(args[o.index].clone());
        out.extend(o.values.iter().map(|&i| args[i].clone()));
    }
    out
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MountKind {
    Volume,
    Bind,
    Tmpfs,
    Anonymous,
    Other,
}

/// A mount of the service.
#[derive(Clone, Debug)]
pub struct Mount {
    pub kind: MountKind,
    pub source: Option<String>,
    pub target: String,
    pub at: Pos,
    /// File range of the source name (to rename it in place).
    pub source_range: Option<Range<usize>>,
    /// Index in the service's `volumes:` list.
    pub index: usize,
    pub long: bool,
}

fn path_like(s: &str) -> bool {
    s.starts_with(['/', '.', '~']) || s.contains('/')
}

fn norm_target(t: &str) -> String {
    let t = t.trim_end_matches('/');
    if t.is_empty() {
        "/".into()
    } else {
        t.to_string()
    }
}

/// The service's mounts; also where `volumes:` is inherited from, if it is.
pub fn mounts(text: &str, svc: &Service) -> Result<(Vec<Mount>, Option<Pos>), At> {
    let Some(l) = svc.node.get("volumes") else {
        return Ok((Vec::new(), None));
    };
    let inherited = l.inherited();
    let Some(items) = l.value.items() else {
        if l.value.is_null() {
            return Ok((Vec::new(), inherited));
        }
        return Err(at(l.value.start, "the service's `volumes:` is not a list"));
    };
    let mut out = Vec::new();
    for (index, it) in items.iter().enumerate() {
        match &it.kind {
            Kind::Scalar { value, .. } => {
                let parts: Vec<&str> = value.split(':').collect();
                let (kind, source, target) = match parts.as_slice() {
                    [t] => (MountKind::Anonymous, None, *t),
                    [s, t, ..] => {
                        let kind = if path_like(s) {
                            MountKind::Bind
                        } else if s.contains('$') {
                            MountKind::Other
                        } else {
                            MountKind::Volume
                        };
                        (kind, Some(s.to_string()), *t)
                    }
                    [] => continue,
                };
                let source_range = match (&source, yaml::scalar_map(text, it)) {
                    (Some(s), Some(m)) => Some(m[0]..m[s.len()]),
                    _ => None,
                };
                out.push(Mount {
                    kind,
                    source,
                    target: norm_target(target),
                    at: it.start,
                    source_range,
                    index,
                    long: false,
                });
            }
            Kind::Map { .. } => {
                let get = |k: &str| it.get(k).and_then(|l| l.value.as_str().map(str::to_string));
                let ty = get("type").unwrap_or_else(|| "volume".into());
                let source_node = it.get("source");
                let source = get("source");
                let kind = match (ty.as_str(), &source) {
                    ("volume", Some(s)) if !s.is_empty() => MountKind::Volume,
                    ("volume", _) => MountKind::Anonymous,
                    ("bind", _) => MountKind::Bind,
                    ("tmpfs", _) => MountKind::Tmpfs,
                    _ => MountKind::Other,
                };
                let source_range = source_node.and_then(|l| {
                    let m = yaml::scalar_map(text, l.value)?;
                    Some(m[0]..*m.last()?)
                });
                out.push(Mount {
                    kind,
                    source,
                    target: norm_target(&get("target").unwrap_or_default()),
                    at: it.start,
                    source_range,
                    index,
                    long: true,
                });
            }
            Kind::Seq { .. } => return Err(at(it.start, "a volume entry is a list")),
        }
    }
    Ok((out, inherited))
}

/// The server's data directory (see [`super::channel::data_dir`]); `/data` when the channel is
/// refused (the caller reports that).
pub fn data_dir(text: &str, svc: &Service) -> String {
    super::channel::channel(text, svc)
        .and_then(|c| super::channel::data_dir(text, svc, &c))
        .unwrap_or_else(|_| "/data".into())
}

/// The mount that holds the server's data directory: at it, or else at its nearest parent.
pub fn data_mount(text: &str, svc: &Service) -> Result<Option<Mount>, At> {
    let dir = data_dir(text, svc);
    Ok(mounts(text, svc)?
        .0
        .into_iter()
        .filter(|m| {
            m.target == dir
                || (dir.starts_with(&m.target)
                    && (m.target == "/" || dir.as_bytes().get(m.target.len()) == Some(&b'/')))
        })
        .max_by_key(|m| m.target.len()))
}

/// What the docs generator and other commands need to know about the redis service.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct RedisFacts {
    /// The service name (e.g. `redis`).
    pub service: String,
    /// `image:` as written (may contain `${VAR}`).
    pub image: Option<String>,
    /// The command's words as Compose passes them (empty when the image default runs).
    pub command: Vec<String>,
    /// Whether the server runs inside an `sh -c` script.
    pub via_shell: bool,
    /// redis-server arguments without config file and secrets (see [`public_args`]).
    pub server_args: Vec<String>,
    /// Effective `appendonly` / `appendfsync` from the arguments (`None`: not set on the command line).
    pub appendonly: Option<String>,
    pub appendfsync: Option<String>,
    /// The server's data directory (`--dir`, the channel's, or the image's: `/data`).
    pub data_dir: String,
    /// The named volume mounted at the data directory.
    pub data_volume: Option<String>,
    /// `restart:` policy.
    pub restart: Option<String>,
    /// `healthcheck:` as JSON (aliases and merges resolved), if any.
    pub healthcheck: Option<serde_json::Value>,
    /// `ports:` entries as written (short syntax) or JSON text (long syntax).
    pub ports: Vec<String>,
}

/// The server's arguments through its configuration channel: the command's; Redis Stack's
/// `REDIS_ARGS`; for Bitnami `--appendonly` from `<P>_AOF_ENABLED` (default `yes`) and then
/// `<P>_EXTRA_FLAGS`.
fn server_args_of(text: &str, svc: &Service, inv: &Invocation) -> Result<Vec<String>, At> {
    use super::channel::{self, Channel};
    let env = || super::env::read(svc);
    Ok(match channel::channel(text, svc)? {
        Channel::Command { .. } => inv.arg_values(),
        Channel::Stack => match env()?.entries.iter().find(|e| e.key == "REDIS_ARGS") {
            Some(e) => channel::env_invocation(text, e)?.arg_values(),
            None => Vec::new(),
        },
        Channel::Bitnami { prefix, .. } => {
            let env = env()?;
            let aof = env
                .entries
                .iter()
                .find(|e| e.key == format!("{prefix}_AOF_ENABLED"))
                .and_then(|e| e.value.clone())
                .unwrap_or_else(|| "yes".into());
            let mut args = vec!["--appendonly".to_string(), aof.to_ascii_lowercase()];
            if let Some(e) = env
                .entries
                .iter()
                .find(|e| e.key == format!("{prefix}_EXTRA_FLAGS"))
            {
                args.extend(channel::env_invocation(text, e)?.arg_values());
            }
            if effective(&args, "appendfsync").is_none() {
                args.extend(["--appendfsync".to_string(), "everysec".to_string()]);
            }
            args
        }
    })
}

/// The named volume mounted at `/data`, if any (a bind mount or tmpfs there is none).
pub fn data_volume(text: &str, svc: &Service) -> Result<Option<String>, At> {
    Ok(data_mount(text, svc)?
        .filter(|m| m.kind == MountKind::Volume)
        .and_then(|m| m.source))
}

/// Collect [`RedisFacts`] for a service.
pub fn facts(text: &str, svc: &Service) -> Result<RedisFacts, At> {
    let inv = invocation(text, svc)?;
    let args = server_args_of(text, svc, &inv)?;
    let str_of = |k: &str| {
        svc.node
            .get(k)
            .and_then(|l| l.value.as_str().map(str::to_string))
    };
    let data_volume = data_volume(text, svc)?;
    let ports = svc
        .node
        .get("ports")
        .and_then(|l| l.value.items().map(|v| v.to_vec()))
        .unwrap_or_default()
        .iter()
        .map(|p| match p.as_str() {
            Some(s) => s.to_string(),
            None => p.to_json().to_string(),
        })
        .collect();
    Ok(RedisFacts {
        service: svc.name.to_string(),
        image: str_of("image"),
        command: inv.words.iter().map(|w| w.value.clone()).collect(),
        via_shell: inv.in_script,
        server_args: public_args(&args),
        appendonly: effective(&args, "appendonly"),
        appendfsync: effective(&args, "appendfsync"),
        data_dir: data_dir(text, svc),
        data_volume,
        restart: str_of("restart"),
        healthcheck: svc.node.get("healthcheck").map(|l| l.value.to_json()),
        ports,
    })
}

/// Whether a scalar node can take plain text insertions of `[A-Za-z0-9 -]` safely.
pub fn quote_like(style: Option<Style>, word: &str) -> String {
    match style {
        Some(Style::SingleQuoted) => format!("'{word}'"),
        Some(Style::DoubleQuoted) => format!("\"{word}\""),
        _ => word.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_entries_find_the_first_key_and_refuse_flow_scalar_and_empty() {
        let text = "redis:\r\n  image: redis\r\n  ports: [1]\r\nflow: {a: 1}\r\nscalar: x\r\nempty: {}\r\n";
        let doc = yaml::parse(text).unwrap();
        let node = |k: &str| doc.root.get(k).unwrap().value;
        let (entries, first) = block_entries(node("redis"), "not block", "empty").unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(first.as_str(), Some("image"));
        assert_eq!(col0(text, first.span.start), 2);
        assert_eq!(newline_of(text), "\r\n");
        assert_eq!(newline_of("a: 1\n"), "\n");
        assert_eq!(col0("abc", 0), 0);
        // `{}` is a flow mapping: a block mapping always has a key, `empty` is only a guard.
        for (k, want) in [
            ("flow", "not block"),
            ("scalar", "not block"),
            ("empty", "not block"),
        ] {
            let e = block_entries(node(k), "not block", "empty").unwrap_err();
            assert_eq!(e.message, want, "{k}");
            assert_eq!(e.at, node(k).start, "{k}");
        }
    }

    fn inv(text: &str) -> Invocation {
        let doc = yaml::parse(text).unwrap();
        let svc = find_redis(text, &doc.root, None).unwrap();
        invocation(text, &svc).unwrap()
    }

    #[test]
    fn finds_the_server_in_every_form() {
        for text in [
            "services:\n  redis:\n    command: redis-server --appendonly yes\n",
            "services:\n  cache:\n    image: redis:7\n    command: [\"redis-server\", \"--appendonly\", \"yes\"]\n",
            "services:\n  c:\n    command:\n      - redis-server\n      - --appendonly\n      - yes\n",
            "services:\n  redis:\n    command: sh -c \"exec redis-server /c --appendonly yes && true\"\n",
            "services:\n  redis:\n    command: [sh, -c, 'x && exec redis-server /c --appendonly yes; y']\n",
            "services:\n  redis:\n    command: --appendonly yes\n",
        ] {
            let i = inv(text);
            let args = public_args(&i.arg_values());
            assert_eq!(args, ["--appendonly", "yes"], "{text}");
            for w in &i.args {
                let m = w.map.as_ref().unwrap();
                assert_eq!(&text[m[0]..m[w.value.len()]], w.value, "{text}");
            }
        }
    }

    #[test]
    fn secrets_and_config_file_are_dropped() {
        let a: Vec<String> = ["/etc/r.conf", "--requirepass", "x", "--save", "60", "1"]
            .map(String::from)
            .to_vec();
        assert_eq!(public_args(&a), ["--save", "60", "1"]);
        assert_eq!(effective(&a, "save").as_deref(), Some("60 1"));
    }

    #[test]
    fn redacts_passwords_in_printed_lines() {
        assert_eq!(
            redact("+    command: redis-server --requirepass hunter2 --appendonly yes"),
            "+    command: redis-server --requirepass *** --appendonly yes"
        );
        assert_eq!(
            redact("[\"--masterauth\", \"s3cret\"]"),
            "[\"--masterauth\", ***\"]"
        );
        assert_eq!(redact("redis-cli -a pw ping"), "redis-cli -a *** ping");
    }

    #[test]
    fn redacts_secret_named_variables_but_not_references() {
        assert_eq!(
            redact("       REDIS_PASSWORD: hunter2"),
            "       REDIS_PASSWORD: ***"
        );
        assert_eq!(
            redact("      - \"REDIS_PASSWORD=hunter2\""),
            "      - \"REDIS_PASSWORD=***\""
        );
        assert_eq!(
            redact("    environment: { API_TOKEN: s3cret, A: b }"),
            "    environment: { API_TOKEN: ***, A: b }"
        );
        assert_eq!(
            redact("      REDIS_PASSWORD: ${REDIS_PASSWORD:?set it}"),
            "      REDIS_PASSWORD: ${REDIS_PASSWORD:?set it}"
        );
        assert_eq!(
            redact("      - REDISCLI_AUTH=$$REDIS_PASSWORD"),
            "      - REDISCLI_AUTH=$$REDIS_PASSWORD"
        );
        assert_eq!(redact("      REDIS_HOST: redis"), "      REDIS_HOST: redis");
    }

    #[test]
    fn ambiguous_redis_is_an_error() {
        let text = "services:\n  a:\n    image: redis\n  b:\n    image: valkey/valkey\n";
        let doc = yaml::parse(text).unwrap();
        let e = find_redis(text, &doc.root, None).unwrap_err();
        assert_eq!(e.at.line, 4);
    }

    #[test]
    fn mounts_short_and_long() {
        let text = "services:\n  redis:\n    volumes:\n      - ./redis_data:/x\n      - type: volume\n        source: redis_data\n        target: /data/\n";
        let doc = yaml::parse(text).unwrap();
        let svc = find_redis(text, &doc.root, None).unwrap();
        let m = data_mount(text, &svc).unwrap().unwrap();
        assert_eq!(m.kind, MountKind::Volume);
        assert_eq!(&text[m.source_range.unwrap()], "redis_data");
        let (all, _) = mounts(text, &svc).unwrap();
        assert_eq!(all[0].kind, MountKind::Bind);
    }
}
