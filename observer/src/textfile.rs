//! Reading TOML and YAML files into serde types, with errors a person can
//! act on: the file, the line and column, the field path
//! (`policy.allow[2].expires`) and what is wrong.
//!
//! Validation happens inside deserialization (types such as `Pattern` and
//! `policy::Date` check themselves in their `Deserialize` impls), so both
//! formats attach the position of the offending value to the error.

use std::{
    fmt,
    path::{Path, PathBuf},
};

use serde::de::DeserializeOwned;

/// The two formats a config file may be written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Toml,
    Yaml,
}

impl Format {
    /// By extension: `.toml`, or `.yaml`/`.yml`.
    pub fn of(path: &Path) -> Option<Format> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "toml" => Some(Format::Toml),
            "yaml" | "yml" => Some(Format::Yaml),
            _ => None,
        }
    }
}

/// A problem in a file, at a place when the parser knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileError {
    pub file: PathBuf,
    /// 1-based; None when the problem concerns the whole file.
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// The field path, when the problem is in a value (`policy.allow[2]`).
    pub field: Option<String>,
    pub problem: String,
}

impl fmt::Display for FileError {
    /// `FILE:LINE:COL: field `a.b[1]`: problem`, the shape editors and
    /// compilers use, so terminals and CI logs make it clickable.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        f.write_str(": ")?;
        if let Some(field) = &self.field {
            write!(f, "field `{field}`: ")?;
        }
        f.write_str(&self.problem)
    }
}

impl FileError {
    /// A problem with the file as a whole (cannot be read, wrong extension).
    pub fn whole(file: impl Into<PathBuf>, problem: impl Into<String>) -> FileError {
        FileError {
            file: file.into(),
            line: None,
            column: None,
            field: None,
            problem: problem.into(),
        }
    }

    /// A problem at a byte offset of `text`.
    pub fn at_offset(
        file: impl Into<PathBuf>,
        text: &str,
        offset: usize,
        problem: impl Into<String>,
    ) -> FileError {
        let (line, column) = line_column(text, offset);
        FileError {
            file: file.into(),
            line: Some(line),
            column: Some(column),
            field: None,
            problem: problem.into(),
        }
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// serde_path_to_error prints `.` for the document root: no field then.
fn field_of(path: &serde_path_to_error::Path) -> Option<String> {
    let text = path.to_string();
    (text != ".").then_some(text)
}

/// Parses `text` (the contents of `file`) as `format` into `T`.
pub fn parse<T: DeserializeOwned>(
    file: impl Into<PathBuf>,
    text: &str,
    format: Format,
) -> Result<T, FileError> {
    let file = file.into();
    match format {
        Format::Toml => parse_toml(file, text),
        Format::Yaml => parse_yaml(file, text),
    }
}

pub fn parse_toml<T: DeserializeOwned>(file: PathBuf, text: &str) -> Result<T, FileError> {
    let deserializer =
        toml::Deserializer::parse(text).map_err(|e| toml_error(&file, text, &e, None))?;
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let field = field_of(e.path());
        toml_error(&file, text, e.inner(), field)
    })
}

fn toml_error(
    file: &Path,
    text: &str,
    error: &toml::de::Error,
    field: Option<String>,
) -> FileError {
    let problem = error.message().trim_end().to_string();
    let mut out = match error.span() {
        Some(span) => FileError::at_offset(file, text, span.start, problem),
        None => FileError::whole(file, problem),
    };
    out.field = field;
    out
}

