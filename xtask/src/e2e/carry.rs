//! The volume migration: the old layout of the staging file, and the data-carrying commands that
//! `cargo xtask compose apply` prints after a line `To carry the data:` (each indented by two
//! spaces). Pure text in, argument vectors out: nothing here runs anything.

use crate::error::{Error, Result};

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
    while let Some(line) = lines.next() {
        let Some(first) = line.strip_prefix("  ") else {
            break;
        };
        if first.trim().is_empty() {
            break;
        }
        // A quoted argument may span lines (the converter script): read on until it closes.
        let mut cmd = first.to_string();
        let words = loop {
            if let Some(w) = shlex::split(&cmd) {
                break w;
            }
            match lines.next() {
                Some(more) => {
                    cmd.push('\n');
                    cmd.push_str(more);
                }
                None => {
                    return Err(Error::failed(format!(
                        "cannot split the carry command {cmd:?}"
                    )))
                }
            }
        };
        let words: Vec<String> = words;
        if words.is_empty() {
            return Err(Error::failed(format!(
                "cannot split the carry command {cmd:?}"
            )));
        }
        if words[0] != "docker" && words[0] != "docker-compose" {
            return Err(Error::failed(format!(
                "refusing to run a carry command that is not `docker ...`/`docker-compose ...`: {cmd:?}"
            )));
        }
        cmds.push(words);
    }
    Ok(cmds)
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
        use crate::compose::carry::{commands, Carry, AOF_CONVERT_SH};
        use crate::process::quote_words;
        let compose: Vec<String> = ["docker", "compose", "-p", "station-e2e", "-f", "/tmp/c.yml"]
            .map(String::from)
            .to_vec();
        let printed = commands(&Carry {
            compose: &compose,
            project: "station-e2e",
            service: "redis",
            old_volume: "station-e2e_redis_staging_data",
            new_volume: "station-e2e_redis_staging_aof",
            new_key: "redis_staging_aof",
            image: "station-e2e/redis:test",
        });
        let mut out = format!("{CARRY_HEADER}\n");
        for c in &printed {
            out.push_str(&format!("  {}\n", quote_words(c)));
        }
        let cmds = parse_carry_commands(&format!("{out}Done.\n  not a command\n")).unwrap();
        assert_eq!(cmds, printed);
        assert_eq!(cmds[3].last().unwrap(), AOF_CONVERT_SH);
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
