//! The architecture as a test (STYLE.md): which library module may `use` which. Data flows
//! `ops -> repo -> format -> {crypto, compress, chunker}`; `backend` knows no cairn types;
//! `source` reads the system and builds tree nodes; `config` describes operations (and is
//! not used by them); nothing in the library uses the CLI.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

/// Modules each top-level module may use (besides itself, `error` and `id`).
const ALLOWED: &[(&str, &[&str])] = &[
    ("crypto", &[]),
    ("compress", &[]),
    ("chunker", &[]),
    ("clock", &["format"]),
    ("format", &["crypto", "compress", "chunker"]),
    ("backend", &[]),
    ("source", &["format"]),
    (
        "repo",
        &[
            "backend", "format", "crypto", "compress", "chunker", "clock",
        ],
    ),
    (
        "ops",
        &[
            "repo", "backend", "format", "crypto", "compress", "chunker", "clock", "source",
        ],
    ),
    // The configuration file describes what the operations do (a retention policy is
    // `forget`'s); the operations know nothing of the file.
    ("config", &["ops"]),
    // A job runs operations as its configuration says.
    (
        "job",
        &[
            "config", "ops", "repo", "backend", "format", "crypto", "source",
        ],
    ),
];

fn module_of(path: &Path, src: &Path) -> Option<String> {
    let rel = path.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    Some(first.trim_end_matches(".rs").to_string())
}

fn uses(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            out.insert(name);
        }
        // `use crate::{a, b::c}` groups.
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for part in group[..end].split(',') {
                let n: String = part
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !n.is_empty() {
                    out.insert(n);
                }
            }
        }
    }
    out
}

fn walk(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            walk(&p, files);
        } else if p.extension().is_some_and(|x| x == "rs") {
            files.push(p);
        }
    }
}

#[test]
fn modules_only_use_what_the_architecture_allows() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    let mut violations = Vec::new();
    let mut checked = 0;
    for f in &files {
        let Some(module) = module_of(f, &src) else {
            continue;
        };
        if module == "cli"
            || module == "main"
            || module == "lib"
            || module == "error"
            || module == "id"
        {
            continue;
        }
        let Some((_, allowed)) = ALLOWED.iter().find(|(m, _)| *m == module) else {
            violations.push(format!(
                "{}: module `{module}` is not in the layering table",
                f.display()
            ));
            continue;
        };
        checked += 1;
        let text = fs::read_to_string(f).unwrap();
        for used in uses(&text) {
            if used == module || used == "error" || used == "id" || allowed.contains(&used.as_str())
            {
                continue;
            }
            violations.push(format!("{}: `{module}` uses `crate::{used}`", f.display()));
        }
    }
    assert!(checked > 20, "only {checked} files checked");
    assert!(
        violations.is_empty(),
        "layering violations:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_library_never_uses_the_cli() {
    let lib = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    assert!(
        !lib.contains("mod cli"),
        "src/lib.rs must not declare the cli module"
    );
    assert!(uses("use crate::{a, b::c};\nuse crate::d::e;").len() == 3);
}
