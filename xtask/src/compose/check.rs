//! `compose check` without I/O: findings for one file's text, and the staging-mirrors-production
//! comparison of two files' redis services.

use serde::Serialize;

use super::channel::{self, Channel};
use super::env;
use super::model::{self, at, At, MountKind, RedisFacts, Service};
use super::shell::{self, Dialect, Tok};
use crate::yaml::{self, Node, Pos};

/// How bad a finding is: an `error` fails `compose check`; a `warning` fails it only with
/// `--strict`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One finding, before the file name is attached.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub line: usize,
    pub col: usize,
    /// A short rule id: `aof`, `appendfsync`, `data-volume`, `password-argv`, `port`,
    /// `duplicate-key`, `mirror`, `command`.
    pub rule: &'static str,
    pub severity: Severity,
    pub message: String,
}

impl Finding {
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
    /// Whether it fails the gate (`strict`: warnings do too).
    pub fn fails(&self, strict: bool) -> bool {
        strict || self.is_error()
    }
}

fn finding(p: Pos, rule: &'static str, message: impl Into<String>) -> Finding {
    Finding {
        line: p.line,
        col: p.col,
        rule,
        severity: Severity::Error,
        message: message.into(),
    }
}

fn warning(p: Pos, rule: &'static str, message: impl Into<String>) -> Finding {
    Finding {
        severity: Severity::Warning,
        ..finding(p, rule, message)
    }
}

/// What the mirror comparison needs from a checked file.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub facts: RedisFacts,
    pub service_at: Pos,
    pub image_at: Pos,
    pub command_at: Pos,
    pub healthcheck_at: Pos,
    pub restart_at: Pos,
    pub volumes_at: Pos,
    /// The /data mount as (kind, target, long syntax).
    pub mount_shape: Option<String>,
}

/// Check one compose file's text. `Err` is bad input (exit 2); findings are failed checks.
pub fn check_text(
    text: &str,
    service: Option<&str>,
) -> Result<(Vec<Finding>, Option<Snapshot>), At> {
    let doc = yaml::parse(text).map_err(|e| at(e.at, e.message))?;
    let mut out: Vec<Finding> = doc
        .issues
        .iter()
        .map(|i| finding(i.at, "duplicate-key", i.message.clone()))
        .collect();
    if !out.is_empty() {
        // Which of the duplicates Compose would use is unknowable: stop here.
        return Ok((out, None));
    }
    let svc0 = model::find_redis(text, &doc.root, service)?;
    let merged = channel::effective(&doc.root, &svc0)?;
    let svc = channel::with(&svc0, merged.as_ref());
    let ch = channel::channel(text, &svc)?;
    match &ch {
        Channel::Command {
            family,
            image_default,
        } => {
            let inv = model::invocation(text, &svc)?;
            let label = Label::Command {
                binary: family.binary(),
                image_default: *image_default,
                default_command: family.default_command(),
                service: svc.name,
            };
            check_durability(&svc, &inv, &label, &mut out);
            check_argv_secrets(&inv, &mut out);
        }
        Channel::Stack => {
            let env = env::read(&svc)?;
            match env.entries.iter().find(|e| e.key == "REDIS_ARGS") {
                Some(e) => {
                    let inv = channel::env_invocation(text, e)?;
                    check_durability(&svc, &inv, &Label::Stack { at: e.at }, &mut out);
                    check_env_secrets(&inv, "REDIS_ARGS", &mut out);
                }
                None => {
                    let p = svc
                        .node
                        .get("image")
                        .map_or(svc.key.start, |l| l.value.start);
                    out.push(finding(p, "aof", format!("Redis Stack starts without `--appendonly yes` (no REDIS_ARGS): add `REDIS_ARGS: \"{}\"` to `environment:`{}", DURABLE_ARGS, env_file_note(&svc))));
                }
            }
        }
        Channel::Bitnami { prefix, .. } => check_bitnami(text, &svc, prefix, &mut out)?,
    }
    check_volume(text, &doc.root, &svc, &mut out)?;
    check_healthcheck(text, &svc, &mut out);
    check_ports(&svc, &mut out);
    let snapshot = match model::facts(text, &svc) {
        Ok(facts) => {
            let p = |k: &str| svc.node.get(k).map_or(svc.key.start, |l| l.key.start);
            let mount_shape = model::data_mount(text, &svc)?.map(|m| {
                format!(
                    "{:?} at {}{}",
                    m.kind,
                    m.target,
                    if m.long { " (long syntax)" } else { "" }
                )
            });
            Some(Snapshot {
                facts,
                service_at: svc.key.start,
                image_at: p("image"),
                command_at: p("command"),
                healthcheck_at: p("healthcheck"),
                restart_at: p("restart"),
                volumes_at: p("volumes"),
                mount_shape,
            })
        }
        Err(_) => None,
    };
    Ok((out, snapshot))
}

