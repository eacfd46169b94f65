//! Reading the config: what is accepted, and for each kind of mistake, where it is reported.

use std::path::Path;
use std::time::Duration;

use super::*;

const MINIMAL: &str = "schedule: {interval: 30s}\nclusters: [{name: prod, services: [web]}]\n";

fn load(src: &str) -> Result<Config, Diagnostics> {
    load_str(src, "c.yaml", Path::new("/etc/ecscale"), &env::Vars::default())
}

/// `line:col path: message` of each mistake.
fn mistakes(src: &str) -> Vec<String> {
    match load(src) {
        Ok(_) => panic!("expected mistakes in:\n{src}"),
        Err(d) => {
            d.0.iter()
                .map(|d| format!("{} {}: {}", d.span, d.path, d.message))
                .collect()
        }
    }
}

#[test]
fn a_minimal_config_gets_every_default() {
    let c = load(MINIMAL).unwrap();
    assert_eq!(c.aws.retry, RetrySettings::default());
    assert_eq!(c.aws.timeouts, TimeoutSettings::default());
    assert_eq!(c.collect, CollectSettings::default());
    assert!(matches!(c.schedule, Schedule::Interval(d) if d == Duration::from_secs(30)));
    assert_eq!(c.clusters[0].services[0].name, "web");
    assert!(c.clusters[0].default_metrics);
    assert_eq!(c.sink.spool.dir, Path::new("/etc/ecscale/spool"));
    assert!(c.sink.elasticsearch.is_none());
    assert!(c.policy_files.is_empty());
}

