//! PostgreSQL in the e2e stack: SQL through `docker compose exec -T postgres psql` (local socket,
//! trust, no password anywhere), and the e2e's own restore check of an uploaded dump (independent
//! of `backup drill`: its own download, and it compares content with what the e2e seeded).

use std::time::Duration;

use super::stack::Stack;
use crate::environments::Environment;
use crate::error::{Error, Result};
use crate::process::Cmd;

/// SQL through `psql` in the postgres container (stdin; local socket, trust, no password).
pub fn psql(stack: &Stack, service: &str, user: &str, db: &str, sql: &str) -> Result<String> {
    stack.exec(
        service,
        &[
            "psql",
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-U",
            user,
            "-d",
            db,
        ],
        Some(sql.as_bytes().to_vec()),
    )
}

fn rclone() -> Cmd {
    Cmd::new("rclone")
        .env_remove("AWS_CA_BUNDLE")
        .args(["--low-level-retries", "1"])
        .timeout(Duration::from_secs(120))
}

/// Fetch the object, gunzip it, restore it into a scratch database in the container and count.
pub fn restore_check(stack: &Stack, env: &Environment, path: &str) -> Result<String> {
    let gz = rclone().args(["cat", path]).output()?;
    if !gz.status.success() || gz.stdout.is_empty() {
        return Err(Error::failed(format!(
            "rclone cat {path}: {}",
            gz.stderr_str().trim()
        )));
    }
    let sql = Cmd::new("gzip")
        .arg("-dc")
        .stdin_bytes(gz.stdout)
        .output()?;
    if !sql.status.success() {
        return Err(Error::failed(format!("{path} is not a valid gzip file")));
    }
    let pg = &env.services.postgres;
    let user = &env.db_user;
    psql(
        stack,
        pg,
        user,
        "postgres",
        "DROP DATABASE IF EXISTS e2e_restore;\nCREATE DATABASE e2e_restore;\n",
    )?;
    stack.exec(
        pg,
        &[
            "psql",
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "--single-transaction",
            "-U",
            user,
            "-d",
            "e2e_restore",
        ],
        Some(sql.stdout),
    )?;
    let got = psql(
        stack,
        pg,
        user,
        "e2e_restore",
        "SELECT count(*) || ' rows, sum ' || sum(id) FROM e2e_items;\n",
    )?;
    let got = got.trim().to_string();
    if got != "1000 rows, sum 500500" {
        return Err(Error::failed(format!(
            "the restored e2e_items has `{got}`, expected `1000 rows, sum 500500`"
        )));
    }
    psql(stack, pg, user, "postgres", "DROP DATABASE e2e_restore;\n")?;
    Ok(got)
}
