//! Supervision (`spec/unikernel-and-executor.md` §8, §9): every tender is watched by a
//! task; its exit is classified, cleaned up after (resources freed, block devices
//! detached, run record, taps and cgroup removed) and then either handed to the command
//! that stopped it, or followed by an automatic restart, or the unikernel is gone. A
//! SIGKILL while the tender's cgroup counted an OOM kill is reported as
//! [`Event::OomKilled`] (and logged); like any signal exit it is never restarted.
//!
//! Restarts go through a back-off: the first after [`Limits::restart_backoff_initial`],
//! doubling with every further exit that comes within
//! [`Limits::restart_backoff_reset`] of its start, up to
//! [`Limits::restart_backoff_max`]; a crash loop therefore costs at most one spawn per
//! maximum delay instead of spinning a CPU. While a restart is pending the unikernel stays
//! in the state file (it is meant to run), `destroy` answers "destroyed: removed from
//! restarting" and cancels it, and `force-create` cancels it too (Note E5).
//!
//! [`Limits::restart_backoff_initial`]: crate::limits::Limits::restart_backoff_initial
//! [`Limits::restart_backoff_reset`]: crate::limits::Limits::restart_backoff_reset
//! [`Limits::restart_backoff_max`]: crate::limits::Limits::restart_backoff_max

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::codec::{FailBehaviour, UnikernelConfig};
use crate::executor::events::Event;
use crate::executor::state::{Inner, Pending};
use crate::executor::tender::{ExitReason, ExitWaiter, should_restart};
use crate::executor::unikernel::{Launch, UnikernelError};
use crate::name::Name;

/// The exit code of a unikernel that does not understand `--name` (cmdliner's usage
/// error): with `addName` it is restarted once without `--name` (spec §8).
pub const ADD_NAME_FALLBACK_CODE: i32 = 64;

/// What happens after an exit.
enum Next {
    /// A command stopped it: hand it the exit.
    Stopped(oneshot::Sender<ExitReason>),
    /// Shutting down: nothing (the state file is kept as it is).
    Nothing,
    /// A restart is scheduled; `persist` if the configuration changed.
    Restart {
        attempt: u32,
        delay: Duration,
        generation: u64,
        persist: bool,
    },
    /// The unikernel is gone.
    Gone,
}

impl Inner {
    /// Watches a started tender.
    pub(crate) fn watch(self: &Arc<Self>, name: Name, id: u64, exit: ExitWaiter) {
        let inner = Arc::clone(self);
        tokio::spawn(async move {
            let reason = exit.await;
            inner.on_exit(name, id, reason).await;
        });
    }

    /// Hands the tender's console pipe to the console hub (ring buffer, subscribers).
    pub(crate) fn attach_console(&self, name: &Name, console: OwnedFd) {
        if let Err(e) = self.console.attach(name, console) {
            tracing::error!(%name, error = %e, "could not read the console");
        }
    }