#[test]
fn each_mistake_is_reported_where_it_is() {
    let cases: &[(&str, &[&str])] = &[
        ("schedule: {interval: 30s}\n", &["1:1 clusters: missing required field"]),
        (
            "schedule: {interval: 30s}\nclusters: []\n",
            &["2:11 clusters: name at least one cluster to manage"],
        ),
        (
            "schedule: {interval: 30s, cron: '* * * * *'}\nclusters: [{name: a, services: [b]}]\n",
            &["1:11 schedule: give either `interval` or `cron`, not both"],
        ),
        (
            "schedule: {cron: 'every minute'}\nclusters: [{name: a, services: [b]}]\n",
            &["1:18 schedule.cron: `every minute` has 2 fields; write 5 (minute hour day month weekday) or 6 (second minute hour day month weekday)"],
        ),
        (
            "schedule: {interval: 500ms}\nclusters: [{name: a, services: [b]}]\n",
            &["1:22 schedule.interval: must be at least 1s"],
        ),
        (
            "aws: {region: US-EAST-1, endpoint_url: 'localhost:5000'}\nschedule: {interval: 30s}\nclusters: [{name: a, services: [b]}]\n",
            &[
                "1:15 aws.region: `US-EAST-1` does not look like an AWS region (e.g. us-east-1)",
                "1:40 aws.endpoint_url: `localhost:5000` must be an http:// or https:// URL with a host (scheme `localhost`)",
            ],
        ),
        (
            "aws: {retry: {mode: agressive, initial_backoff: 2s, max_backoff: 1s}}\nschedule: {interval: 30s}\nclusters: [{name: a, services: [b]}]\n",
            &[
                "1:21 aws.retry.mode: `agressive` is not one of: standard, adaptive",
                "1:66 aws.retry.max_backoff: must not be shorter than initial_backoff",
            ],
        ),
        (
            "schedule: {interval: 30s}\nclusters:\n  - name: a\n  - name: a\n    services: [b, b]\n",
            &[
                "3:5 clusters[0]: give `services` (a list) or `discover` (name_prefix and/or tags), or both",
                "4:5 clusters[1].name: cluster `a` is already listed on line 3",
                "5:19 clusters[1].services[1].name: service `b` is already listed on line 5",
            ],
        ),
        (
            "schedule: {interval: 30s}\nclusters: [{name: a, discover: {}}]\n",
            &["2:32 clusters[0].discover: give `name_prefix`, `tags`, or both (otherwise every service would match)"],
        ),
        (
            "schedule: {interval: 30s}\nclusters:\n  - name: a\n    services:\n      - name: b\n        load_balancer: app/x/1\n        target_group: not-an-arn\n",
            &["7:23 clusters[0].services[0].target_group: `not-an-arn` is neither an ARN nor a `targetgroup/NAME/ID` name"],
        ),
        (
            "schedule: {interval: 30s}\nclusters:\n  - name: a\n    services:\n      - name: b\n        metrics:\n          - id: Bad-Id\n            namespace: N\n            metric_name: M\n            stat: p101\n            dimensions: {X: '${nope}'}\n            unit: Percents\n",
            &[
                "7:17 clusters[0].services[0].metrics[0].id: `Bad-Id`: ids are lowercase letters, digits and _, starting with a letter",
                "10:19 clusters[0].services[0].metrics[0].stat: `p101` is not a CloudWatch statistic (Average, Sum, Minimum, Maximum, SampleCount, IQM or a percentile such as p95)",
                "11:25 clusters[0].services[0].metrics[0].dimensions.X: `${nope}`: unknown placeholder `${nope}` (known: ${cluster}, ${service}, ${target_group}, ${load_balancer})",
                "12:19 clusters[0].services[0].metrics[0].unit: `Percents` is not one of: Seconds, Microseconds, Milliseconds, Bytes, Kilobytes, Megabytes, Gigabytes, Terabytes, Bits, Kilobits, Megabits, Gigabits, Terabits, Percent, Count, Bytes/Second, Kilobytes/Second, Megabytes/Second, Gigabytes/Second, Terabytes/Second, Bits/Second, Kilobits/Second, Megabits/Second, Gigabits/Second, Terabits/Second, Count/Second, None; did you mean `Percent`?",
            ],
        ),
        (
            "schedule: {interval: 30s}\ncollect: {lookback: 30s}\nclusters: [{name: a, services: [b]}]\n",
            &["2:21 collect.lookback: must be at least one period long"],
        ),
        (
            "schedule: {interval: 30s}\nclusters: [{name: a, services: [b]}]\nsink:\n  elasticsearch: {url: 'http://es:9200', username: u, api_key_env: 'my key'}\n  spool: {max_size: 1 parsec, on_full: drop}\n",
            &[
                "4:18 sink.elasticsearch: basic auth needs both `username` and `password_env`",
                "4:18 sink.elasticsearch: give basic auth (`username`, `password_env`) or `api_key_env`, not both",
                "4:68 sink.elasticsearch.api_key_env: `my key` is not an environment variable name: give the variable's name, never the secret itself",
                "5:21 sink.spool.max_size: unknown size unit `parsec`; use B, KB, MB, GB, KiB, MiB, GiB",
                "5:40 sink.spool.on_full: `drop` is not one of: block, drop_oldest",
            ],
        ),
        (
            "schedule: {interval: 30s}\nclusters: [{name: a, services: [b]}]\npolicies: [does-not-exist/*.yaml]\n",
            &["3:12 policies[0]: no policy file matches `does-not-exist/*.yaml` (looked for /etc/ecscale/does-not-exist/*.yaml)"],
        ),
        (
            "schedule: {interval: 30s}\nclusters: [{name: a, services: [b]}]\nworkers: {}\n",
            &["3:1 workers: unknown key `workers` (expected one of: aws, schedule, collect, clusters, capacity, sink, policies, worker, notify, prometheus, groups); did you mean `worker`?"],
        ),
        (
            "schedule: {interval: 30s}\nclusters: [{name: a, services: [b]}]\nworker: {metrics_addr: localhost, update_rate: 0, leader: {dynamodb_table: t, lease: 1s}}\n",
            &[
                "3:24 worker.metrics_addr: `localhost` is not an address such as 127.0.0.1:9464 (invalid socket address syntax); `off` serves nothing",
                "3:48 worker.update_rate: must be above 0 and at most 50 calls per second",
                "3:59 worker.leader: several workers need a shared state: set state.dynamodb_table too",
                "3:86 worker.leader.lease: must be at least 2s (it is renewed every third of it)",
            ],
        ),
        (
            "schedule: {interval: 30s}\nclusters: [{name: a, services: [b]}]\ncapacity:\n  - {auto_scaling_group: g1, cluster: a, headroom: 150%}\n  - {auto_scaling_group: g2, cluster: a}\n  - {auto_scaling_group: g3, cluster: z, instance: {cpu: 2048}}\n",
            &[
                "4:52 capacity[0].headroom: expected a fraction such as 10% or 0.1, found `150%`",
                "5:5 capacity: auto_scaling_group g2: cluster `a` already has a group (g1); one group per cluster (the tasks of a cluster are packed onto one group's instances)",
                "6:5 capacity: auto_scaling_group g3: cluster `z` is not in `clusters`",
                "6:52 capacity[2].instance.memory_mib: missing required field",
            ],
        ),
        ("- just\n- a list\n", &["1:1 : expected a mapping of keys to values, found a list"]),
        ("a: 1\n---\nb: 2\n", &["3:1 (file): the config file must hold one YAML document, not several"]),
        ("", &["1:1 (file): the config file is empty"]),
    ];
    for (src, want) in cases {
        assert_eq!(mistakes(src), *want, "for:\n{src}");
    }
}

