//! `verify-redis --url rediss://…` against a real redis-server with `--tls-port` and a throwaway CA
//! made with openssl: ok with `--ca-file`, exit 3 with a clear message for a wrong CA, a name
//! mismatch, a plain port; `--tls-insecure` works and warns.

#![cfg(feature = "tls")]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::Run;
use xtask::services::free_port;
use xtask::services::redis::{RedisConfig, RedisServer};

fn xtask(args: &[&str], envs: &[(&str, &str)]) -> Run {
    Run::from(common::verify_redis_command(args, envs).output().unwrap())
}

fn openssl(dir: &Path, args: &[&str]) {
    let o = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl (install-deps.sh installs it)");
    assert!(o.status.success(), "openssl {args:?}: {o:?}");
}

/// A CA (`NAME.crt`/`NAME.key`) in `dir`.
fn ca(dir: &Path, name: &str) -> PathBuf {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    dir.join(format!("{name}.crt"))
}

/// A server certificate for `san` (e.g. `DNS:localhost`) signed by CA `ca`.
fn server_cert(dir: &Path, ca: &str, san: &str) -> (PathBuf, PathBuf) {
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=redis-under-test",
        ],
    );
    std::fs::write(
        dir.join("ext.cnf"),
        format!("subjectAltName={san}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"),
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
    (dir.join("server.crt"), dir.join("server.key"))
}

struct TlsRedis {
    _server: RedisServer,
    plain: u16,
    tls: u16,
}

fn tls_redis(dir: &Path, ca: &Path, cert: &Path, key: &Path, password: Option<&str>) -> TlsRedis {
    let tls = free_port().unwrap();
    let cfg = RedisConfig {
        args: [
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--tls-port",
            &tls.to_string(),
            "--tls-cert-file",
            cert.to_str().unwrap(),
            "--tls-key-file",
            key.to_str().unwrap(),
            "--tls-ca-cert-file",
            ca.to_str().unwrap(),
            "--tls-auth-clients",
            "no",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        password: password.map(str::to_string),
        config_lines: vec![],
    };
    let data = dir.join("data");
    let server = RedisServer::spawn(&data, free_port().unwrap(), &cfg).unwrap();
    xtask::services::wait_for_port(tls, std::time::Duration::from_secs(10)).unwrap();
    TlsRedis {
        plain: server.port,
        _server: server,
        tls,
    }
}

#[test]
fn tls_with_the_right_ca_is_ok_and_wrong_ca_or_name_or_port_is_exit_3() {
    let d = tempfile::tempdir().unwrap();
    let ca_crt = ca(d.path(), "good-ca");
    let other_ca = ca(d.path(), "other-ca");
    let (cert, key) = server_cert(d.path(), "good-ca", "DNS:localhost");
    let r = tls_redis(d.path(), &ca_crt, &cert, &key, Some("Tls-Secret-pw"));
    let pw = [("REDISCLI_AUTH", "Tls-Secret-pw")];
    let good = format!("rediss://localhost:{}", r.tls);
    let ca_arg = ca_crt.to_str().unwrap();

    // The right CA and name: ok, and the JSON says TLS.
    let ok = xtask(&["--url", &good, "--ca-file", ca_arg, "--json"], &pw);
    assert_eq!(ok.code, 0, "{}{}", ok.stdout, ok.stderr);
    let v: serde_json::Value = serde_json::from_str(&ok.stdout).unwrap();
    assert_eq!(v["target"], format!("rediss://localhost:{}", r.tls));
    assert_eq!(v["status"], "ok");
    assert!(!ok.stdout.contains("Tls-Secret-pw") && !ok.stderr.contains("Tls-Secret-pw"));

    // A CA that did not sign it: exit 3, "not signed by", points at --ca-file.
    let wrong = xtask(
        &["--url", &good, "--ca-file", other_ca.to_str().unwrap()],
        &pw,
    );
    assert_eq!(wrong.code, 3, "{}", wrong.stderr);
    assert!(
        wrong.stderr.contains("not signed by the CA in --ca-file"),
        "{}",
        wrong.stderr
    );
    // The system roots do not know our throwaway CA either.
    let system = xtask(&["--url", &good], &pw);
    assert_eq!(system.code, 3, "{}", system.stderr);
    assert!(
        system.stderr.contains("not signed by the system's CA"),
        "{}",
        system.stderr
    );

    // Right CA, wrong name (the certificate is for localhost, not 127.0.0.1).
    let by_ip = format!("rediss://127.0.0.1:{}", r.tls);
    let mismatch = xtask(&["--url", &by_ip, "--ca-file", ca_arg], &pw);
    assert_eq!(mismatch.code, 3, "{}", mismatch.stderr);
    assert!(
        mismatch.stderr.contains("name mismatch"),
        "{}",
        mismatch.stderr
    );
    assert!(
        mismatch.stderr.contains("\"127.0.0.1\""),
        "{}",
        mismatch.stderr
    );

    // rediss:// to the plain port: says the port does not speak TLS.
    let plain = format!("rediss://localhost:{}", r.plain);
    let p = xtask(
        &["--url", &plain, "--ca-file", ca_arg, "--timeout", "2"],
        &pw,
    );
    assert_eq!(p.code, 3, "{}", p.stderr);
    assert!(p.stderr.contains("speak TLS"), "{}", p.stderr);

    // --tls-insecure: accepted with the wrong name and no CA, and warns loudly.
    let insecure = xtask(&["--url", &by_ip, "--tls-insecure"], &pw);
    assert_eq!(insecure.code, 0, "{}", insecure.stderr);
    assert!(
        insecure.stderr.contains("WARNING: --tls-insecure"),
        "{}",
        insecure.stderr
    );

    // Flags that make no sense are usage errors.
    let u = xtask(
        &[
            "--url",
            &format!("redis://127.0.0.1:{}", r.plain),
            "--ca-file",
            ca_arg,
        ],
        &pw,
    );
    assert_eq!(u.code, 2, "{}", u.stderr);
    let bad = d.path().join("not-a-cert.pem");
    std::fs::write(&bad, "hello\n").unwrap();
    let u = xtask(&["--url", &good, "--ca-file", bad.to_str().unwrap()], &pw);
    assert_eq!(u.code, 2, "{}", u.stderr);
    assert!(
        u.stderr.contains("no certificate in this --ca-file"),
        "{}",
        u.stderr
    );
}
