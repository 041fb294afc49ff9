//! The Lua scripts: each operation is one atomic step on the server.
//!
//! redis-rs sends them by `EVALSHA` and reloads a script the server has lost (a
//! restart, `SCRIPT FLUSH`) when it answers `NOSCRIPT`.

use std::sync::LazyLock;

use redis::Script;

/// Announces a release with nobody in line on the key's channel, only if someone
/// listens there (a Redlock waiter): nothing is published to nobody.
const ANNOUNCE: &str = r#"
local function announce(channel)
  if redis.call('PUBSUB', 'NUMSUB', channel)[2] > 0 then
    redis.call('PUBLISH', channel, '')
  end
end
"#;

/// The line of waiters, shared by ACQUIRE and RELEASE. KEYS[3]: the queue (owner
/// by arrival, server µs), KEYS[4]: the places (owner by when its place lapses,
/// server ms), KEYS[5]: the reservation (the waiter a release handed the key to).
const LINE: &str = r#"
local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
-- Drops the waiters whose place lapsed (they stopped refreshing it: gone).
local function purge(now_ms)
  local lapsed = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now_ms, 'LIMIT', 0, 100)
  if #lapsed > 0 then
    redis.call('ZREM', KEYS[3], unpack(lapsed))
    redis.call('ZREM', KEYS[4], unpack(lapsed))
  end
end
-- Joins the line at its end, or refreshes the place held in it.
local function join(owner, us, place_ms)
  if not redis.call('ZSCORE', KEYS[3], owner) then
    redis.call('ZADD', KEYS[3], us, owner)
  end
  redis.call('ZADD', KEYS[4], math.floor(us / 1000) + place_ms, owner)
  redis.call('PEXPIRE', KEYS[3], place_ms * 2)
  redis.call('PEXPIRE', KEYS[4], place_ms * 2)
end
local function leave(owner)
  redis.call('ZREM', KEYS[3], owner)
  redis.call('ZREM', KEYS[4], owner)
end
-- The head of the line and until when its place lasts (server ms), after dropping
-- the waiters that are gone: those whose place lapsed, and any without a place, or
-- with one further off than a place lasts (evicted, or the server clock stepped
-- back), which would otherwise block the line for as long as others wait.
local function live_head(now_ms, place_ms)
  purge(now_ms)
  for _ = 1, 100 do
    local head = redis.call('ZRANGE', KEYS[3], 0, 0)[1]
    if not head then
      return nil
    end
    local until_ms = tonumber(redis.call('ZSCORE', KEYS[4], head))
    if until_ms and until_ms <= now_ms + place_ms then
      return head, until_ms
    end
    leave(head)
  end
  return nil
