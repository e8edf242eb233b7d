//! `cargo xtask backup schedule`: install the nightly backup job on the environment's host.
//!
//! The job is `nightly.sh` (the wrapper: environment file, log, last result, dead-man's-switch pings)
//! running `infra/scripts/backup-db.sh` with `LABEL=nightly`, started by a systemd timer
//! (`Persistent=true`: a run missed while the host was down happens at boot) where systemd runs, by
//! a crontab line otherwise. Its files live in `<environment dir>/nightly-backup/` (the server's
//! `remote_dir`, or this machine's records directory of the environment): `nightly.sh`,
//! `nightly.env` (0600; the script's variables; on a server no secret: the B2 key stays in the
//! host's own rclone config and the database password in the container), `nightly.log`,
//! `nightly.last`. Rendering ([`Job`]) is pure; `schedule.sh` does the host side (probe, put only
//! when different, install, remove, status), so a second run changes nothing.

use std::time::Duration;

use serde::Serialize;

use crate::environments::Environments;
use crate::error::{Error, ExitCode, Result};
use crate::host::{Host, Script};
use crate::process::quote;

/// The job's wrapper, installed as `<jobdir>/nightly.sh`.
pub const NIGHTLY_SH: &str = include_str!("nightly.sh");
/// The host side of scheduling (see its header).
pub const SCHEDULE_SH: &str = include_str!("schedule.sh");
/// The job directory inside the environment's directory.
pub const JOB_DIR: &str = "nightly-backup";

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// systemd when it runs on the host (PID 1), else cron.
    Auto,
    Systemd,
    Cron,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Environment from infra/environments.toml.
    #[arg(long, default_value = "local")]
    pub env: String,
    /// Time of day, HH:MM (systemd: UTC; cron: the host's time zone, UTC on our servers).
    #[arg(long, default_value = "03:00")]
    pub at: String,
    /// Dead-man's-switch URL (healthchecks.io style: URL/start, URL, URL/fail).
    #[arg(long, value_name = "URL")]
    pub ping_url: Option<String>,
    /// Uninstall the job (timer and units or crontab line, and its files; the log stays).
    #[arg(long)]
    pub remove: bool,
    /// Print the unit files or the crontab line and the files, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Force the scheduler instead of detecting it on the host.
    #[arg(long, value_enum, default_value = "auto")]
    pub via: Via,
}

/// `HH:MM`, 24 h.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeOfDay {
    pub hour: u8,
    pub minute: u8,
}

impl TimeOfDay {
    pub fn parse(s: &str) -> Result<TimeOfDay> {
        let bad = || Error::usage(format!("--at {s:?}: expected HH:MM (00:00 to 23:59)"));
        let (h, m) = s.split_once(':').ok_or_else(bad)?;
        if h.len() != 2 || m.len() != 2 || !h.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let (hour, minute): (u8, u8) =
            (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
        if hour > 23 || minute > 59 {
            return Err(bad());
        }
        Ok(TimeOfDay { hour, minute })
    }
}

fn safe_chars(s: &str, extra: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-".contains(c) || extra.contains(c))
}

/// A ping URL that can go into a unit file and a crontab line as it is: `http(s)://` and
/// `[A-Za-z0-9/._-:~?&=+]`, no `%` (cron's newline, systemd's specifier), at most 300 characters.
pub fn check_ping_url(u: &str) -> Result<()> {
    let ok = (u.starts_with("https://") || u.starts_with("http://"))
        && u.len() <= 300
        && safe_chars(u, ":~?&=+")
        && !u.ends_with('/');
    if ok {
        Ok(())
    } else {
        Err(Error::usage(format!(
            "--ping-url {:?}: expected http(s)://host/path of [A-Za-z0-9/._-:~?&=+], without a trailing /",
            u.chars().take(80).collect::<String>()
        )))
    }
}

/// The job as it will be installed (pure).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job {
    pub env: String,
    /// Absolute: where `infra/scripts/backup-db.sh` is.
    pub workdir: String,
    /// Absolute: the job's own files.
    pub jobdir: String,
    pub at: TimeOfDay,
    pub ping_url: Option<String>,
}

