//! The Lua scripts: each operation is one atomic step on the server.
//!
//! redis-rs sends them by `EVALSHA` and reloads a script the server has lost (a
//! restart, `SCRIPT FLUSH`) when it answers `NOSCRIPT`.

use std::sync::LazyLock;

use redis::Script;

/// KEYS: lock, fence. ARGV: owner, ttl ms, fence counter ttl ms.
/// Returns `{1, token}` when granted (also to a retry by the same owner, the token
/// then read back as text), `{0, pttl}` when held by another; an error naming the
/// type if a key holds something else. Nothing is written before every check passed.
/// A token is the larger of the server clock in µs and the counter plus one, so a
/// counter restored from an old snapshot never reissues a token.
pub(crate) static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local function conflict(key, what)
  return redis.error_reply('DLOCK_CONFLICT ' .. key .. ' holds a ' .. redis.call('TYPE', key).ok .. ', not ' .. what)
end
local holder = redis.pcall('GET', KEYS[1])
if type(holder) == 'table' and holder.err then
  return conflict(KEYS[1], 'a lock')
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {1, redis.call('GET', KEYS[2])}
end
if holder then
  return {0, redis.call('PTTL', KEYS[1])}
end
local counter = redis.pcall('GET', KEYS[2])
if type(counter) == 'table' and counter.err then
  return conflict(KEYS[2], 'a fence counter')
end
-- Every token is at least the server clock in microseconds (exact below 2^53), so
-- a counter that is missing, or older than the tokens issued (restored from a
-- snapshot, an AOF written every second, a promoted replica), still restarts above
-- every token issued before, as long as the server clock does not go back.
local now = redis.call('TIME')
local token = tonumber(now[1]) * 1000000 + tonumber(now[2])
if counter then
  local last = tonumber(counter)
  if not last then
    return conflict(KEYS[2], 'a fence counter')
  end
  if last >= token then
    token = last + 1
  end
end
redis.call('SET', KEYS[2], string.format('%.0f', token), 'PX', ARGV[3])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
-- An integer reply: exact while tokens stay below 2^53 (microseconds since 1970
-- reach that in the year 2255). Never tostring() it: Lua prints large numbers
-- with exponents.
return {1, token}
"#,
    )
});

/// KEYS: lock, fence. ARGV: owner, token (decimal), fence counter ttl ms.
/// Redlock's second round: raises the counter to the token if the owner still holds
/// the lock and the counter is below it (or at it: a retry). Returns 1 if the
/// counter now holds the token, 0 otherwise. Tokens stay below 2^53 (see ACQUIRE),
/// so Lua's numbers compare them exactly.
pub(crate) static RAISE_FENCE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
local token = tonumber(ARGV[2])
local counter = redis.pcall('GET', KEYS[2])
if type(counter) == 'table' and counter.err then
  return redis.error_reply('DLOCK_CONFLICT ' .. KEYS[2] .. ' is not a fence counter')
end
if counter then
  local current = tonumber(counter)
  if not current then
    return redis.error_reply('DLOCK_CONFLICT ' .. KEYS[2] .. ' is not a fence counter')
  end
  if current > token then
    return 0
  end
end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
return 1
"#,
    )
});

/// KEYS: lock. ARGV: owner, ttl ms. Returns 1 if extended, 0 if the key is gone,
/// -1 if another owner holds it.
pub(crate) static EXTEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
if holder then
  return -1
end
return 0
"#,
    )
});

/// KEYS: lock, fence counter, published value. Returns nil if free, else
/// {owner, ms left, counter, has value, value}: the counter is the holder's token,
/// since nobody acquired after it; the value is what this holder published, if it
/// did. A value left by an earlier holder is deleted here, so none outlives its
/// holder by more than one read.
pub(crate) static INSPECT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local holder = redis.call('GET', KEYS[1])
local published = redis.call('GET', KEYS[3])
local value = nil
if published then
  local mark = (holder or '') .. '\n'
  if holder and string.sub(published, 1, #mark) == mark then
    value = string.sub(published, #mark + 1)
  else
    redis.call('DEL', KEYS[3])
  end
end
if not holder then
  return false
end
local fence = redis.call('GET', KEYS[2]) or ''
if value then
  return {holder, redis.call('PTTL', KEYS[1]), fence, 1, value}
end
return {holder, redis.call('PTTL', KEYS[1]), fence, 0, ''}
"#,
    )
});

/// KEYS: lock, published value. ARGV: owner, value. Stores `owner .. "\n" ..
/// value` if the owner holds the lock: 1 if stored, 0 if the key is gone, -1 if
/// another owner holds it. The value has no TTL: INSPECT ignores and deletes it once
/// its owner no longer holds the lock.
pub(crate) static PUBLISH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('SET', KEYS[2], ARGV[1] .. '\n' .. ARGV[2])
  return 1
end
if holder then
  return -1
end
return 0
"#,
    )
});

/// KEYS: lock. ARGV: owner, release channel. Returns 1 if released, 0 if not held
/// by owner. Announces the release only where a client waits on the key (its
/// channel has a subscriber): no fan-out to idle clients, nothing when nobody waits.
pub(crate) static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  if redis.call('PUBSUB', 'NUMSUB', ARGV[2])[2] > 0 then
    redis.call('PUBLISH', ARGV[2], '')
  end
  return 1
end
return 0
"#,
    )
});

/// The gate's admission check, shared by its scripts: returns `{0, highest}` from
/// the script if the token in ARGV[1] is below the highest admitted, else records it
/// as the highest. Tokens compare as decimal strings (by length, then digits), so
/// every u64 compares exactly, beyond Lua's 2^53.
const GATE_ADMIT: &str = r#"
local highest = redis.call('HGET', KEYS[1], 'token')
if highest then
  local t = ARGV[1]
  if #t < #highest or (#t == #highest and t < highest) then
    return {0, highest}
  end
end
"#;

/// KEYS: gate register. ARGV: token (decimal), value.
/// Stores the value if the token is at least the highest admitted, recording the
/// token; returns `{1, token}` or `{0, highest}`.
pub(crate) static GATE_WRITE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{GATE_ADMIT}redis.call('HSET', KEYS[1], 'token', ARGV[1], 'value', ARGV[2])\nreturn {{1, ARGV[1]}}\n"
    ))
});

/// KEYS: gate register. ARGV: token (decimal).
/// Records the token as the highest if it is at least the highest admitted, and
/// returns `{1, value}` (value nil if never written), or `{0, highest}`.
pub(crate) static GATE_READ_FOR_UPDATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{GATE_ADMIT}redis.call('HSET', KEYS[1], 'token', ARGV[1])\nreturn {{1, redis.call('HGET', KEYS[1], 'value')}}\n"
    ))
});