end
-- Hands the free key to the head of the line, if any, for as long as its place
-- lasts, and wakes it: one message, on its client's channel (`prefix .. client ..
-- '}'`), naming it, unless that client is the releasing one (`me`), which wakes
-- its waiter itself. A waiter in line is `owner@client`. Returns the head.
local function hand_over(prefix, place_ms, me)
  local now_ms = math.floor(now_us() / 1000)
  local head, until_ms = live_head(now_ms, place_ms)
  if head then
    redis.call('SET', KEYS[5], head, 'PX', math.max(1, until_ms - now_ms))
    local at = string.find(head, '@', 1, true)
    if at and string.sub(head, at + 1) ~= me then
      redis.call('PUBLISH', prefix .. string.sub(head, at + 1) .. '}', string.sub(head, 1, at - 1))
    end
  end
  return head
end
"#;

/// KEYS: lock, fence, queue, places, reserved. ARGV: owner, ttl ms, fence counter
/// ttl ms, 1 to wait in line (0: take the key only if free and nobody waits),
/// place ttl ms, the client's id (whose channel wakes the owner when its turn comes).
/// Returns `{1, token}` when granted (also to a retry by the same owner, the token
/// then read back as text), `{0, ms}` when busy, with how long until it is worth
/// trying again; an error naming the type if a key holds something else. Nothing
/// is written before every check passed.
/// A token is the larger of the server clock in µs and the counter plus one, so a
/// counter restored from an old snapshot never reissues a token.
/// The key goes to waiters in the order they joined the line: a free key with a
/// line goes to its head (or the waiter a release reserved it for), and anyone else
/// joins the line, or refreshes its place in it.
pub(crate) static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"
local function conflict(key, what)
  return redis.error_reply('DLOCK_CONFLICT ' .. key .. ' holds a ' .. redis.call('TYPE', key).ok .. ', not ' .. what)
end
-- Every token is at least the server clock in microseconds (exact below 2^53), so
-- a counter that is missing, or older than the tokens issued (restored from a
-- snapshot, an AOF written every second, a promoted replica), still restarts above
-- every token issued before, as long as the server clock does not go back.
-- The next token, or the error for a fence key of another kind; writes nothing.
local function next_token(us)
  local counter = redis.pcall('GET', KEYS[2])
  if type(counter) == 'table' and counter.err then
    return nil, conflict(KEYS[2], 'a fence counter')
  end
  local token = us
  if counter then
    local last = tonumber(counter)
    if not last then
      return nil, conflict(KEYS[2], 'a fence counter')
    end
    if last >= token then
      token = last + 1
    end
  end
  return token
end
local function grant(owner, token)
  redis.call('SET', KEYS[2], string.format('%.0f', token), 'PX', ARGV[3])
  redis.call('SET', KEYS[1], owner, 'PX', ARGV[2])
  -- An integer reply: exact while tokens stay below 2^53 (microseconds since 1970
  -- reach that in the year 2255). Never tostring() it: Lua prints large numbers
  -- with exponents.
  return {{1, token}}
end
local owner, in_line = ARGV[1], ARGV[4] == '1'
local holder = redis.pcall('GET', KEYS[1])
if type(holder) == 'table' and holder.err then
  return conflict(KEYS[1], 'a lock')
end
if holder == owner then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {{1, redis.call('GET', KEYS[2])}}
end
if holder and not in_line then
  return {{0, redis.call('PTTL', KEYS[1])}}
end
local t = redis.call('TIME')
local us = tonumber(t[1]) * 1000000 + tonumber(t[2])
-- Free, and nobody in line: the common case, without the line's machinery.
if not holder and redis.call('EXISTS', KEYS[3], KEYS[5]) == 0 then
  local token, err = next_token(us)
  if not token then
    return err
  end
  return grant(owner, token)
end
{LINE}
local place_ms = tonumber(ARGV[5])
-- In line, a waiter is `owner@client`.
local member = owner .. '@' .. ARGV[6]
if holder then
  join(member, us, place_ms)
  return {{0, math.min(redis.call('PTTL', KEYS[1]), math.floor(place_ms / 3))}}
end
-- Free, but someone waits: only the waiter it was handed to, or else the head of
-- the line, may take it.
local head = live_head(math.floor(us / 1000), place_ms)
local reserved = redis.call('GET', KEYS[5])
if reserved and not redis.call('ZSCORE', KEYS[3], reserved) then
  -- Reserved for a waiter that is gone from the line: void.
  reserved = false
end
if reserved == member or (not reserved and (head == nil or head == member)) then
  local token, err = next_token(us)
  if not token then
    return err
  end
  redis.call('DEL', KEYS[5])
  leave(member)
  return grant(owner, token)
end
if in_line then
  join(member, us, place_ms)
end
-- The head claims it within a round trip, or its reservation lapses: look again
-- soon, when the key is held (and its TTL says when it frees) or is ours.
return {{0, math.min(100, math.floor(place_ms / 3))}}
"#
    ))
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

/// KEYS: lock, fence, queue, places, reserved. ARGV: owner, release channel, place
/// ttl ms, the client's id, the client channels' prefix. Returns `{1, head}` if released, `{0, head}` if not held by owner, where
/// `head` is the waiter the key was handed to ('' for none).
/// A holder's release hands the key to the head of the line and wakes it alone;
/// with nobody in line, it announces the release only where a client listens (a
/// Redlock waiter): no fan-out to idle clients, nothing when nobody waits. A
/// waiter's release leaves the line, and passes a key reserved for it on.
pub(crate) static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{ANNOUNCE}
local owner, channel = ARGV[1], ARGV[2]
local released = redis.call('GET', KEYS[1]) == owner
if released then
  redis.call('DEL', KEYS[1])
end
-- Nobody in line: the common case, without the line's machinery.
if released and redis.call('EXISTS', KEYS[3]) == 0 then
  announce(channel)
  return {{1, ''}}
end
{LINE}
local place_ms, prefix = tonumber(ARGV[3]), ARGV[5]
local member = owner .. '@' .. ARGV[4]
local head = false
if released then
  head = hand_over(prefix, place_ms, ARGV[4])
  if not head then
    announce(channel)
  end
  return {{1, head or ''}}
end
leave(member)
if redis.call('GET', KEYS[5]) == member then
  redis.call('DEL', KEYS[5])
  head = hand_over(prefix, place_ms, ARGV[4])
end
return {{0, head or ''}}
"#
    ))
});

/// KEYS: lock, fence, queue, places, reserved. ARGV: release channel, place ttl ms,
/// the client channels' prefix. Deletes the lock whoever holds it and hands the key
/// to the head of its line (or announces the release where someone listens).
/// Returns 1 if there was a lock.
pub(crate) static FORCE_RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{ANNOUNCE}{LINE}
local existed = redis.call('DEL', KEYS[1])
if not hand_over(ARGV[3], tonumber(ARGV[2]), '') then
  announce(ARGV[1])
end
return existed
"#
    ))
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
