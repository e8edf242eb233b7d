//! Test-only images built from this machine's binaries (no registry is reachable): `FROM scratch`,
//! the host files listed in `infra/e2e/images/<name>/host-files` at their own paths, every shared
//! library `ldd` lists for them, and a static busybox for `sh`, `cp`, `grep` and friends.
//!
//! An image is rebuilt only when its content hash changes: the hash covers the Dockerfile, the
//! image directory's own files and every host file copied (content, mode, link targets). It is
//! stored as the image label [`HASH_LABEL`].

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::fnv::Fnv;
use crate::process::Cmd;

pub const REDIS_IMAGE: &str = "station-e2e/redis:test";
pub const POSTGRES_IMAGE: &str = "station-e2e/postgres:test";
/// The image label holding the content hash the image was built from.
pub const HASH_LABEL: &str = "station-e2e.content-hash";
/// The static busybox (Debian `busybox-static`).
pub const BUSYBOX: &str = "/bin/busybox";

/// One image to build: `infra/e2e/images/<dir>` → `tag`.
#[derive(Clone, Debug)]
pub struct ImageSpec {
    pub dir: &'static str,
    pub tag: &'static str,
}

pub const IMAGES: [ImageSpec; 2] = [
    ImageSpec {
        dir: "redis",
        tag: REDIS_IMAGE,
    },
    ImageSpec {
        dir: "postgres",
        tag: POSTGRES_IMAGE,
    },
];

/// The parsed `host-files` list: paths to copy and paths excluded below them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostFiles {
    pub include: Vec<PathBuf>,
    pub exclude: Vec<PathBuf>,
}

/// Parse a `host-files` list: one absolute path a line, `!path` to exclude, `#` comments.
pub fn parse_host_files(text: &str, file: &Path) -> Result<HostFiles> {
    let mut out = HostFiles::default();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (excluded, path) = match line.strip_prefix('!') {
            Some(p) => (true, p.trim()),
            None => (false, line),
        };
        if !path.starts_with('/') || path.split('/').any(|c| c == "..") {
            return Err(Error::input(
                file,
                i + 1,
                1,
                format!("not an absolute path without `..`: {path:?}"),
            ));
        }
        let p = PathBuf::from(path);
        if excluded {
            out.exclude.push(p);
        } else {
            out.include.push(p);
        }
    }
    if out.include.is_empty() {
        return Err(Error::input(file, 1, 1, "lists no host files"));
    }
    Ok(out)
}

/// The absolute library paths in `ldd` output (`name => /path (addr)` and `/path (addr)` lines).
pub fn parse_ldd(text: &str) -> BTreeSet<PathBuf> {
    let mut libs = BTreeSet::new();
    for line in text.lines() {
        let line = line.trim();
        let candidate = match line.split_once("=>") {
            Some((_, rhs)) => rhs.trim(),
            None => line,
        };
        let path = candidate.split_whitespace().next().unwrap_or("");
        // Lines naming the file being inspected end with `:`; only `path (0x...)` are libraries.
        if path.starts_with('/') && candidate.contains("(0x") {
            libs.insert(PathBuf::from(path));
        }
    }
    libs
}

/// What goes into an image's root file system.
#[derive(Debug, Default)]
struct Rootfs {
    /// Host paths copied as they are (symlinks stay symlinks), sorted.
    entries: BTreeSet<PathBuf>,
    /// Library paths as `ldd` names them: the file they resolve to is copied at that path.
    libs: BTreeSet<PathBuf>,
    /// busybox applets linked in /bin.
    applets: Vec<String>,
}

fn is_elf(p: &Path) -> bool {
    let mut magic = [0u8; 4];
    std::fs::File::open(p)
        .and_then(|mut f| f.read_exact(&mut magic))
        .map(|_| &magic == b"\x7fELF")
        .unwrap_or(false)
}

fn excluded(p: &Path, ex: &[PathBuf]) -> bool {
    ex.iter().any(|e| p.starts_with(e))
}

