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

/// How much a YAML stream may make: a hostile file (an alias bomb, a deep nesting) is refused
/// with a position instead of exhausting memory or the stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Nodes in all documents, those that aliases repeat included.
    pub nodes: usize,
    /// Nodes that aliases repeat.
    pub alias_nodes: usize,
    /// Collections inside collections.
    pub depth: usize,
}

/// Far above any real config or policy file (10,000 targets are about 300,000 nodes).
pub const LIMITS: Limits = Limits {
    nodes: 1_000_000,
    alias_nodes: 100_000,
    depth: 64,
};

/// Parses every document of a YAML stream (`---` separated). An empty stream yields no documents.
pub fn parse_documents(source: &str) -> Result<Vec<Node>, SyntaxError> {
    parse_documents_within(source, LIMITS)
}

/// As [`parse_documents`], within `limits`.
pub fn parse_documents_within(source: &str, limits: Limits) -> Result<Vec<Node>, SyntaxError> {
    let mut builder = Builder::new(limits, end_of(source));
    let mut parser = Parser::new_from_str(source);
    // Event by event, not `Parser::load`: its loader recurses once per level of nesting (a
    // file of 100,000 `- ` overflows the stack), and it would go on after the builder refused.
    let parsed = loop {
        match parser.next_token() {
            Ok((ev, mark)) => {
                let end = ev == Event::StreamEnd;
                builder.on_event(ev, mark);
                if end || builder.error.is_some() {
                    break Ok(());
                }
            }
            Err(e) => break Err(e),
        }
    };
    // The builder's own refusal comes first: the parser may go on to a later mistake.
    if let Some(err) = builder.error {
        return Err(err);
    }
    if let Err(e) = parsed {
        let m = e.marker();
        // The scanner's own bound on nested flow collections, said as ours is.
        let message = if e.info().contains("recursion limit exceeded") {
            format!(
                "nested deeper than {} levels (a hostile or generated file?)",
                limits.depth
            )
        } else {
            e.info().to_string()
        };
        return Err(SyntaxError {
            span: within(Span::from_marker(*m), end_of(source)),
            message,
        });
    }
    Ok(builder.documents)
}

/// Where the stream ends: its last line (lines as YAML breaks them, a lone CR included) and
/// the column after its last character. The scanner reads an implicit line break at the end,
/// so a mistake found there is put on this position, not on a line the file does not have.
fn end_of(source: &str) -> Span {
    let breaks = source.replace("\r\n", "\n").matches(['\n', '\r']).count();
    let last = source.rsplit(['\n', '\r']).next().unwrap_or("");
    Span {
        line: breaks + 1,
        col: last.chars().count() + 1,
    }
}

fn within(span: Span, end: Span) -> Span {
    if span.line > end.line {
        end
    } else {
        span
    }
}

/// What a lenient read found: the documents (none when a mistake stopped the parser) and every
/// mistake. A tab in the indentation is reported at its own position, then read as one level of
/// the file's own indentation so that reading goes on.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub documents: Option<Vec<Node>>,
    pub errors: Vec<SyntaxError>,
}

/// How many indentation tabs one read reports (and reads past) before it stops.
const MAX_TABS: usize = 50;

/// Parses as [`parse_documents`], reading on past tabs in the indentation.
pub fn parse_lenient(source: &str) -> Parsed {
    let unit = indent_unit(source);
    let mut text = std::borrow::Cow::Borrowed(source);
    let mut errors = Vec::new();
    loop {
        match parse_documents(&text) {
            Ok(documents) => {
                return Parsed {
                    documents: Some(documents),
                    errors,
                }
            }
            Err(e) => {
                let untabbed = (errors.len() < MAX_TABS && e.message.contains("tab"))
                    .then(|| untab(&text, e.span.line, unit))
                    .flatten();
                let Some((line, col, fixed)) = untabbed else {
                    errors.push(e);
                    return Parsed {
                        documents: None,
                        errors,
                    };
                };
                errors.push(SyntaxError {
                    span: Span { line, col },
                    message: "a tab in the indentation: YAML indents with spaces only".into(),
                });
                text = std::borrow::Cow::Owned(fixed);
            }
        }
    }
}