/// The durable server arguments, as one string.
pub const DURABLE_ARGS: &str = "--appendonly yes --appendfsync everysec";

/// Where the server's arguments are, for messages.
enum Label<'a> {
    Command {
        binary: &'static str,
        image_default: bool,
        default_command: Vec<&'static str>,
        service: &'a str,
    },
    Stack {
        at: Pos,
    },
    Bitnami {
        var: String,
    },
}

fn env_file_note(svc: &Service) -> &'static str {
    if svc.node.get("env_file").is_some() {
        " (or to the service's `env_file:`, if REDIS_ARGS is set there)"
    } else {
        ""
    }
}

fn check_durability(svc: &Service, inv: &model::Invocation, label: &Label, out: &mut Vec<Finding>) {
    let args = inv.arg_values();
    let (_, opts) = model::parse_server_args(&args);
    let where_ = inv
        .server
        .as_ref()
        .map(|w| w.at)
        .or(inv.node.as_ref().map(|n| n.start))
        .unwrap_or(match label {
            Label::Stack { at } => *at,
            _ => svc.key.start,
        });
    let who = match label {
        Label::Command { binary, .. } => binary.to_string(),
        Label::Stack { .. } => "Redis Stack (REDIS_ARGS)".into(),
        Label::Bitnami { var } => format!("the Bitnami image ({var})"),
    };
    for (name, want, rule) in [
        ("appendonly", "yes", "aof"),
        ("appendfsync", "everysec", "appendfsync"),
    ] {
        let mine: Vec<_> = opts.iter().filter(|o| o.name == name).collect();
        let values: Vec<String> = mine
            .iter()
            .map(|o| {
                o.values
                    .iter()
                    .map(|&i| args[i].as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        let p = mine
            .last()
            .map(|o| inv.args[o.values.first().copied().unwrap_or(o.index)].at)
            .unwrap_or(where_);
        match values.last() {
            None => {
                // Bitnami's defaults are `appendonly yes` (REDIS_AOF_ENABLED) and everysec.
                if matches!(label, Label::Bitnami { .. }) {
                    continue;
                }
                let msg = match label {
                    Label::Command {
                        image_default: true,
                        default_command,
                        service,
                        ..
                    } => {
                        let mut list: Vec<String> = default_command.iter().map(|w| format!("\"{w}\"")).collect();
                        list.extend(["\"--appendonly\"", "\"yes\"", "\"--appendfsync\"", "\"everysec\""].map(String::from));
                        format!("redis service `{service}` has no command: the image default runs without `--{name} {want}`; add `command: [{}]`", list.join(", "))
                    }
                    Label::Stack { .. } => format!("{who} runs without `--{name} {want}`: append `--{name} {want}` to REDIS_ARGS"),
                    _ => format!("{who} runs without `--{name} {want}`: append `--{name} {want}` to its arguments"),
                };
                out.push(finding(p, rule, msg));
            }
            Some(v) if !v.eq_ignore_ascii_case(want) => out.push(finding(
                p,
                rule,
                format!("{who} runs with `--{name} {v}`, expected `--{name} {want}`: edit it to `--{name} {want}`"),
            )),
            Some(_) => {
                if values.iter().any(|v| !v.eq_ignore_ascii_case(want)) {
                    out.push(finding(
                        p,
                        rule,
                        format!("`--{name}` is given more than once with different values ({}): keep one `--{name} {want}`", values.join(", ")),
                    ));
                }
            }
        }
    }
}

/// Bitnami: `<P>_AOF_ENABLED` (default `yes`) and `<P>_EXTRA_FLAGS`.
fn check_bitnami(
    text: &str,
    svc: &Service,
    prefix: &str,
    out: &mut Vec<Finding>,
) -> Result<(), At> {
    let env = env::read(svc)?;
    let var = format!("{prefix}_AOF_ENABLED");
    let in_env = env.entries.iter().any(|e| e.key == var);
    if let (false, Some(l)) = (in_env, svc.node.get("env_file")) {
        out.push(warning(
            l.key.start,
            "aof",
            format!("`{var}` is not in `environment:`; the image's default is `yes`, but this service's `env_file:` may set it: make sure it says `{var}=yes`, or add `{var}: \"yes\"` to `environment:` (which wins)"),
        ));
    }
    if let Some(e) = env.entries.iter().find(|e| e.key == var) {
        let v = e.value.clone().unwrap_or_default();
        if !v.eq_ignore_ascii_case("yes") {
            out.push(finding(
                e.at,
                "aof",
                format!("`{var}` is `{v}`: the Bitnami image then runs without AOF; edit it to `{var}: \"yes\"`"),
            ));
        }
    }
    let flags = format!("{prefix}_EXTRA_FLAGS");
    if let Some(e) = env.entries.iter().find(|e| e.key == flags) {
        let inv = channel::env_invocation(text, e)?;
        check_durability(svc, &inv, &Label::Bitnami { var: flags.clone() }, out);
        check_env_secrets(&inv, &flags, out);
    }
    Ok(())
}

/// Passwords in an environment variable that the image's entrypoint passes to the server
/// (`REDIS_ARGS`): the container's environment holds it anyway; redis-server's argv too, for its
/// start-up instant. A literal is in the file too.
fn check_env_secrets(inv: &model::Invocation, var: &str, out: &mut Vec<Finding>) {
    let args = inv.arg_values();
    let (_, opts) = model::parse_server_args(&args);
    for o in &opts {
        if !model::SECRET_OPTIONS.contains(&o.name.as_str()) {
            continue;
        }
        let Some(&vi) = o.values.first() else {
            continue;
        };
        let v = &args[vi];
        let at = inv.args[o.index].at;
        if v.contains('$') {
            out.push(warning(
                at,
                "password-argv",
                format!("`--{} {v}` in {var}: the entrypoint passes it to redis-server, whose argv holds the value for the start-up instant before it rewrites its process title (the container's environment holds it either way); to expose it nowhere, give the image a config file with `requirepass` instead", o.name),
            ));
        } else {
            out.push(finding(
                at,
                "password-argv",
                format!("`--{}` in {var} is a literal password: it is in this file and in `docker inspect` (Env): edit it to `--{} ${{REDIS_PASSWORD:?}}` with the value in an env file", o.name, o.name),
            ));
        }
    }
}

/// `$VAR` / `${VAR...}` interpolated by Compose (a `$$` is a literal `$`): the variable names.
pub fn interpolated_vars(s: &str) -> Vec<String> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'$' {
            i += 1;
            continue;
        }
        if b.get(i + 1) == Some(&b'$') {
            i += 2;
            continue;
        }
        let start = if b.get(i + 1) == Some(&b'{') {
            i + 2
        } else {
            i + 1
        };
        let mut j = start;
        while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
            j += 1;
        }
        if j > start {
            out.push(s[start..j].to_string());
        }
        i = j.max(i + 1);
    }
    out
}

