//! `compose apply` without I/O: plan byte edits at the parser's spans, apply them, re-parse and
//! verify that exactly the intended meaning changed.

use super::channel::{self, Channel};
use super::model::{self, at, block_entries, col0, newline_of, At, Container, MountKind, Service};
use super::{check, env, secrets};
use crate::yaml::{self, Edit, Node, Pos, Style};

/// The settings `apply` enforces, in order.
pub const DURABLE: [(&str, &str); 2] = [("appendonly", "yes"), ("appendfsync", "everysec")];

/// A volume rename done by `apply`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rename {
    pub old: String,
    pub new: String,
    /// `name:` of the top-level volume, when it sets the Docker volume name explicitly.
    pub explicit_name: Option<String>,
}

/// The result of planning and applying edits to one file's text.
#[derive(Clone, Debug)]
pub struct Applied {
    pub service: String,
    /// The new text (equal to the input when nothing changes).
    pub text: String,
    /// One line per change, for people.
    pub changes: Vec<String>,
    pub rename: Option<Rename>,
    /// The service's `image:`, for the data-carrying commands.
    pub image: Option<String>,
    /// Top-level `name:`, for the project name.
    pub project_name: Option<String>,
    /// What apply did not fix (e.g. no named volume at /data), for people.
    pub notes: Vec<String>,
}

/// The new name for a data volume: `*_data` → `*_aof`; `--rename OLD=NEW` wins.
pub fn new_volume_name(old: &str, renames: &[(String, String)]) -> Option<String> {
    if let Some((_, n)) = renames.iter().find(|(o, _)| o == old) {
        return (n != old).then(|| n.clone());
    }
    if old.ends_with("_aof") {
        return None;
    }
    Some(match old.strip_suffix("_data") {
        Some(stem) => format!("{stem}_aof"),
        None => format!("{old}_aof"),
    })
}

fn cannot(p: Pos, what: &str) -> At {
    at(
        p,
        format!("{what} cannot be edited in place (multi-line or escaped notation): rewrite it as a single-line string or list and run again"),
    )
}

fn line_end(text: &str, off: usize) -> usize {
    let b = text.as_bytes();
    let mut i = off;
    while i < b.len() && b[i] != b'\n' {
        i += 1;
    }
    if i > off && i > 0 && b[i - 1] == b'\r' {
        i -= 1;
    }
    i
}

