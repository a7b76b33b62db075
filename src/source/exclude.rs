//! Which paths a backup leaves out: globs (restic's rules: a pattern without `/` matches a
//! name anywhere, one with `/` matches the whole path, `**` crosses directories), directories
//! holding a marker file, and cache directories tagged per the Cache Directory Tagging spec.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::error::{Error, Result};

/// The first bytes of a valid CACHEDIR.TAG (https://bford.info/cachedir/).
const CACHEDIR_SIGNATURE: &[u8] = b"Signature: 8a477f597d28d172789f06886806bc55";

#[derive(Debug, Clone, Default)]
pub struct ExcludeOptions {
    pub patterns: Vec<String>,
    pub if_present: Vec<String>,
    pub caches: bool,
}

/// The patterns of an exclude file: one per line, blank lines and `#` comments skipped.
pub fn patterns_from_file(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect())
}

pub struct Excluder {
    names: GlobSet,
    paths: GlobSet,
    if_present: Vec<String>,
    caches: bool,
}

fn build(patterns: &[String]) -> Result<GlobSet> {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        let g = GlobBuilder::new(p)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .map_err(|e| Error::invalid(format!("exclude pattern {p:?}: {e}")))?;
        b.add(g);
    }
    b.build().map_err(|e| Error::invalid(e.to_string()))
}

impl Excluder {
    pub fn new(opts: &ExcludeOptions) -> Result<Excluder> {
        let mut names = Vec::new();
        let mut paths = Vec::new();
        for p in &opts.patterns {
            let p = p.trim_end_matches('/');
            if p.is_empty() {
                continue;
            }
            if p.contains('/') {
                // A relative pattern with a slash may match anywhere below the backup root.
                if p.starts_with('/') || p.starts_with("**") {
                    paths.push(p.to_string());
                } else {
                    paths.push(format!("**/{p}"));
                }
                paths.push(format!("{p}/**").replace("//", "/"));
            } else {
                names.push(p.to_string());
            }
        }
        Ok(Excluder {
            names: build(&names)?,
            paths: build(&paths)?,
            if_present: opts.if_present.clone(),
            caches: opts.caches,
        })
    }

    /// Whether `path` (absolute) with file name `name` is excluded by a pattern.
    pub fn excluded(&self, path: &Path, name: &[u8]) -> bool {
        let name = Path::new(std::ffi::OsStr::from_bytes(name));
        self.names.is_match(name) || self.paths.is_match(path)
    }

    /// Whether the directory at `path` is to be left out because of its contents.
    pub fn dir_excluded(&self, path: &Path) -> bool {
        if self
            .if_present
            .iter()
            .any(|m| path.join(m).symlink_metadata().is_ok())
        {
            return true;
        }
        if self.caches {
            let tag = path.join("CACHEDIR.TAG");
            if let Ok(mut f) = std::fs::File::open(tag) {
                use std::io::Read;
                let mut buf = [0u8; CACHEDIR_SIGNATURE.len()];
                if f.read_exact(&mut buf).is_ok() && buf == CACHEDIR_SIGNATURE {
                    return true;
                }
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restic_like_patterns() {
        let e = Excluder::new(&ExcludeOptions {
            patterns: vec!["*.log".into(), "/srv/app/tmp".into(), "cache/*.bin".into()],
            ..Default::default()
        })
        .unwrap();
        assert!(e.excluded(Path::new("/srv/app/a.log"), b"a.log"));
        assert!(!e.excluded(Path::new("/srv/app/a.logx"), b"a.logx"));
        assert!(e.excluded(Path::new("/srv/app/tmp"), b"tmp"));
        assert!(!e.excluded(Path::new("/srv/other/tmp"), b"tmp"));
        assert!(e.excluded(Path::new("/x/cache/y.bin"), b"y.bin"));
        assert!(!e.excluded(Path::new("/x/cache/sub/y.bin"), b"y.bin"));
        assert!(
            Excluder::new(&ExcludeOptions {
                patterns: vec!["[".into()],
                ..Default::default()
            })
            .is_err()
        );
    }

    #[test]
    fn cache_tags_and_markers() {
        let d = tempfile::tempdir().unwrap();
        let e = Excluder::new(&ExcludeOptions {
            if_present: vec![".nobackup".into()],
            caches: true,
            ..Default::default()
        })
        .unwrap();
        assert!(!e.dir_excluded(d.path()));
        std::fs::write(d.path().join("CACHEDIR.TAG"), b"not a tag").unwrap();
        assert!(!e.dir_excluded(d.path()));
        std::fs::write(
            d.path().join("CACHEDIR.TAG"),
            [CACHEDIR_SIGNATURE, b"\n"].concat(),
        )
        .unwrap();
        assert!(e.dir_excluded(d.path()));
        let d2 = tempfile::tempdir().unwrap();
        std::fs::write(d2.path().join(".nobackup"), b"").unwrap();
        assert!(e.dir_excluded(d2.path()));
    }
}