fn secret_name(v: &str) -> bool {
    let u = v.to_ascii_uppercase();
    ["PASS", "SECRET", "TOKEN", "AUTH"]
        .iter()
        .any(|k| u.contains(k))
}

/// `$$NAME` / `$${NAME}` in a raw (pre-interpolation) value: the variable the container's shell
/// reads.
pub fn shell_var(s: &str) -> Option<String> {
    let i = s.find("$$")?;
    let rest = s[i + 2..].trim_start_matches('{');
    let name: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    (!name.is_empty()).then_some(name)
}

/// The variable a password value names (`${X:?}` interpolated or `$$X` shell), for fix lines.
fn var_of(v: &str) -> String {
    interpolated_vars(v)
        .into_iter()
        .next()
        .or_else(|| shell_var(v))
        .unwrap_or_else(|| "REDIS_PASSWORD".into())
}

/// The edited line that passes a password to redis-server without exposing it: the config-file
/// form of docker-compose.prod.yml.
pub fn config_file_fix(var: &str) -> String {
    format!("- umask 077 && printf 'requirepass \"%s\"\\n' \"$${var}\" > /tmp/redis.conf && exec redis-server /tmp/redis.conf ...")
}

/// The edited health check that authenticates without argv.
pub fn cli_fix(var: &str) -> String {
    format!("test: [\"CMD-SHELL\", \"REDISCLI_AUTH=\\\"$${var}\\\" redis-cli --no-auth-warning ping | grep -q PONG\"]")
}

