//! `ecscale validate`: every mistake at once with file:line:column and exit 2; the shipped
//! examples (the example file, the README's sample) are valid.

use crate::support::{ecscale, path_str, repo, run, write};

#[test]
fn three_mistakes_are_all_reported_with_positions_and_exit_2() {
    let (code, stdout, stderr) =
        run(ecscale().args(["validate", "--config", "tests/fixtures/three-mistakes.yaml"]));
    assert_eq!(code, 2, "stderr: {stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    let f = "tests/fixtures/three-mistakes.yaml";
    let want = [
        format!("{f}:4:19: aws.retry.max_attempts: expected a whole number, found `lots`"),
        format!("{f}:6:3: schedule.intervall: unknown key `intervall` (expected one of: interval, cron); did you mean `interval`?"),
        format!("{f}:15:21: clusters[0].services[0].metrics[0].period: CloudWatch periods are 1s, 5s, 10s, 20s, 30s or a multiple of 60s; found 45s"),
        format!("3 mistakes in {f}"),
    ];
    let lines: Vec<&str> = stderr
        .lines()
        .map(|l| l.strip_prefix("error: ").unwrap_or(l))
        .collect();
    assert_eq!(lines, want);
}

#[test]
fn the_example_config_is_valid() {
    let (code, stdout, stderr) = run(ecscale().args(["validate", "--config", "examples/ecscale.yaml"]));
    assert_eq!(code, 0, "{stderr}");
    let summary = stdout.lines().next().unwrap();
    assert!(
        summary.ends_with(
            "8 policy files with 8 targets, 1 Auto Scaling group (production-ecs-m5), 1 task group placed by ecscale (queue-worker), state in examples/ecscale-state.json"
        ),
        "{stdout}"
    );
    assert!(
        stdout.starts_with("examples/ecscale.yaml: valid: 1 cluster, 6 named services and 1 discovery rule (23 metrics on named services), every 30s"),
        "{stdout}"
    );
    // Then the month's CloudWatch requests, each rhythm's arithmetic on its line: the 23
    // service metrics at 1 minute are 23 × 43,200.
    let cost: Vec<&str> = stdout.lines().skip(1).collect();
    assert!(
        cost[0].starts_with("CloudWatch: about 1,264,320 metrics requested a month, $12.64 a month"),
        "{stdout}"
    );
    assert!(
        cost.contains(&"  23 service metrics every 1m: 23 × 30 days ÷ 1m = 993,600"),
        "{stdout}"
    );
    assert!(cost.last().unwrap().contains("named services only"), "{stdout}");
}

/// The README's sample config (between the `sample-config` markers) is valid as printed.
#[test]
fn the_readme_sample_config_is_valid() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let start = readme
        .find("<!-- sample-config -->")
        .expect("README has a sample-config marker");
    let block = &readme[start..];
    let yaml_start = block.find("```yaml\n").expect("a yaml block follows the marker") + 8;
    let yaml = &block[yaml_start..yaml_start + block[yaml_start..].find("```").unwrap()];
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "ecscale.yaml", yaml);
    let (code, stdout, stderr) = run(ecscale().arg("validate").arg("--config").arg(&path));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains(": valid: "), "{stdout}");
}

#[test]
fn the_config_can_come_from_ecscale_config_and_bad_overrides_are_mistakes() {
    let (code, stdout, _) = run(ecscale()
        .arg("validate")
        .env("ECSCALE_CONFIG", "examples/ecscale.yaml"));
    assert_eq!(code, 0);
    assert!(stdout.starts_with("examples/ecscale.yaml: valid"), "{stdout}");

    let (code, _, stderr) = run(ecscale()
        .args(["validate", "--config", "examples/ecscale.yaml"])
        .env("ECSCALE_AWS_ENDPOINT_URL", "not a url"));
    assert_eq!(code, 2);
    assert!(
        stderr.contains("environment: ECSCALE_AWS_ENDPOINT_URL: `not a url` is not a URL"),
        "{stderr}"
    );
}

#[test]
fn a_missing_config_file_is_named() {
    let (code, _, stderr) = run(ecscale().args(["validate", "--config", "no/such/ecscale.yaml"]));
    assert_eq!(code, 2);
    assert!(
        stderr.contains("no/such/ecscale.yaml: (file): cannot read the config file"),
        "{stderr}"
    );
}