/// Plan the command edits: rewrite wrong values, append missing options.
fn command_edits(
    text: &str,
    svc: &Service,
    inv: &model::Invocation,
    default_command: &[&str],
    append_missing: bool,
    edits: &mut Vec<Edit>,
    changes: &mut Vec<String>,
) -> Result<Vec<String>, At> {
    let args = inv.arg_values();
    let (_, opts) = model::parse_server_args(&args);
    let mut expected = args.clone();
    let mut append: Vec<(&str, &str)> = Vec::new();
    let needs_change = DURABLE.iter().any(|(name, want)| {
        let mine: Vec<_> = opts.iter().filter(|o| o.name == *name).collect();
        (mine.is_empty() && append_missing)
            || mine
                .iter()
                .any(|o| o.values.len() != 1 || !args[o.values[0]].eq_ignore_ascii_case(want))
    });
    if !needs_change {
        return Ok(expected);
    }
    if let Some(p) = inv.inherited {
        return Err(at(
            p,
            format!(
                "the `{}` service's command is inherited through an anchor or `<<` merge: editing it in place would change every service that shares it; give the service its own `command:` and run again",
                svc.name
            ),
        ));
    }
    for (name, want) in DURABLE {
        let mine: Vec<_> = opts.iter().filter(|o| o.name == name).collect();
        if mine.is_empty() {
            if append_missing {
                append.push((name, want));
            }
            continue;
        }
        for o in mine {
            let w = &inv.args[o.index];
            if o.values.len() != 1 {
                return Err(at(
                    w.at,
                    format!(
                        "`--{name}` has {} values here; expected exactly one (`--{name} {want}`): fix it by hand",
                        o.values.len()
                    ),
                ));
            }
            let vi = o.values[0];
            if args[vi] == want {
                continue;
            }
            let v = &inv.args[vi];
            let m = v
                .map
                .as_ref()
                .ok_or_else(|| cannot(v.at, "the redis command"))?;
            edits.push(Edit {
                range: m[0]..m[v.value.len()],
                text: want.to_string(),
            });
            changes.push(format!(
                "{}:{}: --{name} {} -> --{name} {want}",
                v.at.line, v.at.col, v.value
            ));
            expected[vi] = want.to_string();
        }
    }
    if append.is_empty() {
        return Ok(expected);
    }
    let words: Vec<String> = append
        .iter()
        .flat_map(|(n, v)| [format!("--{n}"), v.to_string()])
        .collect();
    expected.extend(words.iter().cloned());
    let last = inv.args.last().or(inv.server.as_ref());
    match (inv.container, last) {
        (Container::Absent, _) => {
            let (entries, first_key) = block_entries(
                svc.node,
                "the redis service has no `command:` and is not a block mapping: add `command: [\"redis-server\", \"--appendonly\", \"yes\", \"--appendfsync\", \"everysec\"]` by hand",
                "the redis service is empty",
            )?;
            let indent = col0(text, first_key.span.start);
            let list = default_command
                .iter()
                .map(|w| w.to_string())
                .chain(words.iter().cloned())
                .map(|w| format!("\"{w}\""))
                .collect::<Vec<_>>()
                .join(", ");
            let nl = newline_of(text);
            // After the `image:` line when it is a one-line scalar, else before the first key.
            let image_entry = entries.iter().find(|(k, v)| {
                k.as_str() == Some("image")
                    && v.as_str().is_some()
                    && !text[v.span.clone()].contains('\n')
            });
            let (off, ins) = match image_entry {
                Some((_, v)) => (
                    line_end(text, v.span.end),
                    format!("{nl}{}command: [{list}]", " ".repeat(indent)),
                ),
                None => (
                    first_key.span.start,
                    format!("command: [{list}]{nl}{}", " ".repeat(indent)),
                ),
            };
            edits.push(Edit {
                range: off..off,
                text: ins,
            });
            changes.push(format!(
                "{}:{}: added command: [{list}] (the image default runs without AOF)",
                first_key.start.line, first_key.start.col
            ));
            let mut expected: Vec<String> = default_command
                .iter()
                .skip(1)
                .map(|w| w.to_string())
                .collect();
            expected.extend(words);
            return Ok(expected);
        }
        (_, None) => {
            let p = inv.node.as_ref().map_or(svc.key.start, |n| n.start);
            return Err(at(
                p,
                "the redis command (or REDIS_ARGS) is empty: cannot add arguments to it",
            ));
        }
        (Container::List { flow }, Some(w)) if !inv.in_script => {
            let node = inv.node.as_ref().expect("list command has a node");
            let items = node.items().unwrap_or_default();
            let item = &items[w.elem.expect("list word has an element index")];
            if matches!(item.style(), Some(Style::Literal | Style::Folded)) {
                return Err(cannot(item.start, "the last element of the redis command"));
            }
            let style = item.style();
            if flow {
                let ins: String = words
                    .iter()
                    .map(|x| format!(", {}", model::quote_like(style, x)))
                    .collect();
                edits.push(Edit {
                    range: item.span.end..item.span.end,
                    text: ins,
                });
            } else {
                // The dash of the item: skip back over spaces.
                let mut dash = item.span.start;
                while dash > 0 && text.as_bytes()[dash - 1] == b' ' {
                    dash -= 1;
                }
                if dash == 0 || text.as_bytes()[dash - 1] != b'-' {
                    return Err(cannot(item.start, "the redis command list"));
                }
                dash -= 1;
                let prefix = &text[dash - col0(text, dash)..dash];
                let gap = &text[dash + 1..item.span.start];
                let nl = newline_of(text);
                let indent = if prefix.bytes().all(|c| c == b' ') {
                    prefix.to_string()
                } else {
                    " ".repeat(prefix.chars().count())
                };
                let ins: String = words
                    .iter()
                    .map(|x| format!("{nl}{indent}-{gap}{}", model::quote_like(style, x)))
                    .collect();
                let off = line_end(text, item.span.end);
                edits.push(Edit {
                    range: off..off,
                    text: ins,
                });
            }
            changes.push(format!(
                "{}:{}: appended {} to the redis command",
                item.start.line,
                item.start.col,
                words.join(" ")
            ));
        }
        (_, Some(w)) => {
            let raw = w
                .raw
                .clone()
                .ok_or_else(|| cannot(w.at, "the redis command"))?;
            edits.push(Edit {
                range: raw.end..raw.end,
                text: format!(" {}", words.join(" ")),
            });
            changes.push(format!(
                "{}:{}: appended {} to the redis-server arguments",
                w.at.line,
                w.at.col,
                words.join(" ")
            ));
        }
    }
    Ok(expected)
}

