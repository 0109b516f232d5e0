//! Run owners: every process that runs work registers itself in the store and
//! heartbeats, so a run whose process died is told from one still going on. A process
//! on the same machine checks the owner's pid directly (an owner killed a moment ago is
//! noticed at once); one elsewhere goes by the heartbeat's age.
//!
//! The heartbeat task also carries cancellation: while this process has runs in
//! progress it reads the store's cancellation requests for them (written by
//! `weir runs cancel` in another process) and cancels their tokens.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use weir_core::{Clock, OwnerId, State, Timestamp};
use weir_store::{EndedRuns, Ending, OwnerRecord, Store, StoreResult};

use crate::cancel::CancelToken;

/// How often a live owner records that it lives.
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// An owner on another machine (or one whose pid cannot be checked) is taken for dead
/// after this long without a heartbeat: ten missed beats, so a busy machine is not
/// mistaken for a dead one.
pub const STALE_AFTER: Duration = Duration::from_secs(20);
/// How often a process with runs in progress looks for requests to cancel them.
pub const CANCEL_POLL: Duration = Duration::from_millis(200);

/// This machine's boot, host name and process namespace, read once.
struct Machine {
    host: String,
    /// `boot_id/pid-namespace`; empty where it cannot be read (then pids are never
    /// checked and only heartbeats count).
    id: String,
}

fn machine() -> &'static Machine {
    static MACHINE: OnceLock<Machine> = OnceLock::new();
    MACHINE.get_or_init(|| {
        let read = |path: &str| {
            std::fs::read_to_string(path)
                .ok()
                .map(|text| text.trim().to_owned())
                .filter(|text| !text.is_empty())
        };
        let host = read("/proc/sys/kernel/hostname")
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "unknown-host".into());
        let boot = read("/proc/sys/kernel/random/boot_id");
        let namespace = std::fs::read_link("/proc/self/ns/pid")
            .ok()
            .map(|link| link.display().to_string());
        let id = match (boot, namespace) {
            (Some(boot), Some(namespace)) => format!("{boot}/{namespace}"),
            _ => String::new(),
        };
        Machine { host, id }
    })
}

/// This machine's host name, as run owners record it.
pub(crate) fn host_name() -> &'static str {
    &machine().host
}

/// When the process `pid` started, in clock ticks since boot (`/proc/PID/stat` field
/// 22), or None when there is no such process (or no /proc).
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields are counted
    // from the last `)`.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// This process as a new owner record.
pub(crate) fn this_process(now: Timestamp) -> OwnerRecord {
    let pid = std::process::id();
    let machine = machine();
    OwnerRecord {
        id: OwnerId::generate().to_string(),
        host: machine.host.clone(),
        pid,
        machine: machine.id.clone(),
        pid_started: process_start(pid).unwrap_or(0),
        started: now,
        heartbeat: now,
    }
}

/// Why `owner` is taken for dead at `now`, or None while it lives.
pub fn owner_gone(owner: &OwnerRecord, now: Timestamp) -> Option<String> {
    let here = &machine().id;
    if !here.is_empty() && owner.machine == *here {
        if owner.pid == std::process::id() {
            return None;
        }
        return match process_start(owner.pid) {
            Some(started) if started == owner.pid_started => None,
            Some(_) => Some(format!(
                "pid {} on {} now belongs to another process",
                owner.pid, owner.host
            )),
            None => Some(format!(
                "pid {} on {} no longer exists",
                owner.pid, owner.host
            )),
        };
    }
    let silent = now.since(owner.heartbeat);
    (silent > STALE_AFTER).then(|| {
        format!(
            "pid {} on {} sent no heartbeat for {}s",
            owner.pid,
            owner.host,
            silent.as_secs()
        )
    })
}

/// The owner `id` if it is registered and alive at `now`: who is running a run.
pub async fn live_owner(
    store: &dyn Store,
    id: &str,
    now: Timestamp,
) -> StoreResult<Option<OwnerRecord>> {
    Ok(store
        .owners()
        .await?
        .into_iter()
        .find(|owner| owner.id == id)
        .filter(|owner| owner_gone(owner, now).is_none()))
}

/// Records `Crashed` every unfinished run of every owner that is gone, frees their
/// slots and forgets the owners. What every command that reads runs does first, so
/// that no run is shown `Running` without a live process running it.
pub async fn reap_orphans(
    store: &dyn Store,
    clock: &dyn Clock,
) -> StoreResult<Vec<(OwnerRecord, EndedRuns)>> {
    let now = clock.now();
    let mut reaped = Vec::new();
    for owner in store.owners().await? {
        let Some(why) = owner_gone(&owner, now) else {
            continue;
        };
        let ending = Ending {
            state: State::Crashed,
            message: format!(
                "the process running it stopped at {} ({why})",
                owner.heartbeat
            ),
            at: now,
        };
        let ended = store.retire_owner(&owner.id, &ending).await?;
        reaped.push((owner, ended));
    }
    Ok(reaped)
}

