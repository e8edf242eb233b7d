//! Our own connection to one Redis node: TCP, unix socket or TLS, with every reply capped.
//!
//! Why not `redis::Connection`: its sync client reads a reply of whatever size the server announces
//! (a fake server announcing a 2 GB bulk string grew us to 2 GB in 3 s, issue 12.7) and does not let
//! us give it our own stream. So the bytes go through [`Capped`] and are parsed by the redis crate's
//! own [`redis::Parser`]; commands are packed with [`redis::cmd`]. TLS is rustls 0.23 with ring (what
//! the redis crate's `tls-rustls` feature builds on): the system's roots by default
//! (rustls-native-certs), `--ca-file` to trust one CA instead, `--tls-insecure` to trust anything
//! (with a warning). The server name is always checked unless insecure.
//!
//! Every error is final and names the target: exit 3 for anything about reaching the node (refused,
//! missing socket, timeout, TLS, a reply too large, not a Redis server), and server error replies
//! come back as [`Reply::Err`] so that callers decide (NOPERM on CONFIG is not fatal).

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};

/// The largest reply we accept. Real INFO sections and CONFIG GET replies are a few KB (a full
/// `INFO` with 16 databases and 100 replicas stays under 64 KB); SENTINEL replicas lists 1–2 KB per
/// node.
pub const REPLY_CAP: usize = 1 << 20;

/// How much of a non-Redis answer we quote.
const HEAD: usize = 80;

/// Where the node listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Addr {
    Tcp { host: String, port: u16 },
    Unix(PathBuf),
}

/// TLS settings (`rediss://`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tls {
    /// Trust only this CA bundle (PEM) instead of the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Accept any certificate and name (`--tls-insecure`).
    pub insecure: bool,
}

/// Everything needed to open a session with a node.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub addr: Addr,
    pub tls: Option<Tls>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub db: i64,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("addr", &self.addr)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("db", &self.db)
            .finish()
    }
}

impl Endpoint {
    /// `redis://h:p[/db]`, `rediss://h:p`, `redis+unix:///path` (never a password).
    pub fn display(&self) -> String {
        match &self.addr {
            Addr::Unix(p) => format!("redis+unix://{}", p.display()),
            Addr::Tcp { host, port } => {
                let scheme = if self.tls.is_some() {
                    "rediss"
                } else {
                    "redis"
                };
                let host = if host.contains(':') {
                    format!("[{host}]")
                } else {
                    host.clone()
                };
                let db = if self.db == 0 {
                    String::new()
                } else {
                    format!("/{}", self.db)
                };
                format!("{scheme}://{host}:{port}{db}")
            }
        }
    }

    /// The same credentials and TLS settings, another address (a replica the primary lists).
    pub fn with_addr(&self, host: &str, port: u16) -> Endpoint {
        Endpoint {
            addr: Addr::Tcp {
                host: host.to_string(),
                port,
            },
            ..self.clone()
        }
    }
}

/// A reply: a value, or the server's error (`-CODE message`).
#[derive(Debug)]
pub enum Reply {
    Ok(redis::Value),
    Err { code: String, message: String },
}

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
    #[cfg(feature = "tls")]
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Stream {
    fn set_timeouts(&self, d: Duration) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => {
                s.set_read_timeout(Some(d))?;
                s.set_write_timeout(Some(d))
            }
            Stream::Unix(s) => {
                s.set_read_timeout(Some(d))?;
                s.set_write_timeout(Some(d))
            }
            #[cfg(feature = "tls")]
            Stream::Tls(s) => {
                s.sock.set_read_timeout(Some(d))?;
                s.sock.set_write_timeout(Some(d))
            }
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush(),
            Stream::Unix(s) => s.flush(),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// What a capped read saw: used to explain a failed parse.
#[derive(Default)]
struct Seen {
    head: Vec<u8>,
    total: usize,
    cap_hit: bool,
    eof: bool,
    io: Option<io::Error>,
}

/// Reads at most `cap` bytes for one reply, remembering the first bytes and what went wrong.
struct Capped<'a> {
    inner: &'a mut Stream,
    cap: usize,
    seen: &'a mut Seen,
}

