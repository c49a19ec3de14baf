//! Multi-document YAML (and JSON, a subset of YAML 1.2) to
//! `serde_json::Value`, keeping the source line of every node.
//!
//! Documents are split the way kubectl splits them (`YAMLReader` in
//! k8s.io/apimachinery/pkg/util/yaml): at lines that are `---` followed only
//! by white space. Each piece is then parsed on its own with saphyr-parser, so
//! a broken document is reported with its line and the others are still
//! read. Pure: text in, documents out.

use std::{collections::HashMap, sync::Arc};

use saphyr::Scalar;
use saphyr_parser::{Event, Parser, ScanError, Span};
use serde_json::{Map, Number, Value};

use super::finding::{JsonPath, Segment};

/// Aliases can make a small text expand exponentially ("billion laughs"):
/// more nodes than this copied through aliases in one document is refused.
/// Nodes written out in the text are bounded by its size.
const MAX_ALIASED_NODES: usize = 1_000_000;

/// One parsed document.
#[derive(Debug)]
pub struct Document {
    /// 1-based position among the file's non-empty documents.
    pub index: usize,
    /// The line (1-based) where the document's content starts.
    pub line: usize,
    pub value: Value,
    lines: LineTree,
}

impl Document {
    /// The source line of the node at `path`, or of its deepest ancestor
    /// that exists. For a mapping entry it is the line of the key.
    pub fn line_of(&self, path: &JsonPath) -> usize {
        let mut node = &self.lines;
        let mut line = node.line();
        for segment in &path.0 {
            let next = match (segment, node) {
                (Segment::Key(key), LineTree::Map(_, entries)) => entries
                    .iter()
                    .find(|(k, _, _)| **k == **key)
                    .map(|(_, key_line, child)| (*key_line, child)),
                (Segment::Index(i), LineTree::Seq(_, items)) => {
                    items.get(*i).map(|child| (child.line(), child))
                }
                _ => None,
            };
            let Some((next_line, child)) = next else {
                break;
            };
            line = next_line;
            node = child;
        }
        line
    }
}

/// A document that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentError {
    /// 1-based position among the file's non-empty documents.
    pub index: usize,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Source lines, shaped like the value they describe.
#[derive(Debug, Clone)]
enum LineTree {
    Leaf(usize),
    Seq(usize, Vec<LineTree>),
    /// (key, line of the key, the value's lines), in source order. Keys
    /// are shared with every other use of the same key in the document:
    /// a large `kubectl get pods` list repeats a few dozen keys millions of
    /// times.
    Map(usize, Vec<(Arc<str>, usize, LineTree)>),
}

impl LineTree {
    fn line(&self) -> usize {
        match self {
            LineTree::Leaf(line) | LineTree::Seq(line, _) | LineTree::Map(line, _) => *line,
        }
    }
}

/// A piece of the input between kubectl's document separators.
struct Piece<'a> {
    /// 1-based line number of the piece's first line.
    first_line: usize,
    text: &'a str,
}

fn split_pieces(text: &str) -> Vec<Piece<'_>> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut first_line = 1;
    let mut offset = 0;
    for (line_number, line) in (1..).zip(text.split_inclusive('\n')) {
        let is_separator = line
            .strip_prefix("---")
            .is_some_and(|rest| rest.trim().is_empty());
        if is_separator {
            pieces.push(Piece {
                first_line,
                text: &text[start..offset],
            });
            start = offset + line.len();
            first_line = line_number + 1;
        }
        offset += line.len();
    }
    pieces.push(Piece {
        first_line,
        text: &text[start..],
    });
    pieces
}

/// Parses every document in `text`. A broken document yields an error and
/// parsing goes on with the next one.
pub fn parse_documents(text: &str) -> Vec<Result<Document, DocumentError>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut results = Vec::new();
    let mut index = 0;
    for piece in split_pieces(text) {
        parse_piece(&piece, &mut index, &mut results);
    }
    results
}

