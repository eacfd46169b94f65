//! Typed reading of a [`Node`] tree that records every mistake and keeps going.
//!
//! The config loader (and the policy loader after it) is written as plain functions over
//! [`MapReader`]: each field is read on its own, a bad field is recorded as a [`Diagnostic`] with
//! its position and field path, and reading goes on, so `ecscale validate` can list all mistakes at
//! once. Unknown keys are rejected with a "did you mean" hint.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

pub mod bounded;
pub mod yaml;

use yaml::{Node, Span, Value};

/// One mistake in an input file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Diagnostic {
    /// The file, or `environment` for `ECSCALE_*` variables.
    pub file: String,
    pub span: Span,
    /// The field path, e.g. `clusters[0].services[2].metrics[1].period`.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The whole document has no field path to name: the position says where.
        let path = if self.path.is_empty() {
            String::new()
        } else {
            format!("{}: ", self.path)
        };
        if self.span.line == 0 {
            write!(f, "{}: {path}{}", self.file, self.message)
        } else {
            write!(f, "{}:{}: {path}{}", self.file, self.span, self.message)
        }
    }
}

/// All the mistakes found in one or more files, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// The largest YAML file read (config, policy files, stress plans): far above any real one.
pub const MAX_YAML_BYTES: u64 = 16 << 20;

/// Why a bounded read failed: the file could not be read, or it holds more than the bound.
#[derive(Debug)]
pub enum BoundedError {
    Io(std::io::Error),
    TooLarge(u64),
}

impl fmt::Display for BoundedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BoundedError::Io(e) => write!(f, "{e}"),
            BoundedError::TooLarge(limit) => write!(
                f,
                "larger than {}, the most this file may hold",
                crate::format::bytes(*limit)
            ),
        }
    }
}

/// Reads a whole file of at most `limit` bytes, without reading past it (a huge file or a
/// device never fills memory).
pub fn read_bounded_bytes(path: &std::path::Path, limit: u64) -> Result<Vec<u8>, BoundedError> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(BoundedError::Io)?;
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(BoundedError::Io)?;
    if bytes.len() as u64 > limit {
        return Err(BoundedError::TooLarge(limit));
    }
    Ok(bytes)
}

/// Reads a whole text file of at most `limit` bytes ([`read_bounded_bytes`]). The error says
/// what went wrong, for the caller to place.
pub fn read_bounded(path: &std::path::Path, limit: u64) -> Result<String, String> {
    let bytes = read_bounded_bytes(path, limit).map_err(|e| e.to_string())?;
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        format!("not UTF-8 text (byte {at})")
    })
}

/// Reads a whole YAML input file; failing that, one diagnostic naming it (`what`: "the config
/// file").
pub fn read_source(path: &std::path::Path, what: &str) -> Result<String, Diagnostics> {
    read_bounded(path, MAX_YAML_BYTES).map_err(|e| {
        Diagnostics(vec![Diagnostic {
            file: path.display().to_string(),
            span: Span::default(),
            path: "(file)".into(),
            message: format!("cannot read {what}: {e}"),
        }])
    })
}

/// Parses a YAML stream, recording its mistakes in `cx` (every tab in the indentation, then the
/// mistake that stopped the parser, if any). The documents, when the parser got through.
pub fn parse_yaml(source: &str, cx: &mut Cx) -> Option<Vec<Node>> {
    let parsed = yaml::parse_lenient(source);
    for e in parsed.errors {
        cx.error(e.span, "(syntax)", format!("invalid YAML: {}", e.message));
    }
    parsed.documents
}

/// The most mistakes listed for one file.
pub const MAX_MISTAKES: usize = 100;

/// The reading context: which file, and the mistakes found so far.
pub struct Cx {
    file: String,
    pub diags: Vec<Diagnostic>,
}

impl Cx {
    pub fn new(file: impl Into<String>) -> Self {
        Cx {
            file: file.into(),
            diags: Vec::new(),
        }
    }

    pub fn file(&self) -> &str {
        &self.file
    }

    /// Records a mistake at `span`, under field `path`. Past [`MAX_MISTAKES`] in one file, one
    /// line says more were found and the rest are not listed (a file of 900,000 bad entries
    /// does not print 900,000 lines).
    pub fn error(&mut self, span: Span, path: &str, message: impl Into<String>) {
        if self.diags.len() > MAX_MISTAKES {
            return;
        }
        if self.diags.len() == MAX_MISTAKES {
            self.diags.push(Diagnostic {
                file: self.file.clone(),
                span,
                path: path.to_string(),
                message: format!("and more mistakes from here on: only the first {MAX_MISTAKES} are listed"),
            });
            return;
        }
        self.diags.push(Diagnostic {
            file: self.file.clone(),
            span,
            path: path.to_string(),
            message: message.into(),
        });
    }

