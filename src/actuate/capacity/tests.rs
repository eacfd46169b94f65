use std::sync::Arc;

use chrono::{TimeDelta, Utc};

use super::*;
use crate::actuate::testing::{instance, service, FakeAsg, FakeEcs};
use crate::actuate::Alone;
use crate::model::ServiceState;

fn r(cpu: u32, memory_mib: u32) -> Resources {
    Resources { cpu, memory_mib }
}

const BIG: Resources = Resources {
    cpu: 4096,
    memory_mib: 8192,
};

fn spec() -> CapacitySpec {
    CapacitySpec {
        auto_scaling_group: "prod-asg".into(),
        cluster: "prod".into(),
        headroom: 0.1,
        spare_tasks: 0,
        instance: None,
        drain_timeout: std::time::Duration::from_secs(600),
        scale_in_cooldown: std::time::Duration::from_secs(300),
        capacity_provider: crate::config::ManagedScaling::Refuse,
        span: Default::default(),
    }
}

/// A cluster with `web` at `desired` tasks of 512 CPU / 1024 MiB, on the given instances.
fn cluster(desired: u32, instances: Vec<ContainerInstance>) -> ClusterSnapshot {
    ClusterSnapshot {
        name: "prod".into(),
        services: vec![service("prod", "web", desired)],
        container_instances: instances,
        pending_tasks: Vec::new(),
    }
}

/// An instance holding `tasks` web tasks.
fn ci(id: &str, tasks: u32) -> ContainerInstance {
    instance(id, BIG, r(512 * tasks, 1024 * tasks), tasks)
}

struct World {
    ecs: Arc<FakeEcs>,
    asg: Arc<FakeAsg>,
    act: CapacityActuator,
}

fn world(ids: &[&str], min: u32, max: u32, dry_run: bool) -> World {
    let ecs = Arc::new(FakeEcs::default());
    let asg = Arc::new(FakeAsg::new("prod-asg", min, max, ids));
    let act = CapacityActuator::new(ecs.clone(), asg.clone(), dry_run);
    World { ecs, asg, act }
}

async fn tick(
    w: &World,
    c: &ClusterSnapshot,
    desired: &[(&str, u32)],
    policy: Option<&Decision>,
    state: &mut GroupState,
    now: DateTime<Utc>,
) -> GroupOutcome {
    tick_with(&spec(), w, c, desired, policy, state, now).await
}

async fn tick_with(
    spec: &CapacitySpec,
    w: &World,
    c: &ClusterSnapshot,
    desired: &[(&str, u32)],
    policy: Option<&Decision>,
    state: &mut GroupState,
    now: DateTime<Utc>,
) -> GroupOutcome {
    let group = w.asg.info();
    let desired: BTreeMap<String, u32> = desired.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    let t = GroupTick {
        spec,
        group: &group,
        cluster: c,
        desired: &desired,
        policy,
        task_groups: &[],
        now,
    };
    w.act.apply(&t, state, &Alone).await
}