impl Job {
    pub fn new(
        env: &str,
        workdir: &str,
        jobdir: &str,
        at: TimeOfDay,
        ping_url: Option<&str>,
    ) -> Result<Job> {
        if !env
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-".contains(c))
            || env.is_empty()
        {
            return Err(Error::usage(format!(
                "environment name {env:?} cannot name a unit"
            )));
        }
        for p in [workdir, jobdir] {
            if !p.starts_with('/') || !safe_chars(p, "") || p.contains("..") {
                return Err(Error::usage(format!(
                    "{p:?}: the job's directories must be absolute paths of [A-Za-z0-9/._-]"
                )));
            }
        }
        if let Some(u) = ping_url {
            check_ping_url(u)?;
        }
        Ok(Job {
            env: env.to_string(),
            workdir: workdir.to_string(),
            jobdir: jobdir.to_string(),
            at,
            ping_url: ping_url.map(str::to_string),
        })
    }

    pub fn unit(&self) -> String {
        format!("station-backup-{}", self.env)
    }

    /// `/bin/bash <jobdir>/nightly.sh <workdir> <jobdir> [<url>]`.
    pub fn command(&self) -> Vec<String> {
        let mut w = vec![
            "/bin/bash".to_string(),
            format!("{}/nightly.sh", self.jobdir),
            self.workdir.clone(),
            self.jobdir.clone(),
        ];
        w.extend(self.ping_url.clone());
        w
    }

    fn quoted(&self) -> String {
        self.command()
            .iter()
            .map(|w| quote(w))
            .collect::<Vec<_>>()
            .join(" ")
    }

    pub fn service_unit(&self) -> String {
        format!(
            "[Unit]\n\
             Description=Station nightly PostgreSQL backup ({env})\n\
             Wants=network-online.target\n\
             After=network-online.target\n\
             \n\
             [Service]\n\
             Type=oneshot\n\
             WorkingDirectory={work}\n\
             ExecStart={cmd}\n\
             TimeoutStartSec=3h\n",
            env = self.env,
            work = self.workdir,
            cmd = self.quoted()
        )
    }

    pub fn timer_unit(&self) -> String {
        format!(
            "[Unit]\n\
             Description=Station nightly PostgreSQL backup ({env}) at {h:02}:{m:02} UTC\n\
             \n\
             [Timer]\n\
             OnCalendar=*-*-* {h:02}:{m:02}:00 UTC\n\
             Persistent=true\n\
             Unit={unit}.service\n\
             \n\
             [Install]\n\
             WantedBy=timers.target\n",
            env = self.env,
            h = self.at.hour,
            m = self.at.minute,
            unit = self.unit()
        )
    }

    /// `MM HH * * * <command> # station-backup:<env>` (the tag is how it is found again).
    pub fn cron_line(&self) -> String {
        format!(
            "{} {} * * * {} # station-backup:{}",
            self.at.minute,
            self.at.hour,
            self.quoted(),
            self.env
        )
    }
}

/// `KEY=VALUE` lines for `nightly.env` (exit 2 on a value the wrapper could not carry).
pub fn env_file(vars: &[(String, String)]) -> Result<String> {
    let mut s = String::from(
        "# written by `cargo xtask backup schedule`; read by nightly.sh (not evaluated)\n",
    );
    for (k, v) in vars {
        let key_ok = !k.is_empty()
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !k.as_bytes()[0].is_ascii_digit();
        if !key_ok || v.contains('\n') || v.contains('\0') {
            return Err(Error::usage(format!(
                "variable {k:?} cannot go into the job's environment file"
            )));
        }
        s.push_str(&format!("{k}={v}\n"));
    }
    Ok(s)
}

/// The installed job as `schedule.sh status` reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct JobStatus {
    /// `systemd`, `cron`.
    pub via: String,
    /// The next run as the scheduler says (systemd) or computed from the line (cron, host time).
    pub next: Option<String>,
    pub line: Option<String>,
    pub last_result: Option<String>,
    pub last_stage: Option<String>,
    pub last_at: Option<String>,
}