fn walk(p: &Path, ex: &[PathBuf], out: &mut BTreeSet<PathBuf>) -> Result<()> {
    if excluded(p, ex) {
        return Ok(());
    }
    let meta = std::fs::symlink_metadata(p).map_err(|e| {
        Error::unavailable(format!(
            "{}: {e} (install the package that provides it; see infra/scripts/install-deps.sh)",
            p.display()
        ))
    })?;
    if meta.file_type().is_symlink() {
        out.insert(p.to_path_buf());
        // Also take what the link points to, so the link resolves inside the image.
        let target = std::fs::canonicalize(p)
            .map_err(|e| Error::unavailable(format!("{}: dangling link: {e}", p.display())))?;
        walk(&target, ex, out)?;
    } else if meta.is_dir() {
        out.insert(p.to_path_buf());
        let mut children: Vec<PathBuf> = std::fs::read_dir(p)
            .map_err(|e| Error::unavailable(format!("{}: {e}", p.display())))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        children.sort();
        for c in children {
            walk(&c, ex, out)?;
        }
    } else {
        out.insert(p.to_path_buf());
    }
    Ok(())
}

fn collect(list: &HostFiles) -> Result<Rootfs> {
    let mut entries = BTreeSet::new();
    for p in &list.include {
        walk(p, &list.exclude, &mut entries)?;
    }
    // Every ELF file's libraries, in one ldd run (and again for libraries of libraries, which
    // ldd already resolves transitively).
    let elves: Vec<&PathBuf> = entries
        .iter()
        .filter(|p| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_file()) && is_elf(p))
        .collect();
    let mut libs = BTreeSet::new();
    if !elves.is_empty() {
        let out = Cmd::new("ldd")
            .args(elves.iter().map(|p| p.as_os_str()))
            .timeout(Duration::from_secs(60))
            .output()?;
        // ldd exits non-zero when one of several files is not dynamic; the listing is still right.
        libs = parse_ldd(&out.stdout_str());
        if libs.is_empty() {
            return Err(Error::failed(format!(
                "ldd listed no libraries for {} files: {}",
                elves.len(),
                out.stderr_str().trim()
            )));
        }
    }
    let bb = Path::new(BUSYBOX);
    if !bb.is_file() {
        return Err(Error::unavailable(format!(
            "{BUSYBOX} is missing: install it with `apt-get install busybox-static`"
        )));
    }
    let list = Cmd::new(BUSYBOX).arg("--list").read()?;
    let applets = list
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && a.bytes().all(|b| b.is_ascii_graphic() && b != b'/'))
        .map(String::from)
        .collect();
    Ok(Rootfs {
        entries,
        libs,
        applets,
    })
}

fn hash_path(h: &mut Fnv, p: &Path, as_path: &Path, follow: bool) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let read_err = |e: std::io::Error| Error::unavailable(format!("{}: {e}", p.display()));
    let meta = if follow {
        std::fs::metadata(p)
    } else {
        std::fs::symlink_metadata(p)
    }
    .map_err(read_err)?;
    h.field(as_path.as_os_str().as_encoded_bytes());
    h.field(&meta.permissions().mode().to_le_bytes());
    if meta.file_type().is_symlink() {
        let t = std::fs::read_link(p).map_err(read_err)?;
        h.field(b"link");
        h.field(t.as_os_str().as_encoded_bytes());
    } else if meta.is_file() {
        h.field(b"file");
        h.field(&std::fs::read(p).map_err(read_err)?);
    } else {
        h.field(b"dir");
    }
    Ok(())
}

fn local_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut all = BTreeSet::new();
    walk(dir, &[], &mut all)?;
    Ok(all.into_iter().collect())
}

fn content_hash(dir: &Path, fs: &Rootfs) -> Result<String> {
    let mut h = Fnv::default();
    h.field(b"station-e2e image v1");
    for f in local_files(dir)? {
        let rel = f.strip_prefix(dir).unwrap_or(&f).to_path_buf();
        hash_path(&mut h, &f, &rel, false)?;
    }
    for e in &fs.entries {
        hash_path(&mut h, e, e, false)?;
    }
    for l in &fs.libs {
        hash_path(&mut h, l, l, true)?;
    }
    hash_path(&mut h, Path::new(BUSYBOX), Path::new(BUSYBOX), true)?;
    for a in &fs.applets {
        h.field(a.as_bytes());
    }
    Ok(h.hex())
}