/// The file's indentation step: the most common increase between space-indented lines (2 when
/// there is none).
fn indent_unit(source: &str) -> usize {
    let mut counts: HashMap<usize, usize> = HashMap::new();
    let mut last = 0;
    for line in source.lines() {
        let content = line.trim_start_matches(' ');
        if content.is_empty() || content.starts_with(['#', '\t']) {
            continue;
        }
        let indent = line.len() - content.len();
        if indent > last {
            *counts.entry(indent - last).or_default() += 1;
        }
        last = indent;
    }
    counts
        .into_iter()
        .max_by_key(|&(step, n)| (n, std::cmp::Reverse(step)))
        .map_or(2, |(step, _)| step)
}

/// `source` with the tabs in the indentation of the first line from `from` on that has one
/// replaced by `unit` spaces each (the parser may name the line before, still scanning it), and
/// that line and the tab's column; `None` when no such line.
fn untab(source: &str, from: usize, unit: usize) -> Option<(usize, usize, String)> {
    let mut out = String::with_capacity(source.len() + unit * 4);
    let mut found = None;
    // The indentation the tab most likely stands for: one level under a line that opens a
    // block (`services:`), else the same as the line before.
    let mut guess = 0;
    for (i, l) in source.split_inclusive('\n').enumerate() {
        let content = l.trim_start_matches([' ', '\t']);
        let indent = &l[..l.len() - content.len()];
        let width = match indent.find('\t') {
            Some(c) if found.is_none() && i + 1 >= from => {
                found = Some((i + 1, c + 1));
                out.push_str(&" ".repeat(guess));
                out.push_str(content);
                guess
            }
            _ => {
                out.push_str(l);
                l.len() - l.trim_start_matches(' ').len()
            }
        };
        let text = content.split(" #").next().unwrap_or("").trim_end();
        if !text.is_empty() && !text.starts_with('#') {
            guess = if text.ends_with(':') { width + unit } else { width };
        }
    }
    found.map(|(line, col)| (line, col, out))
}

/// A node with its size: how many nodes it holds, itself included, and how deep it goes.
#[derive(Clone)]
struct Anchored {
    node: Node,
    nodes: usize,
    depth: usize,
}

/// An open collection: the node under construction, a mapping's key waiting for its value, its
/// anchor, and the nodes and depth inside it so far.
struct Open {
    node: Node,
    key: Option<Node>,
    anchor: usize,
    nodes: usize,
    depth: usize,
}

/// Collects parser events into [`Node`]s.
struct Builder {
    limits: Limits,
    documents: Vec<Node>,
    stack: Vec<Open>,
    anchors: HashMap<usize, Anchored>,
    /// Nodes made so far, and of those, the ones aliases repeated.
    made: usize,
    repeated: usize,
    error: Option<SyntaxError>,
    /// Where the stream ends (spans past it are put there).
    end: Span,
}

impl Builder {
    fn new(limits: Limits, end: Span) -> Self {
        Builder {
            limits,
            end,
            documents: Vec::new(),
            stack: Vec::new(),
            anchors: HashMap::new(),
            made: 0,
            repeated: 0,
            error: None,
        }
    }

    fn fail(&mut self, span: Span, message: String) {
        if self.error.is_none() {
            self.error = Some(SyntaxError { span, message });
        }
    }

