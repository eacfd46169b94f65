//! The docs say what the code does: the variable table is the code's list, every ECSCALE_
//! variable the code reads is in it, `--help` lists exactly the subcommands the README shows,
//! and every relative link of the README and `docs/` leads to a file that exists.

use std::collections::BTreeSet;

use ecscale::config::env::{TEST_VARIABLES, VARIABLES};

use crate::support::{ecscale, repo, run};

fn readme() -> String {
    std::fs::read_to_string(repo().join("README.md")).unwrap()
}

/// The reference page that holds the variable table.
fn configuration() -> String {
    std::fs::read_to_string(repo().join("docs/configuration.md")).unwrap()
}

#[test]
fn the_variable_table_is_the_codes_list() {
    let readme = configuration();
    let table: BTreeSet<String> = readme
        .lines()
        .filter_map(|l| l.strip_prefix("| `ECSCALE_"))
        .map(|l| format!("ECSCALE_{}", &l[..l.find('`').unwrap()]))
        .collect();
    let code: BTreeSet<String> = VARIABLES.iter().map(|(v, _)| v.to_string()).collect();
    assert_eq!(table, code);
    for (name, what) in VARIABLES {
        assert!(
            readme.contains(&format!("| `{name}` | {what} |")),
            "docs/configuration.md row for {name} differs from the code"
        );
    }
}

/// Every `ECSCALE_...` string literal in the production source is a documented variable.
#[test]
fn every_variable_the_code_reads_is_documented() {
    let known: BTreeSet<&str> = VARIABLES
        .iter()
        .map(|(v, _)| *v)
        .chain(TEST_VARIABLES.iter().copied())
        .collect();
    let mut stack = vec![repo().join("src")];
    let mut found = BTreeSet::new();
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("tests.rs") {
                // (Unit-test files set made-up variables on purpose.)
                let text = std::fs::read_to_string(&path).unwrap();
                for piece in text.split("\"ECSCALE_").skip(1) {
                    let name: String = piece
                        .chars()
                        .take_while(|c| c.is_ascii_uppercase() || *c == '_')
                        .collect();
                    // A whole name; the bare prefix "ECSCALE_" (used to filter) is not a variable.
                    if !name.is_empty() && piece[name.len()..].starts_with('"') {
                        found.insert(format!("ECSCALE_{name}"));
                    }
                }
            }
        }
    }
    for name in &found {
        assert!(
            known.contains(name.as_str()),
            "{name} is read in src/ but not documented"
        );
    }
    assert!(
        found.contains("ECSCALE_CONFIG") && found.contains("ECSCALE_AWS_REGION"),
        "{found:?}"
    );
}

#[test]
fn help_lists_exactly_the_working_subcommands() {
    let (code, stdout, _) = run(ecscale().arg("--help"));
    assert_eq!(code, 0);
    let commands: Vec<&str> = stdout
        .split("Commands:")
        .nth(1)
        .unwrap()
        .split("Options:")
        .next()
        .unwrap()
        .lines()
        // A command starts two spaces in; wrapped description lines are indented further.
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        commands,
        [
            "validate",
            "run",
            "collect",
            "status",
            "policy",
            "backtest",
            "stress",
            "demo",
            "setup",
            "ship",
            "dashboards",
            "trace",
            "tune",
            "twin",
            "deploy",
            "help"
        ]
    );
    let readme = readme();
    for c in [
        "ecscale validate --config",
        "ecscale run --config",
        "ecscale run --dry-run --config",
        "ecscale collect --once --config",
        "ecscale status --config",
        "ecscale policy check",
        "ecscale backtest --policy",
        "ecscale setup --es",
        "ecscale ship replay",
        "ecscale dashboards check",
        "ecscale dashboards install --kibana",
        "ecscale stress --url",
        "ecscale stress --plan",
        "ecscale demo",
        "ecscale backtest --simulate --policy",
        "ecscale trace export --config",
        "ecscale twin fit",
        "ecscale tune --policy",
        "ecscale deploy check --config",
    ] {
        assert!(readme.contains(c), "README shows `{c}`");
    }
}

