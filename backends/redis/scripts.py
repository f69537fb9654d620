"""The server-side scripts of the Redis store: every change of a value and of the indexes in one.

Each script is one round trip (``EVALSHA``; redis-py loads it again after a
``SCRIPT FLUSH``), so a value, the key index and the deadline index never
disagree, whatever the interleaving or wherever a client dies.
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

__all__ = ["SCRIPTS", "SHAS", "run_script", "run_script_async"]

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
_NOW = """
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
_TAKE = """
local function replay()
  return redis.call('GET', KEYS[3])
end
local function remember(answer)
  redis.call('SET', KEYS[3], answer, 'PX', tonumber(ARGV[2]))
  return answer
end
"""
_VALID = """
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
_SWEEP = """
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
_WRITE = (
    _NOW
    + _TAKE
    + _VALID
    + _SWEEP
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
# A plain dump of one key: what _WRITE does in mode "set" for one pair with
# no origin ETag, in 9 arguments instead of 17 (the client CPU of a dump is
# mostly its arguments'). KEYS: index, value key; ARGV: now, ttl in ms (-1:
# never, 0: already expired), keep in ms, data. The prefix is the index's
# name less its 6 bytes ("\x7findex"), the key the value key past it; the
# deadlines and the ETag key are named from them (store.py's DEADLINES and
# ETAGS). Its first command is its SET (on a full server, refused before
# anything changed). Returns 1; a repeat after a lost reply writes the same.
_PUT = (
    _NOW
    + _VALID
    + _SWEEP
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
_DELETE = (
    _NOW
    + _TAKE
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
_POP = (
    _NOW
    + _TAKE
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
# KEYS: index, deadlines, value key (and ETag key for "peek"); ARGV: now,
# key, what: "data" (the live value or nil), "stat" ({size, sha1}), "in" (1
# or 0), "expires" (ms, -1 never), "peek" ({data, deadline ms or -1, fresh
# 1/0, origin etag or ""} of the value, expired or not, or nil).
_READ = (
    _NOW
    + """
local now = now_ms(ARGV[1])
if ARGV[3] == 'peek' then
  if not ours(KEYS[3], ARGV[2]) then return nil end
  local data = redis.call('GET', KEYS[3])
  local d = redis.call('ZSCORE', KEYS[2], ARGV[2])
  local tag = redis.call('GET', KEYS[4]) or ''
  if not d then return {data, -1, 1, tag} end
  local fresh = 0
  if tonumber(d) > now then fresh = 1 end
  return {data, tonumber(d), fresh, tag}
end
if not live(KEYS[3], ARGV[2], now) then
  if ARGV[3] == 'in' then return 0 end
  return nil
end
if ARGV[3] == 'in' then return 1 end
if ARGV[3] == 'expires' then
  local d = redis.call('ZSCORE', KEYS[2], ARGV[2])
  if d then return tonumber(d) end
  return -1
end
local data = redis.call('GET', KEYS[3])
if ARGV[3] == 'stat' then return {string.len(data), redis.sha1hex(data)} end
return data
"""
)
# KEYS: index, deadlines, value keys; ARGV: now. Each key is its value key
# past the prefix, which is the index's name less its 6 bytes ("\x7findex"):
# the keys are not sent twice, and the prefix is cut as the client encoded
# it. The live values (false for the absent, expired and not ours: MGET
# answers nil for a value key that is not a string), in order.
_MANY = (
    _NOW
    + """
local now, after = now_ms(ARGV[1]), #KEYS[1] - 5
local values = redis.call('MGET', unpack(KEYS, 3))
local keys = {}
for i = 3, #KEYS do keys[i - 2] = string.sub(KEYS[i], after) end
local indexed = redis.call('ZMSCORE', KEYS[1], unpack(keys))
local deadlines = redis.call('ZMSCORE', KEYS[2], unpack(keys))
for i = 1, #values do
  if not indexed[i] or (deadlines[i] and tonumber(deadlines[i]) <= now) then values[i] = false end
end
return values
"""
)
# KEYS: index, deadlines, value key, ETag key; ARGV: now, key, etag, ttl in
# ms (-1: never), keep in ms. 1 if the value is still the one filled with
# that origin etag, and its deadline was moved on; else 0.
_RENEW = (
    _NOW
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
# Shared by the listings, len and purge: whether an index entry before its
# deadline still has its value (a string); if not (evicted, deleted or
# retyped by another client), it leaves the index and the deadlines, with
# its ETag key. The value key itself is left alone: a retyped one is another
# program's now. An entry past its deadline is left for purge (which counts it).
# ARGV[2] of these scripts is the value-key prefix, ARGV[3] the ETag-key prefix.
_KEPT = (
    _VALID
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
# KEYS: index, deadlines; ARGV: now, value prefix, ETag prefix, low, high,
# count. {last member seen or "", how many were seen, live members...}: a
# page of the index without its expired keys (and without the entries whose
# value is gone, which leave the index).
_PAGE = (
    _NOW
    + _KEPT
    + """
local now = now_ms(ARGV[1])
local page = redis.call('ZRANGEBYLEX', KEYS[1], ARGV[4], ARGV[5], 'LIMIT', 0, tonumber(ARGV[6]))
local out = {page[#page] or '', #page}
if #page == 0 then return out end
local deadlines = redis.call('ZMSCORE', KEYS[2], unpack(page))
for i = 1, #page do
  if (not deadlines[i] or tonumber(deadlines[i]) > now) and kept(page[i]) then
    out[#out + 1] = page[i]
  end
end
return out
"""
)
# KEYS: index, deadlines; ARGV: now, value prefix, ETag prefix, low, high,
# start (the byte where a delimiter may begin: after the prefix), delimiter,
# count. {where the next call starts or "" when done, entries...}: about
# count live keys and folders (a key cut after the delimiter), in order;
# past a folder the next page starts after everything below it, so a folder
# costs one ZRANGEBYLEX on the server, not a page sent to the client.
_FOLDERS = (
    _NOW
    + _KEPT
    + """
local now = now_ms(ARGV[1])
local low, high, start, delim, count = ARGV[4], ARGV[5], tonumber(ARGV[6]), ARGV[7], tonumber(ARGV[8])
local out = {''}
for _ = 1, count do
  local page = redis.call('ZRANGEBYLEX', KEYS[1], low, high, 'LIMIT', 0, 32)
  if #page == 0 then return out end
  local deadlines = redis.call('ZMSCORE', KEYS[2], unpack(page))
  for i = 1, #page do
    local key = page[i]
    low = '(' .. key
    if (not deadlines[i] or tonumber(deadlines[i]) > now) and kept(key) then
      local cut = string.find(key, delim, start, true)
      if cut then
        local folder = string.sub(key, 1, cut + #delim - 1)
        out[#out + 1] = folder
        low = '[' .. string.sub(folder, 1, -2) .. string.char(string.byte(folder, -1) + 1)
        break
      end
      out[#out + 1] = key
    end
  end
  if #out > count then break end
end
out[1] = low
return out
"""
)
# KEYS: index, deadlines; ARGV: now, value prefix, ETag prefix, low, count.
# {where the next call starts or "" when done, live keys counted}: a count
# of up to count index entries, dropping those whose value is gone.
_LEN = (
    _NOW
    + _KEPT
    + """
local now = now_ms(ARGV[1])
local page = redis.call('ZRANGEBYLEX', KEYS[1], ARGV[4], '+', 'LIMIT', 0, tonumber(ARGV[5]))
if #page == 0 then return {'', 0} end
local deadlines = redis.call('ZMSCORE', KEYS[2], unpack(page))
local n = 0
for i = 1, #page do
  if (not deadlines[i] or tonumber(deadlines[i]) > now) and kept(page[i]) then n = n + 1 end
end
if #page < tonumber(ARGV[5]) then return {'', n} end
return {'(' .. page[#page], n}
"""
)
# KEYS: index, deadlines, token key; ARGV: now, value-key prefix, ETag-key
# prefix, count, token ms. Removes up to count expired keys; returns how many
# (its repeat after a lost reply, the same).
_PURGE = (
    _NOW
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

#: the scripts by name, as the store runs them
SCRIPTS: Final = {
    "write": _WRITE,
    "put": _PUT,
    "delete": _DELETE,
    "pop": _POP,
    "read": _READ,
    "many": _MANY,
    "renew": _RENEW,
    "page": _PAGE,
    "folders": _FOLDERS,
    "len": _LEN,
    "purge": _PURGE,
}
#: their SHA-1s, what ``EVALSHA`` names them by
SHAS: Final = {name: hashlib.sha1(source.encode()).hexdigest() for name, source in SCRIPTS.items()}


def run_script(client: Any, noscript: type[Exception], name: str, keys: list[str], args: list[Any]) -> Any:
    """Run script ``name`` in one ``EVALSHA``; one ``SCRIPT LOAD`` first if the server lost it.

    A server forgets its scripts when it restarts or on ``SCRIPT FLUSH``;
    it then answers ``NOSCRIPT`` (``noscript``, redis-py's NoScriptError).
    """
    sha = SHAS[name]
    try:
        return client.execute_command("EVALSHA", sha, len(keys), *keys, *args)  # evalsha(), 2 calls less
    except noscript:
        client.script_load(SCRIPTS[name])
        return client.execute_command("EVALSHA", sha, len(keys), *keys, *args)


async def run_script_async(
    client: Any, noscript: type[Exception], name: str, keys: list[str], args: list[Any]
) -> Any:
    """:func:`run_script` on a ``redis.asyncio`` client."""
    sha = SHAS[name]
    try:
        return await client.evalsha(sha, len(keys), *keys, *args)
    except noscript:
        await client.script_load(SCRIPTS[name])
        return await client.evalsha(sha, len(keys), *keys, *args)
