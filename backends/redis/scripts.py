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
_NOW = """
local function now_ms(given)
  if given ~= '' then return tonumber(given) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function live(vkey, key, now)
  if redis.call('EXISTS', vkey) == 0 then return false end
  local d = redis.call('ZSCORE', KEYS[2], key)
  return not d or tonumber(d) > now
end
"""
# The value keys of a script come with their origin-ETag keys (``P +
# "\x7fetag/" + key``, what a tier filled the entry with): KEYS holds the
# index, the deadlines, then a value key and its ETag key per key.
#
# ARGV: now, mode, ttl in ms (-1: never), keep in ms (how long an expired
# value stays readable by peek), if_match etag, origin etag ("" for none),
# then key, data per pair. mode "set": every pair; "nx": only if absent or
# expired (one pair); "match": only if the live value's SHA-1 is the etag
# (one pair). Returns how many were written. Each pair's first command is
# its SET: on a full server (maxmemory; Redis decides once per script) the
# first SET is refused before anything has changed.
_WRITE = (
    _NOW
    + """
local now = now_ms(ARGV[1])
local mode, ttl, keep, tag = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[6]
if mode == 'nx' and live(KEYS[3], ARGV[7], now) then return 0 end
if mode == 'match' then
  if not live(KEYS[3], ARGV[7], now) or redis.sha1hex(redis.call('GET', KEYS[3])) ~= ARGV[5] then
    return 0
  end
end
local n = (#KEYS - 2) / 2
for i = 1, n do
  local vkey, tkey, key, data = KEYS[2 * i + 1], KEYS[2 * i + 2], ARGV[2 * i + 5], ARGV[2 * i + 6]
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
return n
"""
)
# KEYS: index, deadlines, value and ETag key per key; ARGV: now, then the keys. How many were live.
_DELETE = (
    _NOW
    + """
local now, n = now_ms(ARGV[1]), 0
for i = 2, #ARGV do
  local vkey = KEYS[2 * i - 1]
  if live(vkey, ARGV[i], now) then n = n + 1 end
  redis.call('DEL', vkey, KEYS[2 * i])
  redis.call('ZREM', KEYS[1], ARGV[i])
  redis.call('ZREM', KEYS[2], ARGV[i])
end
return n
"""
)
# KEYS: index, deadlines, value key, ETag key; ARGV: now, key. The live value, taken, or nil.
_POP = (
    _NOW
    + """
local now = now_ms(ARGV[1])
local alive = live(KEYS[3], ARGV[2], now)
local data = redis.call('GETDEL', KEYS[3])
redis.call('DEL', KEYS[4])
redis.call('ZREM', KEYS[1], ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[2])
if alive then return data end
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
  local data = redis.call('GET', KEYS[3])
  if not data then return nil end
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
# KEYS: index, deadlines, value keys; ARGV: now, keys. The live values (false
# for the absent and expired), in order.
_MANY = (
    _NOW
    + """
local now = now_ms(ARGV[1])
local values = redis.call('MGET', unpack(KEYS, 3))
local deadlines = redis.call('ZMSCORE', KEYS[2], unpack(ARGV, 2))
for i = 1, #values do
  if deadlines[i] and tonumber(deadlines[i]) <= now then values[i] = false end
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
if redis.call('EXISTS', KEYS[3]) == 0 or redis.call('GET', KEYS[4]) ~= ARGV[3] then return 0 end
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
# KEYS: index, deadlines; ARGV: now, low, high, count. {last member seen or
# "", how many were seen, live members...}: a page of the index without its
# expired keys.
_PAGE = (
    _NOW
    + """
local now = now_ms(ARGV[1])
local page = redis.call('ZRANGEBYLEX', KEYS[1], ARGV[2], ARGV[3], 'LIMIT', 0, tonumber(ARGV[4]))
local out = {page[#page] or '', #page}
if #page == 0 then return out end
local deadlines = redis.call('ZMSCORE', KEYS[2], unpack(page))
for i = 1, #page do
  if not deadlines[i] or tonumber(deadlines[i]) > now then out[#out + 1] = page[i] end
end
return out
"""
)
# KEYS: index, deadlines; ARGV: now, low, high, start (the byte where a
# delimiter may begin: after the prefix), delimiter, count. {where the next
# call starts or "" when done, entries...}: about count live keys and
# folders (a key cut after the delimiter), in order; past a folder the next
# page starts after everything below it, so a folder costs one ZRANGEBYLEX
# on the server, not a page sent to the client.
_FOLDERS = (
    _NOW
    + """
local now = now_ms(ARGV[1])
local low, high, start, delim, count = ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5], tonumber(ARGV[6])
local out = {''}
for _ = 1, count do
  local page = redis.call('ZRANGEBYLEX', KEYS[1], low, high, 'LIMIT', 0, 32)
  if #page == 0 then return out end
  local deadlines = redis.call('ZMSCORE', KEYS[2], unpack(page))
  for i = 1, #page do
    local key = page[i]
    low = '(' .. key
    if not deadlines[i] or tonumber(deadlines[i]) > now then
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
# KEYS: index, deadlines; ARGV: now. The live keys: all, less those past their deadline.
_LEN = (
    _NOW
    + """
return redis.call('ZCARD', KEYS[1]) - redis.call('ZCOUNT', KEYS[2], '-inf', now_ms(ARGV[1]))
"""
)
# KEYS: index, deadlines; ARGV: now, value-key prefix, count, ETag-key
# prefix. Removes up to count expired keys; returns how many.
_PURGE = (
    _NOW
    + """
local now = now_ms(ARGV[1])
local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
for _, key in ipairs(gone) do
  redis.call('UNLINK', ARGV[2] .. key, ARGV[4] .. key)
  redis.call('ZREM', KEYS[1], key)
  redis.call('ZREM', KEYS[2], key)
end
return #gone
"""
)

#: the scripts by name, as the store runs them
SCRIPTS: Final = {
    "write": _WRITE,
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
        return client.evalsha(sha, len(keys), *keys, *args)
    except noscript:
        client.script_load(SCRIPTS[name])
        return client.evalsha(sha, len(keys), *keys, *args)


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
