//! A YAML document tree that remembers where every node came from.
//!
//! Sits under every file ecscale reads by hand (`ecscale.yaml`, and policy files later): the
//! readers in [`super::read`] walk this tree and report *all* mistakes with `file:line:column`,
//! which a serde deserializer, stopping at the first error, cannot do. Parsing is done by
//! `yaml-rust2` (a maintained YAML 1.2 parser); this module only keeps its event positions.

use std::collections::HashMap;
use std::fmt;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A 1-based line and column in a source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Span {
    pub line: usize,
    pub col: usize,
}

impl Span {
    fn from_marker(m: Marker) -> Self {
        // yaml-rust2 counts lines from 1 and columns from 0.
        Span {
            line: m.line(),
            col: m.col() + 1,
        }
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// One node of a document.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `~`, `null`, or nothing at all after a key.
    Null,
    /// Any scalar, kept as written; the reader decides what type it must be.
    Scalar {
        text: String,
        quoted: bool,
    },
    Seq(Vec<Node>),
    /// Entries in file order; duplicate keys are kept here and reported by the reader.
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// What the node is, for error messages ("a mapping", "the string \"abc\"").
    pub fn describe(&self) -> String {
        match &self.value {
            Value::Null => "null".to_string(),
            Value::Scalar { text, quoted: true } => format!("the string {text:?}"),
            Value::Scalar { text, .. } => format!("`{text}`"),
            Value::Seq(_) => "a list".to_string(),
            Value::Map(_) => "a mapping".to_string(),
        }
    }

    /// The scalar text, if this is a scalar.
    pub fn as_scalar(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }
}

/// A YAML syntax error: the parser stops at the first one.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntaxError {
    pub span: Span,
    pub message: String,
}

/// Parses every document of a YAML stream (`---` separated). An empty stream yields no documents.
pub fn parse_documents(source: &str) -> Result<Vec<Node>, SyntaxError> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(source);
    if let Err(e) = parser.load(&mut builder, true) {
        let m = e.marker();
        return Err(SyntaxError {
            span: Span::from_marker(*m),
            message: e.info().to_string(),
        });
    }
    if let Some(err) = builder.error {
        return Err(err);
    }
    Ok(builder.documents)
}

/// Collects parser events into [`Node`]s.
#[derive(Default)]
struct Builder {
    documents: Vec<Node>,
    /// Open collections: the node under construction and, for mappings, a key waiting for its value.
    stack: Vec<(Node, Option<Node>, usize)>,
    anchors: HashMap<usize, Node>,
    error: Option<SyntaxError>,
}

impl Builder {
    fn fail(&mut self, span: Span, message: String) {
        if self.error.is_none() {
            self.error = Some(SyntaxError { span, message });
        }
    }

    fn open(&mut self, value: Value, span: Span, anchor: usize, tag: Option<Tag>) {
        if tag.is_some() {
            self.fail(span, "YAML tags on collections are not supported".into());
            return;
        }
        self.stack.push((Node { value, span }, None, anchor));
    }

    /// Places a finished node into its parent (or as a document root).
    fn push(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        let Some((parent, pending_key, _)) = self.stack.last_mut() else {
            self.documents.push(node);
            return;
        };
        match &mut parent.value {
            Value::Seq(items) => items.push(node),
            Value::Map(entries) => match pending_key.take() {
                None => {
                    // yaml-rust2 marks a block mapping at its first `:`; a mapping starts at
                    // its first key (a flow mapping's `{` comes earlier and stays).
                    if entries.is_empty() && node.span < parent.span {
                        parent.span = node.span;
                    }
                    *pending_key = Some(node)
                }
                Some(key) => entries.push((key, node)),
            },
            // Only collections are pushed on the stack.
            Value::Null | Value::Scalar { .. } => {}
        }
    }
}