fn check_argv_secrets(inv: &model::Invocation, out: &mut Vec<Finding>) {
    let args = inv.arg_values();
    let (_, opts) = model::parse_server_args(&args);
    let mut reported = std::collections::HashSet::new();
    for o in &opts {
        if !model::SECRET_OPTIONS.contains(&o.name.as_str()) {
            continue;
        }
        let name = &o.name;
        let at = inv.args[o.index].at;
        let Some(&vi) = o.values.first() else {
            continue;
        };
        reported.insert(vi);
        let v = &args[vi];
        let var = var_of(v);
        if !interpolated_vars(v).is_empty() {
            out.push(finding(
                at,
                "password-argv",
                format!("`--{name} {v}`: Compose interpolates the password into the command, so its value is in `docker inspect` (Cmd) and in redis-server's argv: pass it through `environment:` (`{var}: {v}`) and read it in the container's shell into a config file: `command:` `{}`", config_file_fix(&var)),
            ));
        } else if shell_var(v).is_some() && inv.in_script {
            out.push(warning(
                at,
                "password-argv",
                format!("`--{name} {v}` is read by the container's shell: `docker inspect` shows only `${var}` (the environment holds the value either way), but redis-server's argv holds the value for the start-up instant before it rewrites its process title (`ps`, /proc/<pid>/cmdline); to expose it nowhere, edit the script to `{}`", config_file_fix(&var)),
            ));
        } else if shell_var(v).is_some() {
            out.push(finding(
                at,
                "password-argv",
                format!("`--{name} {v}`: no shell reads this command, so redis-server gets the literal text `${var}` as the password: read it in the container's shell into a config file: `command:` `{}`", config_file_fix(&var)),
            ));
        } else {
            out.push(finding(
                at,
                "password-argv",
                format!("`--{name}` is given a literal password: it is in this file, in `docker inspect` (Cmd) and in redis-server's argv: put it in an env file, pass it as `environment:` `REDIS_PASSWORD: ${{REDIS_PASSWORD:?}}`, and edit the command to `{}`", config_file_fix("REDIS_PASSWORD")),
            ));
        }
    }
    // Secret-named variables interpolated elsewhere in the command (once per variable and word;
    // the ones already reported as an option's value are not repeated).
    let reported: std::collections::HashSet<String> = reported
        .iter()
        .flat_map(|&i| interpolated_vars(&args[i]))
        .collect();
    for w in &inv.words {
        for var in interpolated_vars(&w.value) {
            if secret_name(&var) && !reported.contains(&var) {
                out.push(finding(
                    w.at,
                    "password-argv",
                    format!("`${var}` is interpolated by Compose into the command, so its value is in `docker inspect` (Cmd): pass it through `environment:` (`{var}: ${{{var}}}`) and write `\"$${var}\"` inside `sh -c` so the container's shell reads it"),
                ));
            }
        }
    }
    let _ = redis_cli_auth(
        &inv.words
            .iter()
            .map(|w| (w.value.clone(), w.at))
            .collect::<Vec<_>>(),
        out,
    );
}

/// `redis-cli -a PASSWORD` / `-u redis://:pw@` among words (empty words are separators).
/// Returns the indices of the password words.
fn redis_cli_auth(words: &[(String, Pos)], out: &mut Vec<Finding>) -> Vec<usize> {
    let mut in_cli = false;
    let mut values = Vec::new();
    for (i, (w, p)) in words.iter().enumerate() {
        if w.is_empty() {
            in_cli = false;
            continue;
        }
        let base = w.rsplit('/').next().unwrap_or(w);
        if matches!(base, "redis-cli" | "valkey-cli" | "keydb-cli") {
            in_cli = true;
            continue;
        }
        if !in_cli {
            continue;
        }
        let uri_with_password = |s: &str| {
            s.split_once("://")
                .and_then(|(_, rest)| rest.split_once('@'))
                .is_some_and(|(cred, _)| cred.contains(':'))
        };
        let value = if w == "-a" || w == "--pass" {
            values.push(i + 1);
            words.get(i + 1).map(|(n, _)| n.as_str())
        } else if w.starts_with("-a") && w.len() > 2 && !w.starts_with("--") {
            values.push(i);
            Some(&w[2..])
        } else if w == "-u" && words.get(i + 1).is_some_and(|(n, _)| uri_with_password(n)) {
            values.push(i + 1);
            words.get(i + 1).map(|(n, _)| n.as_str())
        } else {
            continue;
        };
        let var = value.map(var_of).unwrap_or_else(|| "REDIS_PASSWORD".into());
        out.push(finding(
            *p,
            "password-argv",
            format!("redis-cli keeps the password given to `{w}` in its argv for the whole run of every health check (`ps` on the host sees it each interval): edit it to `{}`", cli_fix(&var)),
        ));
    }
    values
}

