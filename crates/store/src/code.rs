//! Content-addressed code bundles: the zip as uploaded and its unpacked, read-only task root.
//!
//! Layout under `<data dir>/code/<sha256 hex>/`: `code.zip` and `task/`. A bundle is built in a
//! temporary directory beside it and renamed into place only once complete and flushed, so a
//! half-written bundle is never visible under its final name.

use std::fs;
use std::io::{Cursor, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use base64::Engine;
use rampart_model::{MAX_UNZIPPED_BYTES, MAX_ZIP_BYTES, MAX_ZIP_ENTRIES};
use sha2::{Digest, Sha256};

use crate::{Error, Result, io_err};

/// Longest symlink target read from a zip.
const MAX_SYMLINK_TARGET: u64 = 4096;

/// An installed bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeBundle {
    /// Lower-hex SHA-256 of the zip: its key.
    pub sha256_hex: String,
    /// Base64 SHA-256 of the zip, as Lambda reports `CodeSha256`.
    pub sha256_base64: String,
    /// Size of the zip in bytes.
    pub size: u64,
    /// The unpacked code (`LAMBDA_TASK_ROOT`).
    pub task_root: PathBuf,
}

/// The bundle directory of a data dir.
#[derive(Debug, Clone)]
pub struct CodeStore {
    root: PathBuf,
}

impl CodeStore {
    /// Bundles under `<data_dir>/code`.
    pub fn new(data_dir: &Path) -> Self {
        Self {
            root: data_dir.join("code"),
        }
    }

    /// Validates and installs `zip` (blocking: call from `spawn_blocking`). Installing the same
    /// bytes twice reuses the first installation.
    ///
    /// # Errors
    /// [`Error::InvalidBundle`] naming the problem (size, entries, zip-slip, symlinks, format);
    /// nothing is left behind. [`Error::Io`] when the disk fails.
    pub fn install(&self, zip: &[u8]) -> Result<CodeBundle> {
        if zip.len() as u64 > MAX_ZIP_BYTES {
            return Err(Error::InvalidBundle(format!(
                "the zip is {} bytes: the limit is {MAX_ZIP_BYTES} bytes (50 MB) zipped",
                zip.len()
            )));
        }
        let digest = Sha256::digest(zip);
        let sha256_hex = hex(&digest);
        let bundle = CodeBundle {
            sha256_base64: base64::engine::general_purpose::STANDARD.encode(digest),
            size: zip.len() as u64,
            task_root: self.task_root(&sha256_hex),
            sha256_hex,
        };
        let dir = self.root.join(&bundle.sha256_hex);
        if dir.join("task").is_dir() {
            return Ok(bundle);
        }
        if dir.exists() {
            // A damaged bundle (its task/ lost): rebuild it whole.
            remove_tree(&dir);
        }
        fs::create_dir_all(&self.root).map_err(io_err("creating the code directory"))?;
        let tmp = self
            .root
            .join(format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
        let built = build_bundle(&tmp, zip);
        if let Err(e) = built {
            remove_tree(&tmp);
            return Err(e);
        }
        match fs::rename(&tmp, &dir) {
            Ok(()) => {}
            // Another deploy of the same bytes won the race: theirs is as good as ours.
            Err(_) if dir.join("task").is_dir() => remove_tree(&tmp),
            Err(e) => {
                remove_tree(&tmp);
                return Err(io_err(format!("installing bundle {}", dir.display()))(e));
            }
        }
        sync_dir(&self.root)?;
        Ok(bundle)
    }

    /// The task root of the bundle with this key.
    pub fn task_root(&self, sha256_hex: &str) -> PathBuf {
        self.root.join(sha256_hex).join("task")
    }

    /// Reads the stored zip of a bundle.
    ///
    /// # Errors
    /// When it is missing or unreadable.
    pub fn read_zip(&self, sha256_hex: &str) -> Result<Vec<u8>> {
        let path = self.root.join(sha256_hex).join("code.zip");
        fs::read(&path).map_err(io_err(format!("reading {}", path.display())))
    }

    /// Removes bundles whose keys are not in `keep`, and leftovers of interrupted installs.
    pub fn retain(&self, keep: &[String]) -> Result<usize> {
        let entries = match fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(io_err("listing the code directory")(e)),
        };
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !keep.contains(&name) {
                remove_tree(&entry.path());
                removed += 1;
            }
        }
        Ok(removed)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Makes a tree writable again and removes it (bundles are read-only once installed).
fn remove_tree(path: &Path) {
    fn make_writable(path: &Path) {
        if let Ok(meta) = fs::symlink_metadata(path)
            && meta.is_dir()
        {
            let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o755));
            if let Ok(entries) = fs::read_dir(path) {
                for e in entries.flatten() {
                    make_writable(&e.path());
                }
            }
        }
    }
    make_writable(path);
    let _ = fs::remove_dir_all(path);
}

