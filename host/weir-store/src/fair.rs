//! Fair claims across tenants: how many rows of a claim each tenant with queued work
//! gets, by stride scheduling weighted by the tenants' weights.
//!
//! Each tenant has a *pass* (its virtual time), which moves on by `1 / weight` for every
//! row claimed for it; a claim hands its rows out one at a time to the tenant whose
//! pass would be lowest after taking one. So over claims, tenants get rows in
//! proportion to their weights whatever their queues hold: a tenant with 100,000 queued
//! runs gets its share of each claim, and a tenant with one queued run gets a row of
//! the next claim. A tenant that has nothing queued is forgotten, and comes back at the
//! lowest pass of those waiting then, so time idle earns no credit.
//!
//! The passes are kept per store value (in a worker, its process): every worker is fair
//! on its own, so all of them together are.

use std::collections::HashMap;
use std::sync::Mutex;
use weir_core::TenantId;

use crate::WorkKind;

/// A tenant with rows a claim may take.
#[derive(Debug, Clone, PartialEq)]
pub struct Waiting {
    pub tenant: TenantId,
    /// Its share: 1 to 1,000.
    pub weight: u32,
    /// How many rows it has ready now, at most the claim's room (fewer when a quota
    /// holds it back).
    pub ready: usize,
}

/// The passes of the tenants with queued work, per kind of row.
#[derive(Debug, Default)]
pub struct FairShare {
    passes: Mutex<HashMap<WorkKind, HashMap<TenantId, f64>>>,
}

impl FairShare {
    /// How many of `room` rows of `kind` each waiting tenant gets (tenants that get none
    /// are left out), in the order they would be served.
    pub fn shares(
        &self,
        kind: WorkKind,
        waiting: &[Waiting],
        room: usize,
    ) -> Vec<(TenantId, usize)> {
        let mut passes = self.lock();
        let passes = passes.entry(kind).or_default();
        // Tenants with nothing queued are forgotten: idle time earns no credit.
        passes.retain(|tenant, _| waiting.iter().any(|waiting| &waiting.tenant == tenant));
        let floor = passes.values().copied().fold(f64::INFINITY, f64::min);
        let floor = if floor.is_finite() { floor } else { 0.0 };
        let mut current: Vec<(usize, f64, f64)> = waiting
            .iter()
            .enumerate()
            .filter(|(_, waiting)| waiting.ready > 0)
            .map(|(index, waiting)| {
                let stride = 1.0 / f64::from(waiting.weight.clamp(1, 1000));
                // A newcomer's first row comes first: it has used nothing yet.
                let pass = *passes
                    .entry(waiting.tenant.clone())
                    .or_insert(floor - stride);
                (index, pass, stride)
            })
            .collect();
        let mut given = vec![0usize; waiting.len()];
        let mut order = Vec::new();
        for _ in 0..room {
            let next = current
                .iter_mut()
                .filter(|(index, _, _)| given[*index] < waiting[*index].ready)
                // Ties go to the tenant listed first (the waiting list is by name).
                .min_by(|(_, a, stride_a), (_, b, stride_b)| {
                    (*a + *stride_a).total_cmp(&(*b + *stride_b))
                });
            let Some((index, pass, stride)) = next else {
                break;
            };
            *pass += *stride;
            if given[*index] == 0 {
                order.push(*index);
            }
            given[*index] += 1;
        }
        order
            .into_iter()
            .map(|index| (waiting[index].tenant.clone(), given[index]))
            .collect()
    }

    /// Records what a claim took of a tenant: its pass moves on by `count / weight`.
    pub fn claimed(&self, kind: WorkKind, tenant: &TenantId, weight: u32, count: usize) {
        if count == 0 {
            return;
        }
        let mut passes = self.lock();
        let passes = passes.entry(kind).or_default();
        // Every tenant of `shares` has a pass; one claimed otherwise starts at the lowest.
        let floor = passes.values().copied().fold(f64::INFINITY, f64::min);
        let floor = if floor.is_finite() { floor } else { 0.0 };
        let pass = passes.entry(tenant.clone()).or_insert(floor);
        *pass += count as f64 / f64::from(weight.clamp(1, 1000));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<WorkKind, HashMap<TenantId, f64>>> {
        // Numbers only: a panic elsewhere cannot leave them half written.
        self.passes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting(name: &str, weight: u32, ready: usize) -> Waiting {
        Waiting {
            tenant: TenantId::parse(name).unwrap(),
            weight,
            ready,
        }
    }

    fn claim(fair: &FairShare, list: &[Waiting], room: usize) -> HashMap<String, usize> {
        let shares = fair.shares(WorkKind::Task, list, room);
        for (tenant, count) in &shares {
            let weight = list.iter().find(|w| &w.tenant == tenant).unwrap().weight;
            fair.claimed(WorkKind::Task, tenant, weight, *count);
        }
        shares
            .into_iter()
            .map(|(tenant, count)| (tenant.to_string(), count))
            .collect()
    }

    #[test]
    fn a_tenant_with_one_run_is_served_in_the_next_claim_whatever_another_has_queued() {
        let fair = FairShare::default();
        // A alone for a while: it takes every row.
        for _ in 0..100 {
            assert_eq!(claim(&fair, &[waiting("a", 1, 100_000)], 4)["a"], 4);
        }
        // B arrives with one run: the very next claim serves it, even of room 1.
        let got = claim(&fair, &[waiting("a", 1, 100_000), waiting("b", 1, 1)], 1);
        assert_eq!(got.get("b"), Some(&1), "{got:?}");
    }

    #[test]
    fn rows_are_shared_by_weight() {
        let fair = FairShare::default();
        let list = [waiting("a", 1, 1000), waiting("b", 3, 1000)];
        let mut totals: HashMap<String, usize> = HashMap::new();
        for _ in 0..100 {
            for (tenant, count) in claim(&fair, &list, 4) {
                *totals.entry(tenant).or_default() += count;
            }
        }
        assert_eq!((totals["a"], totals["b"]), (100, 300));
    }

    #[test]
    fn idle_time_earns_no_credit_and_ready_rows_bound_a_share() {
        let fair = FairShare::default();
        for _ in 0..50 {
            claim(&fair, &[waiting("a", 1, 10), waiting("b", 1, 10)], 2);
        }
        // B leaves; A goes on alone; B comes back: they share, B is not owed 50 rounds.
        for _ in 0..50 {
            claim(&fair, &[waiting("a", 1, 10)], 2);
        }
        let got = claim(&fair, &[waiting("a", 1, 10), waiting("b", 1, 10)], 4);
        assert_eq!((got["a"], got["b"]), (2, 2), "{got:?}");
        // A tenant with fewer rows ready than its share leaves the rest to the others.
        let got = claim(&fair, &[waiting("a", 1, 10), waiting("b", 1, 1)], 4);
        assert_eq!((got["a"], got["b"]), (3, 1), "{got:?}");
    }
}