impl Read for Capped<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.cap.saturating_sub(self.seen.total);
        if left == 0 {
            self.seen.cap_hit = true;
            return Err(io::Error::other("reply larger than the cap"));
        }
        let n = buf.len().min(left);
        match self.inner.read(&mut buf[..n]) {
            Ok(0) => {
                self.seen.eof = true;
                Ok(0)
            }
            Ok(got) => {
                let room = HEAD.saturating_sub(self.seen.head.len());
                self.seen.head.extend_from_slice(&buf[..got.min(room)]);
                self.seen.total += got;
                Ok(got)
            }
            Err(e) => {
                let kind = e.kind();
                self.seen.io = Some(io::Error::new(kind, e.to_string()));
                Err(e)
            }
        }
    }
}

/// The first byte of every RESP2/RESP3 reply.
fn is_resp_marker(b: u8) -> bool {
    b"+-:$*_,#!=(%~|>".contains(&b)
}

/// How we quote a non-Redis answer: its first line, printable characters only.
pub fn quote_head(head: &[u8]) -> String {
    let text = String::from_utf8_lossy(head);
    let first = text.split(['\r', '\n']).next().unwrap_or("");
    let clean: String = first
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    format!("`{clean}`")
}

/// An open session with a node.
pub struct Conn {
    stream: Stream,
    parser: redis::Parser,
    target: String,
    cap: usize,
}

fn timeout_msg(target: &str, d: Duration) -> String {
    format!(
        "{target}: no answer within {:.1}s (the server accepted the connection, or the connect attempt, and then said nothing): check that this is Redis and that it is not blocked",
        d.as_secs_f64()
    )
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    )
}

impl Conn {
    /// Connect (within `timeout` per step), do the TLS handshake, AUTH and SELECT.
    pub fn open(ep: &Endpoint, target: &str, timeout: Duration) -> Result<Conn> {
        let t = target;
        let stream = match &ep.addr {
            Addr::Unix(path) => {
                let s = UnixStream::connect(path).map_err(|e| unix_error(t, path, e))?;
                Stream::Unix(s)
            }
            Addr::Tcp { host, port } => {
                let tcp = connect_tcp(t, host, *port, timeout)?;
                match &ep.tls {
                    None => Stream::Tcp(tcp),
                    Some(tls) => tls_handshake(t, host, tcp, tls, timeout)?,
                }
            }
        };
        stream
            .set_timeouts(timeout)
            .map_err(|e| Error::unavailable(format!("{t}: {e}")))?;
        let mut c = Conn {
            stream,
            parser: redis::Parser::new(),
            target: t.to_string(),
            cap: REPLY_CAP,
        };
        if let Some(pw) = &ep.password {
            let mut args = vec!["AUTH"];
            if let Some(u) = &ep.username {
                args.push(u);
            }
            args.push(pw);
            match c.query(&args, timeout)? {
                Reply::Ok(_) => {}
                Reply::Err { code, message } => {
                    return Err(Error::unavailable(super::transport::scrub(
                        &auth_failed(t, &code, &message),
                        Some(pw),
                    )))
                }
            }
        }
        if ep.db != 0 {
            let db = ep.db.to_string();
            if let Reply::Err { code, message } = c.query(&["SELECT", &db], timeout)? {
                return Err(Error::unavailable(format!(
                    "{t}: SELECT {db} failed: {code} {message}"
                )));
            }
        }
        Ok(c)
    }

    pub fn target(&self) -> &str {
        &self.target
    }

