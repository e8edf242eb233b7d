//! `compose apply`'s password fixes, planned as byte edits. Pure.
//!
//! - A health check's `redis-cli -a "$$X"` (or `-a ${X}`) becomes
//!   `REDISCLI_AUTH="$$X" redis-cli --no-auth-warning ...`: the container's shell reads the
//!   variable, no argv holds it.
//! - A password that Compose interpolates into the server's command (`--requirepass ${X}`)
//!   moves into the container's environment (`X: ${X}`), and the command becomes the config-file
//!   form of docker-compose.prod.yml: `sh -c 'umask 077 && printf ... > /tmp/redis.conf && exec
//!   redis-server /tmp/redis.conf ...'`, so neither `docker inspect` nor any argv holds it.
//!
//! What cannot be fixed this way (a literal password, a config file already first) is left for
//! `compose check` to report with the line to edit.

use super::check::{interpolated_vars, shell_var};
use super::model::{self, Container, Invocation, Service};
use super::shell::Dialect;
use crate::process::quote;
use crate::yaml::{self, Edit, Kind, Node, Style};

/// What a password value is, for moving it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// Exactly one Compose interpolation (`${X}`, `${X:?msg}`, `$X`): the variable and the text.
    Interpolated { var: String, text: String },
    /// `$$X` / `"$$X"`: read by a shell in the container.
    Shell { var: String },
    /// Anything else (a literal, a mix).
    Other,
}

pub fn classify(v: &str) -> Value {
    let vars = interpolated_vars(v);
    if vars.len() == 1 && !v.contains("$$") {
        let var = vars[0].clone();
        let plain = format!("${var}");
        let braced_ok = v.starts_with("${") && v.ends_with('}') && v[2..].starts_with(&var);
        if v == plain || braced_ok {
            let text = if v == plain {
                format!("${{{var}}}")
            } else {
                v.to_string()
            };
            return Value::Interpolated { var, text };
        }
        return Value::Other;
    }
    if vars.is_empty() {
        if let Some(var) = shell_var(v) {
            let bare = v.trim_matches('"');
            if bare == format!("$${var}") || bare == format!("$${{{var}}}") {
                return Value::Shell { var };
            }
        }
    }
    Value::Other
}

/// The planned password edits of one service.
#[derive(Default, Debug)]
pub struct Plan {
    pub edits: Vec<Edit>,
    pub changes: Vec<String>,
    /// Variables to add to `environment:` (name, value such as `${X:?set X}`).
    pub env_add: Vec<(String, String)>,
    /// How many `password-argv` errors these edits remove.
    pub fixed: usize,
    /// The health check's `test` was rewritten.
    pub healthcheck: bool,
    /// The command was rewritten into the config-file form: its expected server arguments.
    pub command: Option<Vec<String>>,
}

fn add_env(plan: &mut Plan, env: &super::env::Env, var: &str, text: &str) {
    if env.entries.iter().any(|e| e.key == var) || plan.env_add.iter().any(|(k, _)| k == var) {
        return;
    }
    plan.env_add.push((var.to_string(), text.to_string()));
}

const CLIS: [&str; 3] = ["redis-cli", "valkey-cli", "keydb-cli"];

/// Health checks: `redis-cli -a V` → `REDISCLI_AUTH=V redis-cli --no-auth-warning`.
pub fn healthcheck(text: &str, svc: &Service, env: &super::env::Env, plan: &mut Plan) {
    let Some(hc) = svc.node.get("healthcheck") else {
        return;
    };
    if hc.inherited().is_some() {
        return;
    }
    let Some(test) = hc.value.get("test") else {
        return;
    };
    if test.inherited().is_some() {
        return;
    }
    let node = test.value;
    match &node.kind {
        Kind::Scalar { .. } => script_fix(text, node, env, plan),
        Kind::Seq { items, flow } => match items.first().and_then(|n| n.as_str()) {
            Some("CMD-SHELL") => {
                if let Some(s) = items.get(1) {
                    script_fix(text, s, env, plan);
                }
            }
            Some("CMD") if *flow => cmd_fix(text, node, items, env, plan),
            _ => {}
        },
        Kind::Map { .. } => {}
    }
}

