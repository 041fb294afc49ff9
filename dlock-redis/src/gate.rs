//! `RedisFenceGate`: the resource side of fencing, in Redis.

use async_trait::async_trait;
use dlock_core::{Admission, Error, FenceGate, FenceToken, FencedRead, stale_token};

use crate::{RedisLock, errors::from_redis, scripts};

/// A fenced register per resource in Redis: an operation is admitted only if its
/// token is at least the highest admitted for that resource, in one Lua script (see
/// [`FenceGate`] for the guarantee). Registers
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

impl RedisFenceGate {
    fn register(&self, resource: &str) -> String {
        self.lock.node().layout().gate(resource)
    }
}

/// A token the gate stored, as text.
fn parse_token(text: &[u8]) -> Result<FenceToken, Error> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|t| t.parse().ok())
        .map(FenceToken)
        .ok_or_else(|| {
            Error::backend(format!(
                "gate holds a non-numeric token {:?}",
                String::from_utf8_lossy(text)
            ))
        })
}

#[async_trait]
impl FenceGate for RedisFenceGate {
    async fn write(
        &self,
        resource: &str,
        token: FenceToken,
        value: &[u8],
    ) -> Result<Admission, Error> {
        let (admitted, highest): (i64, Vec<u8>) = scripts::GATE_WRITE
            .key(self.register(resource))
            .arg(token.get().to_string())
            .arg(value)
            .invoke_async(&mut self.lock.node().connection())
            .await
            .map_err(|e| from_redis(Some(resource), e))?;
        if admitted == 1 {
            return Ok(Admission::Accepted);
        }
        let highest = parse_token(&highest)?;
        stale_token("redis", resource, token, highest);
        Ok(Admission::Stale { highest })
    }

    async fn read_for_update(
        &self,
        resource: &str,
        token: FenceToken,
    ) -> Result<FencedRead, Error> {
        let (admitted, found): (i64, Option<Vec<u8>>) = scripts::GATE_READ_FOR_UPDATE
            .key(self.register(resource))
            .arg(token.get().to_string())
            .invoke_async(&mut self.lock.node().connection())
            .await
            .map_err(|e| from_redis(Some(resource), e))?;
        if admitted == 1 {
            return Ok(FencedRead::Current(found));
        }
        let highest = parse_token(found.as_deref().unwrap_or_default())?;
        stale_token("redis", resource, token, highest);
        Ok(FencedRead::Stale { highest })
    }

    async fn read(&self, resource: &str) -> Result<Option<(FenceToken, Vec<u8>)>, Error> {
        let (token, value): (Option<Vec<u8>>, Option<Vec<u8>>) = redis::cmd("HMGET")
            .arg(self.register(resource))
            .arg("token")
            .arg("value")
            .query_async(&mut self.lock.node().connection())
            .await
            .map_err(|e| from_redis(Some(resource), e))?;
        match (token, value) {
            (Some(token), Some(value)) => Ok(Some((parse_token(&token)?, value))),
            _ => Ok(None),
        }
    }
}
