//! `RedisFenceGate`: the resource side of fencing, in Redis.

use async_trait::async_trait;
use dlock_core::{Admission, Error, FenceGate, FenceToken, metrics};

use crate::{RedisLock, errors::from_redis, scripts};

/// A fenced register per resource in Redis: a write is stored only if its token is
/// at least the highest accepted for that resource, in one Lua script. Registers
/// live at `[prefix]dlock:v1:gate:{<resource>}` (a hash of `token` and `value`).
#[derive(Clone, Debug)]
pub struct RedisFenceGate {
    lock: RedisLock,
}

impl RedisFenceGate {
    /// A gate on the server (and under the prefix) of `lock`, sharing its connection.
    pub fn new(lock: &RedisLock) -> Self {
        RedisFenceGate { lock: lock.clone() }
    }
}

#[async_trait]
impl FenceGate for RedisFenceGate {
    async fn write(
        &self,
        resource: &str,
        token: FenceToken,
        value: &[u8],
    ) -> Result<Admission, Error> {
        let reply: (i64, String) = scripts::GATE_WRITE
            .key(self.lock.layout().gate(resource))
            .arg(token.get().to_string())
            .arg(value)
            .invoke_async(&mut self.lock.connection())
            .await
            .map_err(|e| from_redis(Some(resource), e))?;
        match reply {
            (1, _) => Ok(Admission::Accepted),
            (_, highest) => {
                metrics::fence_rejected("redis");
                let highest = highest.parse().map_err(|_| {
                    Error::backend(format!("gate holds a non-numeric token {highest:?}"))
                })?;
                Ok(Admission::Stale {
                    highest: FenceToken(highest),
                })
            }
        }
    }

    async fn read(&self, resource: &str) -> Result<Option<(FenceToken, Vec<u8>)>, Error> {
        let (token, value): (Option<String>, Option<Vec<u8>>) = redis::cmd("HMGET")
            .arg(self.lock.layout().gate(resource))
            .arg("token")
            .arg("value")
            .query_async(&mut self.lock.connection())
            .await
            .map_err(|e| from_redis(Some(resource), e))?;
        match (token, value) {
            (Some(token), Some(value)) => {
                let token = token.parse().map_err(|_| {
                    Error::backend(format!("gate holds a non-numeric token {token:?}"))
                })?;
                Ok(Some((FenceToken(token), value)))
            }
            _ => Ok(None),
        }
    }
}
