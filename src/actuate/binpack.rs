//! How many instances the tasks need: multi-dimensional first-fit-decreasing bin packing of task
//! reservations (CPU units and memory MiB) onto instances.
//!
//! Pure arithmetic, used by the capacity actuator. The instances already in the group are the
//! first bins (each with its own size: a group may mix instance types), fullest first, so the
//! emptiest ones are those left unused; new bins have the size of the instance the group
//! launches. Every bin is filled only up to `1 - headroom` of what it offers, so room stays free
//! for the next scale-out; a task that fits an instance only by eating into the headroom gets an
//! instance of its own rather than an error. A task larger than any instance is an error: no
//! number of instances places it, and guessing one would scale for nothing.

use std::fmt;

use crate::model::Resources;

/// Tasks of one size, e.g. the tasks a service will run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Demand {
    /// What they belong to (`service web`, `task family:batch`), for messages.
    pub name: String,
    pub size: Resources,
    pub count: u32,
}

/// An instance that exists (or is booting) in the group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bin {
    /// The EC2 instance id.
    pub id: String,
    /// What it offers to tasks (registered resources, less the per-instance overhead).
    pub capacity: Resources,
    /// Tasks on it now: the fuller instances are filled first, so the emptier are released.
    pub tasks: u32,
}

/// Where the tasks went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packing {
    /// Ids of the existing instances that hold at least one task, in packing order.
    pub used: Vec<String>,
    /// Ids of the existing instances left empty.
    pub unused: Vec<String>,
    /// Instances to add.
    pub new_instances: u32,
    /// Tasks that only the existing (larger) instances could hold, and they are full: more
    /// instances of the size the group launches would not place them. (name, count)
    pub unplaced: Vec<(String, u32)>,
    /// Tasks left without room by a cap on the number of instances ([`pack_within`]).
    /// (name, count)
    pub waiting: Vec<(String, u32)>,
}

impl Packing {
    /// Instances needed in all.
    pub fn needed(&self) -> u32 {
        self.used.len() as u32 + self.new_instances
    }
}

/// A task that fits no instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooLarge {
    pub name: String,
    pub size: Resources,
    /// The largest instance considered (the group's instance type, or an existing one).
    pub largest: Resources,
}

impl fmt::Display for TooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a task of {} reserves {} CPU units and {} MiB, more than any instance offers (at most {} CPU units and {} MiB): no number of instances places it; use a larger instance type or a smaller task",
            self.name, self.size.cpu, self.size.memory_mib, self.largest.cpu, self.largest.memory_mib
        )
    }
}

impl std::error::Error for TooLarge {}

/// What is left of a bin.
#[derive(Debug, Clone, Copy)]
struct Room {
    /// Within the headroom.
    cpu: i64,
    mem: i64,
    /// Without it (for a bin's only task).
    full: Resources,
    tasks: u32,
}

impl Room {
    fn new(capacity: Resources, headroom: f64) -> Self {
        let keep = 1.0 - headroom.clamp(0.0, 0.95);
        Room {
            cpu: (f64::from(capacity.cpu) * keep).floor() as i64,
            mem: (f64::from(capacity.memory_mib) * keep).floor() as i64,
            full: capacity,
            tasks: 0,
        }
    }

    fn fits(&self, s: Resources) -> bool {
        let within = i64::from(s.cpu) <= self.cpu && i64::from(s.memory_mib) <= self.mem;
        within || (self.tasks == 0 && s.cpu <= self.full.cpu && s.memory_mib <= self.full.memory_mib)
    }

    fn take(&mut self, s: Resources) {
        self.cpu -= i64::from(s.cpu);
        self.mem -= i64::from(s.memory_mib);
        self.tasks += 1;
    }
}

fn fits_at_all(s: Resources, capacity: Resources) -> bool {
    s.cpu <= capacity.cpu && s.memory_mib <= capacity.memory_mib
}