/// In a shell script scalar (CMD-SHELL).
fn script_fix(text: &str, node: &Node, env: &super::env::Env, plan: &mut Plan) {
    let Some(value) = node.as_str() else { return };
    let Some(smap) = yaml::scalar_map(text, node) else {
        return;
    };
    let Ok((words, seps)) = model::sub_words(text, value, Some(&smap), node.start, Dialect::Sh)
    else {
        return;
    };
    let dq = node.style() == Some(Style::DoubleQuoted);
    let mut i = 0;
    while i < words.len() {
        if !CLIS.contains(&model::basename(&words[i].value)) {
            i += 1;
            continue;
        }
        let c = i;
        // `-a V` within the same simple command.
        let mut j = c + 1;
        let mut found = None;
        while j < words.len() && seps[j - 1].is_empty() {
            if (words[j].value == "-a" || words[j].value == "--pass")
                && j + 1 < words.len()
                && seps[j].is_empty()
            {
                found = Some(j);
                break;
            }
            j += 1;
        }
        let Some(j) = found else {
            i += 1;
            continue;
        };
        let no_warning = words[c + 1..]
            .iter()
            .take_while(|_| true)
            .any(|w| w.value == "--no-auth-warning");
        let (Some(cli_raw), Some(a_raw), Some(v_raw), Some(prev_raw)) = (
            words[c].raw.clone(),
            words[j].raw.clone(),
            words[j + 1].raw.clone(),
            words[j - 1].raw.clone(),
        ) else {
            return;
        };
        let auth = match classify(&words[j + 1].value) {
            Value::Shell { .. } => text[v_raw.clone()].to_string(),
            Value::Interpolated { var, text: t } => {
                add_env(plan, env, &var, &t);
                if dq {
                    format!("\\\"$${var}\\\"")
                } else {
                    format!("\"$${var}\"")
                }
            }
            Value::Other => {
                i = j + 2;
                continue;
            }
        };
        let _ = a_raw;
        plan.edits.push(Edit {
            range: cli_raw.start..cli_raw.start,
            text: format!("REDISCLI_AUTH={auth} "),
        });
        let flag = if no_warning { "" } else { " --no-auth-warning" };
        if j - 1 == c {
            plan.edits.push(Edit {
                range: cli_raw.end..v_raw.end,
                text: flag.to_string(),
            });
        } else {
            if !flag.is_empty() {
                plan.edits.push(Edit {
                    range: cli_raw.end..cli_raw.end,
                    text: flag.to_string(),
                });
            }
            plan.edits.push(Edit {
                range: prev_raw.end..v_raw.end,
                text: String::new(),
            });
        }
        plan.changes.push(format!(
            "{}:{}: health check: `{} -a ...` -> `REDISCLI_AUTH=... {} --no-auth-warning` (no password in its argv)",
            words[c].at.line, words[c].at.col, words[c].value, words[c].value
        ));
        plan.fixed += 1;
        plan.healthcheck = true;
        i = j + 2;
    }
}

/// `["CMD", "redis-cli", "-a", V, ...]` on one line → `["CMD-SHELL", "REDISCLI_AUTH=... ..."]`.
fn cmd_fix(text: &str, node: &Node, items: &[Node], env: &super::env::Env, plan: &mut Plan) {
    let raw = &text[node.span.clone()];
    if raw.contains('\n') || !raw.starts_with('[') {
        return;
    }
    let vals: Option<Vec<&str>> = items.iter().map(|n| n.as_str()).collect();
    let Some(vals) = vals else { return };
    if vals.len() < 2 || !CLIS.contains(&model::basename(vals[1])) {
        return;
    }
    let Some(j) = vals
        .iter()
        .position(|w| *w == "-a" || *w == "--pass")
        .filter(|&j| j + 1 < vals.len())
    else {
        return;
    };
    let var = match classify(vals[j + 1]) {
        Value::Interpolated { var, text: t } => {
            add_env(plan, env, &var, &t);
            var
        }
        // In a CMD list no shell ran: `$$X` reached redis-cli as the text `$X`. Now it is read.
        Value::Shell { var } => var,
        Value::Other => return,
    };
    let mut script = format!("REDISCLI_AUTH=\"$${var}\" {}", quote(vals[1]));
    if !vals.contains(&"--no-auth-warning") {
        script.push_str(" --no-auth-warning");
    }
    for (k, w) in vals.iter().enumerate().skip(2) {
        if k == j || k == j + 1 {
            continue;
        }
        script.push(' ');
        script.push_str(&quote(w));
    }
    plan.edits.push(Edit {
        range: node.span.clone(),
        text: format!(
            "[\"CMD-SHELL\", {}]",
            serde_json::to_string(&script).unwrap_or_default()
        ),
    });
    plan.changes.push(format!(
        "{}:{}: health check: [\"CMD\", \"{}\", \"-a\", ...] -> [\"CMD-SHELL\", \"REDISCLI_AUTH=... {} --no-auth-warning ...\"] (no password in its argv)",
        node.start.line, node.start.col, vals[1], vals[1]
    ));
    plan.fixed += 1;
    plan.healthcheck = true;
}