fn copy_err(p: &Path, e: std::io::Error) -> Error {
    Error::failed(format!("building the image context: {}: {e}", p.display()))
}

/// Copy `src` to `dst` (which must not exist): a hard link when possible, else a copy.
fn place_file(src: &Path, dst: &Path) -> Result<()> {
    if let Some(parent) = dst.parent() {
        std::fs::create_dir_all(parent).map_err(|e| copy_err(parent, e))?;
    }
    if std::fs::hard_link(src, dst).is_err() {
        std::fs::copy(src, dst).map_err(|e| copy_err(dst, e))?;
    }
    Ok(())
}

fn populate(ctx: &Path, dir: &Path, fs: &Rootfs) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    // The image directory itself: Dockerfile, rootfs/ (passwd, entrypoint ...).
    for f in local_files(dir)? {
        let rel = f.strip_prefix(dir).unwrap_or(&f);
        let dst = ctx.join(rel);
        let meta = std::fs::symlink_metadata(&f).map_err(|e| copy_err(&f, e))?;
        if meta.is_dir() {
            std::fs::create_dir_all(&dst).map_err(|e| copy_err(&dst, e))?;
        } else {
            // Copied, not linked: the build must not see later edits, and modes are kept.
            if let Some(parent) = dst.parent() {
                std::fs::create_dir_all(parent).map_err(|e| copy_err(parent, e))?;
            }
            std::fs::copy(&f, &dst).map_err(|e| copy_err(&dst, e))?;
        }
    }
    let root = ctx.join("rootfs");
    let at = |p: &Path| root.join(p.strip_prefix("/").unwrap_or(p));
    for e in &fs.entries {
        let dst = at(e);
        let meta = std::fs::symlink_metadata(e).map_err(|err| copy_err(e, err))?;
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(e).map_err(|err| copy_err(e, err))?;
            if let Some(parent) = dst.parent() {
                std::fs::create_dir_all(parent).map_err(|err| copy_err(parent, err))?;
            }
            if std::fs::symlink_metadata(&dst).is_err() {
                std::os::unix::fs::symlink(&target, &dst).map_err(|err| copy_err(&dst, err))?;
            }
        } else if meta.is_dir() {
            std::fs::create_dir_all(&dst).map_err(|err| copy_err(&dst, err))?;
            std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o755))
                .map_err(|err| copy_err(&dst, err))?;
        } else if std::fs::symlink_metadata(&dst).is_err() {
            place_file(e, &dst)?;
        }
    }
    for l in &fs.libs {
        let dst = at(l);
        if std::fs::symlink_metadata(&dst).is_err() {
            let real = std::fs::canonicalize(l).map_err(|err| copy_err(l, err))?;
            place_file(&real, &dst)?;
        }
    }
    let bin = root.join("bin");
    place_file(Path::new(BUSYBOX), &bin.join("busybox"))?;
    for a in &fs.applets {
        let dst = bin.join(a);
        if std::fs::symlink_metadata(&dst).is_err() {
            std::os::unix::fs::symlink("busybox", &dst).map_err(|err| copy_err(&dst, err))?;
        }
    }
    for (d, mode) in [("tmp", 0o1777), ("data", 0o755)] {
        let p = root.join(d);
        std::fs::create_dir_all(&p).map_err(|err| copy_err(&p, err))?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
            .map_err(|err| copy_err(&p, err))?;
    }
    Ok(())
}

/// The content hash label of a local image, `None` when the image does not exist.
pub fn image_hash(tag: &str) -> Result<Option<String>> {
    let out = Cmd::new("docker")
        .args(["image", "inspect", "--format"])
        .arg(format!("{{{{ index .Config.Labels \"{HASH_LABEL}\" }}}}"))
        .arg(tag)
        .timeout(Duration::from_secs(30))
        .output()?;
    if !out.status.success() {
        return Ok(None);
    }
    Ok(Some(out.stdout_str().trim().to_string()))
}