#[test]
fn version_is_the_package_version() {
    let (code, stdout, _) = run(ecscale().arg("--version"));
    assert_eq!(code, 0);
    assert_eq!(stdout.trim(), format!("ecscale {}", env!("CARGO_PKG_VERSION")));
}

/// Every relative link (`[text](path)`, `[text](path#anchor)`) of the README and of every page
/// of `docs/` leads to a file that exists.
#[test]
fn every_relative_link_resolves() {
    let root = repo();
    let mut pages = vec![root.join("README.md")];
    for e in std::fs::read_dir(root.join("docs")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md") {
            pages.push(p);
        }
    }
    assert!(pages.len() >= 9, "{pages:?}");
    let mut checked = 0;
    for page in &pages {
        let text = std::fs::read_to_string(page).unwrap();
        for piece in text.split("](").skip(1) {
            let target = &piece[..piece.find(')').unwrap_or(0)];
            if target.is_empty()
                || target.contains("://")
                || target.starts_with('#')
                || target.starts_with("mailto:")
            {
                continue;
            }
            let path = target.split('#').next().unwrap();
            let resolved = page.parent().unwrap().join(path);
            assert!(
                resolved.exists(),
                "{}: link to {target} leads nowhere",
                page.display()
            );
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} relative links checked");
}

/// The layers of `docs/development.md`'s table, top first: each module's layer.
fn layers() -> std::collections::BTreeMap<String, usize> {
    let text = std::fs::read_to_string(repo().join("docs/development.md")).unwrap();
    let rule = &text[text.find("## The layering rule").unwrap()..];
    let block = rule.split("```").nth(1).unwrap();
    let mut out = std::collections::BTreeMap::new();
    for (layer, line) in block.lines().filter(|l| !l.trim().is_empty()).enumerate() {
        let modules = line.split("   ").next().unwrap();
        for m in modules.split_whitespace() {
            out.insert(m.trim_end_matches('/').to_string(), layer);
        }
    }
    out
}

/// A source file's code without comments and without its test module.
fn code_of(path: &std::path::Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = text.split("#[cfg(test)]\nmod tests").next().unwrap();
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The names after `prefix` in `code` (`crate::` → `collect`, `sim`, ...).
fn names_after(code: &str, prefix: &str) -> BTreeSet<String> {
    code.match_indices(prefix)
        .map(|(i, _)| {
            code[i + prefix.len()..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect::<String>()
        })
        .filter(|n| !n.is_empty())
        .collect()
}

/// Every non-test source file of `src/`, as (top module, file stem, folder-level file?, path).
fn sources() -> Vec<(String, String, bool, std::path::PathBuf)> {
    let src = repo().join("src");
    let mut out = Vec::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let stem = p.file_stem().unwrap().to_string_lossy().to_string();
            if p.extension().is_none_or(|x| x != "rs")
                || ["tests", "proptests", "fuzz"].contains(&stem.as_str())
            {
                continue;
            }
            let rel: Vec<String> = p
                .strip_prefix(&src)
                .unwrap()
                .iter()
                .map(|c| c.to_string_lossy().trim_end_matches(".rs").to_string())
                .collect();
            out.push((rel[0].clone(), stem, rel.len() == 2, p));
        }
    }
    out
}