    /// Send one command and read its reply (at most [`REPLY_CAP`] bytes, within `timeout`).
    pub fn query(&mut self, args: &[&str], timeout: Duration) -> Result<Reply> {
        let t = self.target.clone();
        let _ = self.stream.set_timeouts(timeout);
        let mut c = redis::cmd(args[0]);
        for a in &args[1..] {
            c.arg(*a);
        }
        let packed = c.get_packed_command();
        if let Err(e) = self
            .stream
            .write_all(&packed)
            .and_then(|_| self.stream.flush())
        {
            return Err(Error::unavailable(if is_timeout(&e) {
                timeout_msg(&t, timeout)
            } else {
                format!("{t}: the connection failed while sending {}: {e}", args[0])
            }));
        }
        let mut seen = Seen::default();
        let parsed = {
            let capped = Capped {
                inner: &mut self.stream,
                cap: self.cap,
                seen: &mut seen,
            };
            self.parser.parse_value(capped)
        };
        if let Some(&b) = seen.head.first() {
            if !is_resp_marker(b) {
                return Err(not_redis(&t, &seen.head));
            }
        }
        match parsed {
            Ok(redis::Value::ServerError(e)) => Ok(Reply::Err {
                code: e.code().to_string(),
                message: e.details().unwrap_or("").to_string(),
            }),
            Ok(v) => Ok(Reply::Ok(v)),
            Err(_) if seen.cap_hit => Err(Error::unavailable(format!(
                "{t}: the reply to {} is larger than {} MiB, far more than a Redis server sends: this is not a Redis server, or not one we should trust",
                args[0],
                self.cap >> 20
            ))),
            Err(_) if seen.io.as_ref().is_some_and(is_timeout) => {
                Err(Error::unavailable(timeout_msg(&t, timeout)))
            }
            Err(_) if seen.total == 0 && seen.eof => Err(Error::unavailable(format!(
                "{t}: the server closed the connection without answering {}: is this a Redis server (and the right port)?",
                args[0]
            ))),
            Err(e) => match seen.io {
                Some(io) => Err(Error::unavailable(format!(
                    "{t}: the connection failed while reading the reply to {}: {io}",
                    args[0]
                ))),
                None if seen.eof => Err(Error::unavailable(format!(
                    "{t}: the connection closed in the middle of the reply to {}",
                    args[0]
                ))),
                None => {
                    let _ = e;
                    Err(not_redis(&t, &seen.head))
                }
            },
        }
    }
}

fn not_redis(t: &str, head: &[u8]) -> Error {
    Error::unavailable(format!(
        "{t}: this is not a Redis server (it answered {}): check the host and port",
        quote_head(head)
    ))
}

fn auth_failed(t: &str, code: &str, message: &str) -> String {
    let what = match code {
        "WRONGPASS" | "NOAUTH" => code.to_string(),
        _ => format!("{code} {message}"),
    };
    let var = if t.starts_with("sentinel ") {
        "REDIS_SENTINEL_PASSWORD"
    } else {
        "REDISCLI_AUTH (or REDIS_PASSWORD)"
    };
    format!("{t}: authentication failed ({what}): set {var} to the right password")
}

fn unix_error(t: &str, path: &Path, e: io::Error) -> Error {
    let p = path.display();
    Error::unavailable(match e.kind() {
        io::ErrorKind::NotFound => {
            format!("{t}: the socket {p} does not exist: is Redis running with `unixsocket {p}`?")
        }
        io::ErrorKind::PermissionDenied => format!(
            "{t}: permission denied on the socket {p}: run as a user allowed by `unixsocketperm`"
        ),
        io::ErrorKind::ConnectionRefused => {
            format!(
                "{t}: connection refused on {p}: nothing listens on that socket (Redis stopped?)"
            )
        }
        _ => format!("{t}: cannot connect to {p}: {e}"),
    })
}