pub fn parse_yaml<T: DeserializeOwned>(file: PathBuf, text: &str) -> Result<T, FileError> {
    // An empty or comments-only file is an empty mapping: every default.
    let is_empty = text
        .lines()
        .all(|line| line.trim().is_empty() || line.trim_start().starts_with('#'));
    let empty_mapping = "{}";
    let source = if is_empty { empty_mapping } else { text };
    let deserializer = serde_yaml_ng::Deserializer::from_str(source);
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let field = field_of(e.path());
        let inner = e.inner();
        // serde_yaml_ng renders "PATH: MESSAGE at line L column C"; the path
        // and the place are reported separately here.
        let mut problem = inner.to_string();
        if let Some(location) = inner.location() {
            let suffix = format!(" at line {} column {}", location.line(), location.column());
            if let Some(stripped) = problem.strip_suffix(&suffix) {
                problem = stripped.to_string();
            }
        }
        // Its path is where it attached the position: the field or a parent.
        if let Some(field) = &field
            && let Some((head, rest)) = problem.split_once(": ")
            && field.starts_with(head)
        {
            problem = rest.to_string();
        }
        let mut place = inner.location().map(|l| (l.line(), l.column()));
        if let (Some((line, column)), Some(field)) = (place, &field) {
            place = Some(yaml_key_position(text, line, column, field));
        }
        FileError {
            file: file.clone(),
            line: place.map(|(line, _)| line),
            column: place.map(|(_, column)| column),
            field,
            problem,
        }
    })
}

/// serde_yaml_ng places errors raised by a value's own validation at the
/// mapping that holds the value. Point at the value's key instead: the
/// first line at or after the mapping, indented at least as deep, that
/// starts with `KEY:` (block style, which is what config files use). Falls
/// back to the mapping's position.
fn yaml_key_position(text: &str, line: usize, column: usize, field: &str) -> (usize, usize) {
    let last = field.rsplit('.').next().unwrap_or(field);
    if let Some(index) = last
        .strip_suffix(']')
        .and_then(|l| l.rsplit_once('['))
        .and_then(|(_, index)| index.parse().ok())
    {
        return yaml_item_position(text, line, column, index);
    }
    let key = last;
    for (index, candidate) in text.lines().enumerate().skip(line - 1) {
        let indent = candidate.len() - candidate.trim_start().len();
        let body = candidate.trim_start().trim_start_matches("- ");
        let key_column = candidate.len() - body.len() + 1;
        if index + 1 > line && indent + 1 < column {
            break; // left the mapping
        }
        if body.starts_with(&format!("{key}:")) && key_column >= column {
            return (index + 1, key_column);
        }
    }
    (line, column)
}