    /// Opens a mapping for field-by-field reading. `null` (a key with nothing after it) reads as
    /// an empty mapping. Anything else is recorded as a mistake.
    pub fn map<'n>(&mut self, node: &'n Node, path: &str) -> Option<MapReader<'n>> {
        let entries: &'n [(Node, Node)] = match &node.value {
            Value::Map(entries) => entries,
            Value::Null => &[],
            _ => {
                self.error(
                    node.span,
                    path,
                    format!("expected a mapping of keys to values, found {}", node.describe()),
                );
                return None;
            }
        };
        let mut fields: Vec<(&'n str, Span, &'n Node, bool)> = Vec::with_capacity(entries.len());
        for (k, v) in entries {
            let Some(key) = k.as_scalar() else {
                self.error(
                    k.span,
                    path,
                    format!("keys must be plain words, found {}", k.describe()),
                );
                continue;
            };
            if let Some((_, first, _, _)) = fields.iter().find(|(name, ..)| *name == key) {
                let first_line = first.line;
                self.error(
                    k.span,
                    &join(path, key),
                    format!("duplicate key (first given on line {first_line})"),
                );
                continue;
            }
            fields.push((key, k.span, v, false));
        }
        Some(MapReader {
            path: path.to_string(),
            span: node.span,
            fields,
        })
    }
}

/// `a.b` for a field `b` of `a`; `b` at the top.
pub fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Reads the fields of one mapping. Call [`MapReader::finish`] last: it reports the keys nobody asked for.
pub struct MapReader<'n> {
    path: String,
    span: Span,
    /// key, key position, value, taken
    fields: Vec<(&'n str, Span, &'n Node, bool)>,
}

impl<'n> MapReader<'n> {
    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn span(&self) -> Span {
        self.span
    }

    /// The keys of this mapping, in file order.
    pub fn keys(&self) -> impl Iterator<Item = &'n str> + '_ {
        self.fields.iter().map(|(k, ..)| *k)
    }

    /// Where `key`'s value is, or the mapping itself when the key is absent: the place to
    /// report a check that involves this field and another.
    pub fn span_of(&self, key: &str) -> Span {
        self.fields
            .iter()
            .find(|(k, ..)| *k == key)
            .map_or(self.span, |(_, _, v, _)| v.span)
    }

    /// The value under `key`, marking the key as known.
    pub fn take(&mut self, key: &str) -> Option<&'n Node> {
        let entry = self.fields.iter_mut().find(|(k, ..)| *k == key)?;
        entry.3 = true;
        // An explicit `key: null` counts as absent, so optional fields can be blanked.
        match entry.2.value {
            Value::Null => None,
            _ => Some(entry.2),
        }
    }

    /// Whether the key is present (with a non-null value), without marking it.
    pub fn has(&self, key: &str) -> bool {
        self.fields
            .iter()
            .any(|(k, _, v, _)| *k == key && v.value != Value::Null)
    }

    /// Reads an optional field.
    pub fn opt<T: FromNode>(&mut self, cx: &mut Cx, key: &str) -> Option<T> {
        let node = self.take(key)?;
        T::from_node(node, &join(&self.path, key), cx)
    }

    /// Reads an optional field, with a default when absent. A present but invalid field is
    /// recorded as a mistake (and the default stands in so reading can go on).
    pub fn or<T: FromNode>(&mut self, cx: &mut Cx, key: &str, default: T) -> T {
        self.opt(cx, key).unwrap_or(default)
    }

    /// Reads a required field.
    pub fn req<T: FromNode>(&mut self, cx: &mut Cx, key: &str) -> Option<T> {
        self.req_with(cx, key, T::from_node)
    }

    /// Whether some other key of this mapping looks like a misspelling of `key`: then the
    /// unknown-key error (with its "did you mean") says it all, and `key` is not also reported
    /// missing.
    pub fn misspelled(&self, key: &str) -> bool {
        self.fields
            .iter()
            .any(|(k, ..)| *k != key && closest(k, &[key]).is_some())
    }

    /// Reads an optional node with a custom reader.
    pub fn opt_with<T>(
        &mut self,
        cx: &mut Cx,
        key: &str,
        read: impl FnOnce(&'n Node, &str, &mut Cx) -> Option<T>,
    ) -> Option<T> {
        let node = self.take(key)?;
        read(node, &join(&self.path, key), cx)
    }

    /// Reads a required node with a custom reader.
    pub fn req_with<T>(
        &mut self,
        cx: &mut Cx,
        key: &str,
        read: impl FnOnce(&'n Node, &str, &mut Cx) -> Option<T>,
    ) -> Option<T> {
        if !self.has(key) {
            // Mark it known so `finish` does not also call it unknown.
            self.take(key);
            if !self.misspelled(key) {
                cx.error(self.span, &join(&self.path, key), "missing required field");
            }
            return None;
        }
        self.opt_with(cx, key, read)
    }

    /// Reports every key not taken, with a suggestion among `known` (the keys this mapping accepts).
    pub fn finish(self, cx: &mut Cx, known: &[&str]) {
        for (key, span, _, taken) in &self.fields {
            if *taken {
                continue;
            }
            let hint = closest(key, known)
                .map(|k| format!("; did you mean `{k}`?"))
                .unwrap_or_default();
            cx.error(
                *span,
                &join(&self.path, key),
                format!(
                    "unknown key `{key}` (expected one of: {}){hint}",
                    known.join(", ")
                ),
            );
        }
    }
}

/// The known word nearest to `word`, if it is near enough to be a likely typo.
pub fn closest<'a>(word: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (strsim::damerau_levenshtein(word, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min()
        .map(|(_, k)| k)
}