/// The server's command: a password Compose interpolates (or a `$$X` no shell reads) moves into
/// the environment and a config file written by the container's shell. Also makes the command
/// durable (appendonly/appendfsync), since it is rewritten as a whole. `None` when not
/// applicable (no such password, a script already, a config file first, an inherited command).
pub fn command(
    text: &str,
    svc: &Service,
    inv: &Invocation,
    binary: &str,
    env: &super::env::Env,
    durable: &[(&str, &str)],
    plan: &mut Plan,
) -> Option<()> {
    if inv.in_script || inv.inherited.is_some() || inv.container == Container::Absent {
        return None;
    }
    let node = inv.node.as_ref()?;
    let args = inv.arg_values();
    let (conf, opts) = model::parse_server_args(&args);
    let secret: Vec<&model::Opt> = opts
        .iter()
        .filter(|o| model::SECRET_OPTIONS.contains(&o.name.as_str()))
        .collect();
    if secret.is_empty() || conf.is_some() {
        return None;
    }
    let mut lines = Vec::new();
    let mut refs = Vec::new();
    let mut to_env = Vec::new();
    for o in &secret {
        if o.values.len() != 1 {
            return None;
        }
        match classify(&args[o.values[0]]) {
            Value::Interpolated { var, text: t } => {
                to_env.push((var.clone(), t));
                refs.push(format!("\"$${var}\""));
            }
            Value::Shell { var } => {
                // Reaches redis-server only through the container's environment.
                let has =
                    env.entries.iter().any(|e| e.key == var) || svc.node.get("env_file").is_some();
                if !has {
                    return None;
                }
                refs.push(format!("\"$${var}\""));
            }
            Value::Other => return None,
        }
        lines.push(format!("{} \"%s\"\\n", o.name));
    }
    // The other arguments, made durable.
    let mut rest: Vec<String> = Vec::new();
    let mut seen = Vec::new();
    for o in &opts {
        if model::SECRET_OPTIONS.contains(&o.name.as_str()) {
            continue;
        }
        rest.push(args[o.index].clone());
        match durable.iter().find(|(n, _)| *n == o.name) {
            Some((n, want)) => {
                if o.values.len() != 1 {
                    return None;
                }
                seen.push(*n);
                rest.push(want.to_string());
            }
            None => rest.extend(o.values.iter().map(|&i| args[i].clone())),
        }
    }
    for (n, want) in durable {
        if !seen.contains(n) {
            rest.push(format!("--{n}"));
            rest.push(want.to_string());
        }
    }
    let bin = inv
        .server
        .as_ref()
        .map_or(binary.to_string(), |w| w.value.clone());
    let script = format!(
        "umask 077 && printf '{}' {} > /tmp/redis.conf && exec {} /tmp/redis.conf {}",
        lines.join(""),
        refs.join(" "),
        quote(&bin),
        rest.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" ")
    );
    // Replace the whole value (not trailing blanks or a comment after it).
    let mut end = node.span.end;
    let b = text.as_bytes();
    while end > node.span.start && matches!(b[end - 1], b' ' | b'\t' | b'\n' | b'\r') {
        end -= 1;
    }
    for (var, t) in to_env {
        add_env(plan, env, &var, &t);
    }
    plan.edits.push(Edit {
        range: node.span.start..end,
        text: format!(
            "[\"sh\", \"-c\", {}]",
            serde_json::to_string(&script).unwrap_or_default()
        ),
    });
    plan.changes.push(format!(
        "{}:{}: command: the password moves into `environment:` and a 0600 config file written by the container's shell (`sh -c 'umask 077 && printf ... > /tmp/redis.conf && exec {bin} /tmp/redis.conf ...'`, as in docker-compose.prod.yml); {} added",
        node.start.line,
        node.start.col,
        durable.iter().map(|(n, v)| format!("--{n} {v}")).collect::<Vec<_>>().join(" ")
    ));
    plan.fixed += secret.len();
    let mut expected = vec!["/tmp/redis.conf".to_string()];
    expected.extend(rest);
    plan.command = Some(expected);
    Some(())
}