#[tokio::test]
async fn scale_out_counts_the_tasks_the_decisions_add() {
    // Two instances hold web's 4 tasks; the decision takes web to 20. With 10 % headroom an
    // instance holds 7 tasks of 512 CPU (3686 / 512): 20 tasks need 3 instances.
    let w = world(&["i-1", "i-2"], 1, 10, false);
    let c = cluster(4, vec![ci("i-1", 2), ci("i-2", 2)]);
    let mut st = GroupState::default();
    let out = tick(&w, &c, &[("web", 20)], None, &mut st, Utc::now()).await;
    assert_eq!(
        out.applied,
        Applied::Updated { from: 2, to: 3 },
        "{}",
        out.decision.reason
    );
    assert_eq!(*w.asg.desired_calls.lock().unwrap(), vec![3]);
    assert_eq!(out.decision.action, Action::ScaleOut);
    assert_eq!(out.decision.inputs["instances_needed"], 3.0);
    assert!(
        out.decision.reason.contains("20 tasks need 3 instance(s)"),
        "{}",
        out.decision.reason
    );

    // Next tick: the new instance has not registered yet; it counts as booting, no new call.
    let out = tick(&w, &c, &[("web", 20)], None, &mut st, Utc::now()).await;
    assert_eq!(out.applied, Applied::Unchanged, "{}", out.decision.reason);
    assert_eq!(out.decision.inputs["instances_booting"], 1.0);
    assert_eq!(w.asg.desired_calls.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn spare_tasks_keep_warm_room_beyond_what_the_tasks_need() {
    // 14 tasks fit on 2 instances (7 each with 10 % headroom): no change without spare room.
    let w = world(&["i-1", "i-2"], 1, 10, false);
    let c = cluster(14, vec![ci("i-1", 7), ci("i-2", 7)]);
    let out = tick(
        &w,
        &c,
        &[("web", 14)],
        None,
        &mut GroupState::default(),
        Utc::now(),
    )
    .await;
    assert_eq!(out.applied, Applied::Unchanged, "{}", out.decision.reason);
    // Room for 4 more kept warm: a third instance, before any task waits for it.
    let spec = CapacitySpec {
        spare_tasks: 4,
        ..spec()
    };
    let out = tick_with(
        &spec,
        &w,
        &c,
        &[("web", 14)],
        None,
        &mut GroupState::default(),
        Utc::now(),
    )
    .await;
    assert_eq!(
        out.applied,
        Applied::Updated { from: 2, to: 3 },
        "{}",
        out.decision.reason
    );
    assert!(
        out.decision
            .reason
            .contains("14 tasks and room for 4 more need 3 instance(s)"),
        "{}",
        out.decision.reason
    );
}

#[tokio::test]
async fn capped_at_the_group_max() {
    let w = world(&["i-1"], 1, 2, false);
    let c = cluster(4, vec![ci("i-1", 4)]);
    let mut st = GroupState::default();
    let out = tick(&w, &c, &[("web", 40)], None, &mut st, Utc::now()).await;
    assert_eq!(out.applied, Applied::Updated { from: 1, to: 2 });
    assert!(
        out.decision.reason.contains("capped at the group's max 2"),
        "{}",
        out.decision.reason
    );
    // Two instances of 4096 CPU units with 10 % headroom hold 7 tasks of 512 each: 14 of the 40
    // are placed, and the other 26 are named as waiting, in the reason and in the inputs.
    assert_eq!(out.waiting, vec![("web".to_string(), 26)]);
    assert!(
        out.decision
            .reason
            .contains("26 tasks will wait for room: web 26"),
        "{}",
        out.decision.reason
    );
    assert_eq!(out.decision.inputs.get("tasks_waiting"), Some(&26.0));
}

#[tokio::test]
async fn fargate_services_add_no_instance_demand() {
    // web's 20 tasks need 3 instances (see above); 40 tasks of a Fargate service, by launch
    // type or by a strategy of Fargate providers only, add none.
    for fargate in [
        ServiceState {
            launch_type: Some("FARGATE".into()),
            ..service("prod", "api", 40)
        },
        ServiceState {
            launch_type: None,
            capacity_providers: vec!["FARGATE".into(), "FARGATE_SPOT".into()],
            ..service("prod", "api", 40)
        },
    ] {
        let w = world(&["i-1", "i-2"], 1, 10, false);
        let mut c = cluster(4, vec![ci("i-1", 2), ci("i-2", 2)]);
        c.services.push(fargate);
        let mut st = GroupState::default();
        let out = tick(&w, &c, &[("web", 20), ("api", 40)], None, &mut st, Utc::now()).await;
        assert_eq!(
            out.applied,
            Applied::Updated { from: 2, to: 3 },
            "{}",
            out.decision.reason
        );
    }
    // A strategy that mixes Fargate with the group's own provider is counted whole.
    let w = world(&["i-1", "i-2"], 1, 10, false);
    let mut c = cluster(4, vec![ci("i-1", 2), ci("i-2", 2)]);
    c.services.push(ServiceState {
        launch_type: None,
        capacity_providers: vec!["FARGATE".into(), "prod-asg-provider".into()],
        ..service("prod", "api", 7)
    });
    let mut st = GroupState::default();
    let out = tick(&w, &c, &[("web", 20), ("api", 7)], None, &mut st, Utc::now()).await;
    assert_eq!(
        out.applied,
        Applied::Updated { from: 2, to: 4 },
        "{}",
        out.decision.reason
    );
}

#[tokio::test]
async fn under_the_group_max_nothing_waits() {
    let w = world(&["i-1"], 1, 10, false);
    let c = cluster(4, vec![ci("i-1", 4)]);
    let mut st = GroupState::default();
    let out = tick(&w, &c, &[("web", 40)], None, &mut st, Utc::now()).await;
    assert!(out.waiting.is_empty(), "{:?}", out.waiting);
    assert!(
        !out.decision.reason.contains("wait for room"),
        "{}",
        out.decision.reason
    );
}

#[tokio::test]
async fn scale_in_drains_the_emptiest_then_terminates_once_empty() {
    let w = world(&["i-1", "i-2", "i-3", "i-4"], 1, 10, false);
    // web went down to 6 tasks, spread over four instances: they fit on one (7 with headroom).
    let insts = vec![ci("i-1", 2), ci("i-2", 1), ci("i-3", 0), ci("i-4", 3)];
    let c = cluster(6, insts.clone());
    let mut st = GroupState::default();
    let t0 = Utc::now();
    let out = tick(&w, &c, &[("web", 6)], None, &mut st, t0).await;
    assert_eq!(out.decision.action, Action::ScaleIn, "{}", out.decision.reason);
    // i-4 (6 tasks) stays; the other three are drained, fewest tasks first.
    assert_eq!(
        out.drained,
        vec!["i-3".to_string(), "i-2".to_string(), "i-1".to_string()]
    );
    let states = w.ecs.states.lock().unwrap().clone();
    assert_eq!(states.len(), 1);
    assert_eq!(states[0].1, "DRAINING");
    assert!(
        w.asg.terminated.lock().unwrap().is_empty(),
        "nothing terminated before the drain"
    );

    // Next tick: i-3 is empty, i-2 still runs a service task, i-1 only a daemon task.
    *w.ecs.daemons.lock().unwrap() = vec!["log-agent".into()];
    let arn = |id: &str| format!("arn:aws:ecs:us-east-1:1:container-instance/prod/{id}");
    w.ecs.set_tasks(&arn("i-2"), &["service:web"]);
    w.ecs.set_tasks(&arn("i-1"), &["service:log-agent"]);
    let mut draining = insts.clone();
    for i in &mut draining[..3] {
        i.status = "DRAINING".into();
    }
    let c = cluster(6, draining.clone());
    let out = tick(&w, &c, &[("web", 6)], None, &mut st, t0 + TimeDelta::seconds(30)).await;
    let mut terminated = out.terminated.clone();
    terminated.sort();
    assert_eq!(terminated, vec!["i-1".to_string(), "i-3".to_string()]);
    assert_eq!(st.draining.len(), 1, "i-2 still drains");
    assert_eq!(w.asg.info().desired, 2);
    assert!(!w.asg.terminated.lock().unwrap().contains(&"i-2".to_string()));

    // After the drain timeout with a service task still on it, i-2 is set ACTIVE again.
    let c = cluster(6, vec![draining[1].clone(), draining[3].clone()]);
    let out = tick(&w, &c, &[("web", 6)], None, &mut st, t0 + TimeDelta::seconds(601)).await;
    assert_eq!(out.reactivated, vec!["i-2".to_string()]);
    assert!(st.draining.is_empty());
    assert_eq!(w.ecs.states.lock().unwrap().last().unwrap().1, "ACTIVE");
    assert!(!w.asg.terminated.lock().unwrap().contains(&"i-2".to_string()));
}

#[tokio::test]
async fn scale_in_waits_for_the_cooldown_and_keeps_the_minimum() {
    let w = world(&["i-1", "i-2", "i-3"], 2, 10, false);
    let c = cluster(2, vec![ci("i-1", 2), ci("i-2", 0), ci("i-3", 0)]);
    let t0 = Utc::now();
    let mut st = GroupState {
        last_scale_out: Some(t0 - TimeDelta::seconds(60)),
        ..GroupState::default()
    };
    let out = tick(&w, &c, &[], None, &mut st, t0).await;
    assert_eq!(out.decision.action, Action::Hold);
    assert!(
        out.decision.reason.contains("scale-in cooldown until"),
        "{}",
        out.decision.reason
    );
    assert!(w.ecs.states.lock().unwrap().is_empty());
    // After it: one instance needed, but the group's min is 2, so only one goes.
    let out = tick(&w, &c, &[], None, &mut st, t0 + TimeDelta::seconds(300)).await;
    assert_eq!(out.drained.len(), 1, "{}", out.decision.reason);
}

#[tokio::test]
async fn protected_instances_are_not_drained() {
    let w = world(&["i-1", "i-2"], 1, 10, false);
    w.asg.group.lock().unwrap().instances[1].protected_from_scale_in = true;
    let c = cluster(2, vec![ci("i-1", 2), ci("i-2", 0)]);
    let mut st = GroupState::default();
    let out = tick(&w, &c, &[], None, &mut st, Utc::now()).await;
    assert!(out.drained.is_empty());
    assert!(
        out.decision.reason.contains("none can go"),
        "{}",
        out.decision.reason
    );
}

#[tokio::test]
async fn scale_out_takes_draining_instances_back_first() {
    let w = world(&["i-1", "i-2"], 1, 10, false);
    let mut d = ci("i-2", 0);
    d.status = "DRAINING".into();
    let c = cluster(4, vec![ci("i-1", 4), d.clone()]);
    let mut st = GroupState {
        draining: vec![Drain {
            instance_id: "i-2".into(),
            container_instance: d.arn.clone(),
            since: Utc::now(),
        }],
        ..GroupState::default()
    };
    // 12 tasks: two instances' worth.
    w.ecs.set_tasks(&d.arn, &["service:web"]);
    let out = tick(&w, &c, &[("web", 12)], None, &mut st, Utc::now()).await;
    assert_eq!(
        out.reactivated,
        vec!["i-2".to_string()],
        "{}",
        out.decision.reason
    );
    assert!(
        w.asg.desired_calls.lock().unwrap().is_empty(),
        "no new instance needed"
    );
    assert!(st.draining.is_empty());
}

#[tokio::test]
async fn a_task_larger_than_any_instance_is_a_clear_error_and_no_action() {
    let w = world(&["i-1"], 1, 10, false);
    let mut c = cluster(2, vec![ci("i-1", 2)]);
    let mut huge = service("prod", "huge", 1);
    huge.task_reservation = Some(r(8192, 1024));
    c.services.push(huge);
    let mut st = GroupState::default();
    let out = tick(&w, &c, &[("web", 30)], None, &mut st, Utc::now()).await;
    match &out.applied {
        Applied::Refused { reason } => assert!(
            reason.contains("service huge") && reason.contains("8192"),
            "{reason}"
        ),
        other => panic!("{other:?}"),
    }
    assert!(w.asg.desired_calls.lock().unwrap().is_empty());
    assert!(w.ecs.states.lock().unwrap().is_empty());
}

#[tokio::test]
async fn dry_run_calls_nothing_that_changes() {
    let w = world(&["i-1", "i-2", "i-3"], 1, 10, true);
    let c = cluster(4, vec![ci("i-1", 4), ci("i-2", 0), ci("i-3", 0)]);
    let mut st = GroupState::default();
    let out = tick(&w, &c, &[("web", 40)], None, &mut st, Utc::now()).await;
    assert!(
        matches!(out.applied, Applied::DryRun { from: 3, .. }),
        "{:?}",
        out.applied
    );
    let out = tick(&w, &c, &[("web", 1)], None, &mut st, Utc::now()).await;
    assert!(matches!(out.applied, Applied::DryRun { .. }), "{:?}", out.applied);
    assert!(w.asg.desired_calls.lock().unwrap().is_empty());
    assert!(w.ecs.states.lock().unwrap().is_empty());
    assert!(st.draining.is_empty() && st.last_scale_in.is_none());
}

#[tokio::test]
async fn a_capacity_policy_is_a_floor() {
    let w = world(&["i-1", "i-2"], 1, 10, false);
    let c = cluster(2, vec![ci("i-1", 2), ci("i-2", 0)]);
    let mut st = GroupState::default();
    let policy = Decision {
        target: TargetKey::AutoScalingGroup {
            name: "prod-asg".into(),
        },
        at: Utc::now(),
        current: 2,
        running: 2,
        desired: 4,
        action: Action::ScaleOut,
        min: 1,
        max: 10,
        rule: Some("reservation".into()),
        reason: "cpu_reservation 90 > 75".into(),
        recommendation: 4,
        inputs: Default::default(),
        votes: Vec::new(),
    };
    let out = tick(&w, &c, &[], Some(&policy), &mut st, Utc::now()).await;
    assert_eq!(
        out.applied,
        Applied::Updated { from: 2, to: 4 },
        "{}",
        out.decision.reason
    );
    assert_eq!(out.decision.rule.as_deref(), Some("policy:reservation"));
    // Holding at 2 (what it has), the policy keeps the packing from draining i-2.
    let hold = Decision {
        desired: 2,
        action: Action::Hold,
        ..policy
    };
    let w = world(&["i-1", "i-2"], 1, 10, false);
    let mut st = GroupState::default();
    let out = tick(&w, &c, &[], Some(&hold), &mut st, Utc::now()).await;
    assert!(out.drained.is_empty(), "{}", out.decision.reason);
}

#[test]
fn instance_types() {
    assert_eq!(instance_type_resources("m5.large"), Some(r(2048, 7700)));
    assert_eq!(instance_type_resources("c6i.2xlarge"), Some(r(8192, 15400)));
    assert_eq!(
        instance_type_resources("r5.12xlarge").map(|x| x.cpu),
        Some(48 * 1024)
    );
    assert_eq!(instance_type_resources("x1.large"), None);
    assert_eq!(instance_type_resources("nonsense"), None);
}

fn managed(group: &str, on: bool) -> crate::api::CapacityProvider {
    crate::api::CapacityProvider {
        name: "prod-cp".into(),
        auto_scaling_group_arn: format!(
            "arn:aws:autoscaling:us-east-1:1:autoScalingGroup:0f1e:autoScalingGroupName/{group}"
        ),
        managed_scaling: on,
    }
}

#[tokio::test]
async fn a_group_that_ecs_sizes_is_refused_or_taken_over_as_configured() {
    let mut spec = spec();
    // Not behind a provider, or behind one without managed scaling, or another group's: sized.
    let w = world(&["i-1"], 1, 10, false);
    assert_eq!(w.act.managed_refusal(&spec).await.unwrap(), None);
    *w.ecs.providers.lock().unwrap() = vec![managed("prod-asg", false), managed("other-asg", true)];
    assert_eq!(w.act.managed_refusal(&spec).await.unwrap(), None);
    // Managed scaling on: refused with the reason, every tick, nothing changed.
    *w.ecs.providers.lock().unwrap() = vec![managed("prod-asg", true)];
    let reason = w.act.managed_refusal(&spec).await.unwrap().unwrap();
    assert_eq!(
        reason,
        "capacity provider prod-cp sizes asg/prod-asg itself (managed scaling ENABLED): ecscale leaves the group to ECS; disable managed scaling, or set capacity[].capacity_provider: take_over"
    );
    assert!(w.ecs.disabled.lock().unwrap().is_empty());
    // take_over in a dry run: said, not done.
    spec.capacity_provider = crate::config::ManagedScaling::TakeOver;
    let dry = world(&["i-1"], 1, 10, true);
    *dry.ecs.providers.lock().unwrap() = vec![managed("prod-asg", true)];
    assert_eq!(dry.act.managed_refusal(&spec).await.unwrap(), None);
    assert!(dry.ecs.disabled.lock().unwrap().is_empty());
    // take_over: managed scaling disabled, once; then the group is sized.
    assert_eq!(w.act.managed_refusal(&spec).await.unwrap(), None);
    assert_eq!(w.act.managed_refusal(&spec).await.unwrap(), None);
    assert_eq!(*w.ecs.disabled.lock().unwrap(), ["prod-cp"]);
}

#[tokio::test]
async fn a_task_groups_tasks_are_sized_for_in_the_same_tick() {
    // web's 4 tasks on two instances, as above, and a task group of tasks the same size
    // (512 CPU / 1024 MiB) that wants 10 and has none yet.
    let w = world(&["i-1", "i-2"], 1, 10, false);
    let c = cluster(4, vec![ci("i-1", 2), ci("i-2", 2)]);
    let group = w.asg.info();
    let desired: BTreeMap<String, u32> = [("web".to_string(), 4)].into();
    let groups = [super::TaskGroupDemand {
        name: "worker".into(),
        size: r(512, 1024),
        tasks: Vec::new(),
        wanted: 10,
    }];
    let spec = spec();
    let t = GroupTick {
        spec: &spec,
        group: &group,
        cluster: &c,
        desired: &desired,
        policy: None,
        task_groups: &groups,
        now: Utc::now(),
    };
    let out = w.act.apply(&t, &mut GroupState::default(), &Alone).await;
    // 14 tasks at 7 per instance: 2 instances hold them all.
    assert_eq!(out.applied, Applied::Unchanged, "{}", out.decision.reason);
    assert!(
        out.decision.reason.contains("14 tasks need 2 instance(s)"),
        "{}",
        out.decision.reason
    );
    // 20 wanted: 24 tasks need 4.
    let groups = [super::TaskGroupDemand {
        wanted: 20,
        ..groups[0].clone()
    }];
    let t = GroupTick {
        task_groups: &groups,
        ..t
    };
    let out = w.act.apply(&t, &mut GroupState::default(), &Alone).await;
    assert_eq!(
        out.applied,
        Applied::Updated { from: 2, to: 4 },
        "{}",
        out.decision.reason
    );
}
