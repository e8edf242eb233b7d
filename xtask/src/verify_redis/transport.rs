//! Where the answer comes from (all the I/O of verify-redis).
//!
//! - [`Direct`]: a connection with the `redis` crate (`--url`, and `--env local` which also inspects
//!   the AOF directory on this machine).
//! - [`Exec`]: a fixed POSIX script ([`SCRIPT`]) run inside the Redis container with `docker compose
//!   exec -T`, locally or over SSH. It uses only shell builtins, `redis-cli` and `redis-check-aof`
//!   (our e2e images are `FROM scratch` plus a busybox `sh`). The password never passes through our
//!   argv or environment: the script sets `REDISCLI_AUTH` from the container's own `REDIS_PASSWORD`.
//!
//! Every call gets a `budget`; nothing here blocks longer than that.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::checks::{AofFiles, Config};
use crate::error::{Error, Result};
use crate::host::Host;
use crate::process::Cmd;

/// What one full round of questions returned.
#[derive(Clone, Debug)]
pub struct Gathered {
    /// `INFO persistence` text.
    pub persistence: String,
    /// `INFO server` text, when allowed.
    pub server: Option<String>,
    pub config: Config,
    /// `None` when this transport cannot see the server's files.
    pub aof_files: Option<AofFiles>,
}

/// The `CONFIG GET` patterns we ask (one pattern per call: Redis 6.2 takes only one).
pub const CONFIG_PATTERNS: [&str; 4] = [
    "append*",
    "no-appendfsync-on-rewrite",
    "stop-writes-on-bgsave-error",
    "dir",
];

// ---------------------------------------------------------------------------------------------
// Direct connection
// ---------------------------------------------------------------------------------------------

/// A direct connection with the `redis` crate.
pub struct Direct {
    info: redis::ConnectionInfo,
    target: String,
    password: Option<String>,
    conn: Option<redis::Connection>,
    /// `--env local`: Redis's `dir` on this machine, to inspect the AOF directory.
    local_dir: Option<PathBuf>,
}

impl std::fmt::Debug for Direct {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Direct")
            .field("target", &self.target)
            .finish()
    }
}

