//! The commands that carry Redis data from an old volume into a renamed one. Pure: names in,
//! argument vectors out. Used by `compose apply` (printed after a rename), the generated docs and
//! the e2e test (which runs exactly what `compose apply` prints).

/// The script a throwaway container runs on the new volume after the copy. Redis 7 started with
/// `appendonly yes` and no AOF on disk starts EMPTY (it does not load `dump.rdb`: measured with
/// 7.0.15, see `xtask/tests/e2e_carry.rs`), so a carried RDB must become an AOF first: load it with
/// AOF off, `CONFIG SET appendonly yes`, wait for the rewrite, shut down, check the result with
/// `redis-check-aof`. An AOF already present is left alone (it is newer than any RDB beside it);
/// no RDB means there is nothing to convert. Bounded waits only. Needs `sh`, `redis-server`,
/// `redis-cli`, `redis-check-aof` in the image (the redis service's own image has them).
pub const AOF_CONVERT_SH: &str = include_str!("carry-convert.sh");

/// What to carry, with the engine's (project-prefixed) volume names.
#[derive(Clone, Debug)]
pub struct Carry<'a> {
    /// `docker compose -p P -f F ...` words for the project.
    pub compose: &'a [String],
    pub project: &'a str,
    pub service: &'a str,
    /// Engine names: `<project>_redis_data` → `<project>_redis_aof`.
    pub old_volume: &'a str,
    pub new_volume: &'a str,
    /// The volume's key in the compose file (`redis_aof`), for Compose's labels.
    pub new_key: &'a str,
    /// An image with `sh`, `cp` and the redis binaries (the service's image).
    pub image: &'a str,
}

/// stop → create the new volume (labelled as Compose would, so `up` adopts it without a warning)
/// → copy → convert an RDB-only copy into an AOF. Start the service afterwards.
pub fn commands(c: &Carry<'_>) -> Vec<Vec<String>> {
    let s = |v: &[&str]| v.iter().map(|w| w.to_string()).collect::<Vec<_>>();
    let mut stop = c.compose.to_vec();
    stop.extend(s(&["stop", c.service]));
    vec![
        stop,
        s(&[
            "docker",
            "volume",
            "create",
            "--label",
            &format!("com.docker.compose.project={}", c.project),
            "--label",
            &format!("com.docker.compose.volume={}", c.new_key),
            c.new_volume,
        ]),
        s(&[
            "docker",
            "run",
            "--rm",
            "-v",
            &format!("{}:/from:ro", c.old_volume),
            "-v",
            &format!("{}:/to", c.new_volume),
            c.image,
            "cp",
            "-a",
            "/from/.",
            "/to/",
        ]),
        s(&[
            "docker",
            "run",
            "--rm",
            "-v",
            &format!("{}:/data", c.new_volume),
            c.image,
            "sh",
            "-c",
            AOF_CONVERT_SH,
        ]),
    ]
}

/// The start command after the carry.
pub fn start(c: &Carry<'_>) -> Vec<String> {
    let mut up = c.compose.to_vec();
    up.extend(["up".to_string(), "-d".to_string(), c.service.to_string()]);
    up
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_stop_create_copy_convert_in_order_with_real_names() {
        let compose: Vec<String> = [
            "docker",
            "compose",
            "-p",
            "station",
            "-f",
            "/opt/station/docker-compose.prod.yml",
        ]
        .map(String::from)
        .to_vec();
        let c = Carry {
            compose: &compose,
            project: "station",
            service: "redis",
            old_volume: "station_redis_data",
            new_volume: "station_redis_aof",
            new_key: "redis_aof",
            image: "redis:7.2-alpine",
        };
        let cmds = commands(&c);
        assert_eq!(cmds.len(), 4);
        assert_eq!(cmds[0].last().unwrap(), "redis");
        assert_eq!(cmds[0][cmds[0].len() - 2], "stop");
        assert_eq!(cmds[1].last().unwrap(), "station_redis_aof");
        assert!(cmds[1].contains(&"com.docker.compose.volume=redis_aof".to_string()));
        assert!(cmds[2].contains(&"station_redis_data:/from:ro".to_string()));
        assert_eq!(cmds[3].last().unwrap(), AOF_CONVERT_SH);
        assert_eq!(start(&c)[6..], ["up", "-d", "redis"]);
    }
}
