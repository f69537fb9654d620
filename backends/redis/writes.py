"""The Redis store's scripts that change something: write, put, delete, pop, renew, purge.

Every change of a value and of the indexes happens in one of these (see
:mod:`.scripts`); those a lost reply may repeat keep their answer under a
token (:data:`.lua.TAKE`).
"""

from __future__ import annotations

from .lua import NOW, SWEEP, TAKE, VALID

__all__ = ["DELETE", "POP", "PURGE", "PUT", "RENEW", "WRITE"]

# The value keys of a script come with their origin-ETag keys (``P +
# "\x7fetag/" + key``, what a tier filled the entry with): KEYS holds the
# index, the deadlines, the token key, then a value key and its ETag key per
# key.
#
# ARGV: now, token ms (0: no token, for mode "set"), mode, ttl in ms (-1:
# never), keep in ms (how long an expired value stays readable by peek),
# if_match etag, origin etag ("" for none), then key, data per pair. mode
# "set": every pair; "nx": only if absent or expired (one pair); "match":
# only if the live value's SHA-1 is the etag (one pair). Returns how many
# were written. Each pair's first command is its SET: on a full server
# (maxmemory; Redis decides once per script) the first SET is refused
# before anything has changed.
WRITE = (
    NOW
    + TAKE
    + VALID
    + SWEEP
    + """
local now, token = now_ms(ARGV[1]), tonumber(ARGV[2]) > 0
if token then
  local before = replay()
  if before then return tonumber(before) end
end
local mode, ttl, keep, tag = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[7]
local refused = false
if mode == 'nx' and live(KEYS[4], ARGV[8], now) then refused = true end
if mode == 'match' then
  if not live(KEYS[4], ARGV[8], now) or redis.sha1hex(redis.call('GET', KEYS[4])) ~= ARGV[6] then
    refused = true
  end
end
if refused then return 0 end
local n = (#KEYS - 3) / 2
for i = 1, n do
  local vkey, tkey, key, data = KEYS[2 * i + 2], KEYS[2 * i + 3], ARGV[2 * i + 6], ARGV[2 * i + 7]
  if ttl == 0 then
    redis.call('DEL', vkey, tkey)
    redis.call('ZREM', KEYS[2], key)
    redis.call('ZREM', KEYS[1], key)
  else
    if ttl < 0 then
      redis.call('SET', vkey, data)
      redis.call('ZREM', KEYS[2], key)
    else
      redis.call('SET', vkey, data, 'PX', ttl + keep)
      redis.call('ZADD', KEYS[2], now + ttl, key)
    end
    redis.call('ZADD', KEYS[1], 0, key)
    if tag == '' then
      redis.call('DEL', tkey)
    elseif ttl < 0 then
      redis.call('SET', tkey, tag)
    else
      redis.call('SET', tkey, tag, 'PX', ttl + keep)
    end
  end
end
local cut = #ARGV[8]
local vprefix, tprefix = string.sub(KEYS[4], 1, #KEYS[4] - cut), string.sub(KEYS[5], 1, #KEYS[5] - cut)
sweep(KEYS[1], KEYS[2], vprefix, tprefix, n, now)
if token then remember(n) end
return n
"""
)
# A plain dump of one key: what WRITE does in mode "set" for one pair with
# no origin ETag, in 9 arguments instead of 17 (the client CPU of a dump is
# mostly its arguments'). KEYS: index, value key; ARGV: now, ttl in ms (-1:
# never, 0: already expired), keep in ms, data. The prefix is the index's
# name less its 6 bytes ("\x7findex"), the key the value key past it; the
# deadlines and the ETag key are named from them (store.py's DEADLINES and
# ETAGS). Its first command is its SET (on a full server, refused before
# anything changed). Returns 1; a repeat after a lost reply writes the same.
PUT = (
    NOW
    + VALID
    + SWEEP
    + """
local now, ttl, keep = now_ms(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local index, vkey = KEYS[1], KEYS[2]
local prefix = string.sub(index, 1, #index - 6)
local key = string.sub(vkey, #prefix + 1)
local deadlines, tags = prefix .. '\\127deadlines', prefix .. '\\127etag/'
if ttl == 0 then
  redis.call('DEL', vkey, tags .. key)
  redis.call('ZREM', deadlines, key)
  redis.call('ZREM', index, key)
else
  if ttl < 0 then
    redis.call('SET', vkey, ARGV[4])
    redis.call('ZREM', deadlines, key)
  else
    redis.call('SET', vkey, ARGV[4], 'PX', ttl + keep)
    redis.call('ZADD', deadlines, now + ttl, key)
  end
  redis.call('ZADD', index, 0, key)
  redis.call('DEL', tags .. key)
end
sweep(index, deadlines, prefix, tags, 1, now)
return 1
"""
)
# KEYS: index, deadlines, token key, value and ETag key per key; ARGV: now,
# token ms, then the keys. How many were live. A value key that is not ours
# (not in the index) is left alone.
DELETE = (
    NOW
    + TAKE
    + """
local before = replay()
if before then return tonumber(before) end
local now, n = now_ms(ARGV[1]), 0
for i = 3, #ARGV do
  local vkey, key = KEYS[2 * i - 2], ARGV[i]
  if redis.call('ZSCORE', KEYS[1], key) then
    if live(vkey, key, now) then n = n + 1 end
    if redis.call('TYPE', vkey)['ok'] == 'string' then redis.call('DEL', vkey) end
    redis.call('DEL', KEYS[2 * i - 1])
    redis.call('ZREM', KEYS[1], key)
    redis.call('ZREM', KEYS[2], key)
  end
end
if n > 0 then remember(n) end
return n
"""
)
# KEYS: index, deadlines, token key, value key, ETag key; ARGV: now, token
# ms, key. The live value, taken, or nil; its repeat answers the same.
POP = (
    NOW
    + TAKE
    + """
local before = replay()
if before then
  if string.sub(before, 1, 1) == '1' then return string.sub(before, 2) end
  return nil
end
local now = now_ms(ARGV[1])
if not redis.call('ZSCORE', KEYS[1], ARGV[3]) then return nil end
local alive = live(KEYS[4], ARGV[3], now)
local data = false
if redis.call('TYPE', KEYS[4])['ok'] == 'string' then data = redis.call('GETDEL', KEYS[4]) end
redis.call('DEL', KEYS[5])
redis.call('ZREM', KEYS[1], ARGV[3])
redis.call('ZREM', KEYS[2], ARGV[3])
if alive then
  remember('1' .. data)
  return data
end
return nil
"""
)
# KEYS: index, deadlines, value key, ETag key; ARGV: now, key, etag, ttl in
# ms (-1: never), keep in ms. 1 if the value is still the one filled with
# that origin etag, and its deadline was moved on; else 0.
RENEW = (
    NOW
    + """
local now, ttl, keep = now_ms(ARGV[1]), tonumber(ARGV[4]), tonumber(ARGV[5])
if not ours(KEYS[3], ARGV[2]) or redis.call('GET', KEYS[4]) ~= ARGV[3] then return 0 end
-- The ZADDs first: on a full server (maxmemory) the first one is refused
-- and nothing has changed; PEXPIRE and PERSIST are never refused.
redis.call('ZADD', KEYS[1], 0, ARGV[2])
if ttl < 0 then
  redis.call('ZREM', KEYS[2], ARGV[2])
  redis.call('PERSIST', KEYS[3])
  redis.call('PERSIST', KEYS[4])
else
  redis.call('ZADD', KEYS[2], now + ttl, ARGV[2])
  redis.call('PEXPIRE', KEYS[3], ttl + keep)
  redis.call('PEXPIRE', KEYS[4], ttl + keep)
end
return 1
"""
)
# KEYS: index, deadlines, token key; ARGV: now, value-key prefix, ETag-key
# prefix, count, token ms. Removes up to count expired keys; returns how many
# (its repeat after a lost reply, the same).
PURGE = (
    NOW
    + """
local before = redis.call('GET', KEYS[3])
if before then return tonumber(before) end
local now = now_ms(ARGV[1])
local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, tonumber(ARGV[4]))
for _, key in ipairs(gone) do
  if redis.call('TYPE', ARGV[2] .. key)['ok'] == 'string' then redis.call('UNLINK', ARGV[2] .. key) end
  redis.call('UNLINK', ARGV[3] .. key)
  redis.call('ZREM', KEYS[1], key)
  redis.call('ZREM', KEYS[2], key)
end
if #gone > 0 then redis.call('SET', KEYS[3], #gone, 'PX', tonumber(ARGV[5])) end
return #gone
"""
)