/// Plan the volume rename.
fn volume_edits(
    text: &str,
    root: &Node,
    svc: &Service,
    renames: &[(String, String)],
    edits: &mut Vec<Edit>,
    changes: &mut Vec<String>,
) -> Result<Option<Rename>, At> {
    let Some(m) = model::data_mount(text, svc)? else {
        return Ok(None);
    };
    if m.kind != MountKind::Volume {
        return Ok(None);
    }
    let old = m.source.clone().unwrap_or_default();
    let Some(new) = new_volume_name(&old, renames) else {
        return Ok(None);
    };
    if new.is_empty()
        || !new
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'))
    {
        return Err(at(
            m.at,
            format!("new volume name {new:?} is not a valid volume name"),
        ));
    }
    let (_, inherited) = model::mounts(text, svc)?;
    if let Some(p) = inherited {
        return Err(at(p, "the redis service's `volumes:` is inherited through an anchor or `<<` merge: give the service its own `volumes:` and run again"));
    }
    // Other services mounting the same volume would be left pointing at an undeclared volume.
    for other in model::services(root)? {
        if other.name == svc.name {
            continue;
        }
        if let Ok((ms, _)) = model::mounts(text, &other) {
            if let Some(om) = ms
                .iter()
                .find(|om| om.kind == MountKind::Volume && om.source.as_deref() == Some(&old))
            {
                return Err(at(
                    om.at,
                    format!("service `{}` also mounts volume `{old}`: renaming it would break that service: rename it to an `*_aof` name in both services and the top-level `volumes:` by hand", other.name),
                ));
            }
        }
    }
    let top = root.get("volumes");
    let top_entry = top.and_then(|l| {
        l.value
            .entries()?
            .iter()
            .find(|(k, _)| k.as_str() == Some(old.as_str()))
    });
    let Some((key, val)) = top_entry else {
        return Err(at(
            m.at,
            format!("volume `{old}` is not declared in the top-level `volumes:` map (Compose refuses that): declare it and run again"),
        ));
    };
    if top.is_some_and(|l| l.inherited().is_some()) {
        return Err(at(
            key.start,
            "the top-level `volumes:` is inherited through an anchor: cannot edit it in place",
        ));
    }
    if let Some(e) = val.get("external") {
        if e.value.as_str() == Some("true") {
            return Err(at(
                key.start,
                format!("volume `{old}` is external (created outside Compose), so apply does not rename it: create an `*_aof` volume, copy the data into it and name that one here by hand"),
            ));
        }
    }
    if let Some(l) = top {
        if let Some((k, _)) = l
            .value
            .entries()
            .and_then(|es| es.iter().find(|(k, _)| k.as_str() == Some(new.as_str())))
        {
            return Err(at(
                k.start,
                format!("volume `{new}` already exists in the top-level `volumes:` map"),
            ));
        }
    }
    let explicit_name = val
        .get("name")
        .and_then(|l| l.value.as_str().map(str::to_string));
    let src = m
        .source_range
        .clone()
        .ok_or_else(|| cannot(m.at, "the /data mount"))?;
    edits.push(Edit {
        range: src,
        text: new.clone(),
    });
    let kmap = yaml::scalar_map(text, key).ok_or_else(|| cannot(key.start, "the volume key"))?;
    edits.push(Edit {
        range: kmap[0]..kmap[old.len()],
        text: new.clone(),
    });
    changes.push(format!(
        "{}:{}: volume {old} -> {new} (mount at {})",
        m.at.line, m.at.col, m.target
    ));
    changes.push(format!(
        "{}:{}: volume {old} -> {new} (top-level volumes)",
        key.start.line, key.start.col
    ));
    Ok(Some(Rename {
        old,
        new,
        explicit_name,
    }))
}

