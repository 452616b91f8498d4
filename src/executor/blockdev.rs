//! Block device commands (`spec/unikernel-and-executor.md` §11, `names-and-policies.md`
//! §7.5): the policy checks, the in-use checks and the provenance are the executor's; the
//! files are the [`BlockStore`](crate::executor::block::BlockStore)'s.
//!
//! A block device is "in use" while a running unikernel uses it (attached in the resource
//! trie) and while a set or dump of it is in progress ("busy"): a create that needs a
//! busy device is refused like one whose device is attached, so a unikernel never starts
//! on a file that is being replaced.

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::chain::Request;
use crate::codec::{BlockCmd, BlockDevice, Success};
use crate::executor::api::{InputReceiver, OutputFrame};
use crate::executor::block::BlockError;
use crate::executor::state::Inner;
use crate::name::Name;
use crate::resources::ResourceError;
use crate::store::StoreError;

/// Why a block device command failed; the display text is the failure text.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BlockCommandError {
    /// The command needs a block device name but got a path.
    #[error("{command} needs a block device name, but {name} is a path")]
    PathName {
        /// The command.
        command: &'static str,
        /// The name given.
        name: Name,
    },
    /// No such block device (albatross's texts: `set block: not found`, …).
    #[error("{0}: not found")]
    NotFound(&'static str),
    /// The block device is attached to a running unikernel, or busy with a set or dump.
    #[error("{0}: is in use")]
    InUse(&'static str),
    /// A policy or existence check (albatross's texts).
    #[error(transparent)]
    Resource(#[from] ResourceError),
    /// The file operation.
    #[error(transparent)]
    Block(#[from] BlockError),
    /// The records could not be saved.
    #[error("could not save the state: {}", .0.reason())]
    Persist(#[from] StoreError),
    /// A set or dump stream needs the input or output the request did not bring.
    #[error("{0}: the data stream is missing")]
    NoStream(&'static str),
}

/// What a block command answers with.
pub(crate) enum BlockReply {
    /// A final success frame.
    Success(Success),
    /// The frames were sent already (a dump).
    Sent,
}

impl Inner {
    /// Carries out a block device command.
    pub(crate) async fn block(
        self: &Arc<Self>,
        request: &Request,
        command: &BlockCmd,
        input: Option<InputReceiver>,
        out: &mpsc::Sender<OutputFrame>,
    ) -> Result<BlockReply, BlockCommandError> {
        let name = &request.name;
        if name.is_path() && !matches!(command, BlockCmd::Info) {
            return Err(BlockCommandError::PathName {
                command: command_name(command),
                name: name.clone(),
            });
        }
        // add and remove are short and serialized per name; set and dump, which stream
        // for as long as the client takes, only mark the device busy (atomically).
        let _lock = match command {
            BlockCmd::Add(_) | BlockCmd::AddOld { .. } | BlockCmd::Remove => {
                Some(self.lock_name(name).await)
            }
            _ => None,
        };
        let text = match command {
            BlockCmd::Info => {
                return Ok(BlockReply::Success(Success::BlockDevices(
                    self.block_info(name),
                )));
            }
            BlockCmd::Add(size_mb) => {
                let (n, size_mb) = (name.clone(), *size_mb);
                self.block_add(request, size_mb, move |store| store.add(&n, size_mb))
                    .await?
            }
            BlockCmd::AddOld {
                size,
                compress,
                data,
            } => {
                let (n, size, compress, data) = (name.clone(), *size, *compress, data.clone());
                self.block_add(request, size, move |store| {
                    store.add_inline(&n, size, compress, data.as_deref())
                })
                .await?
            }
            BlockCmd::Remove => self.block_remove(name).await?,
            BlockCmd::Set(compressed) => {
                let input = input.ok_or(BlockCommandError::NoStream("set block"))?;
                let size = self.begin_busy(name, "set block")?;
                let result = self
                    .blocks
                    .set(name, size, *compressed, input)
                    .await
                    .map_err(BlockCommandError::from);
                self.end_busy(name);
                result?;
                "set block device"
            }
            BlockCmd::SetOld { compress, data } => {
                let size = self.begin_busy(name, "set block")?;
                let (store, n, compress, data) =
                    (self.blocks.clone(), name.clone(), *compress, data.clone());
                let result = blocking(move || store.set_inline(&n, size, compress, &data)).await;
                self.end_busy(name);
                result?;
                "set block device"
            }
            BlockCmd::Dump(level) => {
                self.begin_busy(name, "dump block")?;
                let result = self.blocks.dump(name, *level, out.clone()).await;
                self.end_busy(name);
                result?;
                return Ok(BlockReply::Sent);
            }
            BlockCmd::DumpOld(level) => {
                self.begin_busy(name, "dump block")?;
                let (store, n, level) = (self.blocks.clone(), name.clone(), *level);
                let result = blocking(move || store.dump_inline(&n, level)).await;
                self.end_busy(name);
                let (compressed, image) = result?;
                return Ok(BlockReply::Success(Success::OldBlockDeviceImage {
                    compressed,
                    image,
                }));
            }
        };
        Ok(BlockReply::Success(Success::String(text.to_owned())))
    }

    /// `block info`: a labelled name gives that device (or nothing), a path every device
    /// below it, named relative to the path.
    fn block_info(&self, name: &Name) -> Vec<BlockDevice> {
        // `active` is albatross's "attached to a running unikernel"; a set or dump in
        // progress is not reported as such.
        let global = self.global();
        if name.is_path() {
            global
                .resources
                .blocks_below(name.path())
                .into_iter()
                .map(|(name, state)| BlockDevice {
                    name,
                    size: state.size_mb,
                    active: state.is_attached(),
                })
                .collect()
        } else {
            global
                .resources
                .block(name)
                .map(|state| BlockDevice {
                    name: name.clone(),
                    size: state.size_mb,
                    active: state.is_attached(),
                })
                .into_iter()
                .collect()
        }
    }

    /// `block add` / `addOld`: the checks and the reservation, then the file, then the
    /// state; on failure the reservation is released and the file removed.
    async fn block_add(
        &self,
        request: &Request,
        size_mb: i64,
        create: impl FnOnce(&crate::executor::block::BlockStore) -> Result<(), BlockError>
        + Send
        + 'static,
    ) -> Result<&'static str, BlockCommandError> {
        let name = &request.name;
        self.global().resources.insert_block(name, size_mb)?;
        let store = self.blocks.clone();
        if let Err(e) = blocking(move || create(&store)).await {
            let _ = self.global().resources.remove_block(name);
            return Err(e.into());
        }
        self.global().records.set_block(name, &request.chain);
        if let Err(e) = self.persist().await {
            // Not saved (a full disk): the client is told it failed, so it must not exist.
            self.global().records.remove_block(name);
            let _ = self.global().resources.remove_block(name);
            let (store, n) = (self.blocks.clone(), name.clone());
            if let Err(undo) = blocking(move || store.remove(&n)).await {
                tracing::error!(%name, error = %undo, "could not remove a block device whose state was not saved");
            }
            return Err(e.into());
        }
        Ok("added block device")
    }

    /// `block remove`.
    pub(crate) async fn block_remove(
        &self,
        name: &Name,
    ) -> Result<&'static str, BlockCommandError> {
        let size_mb = {
            let mut global = self.global();
            if global.busy_blocks.contains(name) {
                return Err(BlockCommandError::InUse("remove block"));
            }
            global.resources.remove_block(name)?
        };
        let (store, n) = (self.blocks.clone(), name.clone());
        match blocking(move || store.remove(&n)).await {
            Ok(()) | Err(BlockError::NotFound(_)) => {}
            Err(e) => {
                // The file is still there: so is the device.
                let mut global = self.global();
                if let Err(again) = global.resources.insert_block(name, size_mb) {
                    tracing::error!(%name, error = %again, "could not re-register a block device");
                }
                return Err(e.into());
            }
        }
        self.global().records.remove_block(name);
        self.persist().await?;
        Ok("removed block")
    }

    /// Marks the device busy for a set or dump after checking that it exists and is not
    /// attached; returns its size in MB.
    fn begin_busy(&self, name: &Name, command: &'static str) -> Result<i64, BlockCommandError> {
        let mut global = self.global();
        let state = global
            .resources
            .block(name)
            .ok_or(BlockCommandError::NotFound(command))?;
        if state.is_attached() || global.busy_blocks.contains(name) {
            return Err(BlockCommandError::InUse(command));
        }
        global.busy_blocks.insert(name.clone());
        Ok(state.size_mb)
    }

    fn end_busy(&self, name: &Name) {
        self.global().busy_blocks.remove(name);
    }
}

fn command_name(command: &BlockCmd) -> &'static str {
    match command {
        BlockCmd::Info => "block info",
        BlockCmd::Add(_) | BlockCmd::AddOld { .. } => "block add",
        BlockCmd::Remove => "block remove",
        BlockCmd::Set(_) | BlockCmd::SetOld { .. } => "block set",
        BlockCmd::Dump(_) | BlockCmd::DumpOld(_) => "block dump",
    }
}

/// Runs blocking file work off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, BlockError> + Send + 'static,
) -> Result<T, BlockError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(BlockError::Io {
            op: "run",
            file: String::new(),
            source: std::io::Error::other(e.to_string()),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_texts() {
        let cases: Vec<(BlockCommandError, &str)> = vec![
            (
                BlockCommandError::PathName {
                    command: "block add",
                    name: Name::parse("a:").unwrap(),
                },
                "block add needs a block device name, but a: is a path",
            ),
            (
                BlockCommandError::NotFound("set block"),
                "set block: not found",
            ),
            (
                BlockCommandError::InUse("dump block"),
                "dump block: is in use",
            ),
            (
                BlockCommandError::Resource(ResourceError::BlockExists),
                "block device with same name already exists",
            ),
            (
                BlockCommandError::Block(BlockError::StreamExceedsSize),
                "stream exceeds size",
            ),
            (
                BlockCommandError::Persist(StoreError::Truncated("/s/records".into())),
                "could not save the state: truncated record file",
            ),
            (
                BlockCommandError::NoStream("set block"),
                "set block: the data stream is missing",
            ),
        ];
        for (error, text) in cases {
            assert_eq!(error.to_string(), text);
        }
        let names = [
            (BlockCmd::Info, "block info"),
            (BlockCmd::Add(1), "block add"),
            (BlockCmd::Remove, "block remove"),
            (BlockCmd::Set(true), "block set"),
            (BlockCmd::DumpOld(0), "block dump"),
        ];
        for (command, text) in names {
            assert_eq!(command_name(&command), text);
        }
    }
}