    /// Counts `nodes` more nodes, `depth` deep below the open collections; `false` (and the
    /// error) past a limit.
    fn admit(&mut self, span: Span, nodes: usize, depth: usize, by_alias: bool) -> bool {
        let l = self.limits;
        if self.stack.len() + depth > l.depth {
            self.fail(
                span,
                format!(
                    "nested deeper than {} levels (a hostile or generated file?)",
                    l.depth
                ),
            );
            return false;
        }
        if by_alias && self.repeated + nodes > l.alias_nodes {
            self.fail(
                span,
                format!(
                    "this alias would repeat {nodes} more nodes ({} in all), past the {} that aliases may repeat in one file (an alias bomb?)",
                    self.repeated + nodes,
                    l.alias_nodes
                ),
            );
            return false;
        }
        if self.made + nodes > l.nodes {
            self.fail(span, format!("more than {} nodes in one file", l.nodes));
            return false;
        }
        self.made += nodes;
        if by_alias {
            self.repeated += nodes;
        }
        true
    }

    fn open(&mut self, value: Value, span: Span, anchor: usize, tag: Option<Tag>) {
        if tag.is_some() {
            self.fail(span, "YAML tags on collections are not supported".into());
            return;
        }
        if !self.admit(span, 1, 1, false) {
            return;
        }
        self.stack.push(Open {
            node: Node { value, span },
            key: None,
            anchor,
            nodes: 1,
            depth: 1,
        });
    }

    fn close(&mut self) {
        if let Some(open) = self.stack.pop() {
            let sized = Anchored {
                node: open.node,
                nodes: open.nodes,
                depth: open.depth,
            };
            self.push(sized, open.anchor);
        }
    }

    /// Places a finished node into its parent (or as a document root).
    fn push(&mut self, sized: Anchored, anchor: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, sized.clone());
        }
        let Anchored { node, nodes, depth } = sized;
        let Some(Open {
            node: parent,
            key: pending_key,
            nodes: parent_nodes,
            depth: parent_depth,
            ..
        }) = self.stack.last_mut()
        else {
            self.documents.push(node);
            return;
        };
        *parent_nodes += nodes;
        *parent_depth = (*parent_depth).max(depth + 1);
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

