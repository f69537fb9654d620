"""The Redis store's scripts that read: one entry, many values, a page of the index, folders, a count.

Only a script sees whether a value key is ours (in the index) and a
string, so every read is one (see :mod:`.scripts`); the listings and the
count drop the entries whose value is gone (:data:`.lua.KEPT`).
"""

from __future__ import annotations

from .lua import KEPT, NOW

__all__ = ["FOLDERS", "LEN", "MANY", "PAGE", "READ"]

# KEYS: index, deadlines, value key (and ETag key for "peek"); ARGV: now,
# key, what: "data" (the live value or nil), "stat" ({size, sha1}), "in" (1
# or 0), "expires" (ms, -1 never), "peek" ({data, deadline ms or -1, fresh
# 1/0, origin etag or ""} of the value, expired or not, or nil).
READ = (
    NOW
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
MANY = (
    NOW
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
# KEYS: index, deadlines; ARGV: now, value prefix, ETag prefix, low, high,
# count. {last member seen or "", how many were seen, live members...}: a
# page of the index without its expired keys (and without the entries whose
# value is gone, which leave the index).
PAGE = (
    NOW
    + KEPT
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
FOLDERS = (
    NOW
    + KEPT
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
LEN = (
    NOW
    + KEPT
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
