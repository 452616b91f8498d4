//! Authorization: a verified chain, checked against the revocation store and decoded into
//! a request, becomes an [`Authorized`] request — the only thing the executor accepts.

use crate::chain::{self, ChainError, Request, VerifiedChain};
use crate::revocation::{RevocationStore, Revoked};

/// Why a verified chain is not authorized to run its command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The chain does not make a valid request.
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// A certificate of the chain is revoked.
    #[error(transparent)]
    Revoked(#[from] Revoked),
}

/// A value that authorization produced. It cannot be built any other way outside this
/// crate's authorization and the executor's own re-verification.
#[derive(Debug, Clone)]
pub struct Authorized<T>(T);

impl<T> Authorized<T> {
    /// The authorized value.
    pub fn get(&self) -> &T {
        &self.0
    }

    /// Takes the authorized value out (it is no longer proof of anything).
    pub fn into_inner(self) -> T {
        self.0
    }

    /// Wraps a value as authorized. Only authorization code and in-crate tests may do
    /// this.
    #[allow(dead_code)] // used by the executor's re-verification and in-crate tests
    pub(crate) fn assume(value: T) -> Self {
        Self(value)
    }
}

/// Decodes the request the chain carries and checks every certificate of the chain
/// against `revocations`; only then may its command run.
pub fn authorize(
    chain: &VerifiedChain,
    revocations: &RevocationStore,
) -> Result<Authorized<Request>, AuthError> {
    let request = chain::decode_request(chain)?;
    revocations.check(&request.chain)?;
    Ok(Authorized(request))
}