impl Builder {
    /// Repeats an anchored node, if the limits allow it: its size is checked before it is copied.
    fn alias(&mut self, id: usize, span: Span) {
        let Some((nodes, depth)) = self.anchors.get(&id).map(|a| (a.nodes, a.depth)) else {
            self.fail(span, "alias to an unknown anchor".into());
            return;
        };
        if !self.admit(span, nodes, depth, true) {
            return;
        }
        if let Some(mut sized) = self.anchors.get(&id).cloned() {
            sized.node.span = span;
            self.push(sized, 0);
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
        let span = within(Span::from_marker(mark), self.end);
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
                if self.admit(span, 1, 0, false) {
                    let node = Node { value, span };
                    self.push(
                        Anchored {
                            node,
                            nodes: 1,
                            depth: 0,
                        },
                        anchor,
                    );
                }
            }
            Event::SequenceStart(anchor, tag) => self.open(Value::Seq(Vec::new()), span, anchor, tag),
            Event::MappingStart(anchor, tag) => self.open(Value::Map(Vec::new()), span, anchor, tag),
            Event::SequenceEnd | Event::MappingEnd => self.close(),
            Event::Alias(id) => self.alias(id, span),
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
    fn an_alias_bomb_is_refused_at_the_alias_before_it_grows() {
        let mut src = String::from("a: &a [x, x, x, x, x, x, x, x, x]\n");
        for (prev, name) in "abcdefgh".chars().zip("bcdefghi".chars()) {
            let refs = vec![format!("*{prev}"); 9].join(", ");
            src.push_str(&format!("{name}: &{name} [{refs}]\n"));
        }
        let e = parse_documents(&src).unwrap_err();
        // 9⁵ = 59,049 strings repeated by `f` alone would pass 100,000 with `e`'s: line 6.
        assert_eq!(e.span, Span { line: 6, col: 8 }, "{}", e.message);
        assert!(e.message.contains("alias bomb"), "{}", e.message);
        // Within the limits, aliases still work.
        let small = Limits {
            nodes: 100,
            alias_nodes: 20,
            depth: 64,
        };
        assert!(parse_documents_within("a: &a [1, 2]\nb: [*a, *a]\n", small).is_ok());
        let e = parse_documents_within("a: &a [1, 2, 3, 4, 5]\nb: [*a, *a, *a, *a]\n", small).unwrap_err();
        assert_eq!(e.span, Span { line: 2, col: 17 });
    }

    #[test]
    fn deep_nesting_and_too_many_nodes_are_refused_with_a_position() {
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        let e = parse_documents(&deep).unwrap_err();
        assert_eq!(e.span, Span { line: 1, col: 65 }, "{}", e.message);
        assert!(e.message.contains("deeper than 64"), "{}", e.message);
        // An alias of a deep node placed deep counts its own depth.
        let small = Limits {
            nodes: 1000,
            alias_nodes: 1000,
            depth: 4,
        };
        let e = parse_documents_within("a: &a [[1]]\nb: [[*a]]\n", small).unwrap_err();
        assert_eq!(e.span, Span { line: 2, col: 6 }, "{}", e.message);
        let list = format!("[{}]", vec!["1"; 2000].join(","));
        let Err(e) = parse_documents_within(&list, small) else {
            panic!("2,001 nodes read within a limit of 1,000");
        };
        assert_eq!(e.span, Span { line: 1, col: 2000 }, "{}", e.message);
        assert_eq!(e.message, "more than 1000 nodes in one file");
    }

    #[test]
    fn nesting_of_every_depth_is_refused_at_the_bound_without_the_parser_recursing_on() {
        for n in [10usize, 100, 1_000, 10_000, 100_000] {
            // `- - - … 1`: block sequences nested on one line (20 KB at 10,000 levels).
            let block = format!("{}1\n", "- ".repeat(n));
            let flow = format!("{}{}", "[".repeat(n), "]".repeat(n));
            let maps = format!("{}1{}", "{k: ".repeat(n), "}".repeat(n));
            for (what, text) in [("block", &block), ("flow", &flow), ("mappings", &maps)] {
                match parse_documents(text) {
                    Ok(_) => assert!(n <= 64, "{what} {n}: read"),
                    Err(e) => {
                        assert!(n > 64, "{what} {n}: {}", e.message);
                        assert!(e.message.contains("deeper than 64"), "{what} {n}: {}", e.message);
                        assert!(e.span.line == 1, "{what} {n}: named on its line: {}", e.span);
                    }
                }
            }
        }
    }

    #[test]
    fn tabs_in_the_indentation_are_reported_where_they_are_and_reading_goes_on() {
        let src = "a:\n  b: 1\n\tc: 2\nd:\n  - 1\n\t- 2\n";
        let p = parse_lenient(src);
        let at: Vec<Span> = p.errors.iter().map(|e| e.span).collect();
        assert_eq!(
            at,
            [Span { line: 3, col: 1 }, Span { line: 6, col: 1 }],
            "{:?}",
            p.errors
        );
        let docs = p.documents.expect("read past the tabs");
        let Value::Map(m) = &docs[0].value else {
            panic!("not a map")
        };
        assert_eq!(m.len(), 2, "{m:?}");
        // A tab where YAML allows one (in a quoted string) is no mistake.
        let p = parse_lenient("a: \"x\ty\"\n");
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        // Other mistakes stop the read, after the tabs before them.
        let p = parse_lenient("a:\n\tb: 1\nc: [1\n");
        assert_eq!(p.errors.len(), 2, "{:?}", p.errors);
        assert!(p.documents.is_none());
    }

    #[test]
    fn empty_input_has_no_documents() {
        assert!(parse_documents("").unwrap().is_empty());
        assert!(parse_documents("# only a comment\n").unwrap().is_empty());
    }
}
