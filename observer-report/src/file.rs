//! Report files: atomic writes, reads that name file, line and column, and
//! the early check that an output can be written at exit.

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
};

/// A report that could not be written, and where.
#[derive(Debug, thiserror::Error)]
#[error("writing the report to {}: {source}", path.display())]
pub struct WriteError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Writes atomically: a reader (or a crash) never sees half a report.
pub fn write(path: &Path, report: &crate::Report) -> Result<(), WriteError> {
    // The model is plain data with string keys: serializing cannot fail.
    let mut json = serde_json::to_vec_pretty(report).expect("a report serializes");
    json.push(b'\n');
    write_atomically(path, &json).map_err(|source| WriteError {
        path: path.to_path_buf(),
        source,
    })
}

/// A temporary sibling, fsync'd, then renamed over `path`.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = temp_sibling(path);
    let result = (|| {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// A report file that could not be read: says which file and where.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ReportFileError(pub String);

/// Reads a report for `summarize`, `merge` or `diff`.
pub fn load(path: &Path) -> Result<crate::Report, ReportFileError> {
    let shown = path.display();
    let text = fs::read_to_string(path)
        .map_err(|e| ReportFileError(format!("{shown}: cannot read the report: {e}")))?;
    parse(&shown.to_string(), &text)
}

/// Parses report text; errors start with `NAME:LINE:COLUMN:`.
pub fn parse(name: &str, text: &str) -> Result<crate::Report, ReportFileError> {
    let at = |e: &serde_json::Error| {
        // serde_json appends " at line L column C"; the position leads here.
        let message = e.to_string();
        let message = message
            .rsplit_once(" at line ")
            .map_or(message.as_str(), |(m, _)| m)
            .to_string();
        format!("{name}:{}:{}: {message}", e.line(), e.column())
    };
    match serde_json::from_str::<crate::Report>(text) {
        Ok(report) => {
            if !crate::READABLE_SCHEMA_VERSIONS.contains(&report.schema_version) {
                return Err(unsupported_version(name, report.schema_version));
            }
            if report.observer.is_none() && report.nodes.is_empty() {
                return Err(ReportFileError(format!(
                    "{name}: neither `observer` (a node's report) nor `nodes` (a cluster report): not a registry-observer report"
                )));
            }
            Ok(report)
        }
        Err(e) => {
            // A newer version fails on its new shape; say so rather than
            // naming a field.
            let version = serde_json::from_str::<serde_json::Value>(text)
                .ok()
                .and_then(|v| v.get("schema_version")?.as_u64());
            match version {
                Some(v) if !crate::READABLE_SCHEMA_VERSIONS.contains(&(v as u32)) => {
                    Err(unsupported_version(name, v as u32))
                }
                _ => Err(ReportFileError(at(&e))),
            }
        }
    }
}

fn unsupported_version(name: &str, version: u32) -> ReportFileError {
    ReportFileError(format!(
        "{name}: schema_version {version} is not supported; this registry-observer reads versions {:?} (use a matching release)",
        crate::READABLE_SCHEMA_VERSIONS
    ))
}

fn temp_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "report".into());
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

/// An output file that could not be written at exit: the sentence names the
/// path and the flag that fixes it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NotWritable(pub String);

/// Fails early, before anything is attached, if the report could not be
/// written at the end: an observation whose report is lost is wasted.
pub fn check_writable(path: &Path) -> Result<(), NotWritable> {
    check_output_writable(path, "report", "--report", "registry-report.json")
}

/// [`check_writable`] for any file written at exit: `what` names it in the
/// message, `flag` and `example` say how to fix it.
pub fn check_output_writable(
    path: &Path,
    what: &str,
    flag: &str,
    example: &str,
) -> Result<(), NotWritable> {
    if path.is_dir() {
        return Err(NotWritable(format!(
            "the {what} path {} is a directory; give a file name, e.g. {flag} {}/{example}",
            path.display(),
            path.display()
        )));
    }
    let tmp = temp_sibling(path);
    match fs::File::create(&tmp) {
        Ok(_) => {
            let _ = fs::remove_file(&tmp);
            Ok(())
        }
        Err(e) => Err(NotWritable(format!(
            "cannot write the {what} to {} ({e}); choose a writable location with {flag} PATH",
            path.display()
        ))),
    }
}