/// This process as the owner of the runs of one runner: its record, its runs'
/// cancellation tokens, and the heartbeat task (started with the first run).
pub(crate) struct Ownership {
    pub(crate) record: OwnerRecord,
    /// Every run's token descends from it: cancelling it cancels everything (Ctrl-C).
    pub(crate) root: CancelToken,
    /// The tokens of runs in progress, by run id, for cancellation requests.
    active: Mutex<HashMap<String, CancelToken>>,
    heartbeat: Mutex<Option<tokio::task::JoinHandle<()>>>,
    registered: OnceLock<()>,
}

/// Removes a run from the active ones when it ends, however it ends.
pub(crate) struct ActiveRun {
    ownership: Arc<Ownership>,
    id: String,
}

impl Drop for ActiveRun {
    fn drop(&mut self) {
        self.ownership.lock_active().remove(&self.id);
    }
}

impl Ownership {
    pub(crate) fn new(now: Timestamp) -> Self {
        Ownership {
            record: this_process(now),
            root: CancelToken::new(),
            active: Mutex::new(HashMap::new()),
            heartbeat: Mutex::new(None),
            registered: OnceLock::new(),
        }
    }

    fn lock_active(&self) -> std::sync::MutexGuard<'_, HashMap<String, CancelToken>> {
        self.active
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Makes a run cancellable by id until the returned guard drops.
    pub(crate) fn activate(self: &Arc<Self>, id: &str, token: &CancelToken) -> ActiveRun {
        self.lock_active().insert(id.to_owned(), token.clone());
        ActiveRun {
            ownership: self.clone(),
            id: id.to_owned(),
        }
    }

    /// Registers this process in the store and starts heartbeating, once, from the
    /// first run on (a runner that runs nothing leaves no trace).
    pub(crate) async fn ensure_registered(
        self: &Arc<Self>,
        store: &Arc<dyn Store>,
        clock: &Arc<dyn Clock>,
    ) -> StoreResult<()> {
        if self.registered.get().is_some() {
            return Ok(());
        }
        // Two runs starting at once may both register: the record is replaced, harmless.
        let mut record = self.record.clone();
        record.heartbeat = clock.now();
        store.register_owner(&record).await?;
        if self.registered.set(()).is_ok() {
            let task = tokio::spawn(heartbeat(self.clone(), store.clone(), clock.clone()));
            *self
                .heartbeat
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(task);
        }
        Ok(())
    }

    /// Stops heartbeating and retires this owner: a run it left unfinished (which a
    /// clean exit does not) is recorded Crashed, and its slots are freed.
    pub(crate) async fn retire(&self, store: &dyn Store, clock: &dyn Clock) {
        if let Some(task) = self
            .heartbeat
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
        {
            task.abort();
        }
        if self.registered.get().is_none() {
            return;
        }
        let ending = Ending {
            state: State::Crashed,
            message: "the process running it exited before it finished".into(),
            at: clock.now(),
        };
        if let Err(error) = store.retire_owner(&self.record.id, &ending).await {
            tracing::error!("could not retire this process's runs: {}", error.describe());
        }
    }
}

async fn heartbeat(ownership: Arc<Ownership>, store: Arc<dyn Store>, clock: Arc<dyn Clock>) {
    let beats_per_heartbeat = (HEARTBEAT.as_millis() / CANCEL_POLL.as_millis()).max(1) as u64;
    let mut tick: u64 = 0;
    loop {
        tokio::time::sleep(CANCEL_POLL).await;
        tick += 1;
        if tick.is_multiple_of(beats_per_heartbeat)
            && let Err(error) = store.heartbeat_owner(&ownership.record.id, clock.now())
        {
            tracing::error!(
                "could not record this process's heartbeat: {}",
                error.describe()
            );
        }
        if ownership.lock_active().is_empty() {
            continue;
        }
        let requests = match store.cancel_requests(&ownership.record.id).await {
            Ok(requests) => requests,
            Err(error) => {
                tracing::error!("could not read cancellation requests: {}", error.describe());
                continue;
            }
        };
        for request in requests {
            let token = ownership.lock_active().get(&request.run_id).cloned();
            if let Some(token) = token {
                token.cancel(&request.reason);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_finished_one_is_gone() {
        let now = Timestamp(1_000_000);
        let me = this_process(now);
        assert_eq!(owner_gone(&me, now), None);

        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let mut dead = me.clone();
        dead.pid = pid;
        let why = owner_gone(&dead, now).expect("an exited process is gone");
        assert!(why.contains(&format!("pid {pid}")), "{why}");

        // Elsewhere only the heartbeat counts.
        let mut remote = me.clone();
        remote.machine = "another-machine".into();
        assert_eq!(owner_gone(&remote, now.saturating_add(STALE_AFTER)), None);
        let silent = owner_gone(&remote, now.saturating_add(STALE_AFTER * 2)).unwrap();
        assert!(silent.contains("sent no heartbeat for 40s"), "{silent}");
    }
}
