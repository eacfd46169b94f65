//! The tuner on the virtual clock: deterministic for a seed, never worse than its input on the
//! training part, honest about the held-out part, and its file keeps the input's layout.

use std::path::Path;
use std::time::Duration;

use super::*;
use crate::sim::suite::split_targets;
use crate::sim::Spec;

/// The example policy and the capacity policy, with the knobs of the service target.
fn subject() -> Subject {
    let web = include_str!("../../policies/web.yaml");
    let cap = include_str!("../../policies/capacity.yaml");
    let targets = crate::sim::run::policies(&[("web.yaml", web), ("capacity.yaml", cap)]).unwrap();
    let spec = Spec::example();
    let (services, capacity) = split_targets(&targets, &spec.auto_scaling_group);
    let service = services[0].clone();
    let doc = crate::read::yaml::parse_documents(web).unwrap().remove(0);
    let knobs = knobs::of(&service, &doc);
    Subject {
        setup: Setup {
            spec,
            slo_ms: 250.0,
            min: service.min,
            max: service.max,
            initial: None,
            record: false,
        },
        service,
        others: capacity,
        knobs,
    }
}

fn trace(name: &str) -> TraceLoad {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/traces");
    TraceLoad::read(&dir.join(format!("{name}.csv")), "request_count")
        .unwrap()
        .0
}

fn options(seed: u64, rounds: usize) -> Options {
    Options {
        objective: Objective::Cost {
            max_slo_minutes: None,
        },
        split: 0.7,
        seed,
        budget: Duration::from_secs(3600),
        rounds: Some(rounds),
        threads: 2,
    }
}

#[test]
fn the_example_policy_s_knobs_are_found_where_its_file_writes_them() {
    let s = subject();
    let names: Vec<&str> = s.knobs.iter().map(|k| k.name.as_str()).collect();
    for n in [
        "cooldown.scale_out",
        "cooldown.scale_in",
        "scale_in_stabilization",
        "cpu.target",
        "cpu.tolerance",
        "cpu.lead",
        "cpu.noise_guard",
        "requests.target",
        "forecast.target_per_task",
        "forecast.confidence",
    ] {
        assert!(names.contains(&n), "{n}: {names:?}");
    }
    let target = s.knobs.iter().find(|k| k.name == "cpu.target").unwrap();
    // the target and its foreseen target move together, 5 points apart
    assert_eq!(target.at.len(), 2);
    assert_eq!(target.texts(60.0), vec!["60".to_string(), "65".to_string()]);
    assert!(
        target.hi <= 95.0 - 1.0 - 5.0,
        "stays under the saturation: {}",
        target.hi
    );
    let tol = s.knobs.iter().find(|k| k.name == "cpu.tolerance").unwrap();
    assert_eq!(tol.texts(0.08), vec!["8%".to_string()]);
    let lead = s.knobs.iter().find(|k| k.name == "cpu.lead").unwrap();
    assert_eq!((lead.value, lead.texts(90.0)[0].as_str()), (45.0, "1m 30s"));
}

/// Whatever the search picks within the knobs' ranges, the written file loads: every knob at
/// its lowest, then at its highest (the noise guard never 0s under a burst guard, which needs
/// one).
#[test]
fn every_knob_at_either_end_of_its_range_writes_a_policy_that_loads() {
    let s = subject();
    let web = include_str!("../../policies/web.yaml");
    for end in ["lowest", "highest"] {
        let values: Vec<f64> = s
            .knobs
            .iter()
            .map(|k| if end == "lowest" { k.lo } else { k.hi })
            .map(|v| v.max(0.0))
            .zip(&s.knobs)
            .map(|(v, k)| k.clamp(v))
            .collect();
        let tuned = knobs::rewrite(web, &knobs::edits(&s.knobs, &values)).unwrap();
        let loaded = crate::policy::load_str(&tuned, "tuned.yaml", Path::new("."));
        assert!(loaded.is_ok(), "{end}: {}\n{tuned}", loaded.unwrap_err());
    }
    let guard = s.knobs.iter().find(|k| k.name == "cpu.noise_guard").unwrap();
    assert!(guard.lo > 0.0, "{}", guard.lo);
}