/// The password from the environment: `REDISCLI_AUTH`, then `REDIS_PASSWORD` (empty = none).
pub fn env_password() -> Option<String> {
    ["REDISCLI_AUTH", "REDIS_PASSWORD"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
}

impl Direct {
    /// `redis://[user[:password]@]host[:port][/db]`, `redis+unix:///path[?db=N]`, `unix:///path`.
    /// The password comes from the URL, else from `password` (the environment). Errors never quote
    /// the URL (it may hold a password).
    pub fn from_url(url: &str, password: Option<String>) -> Result<Self> {
        use redis::IntoConnectionInfo;
        let scheme = url.split_once("://").map(|(s, _)| s).unwrap_or("");
        match scheme {
            "redis" | "valkey" | "redis+unix" | "valkey+unix" | "unix" => {}
            "rediss" | "valkeys" => {
                return Err(Error::usage(
                    "rediss:// (TLS) is not supported by this build: reach the server with --env \
                     (docker compose exec / SSH) or through a TLS tunnel such as stunnel",
                ))
            }
            _ => return Err(Error::usage(
                "--url must look like redis://host:port[/db] or redis+unix:///path/to/redis.sock",
            )),
        }
        let parsed = redis::parse_redis_url(url).ok_or_else(|| {
            Error::usage("--url is not a valid URL (expected redis://host:port[/db])")
        })?;
        let unix = scheme.ends_with("unix");
        let target = if unix {
            format!("redis+unix://{}", parsed.path())
        } else {
            let host = parsed.host_str().unwrap_or("");
            let db = parsed.path().trim_start_matches('/');
            format!(
                "redis://{host}:{}{}",
                parsed.port().unwrap_or(6379),
                if db.is_empty() || db == "0" {
                    String::new()
                } else {
                    format!("/{db}")
                }
            )
        };
        let url_password = parsed
            .password()
            .filter(|p| !p.is_empty())
            .map(|p| p.to_string());
        let info = parsed.into_connection_info().map_err(|e| {
            Error::usage(format!(
                "--url: {}",
                scrub(&e.to_string(), url_password.as_deref())
            ))
        })?;
        let mut settings = info.redis_settings().clone().set_skip_set_lib_name();
        let password = match url_password {
            Some(p) => Some(p),
            None => password,
        };
        if let Some(p) = &password {
            settings = settings.set_password(p);
        }
        Ok(Direct {
            info: info.set_redis_settings(settings),
            target,
            password,
            conn: None,
            local_dir: None,
        })
    }

    /// The `local` environment `name`'s redis-server: 127.0.0.1:`port`, AOF under `dir`.
    pub fn local(name: &str, port: u16, password: &str, dir: &Path) -> Result<Self> {
        let pw = (!password.is_empty()).then(|| password.to_string());
        let mut d = Self::from_url(&format!("redis://127.0.0.1:{port}"), pw)?;
        d.target = format!("env:{name} ({})", d.target);
        d.local_dir = Some(dir.to_path_buf());
        Ok(d)
    }

    pub fn target(&self) -> &str {
        &self.target
    }

    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    fn error(&self, e: redis::RedisError, budget: Duration) -> Error {
        let code = e.code().unwrap_or("").to_string();
        let t = &self.target;
        let msg = if e.is_timeout() {
            format!(
                "{t}: no answer within {:.1}s (the server accepted the connection, or the connect attempt, and then said nothing): check that this is Redis and that it is not blocked",
                budget.as_secs_f64()
            )
        } else if e.is_connection_refusal() {
            format!("{t}: connection refused: is Redis running and listening there?")
        } else if e.kind() == redis::ErrorKind::AuthenticationFailed
            || code == "NOAUTH"
            || code == "WRONGPASS"
        {
            format!(
                "{t}: authentication failed ({}): set REDISCLI_AUTH (or REDIS_PASSWORD) to the right password",
                if code.is_empty() { "AUTH rejected" } else { &code }
            )
        } else if code == "NOPERM" {
            format!("{t}: this user may not run INFO (NOPERM): grant it `+info` (ACL SETUSER <user> +info)")
        } else {
            format!("{t}: {e}")
        };
        Error::unavailable(scrub(&msg, self.password.as_deref()))
    }

    fn connection(&mut self, budget: Duration) -> Result<&mut redis::Connection> {
        if self.conn.is_none() {
            let client = redis::Client::open(self.info.clone())
                .map_err(|e| Error::usage(format!("--url: {}", e.detail().unwrap_or("invalid"))))?;
            let c = client
                .get_connection_with_timeout(budget)
                .map_err(|e| self.error(e, budget))?;
            self.conn = Some(c);
        }
        let c = self.conn.as_mut().expect("just set");
        let _ = c.set_read_timeout(Some(budget));
        let _ = c.set_write_timeout(Some(budget));
        Ok(c)
    }

    fn info(&mut self, section: &str, budget: Duration) -> Result<String> {
        let r = {
            let c = self.connection(budget)?;
            redis::cmd("INFO").arg(section).query::<String>(c)
        };
        r.map_err(|e| {
            self.conn = None;
            self.error(e, budget)
        })
    }

    /// `INFO persistence` only.
    pub fn sample(&mut self, budget: Duration) -> Result<String> {
        self.info("persistence", budget)
    }

    /// Everything: INFO persistence and server, CONFIG GET, and (local) the AOF directory.
    pub fn gather(&mut self, budget: impl Fn() -> Duration) -> Result<Gathered> {
        let persistence = self.info("persistence", budget())?;
        let server = Some(self.info("server", budget())?);
        let mut map = BTreeMap::new();
        let mut config = None;
        for pattern in CONFIG_PATTERNS {
            let r = {
                let c = self.connection(budget())?;
                redis::cmd("CONFIG")
                    .arg("GET")
                    .arg(pattern)
                    .query::<Vec<String>>(c)
            };
            match r {
                Ok(kv) => {
                    for pair in kv.chunks(2) {
                        if let [k, v] = pair {
                            map.insert(k.clone(), v.clone());
                        }
                    }
                }
                Err(e) if e.code().is_some() && !e.is_io_error() => {
                    // NOPERM (ACL) or CONFIG renamed/blocked (managed services): not fatal.
                    let code = e.code().unwrap_or("ERR");
                    config = Some(Config::Unknown(format!(
                        "CONFIG GET is not allowed for this user ({code})"
                    )));
                    break;
                }
                Err(e) => {
                    self.conn = None;
                    return Err(self.error(e, budget()));
                }
            }
        }
        let config = config.unwrap_or(Config::Known(map));
        let aof_files = self
            .local_dir
            .as_ref()
            .map(|dir| local_aof_files(dir, &config, budget()));
        Ok(Gathered {
            persistence,
            server,
            config,
            aof_files,
        })
    }
}

/// Replace every occurrence of the password (if any) with `***`.
pub fn scrub(s: &str, password: Option<&str>) -> String {
    match password {
        Some(p) if !p.is_empty() => s.replace(p, "***"),
        _ => s.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// AOF directory on this machine
// ---------------------------------------------------------------------------------------------

/// The file names a multi-part AOF manifest lists (`file <name> seq <n> type <b|h|i>`). Pure.
pub fn manifest_files(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let words = shlex::split(l)?;
            (words.first().map(String::as_str) == Some("file"))
                .then(|| words.get(1).cloned())
                .flatten()
        })
        .collect()
}

/// Inspect `<dir>/<appenddirname>/<appendfilename>.manifest` (Redis 7+, Valkey) or `<dir>/<appendfilename>`
/// (6.2) and run `redis-check-aof` on it.
pub fn local_aof_files(dir: &Path, config: &Config, budget: Duration) -> AofFiles {
    let adn = config.get("appenddirname").unwrap_or("appendonlydir");
    let afn = config.get("appendfilename").unwrap_or("appendonly.aof");
    let aof_dir = dir.join(adn);
    let manifest = aof_dir.join(format!("{afn}.manifest"));
    let single = dir.join(afn);
    let (target, files, missing) = if manifest.is_file() {
        let text = match std::fs::read_to_string(&manifest) {
            Ok(t) => t,
            Err(e) => return AofFiles::Unreadable(format!("{}: {e}", manifest.display())),
        };
        let names = manifest_files(&text);
        let missing: Vec<String> = names
            .iter()
            .filter(|n| !aof_dir.join(n).is_file())
            .cloned()
            .collect();
        (manifest.clone(), names.len(), missing)
    } else if single.is_file() && !aof_dir.is_dir() {
        (single.clone(), 1, Vec::new())
    } else {
        return AofFiles::Missing {
            path: manifest.display().to_string(),
        };
    };
    let path = target.display().to_string();
    if !missing.is_empty() {
        return AofFiles::Checked {
            path,
            files,
            missing,
            check: Ok(()),
        };
    }
    let run = || -> Result<std::result::Result<(), String>> {
        let out = Cmd::new("redis-check-aof")
            .arg(&target)
            .timeout(budget)
            .output()?;
        if out.status.success() {
            Ok(Ok(()))
        } else {
            Ok(Err(tail(&format!(
                "{}{}",
                out.stdout_str(),
                out.stderr_str()
            ))))
        }
    };
    // A live server appends while we read: a failure is confirmed by a second run.
    let verdict = match run() {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => {
            std::thread::sleep(Duration::from_millis(200));
            match run() {
                Ok(v) => v,
                Err(e) => return AofFiles::Unreadable(e.to_string()),
            }
        }
        Err(e) => return AofFiles::Unreadable(e.to_string()),
    };
    AofFiles::Checked {
        path,
        files,
        missing,
        check: verdict,
    }
}

/// The last meaningful lines of a tool's output, on one line.
fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let start = lines.len().saturating_sub(2);
    let t = lines[start..].join(" / ");
    if t.chars().count() > 300 {
        t.chars().take(300).collect::<String>() + "…"
    } else if t.is_empty() {
        "no output".into()
    } else {
        t
    }
}

