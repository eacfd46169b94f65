//! Fuzz targets on stable Rust: property tests that feed every reader of outside input with
//! mutated real files and random text, and require `Ok` or an error that says where, never a
//! panic, within a time bound (memory is bounded by the readers' own limits; the bad-input table
//! in `tests/it/validate.rs` measures it in a child process).
//!
//! CI runs 2,000 cases per target. A longer session: `PROPTEST_CASES=200000 cargo nextest run
//! --lib fuzz::` (each failure is shrunk, printed and kept in `proptest-regressions/fuzz.txt`;
//! add the input to `tests/fixtures/bad/` with the error it must give).

use std::path::Path;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::sample::Index;

use crate::read::Diagnostics;

/// Real files, the starting points of mutation.
const CONFIG: &str = include_str!("../examples/ecscale.yaml");
const POLICIES: &[&str] = &[
    include_str!("../policies/web.yaml"),
    include_str!("../policies/capacity.yaml"),
    include_str!("../policies/reports.yaml"),
    include_str!("../policies/worker.yaml"),
    include_str!("../tests/fixtures/policies/mistakes.yaml"),
];
const PLAN: &str = include_str!("../examples/stress/release-check.yaml");
const TRACE: &str = include_str!("../tests/fixtures/backtest/trace.csv");

/// What YAML, CSV and expressions give meaning to: pasted in at random places.
const TOKENS: &[&str] = &[
    "&a ",
    "*a",
    "<<: *a\n",
    "\t",
    ": ",
    "- ",
    "{",
    "}",
    "[",
    "]",
    "'",
    "\"",
    "#",
    "\n",
    "  ",
    "!!binary ",
    "!tag ",
    "? ",
    "|\n",
    ">-\n",
    "%YAML 1.2\n",
    "---\n",
    "...\n",
    "\u{feff}",
    "0x1F",
    "1e999",
    "-1",
    ".nan",
    "~",
    "null",
    "1d",
    "0s",
    "100%",
    "999999999999999999999",
    ",",
    ",,",
    "\r\n",
    "\u{0}",
    "é",
    "(",
    ")",
    "*",
    "/",
    "if(",
    "max(",
    "cpu",
    "2026-03-08T02:30:00",
    "@daily",
    "*/0",
    "7",
    "L",
    "?",
    "MON-SUN",
    "0-",
    "\\",
    "${VAR}",
    "$",
    "  - name: x\n",
];

/// A sequence of edits: insert a token, delete a span, duplicate a span, or truncate.
fn edits() -> impl Strategy<Value = Vec<(u8, Index, usize, Index)>> {
    prop::collection::vec((0u8..5, any::<Index>(), 1usize..64, any::<Index>()), 0..10)
}

fn apply(seed: &str, edits: &[(u8, Index, usize, Index)]) -> String {
    let mut s = seed.to_string();
    for (op, at, len, tok) in edits {
        let at = floor(&s, at.index(s.len() + 1));
        let end = floor(&s, (at + len).min(s.len()));
        match op {
            0 | 1 => s.insert_str(at, tok.get::<&str>(TOKENS)),
            2 => s.replace_range(at..end, ""),
            3 => {
                let span = s[at..end].to_string();
                s.insert_str(end, &span);
            }
            _ => s.truncate(at),
        }
    }
    s
}

/// The nearest char boundary at or before `i`.
fn floor(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// A mutated seed, or text made only of tokens.
fn input(seeds: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (any::<Index>(), edits()).prop_map(move |(i, e)| apply(i.get::<&str>(seeds), &e)),
        1 => prop::collection::vec(any::<Index>(), 0..80)
            .prop_map(|ts| ts.iter().map(|t| *t.get::<&str>(TOKENS)).collect::<String>()),
    ]
}

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    ProptestConfig {
        cases,
        max_shrink_iters: 2000,
        ..ProptestConfig::default()
    }
}

/// Every reader answers within this, even in a debug build on a busy machine.
const BOUND: Duration = Duration::from_secs(2);

fn timed<T>(f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let out = f();
    assert!(t.elapsed() < BOUND, "took {:?}", t.elapsed());
    out
}

/// Every mistake names the file, and a line within it (or, for a whole-file or cross-field
/// mistake, the field).
fn positioned(d: &Diagnostics, file: &str, text: &str) -> Result<(), TestCaseError> {
    prop_assert!(!d.0.is_empty(), "an error without a mistake");
    let lines = yaml_lines(text);
    for m in &d.0 {
        prop_assert_eq!(&m.file, file, "{}", m);
        prop_assert!(m.span.line >= 1 || !m.path.is_empty(), "no position: {}", m);
        prop_assert!(
            m.span.line <= lines,
            "line {} past the end ({lines}): {}",
            m.span.line,
            m
        );
        prop_assert!(!m.message.is_empty(), "{}", m);
    }
    Ok(())
}