/// Reads a list of named things (`what` names them in messages, `key` is the naming field): each
/// item with `read(index, node, path, cx)`; a name given twice is a mistake at the second.
pub fn read_named_list<T>(
    node: &Node,
    path: &str,
    cx: &mut Cx,
    (what, key): (&str, &str),
    mut read: impl FnMut(usize, &Node, &str, &mut Cx) -> Option<T>,
    name: impl Fn(&T) -> &str,
) -> Option<Vec<T>> {
    let Value::Seq(items) = &node.value else {
        cx.error(
            node.span,
            path,
            format!("expected a list of {what}s, found {}", node.describe()),
        );
        return None;
    };
    let mut out = Vec::with_capacity(items.len());
    let mut first_line: BTreeMap<String, usize> = BTreeMap::new();
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let p = format!("{path}[{i}]");
        let Some(v) = read(i, item, &p, cx) else {
            ok = false;
            continue;
        };
        match first_line.get(name(&v)) {
            Some(first) => {
                cx.error(
                    item.span,
                    &join(&p, key),
                    format!("{what} `{}` is already listed on line {first}", name(&v)),
                );
                ok = false;
            }
            None => {
                first_line.insert(name(&v).to_string(), item.span.line);
            }
        }
        out.push(v);
    }
    ok.then_some(out)
}

/// The items of a list that must have at least one (`what` names an item, `empty` is the
/// message when there is none); anything else is recorded as a mistake.
pub fn non_empty_seq<'n>(n: &'n Node, p: &str, cx: &mut Cx, what: &str, empty: &str) -> Option<&'n [Node]> {
    match &n.value {
        Value::Seq(items) if items.is_empty() => {
            cx.error(n.span, p, empty);
            None
        }
        Value::Seq(items) => Some(items),
        _ => {
            cx.error(
                n.span,
                p,
                format!("expected a list of {what}s, found {}", n.describe()),
            );
            None
        }
    }
}

/// A type that can be read from a node, recording its own mistakes.
pub trait FromNode: Sized {
    fn from_node(node: &Node, path: &str, cx: &mut Cx) -> Option<Self>;
}

fn scalar<'n>(node: &'n Node, path: &str, cx: &mut Cx, what: &str) -> Option<&'n str> {
    match node.as_scalar() {
        Some(s) => Some(s),
        None => {
            cx.error(
                node.span,
                path,
                format!("expected {what}, found {}", node.describe()),
            );
            None
        }
    }
}

impl FromNode for String {
    fn from_node(node: &Node, path: &str, cx: &mut Cx) -> Option<Self> {
        let s = scalar(node, path, cx, "a string")?;
        if s.trim().is_empty() {
            cx.error(node.span, path, "must not be empty");
            return None;
        }
        Some(s.to_string())
    }
}