    /// Handles the exit of instance `id` of `name`.
    async fn on_exit(self: Arc<Self>, name: Name, id: u64, reason: ExitReason) {
        let (instance, next) = {
            let mut global = self.global();
            if global.running.get(&name).is_none_or(|i| i.id != id) {
                tracing::error!(%name, "exit of an instance that is not running");
                return;
            }
            let Some(mut instance) = global.running.remove(&name) else {
                return;
            };
            global.resources.remove_unikernel(&name);
            // Under the lock: a new instance of this name (possible as soon as the lock is
            // released) writes its own run record and image, which must not be removed.
            if let Ok(record) = self.dir.run_record(&name) {
                let _ = std::fs::remove_file(record);
            }
            let next = if let Some(waiter) = instance.stop.take() {
                Next::Stopped(waiter)
            } else if global.shutting_down {
                Next::Nothing
            } else if let Some((config, changed)) = restart_config(&instance.config, reason) {
                let limits = &self.config.limits;
                let attempt = next_attempt(
                    instance.attempt,
                    instance.started_at.elapsed(),
                    limits.restart_backoff_reset,
                );
                let delay = backoff(
                    attempt,
                    limits.restart_backoff_initial,
                    limits.restart_backoff_max,
                );
                let generation = self.next_id();
                global.pending.insert(
                    name.clone(),
                    Pending {
                        config,
                        digest: instance.digest,
                        attempt,
                        generation,
                        task: None,
                    },
                );
                Next::Restart {
                    attempt,
                    delay,
                    generation,
                    persist: changed,
                }
            } else {
                global.records.remove_unikernel(&name);
                if let Ok(image) = self.dir.image(&name) {
                    let _ = std::fs::remove_file(image);
                }
                Next::Gone
            };
            (instance, next)
        };
        for tap in &instance.taps {
            if let Err(e) = self.network.remove_tap(tap) {
                tracing::error!(%name, %tap, error = %e, "could not remove a tap");
            }
        }
        let mut oom_limit = None;
        if let Some(cgroup) = &instance.cgroup {
            // Read before the group goes; the tender has been reaped.
            if reason == ExitReason::Signaled(libc::SIGKILL)
                && cgroup.oom_kills().is_some_and(|n| n > 0)
            {
                oom_limit = Some(cgroup.memory_limit_bytes().unwrap_or(0) / (1024 * 1024));
            }
            if let Err(e) = cgroup.remove().await {
                tracing::error!(%name, group = cgroup.label(), error = %e, "could not remove a cgroup");
            }
        }
        self.events.emit(match (reason, oom_limit) {
            (ExitReason::Signaled(_), Some(limit_mb)) => {
                tracing::warn!(
                    %name,
                    limit_mb,
                    "the kernel's OOM killer stopped the tender: it reached its cgroup's memory limit"
                );
                Event::OomKilled {
                    name: name.clone(),
                    limit_mb,
                }
            }
            (ExitReason::Exited(code), _) => Event::Exited {
                name: name.clone(),
                code,
            },
            (ExitReason::Signaled(signal), None) => Event::Signaled {
                name: name.clone(),
                signal,
            },
        });
        match next {
            Next::Stopped(waiter) => {
                let _ = waiter.send(reason);
            }
            Next::Nothing => {}
            Next::Restart {
                attempt,
                delay,
                generation,
                persist,
            } => {
                self.events.emit(Event::RestartScheduled {
                    name: name.clone(),
                    attempt,
                    delay,
                });
                let task =
                    tokio::spawn(Arc::clone(&self).restart_after(name.clone(), generation, delay));
                if let Some(pending) = self
                    .global()
                    .pending
                    .get_mut(&name)
                    .filter(|p| p.generation == generation)
                {
                    pending.task = Some(task.abort_handle());
                }
                if persist {
                    self.persist_logged().await;
                }
            }
            Next::Gone => {
                if let Err(e) = crate::store::sync_dir(&self.dir.images()) {
                    tracing::error!(error = %e, "could not sync the image directory");
                }
                self.persist_logged().await;
            }
        }
    }

    /// Waits for the back-off, then restarts `name` if its restart is still pending.
    async fn restart_after(self: Arc<Self>, name: Name, generation: u64, delay: Duration) {
        tokio::time::sleep(delay).await;
        let _lock = self.lock_name(&name).await;
        let pending = {
            let mut global = self.global();
            if global.shutting_down
                || global
                    .pending
                    .get(&name)
                    .is_none_or(|p| p.generation != generation)
            {
                return;
            }
            global.pending.remove(&name)
        };
        let Some(pending) = pending else {
            return;
        };
        let restarted = self
            .relaunch(
                &name,
                pending.config,
                Some(pending.digest),
                pending.attempt,
                Launch::Restarted,
            )
            .await;
        if let Err(e) = restarted {
            if matches!(e, UnikernelError::ShuttingDown) {
                // Not a failure of the unikernel: the state file keeps it for the next
                // start.
                return;
            }
            self.events.emit(Event::RestartFailed {
                name: name.clone(),
                reason: e.to_string(),
            });
            self.forget_logged(&name).await;
        }
    }

