//! The agent's layering, checked on its own source: every top-level module
//! may import the modules declared before it in [`ORDER`], never one after,
//! so data flows one way and there is no import cycle between top-level
//! modules (a cycle would need one edge pointing back up the order).
//!
//! Read from the source text rather than from the compiler: `crate::` paths
//! in `use` trees and in code, after comments are removed. Unit tests count
//! too: a test that needs a later stage belongs to that stage.

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
};

/// The top-level modules in import order (lib.rs says what each holds).
const ORDER: [&str; 11] = [
    "clock",
    "textfile",
    "bpf",
    "sources",
    "pipeline",
    "correlate",
    "outputs",
    "control",
    "setup",
    "run",
    "cli",
];

/// Items of the crate root, and who may use them.
const ROOT_ITEMS: [(&str, &str); 1] = [("UsageError", "setup")];

/// One `crate::` import that breaks the order.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Violation {
    file: String,
    importer: String,
    imported: String,
}

fn source_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("reading the source dir") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// The top-level module a file belongs to (`pipeline/record.rs` ->
/// `pipeline`); None for the crate root's own files and this checker
/// (whose tests spell out paths on purpose).
fn top_module(relative: &Path) -> Option<String> {
    let first = relative.components().next()?.as_os_str().to_str()?;
    match first {
        "lib.rs" | "main.rs" | "layering.rs" => None,
        file => Some(file.trim_end_matches(".rs").to_string()),
    }
}

/// The text without `//` comments (doc comments name later modules on
/// purpose). String literals holding `//` are rare enough here to accept
/// losing the rest of their line.
fn without_comments(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level names each `crate::` path in `text` starts with: the
/// identifier after `crate::`, or every first segment of a `crate::{..}`
/// use tree.
fn crate_imports(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (at, _) in text.match_indices("crate::") {
        let rest = &text[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            names.extend(group_heads(group));
        } else {
            names.extend(identifier(rest));
        }
    }
    names
}

/// The first segment of each item of a use-tree group (`a::{..}, b, c::d`),
/// up to the group's closing brace.
fn group_heads(group: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0usize;
    let mut expecting_head = true;
    let mut chars = group.char_indices().peekable();
    while let Some((at, ch)) = chars.next() {
        match ch {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => expecting_head = true,
            c if expecting_head && depth == 0 && (c.is_alphabetic() || c == '_') => {
                if let Some(name) = identifier(&group[at..]) {
                    for _ in 1..name.len() {
                        chars.next();
                    }
                    heads.push(name);
                }
                expecting_head = false;
            }
            _ => {}
        }
    }
    heads
}

fn identifier(text: &str) -> Option<String> {
    let name: String = text
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    (!name.is_empty()).then_some(name)
}

/// Where `name` sits in the order: a module's position, or for a root item
/// the position of the first module allowed to use it.
fn position(name: &str) -> Option<usize> {
    let module = ROOT_ITEMS
        .iter()
        .find(|(item, _)| *item == name)
        .map_or(name, |(_, first_user)| first_user);
    ORDER.iter().position(|m| *m == module)
}

fn violations(files: &[(String, String)]) -> Result<Vec<Violation>, String> {
    let mut found = Vec::new();
    for (relative, text) in files {
        let Some(importer) = top_module(Path::new(relative)) else {
            continue;
        };
        let own = position(&importer).ok_or_else(|| {
            format!("{relative}: module `{importer}` is not in layering::ORDER; place it there")
        })?;
        for imported in crate_imports(&without_comments(text)) {
            if imported == importer || imported == "self" {
                continue;
            }
            let theirs = position(&imported).ok_or_else(|| {
                format!(
                    "{relative}: imports crate::{imported}, which layering::ORDER does not place"
                )
            })?;
            if theirs > own {
                found.push(Violation {
                    file: relative.clone(),
                    importer: importer.clone(),
                    imported,
                });
            }
        }
    }
    found.sort();
    Ok(found)
}

fn agent_sources() -> Vec<(String, String)> {
    let dir = source_dir();
    let mut paths = Vec::new();
    rust_files(&dir, &mut paths);
    paths
        .into_iter()
        .map(|path| {
            let relative = path.strip_prefix(&dir).unwrap().display().to_string();
            let text = fs::read_to_string(&path).expect("reading a source file");
            (relative, text)
        })
        .collect()
}

#[test]
fn no_module_imports_a_later_stage() {
    let found = violations(&agent_sources()).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        found.is_empty(),
        "imports against the order {ORDER:?} (move the shared type down, or pass it in):\n{}",
        found
            .iter()
            .map(|v| format!("  {}: {} imports {}", v.file, v.importer, v.imported))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn every_top_level_module_has_a_place_in_the_order() {
    let lib = fs::read_to_string(source_dir().join("lib.rs")).unwrap();
    let declared: BTreeSet<&str> = lib
        .lines()
        .filter_map(|line| line.trim().strip_prefix("pub mod "))
        .map(|rest| rest.trim_end_matches(';'))
        .collect();
    let ordered: BTreeSet<&str> = ORDER.into_iter().collect();
    assert_eq!(declared, ordered);
}

/// The checker itself: it must see grouped, nested and inline paths, and
/// ignore comments.
#[test]
fn the_checker_finds_imports_in_every_form() {
    let text = "use crate::{\n    pipeline::{record::Recorder, verdict},\n    clock,\n};\n\
                // crate::run in a comment\n\
                fn f() { crate::outputs::console::line(); }\n\
                use crate::UsageError;";
    let found = crate_imports(&without_comments(text));
    assert_eq!(
        found,
        ["UsageError", "clock", "outputs", "pipeline"]
            .map(String::from)
            .into()
    );
    let files = vec![("bpf/read.rs".to_string(), text.to_string())];
    let against: Vec<String> = violations(&files)
        .unwrap()
        .into_iter()
        .map(|v| v.imported)
        .collect();
    assert_eq!(against, ["UsageError", "outputs", "pipeline"]);
    let unplaced = vec![("newstage/mod.rs".to_string(), String::new())];
    assert!(
        violations(&unplaced)
            .unwrap_err()
            .contains("not in layering::ORDER")
    );
}