/// In an `sh -c` script: a password that Compose interpolates (`--requirepass ${X}`) becomes
/// `"$$X"`, read by the container's shell from its environment (`X: ${X}` added when missing).
/// Returns the changed server arguments (index, new value). Each candidate spelling is checked by
/// re-reading the edited command: quoting differs with the YAML style and Compose's own quotes.
pub fn script_password(
    text: &str,
    svc: &Service,
    inv: &Invocation,
    env: &super::env::Env,
    plan: &mut Plan,
) -> Vec<(usize, String)> {
    let mut changed = Vec::new();
    if !inv.in_script || inv.inherited.is_some() {
        return changed;
    }
    let args = inv.arg_values();
    let (_, opts) = model::parse_server_args(&args);
    for o in opts
        .iter()
        .filter(|o| model::SECRET_OPTIONS.contains(&o.name.as_str()))
    {
        let [vi] = o.values[..] else { continue };
        let Value::Interpolated { var, text: t } = classify(&args[vi]) else {
            continue;
        };
        let Some(raw) = inv.args[vi].raw.clone() else {
            continue;
        };
        let want = format!("$${var}");
        let found = [
            format!("\"$${var}\""),
            format!("\\\"$${var}\\\""),
            format!("\\\\\\\"$${var}\\\\\\\""),
        ]
        .into_iter()
        .find(|cand| {
            let Some(new) = yaml::apply_edits(
                text,
                &[Edit {
                    range: raw.clone(),
                    text: cand.clone(),
                }],
            ) else {
                return false;
            };
            let Ok(doc) = yaml::parse(&new) else {
                return false;
            };
            let Ok(s) = model::find_redis(&new, &doc.root, Some(svc.name)) else {
                return false;
            };
            let Ok(i) = model::invocation(&new, &s) else {
                return false;
            };
            let mut expect = args.clone();
            expect[vi] = want.clone();
            // Quoted for the shell too (`"$X"`, not a bare `$X` that it would split).
            let quoted = format!("\"$${var}\"");
            i.in_script
                && i.arg_values() == expect
                && i.outside == inv.outside
                && i.words.iter().any(|w| w.value.contains(&quoted))
        });
        let Some(cand) = found else { continue };
        plan.edits.push(Edit {
            range: raw,
            text: cand,
        });
        add_env(plan, env, &var, &t);
        plan.changes.push(format!(
            "{}:{}: --{} {} -> --{} \"$${var}\" (the container's shell reads it from its environment)",
            inv.args[vi].at.line, inv.args[vi].at.col, o.name, args[vi], o.name
        ));
        plan.fixed += 1;
        changed.push((vi, want));
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_password_values() {
        assert_eq!(
            classify("${REDIS_PASSWORD:?set it}"),
            Value::Interpolated {
                var: "REDIS_PASSWORD".into(),
                text: "${REDIS_PASSWORD:?set it}".into()
            }
        );
        assert_eq!(
            classify("$P"),
            Value::Interpolated {
                var: "P".into(),
                text: "${P}".into()
            }
        );
        assert_eq!(classify("\"$$P\""), Value::Shell { var: "P".into() });
        assert_eq!(classify("$${P}"), Value::Shell { var: "P".into() });
        assert_eq!(classify("hunter2"), Value::Other);
        assert_eq!(classify("x${P}"), Value::Other);
    }
}