#[test]
fn a_tuned_file_keeps_the_input_s_comments_and_layout_and_reads_back_as_the_values_tuned() {
    let s = subject();
    let web = include_str!("../../policies/web.yaml");
    let mut values: Vec<f64> = s.knobs.iter().map(|k| k.value).collect();
    let set = |values: &mut Vec<f64>, name: &str, v: f64| {
        let i = s.knobs.iter().position(|k| k.name == name).unwrap();
        values[i] = s.knobs[i].clamp(v);
    };
    set(&mut values, "cpu.target", 60.0);
    set(&mut values, "cooldown.scale_in", 120.0);
    set(&mut values, "cpu.tolerance", 0.08);
    let tuned = knobs::rewrite(web, &knobs::edits(&s.knobs, &values)).unwrap();
    let changed: Vec<(&str, &str)> = web.lines().zip(tuned.lines()).filter(|(a, b)| a != b).collect();
    assert_eq!(changed.len(), 4, "{changed:?}");
    assert_eq!(web.lines().count(), tuned.lines().count());
    assert!(
        tuned.contains("    target: 60\n") && tuned.contains("    foreseen_target: 65 "),
        "{tuned}"
    );
    let column = |text: &str, starts: &str| {
        text.lines()
            .find(|l| l.starts_with(starts))
            .and_then(|l| l.find('#'))
    };
    assert_eq!(
        column(&tuned, "  scale_in: 2m "),
        column(web, "  scale_in: 30s "),
        "the comment stays in its column: {tuned}"
    );
    let back = crate::policy::load_str(&tuned, "tuned.yaml", Path::new(".")).unwrap();
    let mut expect = s.service.clone();
    for (k, v) in s.knobs.iter().zip(&values) {
        k.apply(&mut expect, *v);
    }
    assert_eq!(back[0].cooldown, expect.cooldown);
    assert_eq!(back[0].main_target(), Some(60.0));
    // a file that does not hold the value where the knob says is refused, not mangled
    let e = knobs::rewrite("target: 70\n", &knobs::edits(&s.knobs, &values)).unwrap_err();
    assert!(
        e.contains("is not written there") || e.contains("not in the file"),
        "{e}"
    );
}

#[test]
fn the_tuner_is_deterministic_never_worse_on_training_and_reports_the_held_out_part() {
    let s = subject();
    let parts: Vec<Part> = ["step", "bursts"]
        .iter()
        .map(|n| split(&trace(n), 0.7).unwrap())
        .collect();
    let run = |seed| tune(&s, &parts, &options(seed, 3), &mut |_, _, _| {}).unwrap();
    let (a, b) = (run(7), run(7));
    assert_eq!(a.values, b.values, "same seed, same answer");
    assert_eq!(a.training, b.training);
    let (input, tuned) = a.training;
    let bound = input.slo_minutes;
    assert!(tuned.slo_minutes <= bound, "{a:?}");
    assert!(tuned.task_hours <= input.task_hours, "{a:?}");
    assert_eq!(a.rounds, 3);
    assert_eq!(a.holdout.len(), 2);
    for (name, i, t, o) in &a.holdout {
        assert!(
            i.task_hours > 0.0 && t.task_hours > 0.0 && o.task_hours > 0.0,
            "{name}"
        );
        assert!(o.slo_minutes == 0.0, "the oracle keeps the SLO on {name}");
    }
    // the held-out part is the trace's last 30 %: a quarter to a third of its task-hours
    let whole = score_from(
        &crate::sim::suite::run_all(vec![s.job(&a.values, &parts[1].trace)], 1)
            .pop()
            .unwrap()
            .unwrap(),
        parts[1].trace.start(),
        250.0,
    );
    let held = a.holdout[1].2.task_hours / whole.task_hours;
    assert!((0.15..0.5).contains(&held), "{held}");
}

#[test]
fn a_trace_too_short_to_split_is_refused() {
    let t = TraceLoad {
        name: "one".into(),
        period_secs: 60,
        samples: std::sync::Arc::new(vec![crate::model::Sample {
            timestamp: "2026-11-23T00:00:00Z".parse().unwrap(),
            value: 600.0,
        }]),
    };
    assert!(split(&t, 0.7).is_none());
}
