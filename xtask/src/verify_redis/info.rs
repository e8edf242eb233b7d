//! A typed parser for Redis `INFO` text (pure: no I/O).
//!
//! Accepts every shape a user can capture: `\r\n` (the wire), `\n`, a TTY's `\r\r\n` (`docker compose
//! exec` without `-T`), a RESP3 verbatim-string `txt:` prefix, several sections (`INFO`, `INFO
//! persistence`, `INFO server` pasted one after another). Lines are `key:value`, split on the FIRST
//! `:` (values may hold `:`, keys may hold `|`). Unknown fields are kept, absent ones tolerated.
//!
//! A repeated `# Persistence` section is a second sample (used by the fsync check).

use std::collections::BTreeMap;

/// A parse error at a 1-based line and column of the input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

/// One `key:value` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub value: String,
    pub line: usize,
    /// 1-based column where the value starts.
    pub col: usize,
}

/// One `# Name` section (name lowercased; `""` for lines before any header).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Section {
    pub name: String,
    pub fields: BTreeMap<String, Field>,
}

impl Section {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields.get(key).map(|f| f.value.as_str())
    }
}

/// Parsed INFO text: its sections in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Info {
    pub sections: Vec<Section>,
}

/// Parse INFO text (any of the shapes in the module docs).
pub fn parse(text: &str) -> Result<Info, ParseError> {
    let mut info = Info::default();
    let mut current = Section::default();
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for (i, raw) in text.split('\n').enumerate() {
        let line_no = i + 1;
        let mut line = raw.trim_end_matches(['\r', ' ', '\t']);
        let mut offset = 0;
        // RESP3 verbatim string: `txt:` before the first line of each reply.
        if let Some(rest) = line.strip_prefix("txt:") {
            line = rest;
            offset = 4;
        }
        if line.trim().is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('#') {
            if !current.fields.is_empty() || !current.name.is_empty() {
                info.sections.push(std::mem::take(&mut current));
            }
            current.name = name.trim().to_ascii_lowercase();
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            return Err(ParseError {
                line: line_no,
                col: offset + 1,
                message: format!(
                    "expected `key:value` or `# Section`, found {:?}",
                    truncate(line, 60)
                ),
            });
        };
        if let Some(bad) = key.find(|c: char| c.is_whitespace() || c.is_control()) {
            return Err(ParseError {
                line: line_no,
                col: offset + bad + 1,
                message: format!(
                    "a field name cannot contain whitespace: {:?}",
                    truncate(key, 60)
                ),
            });
        }
        if key.is_empty() {
            return Err(ParseError {
                line: line_no,
                col: offset + 1,
                message: "empty field name before `:`".into(),
            });
        }
        current.fields.insert(
            key.to_string(),
            Field {
                value: value.to_string(),
                line: line_no,
                col: offset + key.len() + 2,
            },
        );
    }
    if !current.fields.is_empty() || !current.name.is_empty() {
        info.sections.push(current);
    }
    Ok(info)
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        s.chars().take(n).collect::<String>() + "…"
    }
}

impl Info {
    /// The sections that hold persistence fields: every `# Persistence` section, or (for text
    /// without headers) the unnamed section when it has `aof_enabled`.
    pub fn persistence_sections(&self) -> Vec<&Section> {
        let named: Vec<&Section> = self
            .sections
            .iter()
            .filter(|s| s.name == "persistence")
            .collect();
        if !named.is_empty() {
            return named;
        }
        self.sections
            .iter()
            .filter(|s| s.fields.contains_key("aof_enabled"))
            .collect()
    }

    /// All persistence samples, typed, in order. Error when there is none or a field is malformed.
    pub fn persistence(&self) -> Result<Vec<Persistence>, ParseError> {
        let secs = self.persistence_sections();
        if secs.is_empty() {
            return Err(ParseError {
                line: 1,
                col: 1,
                message:
                    "no `# Persistence` section (need the output of `INFO persistence` or `INFO`)"
                        .into(),
            });
        }
        secs.into_iter().map(Persistence::from_section).collect()
    }

    /// The server's name and version, from a `# Server` section (or any section with `redis_version`).
    pub fn server(&self) -> Option<ServerVersion> {
        self.sections
            .iter()
            .find(|s| s.fields.contains_key("redis_version"))
            .map(ServerVersion::from_section)
    }
}

/// `ok` / `err` (anything else is kept verbatim).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpStatus {
    Ok,
    Err,
    Other(String),
}

impl OpStatus {
    fn parse(s: &str) -> Self {
        match s {
            "ok" => OpStatus::Ok,
            "err" => OpStatus::Err,
            o => OpStatus::Other(o.to_string()),
        }
    }
    pub fn is_err(&self) -> bool {
        *self == OpStatus::Err
    }
}

