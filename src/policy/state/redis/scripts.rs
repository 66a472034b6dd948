//! The Lua scripts that make each decision one atomic step in Redis.
//!
//! Redis runs a script alone: no other replica's command runs between its reads and its
//! writes, so a check and its count are one step however many replicas share the state.
//! Every key a script writes gets a TTL.

use redis::Script;

/// Quota counters: check, count, reserve and cancel.
///
/// `KEYS[1]` is the set of blocks (scored by their end); `KEYS[2..n+1]` the counters to
/// check; the keys after them are counted by modes 2 and 3. `ARGV`: now, mode (0 check,
/// 1 check and count every key checked, 2 check and, when every key fits, count the
/// other keys, 3 take one back from the other keys), the window numbers of minute, hour
/// and day, the TTL of a counter, the number of checks `n`; then 11 values per check:
/// quota, label, (limit, block end) for minute, hour and day (limit -1 for no tier), and
/// the extra limit's window (-1 for none), limit and end.
///
/// Returns `{}` when every key fits, else `{index, window, count, limit, until,
/// already, extra}` for the first that does not (which is then blocked).
const QUOTA: &str = r"
local now = tonumber(ARGV[1])
local mode = tonumber(ARGV[2])
local idx = {tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])}
local ttl = tonumber(ARGV[6])
local n = tonumber(ARGV[7])
local W = {'m', 'h', 'd'}
local function keep(k, t)
  if redis.call('TTL', k) < t then redis.call('EXPIRE', k, t) end
end
local function count(k, w)
  local v = redis.call('HMGET', k, 'i' .. W[w], 'c' .. W[w])
  if tonumber(v[1]) == idx[w] then return tonumber(v[2]) or 0 end
  return 0
end
local function add(k, delta)
  for w = 1, 3 do
    local c = count(k, w) + delta
    if c < 0 then c = 0 end
    redis.call('HSET', k, 'i' .. W[w], idx[w], 'c' .. W[w], c)
  end
  keep(k, ttl)
end
local function block(k, i, base, w, c, limit, untl, extra)
  redis.call('HSET', k, 'bu', untl, 'bw', w - 1, 'bl', limit, 'br', 1, 'bx', extra,
    'bq', ARGV[base], 'bn', ARGV[base + 1])
  local t = untl - now + ttl
  keep(k, t)
  redis.call('ZADD', KEYS[1], untl, k)
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  keep(KEYS[1], t)
  return {i, w - 1, c, limit, untl, 0, extra}
end
for i = 1, n do
  local k = KEYS[i + 1]
  local base = 8 + (i - 1) * 11
  local breach = nil
  local b = redis.call('HMGET', k, 'bu', 'bw', 'bl', 'bx')
  local bu = tonumber(b[1])
  if bu and bu > now then
    redis.call('HINCRBY', k, 'br', 1)
    local w = tonumber(b[2]) + 1
    breach = {i - 1, w - 1, count(k, w), tonumber(b[3]), bu, 1, tonumber(b[4])}
  else
    if bu then redis.call('HDEL', k, 'bu', 'bw', 'bl', 'br', 'bx', 'bq', 'bn') end
    for w = 1, 3 do
      local limit = tonumber(ARGV[base + 2 * w])
      if limit >= 0 then
        local c = count(k, w)
        if c >= limit then
          breach = block(k, i - 1, base, w, c, limit, tonumber(ARGV[base + 2 * w + 1]), 0)
          break
        end
      end
    end
    local xw = tonumber(ARGV[base + 8])
    if not breach and xw >= 0 then
      local c = count(k, xw + 1)
      local limit = tonumber(ARGV[base + 9])
      if c >= limit then
        breach = block(k, i - 1, base, xw + 1, c, limit, tonumber(ARGV[base + 10]), 1)
      end
    end
  end
  if mode == 1 then add(k, 1) end
  if breach then return breach end
end
if mode >= 2 then
  local delta = 1
  if mode == 3 then delta = -1 end
  for j = n + 2, #KEYS do add(KEYS[j], delta) end
end
return {}
";