/// Lines as YAML counts them (a lone CR breaks a line too), plus the one after the last break.
fn yaml_lines(text: &str) -> usize {
    text.replace("\r\n", "\n")
        .chars()
        .filter(|c| matches!(c, '\n' | '\r'))
        .count()
        + 1
}

const CONFIGS: &[&str] = &[CONFIG];
const PLANS: &[&str] = &[PLAN];
const TRACES: &[&str] = &[TRACE];
const EXPRESSIONS: &[&str] = &[
    "ceil(queue_depth / 50) + if(oldest_message_age > 600, 2, 0)",
    "max(cpu / 60 * current, requests / 1000)",
    "-(1 + 2) * 3 >= 4 && !(x < 1) || y == 2",
];
const CRONS: &[&str] = &[
    "*/5 * * * *",
    "0 30 9 * * MON-FRI",
    "0 0 1,15 * 5",
    "@hourly",
    "15 2 * * 0,7",
];

proptest! {
    #![proptest_config(config())]

    #[test]
    fn yaml_reader(text in input(POLICIES)) {
        let parsed = timed(|| crate::read::yaml::parse_lenient(&text));
        for e in &parsed.errors {
            prop_assert!(e.span.line >= 1 && e.span.line <= yaml_lines(&text), "{:?}", e);
        }
    }

    #[test]
    fn config_reader(text in input(CONFIGS)) {
        let vars = crate::config::env::Vars::from_pairs([]);
        let r = timed(|| crate::config::load_str(&text, "ecscale.yaml", Path::new("/nonexistent"), &vars));
        if let Err(d) = r {
            positioned(&d, "ecscale.yaml", &text)?;
        }
    }

    #[test]
    fn policy_reader(text in input(POLICIES)) {
        let r = timed(|| crate::policy::load_str(&text, "p.yaml", Path::new("/nonexistent")));
        if let Err(d) = r {
            positioned(&d, "p.yaml", &text)?;
        }
    }

    #[test]
    fn stress_plan_reader(text in input(PLANS)) {
        let r = timed(|| crate::stress::plan::load_str(&text, "plan.yaml", Path::new("/nonexistent")));
        if let Err(d) = r {
            positioned(&d, "plan.yaml", &text)?;
        }
    }

    #[test]
    fn trace_reader(text in input(TRACES), ndjson in any::<bool>()) {
        let r = timed(|| if ndjson {
            crate::evaluate::trace::parse_ndjson(&text, "t.ndjson")
        } else {
            crate::evaluate::trace::parse_csv(&text, "t.csv")
        });
        if let Err(e) = r {
            prop_assert!(e.line <= text.lines().count() + 1, "{}", e);
            prop_assert!(!e.message.is_empty());
        }
    }

    #[test]
    fn expression_parser(text in input(EXPRESSIONS)) {
        if let Err(e) = timed(|| crate::policy::expression::parse(&text)) {
            prop_assert!(e.offset <= text.len(), "{} past {}", e.offset, text.len());
        }
    }

    #[test]
    fn cron_parser(text in input(CRONS)) {
        match timed(|| crate::config::cron::Cron::parse(&text)) {
            // A cron that reads never stops firing (a never-firing one is refused).
            Ok(c) => {
                let t0 = chrono::Utc::now();
                let next = c.next_after(chrono_tz::UTC, t0);
                prop_assert!(next.is_some_and(|n| n > t0), "{text:?} accepted but does not fire");
            }
            Err(e) => prop_assert!(!e.is_empty()),
        }
    }

    /// Whatever a crash (or a hostile hand) left in the spool directory, opening it keeps only
    /// whole documents of open segments, counts every byte it keeps, and appends go on.
    #[test]
    fn spool_recovery(files in prop::collection::vec(
        (0u64..4, any::<bool>(), input(&[SPOOLED])), 0..5)
    ) {
        let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut want = 0u64;
        for (seq, open, text) in &files {
            let ext = if *open { "open" } else { "ndjson" };
            let path = dir.path().join(format!("{seq:020}.{ext}"));
            std::fs::write(&path, text).map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
        for e in std::fs::read_dir(dir.path()).map_err(|e| TestCaseError::fail(e.to_string()))? {
            let p = e.map_err(|e| TestCaseError::fail(e.to_string()))?.path();
            let bytes = std::fs::read(&p).map_err(|e| TestCaseError::fail(e.to_string()))?;
            want += match p.extension().and_then(|x| x.to_str()) {
                Some("open") => crate::ship::spool::complete_pairs_len(&bytes) as u64,
                _ => bytes.len() as u64,
            };
        }
        let spool = timed(|| crate::ship::spool::Spool::open(
            dir.path(), 1 << 30, crate::config::OnFull::Block, 1 << 20));
        let spool = spool.map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(spool.size(), want);
        for seg in spool.sealed().map_err(|e| TestCaseError::fail(e.to_string()))? {
            prop_assert!(seg.path.extension().is_some_and(|x| x == "ndjson"), "{:?}", seg.path);
        }
        let rt = tokio::runtime::Builder::new_current_thread().build()
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let doc = b"{\"index\":{}}\n{\"a\":1}\n";
        rt.block_on(spool.append(doc)).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(spool.size(), want + doc.len() as u64);
    }
}

/// A spooled segment: bulk action and source lines.
const SPOOLED: &str = "{\"index\":{\"_index\":\"ecscale-metrics-2026.12.01\",\"_id\":\"a\"}}\n{\"@timestamp\":\"2026-12-01T13:17:15.427Z\",\"kind\":\"service\"}\n{\"index\":{\"_index\":\"ecscale-decisions-2026.12.01\",\"_id\":\"b\"}}\n{\"action\":\"hold\"}\n";

/// A value nested `depth` levels in one of the ways YAML and JSON nest (flow sequences, flow
/// mappings, block sequences, block mappings), or an expression nested by parentheses, signs,
/// negations or calls.
fn nested(form: u8, depth: usize) -> String {
    match form {
        0 => format!("{}1{}", "[".repeat(depth), "]".repeat(depth)),
        1 => format!("{}1{}", "{a: ".repeat(depth), "}".repeat(depth)),
        2 => format!("\n      {}1", "- ".repeat(depth)),
        // Block mappings grow by their indent: deep enough to pass the bound, no deeper.
        3 => (0..depth.min(3_000)).fold(String::new(), |s, i| format!("{s}\n{}a:", " ".repeat(6 + i))) + " 1",
        4 => format!("\"{}cpu{}\"", "(".repeat(depth), ")".repeat(depth)),
        5 => format!("\"{}cpu\"", "-".repeat(depth)),
        6 => format!("\"{}cpu\"", "!".repeat(depth)),
        _ => format!("\"{}cpu{}\"", "max(".repeat(depth), ")".repeat(depth)),
    }
}

/// Depths around the edges: shallow, about the bounds, and far past them.
fn depth() -> impl Strategy<Value = usize> {
    prop_oneof![1usize..80, 80usize..5_000, 5_000usize..=100_000]
}

/// A nested value where each reader takes a value: a policy's target (a YAML form) or its
/// expression (an expression form), a config's cluster name, a stress plan's phase duration.
fn host(reader: u8, value: &str) -> String {
    let expression = value.starts_with('"');
    match reader {
        0 => {
            let (target, expr) = if expression { ("60", value) } else { (value, "cpu") };
            format!(
                "target: production/web\nmin: 1\nmax: 10\nrules:\n  - kind: target_tracking\n    metric: cpu\n    target: {target}\n  - kind: expression\n    name: e\n    expression: {expr}\n"
            )
        }
        1 => CONFIG.replacen("name: production", &format!("name: {value}"), 1),
        _ => format!(
            "name: n\ntargets:\n  - url: http://127.0.0.1:9/\nphases:\n  - name: p\n    duration: {value}\n    rate: 1\n"
        ),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: (config().cases / 10).max(1), ..config() })]

    /// Nesting of every depth, in every form, in every reader: `Ok` or mistakes that say where,
    /// never more than a file's cap of them, never a stack overflow (the test thread's stack is
    /// the default), within the time bound.
    #[test]
    fn nesting_of_any_depth(form in 0u8..8, depth in depth(), reader in 0u8..3) {
        let text = host(reader, &nested(form, depth));
        let vars = crate::config::env::Vars::from_pairs([]);
        let nowhere = Path::new("/nonexistent");
        let r = timed(|| match reader {
            0 => crate::policy::load_str(&text, "p.yaml", nowhere).map(|_| ()),
            1 => crate::config::load_str(&text, "p.yaml", nowhere, &vars).map(|_| ()),
            _ => crate::stress::plan::load_str(&text, "p.yaml", nowhere).map(|_| ()),
        });
        if let Err(d) = r {
            positioned(&d, "p.yaml", &text)?;
            prop_assert!(d.0.len() <= 101, "{} mistakes", d.0.len());
        } else {
            // Only an expression within its bound reads.
            let bound = crate::policy::expression::MAX_DEPTH;
            prop_assert!(reader == 0 && form >= 4 && depth <= bound, "{depth} levels of form {form} read by {reader}");
        }
    }
}
