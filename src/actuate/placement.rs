//! Where a task group's tasks go, and which go at a scale-in: a pure function of the cluster's
//! container instances, the group's tasks and the count wanted.
//!
//! Eligible instances are ACTIVE (never DRAINING), with a connected agent, meeting every
//! attribute constraint, and, under `distinct_instance` or `daemon`, without a task of the group.
//! Tasks on an instance that is no longer eligible (draining, or its attributes changed) are
//! replaced elsewhere first, then stopped. New tasks go one at a time, each onto the instance the
//! strategy prefers that still has room for it:
//! - `binpack`: the least `field` (CPU or memory) left, so few instances are busy;
//! - `spread` by zone: the zone with the fewest of the group's tasks, then the instance with the
//!   fewest; by instance: the instance with the fewest;
//! - `daemon`: every eligible instance without one.
//!
//! A scale-in stops tasks not yet running first, then the strategy's opposite: binpack frees the
//! emptiest instance, spread takes from the fullest zone and instance.

use std::collections::BTreeMap;

use crate::config::{Constraint, Field, GroupSpec, Placement, SpreadBy};
use crate::model::{ContainerInstance, Resources};

/// A task of the group, as ECS lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupTask {
    pub arn: String,
    /// Its container instance ARN (none while ECS has not placed it).
    pub instance: Option<String>,
    /// `RUNNING`, `PENDING`, `PROVISIONING`, …
    pub status: String,
}

/// What to do this tick.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlacementPlan {
    /// Container instance ARNs, one per task to start (an instance may appear more than once).
    pub start: Vec<String>,
    /// Task ARNs to stop.
    pub stop: Vec<String>,
    /// Tasks wanted that no eligible instance has room for.
    pub waiting: u32,
    /// Tasks stopped because their instance is no longer eligible, or to even out a spread
    /// (replaced first): the first `moved` of `stop`.
    pub moved: u32,
    /// Of those, the last ones are moves that even out a spread.
    pub rebalanced: u32,
    /// The count this plan reaches (for daemon groups: the eligible instances).
    pub target: u32,
}

const ZONE: &str = "ecs.availability-zone";

fn eligible(spec: &GroupSpec, i: &ContainerInstance) -> bool {
    i.status == "ACTIVE"
        && i.agent_connected
        && spec.constraints.iter().all(|c| match c {
            Constraint::DistinctInstance => true,
            Constraint::Attribute(e) => e.holds(&i.attributes),
        })
}

fn one_per_instance(spec: &GroupSpec) -> bool {
    spec.placement == Placement::Daemon || spec.constraints.contains(&Constraint::DistinctInstance)
}

/// The instances' state as placement goes: room left and the group's tasks on each.
struct Room<'a> {
    instances: Vec<&'a ContainerInstance>,
    left: Vec<Resources>,
    count: Vec<u32>,
}

impl<'a> Room<'a> {
    fn zone(&self, k: usize) -> &str {
        self.instances[k].attributes.get(ZONE).map_or("-", String::as_str)
    }

    fn zone_count(&self, zone: &str) -> u32 {
        (0..self.instances.len())
            .filter(|k| self.zone(*k) == zone)
            .map(|k| self.count[k])
            .sum()
    }

    /// The instance the strategy prefers for one more task, if any has room.
    fn pick(&self, spec: &GroupSpec, size: Resources) -> Option<usize> {
        let fits = |k: &usize| {
            self.left[*k].cpu >= size.cpu
                && self.left[*k].memory_mib >= size.memory_mib
                && !(one_per_instance(spec) && self.count[*k] > 0)
        };
        let candidates = (0..self.instances.len()).filter(fits);
        let arn = |k: usize| self.instances[k].arn.as_str();
        match spec.placement {
            Placement::Binpack(field) => candidates.min_by_key(|k| {
                let l = self.left[*k];
                (
                    match field {
                        Field::Cpu => (l.cpu, l.memory_mib),
                        Field::Memory => (l.memory_mib, l.cpu),
                    },
                    arn(*k),
                )
            }),
            Placement::Spread(SpreadBy::Zone) => candidates.min_by_key(|k| {
                (
                    self.zone_count(self.zone(*k)),
                    self.count[*k],
                    std::cmp::Reverse(self.left[*k].cpu),
                    arn(*k),
                )
            }),
            Placement::Spread(SpreadBy::Instance) | Placement::Daemon => {
                candidates.min_by_key(|k| (self.count[*k], std::cmp::Reverse(self.left[*k].cpu), arn(*k)))
            }
        }
    }