/// A `command:` for a service whose command comes from `extends:`: the extended command's words,
/// durable. Placed before the service's first key.
fn extends_command(
    text: &str,
    own: &Service,
    inv: &model::Invocation,
) -> Result<(Edit, String, Vec<String>), At> {
    let args = inv.arg_values();
    let (_, opts) = model::parse_server_args(&args);
    let mut new_args = args.clone();
    for (name, want) in DURABLE {
        let mine: Vec<_> = opts.iter().filter(|o| o.name == name).collect();
        if mine.is_empty() {
            new_args.push(format!("--{name}"));
            new_args.push(want.to_string());
        }
        for o in mine {
            if o.values.len() != 1 {
                return Err(at(
                    inv.args[o.index].at,
                    format!("`--{name}` has {} values here; expected exactly one (`--{name} {want}`): fix it by hand", o.values.len()),
                ));
            }
            new_args[o.values[0]] = want.to_string();
        }
    }
    let head = inv.words.len() - inv.args.len();
    let words: Vec<String> = inv.words[..head]
        .iter()
        .map(|w| w.value.clone())
        .chain(new_args.iter().cloned())
        .collect();
    let (_, first) = block_entries(
        own.node,
        "the redis service is not a block mapping: give it its own `command:` by hand",
        "the redis service is empty",
    )?;
    let indent = col0(text, first.span.start);
    let list = words
        .iter()
        .map(|w| serde_json::to_string(w).unwrap_or_default())
        .collect::<Vec<_>>()
        .join(", ");
    let change = format!(
        "{}:{}: added command: [{list}] (the command `extends:` supplies, kept, with AOF)",
        first.start.line, first.start.col
    );
    Ok((
        Edit {
            range: first.span.start..first.span.start,
            text: format!(
                "command: [{list}]{}{}",
                newline_of(text),
                " ".repeat(indent)
            ),
        },
        change,
        new_args,
    ))
}

/// What the edited file must say, checked by [`verify`].
#[derive(Debug, Default)]
struct Expect {
    /// The server's arguments on its command line (Command channel).
    command_args: Option<Vec<String>>,
    /// The command was rewritten into the config-file form.
    converted: bool,
    /// `REDIS_ARGS`'s words (Redis Stack, edited in place).
    stack_args: Option<Vec<String>>,
    /// `environment:` changes: key → new value (`None`: changed in place, not compared).
    env: Vec<(String, Option<String>)>,
    healthcheck: bool,
    /// `password-argv` errors the edits remove.
    fixed: usize,
}