// ---------------------------------------------------------------------------------------------
// Exec inside the container
// ---------------------------------------------------------------------------------------------

/// Runs inside the Redis container (busybox `sh`: builtins, `redis-cli`, `redis-check-aof` only;
/// Valkey's `valkey-cli`/`valkey-check-aof` when the redis-named ones are absent).
/// `$1` is `full` or `sample`; `$2` an optional port. Output: `@@xtask-begin NAME` ... `@@xtask-end RC`.
pub const SCRIPT: &str = r#"mode=$1
port=${2:-}
if [ -n "${REDIS_PASSWORD:-}" ] && [ -z "${REDISCLI_AUTH:-}" ]; then
  REDISCLI_AUTH=$REDIS_PASSWORD
  export REDISCLI_AUTH
fi
rcli=$(command -v redis-cli || command -v valkey-cli || echo redis-cli)
cli() {
  if [ -n "$port" ]; then
    "$rcli" --no-auth-warning -e -p "$port" "$@"
  else
    "$rcli" --no-auth-warning -e "$@"
  fi
}
part() {
  printf '@@xtask-begin %s\n%s\n@@xtask-end %s\n' "$1" "$2" "$3"
}
val() {
  printf '%s\n' "$2" | {
    while read -r k; do
      read -r v || break
      if [ "$k" = "$1" ]; then printf '%s' "$v"; break; fi
    done
  }
}
out=$(cli INFO persistence 2>&1); part persistence "$out" $?
[ "$mode" = sample ] && exit 0
out=$(cli INFO server 2>&1); part server "$out" $?
append=$(cli CONFIG GET 'append*' 2>&1); part config-append "$append" $?
out=$(cli CONFIG GET no-appendfsync-on-rewrite 2>&1); part config-rewrite "$out" $?
out=$(cli CONFIG GET stop-writes-on-bgsave-error 2>&1); part config-bgsave "$out" $?
dirs=$(cli CONFIG GET dir 2>&1); part config-dir "$dirs" $?
dir=$(val dir "$dirs")
[ -n "$dir" ] || dir=$(cd /proc/1/cwd 2>/dev/null && pwd -P)
adn=$(val appenddirname "$append"); [ -n "$adn" ] || adn=appendonlydir
afn=$(val appendfilename "$append"); [ -n "$afn" ] || afn=appendonly.aof
echo "@@xtask-begin aof"
target=
if [ -z "$dir" ]; then
  echo "unknown-dir"
