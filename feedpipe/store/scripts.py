"""Every Lua script feedpipe runs in Redis, each once (the storage modules call them).

Scripts run with ``EVAL`` (redis-py sends the body each time; they are short). Each is atomic
on the Redis side. KEYS and ARGV are documented under each constant; the callers are the
storage modules of the key family the script writes (docs/redis-keys.md).
"""

from __future__ import annotations

STATS_INCR = """
for i, key in ipairs(KEYS) do
  local imps = tonumber(ARGV[2 * i - 1])
  local clicks = tonumber(ARGV[2 * i])
  if imps > 0 then redis.call('HINCRBY', key, 'impressions', imps) end
  if clicks > 0 then redis.call('HINCRBY', key, 'clicks', clicks) end
end
return 0
"""
"""KEYS: stats hashes; ARGV: impressions, clicks per key. HINCRBY of the non-zero counts
(one call per batch instead of a HINCRBY per item: client cost)."""

HINCRBYFLOAT_MANY = """
for i = 2, #ARGV, 2 do redis.call('HINCRBYFLOAT', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1]))
return 0
"""
"""KEYS: one hash; ARGV: TTL seconds, then field, increment pairs. HINCRBYFLOAT of each pair
and the key's TTL refreshed (one call per batch and hash: client cost)."""

STATS_READ = """
local out = {}
for i, key in ipairs(KEYS) do
  local v = redis.call('HMGET', key, 'impressions', 'clicks')
  out[2 * i - 1] = v[1] or '0'
  out[2 * i] = v[2] or '0'
end
return table.concat(out, ',')
"""
"""KEYS: stats hashes. Returns one string: impressions, clicks per key, comma-separated (0
when missing); one bulk reply instead of two per key (the catalogue reads every item's stats
of every shard each second: the client parses it with one split)."""

ZINCR_MANY = """
for i = 1, #ARGV, 2 do redis.call('ZINCRBY', KEYS[1], ARGV[i], ARGV[i + 1]) end
return 0
"""
"""KEYS[1]: a zset; ARGV: increment, member pairs. ZINCRBY of each pair."""

SET_MAX = """
local cur = tonumber(redis.call('GET', KEYS[1]) or '-1')
if tonumber(ARGV[1]) > cur then redis.call('SET', KEYS[1], ARGV[1]) end
return 0
"""
"""KEYS[1]: an int string; ARGV[1]: a value. Sets it when larger (the value only moves forward)."""

SET_EX_MANY = """
for i, key in ipairs(KEYS) do
  local v = ARGV[i + 1]
  if v then redis.call('SET', key, v, 'EX', ARGV[1]) else redis.call('EXPIRE', key, ARGV[1]) end
end
return 0
"""
"""KEYS: string keys; ARGV[1]: TTL in seconds, then one value per key for the first keys.
SET ... EX of each key with a value, EXPIRE of each key after them (a TTL renewed without a
rewrite; a missing key stays missing): one call instead of a command per renewed key."""

SADD_MANY = """
local j = 2
for _, key in ipairs(KEYS) do
  local n = tonumber(ARGV[j])
  redis.call('SADD', key, unpack(ARGV, j + 1, j + n))
  redis.call('EXPIRE', key, ARGV[1])
  j = j + n + 1
end
return 0
"""
"""KEYS: sets; ARGV[1]: TTL in seconds, then per key the member count then the members. SADD
of each group, then EXPIRE of its set (renewed by every add)."""

TAKE_SETS = """
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = redis.call('SMEMBERS', key)
  redis.call('DEL', key)
end
return out
"""
"""KEYS: sets (of one slot). Returns each set's members and deletes the sets (a take: each
member is returned by one call only)."""

AUDIENCE = """
-- KEYS[1]: scratch key (deleted before returning); KEYS[2..]: the item's facet sets.
-- ARGV[1]: celebrity threshold. Returns {size} when size > threshold, else {size, members}.
local n = #KEYS - 1
if n < 1 then return {0, {}} end
local limit = tonumber(ARGV[1])
for i = 2, #KEYS do
  local c = redis.call('ZCARD', KEYS[i])
  if c > limit then return {c} end
end
redis.call('ZUNIONSTORE', KEYS[1], n, unpack(KEYS, 2))
local size = redis.call('ZCARD', KEYS[1])
if size > limit then
  redis.call('DEL', KEYS[1])
  return {size}
end
local members = redis.call('ZRANGE', KEYS[1], 0, -1)
redis.call('DEL', KEYS[1])
return {size, members}
"""
"""The audience of one item (size only, as a lower bound, when over the threshold)."""

ZREM_ALL = """
for _, key in ipairs(KEYS) do redis.call('ZREM', key, unpack(ARGV)) end
return 0
"""
"""KEYS: zsets; ARGV: members. Removes the members from every zset (erasure from audiences)."""

INTERN = """
local gen = redis.call('GET', KEYS[3])
if not gen then
  gen = ARGV[1]
  redis.call('SET', KEYS[3], gen)
end
local out = {gen}
local n = redis.call('HLEN', KEYS[2])
for i = 2, #ARGV do
  local o = redis.call('HGET', KEYS[1], ARGV[i])
  if not o then
    o = tostring(n)
    n = n + 1
    redis.call('HSET', KEYS[1], ARGV[i], o)
    redis.call('HSET', KEYS[2], o, ARGV[i])
  end
  out[#out + 1] = o
end
return out
"""
"""KEYS: item_ord, item_id, item_gen; ARGV: a proposed generation, then content ids.
Returns [generation, ordinal of each id] (strings)."""

RESOLVE = """
local out = {redis.call('GET', KEYS[2]) or ''}
for i = 1, #ARGV do out[#out + 1] = redis.call('HGET', KEYS[1], ARGV[i]) or '' end
return out
"""
"""KEYS: item_id, item_gen; ARGV: ordinals. Returns [generation or '', id or '' per ordinal]."""