/// Arrows point down: no module names a module of a layer above its own (the table of
/// `docs/development.md`, which must list every module), and no two files of one folder import
/// each other in a circle (a folder's `mod.rs` is their parent and left out).
#[test]
fn the_layering_rule_holds() {
    let layers = layers();
    let mut up = Vec::new();
    let mut edges: std::collections::BTreeMap<(String, String), BTreeSet<String>> = Default::default();
    for (top, stem, in_folder, path) in sources() {
        let code = code_of(&path);
        let mine = *layers
            .get(&top)
            .unwrap_or_else(|| panic!("{top} is not in docs/development.md's table"));
        for other in names_after(&code, "crate::").into_iter().filter(|o| *o != top) {
            let theirs = *layers
                .get(&other)
                .unwrap_or_else(|| panic!("{other} is not in docs/development.md's table"));
            if theirs < mine {
                up.push(format!("{} names crate::{other}", path.display()));
            }
        }
        if in_folder && stem != "mod" {
            let dir = path.parent().unwrap();
            let siblings = names_after(&code, "super::")
                .into_iter()
                .chain(names_after(&code, &format!("crate::{top}::")))
                .filter(|s| {
                    *s != stem
                        && *s != "mod"
                        && (dir.join(format!("{s}.rs")).exists() || dir.join(s).is_dir())
                });
            edges.insert((top.clone(), stem.clone()), siblings.collect());
        }
    }
    assert!(up.is_empty(), "imports that point up a layer:\n{}", up.join("\n"));
    // A circle: a file that reaches itself through its siblings' imports.
    for ((top, start), _) in edges.iter() {
        let mut seen = BTreeSet::new();
        let mut todo: Vec<(String, Vec<String>)> = vec![(start.clone(), vec![start.clone()])];
        while let Some((at, trail)) = todo.pop() {
            for next in edges.get(&(top.clone(), at)).into_iter().flatten() {
                assert!(
                    next != start,
                    "{top}/: {} → {start} is a circle",
                    trail.join(" → ")
                );
                if seen.insert(next.clone()) {
                    let mut t = trail.clone();
                    t.push(next.clone());
                    todo.push((next.clone(), t));
                }
            }
        }
    }
}

/// The functions of `text` (its test module left out) longer than `limit` lines, counted from
/// `fn` to the closing brace at the same indent, as `name (lines)`.
fn long_functions(text: &str, limit: usize) -> Vec<String> {
    let text = text.split("#[cfg(test)]\nmod tests").next().unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let indent = line.len() - line.trim_start().len();
        let words: Vec<&str> = line.split_whitespace().collect();
        let at = words.iter().position(|w| *w == "fn");
        let signature = at.is_some_and(|k| {
            words[..k]
                .iter()
                .all(|w| w.starts_with("pub") || ["async", "const", "unsafe"].contains(w))
        });
        // A declaration without a body (a trait's) ends in `;` before any `{`.
        let body = (i..lines.len()).find(|&k| {
            let l = lines[k].trim_end();
            l.ends_with('{') || l.ends_with(';')
        });
        let Some(open) = body.filter(|&k| signature && lines[k].trim_end().ends_with('{')) else {
            i += 1;
            continue;
        };
        let close = (open..lines.len())
            .find(|&k| {
                let l = lines[k];
                l.len() > indent && l[indent..].starts_with('}') && l[..indent].trim().is_empty()
            })
            .unwrap_or(lines.len() - 1);
        let n = close - i + 1;
        if n > limit {
            let name = words[at.unwrap() + 1].split(['(', '<']).next().unwrap();
            out.push(format!("{name} ({n} lines)"));
        }
        i = close + 1;
    }
    out
}

/// Functions short enough to read whole: none over 80 lines in the logic modules (collect, the
/// engine, the worker, actuate, ship, stress's run and coordination, the simulator's run), and
/// at most 15 in all (rendering, data tables and readers may run longer).
#[test]
fn functions_stay_short_enough_to_read_whole() {
    let logic = [
        "collect", "evaluate", "worker", "actuate", "ship", "stress", "sim",
    ];
    let mut in_logic = Vec::new();
    let mut all = Vec::new();
    for (top, stem, _, path) in sources() {
        let text = std::fs::read_to_string(&path).unwrap();
        for f in long_functions(&text, 80) {
            let place = format!("{}: {f}", path.strip_prefix(repo()).unwrap().display());
            if logic.contains(&top.as_str()) && stem != "report" {
                in_logic.push(place.clone());
            }
            all.push(place);
        }
    }
    assert!(
        in_logic.is_empty(),
        "functions over 80 lines in the logic modules:\n{}",
        in_logic.join("\n")
    );
    assert!(
        all.len() <= 15,
        "{} functions over 80 lines:\n{}",
        all.len(),
        all.join("\n")
    );
    // The counter counts: a function of 81 lines is long, a trait's declaration is not.
    let long = format!(
        "fn a() {{\n{}}}\ntrait T {{\n    fn b(&self);\n}}\n",
        "    x();\n".repeat(79)
    );
    assert_eq!(long_functions(&long, 80), ["a (81 lines)"]);
    assert!(long_functions(&long, 81).is_empty());
}