/// What [`ensure`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Built {
    /// The image existed with the same content hash.
    Cached(String),
    /// The image was (re)built.
    Built(String),
}

/// Build `spec` unless an image with the same content hash exists.
pub fn ensure(root: &Path, spec: &ImageSpec) -> Result<Built> {
    let dir = root.join("infra/e2e/images").join(spec.dir);
    let list_file = dir.join("host-files");
    let text = std::fs::read_to_string(&list_file).map_err(|e| Error::read(&list_file, e))?;
    let list = parse_host_files(&text, &list_file)?;
    let fs = collect(&list)?;
    let hash = content_hash(&dir, &fs)?;
    if image_hash(spec.tag)?.as_deref() == Some(hash.as_str()) {
        return Ok(Built::Cached(hash));
    }
    let previous = image_id(spec.tag);
    let ctx = tempfile::Builder::new()
        .prefix("station-e2e-image-")
        .tempdir()
        .map_err(|e| Error::failed(format!("cannot create a temporary directory: {e}")))?;
    populate(ctx.path(), &dir, &fs)?;
    // The legacy builder is what a bare Docker engine has; buildx is not required.
    let out = Cmd::new("docker")
        .args(["build", "--quiet", "--label"])
        .arg(format!("{HASH_LABEL}={hash}"))
        .args(["--tag", spec.tag])
        .arg(ctx.path())
        .timeout(Duration::from_secs(300))
        .output()?;
    if !out.status.success() {
        return Err(Error::failed(format!(
            "docker build of {} failed ({}):\n{}{}",
            spec.tag,
            crate::process::describe(out.status),
            out.stdout_str(),
            out.stderr_str()
        )));
    }
    // The image the tag pointed to before is now dangling: remove it (not if a container uses it).
    if let Some(old) = previous {
        if image_id(spec.tag).as_ref() != Some(&old) {
            let _ = Cmd::new("docker")
                .args(["image", "rm", &old])
                .timeout(Duration::from_secs(60))
                .output();
        }
    }
    Ok(Built::Built(hash))
}

/// The image id a tag points to, if the image exists.
fn image_id(tag: &str) -> Option<String> {
    Cmd::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", tag])
        .timeout(Duration::from_secs(30))
        .read()
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// `docker image rm` (for `--remove-images`); a missing image is fine.
pub fn remove(tag: &str) -> Result<()> {
    let out = Cmd::new("docker")
        .args(["image", "rm", "--force", tag])
        .timeout(Duration::from_secs(60))
        .output()?;
    let err = out.stderr_str();
    if out.status.success() || err.contains("No such image") {
        Ok(())
    } else {
        Err(Error::failed(format!(
            "docker image rm {tag}: {}",
            err.trim()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_is_parsed_into_library_paths() {
        let text = "/usr/bin/a:\n\tlinux-vdso.so.1 (0x00007ffd)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n/bin/busybox:\n\tnot a dynamic executable\n\tlibmissing.so => not found\n";
        let libs: Vec<PathBuf> = parse_ldd(text).into_iter().collect();
        assert_eq!(
            libs,
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
    }

    #[test]
    fn host_files_lists_parse_and_reject_relative_paths() {
        let f = Path::new("host-files");
        let l = parse_host_files("# c\n/usr/bin/x\n\n!/usr/bin/x/y\n", f).unwrap();
        assert_eq!(l.include, [PathBuf::from("/usr/bin/x")]);
        assert_eq!(l.exclude, [PathBuf::from("/usr/bin/x/y")]);
        let Error::Input { at, .. } = parse_host_files("/ok\nbin/x\n", f).unwrap_err() else {
            panic!()
        };
        assert_eq!(at.line, 2);
        assert!(parse_host_files("/a/../etc/shadow\n", f).is_err());
        assert!(parse_host_files("# nothing\n", f).is_err());
    }
}