fn parse_piece(
    piece: &Piece<'_>,
    index: &mut usize,
    results: &mut Vec<Result<Document, DocumentError>>,
) {
    let prepared = prepare_flow_root(piece.text);
    let text = prepared
        .as_ref()
        .map_or(piece.text, |(text, _)| text.as_str());
    // The line whose columns the marker shifted, as a source line.
    let marked_line = prepared
        .as_ref()
        .map(|(_, line)| piece.first_line + line - 1);
    let mut builder = Builder::new(piece.first_line);
    let mut parser = Parser::new_from_str(text);
    while let Some(event) = parser.next_event() {
        let outcome = event
            .map_err(|e| scan_error(&e, piece.first_line))
            .and_then(|(event, span)| builder.event(event, span));
        match outcome {
            Ok(Some(document)) => {
                if document.1.is_null() {
                    continue;
                }
                *index += 1;
                results.push(Ok(Document {
                    index: *index,
                    line: document.0,
                    value: document.1,
                    lines: document.2,
                }));
            }
            Ok(None) => {}
            Err((line, mut column, message)) => {
                if Some(line) == marked_line && column > FLOW_MARK.len() {
                    column -= FLOW_MARK.len();
                }
                *index += 1;
                results.push(Err(DocumentError {
                    index: *index,
                    line,
                    column,
                    message,
                }));
                return;
            }
        }
    }
}

/// Written before a root that starts with `{` or `[` (JSON, or flow-style
/// YAML). Such a root could be the key of a block mapping (`{a: 1}: b`), so
/// the scanner would hold every token of the document until its end (1.2 GB
/// of tokens for a 120 MB `kubectl get pods -A -o json`); after a document
/// marker no key can start, and tokens flow.
const FLOW_MARK: &str = "--- ";

/// For a piece whose content starts with `{` or `[`: the text to parse,
/// with [`FLOW_MARK`] before that bracket and tabs made spaces (JSON
/// forbids raw tabs inside strings, so there they are white space, which
/// YAML does not allow for indentation), and the 1-based line of the
/// bracket within the piece. Lines stay where they were.
fn prepare_flow_root(text: &str) -> Option<(String, usize)> {
    let start = text.len() - text.trim_start().len();
    if !text[start..].starts_with(['{', '[']) {
        return None;
    }
    let line = 1 + text[..start].matches('\n').count();
    let mut prepared = String::with_capacity(text.len() + FLOW_MARK.len());
    prepared.push_str(&text[..start]);
    prepared.push_str(FLOW_MARK);
    prepared.push_str(&text[start..]);
    if prepared.contains('\t') {
        prepared = prepared.replace('\t', " ");
    }
    Some((prepared, line))
}

type Located = (usize, usize, String);

fn scan_error(error: &ScanError, first_line: usize) -> Located {
    let marker = error.marker();
    (
        first_line + marker.line().saturating_sub(1),
        marker.col() + 1,
        error.info().to_owned(),
    )
}

enum Frame {
    Seq {
        line: usize,
        anchor: usize,
        items: Vec<Value>,
        lines: Vec<LineTree>,
    },
    Map {
        line: usize,
        anchor: usize,
        entries: Map<String, Value>,
        lines: Vec<(Arc<str>, usize, LineTree)>,
        /// The key read, waiting for its value: (key, its line).
        key: Option<(String, usize)>,
    },
}

/// Builds values from parser events, one document at a time.
struct Builder {
    first_line: usize,
    stack: Vec<Frame>,
    /// Anchored values with their size in nodes.
    anchors: HashMap<usize, (Value, LineTree, usize)>,
    keys: HashMap<String, Arc<str>>,
    aliased_nodes: usize,
    root: Option<(Value, LineTree)>,
}

impl Builder {
    fn new(first_line: usize) -> Self {
        Self {
            first_line,
            stack: Vec::new(),
            anchors: HashMap::new(),
            keys: HashMap::new(),
            aliased_nodes: 0,
            root: None,
        }
    }

    fn line(&self, span: &Span) -> usize {
        self.first_line + span.start.line().saturating_sub(1)
    }