/// The persistence fields we reason about (Redis 6.2, 7.0–7.4, Valkey 8). Fields a version lacks
/// are `None`; every field, known or not, stays in `raw`.
#[derive(Clone, Debug, PartialEq)]
pub struct Persistence {
    pub loading: bool,
    /// 7.0+: a replica loading a new dataset while serving the old one.
    pub async_loading: Option<bool>,
    pub loading_loaded_perc: Option<f64>,
    pub loading_eta_seconds: Option<i64>,
    pub loading_loaded_bytes: Option<i64>,
    pub loading_total_bytes: Option<i64>,
    pub rdb_changes_since_last_save: Option<i64>,
    pub rdb_bgsave_in_progress: Option<bool>,
    pub rdb_last_save_time: Option<i64>,
    pub rdb_last_bgsave_status: Option<OpStatus>,
    /// 0 when the AOF is off, and also while it is being loaded at startup.
    pub aof_enabled: bool,
    pub aof_rewrite_in_progress: Option<bool>,
    pub aof_rewrite_scheduled: Option<bool>,
    pub aof_last_rewrite_time_sec: Option<i64>,
    pub aof_current_rewrite_time_sec: Option<i64>,
    pub aof_last_bgrewrite_status: Option<OpStatus>,
    /// 7.0+.
    pub aof_rewrites: Option<i64>,
    /// 7.0+.
    pub aof_rewrites_consecutive_failures: Option<i64>,
    pub aof_last_write_status: Option<OpStatus>,
    /// Present only when `appendonly yes` is configured (even while loading).
    pub aof_current_size: Option<i64>,
    pub aof_base_size: Option<i64>,
    pub aof_pending_bio_fsync: Option<i64>,
    pub aof_delayed_fsync: Option<i64>,
    /// Every field of the section, verbatim.
    pub raw: BTreeMap<String, String>,
}

impl Persistence {
    pub fn from_section(s: &Section) -> Result<Self, ParseError> {
        let int = |k: &str| -> Result<Option<i64>, ParseError> {
            match s.fields.get(k) {
                None => Ok(None),
                Some(f) => f
                    .value
                    .trim()
                    .parse::<i64>()
                    .map(Some)
                    .map_err(|_| ParseError {
                        line: f.line,
                        col: f.col,
                        message: format!(
                            "`{k}` should be an integer, found {:?}",
                            truncate(&f.value, 40)
                        ),
                    }),
            }
        };
        let float = |k: &str| -> Result<Option<f64>, ParseError> {
            match s.fields.get(k) {
                None => Ok(None),
                Some(f) => f
                    .value
                    .trim()
                    .parse::<f64>()
                    .map(Some)
                    .map_err(|_| ParseError {
                        line: f.line,
                        col: f.col,
                        message: format!(
                            "`{k}` should be a number, found {:?}",
                            truncate(&f.value, 40)
                        ),
                    }),
            }
        };
        let flag = |k: &str| -> Result<Option<bool>, ParseError> {
            match s.fields.get(k) {
                None => Ok(None),
                Some(f) => match f.value.trim() {
                    "0" => Ok(Some(false)),
                    "1" => Ok(Some(true)),
                    v => Err(ParseError {
                        line: f.line,
                        col: f.col,
                        message: format!("`{k}` should be 0 or 1, found {:?}", truncate(v, 40)),
                    }),
                },
            }
        };
        let status = |k: &str| s.get(k).map(|v| OpStatus::parse(v.trim()));
        let required = |k: &str, v: Option<bool>| {
            v.ok_or_else(|| ParseError {
                line: 1,
                col: 1,
                message: format!(
                    "the persistence section has no `{k}` field: is this `INFO persistence` output?"
                ),
            })
        };
        Ok(Persistence {
            loading: required("loading", flag("loading")?)?,
            async_loading: flag("async_loading")?,
            loading_loaded_perc: float("loading_loaded_perc")?,
            loading_eta_seconds: int("loading_eta_seconds")?,
            loading_loaded_bytes: int("loading_loaded_bytes")?,
            loading_total_bytes: int("loading_total_bytes")?,
            rdb_changes_since_last_save: int("rdb_changes_since_last_save")?,
            rdb_bgsave_in_progress: flag("rdb_bgsave_in_progress")?,
            rdb_last_save_time: int("rdb_last_save_time")?,
            rdb_last_bgsave_status: status("rdb_last_bgsave_status"),
            aof_enabled: required("aof_enabled", flag("aof_enabled")?)?,
            aof_rewrite_in_progress: flag("aof_rewrite_in_progress")?,
            aof_rewrite_scheduled: flag("aof_rewrite_scheduled")?,
            aof_last_rewrite_time_sec: int("aof_last_rewrite_time_sec")?,
            aof_current_rewrite_time_sec: int("aof_current_rewrite_time_sec")?,
            aof_last_bgrewrite_status: status("aof_last_bgrewrite_status"),
            aof_rewrites: int("aof_rewrites")?,
            aof_rewrites_consecutive_failures: int("aof_rewrites_consecutive_failures")?,
            aof_last_write_status: status("aof_last_write_status"),
            aof_current_size: int("aof_current_size")?,
            aof_base_size: int("aof_base_size")?,
            aof_pending_bio_fsync: int("aof_pending_bio_fsync")?,
            aof_delayed_fsync: int("aof_delayed_fsync")?,
            raw: s
                .fields
                .iter()
                .map(|(k, f)| (k.clone(), f.value.clone()))
                .collect(),
        })
    }