/// An element's own validation fails at the sequence that holds it
/// (`policy.allow[2]`): point at the element's `- ` instead, counting block
/// items at the sequence's indentation. Falls back to the sequence.
fn yaml_item_position(text: &str, line: usize, column: usize, index: usize) -> (usize, usize) {
    let mut seen = 0;
    for (number, candidate) in text.lines().enumerate().skip(line - 1) {
        let body = candidate.trim_start();
        if body.is_empty() || body.starts_with('#') {
            continue;
        }
        let item_column = candidate.len() - body.len() + 1;
        if item_column < column || (item_column == column && !body.starts_with('-')) {
            break; // left the sequence
        }
        if item_column == column {
            if seen == index {
                return (number + 1, item_column);
            }
            seen += 1;
        }
    }
    (line, column)
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        #[serde(default)]
        items: Vec<Item>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Item {
        name: String,
        #[serde(default, deserialize_with = "small")]
        size: u8,
    }

    fn small<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
        let n = u8::deserialize(d)?;
        if n > 9 {
            return Err(serde::de::Error::custom(format!(
                "{n} is too big; use 0 to 9"
            )));
        }
        Ok(n)
    }

    #[test]
    fn line_and_column_count_characters() {
        let text = "ab\ncdé\nfg";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 3), (2, 1));
        assert_eq!(line_column(text, 7), (2, 4));
        assert_eq!(line_column(text, 8), (3, 1));
        assert_eq!(line_column(text, 999), (3, 3));
    }

    #[test]
    fn toml_errors_name_line_column_and_field() {
        let text = "[[items]]\nname = \"a\"\n\n[[items]]\nname = \"b\"\nsize = 12\n";
        let err = parse::<Doc>("c.toml", text, Format::Toml).unwrap_err();
        assert_eq!(err.line, Some(6), "{err}");
        assert_eq!(err.field.as_deref(), Some("items[1].size"), "{err}");
        assert_eq!(
            err.to_string(),
            "c.toml:6:8: field `items[1].size`: 12 is too big; use 0 to 9"
        );
        let err = parse::<Doc>("c.toml", "[[items]]\nnmae = 1\n", Format::Toml).unwrap_err();
        assert_eq!(err.line, Some(2), "{err}");
        assert!(err.problem.contains("unknown field `nmae`"), "{err}");
        let err = parse::<Doc>("c.toml", "items = [\n", Format::Toml).unwrap_err();
        assert!(err.line.is_some(), "{err}");
        assert_eq!(err.field, None);
    }

    #[test]
    fn yaml_errors_name_line_column_and_field() {
        let text = "items:\n  - name: a\n  - name: b\n    size: 12\n";
        let err = parse::<Doc>("c.yaml", text, Format::Yaml).unwrap_err();
        assert_eq!(err.line, Some(4), "{err}");
        assert_eq!(err.column, Some(5), "{err}");
        assert_eq!(err.field.as_deref(), Some("items[1].size"), "{err}");
        assert_eq!(err.problem, "12 is too big; use 0 to 9");
        // The key is looked for inside the failing mapping only.
        let text = "items:\n  - name: a\n    size: 1\n  - name: b\n    size: 12\n";
        let err = parse::<Doc>("c.yaml", text, Format::Yaml).unwrap_err();
        assert_eq!((err.line, err.column), (Some(5), Some(5)), "{err}");
        let err = parse::<Doc>("c.yaml", "items:\n  - nmae: a\n", Format::Yaml).unwrap_err();
        assert_eq!(err.line, Some(2), "{err}");
        assert!(err.problem.contains("unknown field `nmae`"), "{err}");
        let err = parse::<Doc>("c.yaml", "items: [\n", Format::Yaml).unwrap_err();
        assert!(err.line.is_some(), "{err}");
    }

    /// Validation of a whole element (serde's `try_from`) points at the
    /// element, not at the sequence that holds it.
    #[test]
    fn yaml_element_errors_point_at_the_element() {
        #[derive(Debug, Deserialize)]
        #[serde(try_from = "Item")]
        struct Named(#[expect(dead_code, reason = "only the error matters")] Item);
        impl TryFrom<Item> for Named {
            type Error = String;
            fn try_from(item: Item) -> Result<Named, String> {
                if item.name.is_empty() {
                    return Err("empty name; give one".into());
                }
                Ok(Named(item))
            }
        }
        #[derive(Debug, Deserialize)]
        struct NamedItems {
            #[expect(dead_code, reason = "only the error matters")]
            items: Vec<Named>,
        }
        let text = "items:\n  - name: a\n    size: 1\n  # a comment\n\n  - name: \"\"\n";
        let err = parse::<NamedItems>("c.yaml", text, Format::Yaml).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("items[1]"), "{err}");
        assert_eq!((err.line, err.column), (Some(6), Some(3)), "{err}");
        assert_eq!(err.problem, "empty name; give one");
    }

    #[test]
    fn empty_yaml_is_all_defaults() {
        let doc: Doc = parse("c.yaml", "# nothing yet\n\n", Format::Yaml).unwrap();
        assert_eq!(doc, Doc { items: vec![] });
        let doc: Doc = parse("c.toml", "", Format::Toml).unwrap();
        assert_eq!(doc, Doc { items: vec![] });
    }

    #[test]
    fn format_by_extension() {
        assert_eq!(Format::of("a/b.TOML".as_ref()), Some(Format::Toml));
        assert_eq!(Format::of("b.yml".as_ref()), Some(Format::Yaml));
        assert_eq!(Format::of("b.yaml".as_ref()), Some(Format::Yaml));
        assert_eq!(Format::of("b.json".as_ref()), None);
        assert_eq!(Format::of("b".as_ref()), None);
    }
}