/// Packs `demands` onto `existing` instances, then onto new instances of size `new_instance`.
/// `headroom` (0.1 = 10 %) of every instance is kept free.
pub fn pack(
    demands: &[Demand],
    existing: &[Bin],
    new_instance: Resources,
    headroom: f64,
) -> Result<Packing, TooLarge> {
    pack_capped(demands, existing, new_instance, headroom, usize::MAX)
}

/// As [`pack`], with at most `max_instances` in all (the existing ones count): what does not
/// fit is listed in [`Packing::waiting`], largest tasks first as they are placed.
pub fn pack_within(
    demands: &[Demand],
    existing: &[Bin],
    new_instance: Resources,
    headroom: f64,
    max_instances: u32,
) -> Result<Packing, TooLarge> {
    pack_capped(demands, existing, new_instance, headroom, max_instances as usize)
}

fn pack_capped(
    demands: &[Demand],
    existing: &[Bin],
    new_instance: Resources,
    headroom: f64,
    cap: usize,
) -> Result<Packing, TooLarge> {
    let weight = |s: Resources| weight(s, new_instance);
    let mut order: Vec<&Demand> = demands.iter().filter(|d| d.count > 0).collect();
    order.sort_by(|a, b| {
        weight(b.size)
            .total_cmp(&weight(a.size))
            .then(b.size.cpu.cmp(&a.size.cpu))
            .then(b.size.memory_mib.cmp(&a.size.memory_mib))
            .then(a.name.cmp(&b.name))
    });
    let mut bins: Vec<&Bin> = existing.iter().collect();
    // Fullest first; then larger first; then by id, so the result does not depend on input order.
    bins.sort_by(|a, b| {
        b.tasks
            .cmp(&a.tasks)
            .then(weight(b.capacity).total_cmp(&weight(a.capacity)))
            .then(a.id.cmp(&b.id))
    });
    let mut p = Packer {
        rooms: bins.iter().map(|b| Room::new(b.capacity, headroom)).collect(),
        new_instance,
        headroom,
        cap,
        unplaced: Vec::new(),
        waiting: Vec::new(),
    };
    let existing_count = p.rooms.len();
    for d in order {
        let fits_somewhere =
            fits_at_all(d.size, new_instance) || bins.iter().any(|b| fits_at_all(d.size, b.capacity));
        if !fits_somewhere {
            let largest = bins
                .iter()
                .map(|b| b.capacity)
                .chain([new_instance])
                .max_by(|a, b| weight(*a).total_cmp(&weight(*b)))
                .unwrap_or(new_instance);
            return Err(TooLarge {
                name: d.name.clone(),
                size: d.size,
                largest,
            });
        }
        p.place(d);
    }
    let (mut used, mut unused) = (Vec::new(), Vec::new());
    for (b, r) in bins.iter().zip(&p.rooms) {
        if r.tasks > 0 {
            used.push(b.id.clone());
        } else {
            unused.push(b.id.clone());
        }
    }
    Ok(Packing {
        used,
        unused,
        new_instances: (p.rooms.len() - existing_count) as u32,
        unplaced: p.unplaced,
        waiting: p.waiting,
    })
}

/// The largest dimension of `s` relative to a new instance: it decides the order (ties: CPU,
/// then memory).
fn weight(s: Resources, new_instance: Resources) -> f64 {
    let scale = |v: u32, of: u32| f64::from(v) / f64::from(of.max(1));
    scale(s.cpu, new_instance.cpu).max(scale(s.memory_mib, new_instance.memory_mib))
}

/// The packing under way: the rooms (existing instances first, then new ones, at most `cap`),
/// and what found no room.
struct Packer {
    rooms: Vec<Room>,
    new_instance: Resources,
    headroom: f64,
    cap: usize,
    unplaced: Vec<(String, u32)>,
    waiting: Vec<(String, u32)>,
}

