//! One request: the chain's policies as one transaction, then the command, dispatched with
//! one `match`.

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::chain::{CertId, Request};
use crate::codec::{
    Command, ConsoleCmd, InfoEntry, Payload, PolicyCmd, PolicyEntry, StatsCmd, Success,
    UnikernelCmd, UnikernelInfoOld4, UnikernelInfoOld5,
};
use crate::executor::api::{ExecRequest, InputReceiver, OutputFrame};
use crate::executor::blockdev::BlockReply;
use crate::executor::console::SubscriberTag;
use crate::executor::revoke::console_tag_id;
use crate::executor::state::Inner;
use crate::executor::unikernel::{UnikernelError, labelled};
use crate::resources::PolicyOutcome;

/// Prefix of the failure when a chain's policy is refused (albatross's words).
pub const POLICY_FAILURE_PREFIX: &str = "expected success when adding policy, got: ";

/// What a command answers with.
enum Reply {
    /// A final success frame.
    Success(Success),
    /// The frames were sent already (console subscriptions, block dumps).
    Sent,
}

impl Inner {
    /// Handles one request and sends its frames to `out`; the channel closes when this
    /// returns.
    pub(crate) async fn handle(
        self: Arc<Self>,
        request: ExecRequest,
        out: mpsc::Sender<OutputFrame>,
    ) {
        let ExecRequest {
            request,
            input,
            peer,
        } = request;
        let request = request.get();
        tracing::debug!(%peer, name = %request.name, command = %request.command, "executing");
        let payload = if self.global().shutting_down {
            Payload::failure(UnikernelError::ShuttingDown.to_string())
        } else {
            // Operator CRLs waiting for a CA of this chain apply first; then the chain is
            // checked again (the TLS side checked it against the store of its time).
            self.resolve_pending(&request.chain).await;
            match self.revocations().check(&request.chain) {
                Err(revoked) => Payload::failure(revoked.to_string()),
                Ok(()) => {
                    let payload = match self.apply_chain(request).await {
                        Err(text) => Payload::failure(text),
                        Ok(()) => match self.dispatch(request, input, &out).await {
                            Ok(Reply::Success(success)) => Payload::Success(success),
                            Ok(Reply::Sent) => {
                                // A console opened while a CRL revoking its chain arrived.
                                self.recheck(&request.chain).await;
                                return;
                            }
                            Err(text) => Payload::failure(text),
                        },
                    };
                    self.recheck(&request.chain).await;
                    payload
                }
            }
        };
        if let Payload::Failure(text) = &payload {
            tracing::debug!(%peer, name = %request.name, command = %request.command, failure = %text, "refused");
        }
        let _ = out
            .send(OutputFrame {
                name: request.name.clone(),
                payload,
            })
            .await;
    }

    /// Applies the chain's policies top-down as one transaction and records which
    /// certificate presented each — for the commands albatross forwards to albatrossd
    /// with the chain's policies (unikernel, policy and block commands; not console or
    /// statistics, spec names-and-policies §8) —, remembers the chain's CA certificates,
    /// and persists if anything changed.
    async fn apply_chain(&self, request: &Request) -> Result<(), String> {
        let with_policies = matches!(
            request.command,
            Command::Unikernel(_) | Command::Policy(_) | Command::Block(_)
        );
        let changed = {
            let mut global = self.global();
            let mut changed = false;
            if with_policies {
                let policies: Vec<_> = request
                    .policies
                    .iter()
                    .map(|p| (p.path.clone(), p.policy.clone()))
                    .collect();
                let outcomes = global
                    .resources
                    .apply_policies(&policies)
                    .map_err(|e| format!("{POLICY_FAILURE_PREFIX}{e}"))?;
                changed |= outcomes.contains(&PolicyOutcome::Added);
                for policy in &request.policies {
                    let installed_by = installing_chain(request, &policy.cert);
                    changed |= global.records.set_policy_chain(&policy.path, &installed_by);
                }
            }
            changed |= global.records.add_ca_certificates(&request.chain);
            changed
        };
        if changed {
            self.persist()
                .await
                .map_err(|e| UnikernelError::Persist(e).to_string())?;
        }
        Ok(())
    }