elif [ -f "$dir/$adn/$afn.manifest" ]; then
  target="$dir/$adn/$afn.manifest"
  n=0
  while read -r w name rest; do
    [ "$w" = file ] || continue
    n=$((n + 1))
    [ -f "$dir/$adn/$name" ] || echo "missing $name"
  done < "$target"
  echo "files $n"
elif [ -f "$dir/$afn" ] && [ ! -d "$dir/$adn" ]; then
  target="$dir/$afn"
  echo "files 1"
else
  echo "absent $dir/$adn/$afn.manifest"
fi
if [ -n "$target" ]; then
  echo "path $target"
  chk=$(command -v redis-check-aof || command -v valkey-check-aof)
  if [ -z "$chk" ]; then
    echo "no-check-tool"
  else
    res=$("$chk" "$target" 2>&1) || res=$("$chk" "$target" 2>&1)
    rc=$?
    if [ "$rc" = 0 ]; then
      echo "check ok"
    else
      echo "check failed $rc"
      printf '%s\n' "$res" | while read -r l; do echo "out $l"; done
    fi
  fi
fi
echo "@@xtask-end 0"
"#;

/// How the script reaches the Redis container.
#[derive(Clone, Debug)]
pub enum Via {
    /// `compose exec -T <redis service>` on the environment's [`Host`] (this machine's engine, or
    /// the server over SSH), with the Compose CLI of the one decision.
    Host(Box<Host>),
    /// The script run by a shell on this machine against 127.0.0.1:`port` (the container-less case:
    /// used by the tests to run the very script the containers run). `env` is added to the shell's
    /// environment (the container's `REDIS_PASSWORD`).
    Shell {
        shell: Vec<String>,
        env: Vec<(String, String)>,
        port: u16,
    },
}

/// The exec transport.
#[derive(Clone, Debug)]
pub struct Exec {
    pub via: Via,
    pub target: String,
}

impl Exec {
    /// The Redis container of a Compose environment, reached through its host.
    pub fn on(host: Host) -> Self {
        let env = host.env();
        let target = match host.remote() {
            Some(r) => format!(
                "env:{} (ssh {}@{} docker compose exec {})",
                env.name, r.target.user, r.target.host, env.services.redis
            ),
            None => format!(
                "env:{} (docker compose exec {})",
                env.name, env.services.redis
            ),
        };
        Exec {
            target,
            via: Via::Host(Box::new(host)),
        }
    }

