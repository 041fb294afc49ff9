//! `EtcdFenceGate`: the resource side of fencing, in etcd.

use async_trait::async_trait;
use dlock_core::{Admission, Error, FenceGate, FenceToken, FencedRead, stale_token};
use etcd_client::{Compare, CompareOp, Txn, TxnOp, TxnOpResponse, TxnResponse};

use crate::EtcdLock;

/// A fenced register per resource in etcd: an operation is admitted only if its
/// token is at least the highest admitted for that resource, in one transaction
/// (see [`FenceGate`] for the guarantee). Registers live at
/// `[prefix]v2/gate/<resource>/token` and `.../value`.
///
/// Tokens are stored as 20-digit decimals, so etcd's byte-wise comparison of values
/// is their numeric order.
#[derive(Clone, Debug)]
pub struct EtcdFenceGate {
    lock: EtcdLock,
}

impl EtcdFenceGate {
    /// A gate on the cluster (and under the prefix) of `lock`, sharing its connection.
    pub fn new(lock: &EtcdLock) -> Self {
        EtcdFenceGate { lock: lock.clone() }
    }

    /// One transaction: if the stored token is above `token`, read it back (stale);
    /// otherwise record `token` and do `then`.
    async fn admit(
        &self,
        resource: &str,
        token: FenceToken,
        then: impl FnOnce(&str) -> TxnOp,
    ) -> Result<Result<TxnResponse, FenceToken>, Error> {
        let (token_key, value_key) = self.lock.layout().gate(resource);
        let padded = format!("{:020}", token.get());
        // A missing key compares false, so the first operation is admitted.
        let txn = Txn::new()
            .when([Compare::value(
                token_key.clone(),
                CompareOp::Greater,
                padded.clone(),
            )])
            .and_then([TxnOp::get(token_key.clone(), None)])
            .or_else([TxnOp::put(token_key, padded, None), then(&value_key)]);
        let response = self.lock.txn(txn).await?;
        if !response.succeeded() {
            return Ok(Ok(response));
        }
        let highest = first_value(&response)
            .and_then(|v| std::str::from_utf8(&v).ok()?.parse().ok())
            .map(FenceToken)
            .ok_or_else(|| Error::backend("the gate holds a non-numeric token"))?;
        stale_token("etcd", resource, token, highest);
        Ok(Err(highest))
    }
}

/// The value of the first key any `get` in the transaction found.
fn first_value(response: &TxnResponse) -> Option<Vec<u8>> {
    response.op_responses().into_iter().find_map(|op| match op {
        TxnOpResponse::Get(get) => get.kvs().first().map(|kv| kv.value().to_vec()),
        _ => None,
    })
}

#[async_trait]
impl FenceGate for EtcdFenceGate {
    async fn write(
        &self,
        resource: &str,
        token: FenceToken,
        value: &[u8],
    ) -> Result<Admission, Error> {
        let value = value.to_vec();
        match self
            .admit(resource, token, |key| TxnOp::put(key, value, None))
            .await?
        {
            Ok(_) => Ok(Admission::Accepted),
            Err(highest) => Ok(Admission::Stale { highest }),
        }
    }

    async fn read_for_update(
        &self,
        resource: &str,
        token: FenceToken,
    ) -> Result<FencedRead, Error> {
        match self
            .admit(resource, token, |key| TxnOp::get(key, None))
            .await?
        {
            Ok(response) => Ok(FencedRead::Current(first_value(&response))),
            Err(highest) => Ok(FencedRead::Stale { highest }),
        }
    }

    async fn read(&self, resource: &str) -> Result<Option<(FenceToken, Vec<u8>)>, Error> {
        let (token_key, value_key) = self.lock.layout().gate(resource);
        let txn = Txn::new().and_then([TxnOp::get(token_key, None), TxnOp::get(value_key, None)]);
        let response = self.lock.txn(txn).await?;
        let mut found = response.op_responses().into_iter().map(|op| match op {
            TxnOpResponse::Get(get) => get.kvs().first().map(|kv| kv.value().to_vec()),
            _ => None,
        });
        let (token, value) = (found.next().flatten(), found.next().flatten());
        match (token, value) {
            (Some(token), Some(value)) => {
                let token = std::str::from_utf8(&token)
                    .ok()
                    .and_then(|t| t.parse().ok())
                    .ok_or_else(|| Error::backend("the gate holds a non-numeric token"))?;
                Ok(Some((FenceToken(token), value)))
            }
            _ => Ok(None),
        }
    }
}