fn check_healthcheck(text: &str, svc: &Service, out: &mut Vec<Finding>) {
    let Some(hc) = svc.node.get("healthcheck") else {
        return;
    };
    let Some(test) = hc.value.get("test") else {
        return;
    };
    let node = test.value;
    // Words: CMD list elements, or the CMD-SHELL / string script split like sh.
    let mut words: Vec<(String, Pos)> = Vec::new();
    let mut script: Option<(String, Pos)> = None;
    match node.items() {
        Some(items) => {
            let vals: Vec<(String, Pos)> = items
                .iter()
                .map(|n| (n.as_str().unwrap_or_default().to_string(), n.start))
                .collect();
            match vals.first().map(|(v, _)| v.as_str()) {
                Some("CMD-SHELL") => script = vals.get(1).cloned(),
                Some("CMD") => words = vals[1..].to_vec(),
                _ => {}
            }
        }
        None => script = node.as_str().map(|s| (s.to_string(), node.start)),
    }
    if let Some((s, p)) = &script {
        if let Ok(toks) = shell::lex(s, Dialect::Sh) {
            for t in toks {
                match t {
                    Tok::Word(w) => words.push((w.value, *p)),
                    Tok::Sep(..) => words.push((String::new(), *p)),
                }
            }
        }
    }
    let _ = text;
    let mut cli = Vec::new();
    let values = redis_cli_auth(&words, &mut cli);
    for (i, (w, p)) in words.iter().enumerate() {
        for var in interpolated_vars(w) {
            // A `-a ${X}` is reported once, as the redis-cli finding.
            let same =
                values.contains(&i) || cli.iter().any(|f| (f.line, f.col) == (p.line, p.col));
            if secret_name(&var) && !same {
                out.push(finding(
                    *p,
                    "password-argv",
                    format!("`${var}` is interpolated by Compose into the health check, so its value is in `docker inspect` (Healthcheck): pass it through `environment:` and write `\"$${var}\"` in a `CMD-SHELL` test so the container's shell reads it, e.g. `{}`", cli_fix(&var)),
                ));
            }
        }
    }
    out.extend(cli);
}

fn loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h == "localhost" || h == "::1" || h.starts_with("127.")
}

fn check_ports(svc: &Service, out: &mut Vec<Finding>) {
    if let Some(l) = svc.node.get("network_mode") {
        if l.value.as_str() == Some("host") {
            out.push(finding(
                l.value.start,
                "port",
                "`network_mode: host` makes redis listen on the host's interfaces: use the default network and publish on 127.0.0.1 if needed",
            ));
        }
    }
    let Some(l) = svc.node.get("ports") else {
        return;
    };
    let Some(items) = l.value.items() else { return };
    for it in items {
        let host = match it.as_str() {
            Some(s) => {
                // [HOST:]HOST_PORT:CONTAINER_PORT or CONTAINER_PORT; IPv6 hosts are bracketed.
                let s = s.trim();
                if let Some(rest) = s.strip_prefix('[') {
                    rest.split_once(']').map(|(h, _)| h.to_string())
                } else {
                    let parts: Vec<&str> = s.split(':').collect();
                    (parts.len() >= 3).then(|| parts[0].to_string())
                }
            }
            None => it
                .get("host_ip")
                .and_then(|h| h.value.as_str().map(str::to_string)),
        };
        match host {
            Some(h) if loopback(&h) => {}
            Some(h) => out.push(finding(
                it.start,
                "port",
                format!("redis publishes a port on {h}, reachable from outside the host: bind it to 127.0.0.1 (\"127.0.0.1:6379:6379\") or drop `ports:`"),
            )),
            None => out.push(finding(
                it.start,
                "port",
                "redis publishes a port on every interface: bind it to 127.0.0.1 (\"127.0.0.1:6379:6379\") or drop `ports:`",
            )),
        }
    }
}

