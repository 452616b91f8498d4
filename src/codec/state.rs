//! The persisted state file (spec §11), every version read, `[6]` written.

use std::collections::HashSet;

use serde::Serialize;

use crate::codec::config::{Legacy, UnikernelConfig};
use crate::codec::der::{Reader, Result, SEQUENCE, Writer};
use crate::codec::error::DecodeError;
use crate::codec::types::{decode_policy, encode_policy};
use crate::name::{Label, Name};
use crate::policy::Policy;

/// ```text
/// State ::= CHOICE {
///     unikernelsV1          [0] Trie{UnikernelConfigV1},
///     unikernelsV0          [1] Trie{UnikernelConfigV0},
///     unikernelsV2          [2] Trie{UnikernelConfigV2},
///     unikernelsV3          [3] Trie{UnikernelConfigV3},
///     unikernelsV3Policies  [4] SEQUENCE { unikernels Trie{UnikernelConfigV3},
///                                          policies   Trie{Policy} },
///     unikernelsV4Policies  [5] SEQUENCE { unikernels Trie{UnikernelConfigV4},
///                                          policies   Trie{Policy} },
///     unikernelsV5Policies  [6] SEQUENCE { unikernels Trie{UnikernelConfig},
///                                          policies   Trie{Policy} },
///     reserved              [7] NULL }   -- "not yet implemented"
/// Trie{T} ::= SEQUENCE OF SEQUENCE { name UTF8String, value T }
/// ```
/// Entries are kept in file order. Every version decodes (legacy configurations are
/// up-converted, `[0]`–`[3]` have no policies); the encoder always writes `[6]`, entries
/// in the order given ([`State::sort`] puts them in albatross's trie pre-order).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize)]
pub struct State {
    /// Unikernels with their full creation configuration.
    pub unikernels: Vec<TrieEntry<UnikernelConfig>>,
    /// Policies by path name.
    pub policies: Vec<TrieEntry<Policy>>,
}

/// `SEQUENCE { name UTF8String, value T }` of a state-file trie.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct TrieEntry<T> {
    /// The key.
    pub name: Name,
    /// The value.
    pub value: T,
}

impl<T> TrieEntry<T> {
    /// An entry.
    pub fn new(name: Name, value: T) -> Self {
        Self { name, value }
    }
}

impl State {
    /// Puts both tries in the order albatross writes them: pre-order, a node's own entry
    /// before its children, children by ascending (bytewise) label.
    pub fn sort(&mut self) {
        self.unikernels.sort_by_cached_key(|e| trie_key(&e.name));
        self.policies.sort_by_cached_key(|e| trie_key(&e.name));
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self> {
        let (n, mut inner) = r.choice("State")?;
        let i = &mut inner;
        let state = match n {
            0 => Self::unikernels_only(trie(i, |r| UnikernelConfig::decode_legacy(r, Legacy::V1))?),
            1 => Self::unikernels_only(trie(i, |r| UnikernelConfig::decode_legacy(r, Legacy::V0))?),
            2 => Self::unikernels_only(trie(i, |r| UnikernelConfig::decode_legacy(r, Legacy::V2))?),
            3 => Self::unikernels_only(trie(i, |r| UnikernelConfig::decode_legacy(r, Legacy::V3))?),
            4 => with_policies(i, |r| UnikernelConfig::decode_legacy(r, Legacy::V3))?,
            5 => with_policies(i, |r| UnikernelConfig::decode_legacy(r, Legacy::V4))?,
            6 => with_policies(i, UnikernelConfig::decode)?,
            7 => {
                i.null()?;
                i.finish()?;
                return Err(DecodeError::StateReserved);
            }
            n => return Err(Reader::unknown("State", n)),
        };
        inner.finish()?;
        Ok(state)
    }

    pub(crate) fn encode(&self, w: &mut Writer) {
        w.explicit(6, |w| {
            w.sequence(|w| {
                w.sequence_of(&self.unikernels, |w, e| {
                    w.sequence(|w| {
                        w.name(&e.name);
                        e.value.encode(w);
                    });
                });
                w.sequence_of(&self.policies, |w, e| {
                    w.sequence(|w| {
                        w.name(&e.name);
                        encode_policy(&e.value, w);
                    });
                });
            });
        });
    }

    fn unikernels_only(unikernels: Vec<TrieEntry<UnikernelConfig>>) -> Self {
        Self {
            unikernels,
            policies: Vec::new(),
        }
    }
}

/// `SEQUENCE { unikernels Trie{…}, policies Trie{Policy} }`.
fn with_policies(
    r: &mut Reader<'_>,
    config: impl FnMut(&mut Reader<'_>) -> Result<UnikernelConfig>,
) -> Result<State> {
    r.sequence(|r| {
        Ok(State {
            unikernels: trie(r, config)?,
            policies: trie(r, decode_policy)?,
        })
    })
}

/// `Trie{T}`: keys must parse as names and be unique (spec Note W8). Keys are compared
/// as petrel names, so `foo:` and `:foo` are distinct keys (Note N5); in albatross's own
/// files a trie never holds both, since unikernel keys are labelled and policy keys are
/// paths.
fn trie<T>(
    r: &mut Reader<'_>,
    mut value: impl FnMut(&mut Reader<'_>) -> Result<T>,
) -> Result<Vec<TrieEntry<T>>> {
    let entries = r.list(SEQUENCE, |r| {
        r.sequence(|r| {
            let key = r.utf8()?;
            let name = Name::parse(&key).map_err(DecodeError::StateKey)?;
            Ok(TrieEntry {
                name,
                value: value(r)?,
            })
        })
    })?;
    let mut seen = HashSet::with_capacity(entries.len());
    for e in &entries {
        if !seen.insert(&e.name) {
            return Err(DecodeError::DuplicateKey(Box::new(e.name.clone())));
        }
    }
    Ok(entries)
}

/// The labels from the root to a name's trie node (path labels, then the label).
fn trie_key(name: &Name) -> Vec<Label> {
    let mut labels = name.path().labels().to_vec();
    labels.extend(name.label().cloned());
    labels
}