#[test]
fn cron_takes_crontab_and_seconds_forms() {
    let five = parse_cron("*/5 * * * *").unwrap();
    let six = parse_cron("0 */5 * * * *").unwrap();
    let after = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
    let utc = chrono_tz::Tz::UTC;
    assert_eq!(five.next_after(utc, after), six.next_after(utc, after));
    assert!(parse_cron("0 0 25 * * *")
        .unwrap_err()
        .contains("not a valid cron expression"));
}

#[test]
fn environment_variables_override_runtime_knobs() {
    let vars = env::Vars::from_pairs([
        ("ECSCALE_AWS_REGION", "eu-west-1"),
        ("ECSCALE_AWS_ENDPOINT_URL", "http://127.0.0.1:5000"),
        ("ECSCALE_AWS_MAX_ATTEMPTS", "7"),
        ("ECSCALE_ES_URL", "http://127.0.0.1:9200"),
        ("ECSCALE_SPOOL_DIR", "/var/spool/ecscale"),
        ("ECSCALE_TEST_MOTO_URL", "ignored"),
        ("ECSCALE_REGOIN", "typo"),
    ]);
    let c = load_str(MINIMAL, "c.yaml", Path::new("."), &vars).unwrap();
    assert_eq!(c.aws.region.as_deref(), Some("eu-west-1"));
    assert_eq!(c.aws.endpoint_url.as_deref(), Some("http://127.0.0.1:5000"));
    assert_eq!(c.aws.retry.max_attempts, 7);
    assert_eq!(
        c.sink.elasticsearch.map(|e| e.url).as_deref(),
        Some("http://127.0.0.1:9200")
    );
    assert_eq!(c.sink.spool.dir, Path::new("/var/spool/ecscale"));
    assert_eq!(vars.unknown(), ["ECSCALE_REGOIN"]);
}

#[test]
fn bad_environment_values_are_mistakes_too() {
    let vars = env::Vars::from_pairs([
        ("ECSCALE_AWS_MAX_ATTEMPTS", "many"),
        ("ECSCALE_ES_URL", "es:9200"),
    ]);
    let src = "schedule: {interval: 0s}\nclusters: [{name: a, services: [b]}]\n";
    let d = load_str(src, "c.yaml", Path::new("."), &vars).unwrap_err();
    let got: Vec<String> = d.0.iter().map(|d| d.to_string()).collect();
    // The file's own mistake first: the overrides are only applied to a config that read.
    assert_eq!(got, ["c.yaml:1:22: schedule.interval: must be longer than zero"]);

    let d = load_str(MINIMAL, "c.yaml", Path::new("."), &vars).unwrap_err();
    let got: Vec<String> = d.0.iter().map(|d| d.to_string()).collect();
    assert_eq!(
        got,
        [
            "environment: ECSCALE_AWS_MAX_ATTEMPTS: `many` is not a whole number from 1 to 20",
            "environment: ECSCALE_ES_URL: `es:9200` must be an http:// or https:// URL with a host (scheme `es`)",
        ]
    );
}