impl Packer {
    /// Places each task of `d` in the first room it fits, else on a new instance.
    fn place(&mut self, d: &Demand) {
        for placed in 0..d.count {
            if let Some(r) = self.rooms.iter_mut().find(|r| r.fits(d.size)) {
                r.take(d.size);
                continue;
            }
            // Only existing instances can hold it (a smaller instance type is launched): those
            // are full, so no new instance helps.
            if !fits_at_all(d.size, self.new_instance) {
                self.unplaced.push((d.name.clone(), d.count - placed));
                return;
            }
            if self.rooms.len() >= self.cap {
                // Smaller tasks after it may still fit in what is left.
                match self.waiting.last_mut() {
                    Some((name, n)) if *name == d.name => *n += 1,
                    _ => self.waiting.push((d.name.clone(), 1)),
                }
                continue;
            }
            let mut r = Room::new(self.new_instance, self.headroom);
            r.take(d.size);
            self.rooms.push(r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(cpu: u32, memory_mib: u32) -> Resources {
        Resources { cpu, memory_mib }
    }

    fn d(name: &str, cpu: u32, mem: u32, count: u32) -> Demand {
        Demand {
            name: name.into(),
            size: r(cpu, mem),
            count,
        }
    }

    fn bin(id: &str, cpu: u32, mem: u32, tasks: u32) -> Bin {
        Bin {
            id: id.into(),
            capacity: r(cpu, mem),
            tasks,
        }
    }

    #[test]
    fn a_cap_on_instances_says_how_many_tasks_wait() {
        // 2 vCPU instances hold 4 tasks of 512 each: 40 tasks on at most 3 instances, 12 fit.
        let p = pack_within(&[d("web", 512, 256, 40)], &[], r(2048, 8192), 0.0, 3).unwrap();
        assert_eq!(
            (p.needed(), p.waiting.clone()),
            (3, vec![("web".to_string(), 28)])
        );
        // Small tasks still fill what the large ones leave: 3 large (1536) on 3 instances,
        // then 512-unit tasks only in the 512 left on each.
        let p = pack_within(
            &[d("large", 1536, 256, 5), d("small", 512, 256, 6)],
            &[],
            r(2048, 8192),
            0.0,
            3,
        )
        .unwrap();
        assert_eq!(
            p.waiting,
            vec![("large".to_string(), 2), ("small".to_string(), 3)]
        );
        // Within the cap, nothing waits.
        let p = pack_within(&[d("web", 512, 256, 12)], &[], r(2048, 8192), 0.0, 3).unwrap();
        assert!(p.waiting.is_empty());
    }

    #[test]
    fn one_dimension_fills_instances_in_turn() {
        // 2 vCPU instances, no headroom: 10 tasks of half a vCPU need 3 instances (4 + 4 + 2).
        let p = pack(&[d("web", 512, 256, 10)], &[], r(2048, 8192), 0.0).unwrap();
        assert_eq!(p.new_instances, 3);
        assert_eq!(p.needed(), 3);
    }

    #[test]
    fn memory_can_be_the_binding_dimension() {
        // CPU would fit 8 per instance, memory only 3 (3 × 2500 ≤ 7680 < 4 × 2500).
        let p = pack(&[d("cache", 256, 2500, 7)], &[], r(2048, 7680), 0.0).unwrap();
        assert_eq!(p.new_instances, 3);
    }

    #[test]
    fn headroom_is_kept_on_every_instance() {
        // 4 tasks of 1024 CPU on 4096 CPU instances: one instance without headroom, two with 10 %.
        let demands = [d("api", 1024, 512, 4)];
        assert_eq!(pack(&demands, &[], r(4096, 16384), 0.0).unwrap().new_instances, 1);
        assert_eq!(pack(&demands, &[], r(4096, 16384), 0.1).unwrap().new_instances, 2);
    }

    #[test]
    fn mixed_sizes_are_packed_largest_first() {
        // First fit decreasing: the two 3072-CPU tasks take one instance each and the small ones
        // fill the gaps: 2 instances. In input order (small first) first fit would need 3.
        let demands = [d("small", 1024, 1024, 2), d("big", 3072, 1024, 2)];
        let p = pack(&demands, &[], r(4096, 8192), 0.0).unwrap();
        assert_eq!(p.new_instances, 2);
    }

    #[test]
    fn mixed_instance_types_existing_first() {
        // The group has one large (8 vCPU) and one small (2 vCPU) instance and launches mediums.
        let existing = [bin("i-small", 2048, 4096, 0), bin("i-large", 8192, 16384, 5)];
        // 10 tasks of 1024 CPU: 8 on the large, 2 on the small, no new instance.
        let p = pack(&[d("web", 1024, 1024, 10)], &existing, r(4096, 8192), 0.0).unwrap();
        assert_eq!(p.used, vec!["i-large".to_string(), "i-small".to_string()]);
        assert_eq!(p.new_instances, 0);
        // 13 tasks: 3 more on one new medium.
        let p = pack(&[d("web", 1024, 1024, 13)], &existing, r(4096, 8192), 0.0).unwrap();
        assert_eq!(p.new_instances, 1);
        assert_eq!(p.needed(), 3);
    }

    #[test]
    fn the_emptiest_instances_are_left_unused() {
        let existing = [
            bin("i-a", 4096, 8192, 1),
            bin("i-b", 4096, 8192, 6),
            bin("i-c", 4096, 8192, 3),
        ];
        let p = pack(&[d("web", 1024, 1024, 6)], &existing, r(4096, 8192), 0.0).unwrap();
        // Fullest first: i-b takes 4, i-c takes 2; i-a (one task now) is the one to release.
        assert_eq!(p.used, vec!["i-b".to_string(), "i-c".to_string()]);
        assert_eq!(p.unused, vec!["i-a".to_string()]);
        assert_eq!(p.needed(), 2);
    }

    #[test]
    fn a_task_larger_than_any_instance_is_an_error() {
        let existing = [bin("i-a", 4096, 8192, 0)];
        let err = pack(
            &[d("service web", 512, 512, 3), d("service huge", 8192, 4096, 1)],
            &existing,
            r(4096, 8192),
            0.1,
        )
        .unwrap_err();
        assert_eq!(err.name, "service huge");
        assert_eq!(err.largest, r(4096, 8192));
        let msg = err.to_string();
        assert!(
            msg.contains("service huge") && msg.contains("8192 CPU units"),
            "{msg}"
        );
    }

    #[test]
    fn a_task_that_fits_only_by_using_the_headroom_gets_its_own_instance() {
        // 4000 CPU > 90 % of 4096, but it fits an empty instance.
        let p = pack(&[d("batch", 4000, 1024, 2)], &[], r(4096, 8192), 0.1).unwrap();
        assert_eq!(p.new_instances, 2);
    }

    #[test]
    fn a_task_that_only_a_larger_existing_instance_holds() {
        // The group launches small instances now, but a large one is still there.
        let existing = [bin("i-large", 8192, 16384, 1)];
        let p = pack(
            &[d("big", 6000, 2048, 1), d("web", 1024, 1024, 3)],
            &existing,
            r(4096, 8192),
            0.0,
        )
        .unwrap();
        assert_eq!(p.used, vec!["i-large".to_string()]);
        assert_eq!(p.new_instances, 1);
        assert!(p.unplaced.is_empty());
        // Two such tasks: the second has nowhere to go, and says so.
        let p = pack(&[d("big", 6000, 2048, 2)], &existing, r(4096, 8192), 0.0).unwrap();
        assert_eq!(p.unplaced, vec![("big".to_string(), 1)]);
        assert_eq!(p.new_instances, 0);
    }

    #[test]
    fn nothing_to_place_needs_nothing() {
        let existing = [bin("i-a", 4096, 8192, 0)];
        let p = pack(&[d("web", 1024, 1024, 0)], &existing, r(4096, 8192), 0.1).unwrap();
        assert_eq!(p.needed(), 0);
        assert_eq!(p.unused, vec!["i-a".to_string()]);
    }
}