fn check_volume(text: &str, root: &Node, svc: &Service, out: &mut Vec<Finding>) -> Result<(), At> {
    let m = model::data_mount(text, svc)?;
    let dir = model::data_dir(text, svc);
    let Some(m) = m else {
        out.push(finding(
            svc.key.start,
            "data-volume",
            format!("redis service `{}` mounts nothing at its data directory {dir}: the AOF is lost with the container; add `- {}_aof:{dir}` to its `volumes:` and `{}_aof:` to the top-level `volumes:`", svc.name, svc.name, svc.name),
        ));
        return Ok(());
    };
    let name = m.source.clone().unwrap_or_default();
    match m.kind {
        MountKind::Volume => {
            if !name.ends_with("_aof") {
                out.push(finding(
                    m.at,
                    "data-volume",
                    format!("the volume at {dir} is `{name}`, not an `*_aof` named volume: rename it to `{}` here and in the top-level `volumes:`, then carry the data (`compose apply` prints the commands)", super::edit::new_volume_name(&name, &[]).unwrap_or_default()),
                ));
            }
            let declared = root
                .get("volumes")
                .and_then(|l| {
                    l.value
                        .entries()
                        .map(|es| es.iter().any(|(k, _)| k.as_str() == Some(name.as_str())))
                })
                .unwrap_or(false);
            if !declared {
                out.push(finding(
                    m.at,
                    "data-volume",
                    format!("volume `{name}` is not declared in the top-level `volumes:` map"),
                ));
            }
        }
        kind => out.push(finding(
            m.at,
            "data-volume",
            format!(
                "{dir} is a {} mount, not an `*_aof` named volume: mount a named volume there (`- {}_aof:{dir}`, declared in the top-level `volumes:`)",
                format!("{kind:?}").to_lowercase(),
                svc.name
            ),
        )),
    }
    Ok(())
}

/// Staging's redis service must equal production's except for environment-specific names.
pub fn mirror(prod: &Snapshot, staging: &Snapshot) -> Vec<Finding> {
    let mut out = Vec::new();
    let (p, s) = (&prod.facts, &staging.facts);
    let mut diff = |what: &str, at: Pos, a: String, b: String| {
        if a != b {
            out.push(finding(
                at,
                "mirror",
                format!("staging's redis {what} differs from production's (staging {b}, production {a}): staging must mirror production"),
            ));
        }
    };
    diff(
        "image",
        staging.image_at,
        format!("{:?}", p.image),
        format!("{:?}", s.image),
    );
    let norm = |f: &RedisFacts| -> Vec<String> {
        f.command
            .iter()
            .map(|w| match &f.data_volume {
                Some(v) => w.replace(v.as_str(), "<data-volume>"),
                None => w.clone(),
            })
            .collect()
    };
    diff(
        "command",
        staging.command_at,
        model::redact(&format!("{:?}", norm(p))),
        model::redact(&format!("{:?}", norm(s))),
    );
    diff(
        "healthcheck",
        staging.healthcheck_at,
        p.healthcheck
            .as_ref()
            .map_or("none".into(), |v| v.to_string()),
        s.healthcheck
            .as_ref()
            .map_or("none".into(), |v| v.to_string()),
    );
    diff(
        "restart policy",
        staging.restart_at,
        format!("{:?}", p.restart),
        format!("{:?}", s.restart),
    );
    diff(
        "/data mount",
        staging.volumes_at,
        format!("{:?}", prod.mount_shape),
        format!("{:?}", staging.mount_shape),
    );
    let _ = staging.service_at;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(text: &str) -> Vec<(&'static str, usize, usize)> {
        let (f, _) = check_text(text, None).unwrap();
        f.into_iter().map(|f| (f.rule, f.line, f.col)).collect()
    }

    #[test]
    fn flags_each_problem_at_its_position() {
        let text = "services:\n  redis:\n    image: redis\n    command: redis-server --appendonly no --requirepass ${REDIS_PASSWORD}\n    ports: [\"6379:6379\", \"127.0.0.1:6380:6379\"]\n    volumes: [\"./data:/data\"]\n";
        assert_eq!(
            rules(text),
            [
                ("aof", 4, 40),
                ("appendfsync", 4, 14),
                ("password-argv", 4, 43),
                ("data-volume", 6, 15),
                ("port", 5, 13),
            ]
        );
    }

    #[test]
    fn host_network_is_a_published_port() {
        let text = "services:\n  redis:\n    image: redis\n    network_mode: host\n    command: redis-server --appendonly yes --appendfsync everysec\n    volumes: [r_aof:/data]\nvolumes: {r_aof: {}}\n";
        assert_eq!(rules(text), [("port", 4, 19)]);
    }

    #[test]
    fn interpolation_ignores_double_dollar() {
        assert_eq!(interpolated_vars("a $$X ${Y:?m} $Z"), ["Y", "Z"]);
    }
}