impl JobStatus {
    pub fn describe(&self) -> String {
        let mut s = format!("nightly job via {}", self.via);
        if let Some(n) = &self.next {
            s.push_str(&format!(", next run {n}"));
        }
        match (&self.last_result, &self.last_at) {
            (Some(r), Some(at)) => {
                s.push_str(&format!(", last run {r} at {at}"));
                if let Some(st) = &self.last_stage {
                    s.push_str(&format!(" (stage {st})"));
                }
            }
            _ => s.push_str(", not run yet"),
        }
        s
    }
}

/// The next `MM HH * * *` after `now` (Unix seconds, the line read as UTC), as RFC 3339.
pub fn next_cron_run(line: &str, now: i64) -> Option<String> {
    let mut it = line.split_whitespace();
    let (m, h): (i64, i64) = (it.next()?.parse().ok()?, it.next()?.parse().ok()?);
    let day = now.div_euclid(86_400) * 86_400;
    let mut t = day + h * 3600 + m * 60;
    if t <= now {
        t += 86_400;
    }
    Some(crate::time::rfc3339_ms(t as u128 * 1000).replace(".000Z", "Z"))
}

/// Parse `schedule.sh status` (pure); `None` when no job is installed.
pub fn parse_status(text: &str, now: i64) -> Option<JobStatus> {
    let mut st = JobStatus::default();
    for l in text.lines() {
        let Some((k, v)) = l.split_once('=') else {
            continue;
        };
        let v = v.trim().to_string();
        match k {
            "via" => st.via = v,
            "next" if !v.is_empty() && v != "n/a" => st.next = Some(v),
            "line" => {
                st.next = next_cron_run(&v, now).map(|n| format!("{n} (host time)"));
                st.line = Some(v);
            }
            "last.result" => st.last_result = Some(v),
            "last.stage" if !v.is_empty() => st.last_stage = Some(v),
            "last.at" => st.last_at = Some(v),
            _ => {}
        }
    }
    (st.via == "systemd" || st.via == "cron").then_some(st)
}

/// Where the job's files go on the host (relative paths are resolved by the host's probe).
fn job_dir(host: &Host, root: &std::path::Path) -> String {
    match host.remote() {
        Some(r) => format!("{}/{JOB_DIR}", r.dir),
        None => host.records_dir(root).join(JOB_DIR).display().to_string(),
    }
}

fn host_script(host: &Host, args: &[String]) -> Result<crate::process::Cmd> {
    Ok(host
        .script(&Script::sh(SCHEDULE_SH).anywhere(), args)?
        .timeout(Duration::from_secs(60)))
}

/// The installed job's state, best effort (`backup status` shows it; nothing installed: `None`).
pub fn job_status(host: &Host, root: &std::path::Path) -> Option<JobStatus> {
    let env = host.env().name.clone();
    let cmd = host_script(host, &["status".into(), env, job_dir(host, root)]).ok()?;
    let out = cmd.output().ok()?;
    if !out.status.success() {
        return None;
    }
    parse_status(&out.stdout_str(), crate::time::now_unix() as i64)
}

/// The variables the job needs: the script's, and on this machine the local environment's libpq
/// and rclone settings (servers use their own rclone config and the container's password).
fn job_vars(host: &Host) -> Result<Vec<(String, String)>> {
    let env = host.env();
    let mut vars = super::script_vars(host, "nightly", None);
    if let Some(paths) = host.local_paths() {
        let state = crate::local::state::LocalState::load(env)?;
        vars.extend([
            ("PGHOST".to_string(), "127.0.0.1".to_string()),
            ("PGPORT".into(), state.pg_port.to_string()),
            ("PGUSER".into(), env.db_user.clone()),
            ("PGDATABASE".into(), env.database.clone()),
            ("PGPASSWORD".into(), state.pg_password.clone()),
        ]);
        vars.extend(crate::local::state::LocalState::rclone_env(env, paths));
    }
    Ok(vars)
}