    /// Loading a dataset (`loading:1` or `async_loading:1`): "wait", not "off".
    pub fn is_loading(&self) -> bool {
        self.loading || self.async_loading == Some(true)
    }

    /// `appendonly yes` is configured: the AOF-only fields are present (they are, even while loading).
    pub fn aof_configured(&self) -> bool {
        self.aof_current_size.is_some()
    }
}

/// Server name and version from `INFO server`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ServerVersion {
    /// `redis` or `valkey`.
    pub server: String,
    pub version: String,
}

impl ServerVersion {
    fn from_section(s: &Section) -> Self {
        if let Some(v) = s.get("valkey_version") {
            return ServerVersion {
                server: "valkey".into(),
                version: v.trim().to_string(),
            };
        }
        ServerVersion {
            server: s
                .get("server_name")
                .map(|n| n.trim().to_ascii_lowercase())
                .unwrap_or_else(|| "redis".into()),
            version: s.get("redis_version").unwrap_or("").trim().to_string(),
        }
    }

    /// Major version (7 for 7.2.4). Valkey 8 uses the multi-part AOF like Redis 7.
    pub fn major(&self) -> Option<u32> {
        self.version.split('.').next()?.parse().ok()
    }

    /// Whether this server keeps its AOF as a directory with a manifest (Redis 7+, Valkey).
    pub fn multi_part_aof(&self) -> bool {
        self.server == "valkey" || self.major().is_none_or(|m| m >= 7)
    }
}

impl std::fmt::Display for ServerVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self.server.as_str() {
            "valkey" => "Valkey",
            "redis" => "Redis",
            o => o,
        };
        write!(f, "{name} {}", self.version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_the_first_colon_and_keeps_unknown_fields() {
        let i = parse("# Persistence\r\nloading:0\r\naof_enabled:1\r\nx|y:a:b:c\r\n").unwrap();
        let p = &i.persistence().unwrap()[0];
        assert_eq!(p.raw["x|y"], "a:b:c");
        assert!(p.aof_enabled && !p.loading);
    }

    #[test]
    fn tty_crcrlf_and_resp3_prefix() {
        let i = parse("txt:# Persistence\r\r\nloading:0\r\r\naof_enabled:1\r\r\n").unwrap();
        assert_eq!(i.sections.len(), 1);
        assert_eq!(i.persistence().unwrap()[0].raw["aof_enabled"], "1");
    }

    #[test]
    fn errors_have_positions() {
        let e = parse("# Persistence\nloading:0\nnot a field\n").unwrap_err();
        assert_eq!((e.line, e.col), (3, 1));
        let e = parse("# Persistence\nloading:0\naof_enabled:yes\n")
            .unwrap()
            .persistence()
            .unwrap_err();
        assert_eq!((e.line, e.col), (3, 13));
        assert!(parse("# Server\nredis_version:7.0.15\n")
            .unwrap()
            .persistence()
            .is_err());
    }

    #[test]
    fn headerless_text_is_one_sample_and_repeated_sections_are_samples() {
        let i = parse("loading:0\naof_enabled:0\n").unwrap();
        assert_eq!(i.persistence().unwrap().len(), 1);
        let two = "# Persistence\nloading:0\naof_enabled:1\naof_delayed_fsync:1\n\n# Persistence\nloading:0\naof_enabled:1\naof_delayed_fsync:4\n";
        let s = parse(two).unwrap().persistence().unwrap();
        assert_eq!(
            s.iter().map(|p| p.aof_delayed_fsync).collect::<Vec<_>>(),
            [Some(1), Some(4)]
        );
    }

    #[test]
    fn valkey_version_wins_over_redis_version() {
        let i = parse("# Server\nredis_version:7.2.4\nserver_name:valkey\nvalkey_version:8.0.1\n")
            .unwrap();
        let v = i.server().unwrap();
        assert_eq!(v.to_string(), "Valkey 8.0.1");
        assert!(v.multi_part_aof());
        let r = ServerVersion {
            server: "redis".into(),
            version: "6.2.14".into(),
        };
        assert!(!r.multi_part_aof());
    }
}
