//! Fault injection for issue 12 (the hostile and careless user): each case that once harmed what the
//! tool did not create, leaked a key, or misled, driven through the real binary against real
//! servers, so the list stays fixed. Every test here failed on the code before the fix.

mod deploy_support;

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use deploy_support::{repo, services_and_backup, Run, TestEnv};
use xtask::services::procscan::ArgvWatch;

/// A throwaway "repository" `<sandbox>/repo`: `infra/environments.toml` (given text), a copy of the
/// production compose file, a `.git` directory and a file that must survive whatever the tool does.
/// Inside a sandbox of its own, so that even a broken binary's `..` stays in a temp directory.
struct FakeRepo {
    dir: tempfile::TempDir,
}

impl FakeRepo {
    fn new(envs_toml: &str) -> FakeRepo {
        let dir = tempfile::Builder::new()
            .prefix("xtask-harden-")
            .tempdir()
            .unwrap();
        std::fs::write(dir.path().join("sandbox.txt"), "keep").unwrap();
        let root = &dir.path().join("repo");
        std::fs::create_dir_all(root.join("infra")).unwrap();
        std::fs::create_dir_all(root.join(".git")).unwrap();
        std::fs::write(root.join(".git/HEAD"), "ref: refs/heads/main\n").unwrap();
        std::fs::write(root.join("precious.txt"), "do not delete").unwrap();
        std::fs::copy(
            repo().join("docker-compose.prod.yml"),
            root.join("docker-compose.prod.yml"),
        )
        .unwrap();
        std::fs::write(root.join("infra/environments.toml"), envs_toml).unwrap();
        FakeRepo { dir }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("repo")
    }