fn connect_tcp(t: &str, host: &str, port: u16, timeout: Duration) -> Result<TcpStream> {
    let addrs: Vec<_> = (host, port)
        .to_socket_addrs()
        .map_err(|e| Error::unavailable(format!("{t}: cannot resolve {host}: {e}")))?
        .collect();
    let mut last = None;
    for a in &addrs {
        match TcpStream::connect_timeout(a, timeout) {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => last = Some(e),
        }
    }
    let e = last.unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"));
    Err(Error::unavailable(match e.kind() {
        io::ErrorKind::ConnectionRefused => {
            format!("{t}: connection refused: is Redis running and listening there?")
        }
        _ if is_timeout(&e) => timeout_msg(t, timeout),
        _ => format!("{t}: cannot connect: {e}"),
    }))
}

#[cfg(not(feature = "tls"))]
fn tls_handshake(t: &str, _: &str, _: TcpStream, _: &Tls, _: Duration) -> Result<Stream> {
    Err(Error::usage(format!(
        "{t}: this xtask was built without TLS (cargo feature `tls`): rebuild with default features"
    )))
}

#[cfg(feature = "tls")]
fn tls_handshake(
    t: &str,
    host: &str,
    tcp: TcpStream,
    tls: &Tls,
    timeout: Duration,
) -> Result<Stream> {
    use std::sync::Arc;
    let config = tls::client_config(tls)?;
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| Error::usage(format!("{t}: {host:?} is not a valid TLS server name: {e}")))?;
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name)
        .map_err(|e| Error::unavailable(format!("{t}: TLS: {e}")))?;
    let mut tcp = tcp;
    tcp.set_read_timeout(Some(timeout))
        .and_then(|_| tcp.set_write_timeout(Some(timeout)))
        .map_err(|e| Error::unavailable(format!("{t}: {e}")))?;
    while conn.is_handshaking() {
        if let Err(e) = conn.complete_io(&mut tcp) {
            return Err(tls::explain(t, host, tls, &e, timeout));
        }
    }
    Ok(Stream::Tls(Box::new(rustls::StreamOwned::new(conn, tcp))))
}

#[cfg(feature = "tls")]
mod tls {
    use std::io;
    use std::sync::Arc;
    use std::time::Duration;

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

