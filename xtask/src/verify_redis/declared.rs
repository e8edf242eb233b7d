//! A replicated Redis declared for an environment in `infra/environments.toml`:
//!
//! ```toml
//! [environments.production.redis_replication]
//! # Either the Sentinels that watch the set (and the master name they know it by) ...
//! sentinels = ["10.0.0.5:26379", "10.0.0.6:26379", "10.0.0.7:26379"]
//! master = "station"
//! # ... or the replicas' URLs (the primary is then the environment's own Redis).
//! # replica_urls = ["redis://10.0.0.6:6379", "redis://10.0.0.7:6379"]
//! password_env = "PRODUCTION_REDIS_PASSWORD"            # data nodes (optional)
//! sentinel_password_env = "PRODUCTION_SENTINEL_PASSWORD" # Sentinels (optional)
//! ca_file = "infra/tls/redis-ca.pem"                   # rediss:// / TLS Sentinels (optional)
//! ```
//!
//! Passwords are never in the file: only the names of the variables that hold them. `deploy`'s
//! verify step and `verify-redis --env NAME` then verify every node, directly from where they run.
//! Validation is pure ([`RedisReplication::validate`]).

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RedisReplication {
    #[serde(default)]
    pub sentinels: Vec<String>,
    pub master: Option<String>,
    #[serde(default)]
    pub replica_urls: Vec<String>,
    pub password_env: Option<String>,
    pub sentinel_password_env: Option<String>,
    /// Use TLS towards every node and Sentinel, trusting this CA (repository-relative).
    pub ca_file: Option<PathBuf>,
    /// Use TLS with the system's roots (when no `ca_file`).
    #[serde(default)]
    pub tls: bool,
}

fn valid_env_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        && !s.as_bytes()[0].is_ascii_digit()
}

impl RedisReplication {
    /// What is wrong with the declaration, in words (the caller adds `file:line:col`).
    pub fn validate(&self) -> Result<(), String> {
        match (self.sentinels.is_empty(), self.replica_urls.is_empty()) {
            (true, true) => {
                return Err(
                    "redis_replication needs `sentinels` (with `master`) or `replica_urls`".into(),
                )
            }
            (false, false) => {
                return Err(
                    "redis_replication: give `sentinels` or `replica_urls`, not both".into(),
                )
            }
            _ => {}
        }
        if !self.sentinels.is_empty() {
            let master = self.master.as_deref().unwrap_or("");
            if master.is_empty() || master.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err("redis_replication: `sentinels` needs `master`, the name the Sentinels monitor (no spaces)".into());
            }
            super::sentinel::parse_list(&self.sentinels.join(",")).map_err(|e| e.to_string())?;
        } else if self.master.is_some() {
            return Err("redis_replication: `master` goes with `sentinels`".into());
        }
        for u in &self.replica_urls {
            // Never echo the URL: it may hold a password.
            super::transport::parse_url(u, None, None)
                .map_err(|e| format!("redis_replication.replica_urls: {e}"))?;
            if u.contains('@') {
                return Err("redis_replication.replica_urls: no credentials in the file; name a variable with password_env".into());
            }
        }
        for v in [&self.password_env, &self.sentinel_password_env]
            .into_iter()
            .flatten()
        {
            if !valid_env_name(v) {
                return Err(format!(
                    "redis_replication: {v:?} is not an environment variable name ([A-Z_][A-Z0-9_]*)"
                ));
            }
        }
        if self.ca_file.is_some() && self.tls {
            return Err("redis_replication: `ca_file` already means TLS; drop `tls`".into());
        }
        Ok(())
    }

    /// A variable's value (empty = none).
    pub fn secret(name: &Option<String>) -> Option<String> {
        name.as_deref()
            .and_then(|n| std::env::var(n).ok())
            .filter(|v| !v.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn either_sentinels_with_master_or_replica_urls() {
        let ok = RedisReplication {
            sentinels: vec!["10.0.0.5:26379".into()],
            master: Some("station".into()),
            ..Default::default()
        };
        assert!(ok.validate().is_ok());
        let both = RedisReplication {
            replica_urls: vec!["redis://h:1".into()],
            ..ok.clone()
        };
        assert!(both.validate().unwrap_err().contains("not both"));
        let no_master = RedisReplication {
            master: None,
            ..ok.clone()
        };
        assert!(no_master.validate().unwrap_err().contains("needs `master`"));
        let creds = RedisReplication {
            replica_urls: vec!["redis://:s3cret@h:1".into()],
            ..Default::default()
        };
        let e = creds.validate().unwrap_err();
        assert!(e.contains("no credentials") && !e.contains("s3cret"), "{e}");
        let bad_var = RedisReplication {
            password_env: Some("lower-case".into()),
            ..ok
        };
        assert!(bad_var.validate().is_err());
        assert!(RedisReplication::default().validate().is_err());
    }
}