    fn place(&mut self, k: usize, size: Resources) {
        self.left[k].cpu -= size.cpu;
        self.left[k].memory_mib -= size.memory_mib;
        self.count[k] += 1;
    }
}

/// The plan that takes the group to `desired` tasks (ignored by `daemon`).
pub fn plan(
    spec: &GroupSpec,
    instances: &[ContainerInstance],
    tasks: &[GroupTask],
    desired: u32,
    size: Resources,
) -> PlacementPlan {
    let usable: Vec<&ContainerInstance> = instances.iter().filter(|i| eligible(spec, i)).collect();
    let on_usable = |t: &GroupTask| {
        t.instance
            .as_ref()
            .is_none_or(|a| usable.iter().any(|i| &i.arn == a))
    };
    let (kept, moving): (Vec<&GroupTask>, Vec<&GroupTask>) = tasks.iter().partition(|t| on_usable(t));
    let mut room = Room {
        left: usable.iter().map(|i| i.remaining).collect(),
        count: usable
            .iter()
            .map(|i| {
                kept.iter()
                    .filter(|t| t.instance.as_ref() == Some(&i.arn))
                    .count() as u32
            })
            .collect(),
        instances: usable,
    };
    let target = match spec.placement {
        Placement::Daemon => room.instances.len() as u32,
        _ => desired,
    };
    let mut out = PlacementPlan {
        moved: moving.len() as u32,
        stop: moving.iter().map(|t| t.arn.clone()).collect(),
        target,
        ..Default::default()
    };
    let have = kept.len() as u32;
    if have < target {
        for _ in have..target {
            match room.pick(spec, size) {
                Some(k) => {
                    out.start.push(room.instances[k].arn.clone());
                    room.place(k, size);
                }
                None => out.waiting += 1,
            }
        }
    }
    if have <= target {
        rebalance(spec, &mut room, &kept, size, &mut out);
    } else {
        out.stop.extend(scale_in(spec, &room, &kept, have - target));
    }
    out
}

/// A spread that drifted (a zone or instance had no room when tasks were started) is evened
/// out, one move per tick: a task starts where the spread has the fewest and room is, and one
/// from where it has the most stops once that one started.
fn rebalance(
    spec: &GroupSpec,
    room: &mut Room<'_>,
    kept: &[&GroupTask],
    size: Resources,
    out: &mut PlacementPlan,
) {
    let Placement::Spread(by) = spec.placement else {
        return;
    };
    let weight = |room: &Room<'_>, k: usize| match by {
        SpreadBy::Zone => room.zone_count(room.zone(k)),
        SpreadBy::Instance => room.count[k],
    };
    let Some(to) = room.pick(spec, size) else {
        return;
    };
    let from = kept
        .iter()
        .filter_map(|t| {
            let k = room
                .instances
                .iter()
                .position(|i| Some(&i.arn) == t.instance.as_ref())?;
            Some((weight(room, k), room.count[k], t.arn.clone(), k))
        })
        .max();
    let Some((most, _, arn, k)) = from else {
        return;
    };
    if most < weight(room, to) + 2 {
        return;
    }
    out.start.push(room.instances[to].arn.clone());
    room.place(to, size);
    room.count[k] -= 1;
    out.stop.insert(out.moved as usize, arn);
    out.moved += 1;
    out.rebalanced += 1;
}