fn tag_is_str(tag: &Option<Tag>) -> Option<bool> {
    match tag {
        None => Some(false),
        Some(t) if t.handle == "tag:yaml.org,2002:" && t.suffix == "str" => Some(true),
        Some(t) if t.handle == "!!" && t.suffix == "str" => Some(true),
        Some(_) => None,
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        let span = Span::from_marker(mark);
        match ev {
            Event::Scalar(text, style, anchor, tag) => {
                let Some(forced_str) = tag_is_str(&tag) else {
                    self.fail(span, "YAML tags other than !!str are not supported".into());
                    return;
                };
                let quoted = forced_str || !matches!(style, TScalarStyle::Plain);
                let value = if !quoted && matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL") {
                    Value::Null
                } else {
                    Value::Scalar { text, quoted }
                };
                self.push(Node { value, span }, anchor);
            }
            Event::SequenceStart(anchor, tag) => self.open(Value::Seq(Vec::new()), span, anchor, tag),
            Event::MappingStart(anchor, tag) => self.open(Value::Map(Vec::new()), span, anchor, tag),
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some((node, _, anchor)) = self.stack.pop() {
                    self.push(node, anchor);
                }
            }
            Event::Alias(id) => match self.anchors.get(&id).cloned() {
                Some(mut node) => {
                    node.span = span;
                    self.push(node, 0);
                }
                None => self.fail(span, "alias to an unknown anchor".into()),
            },
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart
            | Event::DocumentEnd => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every node as `line:col kind`, depth-first.
    fn outline(n: &Node, out: &mut Vec<String>) {
        let what = match &n.value {
            Value::Scalar { text, quoted } => format!("{}{text}", if *quoted { "'" } else { "" }),
            Value::Map(_) => "MAP".into(),
            Value::Seq(_) => "SEQ".into(),
            Value::Null => "NULL".into(),
        };
        out.push(format!("{} {what}", n.span));
        match &n.value {
            Value::Map(entries) => entries.iter().for_each(|(k, v)| {
                outline(k, out);
                outline(v, out);
            }),
            Value::Seq(items) => items.iter().for_each(|i| outline(i, out)),
            _ => {}
        }
    }

    #[test]
    fn every_node_knows_where_it_starts() {
        let src = "a:\n  b: 1\n  c: [x, 'y']\nd:\n  - e\n  - f: ~\n    g: 3\nh: {i: 4}\n";
        let docs = parse_documents(src).unwrap();
        let mut got = Vec::new();
        outline(&docs[0], &mut got);
        let want = [
            "1:1 MAP", "1:1 a", "2:3 MAP", "2:3 b", "2:6 1", "3:3 c", "3:6 SEQ", "3:7 x", "3:10 'y", "4:1 d",
            "5:3 SEQ", "5:5 e", "6:5 MAP", "6:5 f", "6:8 NULL", "7:5 g", "7:8 3", "8:1 h", "8:4 MAP",
            "8:5 i", "8:8 4",
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn anchors_aliases_and_several_documents() {
        let docs = parse_documents("base: &b {x: 1}\nother: *b\n---\nsecond: true\n").unwrap();
        assert_eq!(docs.len(), 2);
        let Value::Map(entries) = &docs[0].value else {
            panic!("not a map")
        };
        assert_eq!(entries[0].1.value, entries[1].1.value);
        assert_eq!(entries[1].1.span, Span { line: 2, col: 8 });
    }

    #[test]
    fn syntax_errors_have_a_position_and_tags_are_refused() {
        let e = parse_documents("a: [1\nb: 2\n").unwrap_err();
        assert_eq!(e.span.line, 2);
        assert!(!e.message.is_empty());
        let e = parse_documents("a: !custom 1\n").unwrap_err();
        assert_eq!(e.span, Span { line: 1, col: 12 });
        assert!(e.message.contains("tags"), "{}", e.message);
        // `!!str` is the one tag allowed: it makes the scalar a string, like quotes.
        let docs = parse_documents("a: !!str 12\n").unwrap();
        let Value::Map(m) = &docs[0].value else {
            panic!("not a map")
        };
        assert_eq!(
            m[0].1.value,
            Value::Scalar {
                text: "12".into(),
                quoted: true
            }
        );
    }

    #[test]
    fn empty_input_has_no_documents() {
        assert!(parse_documents("").unwrap().is_empty());
        assert!(parse_documents("# only a comment\n").unwrap().is_empty());
    }
}
