"""The pieces the Redis store's scripts share: the clock, what is ours, valid keys, kept answers, the sweep.

Lua source fragments (local functions), joined in front of the scripts of
:mod:`.writes` and :mod:`.reads`; :mod:`.scripts` names and runs those.
"""

from __future__ import annotations

__all__ = ["KEPT", "NOW", "SWEEP", "TAKE", "VALID"]

# Every script takes the time as its first argument: milliseconds of an
# injected clock, or "" for the server's own (TIME), so deadlines never
# depend on the clocks of the machines that use the store.
#
# What the store holds (README.rst, "Redis backends", "Foreign writers and
# eviction"): a key is ours when it is in the index (KEYS[1]) and its value
# key holds a string; it is live until its deadline (KEYS[2]). A value key
# not in the index (another program's) is absent for every call and left
# alone; an index entry whose value is gone (evicted, deleted by another
# client) or is no longer a string (retyped) is absent for every call too,
# and a listing, ``len`` or ``purge`` that meets it drops it from the index.
NOW = """
local function now_ms(given)
  if given ~= '' then return tonumber(given) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function ours(vkey, key)
  return redis.call('ZSCORE', KEYS[1], key) and redis.call('TYPE', vkey)['ok'] == 'string'
end
local function live(vkey, key, now)
  if not ours(vkey, key) then return false end
  local d = redis.call('ZSCORE', KEYS[2], key)
  return not d or tonumber(d) > now
end
"""
# A call whose answer may be lost and whose repeat would answer otherwise
# (pop, delete, a conditional write) carries a token: KEYS[3] is
# ``P + "\x7ftake/" + token`` and ARGV[2] how long (ms) it keeps the answer.
# The first run stores its answer there when it changed something;
# redis-py's retry of the same request (same token) finds it and answers
# the same, changing nothing. A run that changed nothing stores nothing (on
# a full server that first write would be refused): its repeat finds the
# same state and answers the same, or answers for what the repeat did.
TAKE = """
local function replay()
  return redis.call('GET', KEYS[3])
end
local function remember(answer)
  redis.call('SET', KEYS[3], answer, 'PX', tonumber(ARGV[2]))
  return answer
end
"""
VALID = """
-- Whether an index member is a valid key (backends.keys): 1 to 1024 bytes
-- of UTF-8 text (no surrogates, no overlong forms), no control character,
-- no empty, "." or ".." segment. Another program may ZADD anything to the
-- index: what is no key is never listed or counted (strays() names it).
local function valid(key)
  local n = #key
  if n == 0 or n > 1024 then return false end
  local s = '/' .. key .. '/'
  if string.find(s, '//', 1, true) or string.find(s, '/./', 1, true) or string.find(s, '/../', 1, true) then
    return false
  end
  local i = 1
  while i <= n do
    local c = string.byte(key, i)
    if c < 32 or c == 127 then return false end
    if c < 128 then
      i = i + 1
    else
      local size, low, high = 0, 128, 191
      if c >= 194 and c <= 223 then size = 2
      elseif c >= 224 and c <= 239 then size = 3
      elseif c >= 240 and c <= 244 then size = 4
      else return false end
      if c == 224 then low = 160 elseif c == 237 then high = 159
      elseif c == 240 then low = 144 elseif c == 244 then high = 143 end
      if i + size - 1 > n then return false end
      local second = string.byte(key, i + 1)
      if second < low or second > high then return false end
      for j = i + 2, i + size - 1 do
        local b = string.byte(key, j)
        if b < 128 or b > 191 then return false end
      end
      i = i + size
    end
  end
  return true
end
"""
# A few index entries past a cursor are checked on every write (as Redis
# samples keys to expire): entries whose value was evicted or deleted by
# another client leave the index about as fast as keys are written, so it
# cannot grow without bound while nobody lists. ``sweep(index, deadlines,
# value prefix, ETag prefix, keys written, now)``.
SWEEP = """
local function sweep(index, deadlines, vprefix, tprefix, n, now)
  local cursor = index .. '/sweep'
  local count = math.min(2 * n + 8, 2000)
  local from = redis.call('GET', cursor) or '-'
  local page = redis.call('ZRANGEBYLEX', index, from, '+', 'LIMIT', 0, count)
  if #page > 0 then
    local due = redis.call('ZMSCORE', deadlines, unpack(page))
    for i = 1, #page do
      local key = page[i]
      local past = due[i] and tonumber(due[i]) <= now
      if not past and valid(key) and redis.call('TYPE', vprefix .. key)['ok'] ~= 'string' then
        redis.call('ZREM', index, key)
        redis.call('ZREM', deadlines, key)
        redis.call('DEL', tprefix .. key)
      end
    end
  end
  if #page < count then redis.call('DEL', cursor) else redis.call('SET', cursor, '(' .. page[#page]) end
end
"""
# Shared by the listings, len and purge: whether an index entry before its
# deadline still has its value (a string); if not (evicted, deleted or
# retyped by another client), it leaves the index and the deadlines, with
# its ETag key. The value key itself is left alone: a retyped one is another
# program's now. An entry past its deadline is left for purge (which counts it).
# ARGV[2] of these scripts is the value-key prefix, ARGV[3] the ETag-key prefix.
KEPT = (
    VALID
    + """
local function kept(key)
  if not valid(key) then return false end
  if redis.call('TYPE', ARGV[2] .. key)['ok'] == 'string' then return true end
  redis.call('ZREM', KEYS[1], key)
  redis.call('ZREM', KEYS[2], key)
  redis.call('DEL', ARGV[3] .. key)
  return false
end
"""
)