    /// Feeds one event; returns a finished document (start line, value,
    /// lines) at its end.
    fn event(
        &mut self,
        event: Event<'_>,
        span: Span,
    ) -> Result<Option<(usize, Value, LineTree)>, Located> {
        let line = self.line(&span);
        let column = span.start.col() + 1;
        match event {
            Event::DocumentStart(_) => {
                self.anchors.clear();
                self.aliased_nodes = 0;
                self.root = None;
            }
            Event::DocumentEnd => {
                return Ok(self
                    .root
                    .take()
                    .map(|(value, lines)| (lines.line(), value, lines)));
            }
            Event::SequenceStart(anchor, _) => self.stack.push(Frame::Seq {
                line,
                anchor,
                items: Vec::new(),
                lines: Vec::new(),
            }),
            Event::MappingStart(anchor, _) => self.stack.push(Frame::Map {
                line,
                anchor,
                entries: Map::new(),
                lines: Vec::new(),
                key: None,
            }),
            Event::SequenceEnd => match self.stack.pop() {
                Some(Frame::Seq {
                    line,
                    anchor,
                    items,
                    lines,
                }) => self.complete(Value::Array(items), LineTree::Seq(line, lines), anchor)?,
                _ => return Err((line, column, "unbalanced sequence end".to_owned())),
            },
            Event::MappingEnd => match self.stack.pop() {
                Some(Frame::Map {
                    line,
                    anchor,
                    entries,
                    lines,
                    ..
                }) => self.complete(Value::Object(entries), LineTree::Map(line, lines), anchor)?,
                _ => return Err((line, column, "unbalanced mapping end".to_owned())),
            },
            Event::Scalar(text, style, anchor, tag) => {
                // A key is kept as written: `01:` stays "01".
                if let Some(Frame::Map {
                    key: key @ None, ..
                }) = self.stack.last_mut()
                {
                    *key = Some((text.into_owned(), line));
                    if anchor != 0 {
                        return Err((
                            line,
                            column,
                            "anchors on mapping keys are not supported".to_owned(),
                        ));
                    }
                    return Ok(None);
                }
                let value = match Scalar::parse_from_cow_and_metadata(text, style, tag.as_ref()) {
                    Some(scalar) => scalar_to_json(scalar),
                    None => {
                        return Err((line, column, "the value does not match its tag".to_owned()));
                    }
                };
                self.complete(value, LineTree::Leaf(line), anchor)?;
            }
            Event::Alias(id) => {
                let Some(size) = self.anchors.get(&id).map(|anchored| anchored.2) else {
                    return Err((line, column, "alias to an unknown anchor".to_owned()));
                };
                self.aliased_nodes += size;
                if self.aliased_nodes > MAX_ALIASED_NODES {
                    return Err((
                        line,
                        column,
                        format!(
                            "aliases expand to more than {MAX_ALIASED_NODES} nodes; write the values out"
                        ),
                    ));
                }
                let (value, lines, _) = self.anchors[&id].clone();
                if let Some(Frame::Map {
                    key: key @ None, ..
                }) = self.stack.last_mut()
                {
                    let Value::String(text) = value else {
                        return Err((line, column, "mapping keys must be strings".to_owned()));
                    };
                    *key = Some((text, line));
                    return Ok(None);
                }
                self.complete(value, lines, 0)?;
            }
            Event::StreamStart | Event::StreamEnd | Event::Nothing => {}
        }
        Ok(None)
    }

    /// Places a finished node into its parent (or as the document root).
    fn complete(&mut self, value: Value, lines: LineTree, anchor: usize) -> Result<(), Located> {
        let line = lines.line();
        if anchor != 0 {
            let size = count_nodes(&value);
            self.anchors
                .insert(anchor, (value.clone(), lines.clone(), size));
        }
        match self.stack.last_mut() {
            None => self.root = Some((value, lines)),
            Some(Frame::Seq {
                items,
                lines: item_lines,
                ..
            }) => {
                items.push(value);
                item_lines.push(lines);
            }
            Some(Frame::Map {
                entries,
                lines: entry_lines,
                key,
                ..
            }) => {
                let Some((key, key_line)) = key.take() else {
                    return Err((line, 1, "mapping keys must be scalars".to_owned()));
                };
                if entries.contains_key(&key) {
                    let first = entry_lines
                        .iter()
                        .find(|(k, _, _)| **k == *key)
                        .map_or(0, |(_, line, _)| *line);
                    return Err((
                        key_line,
                        1,
                        format!("duplicate key {key:?} (first at line {first})"),
                    ));
                }
                let shared = match self.keys.get(&key) {
                    Some(shared) => shared.clone(),
                    None => {
                        let shared: Arc<str> = Arc::from(key.as_str());
                        self.keys.insert(key.clone(), shared.clone());
                        shared
                    }
                };
                entry_lines.push((shared, key_line, lines));
                entries.insert(key, value);
            }
        }
        Ok(())
    }
}

fn count_nodes(value: &Value) -> usize {
    1 + match value {
        Value::Array(items) => items.iter().map(count_nodes).sum(),
        Value::Object(entries) => entries.values().map(count_nodes).sum(),
        _ => 0,
    }
}