fn sync_dir(path: &Path) -> Result<()> {
    fs::File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(io_err(format!("syncing {}", path.display())))
}

fn build_bundle(tmp: &Path, zip: &[u8]) -> Result<()> {
    fs::create_dir_all(tmp.join("task")).map_err(io_err("creating a bundle directory"))?;
    let mut file = fs::File::create(tmp.join("code.zip")).map_err(io_err("writing code.zip"))?;
    file.write_all(zip)
        .and_then(|()| file.sync_all())
        .map_err(io_err("writing code.zip"))?;
    extract(zip, &tmp.join("task"))?;
    // One syncfs flushes every unpacked file before the bundle gets its final name.
    let dir = fs::File::open(tmp).map_err(io_err("opening the bundle directory"))?;
    rustix::fs::syncfs(&dir).map_err(|e| io_err("flushing the bundle")(e.into()))?;
    make_read_only(&tmp.join("task"))
}

fn make_read_only(dir: &Path) -> Result<()> {
    for entry in fs::read_dir(dir).map_err(io_err("listing an unpacked bundle"))? {
        let entry = entry.map_err(io_err("listing an unpacked bundle"))?;
        let meta = entry
            .metadata()
            .map_err(io_err("reading an unpacked file"))?;
        let path = entry.path();
        if entry.file_type().map(|t| t.is_symlink()).unwrap_or(false) {
            continue;
        }
        if meta.is_dir() {
            make_read_only(&path)?;
        } else {
            let exec = meta.permissions().mode() & 0o111 != 0;
            let mode = if exec { 0o555 } else { 0o444 };
            fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                .map_err(io_err("making a bundle read-only"))?;
        }
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o555))
        .map_err(io_err("making a bundle read-only"))
}

fn invalid(msg: String) -> Error {
    Error::InvalidBundle(msg)
}

/// An entry that collides with an earlier one (a file where a directory is needed, or the
/// reverse) is the zip's fault; anything else is the disk's.
fn entry_err(name: &str) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| match e.kind() {
        std::io::ErrorKind::AlreadyExists | std::io::ErrorKind::NotADirectory => invalid(format!(
            "zip entry '{name}' could not be created: it collides with an earlier entry ({e})"
        )),
        _ => io_err(format!("unpacking zip entry {name}"))(e),
    }
}

/// Unpacks `zip` into the empty directory `dest`, refusing anything that could write outside it
/// or exceed Lambda's limits.
fn extract(zip: &[u8], dest: &Path) -> Result<()> {
    let mut archive = zip::ZipArchive::new(Cursor::new(zip))
        .map_err(|e| invalid(format!("could not read the zip: {e}")))?;
    if archive.len() > MAX_ZIP_ENTRIES {
        return Err(invalid(format!(
            "the zip has {} entries: the limit is {MAX_ZIP_ENTRIES}",
            archive.len()
        )));
    }
    let mut budget = MAX_UNZIPPED_BYTES;
    let too_big = || {
        invalid(format!(
            "the unzipped size exceeds {MAX_UNZIPPED_BYTES} bytes (250 MB)"
        ))
    };
    for i in 0..archive.len() {
        let mut entry = archive
            .by_index(i)
            .map_err(|e| invalid(format!("could not read zip entry {i}: {e}")))?;
        let name = entry
            .name()
            .map_err(|e| invalid(format!("zip entry {i} has an unreadable name: {e}")))?
            .into_owned();
        if name.starts_with('/') || name.starts_with('\\') || name.get(1..2) == Some(":") {
            return Err(invalid(format!("zip entry '{name}' has an absolute path")));
        }
        let rel = entry.enclosed_name().ok_or_else(|| {
            invalid(format!(
                "zip entry '{name}' escapes the target directory (zip-slip)"
            ))
        })?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        let target = dest.join(&rel);
        check_no_symlink_ancestor(dest, &rel, &name)?;
        if entry.is_dir() {
            fs::create_dir_all(&target).map_err(entry_err(&name))?;
            continue;
        }
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(entry_err(&name))?;
        }
        if entry.is_symlink() {
            let mut link = String::new();
            (&mut entry)
                .take(MAX_SYMLINK_TARGET)
                .read_to_string(&mut link)
                .map_err(|e| invalid(format!("symlink '{name}' has an unreadable target: {e}")))?;
            if !symlink_stays_inside(&rel, Path::new(&link)) {
                return Err(invalid(format!(
                    "symlink '{name}' points outside the bundle (to '{link}')"
                )));
            }
            std::os::unix::fs::symlink(&link, &target)
                .map_err(|e| invalid(format!("zip entry '{name}' could not be created: {e}")))?;
            continue;
        }
        if entry.size() > budget {
            return Err(too_big());
        }
        let mode = entry.unix_mode().unwrap_or(0o644);
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(if mode & 0o111 != 0 { 0o755 } else { 0o644 })
            .open(&target)
            .map_err(|e| invalid(format!("zip entry '{name}' could not be created: {e}")))?;
        // The declared size can lie: count what is actually inflated.
        let written = std::io::copy(&mut (&mut entry).take(budget + 1), &mut out)
            .map_err(|e| invalid(format!("zip entry '{name}' could not be unpacked: {e}")))?;
        if written > budget {
            return Err(too_big());
        }
        budget -= written;
    }
    Ok(())
}