#[test]
fn notification_targets_and_the_watch_setting_are_read_with_their_defaults() {
    let c = load(&format!(
        "{MINIMAL}worker: {{watch: 'off'}}\nnotify:\n  - {{name: chat, url_env: SLACK_URL, format: slack, events: [action, reload]}}\n  - {{name: hook, url: 'https://hooks.example.com/x', bearer_token_env: HOOK_TOKEN, per_minute: 6, queue: 10, timeout: 2s, retries: 0}}\n"
    ))
    .unwrap();
    assert_eq!(c.worker.watch, None);
    assert_eq!(c.notify.len(), 2);
    let (chat, hook) = (&c.notify[0], &c.notify[1]);
    assert_eq!(chat.url, UrlSource::Env("SLACK_URL".into()));
    assert_eq!(chat.format, NotifyFormat::Slack);
    assert_eq!(chat.events, [EventKind::Action, EventKind::Reload]);
    assert_eq!((chat.queue, chat.per_minute, chat.retries), (100, 30, 3));
    assert_eq!(chat.timeout, Duration::from_secs(5));
    assert_eq!(hook.url, UrlSource::Literal("https://hooks.example.com/x".into()));
    assert_eq!(hook.events, EventKind::ALL);
    assert_eq!(hook.bearer_token_env.as_deref(), Some("HOOK_TOKEN"));
    assert_eq!((hook.queue, hook.per_minute, hook.retries), (10, 6, 0));
    assert_eq!(load(MINIMAL).unwrap().worker.watch, Some(Duration::from_secs(2)));
    let c = load(&format!("{MINIMAL}worker: {{watch: 500ms}}\n")).unwrap();
    assert_eq!(c.worker.watch, Some(Duration::from_millis(500)));
}

#[test]
fn each_notification_mistake_is_reported_where_it_is() {
    let cases: &[(&str, &[&str])] = &[
        (
            "notify: [{name: a, url: 'https://u:p@hooks.example.com/'}]\n",
            &["3:25 notify[0].url: `https://***@hooks.example.com/`: credentials in a URL are not accepted (they would end up in logs and messages); for Elasticsearch give sink.elasticsearch.username with password_env, or api_key_env"],
        ),
        (
            "notify: [{name: a, url: 'https://h/', url_env: H}]\n",
            &["3:48 notify[0]: give `url` or `url_env`, not both"],
        ),
        ("notify: [{name: a}]\n", &["3:10 notify[0]: give `url`, or `url_env` naming a variable that holds it"]),
        (
            "notify: [{name: a, url_env: 'https://hooks.slack.com/T0/B0/x'}]\n",
            &["3:29 notify[0].url_env: `https://hooks.slack.com/T0/B0/x` is not an environment variable name: give the variable's name, never the secret itself"],
        ),
        (
            "notify: [{name: a, url: 'http://h/', events: [action, scale]}]\n",
            &["3:55 notify[0].events[1]: unknown event kind `scale` (expected one of: action, refusal, error, leader, reload)"],
        ),
        (
            "notify: [{name: a, url: 'http://h/', queue: 0, per_minute: 9000}]\n",
            &[
                "3:45 notify[0].queue: must be from 1 to 100000 events",
                "3:60 notify[0].per_minute: must be from 1 to 6000 requests",
            ],
        ),
        (
            "notify: [{name: a, url: 'http://h/'}, {name: a, url: 'http://i/'}]\n",
            &["3:39 notify[1].name: notification target `a` is already listed on line 3"],
        ),
        ("worker: {watch: 0s}\n", &["3:17 worker.watch: must be longer than zero"]),
    ];
    for (extra, want) in cases {
        assert_eq!(mistakes(&format!("{MINIMAL}{extra}")), *want, "{extra}");
    }
}