pub fn run(args: Args) -> Result<ExitCode> {
    let at = TimeOfDay::parse(&args.at)?;
    if let Some(u) = &args.ping_url {
        check_ping_url(u)?;
    }
    let envs = Environments::load()?;
    let env = envs.get(&args.env)?;
    let host = Host::of(env)?;
    let dir = job_dir(&host, &envs.root);
    let name = env.name.clone();

    if args.remove {
        if args.dry_run {
            println!("would remove the nightly job of `{name}` on {}: timer and units or crontab line, {dir}/nightly.{{sh,env}} (the log stays)", host.describe());
            return Ok(ExitCode::Ok);
        }
        let out = crate::host::outcome(
            "removing the nightly job",
            host_script(&host, &["remove".into(), name.clone(), dir])?.output()?,
        )?;
        print!("{out}");
        if out.trim().is_empty() {
            println!("no nightly job of `{name}` was installed");
        }
        return Ok(ExitCode::Ok);
    }

    // Ask the host which scheduler runs there and where the job's directory is.
    let probe = crate::host::outcome(
        "probing the host",
        host_script(&host, &["probe".into(), name.clone(), dir.clone()])?.output()?,
    )?;
    let get = |k: &str| {
        probe
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .map(str::to_string)
    };
    let via = match args.via {
        Via::Systemd => "systemd".to_string(),
        Via::Cron => "cron".to_string(),
        Via::Auto => get("via").unwrap_or_else(|| "cron".into()),
    };
    let jobdir = get("dir").unwrap_or(dir);
    let workdir = match host.remote() {
        Some(r) => r.dir.to_string(),
        None => crate::environments::repo_root()?.display().to_string(),
    };
    let job = Job::new(&name, &workdir, &jobdir, at, args.ping_url.as_deref())?;
    let vars = job_vars(&host)?;
    let env_text = env_file(&vars)?;

    if args.dry_run {
        println!("# on {} ({via})", host.describe());
        if via == "systemd" {
            println!("# {}.service\n{}", job.unit(), job.service_unit());
            println!("# {}.timer\n{}", job.unit(), job.timer_unit());
        } else {
            println!("# crontab line\n{}\n", job.cron_line());
        }
        println!("# {jobdir}/nightly.sh: xtask/src/backup/nightly.sh");
        let shown: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| {
                let secret = k.contains("PASSWORD") || k.contains("SECRET") || k.contains("KEY");
                (k.clone(), if secret { "***".into() } else { v.clone() })
            })
            .collect();
        print!("# {jobdir}/nightly.env (0600)\n{}", env_file(&shown)?);
        return Ok(ExitCode::Ok);
    }

    let put = |file: &str, mode: &str, bytes: Vec<u8>| -> Result<String> {
        let cmd = host_script(
            &host,
            &[
                "put".into(),
                name.clone(),
                jobdir.clone(),
                file.into(),
                mode.into(),
            ],
        )?
        .stdin_bytes(bytes);
        crate::host::outcome(&format!("writing {file}"), cmd.output()?)
    };
    let mut report = String::new();
    report.push_str(&put("nightly.sh", "0700", NIGHTLY_SH.as_bytes().to_vec())?);
    report.push_str(&put("nightly.env", "0600", env_text.into_bytes())?);
    let install = if via == "systemd" {
        report.push_str(&put(
            &format!("{}.service", job.unit()),
            "0644",
            job.service_unit().into_bytes(),
        )?);
        report.push_str(&put(
            &format!("{}.timer", job.unit()),
            "0644",
            job.timer_unit().into_bytes(),
        )?);
        vec!["install-systemd".to_string(), name.clone(), jobdir.clone()]
    } else {
        vec![
            "install-cron".to_string(),
            name.clone(),
            jobdir.clone(),
            job.cron_line(),
        ]
    };
    report.push_str(&crate::host::outcome(
        "installing the schedule",
        host_script(&host, &install)?.output()?,
    )?);
    print!("{report}");
    let changed = report.lines().any(|l| !l.starts_with("unchanged "));
    println!(
        "nightly backup of `{name}` scheduled at {:02}:{:02} via {via}{}; log: {jobdir}/nightly.log",
        at.hour,
        at.minute,
        if changed { "" } else { " (nothing changed)" }
    );
    Ok(ExitCode::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(url: Option<&str>) -> Job {
        Job::new(
            "production",
            "/opt/station",
            "/opt/station/nightly-backup",
            TimeOfDay::parse("03:07").unwrap(),
            url,
        )
        .unwrap()
    }

    #[test]
    fn units_and_line_are_exact() {
        let j = job(Some("https://hc-ping.com/0f3c-11aa"));
        assert_eq!(
            j.timer_unit(),
            "[Unit]\nDescription=Station nightly PostgreSQL backup (production) at 03:07 UTC\n\n\
             [Timer]\nOnCalendar=*-*-* 03:07:00 UTC\nPersistent=true\nUnit=station-backup-production.service\n\n\
             [Install]\nWantedBy=timers.target\n"
        );
        assert!(j.service_unit().contains(
            "ExecStart=/bin/bash /opt/station/nightly-backup/nightly.sh /opt/station /opt/station/nightly-backup https://hc-ping.com/0f3c-11aa\n"
        ));
        assert_eq!(
            j.cron_line(),
            "7 3 * * * /bin/bash /opt/station/nightly-backup/nightly.sh /opt/station \
             /opt/station/nightly-backup https://hc-ping.com/0f3c-11aa # station-backup:production"
        );
        // `&` and `?` are quoted for cron's sh.
        let j = job(Some("https://ping.example/p?a=1&b=2"));
        assert!(
            j.cron_line()
                .contains(" 'https://ping.example/p?a=1&b=2' #"),
            "{}",
            j.cron_line()
        );
    }

    #[test]
    fn bad_input_is_refused() {
        for at in ["3:00", "24:00", "12:60", "ab:cd", "1200", ""] {
            assert_eq!(
                TimeOfDay::parse(at).unwrap_err().exit_code(),
                ExitCode::Usage,
                "{at}"
            );
        }
        for u in [
            "ftp://x",
            "https://x/a b",
            "https://x/%0A",
            "https://x/$(id)",
            "https://x/`id`",
            "https://x/'",
            "https://x/",
        ] {
            assert_eq!(
                check_ping_url(u).unwrap_err().exit_code(),
                ExitCode::Usage,
                "{u}"
            );
        }
        let t = TimeOfDay::parse("03:00").unwrap();
        assert!(Job::new("p", "/opt/st ation", "/x", t, None).is_err());
        assert!(Job::new("p", "relative", "/x", t, None).is_err());
        assert!(Job::new("a;b", "/a", "/x", t, None).is_err());
        assert!(env_file(&[("A".into(), "x\ny".into())]).is_err());
        assert!(env_file(&[("A B".into(), "x".into())]).is_err());
        assert_eq!(
            env_file(&[("LABEL".into(), "nightly".into())])
                .unwrap()
                .lines()
                .last(),
            Some("LABEL=nightly")
        );
    }

    #[test]
    fn status_lines_and_next_run() {
        let now = crate::backup::status::timestamp_unix("20261201_093000").unwrap();
        assert_eq!(
            next_cron_run("7 3 * * * x", now).unwrap(),
            "2026-12-02T03:07:00Z"
        );
        assert_eq!(
            next_cron_run("45 9 * * * x", now).unwrap(),
            "2026-12-01T09:45:00Z"
        );
        let s = parse_status(
            "via=cron\nline=7 3 * * * /bin/bash x # station-backup:p\nlast.result=failed\nlast.rc=1\nlast.stage=dump\nlast.at=2026-12-01T03:07:02Z\n",
            now,
        )
        .unwrap();
        assert_eq!(s.next.as_deref(), Some("2026-12-02T03:07:00Z (host time)"));
        assert_eq!(
            s.describe(),
            "nightly job via cron, next run 2026-12-02T03:07:00Z (host time), last run failed at 2026-12-01T03:07:02Z (stage dump)"
        );
        assert_eq!(parse_status("via=none\n", now), None);
    }
}
