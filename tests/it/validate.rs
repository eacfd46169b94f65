//! `ecscale validate`: every mistake at once with file:line:column and exit 2; the shipped
//! examples (the example file, the README's sample) are valid.

use crate::support::{ecscale, repo, run, write};

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
    assert_eq!(stdout.lines().count(), 1, "one summary line: {stdout}");
    assert!(
        stdout.trim_end().ends_with(
            "7 policy files with 7 targets, 1 Auto Scaling group (production-ecs-m5), state in examples/ecscale-state.json"
        ),
        "{stdout}"
    );
    assert!(
        stdout.starts_with("examples/ecscale.yaml: valid: 1 cluster, 6 named services and 1 discovery rule (23 metrics on named services), every 30s"),
        "{stdout}"
    );
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