    use super::Tls;
    use crate::error::{Error, Result};

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    /// The client configuration: the system's roots, or `ca_file`'s, or none checked (insecure).
    pub fn client_config(tls: &Tls) -> Result<rustls::ClientConfig> {
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::unavailable(format!("TLS: {e}")))?;
        if tls.insecure {
            return Ok(builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnything(provider())))
                .with_no_client_auth());
        }
        let mut roots = rustls::RootCertStore::empty();
        match &tls.ca_file {
            Some(path) => {
                let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                    .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
                    .map_err(|e| {
                        Error::usage(format!(
                            "{}: cannot read a PEM certificate from this --ca-file: {e}",
                            path.display()
                        ))
                    })?;
                if certs.is_empty() {
                    return Err(Error::usage(format!(
                        "{}: no certificate in this --ca-file (expected PEM `BEGIN CERTIFICATE`)",
                        path.display()
                    )));
                }
                for c in certs {
                    roots.add(c).map_err(|e| {
                        Error::usage(format!("{}: unusable CA certificate: {e}", path.display()))
                    })?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                let (added, _) = roots.add_parsable_certificates(found.certs);
                if added == 0 {
                    return Err(Error::unavailable(
                        "TLS: no system CA certificates found (install the Debian package ca-certificates, or pass --ca-file PATH)",
                    ));
                }
            }
        }
        Ok(builder.with_root_certificates(roots).with_no_client_auth())
    }

    /// A handshake error in words.
    pub fn explain(t: &str, host: &str, tls: &Tls, e: &io::Error, timeout: Duration) -> Error {
        let inner = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
        let trusted = match &tls.ca_file {
            Some(p) => format!("the CA in --ca-file {}", p.display()),
            None => "the system's CA certificates".to_string(),
        };
        let msg = match inner {
            Some(rustls::Error::InvalidCertificate(ce)) => match ce {
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => format!(
                    "{t}: TLS: the server's certificate is not valid for the name {host:?} (name mismatch): connect with a name the certificate was issued for"
                ),
                CertificateError::UnknownIssuer | CertificateError::BadSignature => format!(
                    "{t}: TLS: the server's certificate is not signed by {trusted} (unknown issuer): pass the CA that signed it with --ca-file PATH"
                ),
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    format!("{t}: TLS: the server's certificate has expired")
                }
                other => format!("{t}: TLS: the server's certificate was rejected: {other:?}"),
            },
            Some(rustls::Error::AlertReceived(a)) => format!(
                "{t}: TLS: the server refused the handshake ({a:?}); if it requires a client certificate (tls-auth-clients yes), set `tls-auth-clients optional`: verify-redis sends none"
            ),
            Some(rustls::Error::InvalidMessage(_)) | Some(rustls::Error::InappropriateMessage { .. }) => format!(
                "{t}: TLS handshake failed ({e}): does this port speak TLS (redis-server --tls-port)? Use redis:// for a plain port"
            ),
            Some(other) => format!("{t}: TLS handshake failed: {other}"),
            None if super::is_timeout(e) => format!(
                "{t}: no answer to the TLS handshake within {:.1}s: does this port speak TLS (redis-server --tls-port)? Use redis:// for a plain port",
                timeout.as_secs_f64()
            ),
            None if e.kind() == io::ErrorKind::UnexpectedEof || e.kind() == io::ErrorKind::ConnectionReset => format!(
                "{t}: TLS handshake failed: the server closed the connection ({e}): does this port speak TLS?"
            ),
            None => format!("{t}: TLS handshake failed: {e}"),
        };
        Error::unavailable(msg)
    }

    /// `--tls-insecure`: any certificate, any name (signatures on the handshake are still checked).
    #[derive(Debug)]
    struct AcceptAnything(Arc<rustls::crypto::CryptoProvider>);

    impl ServerCertVerifier for AcceptAnything {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> std::result::Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }
        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Replies → Rust values (pure)
// ---------------------------------------------------------------------------------------------

/// A reply as text (bulk, simple or verbatim string).
pub fn text(v: &redis::Value) -> Option<String> {
    match v {
        redis::Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        redis::Value::SimpleString(s) => Some(s.clone()),
        redis::Value::Okay => Some("OK".into()),
        redis::Value::VerbatimString { text, .. } => Some(text.clone()),
        redis::Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

/// A flat array of strings (CONFIG GET, SENTINEL get-master-addr-by-name); `None` for nil.
pub fn strings(v: &redis::Value) -> Option<Vec<String>> {
    match v {
        redis::Value::Array(items) | redis::Value::Set(items) => {
            items.iter().map(text).collect::<Option<Vec<_>>>()
        }
        redis::Value::Map(pairs) => {
            let mut out = Vec::new();
            for (k, v) in pairs {
                out.push(text(k)?);
                out.push(text(v)?);
            }
            Some(out)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_is_quoted_on_one_printable_line() {
        assert_eq!(
            quote_head(b"HTTP/1.0 400 Bad request\r\nServer: x\r\n"),
            "`HTTP/1.0 400 Bad request`"
        );
        assert_eq!(quote_head(b"\x16\x03\x01abc"), "`???abc`");
        assert!(is_resp_marker(b'+') && is_resp_marker(b'$') && !is_resp_marker(b'H'));
    }

    #[test]
    fn endpoints_display_without_password() {
        let ep = Endpoint {
            addr: Addr::Tcp {
                host: "::1".into(),
                port: 6380,
            },
            tls: Some(Tls::default()),
            username: None,
            password: Some("hunter2".into()),
            db: 2,
        };
        assert_eq!(ep.display(), "rediss://[::1]:6380/2");
        assert!(!format!("{ep:?}").contains("hunter2"));
        assert_eq!(
            ep.with_addr("10.0.0.2", 7000).display(),
            "rediss://10.0.0.2:7000/2"
        );
    }
}