/// Plan, apply and verify. `service`: the redis service name, or `None` to find it.
pub fn apply(
    text: &str,
    service: Option<&str>,
    renames: &[(String, String)],
) -> Result<Applied, At> {
    let doc = yaml::parse(text).map_err(|e| at(e.at, e.message))?;
    if let Some(i) = doc.issues.first() {
        return Err(at(i.at, i.message.clone()));
    }
    let svc0 = model::find_redis(text, &doc.root, service)?;
    let merged = channel::effective(&doc.root, &svc0)?;
    let svc = channel::with(&svc0, merged.as_ref());
    // What `extends:` supplies is edited in this service (Compose's merge), never in the
    // extended one, which other services may share.
    let mine = |p: Pos| channel::own(svc0.node, p);
    let from_extends = |what: &str, p: Pos| {
        at(
            p,
            format!("{what} comes from the service `{}` extends: editing it there would change every service that extends it; give `{}` its own {what} and run again", svc0.name, svc0.name),
        )
    };
    let ch = channel::channel(text, &svc)?;
    let env = env::read(&svc)?;
    let mut edits = Vec::new();
    let mut changes = Vec::new();
    let mut expect = Expect::default();
    let mut sp = secrets::Plan::default();
    match &ch {
        Channel::Command { family, .. } => {
            let inv = model::invocation(text, &svc)?;
            let inherited = inv
                .node
                .as_ref()
                .filter(|n| merged.is_some() && inv.inherited.is_none() && !mine(n.start));
            if let Some(n) = inherited {
                // The command comes from `extends:`: this service gets its own, with the
                // extended command's words kept.
                if inv.in_script {
                    return Err(from_extends("`command:` (an `sh -c` script)", n.start));
                }
                let (edit, change, args) = extends_command(text, &svc0, &inv)?;
                edits.push(edit);
                changes.push(change);
                expect.command_args = Some(args);
            } else if secrets::command(text, &svc, &inv, family.binary(), &env, &DURABLE, &mut sp)
                .is_some()
            {
                expect.converted = true;
                expect.command_args = sp.command.clone();
            } else {
                let moved = secrets::script_password(text, &svc, &inv, &env, &mut sp);
                let mut args = command_edits(
                    text,
                    &svc,
                    &inv,
                    &family.default_command(),
                    true,
                    &mut edits,
                    &mut changes,
                )?;
                for (i, v) in moved {
                    args[i] = v;
                }
                expect.command_args = Some(args);
            }
        }
        Channel::Stack => match env.entries.iter().find(|e| e.key == "REDIS_ARGS") {
            Some(e) => {
                if !mine(e.at) {
                    return Err(from_extends("`REDIS_ARGS`", e.at));
                }
                let mut inv = channel::env_invocation(text, e)?;
                inv.inherited = env.inherited;
                if inv.args.is_empty() {
                    edits.push(env::set(text, e, check::DURABLE_ARGS)?);
                    changes.push(format!(
                        "{}:{}: REDIS_ARGS: \"{}\" (Redis Stack's entrypoint passes it to redis-server)",
                        e.at.line,
                        e.at.col,
                        check::DURABLE_ARGS
                    ));
                    expect
                        .env
                        .push(("REDIS_ARGS".into(), Some(check::DURABLE_ARGS.into())));
                } else {
                    let n = edits.len();
                    let args =
                        command_edits(text, &svc, &inv, &[], true, &mut edits, &mut changes)?;
                    if edits.len() > n {
                        expect.env.push(("REDIS_ARGS".into(), None));
                    }
                    expect.stack_args = Some(args);
                }
            }
            None => {
                if svc.node.get("env_file").is_some() {
                    return Err(at(
                        svc.node.get("env_file").map_or(svc.key.start, |l| l.key.start),
                        format!("Redis Stack takes its server options from REDIS_ARGS, which this service may set in its `env_file:` (a REDIS_ARGS added to `environment:` would replace it): add `{}` to REDIS_ARGS there, or in `environment:`, by hand", check::DURABLE_ARGS),
                    ));
                }
                sp.env_add
                    .push(("REDIS_ARGS".into(), check::DURABLE_ARGS.into()));
                changes.push(format!(
                    "{}:{}: added REDIS_ARGS: \"{}\" to `environment:` (Redis Stack's entrypoint passes it to redis-server and still loads its modules)",
                    svc.key.start.line,
                    svc.key.start.col,
                    check::DURABLE_ARGS
                ));
            }
        },
        Channel::Bitnami { prefix, .. } => {
            let var = format!("{prefix}_AOF_ENABLED");
            if let Some(e) = env.entries.iter().find(|e| e.key == var) {
                let v = e.value.clone().unwrap_or_default();
                if !v.eq_ignore_ascii_case("yes") && !mine(e.at) {
                    return Err(from_extends(&format!("`{var}`"), e.at));
                }
                if !v.eq_ignore_ascii_case("yes") {
                    edits.push(env::set(text, e, "yes")?);
                    changes.push(format!("{}:{}: {var}: {v} -> yes", e.at.line, e.at.col));
                    expect.env.push((var.clone(), Some("yes".into())));
                }
            }
            let flags = format!("{prefix}_EXTRA_FLAGS");
            if let Some(e) = env
                .entries
                .iter()
                .find(|e| e.key == flags)
                .filter(|e| mine(e.at))
            {
                let mut inv = channel::env_invocation(text, e)?;
                inv.inherited = env.inherited;
                let n = edits.len();
                command_edits(text, &svc, &inv, &[], false, &mut edits, &mut changes)?;
                if edits.len() > n {
                    expect.env.push((flags, None));
                }
            }
        }
    }
    let mut hp = secrets::Plan {
        env_add: sp.env_add.clone(),
        ..secrets::Plan::default()
    };
    secrets::healthcheck(text, &svc, &env, &mut hp);
    // A health check from `extends:` is left alone (check names its line).
    if hp
        .edits
        .iter()
        .all(|e| mine(yaml::pos_of(text.as_bytes(), e.range.start)))
    {
        sp.env_add = hp.env_add;
        sp.edits.extend(hp.edits);
        sp.changes.extend(hp.changes);
        sp.fixed += hp.fixed;
        sp.healthcheck = hp.healthcheck;
    }
    if !sp.env_add.is_empty() {
        // Into this service's own `environment:` (Compose merges it with an extended one).
        edits.push(env::add(text, &svc0, &env::read(&svc0)?, &sp.env_add)?);
        for (k, v) in &sp.env_add {
            if k != "REDIS_ARGS" {
                changes.push(format!(
                    "{}:{}: environment: added {k}: {v} (the container's shell reads it)",
                    svc.key.start.line, svc.key.start.col
                ));
            }
            expect.env.push((k.clone(), Some(v.clone())));
        }
    }
    edits.extend(sp.edits);
    changes.extend(sp.changes);
    expect.healthcheck = sp.healthcheck;
    expect.fixed = sp.fixed;
    let mut notes = Vec::new();
    let rename = match model::data_mount(text, &svc)? {
        Some(m) if !mine(m.at) => {
            notes.push(format!(
                "{}:{}: the data volume's mount comes from the service `{}` extends: rename it there (apply does not edit a service others may extend)",
                m.at.line, m.at.col, svc0.name
            ));
            None
        }
        _ => volume_edits(text, &doc.root, &svc, renames, &mut edits, &mut changes)?,
    };
    let image = svc
        .node
        .get("image")
        .and_then(|l| l.value.as_str().map(str::to_string));
    let project_name = doc
        .root
        .get("name")
        .and_then(|l| l.value.as_str().map(str::to_string));
    let name = svc.name.to_string();
    let dir = model::data_dir(text, &svc);
    match model::data_mount(text, &svc)? {
        Some(m) if m.kind == MountKind::Volume => {}
        Some(m) => notes.push(format!(
            "{}:{}: {dir} is not a named volume; apply leaves it alone and `compose check` will flag it",
            m.at.line, m.at.col
        )),
        None => notes.push(format!(
            "{}:{}: nothing is mounted at {dir}, so the AOF dies with the container: add a named volume (`- {}_aof:{dir}`, declared in the top-level `volumes:`) by hand",
            svc.key.start.line, svc.key.start.col, svc.name
        )),
    }
    if edits.is_empty() {
        return Ok(Applied {
            service: name,
            text: text.to_string(),
            changes,
            rename,
            image,
            project_name,
            notes,
        });
    }
    let new_text = yaml::apply_edits(text, &edits).ok_or_else(|| {
        at(
            svc.key.start,
            "internal: overlapping edits; nothing was written",
        )
    })?;
    verify(text, &doc.root, &new_text, &name, &expect, rename.as_ref()).map_err(|m| {
        at(
            svc.key.start,
            format!("cannot edit in place safely: {m}; nothing was written"),
        )
    })?;
    Ok(Applied {
        service: name,
        text: new_text,
        changes,
        rename,
        image,
        project_name,
        notes,
    })
}