/// The blocks in force: `KEYS[1]` the set of blocks, `ARGV[1]` now. Returns `{quota,
/// label, window, until, refused}` per block.
const BLOCKS: &str = r"
local now = tonumber(ARGV[1])
local out = {}
for _, k in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')) do
  local b = redis.call('HMGET', k, 'bu', 'bw', 'br', 'bq', 'bn')
  if tonumber(b[1]) and tonumber(b[1]) > now then
    table.insert(out, {b[4], b[5], tonumber(b[2]), tonumber(b[1]), tonumber(b[3])})
  end
end
return out
";

/// An IP is seen: `KEYS[1]` its record; `ARGV`: now, the end of the random listing it
/// draws when new (0: none), how long an idle record stays.
const SEE: &str = r"
local now = tonumber(ARGV[1])
local ru = tonumber(redis.call('HGET', KEYS[1], 'ru') or ARGV[2])
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], 'last', now)
else
  redis.call('HSET', KEYS[1], 'first', now, 'last', now, 'ru', ru)
end
redis.call('EXPIRE', KEYS[1], math.max(tonumber(ARGV[3]), ru - now))
return 1
";

/// A sender domain is seen: `KEYS[1]` its record; `ARGV`: now, the end of its random
/// listing (kept when the record has one), how long an idle record stays.
const DRAW: &str = r"
local now = tonumber(ARGV[1])
local ru = tonumber(redis.call('HGET', KEYS[1], 'ru') or ARGV[2])
redis.call('HSET', KEYS[1], 'ru', ru, 'last', now)
redis.call('EXPIRE', KEYS[1], math.max(tonumber(ARGV[3]), ru - now))
return 1
";

/// Sets a field of a hash that exists (one that expired stays gone): `KEYS[1]`, `ARGV`:
/// field, value.
const SET_IF_EXISTS: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
return 1
";

/// A complaint: `KEYS[1]` the complaints about an IP; `ARGV`: now, how long one counts,
/// how many are kept. Returns how many are kept.
const COMPLAIN: &str = r"
local now, win, kept = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local ts = {}
for _, t in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  t = tonumber(t)
  if t + win > now then table.insert(ts, t) end
end
table.insert(ts, now)
table.sort(ts)
while #ts > kept do table.remove(ts, 1) end
redis.call('DEL', KEYS[1])
if #ts > 0 then
  redis.call('RPUSH', KEYS[1], unpack(ts))
  redis.call('EXPIRE', KEYS[1], win)
end
return #ts
";

/// A connection opens: `KEYS[1]` the leases on an IP's connections; `ARGV`: this
/// lease's id and length in milliseconds. Leases are timed by Redis's own clock, which
/// replicas share. Returns the leases in force, this one included.
const LEASE: &str = r"
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ms)
redis.call('ZADD', KEYS[1], ms + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
return redis.call('ZCARD', KEYS[1])
";

/// How many distinct recipients a body would have: `KEYS[1]` its recipients in the
/// current bulk window, `ARGV` the message's recipients, lower-cased.
const BULK_WITH: &str = r"
local n = redis.call('SCARD', KEYS[1])
local seen = {}
for i = 1, #ARGV do
  local r = ARGV[i]
  if not seen[r] then
    seen[r] = true
    if redis.call('SISMEMBER', KEYS[1], r) == 0 then n = n + 1 end
  end
end
return n
";

/// The scripts, hashed once.
pub(super) struct Scripts {
    pub quota: Script,
    pub blocks: Script,
    pub see: Script,
    pub draw: Script,
    pub set_if_exists: Script,
    pub complain: Script,
    pub lease: Script,
    pub bulk_with: Script,
}

impl Scripts {
    /// Every script, to load into Redis on each new connection.
    pub const CODES: [&str; 8] = [
        QUOTA,
        BLOCKS,
        SEE,
        DRAW,
        SET_IF_EXISTS,
        COMPLAIN,
        LEASE,
        BULK_WITH,
    ];

    pub fn new() -> Self {
        Self {
            quota: Script::new(QUOTA),
            blocks: Script::new(BLOCKS),
            see: Script::new(SEE),
            draw: Script::new(DRAW),
            set_if_exists: Script::new(SET_IF_EXISTS),
            complain: Script::new(COMPLAIN),
            lease: Script::new(LEASE),
            bulk_with: Script::new(BULK_WITH),
        }
    }
}