impl FromNode for bool {
    fn from_node(node: &Node, path: &str, cx: &mut Cx) -> Option<Self> {
        match scalar(node, path, cx, "true or false")? {
            "true" | "True" | "TRUE" => Some(true),
            "false" | "False" | "FALSE" => Some(false),
            other => {
                cx.error(
                    node.span,
                    path,
                    format!("expected true or false, found `{other}`"),
                );
                None
            }
        }
    }
}

macro_rules! from_node_number {
    ($($t:ty => $what:literal),*) => {$(
        impl FromNode for $t {
            fn from_node(node: &Node, path: &str, cx: &mut Cx) -> Option<Self> {
                let s = scalar(node, path, cx, $what)?;
                match s.replace('_', "").parse::<$t>() {
                    Ok(v) => Some(v),
                    Err(_) => {
                        cx.error(node.span, path, format!("expected {}, found `{s}`", $what));
                        None
                    }
                }
            }
        }
    )*};
}
from_node_number!(u32 => "a whole number", u64 => "a whole number", usize => "a whole number");

impl FromNode for f64 {
    fn from_node(node: &Node, path: &str, cx: &mut Cx) -> Option<Self> {
        let s = scalar(node, path, cx, "a number")?;
        match s.replace('_', "").parse::<f64>() {
            Ok(v) if v.is_finite() => Some(v),
            _ => {
                cx.error(node.span, path, format!("expected a number, found `{s}`"));
                None
            }
        }
    }
}

/// The longest duration a file may give (a cooldown, a window, a lead): 455 days, the longest
/// CloudWatch keeps any datapoint, so that no clock arithmetic overflows and no look-back spans
/// more than CloudWatch could answer.
pub const MAX_DURATION: Duration = Duration::from_secs(455 * 86_400);

impl FromNode for Duration {
    fn from_node(node: &Node, path: &str, cx: &mut Cx) -> Option<Self> {
        let s = scalar(node, path, cx, "a duration such as 30s or 5m")?;
        match humantime::parse_duration(s) {
            Ok(d) if d > MAX_DURATION => {
                cx.error(
                    node.span,
                    path,
                    format!("`{s}` is longer than any duration ecscale reads (at most 455d)"),
                );
                None
            }
            Ok(d) => Some(d),
            Err(_) if s.chars().all(|c| c.is_ascii_digit()) => {
                cx.error(
                    node.span,
                    path,
                    format!("`{s}` has no unit: write a duration such as {s}s or {s}m"),
                );
                None
            }
            Err(e) => {
                cx.error(
                    node.span,
                    path,
                    format!("`{s}` is not a duration ({e}); write e.g. 30s, 5m, 1h"),
                );
                None
            }
        }
    }
}

impl<T: FromNode> FromNode for Vec<T> {
    fn from_node(node: &Node, path: &str, cx: &mut Cx) -> Option<Self> {
        let Value::Seq(items) = &node.value else {
            cx.error(
                node.span,
                path,
                format!("expected a list, found {}", node.describe()),
            );
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            match T::from_node(item, &format!("{path}[{i}]"), cx) {
                Some(v) => out.push(v),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }
}

impl<T: FromNode> FromNode for BTreeMap<String, T> {
    fn from_node(node: &Node, path: &str, cx: &mut Cx) -> Option<Self> {
        let m = cx.map(node, path)?;
        let mut out = BTreeMap::new();
        let mut ok = true;
        for (key, _, value, _) in &m.fields {
            match T::from_node(value, &join(path, key), cx) {
                Some(v) => {
                    out.insert(key.to_string(), v);
                }
                None => ok = false,
            }
        }
        ok.then_some(out)
    }
}

/// Reads a string that must be one of `choices`.
pub fn one_of(node: &Node, path: &str, cx: &mut Cx, choices: &[&str]) -> Option<String> {
    let s = scalar(node, path, cx, "a word")?;
    if choices.contains(&s) {
        return Some(s.to_string());
    }
    let hint = closest(s, choices)
        .map(|k| format!("; did you mean `{k}`?"))
        .unwrap_or_default();
    cx.error(
        node.span,
        path,
        format!("`{s}` is not one of: {}{hint}", choices.join(", ")),
    );
    None
}

/// Parses a byte size such as `512MiB`, `2GB` or `1048576`.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size; write e.g. 512MiB or 2GiB"))?;
    let mult: f64 = match unit.trim() {
        "" | "B" => 1.0,
        "KB" | "kB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        "TiB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        other => {
            return Err(format!(
                "unknown size unit `{other}`; use B, KB, MB, GB, KiB, MiB, GiB"
            ))
        }
    };
    Ok((n * mult) as u64)
}

#[cfg(test)]
mod tests {
    use super::yaml::parse_documents;
    use super::*;