fn scalar_to_json(scalar: Scalar<'_>) -> Value {
    match scalar {
        Scalar::Null => Value::Null,
        Scalar::Boolean(b) => Value::Bool(b),
        Scalar::Integer(i) => Value::Number(i.into()),
        Scalar::FloatingPoint(f) => Number::from_f64(f.into_inner())
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(f.to_string())),
        Scalar::String(s) => Value::String(s.into_owned()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn path(parts: &[&str]) -> JsonPath {
        JsonPath(
            parts
                .iter()
                .map(|p| match p.parse::<usize>() {
                    Ok(i) => Segment::Index(i),
                    Err(_) => Segment::Key((*p).to_owned()),
                })
                .collect(),
        )
    }

    #[test]
    fn splits_like_kubectl_and_keeps_lines() {
        let text = "\
---
# leading comment only
apiVersion: v1
kind: Pod
spec:
  containers:
  - name: a
    image: nginx
---   
---
kind: List
items: [ {kind: Pod}, 
  {kind: Job} ]
";
        let documents = parse_documents(text);
        assert_eq!(documents.len(), 2);
        let pod = documents[0].as_ref().unwrap();
        assert_eq!(pod.index, 1);
        assert_eq!(pod.line, 3);
        assert_eq!(pod.value["spec"]["containers"][0]["image"], json!("nginx"));
        assert_eq!(pod.line_of(&path(&["spec", "containers", "0"])), 7);
        assert_eq!(pod.line_of(&path(&["spec", "containers", "0", "image"])), 8);
        // A missing field falls back to its deepest existing ancestor.
        assert_eq!(
            pod.line_of(&path(&["spec", "containers", "0", "imagePullPolicy"])),
            7
        );
        let list = documents[1].as_ref().unwrap();
        assert_eq!(list.index, 2);
        assert_eq!(list.line_of(&path(&["items", "1"])), 13);
    }

    #[test]
    fn a_broken_document_does_not_hide_the_next() {
        let text = "kind: Pod\nspec: {\n---\nkind: [unclosed\n  more: x\n---\nkind: Job\n";
        let documents = parse_documents(text);
        assert_eq!(documents.len(), 3);
        let first = documents[0].as_ref().unwrap_err();
        assert_eq!((first.index, first.line), (1, 3));
        let second = documents[1].as_ref().unwrap_err();
        assert_eq!(second.index, 2);
        assert!((4..=6).contains(&second.line), "{second:?}");
        let third = documents[2].as_ref().unwrap();
        assert_eq!((third.index, third.line), (3, 7));
        assert_eq!(third.value, json!({"kind": "Job"}));
    }

    #[test]
    fn reads_json_with_tabs_and_crlf() {
        let text = "{\r\n\t\"kind\": \"List\",\r\n\t\"items\": [\r\n\t\t{\"kind\": \"Pod\", \"n\": 1.5, \"ok\": true, \"none\": null}\r\n\t]\r\n}\r\n";
        let documents = parse_documents(text);
        let list = documents[0].as_ref().unwrap();
        assert_eq!(
            list.value,
            json!({"kind": "List", "items": [{"kind": "Pod", "n": 1.5, "ok": true, "none": null}]})
        );
        assert_eq!(list.line_of(&path(&["items", "0", "ok"])), 4);
        // Errors on the root's line keep their own columns.
        let error = parse_documents("\n{\"a\": 1,, \"b\": 2}\n")
            .remove(0)
            .unwrap_err();
        assert_eq!((error.line, error.column), (2, 9), "{error:?}");
    }

    #[test]
    fn scalars_anchors_and_bad_input() {
        let text = "a: &img quay.io/x:1\nb: *img\nc: '01'\nd: 01\ne: ~\nf: !!str 5\n";
        let doc = parse_documents(text).remove(0).unwrap();
        assert_eq!(
            doc.value,
            json!({"a": "quay.io/x:1", "b": "quay.io/x:1", "c": "01", "d": 1, "e": null, "f": "5"})
        );
        let duplicate = parse_documents("a: 1\nb: 2\na: 3\n").remove(0).unwrap_err();
        assert_eq!(duplicate.line, 3);
        assert!(
            duplicate
                .message
                .contains("duplicate key \"a\" (first at line 1)")
        );
        let complex = parse_documents("? [a]\n: 1\n").remove(0).unwrap_err();
        assert!(complex.message.contains("scalars"), "{complex:?}");
        let tagged = parse_documents("a: !!int x\n").remove(0).unwrap_err();
        assert!(tagged.message.contains("tag"));
        assert!(parse_documents("").is_empty());
        assert!(parse_documents("# nothing\n---\n\n").is_empty());
        // Many documents in one piece (separators with comments are not kubectl's).
        let several = parse_documents("a: 1\n--- # two\nb: 2\n");
        assert_eq!(several.len(), 2);
        assert_eq!(several[1].as_ref().unwrap().index, 2);
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..9 {
            let p = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let error = parse_documents(&text).remove(0).unwrap_err();
        assert!(error.message.contains("aliases expand"), "{error:?}");
    }
}
