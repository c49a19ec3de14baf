//! Reading the inputs: files, directories (recursively) and stdin. The only
//! I/O of `lint` apart from writing the output.

use std::{
    io::Read,
    path::{Path, PathBuf},
};

/// What `-` reads, and how it is named in findings.
pub const STDIN_NAME: &str = "<stdin>";

/// File names a directory walk picks up; files named on the command line are
/// read whatever their name.
const MANIFEST_EXTENSIONS: [&str; 3] = ["yaml", "yml", "json"];

/// One input's text.
#[derive(Debug)]
pub struct Source {
    /// The path as the user will recognize it, or [`STDIN_NAME`].
    pub name: String,
    pub text: String,
}

/// An input, or a document in one, that could not be read or parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputProblem {
    pub file: String,
    pub document: Option<usize>,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

impl InputProblem {
    fn unreadable(file: String, message: String) -> Self {
        Self {
            file,
            document: None,
            line: None,
            column: None,
            message,
        }
    }
}

impl std::fmt::Display for InputProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        if let Some(document) = self.document {
            write!(f, ": document {document}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Reads every path: `-` is `stdin`, a directory is walked recursively for
/// `*.yaml`, `*.yml` and `*.json` (hidden entries skipped, sorted by name).
/// Whatever cannot be read becomes a problem; the rest is still returned.
pub fn read_inputs(paths: &[PathBuf], stdin: &mut dyn Read) -> (Vec<Source>, Vec<InputProblem>) {
    let mut sources = Vec::new();
    let mut problems = Vec::new();
    let mut stdin_read = false;
    for path in paths {
        if path.as_os_str() == "-" {
            // A second `-` would read an exhausted stream: nothing to add.
            if !stdin_read {
                stdin_read = true;
                match read_text(stdin, STDIN_NAME) {
                    Ok(text) => sources.push(Source {
                        name: STDIN_NAME.to_owned(),
                        text,
                    }),
                    Err(problem) => problems.push(problem),
                }
            }
            continue;
        }
        if path.is_dir() {
            read_directory(path, &mut sources, &mut problems);
        } else {
            read_file(path, &mut sources, &mut problems);
        }
    }
    (sources, problems)
}

fn read_directory(root: &Path, sources: &mut Vec<Source>, problems: &mut Vec<InputProblem>) {
    let walk = walkdir::WalkDir::new(root)
        .follow_links(true)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|entry| {
            entry.depth() == 0 || !entry.file_name().to_string_lossy().starts_with('.')
        });
    for entry in walk {
        match entry {
            Ok(entry) => {
                let is_manifest = entry.file_type().is_file()
                    && entry
                        .path()
                        .extension()
                        .is_some_and(|e| MANIFEST_EXTENSIONS.iter().any(|m| e == *m));
                if is_manifest {
                    read_file(entry.path(), sources, problems);
                }
            }
            Err(error) => {
                let file = error.path().unwrap_or(root).display().to_string();
                problems.push(InputProblem::unreadable(
                    file,
                    format!("cannot read: {}", error_text(&error)),
                ));
            }
        }
    }
}

fn error_text(error: &walkdir::Error) -> String {
    match error.io_error() {
        Some(io) => io.to_string(),
        // walkdir's own errors (symbolic link loops) say it in full.
        None => error.to_string(),
    }
}

fn read_file(path: &Path, sources: &mut Vec<Source>, problems: &mut Vec<InputProblem>) {
    let name = path.display().to_string();
    let result = std::fs::File::open(path)
        .map_err(|e| InputProblem::unreadable(name.clone(), format!("cannot read: {e}")))
        .and_then(|mut file| read_text(&mut file, &name));
    match result {
        Ok(text) => sources.push(Source { name, text }),
        Err(problem) => problems.push(problem),
    }
}

fn read_text(reader: &mut dyn Read, name: &str) -> Result<String, InputProblem> {
    let mut bytes = Vec::new();
    reader
        .read_to_end(&mut bytes)
        .map_err(|e| InputProblem::unreadable(name.to_owned(), format!("cannot read: {e}")))?;
    String::from_utf8(bytes).map_err(|e| {
        InputProblem::unreadable(
            name.to_owned(),
            format!(
                "not UTF-8 text (invalid byte at offset {}); Kubernetes manifests are UTF-8",
                e.utf8_error().valid_up_to()
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    #[test]
    fn walks_directories_and_reports_what_it_cannot_read() {
        let dir = std::env::temp_dir().join(format!("lint-input-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("sub/.git")).unwrap();
        fs::write(dir.join("b.yaml"), "kind: Pod\n").unwrap();
        fs::write(dir.join("a.json"), "{}").unwrap();
        fs::write(dir.join("notes.txt"), "not a manifest").unwrap();
        fs::write(dir.join("sub/c.yml"), "kind: Job\n").unwrap();
        fs::write(dir.join("sub/.git/d.yaml"), "hidden").unwrap();
        fs::write(dir.join("latin1.yaml"), b"name: caf\xe9\n").unwrap();
        let paths = [
            dir.clone(),
            PathBuf::from("-"),
            dir.join("missing.yaml"),
            dir.join("notes.txt"),
        ];
        let (sources, problems) = read_inputs(&paths, &mut "kind: List\n".as_bytes());
        let names: Vec<String> = sources
            .iter()
            .map(|s| {
                s.name
                    .trim_start_matches(&*dir.display().to_string())
                    .to_owned()
            })
            .collect();
        assert_eq!(
            names,
            ["/a.json", "/b.yaml", "/sub/c.yml", STDIN_NAME, "/notes.txt"]
        );
        assert_eq!(sources[3].text, "kind: List\n");
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].file.ends_with("latin1.yaml"));
        assert!(
            problems[0]
                .message
                .contains("not UTF-8 text (invalid byte at offset 9)")
        );
        assert!(
            problems[1]
                .to_string()
                .ends_with("missing.yaml: cannot read: No such file or directory (os error 2)")
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