    fn envs_file(&self) -> PathBuf {
        self.root().join("infra/environments.toml")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_xtask"));
        c.args(args)
            .current_dir(self.root())
            .env("XTASK_ROOT", self.root())
            .env_remove("XTASK_ENVIRONMENTS")
            .env_remove("GITHUB_ACTIONS")
            .env_remove("GITHUB_STEP_SUMMARY")
            .env_remove("AWS_CA_BUNDLE")
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Run {
        Run::from(self.command(args).output().unwrap())
    }

    /// `run` for the `remote` environment of [`ssh_toml`]: its host `127.0.0.1:port`, its
    /// known_hosts file and `key` (a key file, or what a user gives instead).
    fn run_remote(
        &self,
        args: &[&str],
        port: &str,
        known_hosts: &Path,
        key: impl AsRef<OsStr>,
    ) -> Run {
        Run::from(
            self.command(args)
                .env("HARDEN_SSH_HOST", "127.0.0.1")
                .env("HARDEN_SSH_PORT", port)
                .env("HARDEN_SSH_KNOWN_HOSTS", known_hosts)
                .env("HARDEN_SSH_KEY", key)
                .output()
                .unwrap(),
        )
    }
}

/// The `local` environment of the deploy tests with `state_dir` as given (a path relative to the
/// repository, or absolute) and the repository's migrations.
fn local_toml(state_dir: &str) -> String {
    deploy_support::local_toml(Path::new(state_dir), Path::new("infra/migrations"))
}

/// Case 1: `state_dir = "."` once made `local down --purge` delete the whole checkout, `.git` included;
/// an absolute path outside the repository deleted unrelated files. Now the environments file is
/// refused (exit 2, positioned at the `state_dir` line) and nothing is touched.
#[test]
fn purge_never_deletes_the_repository_a_parent_or_a_directory_outside_it() {
    // `/` and the parents above the sandbox are refused by the same rule (unit tests in
    // environments.rs); they are not driven here, where a broken binary would delete them.
    let victim = tempfile::tempdir().unwrap();
    std::fs::write(victim.path().join("unrelated.txt"), "theirs").unwrap();
    let outside = victim.path().display().to_string();
    for state_dir in [
        ".",
        "./",
        "target/..",
        "..",
        "target/../..",
        outside.as_str(),
    ] {
        let r = FakeRepo::new(&local_toml(state_dir));
        assert!(r.dir.path().join("sandbox.txt").exists());
        for args in [&["local", "down", "--purge"][..], &["local", "up"]] {
            let out = r.run(args);
            assert_eq!(out.code, 2, "{state_dir} {args:?}: {}", out.all());
            let at = format!(
                "{}:6:1: environment `local`: state_dir",
                r.envs_file().display()
            );
            assert!(out.stderr.contains(&at), "{state_dir}: {}", out.stderr);
        }
        assert!(r.root().join("precious.txt").exists(), "{state_dir}");
        assert!(r.root().join(".git/HEAD").exists(), "{state_dir}");
        assert!(victim.path().join("unrelated.txt").exists(), "{state_dir}");
        assert!(r.dir.path().join("sandbox.txt").exists(), "{state_dir}");
    }
}

/// Case 1: Purge deletes only what `local up` created: a state dir without its marker is left alone
/// (exit 1), and a file `local up` did not create survives the purge of one it set up.
#[test]
fn purge_deletes_only_what_local_up_created() {
    let r = FakeRepo::new(&local_toml("target/local"));
    let state = r.root().join("target/local");
    std::fs::create_dir_all(state.join("objects/station-backups")).unwrap();
    std::fs::write(state.join("objects/station-backups/mine.sql.gz"), "x").unwrap();
    std::fs::write(state.join("notes.txt"), "mine").unwrap();
    let out = r.run(&["local", "down", "--purge"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stderr.contains("not set up by `cargo xtask local up`"),
        "{}",
        out.stderr
    );
    assert!(state.join("objects/station-backups/mine.sql.gz").exists());
    assert!(state.join("notes.txt").exists());

    // Set up for real, then purged: ours goes, theirs stays.
    let t = TestEnv::local(0o711);
    assert_eq!(t.run(&["local", "up"]).code, 0);
    assert!(t.state_dir.join(".xtask-local").is_file());
    std::fs::write(t.state_dir.join("notes.txt"), "mine").unwrap();
    let out = t.run(&["local", "down", "--purge"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(
        std::fs::read_to_string(t.state_dir.join("notes.txt")).unwrap(),
        "mine"
    );
    let left: Vec<String> = std::fs::read_dir(&t.state_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["notes.txt"]);
}

fn ssh_toml(key_env: &str) -> String {
    format!(
        r#"[environments.remote]
transport = "ssh"
description = "test"
compose_file = "docker-compose.prod.yml"
compose_project = "station-remote"
env_file = ".env.remote"
remote_dir = "/opt/station-remote"
database = "station"
db_user = "station"
migration_command = "docker compose run --rm backend pnpm migration:run"
health_url = "http://127.0.0.1:3000/api/health"
{}
[environments.remote.ssh]
host_env = "HARDEN_SSH_HOST"
user = "deploy"
port_env = "HARDEN_SSH_PORT"
known_hosts_env = "HARDEN_SSH_KNOWN_HOSTS"
key_env = "{key_env}"
"#,
        services_and_backup("remote", "station-backups", "postgres")
    )
}

const FAKE_KEY_BODY: &str =
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW";

/// Case 2: `<ENV>_SSH_KEY` holding the key itself (as the GitHub secret of that name does) once ran
/// `ssh -i <whole key>` three times and stored the key in the audit log. Now: exit 2 before anything
/// runs, "a path, not the key", and the key is on no command line, in no output, in no audit log.
#[test]
fn an_ssh_key_given_as_its_contents_is_refused_before_anything_runs_and_never_leaks() {
    let r = FakeRepo::new(&ssh_toml("HARDEN_SSH_KEY"));
    let known_hosts = r.root().join("known_hosts");
    std::fs::write(&known_hosts, "").unwrap();
    let key = format!(
        "-----BEGIN OPENSSH PRIVATE KEY-----\n{FAKE_KEY_BODY}\n-----END OPENSSH PRIVATE KEY-----\n"
    );
    let port = xtask::services::free_port().unwrap().to_string();
    let watch = ArgvWatch::start(&[FAKE_KEY_BODY.to_string()]);
    let mut outputs = Vec::new();
    for args in [
        &["deploy", "--env", "remote", "--sha", "abc1234"][..],
        &["backup", "--env", "remote"],
        &["verify-redis", "--env", "remote"],
        &["migrate", "--env", "remote", "--sha", "abc1234"],
    ] {
        let out = r.run_remote(args, &port, &known_hosts, &key);
        assert_eq!(out.code, 2, "{args:?}: {}", out.all());
        assert!(out.stderr.contains("a path, not the key"), "{}", out.stderr);
        outputs.push(out.all());
    }
    assert!(watch.scans() > 0);
    let leaks = watch.stop();
    assert!(leaks.is_empty(), "the key on a command line: {leaks:?}");
    for o in &outputs {
        assert!(
            !o.contains(FAKE_KEY_BODY) && !o.contains("-----BEGIN"),
            "{o}"
        );
    }
    for log in audit_logs(&r.root()) {
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(
            !text.contains(FAKE_KEY_BODY),
            "the key in {}",
            log.display()
        );
    }
    // Nothing ran: no audit record was written at all.
    assert!(!r.root().join("target/deploy/remote/audit.jsonl").exists());
}

/// Every audit log under `root`.
fn audit_logs(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.to_string_lossy().ends_with("audit.jsonl") {
                out.push(p);
            }
        }
    }
    out
}

/// Case 2: The audit log was 0644; a log that already exists with that mode is fixed on append.
#[test]
fn the_audit_log_of_a_failed_remote_deploy_is_0600_even_when_it_existed_as_0644() {
    let r = FakeRepo::new(&ssh_toml("HARDEN_SSH_KEY"));
    let known_hosts = r.root().join("known_hosts");
    std::fs::write(&known_hosts, "").unwrap();
    let key = r.root().join("id_test");
    std::fs::write(&key, "not a real key\n").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let log = r.root().join("target/deploy/remote/audit.jsonl");
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    std::fs::write(&log, "").unwrap();
    std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o644)).unwrap();
    // Nothing listens on the port: preflight fails, the failure is recorded.
    let port = xtask::services::free_port().unwrap().to_string();
    let out = r.run_remote(
        &["deploy", "--env", "remote", "--sha", "abc1234"],
        &port,
        &known_hosts,
        &key,
    );
    assert_ne!(out.code, 0, "{}", out.all());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("\"step\":\"preflight\""), "{text}");
    let mode = std::fs::metadata(&log).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{mode:o}");
}