/// Refuses entries written through a symlink unpacked earlier: the link could lead anywhere.
fn check_no_symlink_ancestor(dest: &Path, rel: &Path, name: &str) -> Result<()> {
    let mut path = dest.to_path_buf();
    for component in rel.components() {
        path.push(component);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(invalid(format!(
                    "zip entry '{name}' is written through a symlink"
                )));
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    Ok(())
}

/// Whether a symlink at `at` (relative to the root) pointing to `target` stays inside the root.
fn symlink_stays_inside(at: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return false;
    }
    let mut depth: i64 = at.components().count() as i64 - 1;
    for component in target.components() {
        match component {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return false,
        }
        if depth < 0 {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use zip::write::SimpleFileOptions;

    fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for (name, body) in entries {
            w.start_file(*name, SimpleFileOptions::default().unix_permissions(0o755))
                .unwrap();
            w.write_all(body).unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    fn zip_with_symlink(link: &str, target: &str) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        w.add_symlink(link, target, SimpleFileOptions::default())
            .unwrap();
        w.finish().unwrap().into_inner()
    }

    fn installed(zip: &[u8]) -> (tempfile::TempDir, Result<CodeBundle>) {
        let dir = tempfile::tempdir().unwrap();
        let result = CodeStore::new(dir.path()).install(zip);
        (dir, result)
    }

    fn refused(zip: &[u8]) -> String {
        let (dir, result) = installed(zip);
        let Err(Error::InvalidBundle(msg)) = result else {
            panic!("expected InvalidBundle, got {result:?}")
        };
        // Nothing partially installed: only the (empty) code directory remains.
        let left: Vec<_> = fs::read_dir(dir.path().join("code"))
            .map(|d| d.collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "left behind: {left:?}");
        msg
    }

    #[test]
    fn installs_and_reports_lambda_digest() {
        let zip = zip_of(&[("app.py", b"x = 1"), ("lib/util.py", b"")]);
        let (_dir, bundle) = installed(&zip);
        let bundle = bundle.unwrap();
        assert_eq!(bundle.size, zip.len() as u64);
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(&bundle.sha256_base64)
                .unwrap(),
            Sha256::digest(&zip).to_vec()
        );
        assert_eq!(fs::read(bundle.task_root.join("app.py")).unwrap(), b"x = 1");
        let mode = fs::metadata(bundle.task_root.join("app.py"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o777,
            0o555,
            "executable bit kept, write bits dropped"
        );
    }

    #[test]
    fn refuses_zip_slip_and_absolute_paths() {
        assert!(refused(&zip_of(&[("../evil", b"x")])).contains("zip-slip"));
        assert!(refused(&zip_of(&[("a/../../evil", b"x")])).contains("zip-slip"));
        assert!(refused(&zip_of(&[("/etc/evil", b"x")])).contains("absolute"));
    }

    #[test]
    fn refuses_symlinks_pointing_out() {
        assert!(refused(&zip_with_symlink("l", "../../etc/passwd")).contains("points outside"));
        assert!(refused(&zip_with_symlink("l", "/etc/passwd")).contains("points outside"));
        let (_d, ok) = installed(&zip_with_symlink("a/l", "../b"));
        assert!(ok.is_ok());
    }

    #[test]
    fn refuses_writing_through_a_symlink() {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        w.add_symlink("d", ".", SimpleFileOptions::default())
            .unwrap();
        w.start_file("d/x", SimpleFileOptions::default()).unwrap();
        let zip = w.finish().unwrap().into_inner();
        assert!(refused(&zip).contains("through a symlink"));
    }

    #[test]
    fn refuses_garbage_and_oversize() {
        assert!(refused(b"not a zip").contains("could not read the zip"));
        let big = vec![0u8; MAX_ZIP_BYTES as usize + 1];
        assert!(refused(&big).contains("50 MB"));
    }

    #[test]
    fn refuses_zip_bombs() {
        // 251 MB of zeros compresses to a few hundred KB.
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let opts = SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .large_file(true);
        w.start_file("zeros", opts).unwrap();
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..251 {
            w.write_all(&chunk).unwrap();
        }
        let zip = w.finish().unwrap().into_inner();
        assert!(refused(&zip).contains("250 MB"));
    }

    #[test]
    fn refuses_too_many_entries() {
        let names: Vec<String> = (0..=MAX_ZIP_ENTRIES).map(|i| format!("f{i}")).collect();
        let entries: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b""[..])).collect();
        assert!(refused(&zip_of(&entries)).contains("entries"));
    }

    /// One zip entry as the property test generates it.
    #[derive(Debug, Clone)]
    enum Entry {
        File(String),
        Dir(String),
        Symlink(String, String),
    }

    fn path_strategy() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let part = prop_oneof![
            Just("a".to_string()),
            Just("b".to_string()),
            Just("..".to_string()),
            Just(".".to_string()),
            Just("".to_string()),
            Just("/".to_string()),
            Just("c:".to_string()),
        ];
        proptest::collection::vec(part, 1..5).prop_map(|parts| parts.join("/"))
    }

    fn entry_strategy() -> impl proptest::strategy::Strategy<Value = Entry> {
        use proptest::prelude::*;
        prop_oneof![
            path_strategy().prop_map(Entry::File),
            path_strategy().prop_map(Entry::Dir),
            (path_strategy(), path_strategy()).prop_map(|(a, b)| Entry::Symlink(a, b)),
        ]
    }

    /// Every path under `dir`, with symlinks resolved, stays inside `dir`.
    fn all_inside(dir: &Path, root: &Path) -> bool {
        let Ok(entries) = fs::read_dir(dir) else {
            return true;
        };
        entries.flatten().all(|e| {
            let path = e.path();
            let meta = fs::symlink_metadata(&path).unwrap();
            if meta.file_type().is_symlink() {
                // A dangling link is harmless; a resolved one must land inside.
                return fs::canonicalize(&path).map_or(true, |real| real.starts_with(root));
            }
            !meta.is_dir() || all_inside(&path, root)
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]
        #[test]
        fn extraction_never_writes_outside_the_bundle(entries in proptest::collection::vec(entry_strategy(), 1..6)) {
            let outer = tempfile::tempdir().unwrap();
            let data = outer.path().join("data");
            let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
            for e in &entries {
                // The writer refuses some names itself; those entries are simply absent.
                let _ = match e {
                    Entry::File(p) => w.start_file(p.as_str(), SimpleFileOptions::default()).map(|()| { let _ = w.write_all(b"x"); }),
                    Entry::Dir(p) => w.add_directory(p.as_str(), SimpleFileOptions::default()),
                    Entry::Symlink(p, t) => w.add_symlink(p.as_str(), t.as_str(), SimpleFileOptions::default()),
                };
            }
            let zip = w.finish().unwrap().into_inner();
            let result = CodeStore::new(&data).install(&zip);
            // Nothing but the data dir appeared next to it.
            let names: Vec<_> = fs::read_dir(outer.path()).unwrap().flatten().map(|e| e.file_name()).collect();
            proptest::prop_assert_eq!(names, vec![std::ffi::OsString::from("data")]);
            match result {
                Ok(bundle) => {
                    let root = fs::canonicalize(&bundle.task_root).unwrap();
                    proptest::prop_assert!(all_inside(&root, &root));
                }
                Err(Error::InvalidBundle(_)) => {
                    let left: Vec<_> = fs::read_dir(data.join("code")).map(|d| d.flatten().collect()).unwrap_or_default();
                    proptest::prop_assert!(left.is_empty(), "left behind: {:?}", left);
                }
                Err(other) => proptest::prop_assert!(false, "unexpected error {other:?}"),
            }
        }
    }
}