#[test]
fn a_metric_can_be_a_prometheus_query_and_cloudwatch_fields_do_not_mix_with_it() {
    let c = load(
        "schedule: {interval: 30s}\nprometheus: {url: 'http://prom:9090', bearer_token_env: PROM_TOKEN, timeout: 5s}\nclusters:\n  - name: prod\n    services:\n      - name: web\n        metrics:\n          - {id: rps, prometheus: {query: 'sum(rate(http_requests_total{service=\"${service}\"}[1m]))'}, period: 60s}\n          - {id: lag, prometheus: {query: 'max(kafka_lag)', url: 'http://other:9090'}, per_task: true}\n",
    )
    .unwrap();
    assert_eq!(c.prometheus.url.as_deref(), Some("http://prom:9090"));
    assert_eq!(c.prometheus.bearer_token_env.as_deref(), Some("PROM_TOKEN"));
    assert_eq!(c.prometheus.timeout, Some(Duration::from_secs(5)));
    let m = &c.clusters[0].services[0].metrics;
    let q = m[0].prometheus.as_ref().unwrap();
    assert_eq!(
        q.query,
        "sum(rate(http_requests_total{service=\"${service}\"}[1m]))"
    );
    assert_eq!(
        (m[0].namespace.as_str(), m[0].stat.as_str()),
        ("Prometheus", "value")
    );
    assert_eq!(
        m[1].prometheus.as_ref().unwrap().url.as_deref(),
        Some("http://other:9090")
    );
    assert!(m[1].per_task);

    let svc = |metric: &str| {
        format!("schedule: {{interval: 30s}}\nclusters:\n  - name: prod\n    services:\n      - name: web\n        metrics:\n          - {metric}\n")
    };
    let cases: &[(String, &[&str])] = &[
        (
            svc("{id: rps, prometheus: {query: 'up'}}"),
            &["5:9 prometheus.url: metric `rps` reads Prometheus, but neither its `prometheus.url` nor a top-level `prometheus.url` is given"],
        ),
        (
            svc("{id: rps, prometheus: {query: 'up', url: 'http://p/'}, namespace: AWS/ECS, stat: Sum}"),
            &[
                "7:79 clusters[0].services[0].metrics[0].namespace: `namespace` is CloudWatch's: a metric with `prometheus` is its query alone",
                "7:94 clusters[0].services[0].metrics[0].stat: `stat` is CloudWatch's: a metric with `prometheus` is its query alone",
            ],
        ),
        (
            svc("{id: rps, prometheus: {query: 'up{a=\"${pod}\"}', url: 'http://p/'}}"),
            &["7:43 clusters[0].services[0].metrics[0].prometheus.query: `up{a=\"${pod}\"}`: unknown placeholder `${pod}` (known: ${cluster}, ${service}, ${target_group}, ${load_balancer})"],
        ),
        (
            format!("prometheus: {{url: 'http://p/', username: u}}\n{}", svc("{id: rps, prometheus: {query: up}}")),
            &["1:13 prometheus: basic auth needs both `username` and `password_env`"],
        ),
    ];
    for (src, want) in cases {
        assert_eq!(mistakes(src), *want, "{src}");
    }
}

#[test]
fn task_groups_are_read_and_their_mistakes_are_positioned() {
    let c = load(&format!(
        "{MINIMAL}groups:\n  - name: worker\n    cluster: prod\n    task_definition: worker:3\n    placement: {{strategy: binpack, field: cpu}}\n    constraints: [distinct_instance, 'attribute:ecs.instance-type in [m5.large, m5.xlarge]']\n  - {{name: agent, cluster: prod, task_definition: agent, placement: {{strategy: daemon}}}}\n"
    ))
    .unwrap();
    assert_eq!(c.groups.len(), 2);
    assert_eq!(c.groups[0].placement, Placement::Binpack(Field::Cpu));
    assert_eq!(c.groups[0].constraints.len(), 2);
    assert_eq!(c.groups[0].started_by(), "ecscale/worker");
    assert_eq!(c.groups[1].placement, Placement::Daemon);
    let cases: &[(&str, &[&str])] = &[
        (
            "groups: [{name: w, cluster: nope, task_definition: t, placement: {strategy: daemon}}]\n",
            &["3:10 groups.w: cluster `nope` is not in `clusters`"],
        ),
        (
            "groups: [{name: w, cluster: prod, task_definition: t, placement: {strategy: spread, field: cpu}}]\n",
            &["3:66 groups[0].placement: `spread` takes `by` (zone or instance), not `field`"],
        ),
        (
            "groups: [{name: w, cluster: prod, task_definition: t, placement: {strategy: daemon}, constraints: ['attribute:x =~ y']}]\n",
            &["3:100 groups[0].constraints[0]: `attribute:x =~ y`: after `attribute:x`, expected ==, !=, in, not_in or exists, found `=~ y` (or `distinct_instance`)"],
        ),
        (
            "groups: [{name: 'w w', cluster: prod, task_definition: t, placement: {strategy: daemon}}]\n",
            &["3:17 groups[0].name: `w w`: 1 to 64 letters, digits, - and _ (it goes into ECS's startedBy)"],
        ),
    ];
    for (extra, want) in cases {
        assert_eq!(mistakes(&format!("{MINIMAL}{extra}")), *want, "{extra}");
    }
}