    fn read<T: FromNode>(src: &str) -> (Option<T>, Vec<String>) {
        let docs = parse_documents(src).unwrap();
        let mut cx = Cx::new("t.yaml");
        let v = T::from_node(&docs[0], "x", &mut cx);
        (v, cx.diags.iter().map(|d| d.to_string()).collect())
    }

    #[test]
    fn durations_need_units_and_say_so() {
        assert_eq!(read::<Duration>("30s").0, Some(Duration::from_secs(30)));
        assert_eq!(read::<Duration>("1m 30s").0, Some(Duration::from_secs(90)));
        let (v, d) = read::<Duration>("30");
        assert_eq!(v, None);
        assert_eq!(
            d,
            vec!["t.yaml:1:1: x: `30` has no unit: write a duration such as 30s or 30m"]
        );
        let (_, d) = read::<Duration>("soon");
        assert!(d[0].contains("`soon` is not a duration"), "{d:?}");
    }

    #[test]
    fn lists_report_every_bad_item_with_its_index() {
        let (v, d) = read::<Vec<u32>>("[1, two, 3, -4]");
        assert_eq!(v, None);
        assert_eq!(
            d,
            vec![
                "t.yaml:1:5: x[1]: expected a whole number, found `two`",
                "t.yaml:1:13: x[3]: expected a whole number, found `-4`",
            ]
        );
    }

    #[test]
    fn unknown_and_duplicate_keys_are_reported() {
        let docs = parse_documents("region: a\nregoin: b\nregion: c\n").unwrap();
        let mut cx = Cx::new("c.yaml");
        let mut m = cx.map(&docs[0], "aws").unwrap();
        let region: Option<String> = m.opt(&mut cx, "region");
        m.finish(&mut cx, &["region", "profile"]);
        assert_eq!(region.as_deref(), Some("a"));
        let msgs: Vec<String> = cx.diags.iter().map(|d| d.to_string()).collect();
        assert_eq!(
            msgs,
            vec![
                "c.yaml:3:1: aws.region: duplicate key (first given on line 1)",
                "c.yaml:2:1: aws.regoin: unknown key `regoin` (expected one of: region, profile); did you mean `region`?",
            ]
        );
    }

    #[test]
    fn required_fields_are_reported_at_the_mapping() {
        let docs = parse_documents("a: 1\n").unwrap();
        let mut cx = Cx::new("c.yaml");
        let mut m = cx.map(&docs[0], "").unwrap();
        let name: Option<String> = m.req(&mut cx, "name");
        let a: Option<u32> = m.opt(&mut cx, "a");
        m.finish(&mut cx, &["a", "name"]);
        assert_eq!((name, a), (None, Some(1)));
        assert_eq!(cx.diags.len(), 1);
        assert_eq!(cx.diags[0].path, "name");
        assert_eq!(cx.diags[0].message, "missing required field");
    }

    #[test]
    fn a_misspelled_required_key_is_reported_once() {
        let docs = parse_documents("nmae: web\n").unwrap();
        let mut cx = Cx::new("c.yaml");
        let mut m = cx.map(&docs[0], "svc").unwrap();
        let name: Option<String> = m.req(&mut cx, "name");
        m.finish(&mut cx, &["name", "metrics"]);
        assert_eq!(name, None);
        let msgs: Vec<String> = cx.diags.iter().map(|d| d.to_string()).collect();
        assert_eq!(
            msgs,
            vec!["c.yaml:1:1: svc.nmae: unknown key `nmae` (expected one of: name, metrics); did you mean `name`?"]
        );
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(parse_bytes("512MiB"), Ok(512 * 1024 * 1024));
        assert_eq!(parse_bytes("2GB"), Ok(2_000_000_000));
        assert_eq!(parse_bytes("100"), Ok(100));
        assert!(parse_bytes("12 parsecs").is_err());
        assert!(parse_bytes("MiB").is_err());
    }

    #[test]
    fn closest_suggests_only_near_words() {
        assert_eq!(closest("intervl", &["interval", "cron"]), Some("interval"));
        assert_eq!(closest("zzzzzz", &["interval", "cron"]), None);
    }
}