    fn command(&self, mode: &str, budget: Duration) -> Result<Cmd> {
        let script_words = |extra: &[String]| {
            let mut w = vec![
                "sh".to_string(),
                "-c".to_string(),
                SCRIPT.to_string(),
                "xtask".to_string(),
                mode.to_string(),
            ];
            w.extend(extra.iter().cloned());
            w
        };
        let cmd = match &self.via {
            Via::Host(host) => host.compose_exec(&host.env().services.redis, &script_words(&[]))?,
            Via::Shell { shell, env, port } => {
                let (prog, rest) = shell
                    .split_first()
                    .ok_or_else(|| Error::usage("empty shell"))?;
                let mut c = Cmd::new(prog).args(rest);
                for (k, v) in env {
                    c = c.secret_env(k, v);
                }
                // `shell` takes the place of the container's `sh`.
                c.args(script_words(&[port.to_string()]).into_iter().skip(1))
            }
        };
        Ok(cmd.timeout(budget))
    }

    fn run(&self, mode: &str, budget: Duration) -> Result<BTreeMap<String, (String, i32)>> {
        let cmd = self.command(mode, budget)?;
        let out = cmd.output().map_err(|e| e.context(&self.target))?;
        let parts = split_parts(&out.stdout_str());
        if !parts.contains_key("persistence") {
            let err = out.stderr_str();
            let why = err
                .lines()
                .map(str::trim)
                .rfind(|l| !l.is_empty())
                .unwrap_or("no output");
            return Err(Error::unavailable(format!(
                "{}: the exec {}: {why}",
                self.target,
                crate::process::describe(out.status)
            )));
        }
        Ok(parts)
    }

    fn persistence(&self, parts: &BTreeMap<String, (String, i32)>) -> Result<String> {
        let (text, rc) = &parts["persistence"];
        if *rc != 0 {
            return Err(cli_error(&self.target, text));
        }
        Ok(text.clone())
    }

    pub fn sample(&mut self, budget: Duration) -> Result<String> {
        let parts = self.run("sample", budget)?;
        self.persistence(&parts)
    }

    pub fn gather(&mut self, budget: Duration) -> Result<Gathered> {
        let parts = self.run("full", budget)?;
        let persistence = self.persistence(&parts)?;
        let server = parts
            .get("server")
            .filter(|(_, rc)| *rc == 0)
            .map(|(t, _)| t.clone());
        let mut map = BTreeMap::new();
        let mut config = None;
        for name in [
            "config-append",
            "config-rewrite",
            "config-bgsave",
            "config-dir",
        ] {
            match parts.get(name) {
                Some((text, 0)) => {
                    let lines: Vec<&str> = text.lines().collect();
                    for pair in lines.chunks(2) {
                        if let [k, v] = pair {
                            map.insert(k.to_string(), v.to_string());
                        }
                    }
                }
                Some((text, _)) => {
                    let first = text.lines().next().unwrap_or("").trim();
                    let code = first
                        .trim_start_matches("(error)")
                        .split_whitespace()
                        .next()
                        .unwrap_or("ERR");
                    config = Some(Config::Unknown(format!(
                        "CONFIG GET is not allowed for this user ({code})"
                    )));
                    break;
                }
                None => {
                    config = Some(Config::Unknown("the exec returned no CONFIG reply".into()));
                    break;
                }
            }
        }
        let config = config.unwrap_or(Config::Known(map));
        let aof_files = parts.get("aof").map(|(t, _)| parse_aof_part(t));
        Ok(Gathered {
            persistence,
            server,
            config,
            aof_files,
        })
    }
}

/// Split the script's output into its parts: name → (text, exit code). Pure.
pub fn split_parts(out: &str) -> BTreeMap<String, (String, i32)> {
    let mut parts = BTreeMap::new();
    let mut current: Option<(String, Vec<&str>)> = None;
    for line in out.lines() {
        if let Some(name) = line.strip_prefix("@@xtask-begin ") {
            current = Some((name.trim().to_string(), Vec::new()));
        } else if let Some(rc) = line.strip_prefix("@@xtask-end ") {
            if let Some((name, lines)) = current.take() {
                let rc = rc.trim().parse().unwrap_or(-1);
                parts.insert(name, (lines.join("\n"), rc));
            }
        } else if let Some((_, lines)) = current.as_mut() {
            lines.push(line);
        }
    }
    parts
}