#[test]
fn collect_without_once_points_at_the_worker() {
    let (code, _, stderr) = run(ecscale().args(["collect", "--config", "examples/ecscale.yaml"]));
    assert_eq!(code, 2);
    assert!(
        stderr.contains("add --once") && stderr.contains("`ecscale run`"),
        "{stderr}"
    );
}

/// One case of `tests/fixtures/bad/`: the file, the command, the exact error lines, and the
/// most memory reading it may take.
struct BadCase {
    file: String,
    run: Vec<String>,
    errors: Vec<String>,
    max_rss_mib: Option<u64>,
}

fn bad_cases() -> Vec<BadCase> {
    let dir = repo().join("tests/fixtures/bad");
    let mut cases = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(file) = name.strip_suffix(".expect") else {
            continue;
        };
        let f = format!("tests/fixtures/bad/{file}");
        assert!(repo().join(&f).is_file(), "{name} names no file");
        let mut case = BadCase {
            file: f.clone(),
            run: Vec::new(),
            errors: Vec::new(),
            max_rss_mib: None,
        };
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            let line = line.replace("{f}", &f);
            if let Some(cmd) = line.strip_prefix("run: ") {
                case.run = cmd.split_whitespace().map(str::to_string).collect();
            } else if let Some(e) = line.strip_prefix("error: ") {
                case.errors.push(e.to_string());
            } else if let Some(m) = line.strip_prefix("max_rss_mib: ") {
                case.max_rss_mib = Some(m.parse().unwrap());
            } else {
                assert!(line.is_empty() || line.starts_with('#'), "{name}: `{line}`");
            }
        }
        assert!(
            !case.run.is_empty() && !case.errors.is_empty(),
            "{name}: run and error"
        );
        cases.push(case);
    }
    cases.sort_by(|a, b| a.file.cmp(&b.file));
    cases
}

/// Runs ecscale with `args` under a Python parent that reports the child's peak RSS (KiB):
/// (exit code, stdout, stderr without the report, peak RSS in KiB).
fn run_measured(args: &[String]) -> (i32, String, String, u64) {
    const MEASURE: &str = "import resource, subprocess, sys\n\
        r = subprocess.run(sys.argv[1:])\n\
        sys.stderr.write('\\nmaxrss_kib=%d\\n' % resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n\
        sys.exit(r.returncode)\n";
    let bin = ecscale().get_program().to_owned();
    let (code, stdout, stderr) = run(std::process::Command::new("python3")
        .args(["-c", MEASURE])
        .arg(bin)
        .args(args)
        .current_dir(repo()));
    let (text, rss) = stderr.rsplit_once("\nmaxrss_kib=").expect("the measure line");
    (code, stdout, text.to_string(), rss.trim().parse().unwrap())
}

#[test]
fn every_bad_input_gets_its_exact_positioned_error_exit_2_and_bounded_memory() {
    let cases = bad_cases();
    assert!(cases.len() >= 9, "the corpus is there: {}", cases.len());
    for c in &cases {
        let (code, stdout, stderr, rss_kib) = run_measured(&c.run);
        assert_eq!(code, 2, "{}: {stderr}", c.file);
        assert!(stdout.is_empty(), "{}: nothing on stdout: {stdout}", c.file);
        let lines: Vec<&str> = stderr
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| l.strip_prefix("error: ").unwrap_or(l))
            .collect();
        assert_eq!(lines, c.errors, "{}", c.file);
        if let Some(mib) = c.max_rss_mib {
            assert!(
                rss_kib < mib * 1024,
                "{}: peak RSS {rss_kib} KiB over {mib} MiB",
                c.file
            );
        }
    }
}

#[test]
fn a_file_over_the_size_bound_is_refused_without_reading_it_all() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.yaml");
    // 1 GiB of holes: refused after reading 16 MiB of it.
    std::fs::File::create(&path).unwrap().set_len(1 << 30).unwrap();
    let args = ["validate", "--config", path.to_str().unwrap()].map(str::to_string);
    let (code, _, stderr, rss_kib) = run_measured(&args);
    assert_eq!(code, 2, "{stderr}");
    let want = format!(
        "error: {}: (file): cannot read the config file: larger than 16 MiB, the most this file may hold",
        path.display()
    );
    assert_eq!(stderr.lines().next(), Some(want.as_str()), "{stderr}");
    assert!(rss_kib < 96 * 1024, "peak RSS {rss_kib} KiB");
}