    /// Persists; on failure only logs (nobody waits for a reply).
    pub(crate) async fn persist_logged(&self) {
        if let Err(e) = self.persist().await {
            tracing::error!(error = %e, "could not save the state");
        }
    }
}

/// The configuration to restart with after `reason`, and whether it differs from
/// `config`; `None` if the unikernel is not restarted (spec §8): with `addName` and exit
/// code 64 once more without `--name`, else as `failBehaviour` and [`should_restart`] say.
pub fn restart_config(
    config: &UnikernelConfig,
    reason: ExitReason,
) -> Option<(UnikernelConfig, bool)> {
    if config.add_name && reason == ExitReason::Exited(ADD_NAME_FALLBACK_CODE) {
        let mut without_name = config.clone();
        without_name.add_name = false;
        return Some((without_name, true));
    }
    let codes = match &config.fail_behaviour {
        FailBehaviour::Quit => None,
        FailBehaviour::Restart(codes) => Some(codes),
    };
    should_restart(reason, codes).then(|| (config.clone(), false))
}

/// The attempt number of the next restart: 1 after a run of at least `reset`, else one
/// more than the attempt that started the instance.
pub fn next_attempt(previous: u32, uptime: Duration, reset: Duration) -> u32 {
    if uptime >= reset {
        1
    } else {
        previous.saturating_add(1)
    }
}

/// The delay before restart `attempt` (1-based): `initial`, doubled for each further
/// attempt, at most `max`.
pub fn backoff(attempt: u32, initial: Duration, max: Duration) -> Duration {
    let doublings = attempt.saturating_sub(1).min(31);
    initial.saturating_mul(1 << doublings).min(max)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let delays: Vec<u64> = (1..=9)
            .map(|a| backoff(a, Duration::from_secs(1), Duration::from_secs(60)).as_secs())
            .collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(
            backoff(u32::MAX, Duration::from_secs(1), Duration::from_secs(60)),
            Duration::from_secs(60)
        );
        assert_eq!(
            next_attempt(5, Duration::from_secs(61), Duration::from_secs(60)),
            1
        );
        assert_eq!(
            next_attempt(5, Duration::from_secs(59), Duration::from_secs(60)),
            6
        );
        assert_eq!(next_attempt(0, Duration::ZERO, Duration::from_secs(60)), 1);
    }

    #[test]
    fn restart_decisions() {
        let quit = UnikernelConfig::default();
        let any = UnikernelConfig {
            fail_behaviour: FailBehaviour::Restart(BTreeSet::new()),
            add_name: false,
            ..UnikernelConfig::default()
        };
        let some = UnikernelConfig {
            fail_behaviour: FailBehaviour::Restart(BTreeSet::from([3])),
            add_name: false,
            ..UnikernelConfig::default()
        };
        // addName and 64: once more without --name, whatever the fail behaviour.
        let (config, changed) = restart_config(&quit, ExitReason::Exited(64)).unwrap();
        assert!(changed);
        assert!(!config.add_name);
        assert_eq!(restart_config(&config, ExitReason::Exited(64)), None);
        assert_eq!(restart_config(&quit, ExitReason::Exited(2)), None);
        assert_eq!(
            restart_config(&any, ExitReason::Exited(2)),
            Some((any.clone(), false))
        );
        assert_eq!(restart_config(&any, ExitReason::Exited(1)), None);
        assert_eq!(restart_config(&any, ExitReason::Signaled(9)), None);
        assert_eq!(
            restart_config(&some, ExitReason::Exited(3)),
            Some((some.clone(), false))
        );
        assert_eq!(restart_config(&some, ExitReason::Exited(2)), None);
    }
}