/// The script's `aof` part → [`AofFiles`]. Pure.
pub fn parse_aof_part(text: &str) -> AofFiles {
    let mut path = None;
    let mut files = 0;
    let mut missing = Vec::new();
    let mut check = None;
    let mut out = Vec::new();
    for line in text.lines() {
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        match word {
            "unknown-dir" => {
                return AofFiles::Unreadable(
                    "Redis's working directory is unknown (CONFIG GET dir denied)".into(),
                )
            }
            "absent" => {
                return AofFiles::Missing {
                    path: rest.to_string(),
                }
            }
            "no-check-tool" => {
                return AofFiles::Unreadable(
                    "neither redis-check-aof nor valkey-check-aof is in the container".into(),
                )
            }
            "path" => path = Some(rest.to_string()),
            "files" => files = rest.trim().parse().unwrap_or(0),
            "missing" => missing.push(rest.to_string()),
            "check" => check = Some(rest.starts_with("ok")),
            "out" => out.push(rest),
            _ => {}
        }
    }
    let Some(path) = path else {
        return AofFiles::Unreadable("the AOF check printed nothing".into());
    };
    let verdict = match check {
        Some(true) => Ok(()),
        Some(false) => Err(tail(&out.join("\n"))),
        None if !missing.is_empty() => Ok(()),
        None => Err("redis-check-aof did not run".into()),
    };
    AofFiles::Checked {
        path,
        files,
        missing,
        check: verdict,
    }
}

/// A redis-cli failure inside the container → exit 3 with a reason.
fn cli_error(target: &str, text: &str) -> Error {
    let first = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("no output");
    let msg = if text.contains("NOAUTH")
        || text.contains("WRONGPASS")
        || text.contains("AUTH failed")
    {
        format!("{target}: authentication failed ({first}): check REDIS_PASSWORD in the environment's env file")
    } else if text.contains("NOPERM") {
        format!("{target}: this user may not run INFO (NOPERM): grant it `+info`")
    } else if text.contains("Could not connect") || text.contains("Connection refused") {
        format!("{target}: Redis does not answer inside the container: {first}")
    } else {
        format!("{target}: redis-cli INFO failed: {first}")
    };
    Error::unavailable(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_and_aof_part() {
        let out = "@@xtask-begin persistence\nloading:0\naof_enabled:1\n@@xtask-end 0\n@@xtask-begin aof\nfiles 2\nmissing appendonly.aof.1.incr.aof\npath /data/appendonlydir/appendonly.aof.manifest\n@@xtask-end 0\n";
        let p = split_parts(out);
        assert_eq!(p["persistence"], ("loading:0\naof_enabled:1".into(), 0));
        let AofFiles::Checked { files, missing, .. } = parse_aof_part(&p["aof"].0) else {
            panic!()
        };
        assert_eq!((files, missing.len()), (2, 1));
        assert!(matches!(
            parse_aof_part("absent /data/appendonlydir/appendonly.aof.manifest"),
            AofFiles::Missing { .. }
        ));
    }

    #[test]
    fn manifest_lines() {
        let m = "file appendonly.aof.1.base.rdb seq 1 type b\nfile \"a b.incr.aof\" seq 2 type i\n";
        assert_eq!(
            manifest_files(m),
            ["appendonly.aof.1.base.rdb", "a b.incr.aof"]
        );
    }

    #[test]
    fn urls_never_echo_the_password() {
        for bad in [
            "http://u:hunter2@h:1",
            "rediss://:hunter2@h:1",
            "redis://:hunter2@[::1",
        ] {
            let e = Direct::from_url(bad, None).unwrap_err().to_string();
            assert!(!e.contains("hunter2"), "{e}");
        }
        let d = Direct::from_url("redis://:hunter2@127.0.0.1:7/2", None).unwrap();
        assert_eq!(d.target(), "redis://127.0.0.1:7/2");
        assert_eq!(d.password(), Some("hunter2"));
        let d = Direct::from_url("redis://127.0.0.1", Some("pw".into())).unwrap();
        assert_eq!(d.target(), "redis://127.0.0.1:6379");
        assert_eq!(d.password(), Some("pw"));
    }
}