/// Every file ecscale reads, by the command that reads it, nested 10 to 100,000 levels deep in
/// each way its format nests: never an abort (a stack overflow is exit 134), always exit 2 with
/// the file and a position, and a few mistakes, not one a level.
#[test]
fn every_reader_refuses_nesting_of_every_depth_with_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let root = repo();
    let (web, trace) = (
        root.join("policies/web.yaml"),
        root.join("examples/traces/step.csv"),
    );
    let config = root.join("examples/ecscale.yaml");
    let out = dir.path().join("tuned.yaml");
    // Each reader: the command, with `{}` where the hostile file goes.
    let yaml_readers: [(&str, Vec<&str>); 7] = [
        ("config", vec!["validate", "--config", "{}"]),
        ("policy", vec!["policy", "check", "{}"]),
        (
            "tune's policy",
            vec![
                "tune",
                "--policy",
                "{}",
                "--metrics",
                path_str(&trace),
                "--out",
                path_str(&out),
            ],
        ),
        ("stress plan", vec!["stress", "--plan", "{}"]),
        ("demo scenario", vec!["demo", "--scenario", "{}"]),
        (
            "twin",
            vec![
                "backtest",
                "--simulate",
                "--policy",
                path_str(&web),
                "--metrics",
                path_str(&trace),
                "--twin",
                "{}",
            ],
        ),
        (
            "stack template",
            vec![
                "deploy",
                "check",
                "--template",
                "{}",
                "--config",
                path_str(&config),
            ],
        ),
    ];
    let json_readers: [(&str, Vec<&str>); 2] = [
        (
            "NDJSON trace",
            vec!["backtest", "--policy", path_str(&web), "--metrics", "{}"],
        ),
        ("twin fit's trace", vec!["twin", "fit", "--metrics", "{}"]),
    ];
    for n in [10usize, 100, 1_000, 10_000, 100_000] {
        let yaml = [
            ("block", format!("{}1\n", "- ".repeat(n))),
            ("flow", format!("{}{}\n", "[".repeat(n), "]".repeat(n))),
            ("mappings", format!("{}1{}\n", "{k: ".repeat(n), "}".repeat(n))),
        ];
        let json = format!(
            "{{\"timestamp\":\"2026-01-01T00:00:00Z\",\"x\":{}{}}}\n",
            "[".repeat(n),
            "]".repeat(n)
        );
        let cases = yaml.iter().flat_map(|(form, text)| {
            yaml_readers
                .iter()
                .map(move |(what, args)| (*what, *form, "yaml", text.as_str(), args))
        });
        let cases = cases.chain(
            json_readers
                .iter()
                .map(|(what, args)| (*what, "arrays", "ndjson", json.as_str(), args)),
        );
        for (what, form, ext, text, args) in cases {
            let file = write(dir.path(), &format!("deep-{n}-{form}.{ext}"), text);
            let name = file.file_name().unwrap().to_str().unwrap().to_string();
            let args: Vec<&str> = args
                .iter()
                .map(|a| if *a == "{}" { path_str(&file) } else { a })
                .collect();
            let (code, stdout, stderr) = run(ecscale().args(&args));
            let case = format!("{what}, {form} {n} deep: exit {code}\n{stdout}\n{stderr}");
            assert_eq!(code, 2, "{case}");
            let first = stderr.lines().find(|l| l.contains(&name)).unwrap_or_default();
            // The file with its line, and a column where the reader knows one.
            assert!(
                first.contains(&format!("{name}:1")) || (n <= 64 && first.contains(&name)),
                "{case}"
            );
            assert!(
                stderr.lines().filter(|l| l.contains(&name)).count() <= 8,
                "a few mistakes, not one a level: {case}"
            );
            if n > 128 {
                assert!(
                    first.contains("deeper than") || first.contains("recursion limit"),
                    "{case}"
                );
            }
        }
    }
}