/// The `n` tasks a scale-in stops, as the strategy says.
fn scale_in(spec: &GroupSpec, room: &Room<'_>, kept: &[&GroupTask], n: u32) -> Vec<String> {
    let index = |t: &GroupTask| {
        t.instance
            .as_ref()
            .and_then(|a| room.instances.iter().position(|i| &i.arn == a))
    };
    let mut count: BTreeMap<usize, u32> = room.count.iter().copied().enumerate().collect();
    let mut left: Vec<&GroupTask> = kept.to_vec();
    let mut out = Vec::new();
    for _ in 0..n {
        // Not yet running first; then the strategy's choice.
        let key = |t: &&GroupTask| {
            let k = index(t);
            let running = t.status == "RUNNING";
            let by = k.map_or((0, 0), |k| {
                let r = room.left[k];
                match spec.placement {
                    Placement::Binpack(Field::Cpu) => (u64::from(r.cpu), u64::from(r.memory_mib)),
                    Placement::Binpack(Field::Memory) => (u64::from(r.memory_mib), u64::from(r.cpu)),
                    Placement::Spread(SpreadBy::Zone) => {
                        let zone = room.zone(k);
                        let in_zone: u32 = count
                            .iter()
                            .filter(|(j, _)| room.zone(**j) == zone)
                            .map(|(_, c)| c)
                            .sum();
                        (u64::from(in_zone), u64::from(count[&k]))
                    }
                    _ => (u64::from(count[&k]), 0),
                }
            });
            (!running, by, std::cmp::Reverse(t.arn.clone()))
        };
        let Some(pos) = left
            .iter()
            .enumerate()
            .max_by_key(|(_, t)| key(t))
            .map(|(p, _)| p)
        else {
            break;
        };
        let t = left.remove(pos);
        if let Some(k) = index(t) {
            *count.entry(k).or_default() -= 1;
        }
        out.push(t.arn.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse_attribute, Constraint};

    const SMALL: Resources = Resources {
        cpu: 512,
        memory_mib: 1024,
    };

    fn inst(arn: &str, zone: &str, cpu_left: u32, status: &str) -> ContainerInstance {
        let mut i = crate::actuate::testing::instance(
            arn,
            Resources {
                cpu: 2048,
                memory_mib: 8192,
            },
            Resources {
                cpu: 2048 - cpu_left,
                memory_mib: 0,
            },
            0,
        );
        i.arn = arn.into();
        i.status = status.into();
        i.attributes = [
            (ZONE.to_string(), zone.to_string()),
            (
                "ecs.instance-type".to_string(),
                if arn.ends_with('x') {
                    "m5.xlarge"
                } else {
                    "m5.large"
                }
                .to_string(),
            ),
        ]
        .into();
        i
    }

    fn group(placement: Placement, constraints: Vec<Constraint>) -> GroupSpec {
        GroupSpec {
            name: "worker".into(),
            cluster: "prod".into(),
            task_definition: "worker:1".into(),
            placement,
            constraints,
            metrics: Vec::new(),
            span: Default::default(),
        }
    }

    fn task(arn: &str, on: &str, status: &str) -> GroupTask {
        GroupTask {
            arn: arn.into(),
            instance: Some(on.into()),
            status: status.into(),
        }
    }

    fn per_zone(
        instances: &[ContainerInstance],
        tasks: &[GroupTask],
        plan: &PlacementPlan,
    ) -> BTreeMap<String, u32> {
        let mut out = BTreeMap::new();
        let on = tasks
            .iter()
            .filter(|t| !plan.stop.contains(&t.arn))
            .filter_map(|t| t.instance.clone())
            .chain(plan.start.iter().cloned());
        for arn in on {
            let i = instances.iter().find(|i| i.arn == arn).unwrap();
            *out.entry(i.attributes[ZONE].clone()).or_default() += 1;
        }
        out
    }

    #[test]
    fn binpack_fills_the_fullest_instance_that_has_room_first() {
        let instances = [
            inst("i-a", "z1", 2048, "ACTIVE"),
            inst("i-b", "z1", 1024, "ACTIVE"),
            inst("i-c", "z2", 600, "ACTIVE"),
        ];
        let g = group(Placement::Binpack(Field::Cpu), vec![]);
        let p = plan(&g, &instances, &[], 4, SMALL);
        // i-c (600 left) takes one; i-b (1024) two; then i-a.
        assert_eq!(p.start, ["i-c", "i-b", "i-b", "i-a"]);
        assert_eq!(p.waiting, 0);
        // A scale-in from those four frees the emptiest instance first.
        let tasks: Vec<GroupTask> = p
            .start
            .iter()
            .enumerate()
            .map(|(n, i)| task(&format!("t{n}"), i, "RUNNING"))
            .collect();
        let mut after = instances.clone();
        for (k, a) in [("i-c", 512), ("i-b", 1024), ("i-a", 512)] {
            after.iter_mut().find(|i| i.arn == k).unwrap().remaining.cpu -= a;
        }
        let down = plan(&g, &after, &tasks, 3, SMALL);
        assert_eq!(down.stop, ["t3"], "the task alone on i-a, the emptiest");
    }

    #[test]
    fn spread_by_zone_keeps_the_zones_within_one_and_takes_from_the_fullest() {
        let instances = [
            inst("i-1", "z1", 2048, "ACTIVE"),
            inst("i-2", "z1", 2048, "ACTIVE"),
            inst("i-3", "z2", 2048, "ACTIVE"),
            inst("i-4", "z3", 2048, "ACTIVE"),
        ];
        let g = group(Placement::Spread(SpreadBy::Zone), vec![]);
        let tasks = [task("t0", "i-1", "RUNNING"), task("t1", "i-2", "RUNNING")];
        let p = plan(&g, &instances, &tasks, 7, SMALL);
        let zones = per_zone(&instances, &tasks, &p);
        assert_eq!(zones.values().copied().collect::<Vec<_>>(), [3, 2, 2], "{p:?}");
        // Down to 4 from z1's 2 + z2's 1 + z3's 1 + one more in z2: the fullest zone gives.
        let tasks = [
            task("a", "i-1", "RUNNING"),
            task("b", "i-2", "RUNNING"),
            task("c", "i-3", "RUNNING"),
            task("d", "i-3", "RUNNING"),
            task("e", "i-4", "RUNNING"),
        ];
        let p = plan(&g, &instances, &tasks, 4, SMALL);
        assert_eq!(p.stop.len(), 1);
        assert!(p.stop[0] == "c" || p.stop[0] == "d", "{p:?}");
    }

    #[test]
    fn a_spread_that_drifted_is_evened_out_one_move_at_a_time_where_room_is() {
        let g = group(Placement::Spread(SpreadBy::Zone), vec![]);
        let tasks = [
            task("a", "i-3", "RUNNING"),
            task("b", "i-3", "RUNNING"),
            task("c", "i-4", "RUNNING"),
        ];
        // z1 had no room when they started: all three went to z2.
        let full = [
            inst("i-1", "z1", 0, "ACTIVE"),
            inst("i-3", "z2", 2048, "ACTIVE"),
            inst("i-4", "z2", 2048, "ACTIVE"),
        ];
        let p = plan(&g, &full, &tasks, 3, SMALL);
        assert!(
            p.start.is_empty() && p.stop.is_empty(),
            "no room in z1: nothing moves {p:?}"
        );
        // z1 has room now: one task starts there, and one from z2's fuller instance stops.
        let roomy = [
            inst("i-1", "z1", 2048, "ACTIVE"),
            inst("i-3", "z2", 2048, "ACTIVE"),
            inst("i-4", "z2", 2048, "ACTIVE"),
        ];
        let p = plan(&g, &roomy, &tasks, 3, SMALL);
        assert_eq!(p.start, ["i-1"], "{p:?}");
        assert_eq!((p.stop.len(), p.moved, p.rebalanced), (1, 1, 1), "{p:?}");
        assert!(p.stop[0] == "a" || p.stop[0] == "b", "{p:?}");
        // Once moved (1 and 2), the zones are within one: no further move.
        let moved = [
            task("n", "i-1", "PENDING"),
            task("b", "i-3", "RUNNING"),
            task("c", "i-4", "RUNNING"),
        ];
        let p = plan(&g, &roomy, &moved, 3, SMALL);
        assert!(p.start.is_empty() && p.stop.is_empty(), "{p:?}");
        // A scale-out in the same tick comes first; the move goes with it.
        let p = plan(&g, &roomy, &tasks, 4, SMALL);
        assert_eq!(p.start, ["i-1", "i-1"], "{p:?}");
        assert_eq!(p.stop.len(), 1, "{p:?}");
    }

    #[test]
    fn constraints_pick_the_instances_and_distinct_instance_leaves_the_rest_waiting() {
        let instances = [
            inst("i-ax", "z1", 2048, "ACTIVE"),
            inst("i-b", "z1", 2048, "ACTIVE"),
            inst("i-cx", "z2", 2048, "ACTIVE"),
        ];
        let xlarge = parse_attribute("attribute:ecs.instance-type == m5.xlarge").unwrap();
        let g = group(
            Placement::Spread(SpreadBy::Instance),
            vec![Constraint::Attribute(xlarge), Constraint::DistinctInstance],
        );
        let p = plan(&g, &instances, &[], 3, SMALL);
        assert_eq!(p.start, ["i-ax", "i-cx"]);
        assert_eq!(p.waiting, 1);
    }

    #[test]
    fn draining_instances_get_nothing_and_their_tasks_are_replaced_then_stopped() {
        let instances = [
            inst("i-1", "z1", 2048, "DRAINING"),
            inst("i-2", "z2", 2048, "ACTIVE"),
        ];
        let g = group(Placement::Spread(SpreadBy::Zone), vec![]);
        let tasks = [task("t0", "i-1", "RUNNING"), task("t1", "i-2", "RUNNING")];
        let p = plan(&g, &instances, &tasks, 2, SMALL);
        assert_eq!(
            (p.start.as_slice(), p.stop.as_slice(), p.moved),
            (&["i-2".to_string()][..], &["t0".to_string()][..], 1)
        );
    }

    #[test]
    fn a_daemon_follows_the_instances_coming_and_going() {
        let g = group(Placement::Daemon, vec![]);
        let two = [
            inst("i-1", "z1", 2048, "ACTIVE"),
            inst("i-2", "z2", 2048, "ACTIVE"),
        ];
        let p = plan(&g, &two, &[], 0, SMALL);
        assert_eq!((p.start.len(), p.target), (2, 2));
        // A third instance: one more task, on it.
        let mut three = two.to_vec();
        three.push(inst("i-3", "z3", 2048, "ACTIVE"));
        let tasks = [task("t1", "i-1", "RUNNING"), task("t2", "i-2", "RUNNING")];
        let p = plan(&g, &three, &tasks, 0, SMALL);
        assert_eq!(p.start, ["i-3"]);
        // An instance drains: its task goes, nothing replaces it.
        three[0].status = "DRAINING".into();
        let tasks = [
            task("t1", "i-1", "RUNNING"),
            task("t2", "i-2", "RUNNING"),
            task("t3", "i-3", "RUNNING"),
        ];
        let p = plan(&g, &three, &tasks, 0, SMALL);
        assert_eq!(
            (p.start.len(), p.stop.as_slice(), p.target),
            (0, &["t1".to_string()][..], 2)
        );
    }

    #[test]
    fn a_scale_in_stops_tasks_that_are_not_running_yet_first() {
        let instances = [inst("i-1", "z1", 2048, "ACTIVE")];
        let g = group(Placement::Binpack(Field::Memory), vec![]);
        let tasks = [task("run", "i-1", "RUNNING"), task("pend", "i-1", "PENDING")];
        assert_eq!(plan(&g, &instances, &tasks, 1, SMALL).stop, ["pend"]);
    }
}