/// The children of `pid` (from /proc).
fn children_of(pid: u32) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_string();
        if stat[close + 1..].split_whitespace().nth(1) == Some(&pid.to_string()) {
            out.push((child, comm));
        }
    }
    out
}

/// Poll `cond` every 100 ms for up to `secs`.
fn wait_for(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(
            t0.elapsed().as_secs() < secs,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether a session runs `sql_fragment` right now (the psql of the test environment, retried while
/// the environment comes up).
fn running(t: &TestEnv, sql_fragment: &str) -> bool {
    if !t.state_dir.join("state.json").exists() {
        return false;
    }
    let o = t.psql(&format!(
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%{sql_fragment}%' AND pid <> pg_backend_pid()"
    ));
    o.status.success() && String::from_utf8_lossy(&o.stdout).trim() != "0"
}

/// Cases 3 and 11: During a deploy's migrate step, `local down [--purge]` once killed PostgreSQL under the
/// migration and exited 0. Now it is refused (exit 1, naming the holder). A migration whose psql is
/// killed, or whose database goes away, is not "the failing migration" to fix.
#[test]
fn local_down_refuses_during_a_deploy_and_a_killed_migration_is_not_blamed() {
    let t = TestEnv::local(0o711);
    std::fs::write(
        t.migrations.join("0099_slow.sql"),
        "CREATE TABLE slow_done (x int);\nSELECT pg_sleep(30);\n",
    )
    .unwrap();
    let deploy = |sha: &str| {
        t.command(&["deploy", "--sha", sha])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };

    // (a) local down while the migration runs: refused, nothing stopped or deleted.
    let child = deploy("1111111aaaa");
    wait_for(120, "the slow migration", || running(&t, "pg_sleep(30)"));
    for args in [&["local", "down"][..], &["local", "down", "--purge"]] {
        let r = t.run(args);
        assert_eq!(r.code, 1, "{args:?}: {}", r.all());
        assert!(r.stderr.contains("a deploy holds the lock"), "{}", r.stderr);
        assert!(r.stderr.contains("held by"), "{}", r.stderr);
    }
    assert!(t.state_dir.join("state.json").exists());
    assert!(
        running(&t, "pg_sleep(30)"),
        "PostgreSQL was stopped under the migration"
    );

    // (b) the migration's psql killed by a signal.
    let psql: Vec<u32> = children_of(child.id())
        .into_iter()
        .filter(|(_, comm)| comm == "psql")
        .map(|(p, _)| p)
        .collect();
    assert_eq!(psql.len(), 1, "{:?}", children_of(child.id()));
    let st = Command::new("kill")
        .args(["-KILL", &psql[0].to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let r = Run::from(child.wait_with_output().unwrap());
    assert_eq!(r.code, 3, "{}", r.all());
    assert!(r.stderr.contains("killed by signal 9"), "{}", r.stderr);
    assert!(
        !r.all().contains("fix the failing migration"),
        "{}",
        r.all()
    );
    assert!(!t.state_dir.join("deploy.lock").exists());
    // The server notices the dead client only when pg_sleep ends; until then its backend keeps the
    // transaction and the migration lock. End it now.
    t.psql_ok(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'xtask migrate 1111111aaaa'",
    );
    wait_for(30, "the killed migration's backend to end", || {
        !running(&t, "pg_sleep(30)")
    });

    // (c) the database goes away under the migration (its backend terminated).
    let child = deploy("2222222bbbb");
    let session = "application_name = 'xtask migrate 2222222bbbb' AND query LIKE '%pg_sleep(30)%'";
    wait_for(120, "the second slow migration", || {
        t.state_dir.join("state.json").exists()
            && t.psql(&format!("SELECT 1 FROM pg_stat_activity WHERE {session}"))
                .stdout
                .starts_with(b"1")
    });
    t.psql_ok(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE {session}"
    ));
    let r = Run::from(child.wait_with_output().unwrap());
    assert_eq!(r.code, 3, "{}", r.all());
    assert!(r.stderr.contains("the database went away"), "{}", r.stderr);
    assert!(
        !r.all().contains("fix the failing migration"),
        "{}",
        r.all()
    );
    // Rolled back both times.
    assert_eq!(
        t.psql_ok("SELECT to_regclass('public.slow_done') IS NULL"),
        "t"
    );
}

/// Case 9: Two migration runners never overlap: the second is refused by the advisory lock (naming the
/// holder) while the first migrates, also when the first's xtask was killed and left its psql
/// running; the migration is applied exactly once.
#[test]
fn two_migration_runners_never_overlap_even_when_one_is_orphaned() {
    let t = TestEnv::local(0o711);
    let sha = "3333333cccc";
    let r = t.run(&["deploy", "--sha", sha]);
    assert_eq!(r.code, 0, "{}", r.all());
    std::fs::write(
        t.migrations.join("0099_slow.sql"),
        "CREATE TABLE slow_done (x int);\nSELECT pg_sleep(8);\nINSERT INTO slow_done VALUES (1);\n",
    )
    .unwrap();
    let migrate = || t.command(&["migrate", "--env", "local", "--sha", sha]);
    let mut a = migrate()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(60, "the first runner's migration", || {
        running(&t, "pg_sleep(8)")
    });
    let b = Run::from(migrate().output().unwrap());
    assert_eq!(b.code, 1, "{}", b.all());
    assert!(
        b.stderr
            .contains("another migration runner holds the database's migration lock"),
        "{}",
        b.stderr
    );
    assert!(
        b.stderr.contains("xtask migrate 3333333cccc"),
        "{}",
        b.stderr
    );

    // The first runner's xtask dies (SIGKILL: no handler runs). Whatever happens to its psql, no
    // second migration may run beside it.
    a.kill().unwrap();
    let _ = a.wait();
    let orphan = running(&t, "pg_sleep(8)");
    if orphan {
        let c = Run::from(migrate().output().unwrap());
        assert_eq!(c.code, 1, "{}", c.all());
        assert!(c.stderr.contains("migration lock"), "{}", c.stderr);
    }
    wait_for(30, "the orphan to finish", || !running(&t, "pg_sleep(8)"));
    let d = Run::from(migrate().output().unwrap());
    assert_eq!(d.code, 0, "{}", d.all());
    assert_eq!(
        t.psql_ok("SELECT count(*) FROM schema_migrations WHERE version = 99"),
        "1"
    );
    assert_eq!(t.psql_ok("SELECT count(*) FROM slow_done"), "1");
}

/// Case 10: Under GitHub Actions, a file name with a newline and `::warning` once reached the log
/// raw and was read by the runner as a workflow command. From the command line it is refused (exit 2,
/// not echoed); from the environments file it is shown quoted, its newline escaped.
#[test]
fn a_path_with_a_newline_cannot_inject_a_workflow_command() {
    let d = tempfile::tempdir().unwrap();
    let bad = d.path().join("x\n::warning title=pwned::injected.yml");
    std::fs::copy(repo().join("docker-compose.prod.yml"), &bad).unwrap();
    let no_injection = |r: &Run| {
        // The runner reads any line that starts with `::` (after blanks) as a command.
        for line in r.all().lines() {
            let l = line.trim_start();
            assert!(
                !l.starts_with("::warning title=pwned") && !l.starts_with("::error::injected"),
                "a workflow command from a file name: {line:?}\n{}",
                r.all()
            );
        }
    };
    let gha = |mut c: Command| {
        Run::from(
            c.env("GITHUB_ACTIONS", "true")
                .env_remove("GITHUB_STEP_SUMMARY")
                .output()
                .unwrap(),
        )
    };
    for args in [
        &["compose", "check", "--file"][..],
        &["compose", "apply", "--dry-run", "--file"],
        &["compose", "apply", "--file"],
    ] {
        let mut c = Command::new(env!("CARGO_BIN_EXE_xtask"));
        c.args(args).arg(&bad).env("XTASK_ROOT", repo());
        let r = gha(c);
        assert_eq!(r.code, 2, "{}", r.all());
        assert!(r.stderr.contains("control character"), "{}", r.stderr);
        no_injection(&r);
    }
    // A compose file named in the environments file (its TOML string holds `\n`).
    let toml = local_toml("target/local").replacen(
        "compose_file = \"docker-compose.prod.yml\"",
        "compose_file = \"y\\n::error::injected.yml\"",
        1,
    );
    let r = FakeRepo::new(&toml);
    let out = gha(r.command(&["compose", "check", "--env", "local"]));
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(
        out.stderr.contains("y\\n::error::injected.yml"),
        "{}",
        out.stderr
    );
    no_injection(&out);
    // ... and one that exists: `check` says ok and `apply` says already durable, both quoted.
    let toml = local_toml("target/local").replacen(
        "compose_file = \"docker-compose.prod.yml\"",
        "compose_file = \"z\\n::warning title=pwned::injected.yml\"",
        1,
    );
    let r = FakeRepo::new(&toml);
    std::fs::copy(
        repo().join("docker-compose.prod.yml"),
        r.root().join("z\n::warning title=pwned::injected.yml"),
    )
    .unwrap();
    for args in [
        &["compose", "check", "--env", "local"][..],
        &["compose", "apply", "--env", "local"],
    ] {
        let out = gha(r.command(args));
        assert_eq!(out.code, 0, "{}", out.all());
        assert!(
            out.all()
                .contains("z\\n::warning title=pwned::injected.yml"),
            "{}",
            out.all()
        );
        no_injection(&out);
    }
    assert_eq!(
        xtask::gha::escape_property("a\n::warning::b,c:d%"),
        "a%0A%3A%3Awarning%3A%3Ab%2Cc%3Ad%25"
    );
}

/// Case 11: PostgreSQL down during a backup is a dependency that could not be reached: exit 3, not 1.
#[test]
fn postgres_down_during_a_backup_exits_3() {
    let t = TestEnv::local(0o711);
    assert_eq!(t.run(&["local", "up"]).code, 0);
    let port = t.state()["pg_port"].as_u64().unwrap() as u16;
    let cluster =
        xtask::services::postgres::Cluster::at(&t.state_dir.join("postgres"), port, "station")
            .unwrap();
    cluster.stop().unwrap();
    let r = t.run(&["backup", "--env", "local"]);
    assert_eq!(r.code, 3, "{}", r.all());
    assert!(
        r.stderr.contains("PostgreSQL could not be reached"),
        "{}",
        r.stderr
    );
}

/// Case 11: An interrupted deploy (Ctrl-C to the whole process group, as a terminal sends it) once
/// blamed "the backup remote (credentials)"; it says it was interrupted.
#[test]
fn an_interrupted_deploy_says_so_instead_of_blaming_the_backup_remote() {
    use std::os::unix::process::CommandExt;
    let t = TestEnv::local(0o711);
    assert_eq!(t.run(&["local", "up"]).code, 0);
    // Enough rows that the dump takes a moment.
    t.psql_ok("CREATE TABLE filler AS SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 300000) g");
    let mut child = t
        .command(&["deploy", "--sha", "4444444dddd"])
        .process_group(0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut seen = String::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.starts_with("==> backup") {
            std::thread::sleep(Duration::from_millis(300));
            let st = Command::new("kill")
                .args(["-INT", "--", &format!("-{}", child.id())])
                .status()
                .unwrap();
            assert!(st.success());
        }
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{seen}{err}");
    assert!(err.contains("the deploy was interrupted"), "{seen}{err}");
    assert!(!err.contains("check the backup remote"), "{seen}{err}");
    assert!(err.contains("No migration was run"), "{err}");
    assert_eq!(t.audit().last().unwrap()["status"], "interrupted");
}

/// Case 11: `local status` with a corrupt state.json once said "not set up"; it says corrupt, where.
#[test]
fn a_corrupt_state_file_is_reported_as_corrupt_with_its_position() {
    let t = TestEnv::local(0o711);
    std::fs::create_dir_all(&t.state_dir).unwrap();
    std::fs::write(
        t.state_dir.join("state.json"),
        "{\n  \"pg_port\": 5432,\n  oops\n",
    )
    .unwrap();
    for args in [
        &["local", "status"][..],
        &["local", "down"],
        &["local", "env"],
    ] {
        let r = t.run(args);
        assert_eq!(r.code, 2, "{args:?}: {}", r.all());
        let at = format!("{}:3:3: ", t.state_dir.join("state.json").display());
        assert!(r.stderr.contains(&at), "{}", r.stderr);
        assert!(r.stderr.contains("corrupt"), "{}", r.stderr);
        assert!(!r.all().contains("not set up"), "{}", r.all());
    }
}

/// Case 11: `migrate` requires `--env`, as the README says (it once migrated `local` by default).
#[test]
fn migrate_requires_env() {
    let t = TestEnv::local(0o711);
    let r = t.run(&["migrate", "--sha", "abc1234"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("--env"), "{}", r.stderr);
    assert!(!t.state_dir.exists());
}