#[test]
fn a_duration_past_455_days_is_a_positioned_mistake() {
    assert_eq!(
        mistakes("schedule: {interval: 1000000000000s}\nclusters: [{name: prod, services: [web]}]\n"),
        ["1:22 schedule.interval: `1000000000000s` is longer than any duration ecscale reads (at most 455d)"]
    );
    let c = load("schedule: {interval: 455d}\nclusters: [{name: prod, services: [web]}]\n").unwrap();
    assert!(matches!(c.schedule, Schedule::Interval(d) if d == read::MAX_DURATION));
}

#[test]
fn a_lookback_past_what_cloudwatch_keeps_at_the_period_is_a_mistake() {
    let at = |period: &str, lookback: &str| {
        format!("schedule: {{interval: 30s}}\ncollect: {{period: {period}, lookback: {lookback}}}\nclusters: [{{name: prod, services: [web]}}]\n")
    };
    let got = mistakes(&at("1s", "4h"));
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].starts_with("2:33 collect.lookback: CloudWatch keeps datapoints of a 1s period for 3h")
            && got[0].ends_with("at most 3h"),
        "{got:?}"
    );
    assert!(mistakes(&at("60s", "16days"))[0].contains("for 15days"));
    for (period, lookback) in [
        ("1s", "3h"),
        ("60s", "15days"),
        ("5m", "63days"),
        ("1h", "455days"),
    ] {
        assert!(load(&at(period, lookback)).is_ok(), "{period} {lookback}");
    }
}

#[test]
fn a_file_of_many_mistakes_lists_the_first_hundred_and_says_there_are_more() {
    let services: String = (0..5_000)
        .map(|i| format!("      - {{name: s{i}, colour: red}}\n"))
        .collect();
    let text = format!("schedule: {{interval: 30s}}\nclusters:\n  - name: a\n    services:\n{services}");
    let e = crate::config::load_str(
        &text,
        "big.yaml",
        Path::new("/"),
        &crate::config::env::Vars::default(),
    )
    .unwrap_err();
    assert_eq!(e.0.len(), crate::read::MAX_MISTAKES + 1);
    let last = e.0.last().unwrap();
    assert!(last.message.contains("only the first 100 are listed"), "{last}");
}

/// A policy pattern that matches the config itself, a symbolic link loop named or matched, and
/// a link to nothing: each refused at the pattern's line, saying what the path is.
#[test]
fn a_config_that_lists_itself_and_link_loops_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::os::unix::fs::symlink(d.join("b"), d.join("a")).unwrap();
    std::os::unix::fs::symlink(d.join("a"), d.join("b")).unwrap();
    std::fs::create_dir(d.join("p")).unwrap();
    std::os::unix::fs::symlink(d.join("p/gone.yaml"), d.join("p/dangling.yaml")).unwrap();
    let base = "schedule: {interval: 30s}\nclusters: [{name: a, services: [b]}]\npolicies:\n";
    let cases = [
        ("- c.yaml", "`c.yaml` matches this config file itself"),
        ("- '*.yaml'", "`*.yaml` matches this config file itself"),
        ("- a", "a is a symbolic link loop"),
        ("- 'p/*.yaml'", "dangling.yaml is a symbolic link to nothing"),
    ];
    for (entry, said) in cases {
        let config = d.join("c.yaml");
        std::fs::write(&config, format!("{base}  {entry}\n")).unwrap();
        let e = crate::config::load(&config, &crate::config::env::Vars::default()).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("4:5 policies[0]") || text.contains(":4:5: policies[0]"),
            "{text}"
        );
        assert!(text.contains(said), "{entry}: {text}");
    }
}