/// Re-parse the edited text and check that only the intended meaning changed.
fn verify(
    old_text: &str,
    old_root: &Node,
    new_text: &str,
    service: &str,
    expect: &Expect,
    rename: Option<&Rename>,
) -> Result<(), String> {
    let doc = yaml::parse(new_text).map_err(|e| {
        format!(
            "the edited file does not parse ({}:{}: {})",
            e.at.line, e.at.col, e.message
        )
    })?;
    if !doc.issues.is_empty() {
        return Err("the edited file has duplicate keys".into());
    }
    let svc = model::find_redis(new_text, &doc.root, Some(service)).map_err(|e| e.message)?;
    let old_svc = model::find_redis(old_text, old_root, Some(service)).map_err(|e| e.message)?;
    let new_merged = channel::effective(&doc.root, &svc).map_err(|e| e.message)?;
    let old_merged = channel::effective(old_root, &old_svc).map_err(|e| e.message)?;
    let svc = channel::with(&svc, new_merged.as_ref());
    let old_svc = channel::with(&old_svc, old_merged.as_ref());
    let inv = model::invocation(new_text, &svc).map_err(|e| e.message)?;
    if let Some(expected_args) = &expect.command_args {
        let args = inv.arg_values();
        if args != *expected_args {
            return Err(format!(
                "the edited redis-server arguments are {:?}, expected {:?}",
                model::public_args(&args),
                model::public_args(expected_args)
            ));
        }
        for (name, want) in DURABLE {
            if model::effective(&args, name).as_deref() != Some(want) {
                return Err(format!("--{name} is not {want} after editing"));
            }
        }
        if expect.converted {
            if !inv.in_script {
                return Err("the rewritten command does not run the server in `sh -c`".into());
            }
        } else {
            // Words outside the server arguments are unchanged.
            let old_inv = model::invocation(old_text, &old_svc).map_err(|e| e.message)?;
            if old_inv.container != model::Container::Absent && old_inv.outside != inv.outside {
                return Err(
                    "words of the command other than the redis-server arguments changed".into(),
                );
            }
        }
    } else if old_svc.node.get("command").map(|l| l.value.to_json())
        != svc.node.get("command").map(|l| l.value.to_json())
    {
        return Err("the command changed".into());
    }
    let new_env = env::read(&svc).map_err(|e| e.message)?;
    if let Some(expected) = &expect.stack_args {
        let e = new_env
            .entries
            .iter()
            .find(|e| e.key == "REDIS_ARGS")
            .ok_or("REDIS_ARGS is gone")?;
        let args = channel::env_invocation(new_text, e)
            .map_err(|e| e.message)?
            .arg_values();
        if args != *expected {
            return Err(format!(
                "REDIS_ARGS is {args:?} after editing, expected {expected:?}"
            ));
        }
    }
    // Everything else in the document is unchanged.
    let mut before = old_root.to_json();
    let mut after = doc.root.to_json();
    let svc_ptr = format!(
        "/services/{}",
        service.replace('~', "~0").replace('/', "~1")
    );
    let env_of = |n: &Node| {
        n.get("environment")
            .map(|l| env::as_json(l.value))
            .unwrap_or_else(|| serde_json::json!({}))
    };
    let (mut env_before, mut env_after) = (env_of(old_svc.node), env_of(svc.node));
    for (k, v) in &expect.env {
        match v {
            Some(v) => {
                env_before[k] = serde_json::Value::String(v.clone());
            }
            None => {
                if let Some(o) = env_before.as_object_mut() {
                    o.remove(k);
                }
                if let Some(o) = env_after.as_object_mut() {
                    o.remove(k);
                }
            }
        }
    }
    if env_before != env_after {
        return Err("the service's environment changed beyond the intended variables".into());
    }
    for v in [&mut before, &mut after] {
        if let Some(o) = v.pointer_mut(&svc_ptr).and_then(|s| s.as_object_mut()) {
            o.remove("command");
            o.remove("environment");
            if expect.healthcheck {
                if let Some(h) = o.get_mut("healthcheck").and_then(|h| h.as_object_mut()) {
                    h.remove("test");
                }
            }
        }
    }
    // Durable now, through whatever channel, and the password errors fixed are gone.
    let (old_f, _) = check::check_text(old_text, Some(service)).map_err(|e| e.message)?;
    let (new_f, _) = check::check_text(new_text, Some(service)).map_err(|e| e.message)?;
    if let Some(f) = new_f
        .iter()
        .find(|f| (f.rule == "aof" || f.rule == "appendfsync") && f.is_error())
    {
        return Err(format!("still not durable after editing ({})", f.message));
    }
    let pw = |fs: &[check::Finding]| {
        fs.iter()
            .filter(|f| f.rule == "password-argv" && f.is_error())
            .count()
    };
    if pw(&new_f) + expect.fixed != pw(&old_f) {
        return Err(format!(
            "{} password error(s) before, {} fixed, {} after",
            pw(&old_f),
            expect.fixed,
            pw(&new_f)
        ));
    }
    if let Some(r) = rename {
        let fix = |v: &mut serde_json::Value| {
            if let Some(vols) = v.pointer_mut("/volumes").and_then(|x| x.as_object_mut()) {
                if let Some(x) = vols.remove(&r.old) {
                    vols.insert(r.new.clone(), x);
                }
            }
            let svc_vols = format!(
                "/services/{}/volumes",
                service.replace('~', "~0").replace('/', "~1")
            );
            if let Some(items) = v.pointer_mut(&svc_vols).and_then(|x| x.as_array_mut()) {
                for it in items {
                    match it {
                        serde_json::Value::String(s) => {
                            if let Some(rest) = s.strip_prefix(&format!("{}:", r.old)) {
                                *s = format!("{}:{rest}", r.new);
                            }
                        }
                        serde_json::Value::Object(o)
                            if o.get("source").and_then(|x| x.as_str()) == Some(&r.old) =>
                        {
                            o.insert("source".into(), r.new.clone().into());
                        }
                        _ => {}
                    }
                }
            }
        };
        fix(&mut before);
        let vols_before: Vec<String> = before["volumes"]
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        let vols_after: Vec<String> = after["volumes"]
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        if vols_before.len() != vols_after.len() {
            return Err("the top-level volumes changed in number".into());
        }
        match model::data_mount(new_text, &svc).map_err(|e| e.message)? {
            Some(m) if m.source.as_deref() == Some(r.new.as_str()) => {}
            _ => {
                return Err(format!(
                    "the mount at /data is not `{}` after editing",
                    r.new
                ))
            }
        }
    }
    // serde_json maps are ordered by key, so key order does not matter here; values must match.
    if before != after {
        return Err("something besides the redis command and data volume changed".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rename_rule() {
        assert_eq!(
            new_volume_name("redis_data", &[]).as_deref(),
            Some("redis_aof")
        );
        assert_eq!(new_volume_name("redis_aof", &[]), None);
        assert_eq!(new_volume_name("cache", &[]).as_deref(), Some("cache_aof"));
        let r = [("redis_data".to_string(), "kv_aof".to_string())];
        assert_eq!(new_volume_name("redis_data", &r).as_deref(), Some("kv_aof"));
    }

    #[test]
    fn verification_catches_unintended_changes() {
        let old = "services:\n  redis:\n    command: [sh, -c, 'umask 077 && exec redis-server --appendonly no']\n  web:\n    image: a\n";
        let doc = yaml::parse(old).unwrap();
        let want: Vec<String> = ["--appendonly", "yes", "--appendfsync", "everysec"]
            .map(String::from)
            .to_vec();
        let want = Expect {
            command_args: Some(want),
            ..Expect::default()
        };
        let ok = old.replace("--appendonly no", "--appendonly yes --appendfsync everysec");
        assert_eq!(verify(old, &doc.root, &ok, "redis", &want, None), Ok(()));
        let script_changed = ok.replace("umask 077", "umask 000");
        assert!(verify(old, &doc.root, &script_changed, "redis", &want, None).is_err());
        let other_changed = ok.replace("image: a", "image: b");
        assert!(verify(old, &doc.root, &other_changed, "redis", &want, None).is_err());
        let args_wrong = old.replace("--appendonly no", "--appendonly yes --appendfsync always");
        assert!(verify(old, &doc.root, &args_wrong, "redis", &want, None).is_err());
    }

    #[test]
    fn conflicting_duplicates_are_all_rewritten() {
        let text = "services:\n  redis:\n    command: [redis-server, --appendonly, no, --appendfsync, always, --appendonly, 'yes']\n";
        let a = apply(text, None, &[]).unwrap();
        assert_eq!(
            a.text,
            "services:\n  redis:\n    command: [redis-server, --appendonly, yes, --appendfsync, everysec, --appendonly, 'yes']\n"
        );
        assert_eq!(a.notes.len(), 1);
        // A value count other than one is refused, with the position of the option.
        let e = apply(
            "services:\n  redis:\n    command: redis-server --appendonly\n",
            None,
            &[],
        )
        .unwrap_err();
        assert_eq!((e.at.line, e.at.col), (3, 27));
    }

    #[test]
    fn string_command_gets_the_options_and_is_idempotent() {
        let text = "services:\n  redis:\n    image: redis:7\n    command: redis-server --appendonly no # keep\n    volumes:\n      - redis_data:/data\nvolumes:\n  redis_data: {}\n";
        let a = apply(text, None, &[]).unwrap();
        assert_eq!(
            a.text,
            "services:\n  redis:\n    image: redis:7\n    command: redis-server --appendonly yes --appendfsync everysec # keep\n    volumes:\n      - redis_aof:/data\nvolumes:\n  redis_aof: {}\n"
        );
        let b = apply(&a.text, None, &[]).unwrap();
        assert_eq!(b.text, a.text);
        assert!(b.changes.is_empty());
    }
}
