//! The volume migration: the old layout of the staging file, and the data-carrying commands that
//! `cargo xtask compose apply` prints after a line `To carry the data:` (each indented by two
//! spaces). Pure text in, argument vectors out: nothing here runs anything.

use crate::error::{Error, Result};
use crate::process::quote_words;

/// The persistence flags of the current layout, as the staging file spells them.
pub const AOF_FLAGS: &str = " --appendonly yes --appendfsync everysec";
pub const NEW_VOLUME: &str = "redis_staging_aof";
pub const OLD_VOLUME: &str = "redis_staging_data";
/// The line after which `compose apply` lists the commands.
pub const CARRY_HEADER: &str = "To carry the data:";

/// The staging file as it was before the durability change: Redis on `redis_staging_data`, no
/// AOF flags (RDB snapshots by default). Fails when the file no longer has what we rewrite.
pub fn old_layout(current: &str) -> Result<String> {
    let flags = current.matches(AOF_FLAGS).count();
    let volumes = current.matches(NEW_VOLUME).count();
    if flags != 1 || volumes < 2 {
        return Err(Error::failed(format!(
            "the staging compose file changed: expected `{}` once (found {flags}) and \
             `{NEW_VOLUME}` in the service and the volumes list (found {volumes}); update \
             xtask/src/e2e/carry.rs::old_layout",
            AOF_FLAGS.trim()
        )));
    }
    Ok(current
        .replace(AOF_FLAGS, "")
        .replace(NEW_VOLUME, OLD_VOLUME))
}

/// The commands listed after [`CARRY_HEADER`]: every following line indented by two spaces, split
/// shell-style into words (never run through a shell). Empty when there is no header.
pub fn parse_carry_commands(output: &str) -> Result<Vec<Vec<String>>> {
    let mut lines = output.lines().skip_while(|l| l.trim_end() != CARRY_HEADER);
    if lines.next().is_none() {
        return Ok(Vec::new());
    }
    let mut cmds = Vec::new();
    for line in lines {
        let Some(cmd) = line.strip_prefix("  ") else {
            break;
        };
        if cmd.trim().is_empty() {
            break;
        }
        let words = shlex::split(cmd)
            .filter(|w| !w.is_empty())
            .ok_or_else(|| Error::failed(format!("cannot split the carry command {cmd:?}")))?;
        if words[0] != "docker" && words[0] != "docker-compose" {
            return Err(Error::failed(format!(
                "refusing to run a carry command that is not `docker ...`/`docker-compose ...`: {cmd:?}"
            )));
        }
        cmds.push(words);
    }
    Ok(cmds)
}

/// The script the throwaway container runs on the new volume: Redis 7 started with
/// `appendonly yes` and no AOF on disk starts EMPTY (it does not load `dump.rdb`), so the carried
/// RDB must become an AOF first: load it with AOF off, `CONFIG SET appendonly yes`, wait for the
/// rewrite, shut down, and check the result with `redis-check-aof`. Bounded waits only.
pub const CONVERT_SH: &str = "set -e; s=/tmp/carry.sock; \
redis-server --port 0 --unixsocket $s --dir /data --appendonly no --daemonize yes --logfile /tmp/carry.log; \
i=0; until redis-cli -s $s ping 2>/dev/null | grep -q PONG; do i=$((i+1)); [ $i -lt 600 ] || exit 1; sleep 0.1; done; \
redis-cli -s $s config set appendonly yes | grep -q OK; \
i=0; until redis-cli -s $s info persistence | grep -q 'aof_rewrite_in_progress:0' && redis-cli -s $s info persistence | grep -q 'aof_rewrite_scheduled:0' && [ -f /data/appendonlydir/appendonly.aof.manifest ]; do i=$((i+1)); [ $i -lt 600 ] || exit 1; sleep 0.1; done; \
redis-cli -s $s info persistence | grep -q 'aof_last_bgrewrite_status:ok'; \
redis-cli -s $s shutdown >/dev/null 2>&1 || true; \
i=0; while [ -S $s ]; do i=$((i+1)); [ $i -lt 600 ] || exit 1; sleep 0.1; done; \
redis-check-aof /data/appendonlydir/appendonly.aof.manifest";

/// What we expect `compose apply` to print for the old → new move of a project's Redis volume
/// (the stand-in used until the compose engine is merged; see `pending::COMPOSE_APPLY`).
pub fn expected_apply_output(project: &str, helper_image: &str) -> String {
    let old = format!("{project}_{OLD_VOLUME}");
    let new = format!("{project}_{NEW_VOLUME}");
    let cmds: Vec<Vec<String>> = vec![
        vec![
            "docker".into(),
            "volume".into(),
            "create".into(),
            "--label".into(),
            format!("com.docker.compose.project={project}"),
            "--label".into(),
            format!("com.docker.compose.volume={NEW_VOLUME}"),
            new.clone(),
        ],
        vec![
            "docker".into(),
            "run".into(),
            "--rm".into(),
            "-v".into(),
            format!("{old}:/from:ro"),
            "-v".into(),
            format!("{new}:/data"),
            helper_image.into(),
            "cp".into(),
            "-a".into(),
            "/from/.".into(),
            "/data/".into(),
        ],
        vec![
            "docker".into(),
            "run".into(),
            "--rm".into(),
            "-v".into(),
            format!("{new}:/data"),
            helper_image.into(),
            "sh".into(),
            "-c".into(),
            CONVERT_SH.into(),
        ],
    ];
    let mut out = format!(
        "redis: volume {OLD_VOLUME} -> {NEW_VOLUME}, added --appendonly yes --appendfsync everysec\n\
         Stop the stack first (`docker compose down`, volumes kept).\n{CARRY_HEADER}\n"
    );
    for c in cmds {
        out.push_str("  ");
        out.push_str(&quote_words(&c));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAGING: &str = include_str!("../../../docker-compose.staging.yml");

    #[test]
    fn old_layout_drops_the_aof_flags_and_renames_the_volume() {
        let old = old_layout(STAGING).unwrap();
        assert!(!old.contains("appendonly"));
        assert!(!old.contains(NEW_VOLUME));
        assert_eq!(old.matches(OLD_VOLUME).count(), 2);
        assert!(old.contains("exec redis-server /tmp/redis.conf\n"));
        assert!(
            old_layout(&old).is_err(),
            "an old file is not rewritten twice"
        );
    }

    #[test]
    fn carry_commands_round_trip_through_the_printed_format() {
        let out = expected_apply_output("station-e2e", "station-e2e/redis:test");
        let cmds = parse_carry_commands(&format!("{out}\nDone.\n  not a command\n")).unwrap();
        assert_eq!(cmds.len(), 3);
        assert_eq!(cmds[0].last().unwrap(), "station-e2e_redis_staging_aof");
        assert_eq!(
            cmds[1][4..8],
            [
                "station-e2e_redis_staging_data:/from:ro",
                "-v",
                "station-e2e_redis_staging_aof:/data",
                "station-e2e/redis:test"
            ]
        );
        assert_eq!(cmds[2].last().unwrap(), CONVERT_SH);
    }

    #[test]
    fn carry_parsing_refuses_what_it_must_not_run() {
        assert!(parse_carry_commands("nothing to do\n").unwrap().is_empty());
        let bad = format!("{CARRY_HEADER}\n  rm -rf /\n");
        assert!(parse_carry_commands(&bad).is_err());
        let unbalanced = format!("{CARRY_HEADER}\n  docker run 'x\n");
        assert!(parse_carry_commands(&unbalanced).is_err());
    }
}