    /// Carries out the command: the final reply's success (or that the frames were sent
    /// already), or its failure text.
    async fn dispatch(
        self: &Arc<Self>,
        request: &Request,
        input: Option<InputReceiver>,
        out: &mpsc::Sender<OutputFrame>,
    ) -> Result<Reply, String> {
        let name = &request.name;
        let text = |r: Result<&'static str, UnikernelError>| {
            r.map(|s| Success::String(s.to_owned()))
                .map_err(|e| e.to_string())
        };
        let success = match &request.command {
            Command::Unikernel(command) => match command {
                UnikernelCmd::Create(config) => {
                    text(self.create(request, config.clone(), input, false).await)
                }
                UnikernelCmd::ForceCreate(config) => {
                    text(self.create(request, config.clone(), input, true).await)
                }
                UnikernelCmd::Destroy => text(self.destroy(name).await),
                UnikernelCmd::Restart(args) => text(self.restart(request, args.clone()).await),
                UnikernelCmd::Info => Ok(Success::UnikernelInfo(self.info(name))),
                UnikernelCmd::InfoOld5 => self
                    .info(name)
                    .into_iter()
                    .map(|e| {
                        Ok(InfoEntry {
                            info: UnikernelInfoOld5::try_from(&e.info)?,
                            name: e.name,
                        })
                    })
                    .collect::<Result<_, crate::codec::OldInfoError>>()
                    .map(Success::OldUnikernelInfo5)
                    .map_err(|e| e.to_string()),
                UnikernelCmd::InfoOld4 => self
                    .info(name)
                    .into_iter()
                    .map(|e| {
                        Ok(InfoEntry {
                            info: UnikernelInfoOld4::try_from(&e.info)?,
                            name: e.name,
                        })
                    })
                    .collect::<Result<_, crate::codec::OldInfoError>>()
                    .map(Success::OldUnikernelInfo4)
                    .map_err(|e| e.to_string()),
                UnikernelCmd::Get(level) => self
                    .get(name, *level)
                    .await
                    .map(|(compressed, image)| Success::UnikernelImage { compressed, image })
                    .map_err(|e| e.to_string()),
            },
            Command::Policy(command) => self.policy(request, command).await,
            Command::Block(command) => {
                return match self.block(request, command, input, out).await {
                    Ok(BlockReply::Success(success)) => Ok(Reply::Success(success)),
                    Ok(BlockReply::Sent) => Ok(Reply::Sent),
                    Err(e) => Err(e.to_string()),
                };
            }
            Command::Console(command) => match command {
                ConsoleCmd::Subscribe(since) => {
                    labelled(name, "console subscribe").map_err(|e| e.to_string())?;
                    let tag = SubscriberTag(
                        request
                            .chain
                            .iter()
                            .map(|link| console_tag_id(&link.id))
                            .collect(),
                    );
                    // The hub sends the success reply itself, then the stream.
                    self.console
                        .subscribe(name, since, out.clone(), tag)
                        .map_err(|e| e.to_string())?;
                    return Ok(Reply::Sent);
                }
                ConsoleCmd::ListInactive => {
                    if !name.is_path() {
                        return Err(format!(
                            "console list inactive needs a path, but {name} is a unikernel name"
                        ));
                    }
                    Ok(Success::Consoles(self.console.list_inactive(name.path())))
                }
                ConsoleCmd::Add(_) => Err(format!("{command}: not accepted by petrel")),
            },
            Command::Statistics(StatsCmd::Subscribe) => {
                // The hub sends the success reply itself, then the rounds.
                self.stats.0.subscribe(name, out.clone());
                return Ok(Reply::Sent);
            }
            Command::Statistics(command) => Err(format!("{command}: not accepted by petrel")),
            Command::Revocation(command) => self.revocation_command(request, command, input).await,
        };
        success.map(Reply::Success)
    }

    /// Policy commands (only `info` arrives over TLS; `add` and `remove` are for a local
    /// operator interface). A labelled name stands for its path (as in albatross).
    async fn policy(&self, request: &Request, command: &PolicyCmd) -> Result<Success, String> {
        let path = request.name.path();
        let text = match command {
            PolicyCmd::Info => {
                let policies = self.global().resources.policies_below(path);
                return Ok(Success::Policies(
                    policies
                        .into_iter()
                        .map(|(name, policy)| PolicyEntry { name, policy })
                        .collect(),
                ));
            }
            PolicyCmd::Add(policy) => {
                let mut global = self.global();
                let outcome = global
                    .resources
                    .add_policy(path, policy.clone())
                    .map_err(|e| e.to_string())?;
                let ids: Vec<CertId> = request.chain.iter().map(|l| l.id.clone()).collect();
                global.records.set_policy_chain(path, &ids);
                outcome.text()
            }
            PolicyCmd::Remove => {
                let mut global = self.global();
                global
                    .resources
                    .remove_policy(path)
                    .map_err(|e| e.to_string())?;
                global.records.remove_policy(path);
                "removed policy"
            }
        };
        self.persist()
            .await
            .map_err(|e| UnikernelError::Persist(e).to_string())?;
        Ok(Success::String(text.to_owned()))
    }
}

/// The chain that installs the policy `cert` carries: `cert`, then its issuers up to the
/// trust anchor (listed once even if the client sent it too).
fn installing_chain(request: &Request, cert: &CertId) -> Vec<CertId> {
    let mut ids: Vec<CertId> = request
        .chain
        .iter()
        .map(|link| link.id.clone())
        .skip_while(|id| id != cert)
        .collect();
    ids.dedup();
    if ids.is_empty() {
        ids.push(cert.clone());
    }
    ids
}
