//! How the redis service's image is configured (its "channel"), and where its data directory is.
//! Pure.
//!
//! - Official `redis`, `valkey/valkey`, `eqalpha/keydb` images, or any `command:` that runs the
//!   server: the server's command line ([`Channel::Command`]).
//! - Bitnami's images: environment variables read by their entrypoint (`REDIS_AOF_ENABLED`,
//!   default `yes`; `REDIS_EXTRA_FLAGS`), data in `/bitnami/<name>/data` ([`Channel::Bitnami`]).
//! - Redis Stack: extra server arguments in `REDIS_ARGS`, read by the entrypoint that also loads
//!   the modules ([`Channel::Stack`]).
//! - Dragonfly has no AOF: refused with the reason. Anything else without a command that runs
//!   the server: refused, saying what to add by hand.

use super::model::{self, at, At, Service};
use crate::yaml::{Kind, Node, Pos};

/// The server family (binary names, image defaults).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Redis,
    Valkey,
    KeyDb,
}

impl Family {
    pub fn binary(self) -> &'static str {
        match self {
            Family::Redis => "redis-server",
            Family::Valkey => "valkey-server",
            Family::KeyDb => "keydb-server",
        }
    }
    /// The image's default command (`CMD`): KeyDB's passes its config file first.
    pub fn default_command(self) -> Vec<&'static str> {
        match self {
            Family::KeyDb => vec!["keydb-server", "/etc/keydb/keydb.conf"],
            f => vec![f.binary()],
        }
    }
    fn from_binary(b: &str) -> Option<Family> {
        match b {
            "redis-server" => Some(Family::Redis),
            "valkey-server" => Some(Family::Valkey),
            "keydb-server" => Some(Family::KeyDb),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Channel {
    /// The server's arguments are on its command line: in `command:`, or (no `command:`) the
    /// official image's default command, which `apply` may spell out with the options added.
    Command {
        family: Family,
        /// `command:` absent: the image default runs.
        image_default: bool,
    },
    /// Bitnami: `<PREFIX>_AOF_ENABLED` (default `yes`) and `<PREFIX>_EXTRA_FLAGS`.
    Bitnami {
        /// `REDIS`, `VALKEY` or `KEYDB`.
        prefix: String,
        /// `/bitnami/redis/data` etc.
        data_dir: String,
    },
    /// Redis Stack: `REDIS_ARGS` holds extra redis-server arguments.
    Stack,
}

impl Channel {
    pub fn describe(&self) -> String {
        match self {
            Channel::Command {
                image_default: true,
                family,
            } => format!("the image's default command ({})", family.binary()),
            Channel::Command { family, .. } => format!("the {} command line", family.binary()),
            Channel::Bitnami { prefix, .. } => {
                format!(
                    "Bitnami's environment variables ({prefix}_AOF_ENABLED, {prefix}_EXTRA_FLAGS)"
                )
            }
            Channel::Stack => "Redis Stack's REDIS_ARGS".into(),
        }
    }
}

/// An image reference split into its repository path (lowercase, no registry, tag or digest).
/// `None` when it is set by a variable.
pub fn image_repo(image: &str) -> Option<String> {
    if image.contains('$') {
        return None;
    }
    let no_digest = image.split('@').next().unwrap_or(image);
    let last_slash = no_digest.rfind('/').map_or(0, |i| i + 1);
    let no_tag = match no_digest[last_slash..].find(':') {
        Some(i) => &no_digest[..last_slash + i],
        None => no_digest,
    };
    let mut parts: Vec<&str> = no_tag.split('/').collect();
    // A registry host: has a dot or a port, or is `localhost`.
    if parts.len() > 1 && (parts[0].contains(['.', ':']) || parts[0] == "localhost") {
        parts.remove(0);
    }
    Some(parts.join("/").to_ascii_lowercase())
}

fn segments(repo: &str) -> (Option<&str>, &str) {
    match repo.rsplit_once('/') {
        Some((ns, name)) => (Some(ns.rsplit('/').next().unwrap_or(ns)), name),
        None => (None, repo),
    }
}

/// Whether an image is Dragonfly's (which has no AOF).
pub fn is_dragonfly_image(image: &str) -> bool {
    image_repo(image).is_some_and(|r| r.split('/').any(|s| s.starts_with("dragonfly")))
}

/// The family of an official image (`redis`, `library/redis`, `valkey/valkey`, `eqalpha/keydb`).
fn official_family(repo: &str) -> Option<Family> {
    match segments(repo) {
        (None | Some("library"), "redis") => Some(Family::Redis),
        (None | Some("library") | Some("valkey"), "valkey") => Some(Family::Valkey),
        (Some("eqalpha"), "keydb") => Some(Family::KeyDb),
        _ => None,
    }
}

fn bitnami(repo: &str) -> Option<String> {
    match segments(repo) {
        (Some(ns), name @ ("redis" | "valkey" | "keydb")) if ns.starts_with("bitnami") => {
            Some(name.to_string())
        }
        _ => None,
    }
}

fn is_stack(repo: &str) -> bool {
    matches!(segments(repo).1, "redis-stack" | "redis-stack-server")
}

const DRAGONFLY: &str = "Dragonfly has no append-only file (it persists only by snapshots: `--dir`, `--dbfilename`, `--snapshot_cron`): it cannot be made durable this way; snapshots lose the writes since the last one, so use Redis, Valkey or KeyDB with AOF if every acknowledged write must survive";

/// How the service's server is configured. `Err`: refused (exit 2) with the reason.
pub fn channel(text: &str, svc: &Service) -> Result<Channel, At> {
    let image_l = svc.node.get("image");
    let image = image_l.and_then(|l| l.value.as_str()).unwrap_or("");
    let image_at = image_l.map_or(svc.key.start, |l| l.value.start);
    if is_dragonfly_image(image) {
        return Err(at(image_at, DRAGONFLY));
    }
    let repo = image_repo(image);
    if let Some(l) = svc.node.get("command") {
        let words = model::command_words(text, l.value)?;
        let all_words: Vec<String> = words
            .iter()
            .flat_map(|w| {
                w.value
                    .split_whitespace()
                    .map(|x| x.trim_matches(['"', '\'']).to_string())
                    .collect::<Vec<_>>()
            })
            .collect();
        if all_words.iter().any(|w| model::basename(w) == "dragonfly") {
            return Err(at(l.value.start, DRAGONFLY));
        }
        if let Some(f) = all_words
            .iter()
            .find_map(|w| Family::from_binary(model::basename(w)))
        {
            return Ok(Channel::Command {
                family: f,
                image_default: false,
            });
        }
        if words.first().is_some_and(|w| w.value.starts_with('-')) {
            // Arguments only: the official images' entrypoint prepends the server.
            if let Some(f) = repo.as_deref().and_then(official_family) {
                return Ok(Channel::Command {
                    family: f,
                    image_default: false,
                });
            }
            return Err(at(
                l.value.start,
                format!(
                    "`command:` gives only arguments, and the image `{image}` is not one whose entrypoint is known to pass them to the server (official redis, valkey/valkey, eqalpha/keydb): start the server explicitly (`command: [\"redis-server\", ...]`) and run again"
                ),
            ));
        }
        // Neither: model::invocation reports it.
        return Ok(Channel::Command {
            family: Family::Redis,
            image_default: false,
        });
    }
    let Some(repo) = repo else {
        return Err(at(
            image_at,
            if image.is_empty() {
                "the redis service has no `image:` and no `command:`: cannot tell how its server is configured; add `command: [\"redis-server\", \"--appendonly\", \"yes\", \"--appendfsync\", \"everysec\"]` by hand".to_string()
            } else {
                format!("the image `{image}` is set by a variable and there is no `command:`: cannot tell how its server is configured; add `command: [\"redis-server\", \"--appendonly\", \"yes\", \"--appendfsync\", \"everysec\"]` by hand if it is a redis image")
            },
        ));
    };
    if let Some(name) = bitnami(&repo) {
        return Ok(Channel::Bitnami {
            prefix: name.to_ascii_uppercase(),
            data_dir: format!("/bitnami/{name}/data"),
        });
    }
    if is_stack(&repo) {
        return Ok(Channel::Stack);
    }
    if let Some(f) = official_family(&repo) {
        return Ok(Channel::Command {
            family: f,
            image_default: true,
        });
    }
    Err(at(
        image_at,
        format!("the image `{image}` has no `command:` and is not one whose configuration is known (official redis, valkey/valkey, eqalpha/keydb, Bitnami, Redis Stack): apply will not guess how it starts; add `--appendonly yes --appendfsync everysec` where that image takes its server options, by hand"),
    ))
}

/// `--dir` among server arguments (last one wins), if absolute.
fn dir_arg(args: &[String]) -> Option<String> {
    model::effective(args, "dir").filter(|d| d.starts_with('/'))
}

/// The server's data directory: `--dir` on its command line (or in `REDIS_ARGS`), else the
/// image's (`/data`; Bitnami `/bitnami/<name>/data`).
pub fn data_dir(text: &str, svc: &Service, ch: &Channel) -> Result<String, At> {
    Ok(match ch {
        Channel::Command { .. } => {
            let args = model::invocation(text, svc)
                .map(|i| i.arg_values())
                .unwrap_or_default();
            dir_arg(&args).unwrap_or_else(|| "/data".into())
        }
        Channel::Bitnami { data_dir, .. } => data_dir.clone(),
        Channel::Stack => {
            let args = super::env::get(text, svc)?
                .iter()
                .find(|e| e.key == "REDIS_ARGS")
                .and_then(|e| e.value.clone())
                .and_then(|v| super::shell::words(&v, super::shell::Dialect::Compose))
                .unwrap_or_default();
            dir_arg(&args).unwrap_or_else(|| "/data".into())
        }
    })
}

/// The effective service when it uses `extends:` from a service of the same file (Compose's
/// merge: `environment:` merged by key and `volumes:` by target, the local entry winning; other
/// keys replaced by the local ones), or `None` without `extends:`. Nodes keep their spans, so a
/// value that comes from the extended service points at its line there. `extends:` from another
/// file, a cycle, or forms that cannot be merged are refused (exit 2), naming `extends`.
pub fn effective(root: &Node, svc: &Service) -> Result<Option<Node>, At> {
    if svc.node.get("extends").is_none() {
        return Ok(None);
    }
    let mut seen = vec![svc.name.to_string()];
    merged(root, svc.node, svc.name, &mut seen).map(Some)
}

fn merged(root: &Node, node: &Node, name: &str, seen: &mut Vec<String>) -> Result<Node, At> {
    let Some(l) = node.get("extends") else {
        return Ok(node.clone());
    };
    let (base, file) = match l.value.as_str() {
        Some(b) => (b.to_string(), None),
        None => (
            l.value
                .get("service")
                .and_then(|s| s.value.as_str().map(str::to_string))
                .unwrap_or_default(),
            l.value
                .get("file")
                .and_then(|f| f.value.as_str().map(str::to_string)),
        ),
    };
    if let Some(f) = file {
        return Err(at(
            l.key.start,
            format!("service `{name}` uses `extends:` from another file ({f}, service `{base}`): its effective command and volumes are there; run on that file (--file), or give `{name}` its own complete `command:` and `volumes:` and run again"),
        ));
    }
    if seen.contains(&base) || seen.len() > 8 {
        return Err(at(
            l.key.start,
            format!("`extends:` of service `{name}` loops back to `{base}`"),
        ));
    }
    seen.push(base.clone());
    let Some(b) = model::services(root)?.into_iter().find(|s| s.name == base) else {
        return Err(at(
            l.value.start,
            format!("service `{name}` has `extends:` service `{base}`, which is not in this file"),
        ));
    };
    let base_node = merged(root, b.node, &base, seen)?;
    let (
        Kind::Map { entries: own, .. },
        Kind::Map {
            entries: theirs, ..
        },
    ) = (&node.kind, &base_node.kind)
    else {
        return Err(at(
            l.key.start,
            "`extends:` between services that are not mappings",
        ));
    };
    let own_keys: Vec<&str> = own.iter().filter_map(|(k, _)| k.as_str()).collect();
    let mut entries: Vec<(Node, Node)> = Vec::new();
    for (k, v) in theirs {
        let Some(key) = k.as_str() else { continue };
        if k.is_merge_key() || key == "extends" {
            continue;
        }
        if !own_keys.contains(&key) {
            entries.push((k.clone(), v.clone()));
        }
    }
    for (k, v) in own {
        let Some(key) = k.as_str() else { continue };
        if key == "extends" {
            continue;
        }
        if k.is_merge_key() {
            entries.push((k.clone(), v.clone()));
            continue;
        }
        let theirs_v = theirs
            .iter()
            .find(|(tk, _)| tk.as_str() == Some(key))
            .map(|(_, tv)| tv);
        let value = match (key, theirs_v) {
            ("volumes", Some(tv)) => merge_seq(v, tv, &volume_target, l.key.start)?,
            ("environment", Some(tv)) => merge_env(v, tv, l.key.start)?,
            _ => v.clone(),
        };
        entries.push((k.clone(), value));
    }
    Ok(Node {
        kind: Kind::Map {
            entries,
            flow: false,
        },
        ..node.clone()
    })
}

fn volume_target(n: &Node) -> Option<String> {
    match &n.kind {
        Kind::Scalar { value, .. } => {
            let parts: Vec<&str> = value.split(':').collect();
            Some(match parts.as_slice() {
                [t] => t.to_string(),
                [_, t, ..] => t.to_string(),
                [] => return None,
            })
        }
        Kind::Map { .. } => n
            .get("target")
            .and_then(|t| t.value.as_str().map(str::to_string)),
        Kind::Seq { .. } => None,
    }
    .map(|t| t.trim_end_matches('/').to_string())
}

/// Local items, then the extended service's whose key the local ones do not have.
fn merge_seq(
    own: &Node,
    theirs: &Node,
    key: &dyn Fn(&Node) -> Option<String>,
    at_: crate::yaml::Pos,
) -> Result<Node, At> {
    let (Some(a), Some(b)) = (own.items(), theirs.items()) else {
        return Err(at(
            at_,
            "`extends:` merges lists that are not lists: give the service its own complete entry",
        ));
    };
    let own_keys: Vec<Option<String>> = a.iter().map(key).collect();
    let mut items: Vec<Node> = a.to_vec();
    items.extend(b.iter().filter(|n| !own_keys.contains(&key(n))).cloned());
    Ok(Node {
        kind: Kind::Seq { items, flow: false },
        ..own.clone()
    })
}

fn merge_env(own: &Node, theirs: &Node, at_: crate::yaml::Pos) -> Result<Node, At> {
    match (&own.kind, &theirs.kind) {
        (Kind::Map { entries: a, .. }, Kind::Map { entries: b, .. }) => {
            let keys: Vec<Option<&str>> = a.iter().map(|(k, _)| k.as_str()).collect();
            let mut entries = a.clone();
            entries.extend(b.iter().filter(|(k, _)| !keys.contains(&k.as_str())).cloned());
            Ok(Node {
                kind: Kind::Map { entries, flow: false },
                ..own.clone()
            })
        }
        (Kind::Seq { .. }, Kind::Seq { .. }) => merge_seq(
            own,
            theirs,
            &|n: &Node| n.as_str().map(|s| s.split('=').next().unwrap_or(s).to_string()),
            at_,
        ),
        _ => Err(at(
            at_,
            "`extends:` merges an `environment:` mapping with a list: write both the same way (or give the service its whole `environment:`) and run again",
        )),
    }
}

/// The service with its effective node (see [`effective`]).
pub fn with<'a>(svc: &Service<'a>, merged: Option<&'a Node>) -> Service<'a> {
    match merged {
        Some(node) => Service { node, ..*svc },
        None => *svc,
    }
}

/// Whether a position lies in the service's own text (not in an extended service's).
pub fn own(svc_own: &Node, p: crate::yaml::Pos) -> bool {
    svc_own.span.contains(&p.offset) || svc_own.span.end == p.offset
}

/// The position of a top-level `include:`, if any (for the "no redis service" message).
pub fn include_at(root: &crate::yaml::Node) -> Option<Pos> {
    root.get("include").map(|l| l.key.start)
}

/// The words of an environment variable's value (`REDIS_ARGS`, `REDIS_EXTRA_FLAGS`) as server
/// arguments, mapped to the file like a string `command:` so they can be edited in place.
pub fn env_invocation(text: &str, e: &super::env::Entry) -> Result<model::Invocation, At> {
    let mut words = model::command_words(text, &e.node)?;
    if let Some(prefix) = e.list_prefix {
        // `- KEY=VALUE`: drop `KEY=` from the first word.
        let Some(first) = words.first_mut() else {
            return Err(at(e.at, "empty list item"));
        };
        if first.value.len() < prefix {
            return Err(at(e.at, "cannot read this `environment:` item"));
        }
        first.value = first.value[prefix..].to_string();
        if let Some(m) = first.map.as_mut() {
            m.drain(..prefix);
            if let Some(r) = first.raw.as_mut() {
                r.start = m[0];
            }
            first.at = crate::yaml::pos_of(text.as_bytes(), m[0]);
        }
        if first.value.is_empty() {
            words.remove(0);
        }
    }
    Ok(model::Invocation {
        node: Some(e.node.clone()),
        inherited: None,
        container: model::Container::Text,
        words: words.clone(),
        server: None,
        args: words,
        in_script: false,
        outside: Vec::new(),
    })
}
