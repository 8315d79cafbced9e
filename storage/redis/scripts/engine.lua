-- replaybus engine script: one atomic step per call, on one channel's keys (one Cluster slot).
-- KEYS: stream, meta, idem, idem-expiry, birth (the store's birth mark for this slot)
-- ARGV[1]: command ("publish" | "read"), ARGV[2]: now in µs ("" = this server's clock),
-- ARGV[3]: the trim step, most entries one call evicts (app.engine.TRIM_STEP), ARGV[4]: what
-- acknowledged writes survive ("replicas" and/or "fsync", comma-separated, or ""); both are
-- taken off ARGV at once, so each command's own arguments start at ARGV[3]
--
-- ReplayIds are integers below 2^53 (exact in Lua's doubles). A stream entry id encodes its
-- ReplayId exactly: (replayId // 1000)-(replayId % 1000), so trimming by age is XTRIM MINID.

local stream, meta, idem, idem_expiry, birth = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]

local function now_us()
  if ARGV[2] ~= '' then return tonumber(ARGV[2]) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

local function to_id(replay)
  return string.format('%.0f-%.0f', math.floor(replay / 1000), replay % 1000)
end

local function to_replay(id)
  local dash = string.find(id, '-', 1, true)
  return tonumber(string.sub(id, 1, dash - 1)) * 1000 + tonumber(string.sub(id, dash + 1))
end

local function number(value)
  return string.format('%.0f', value)
end

-- The earliest retained ReplayId as kept in the meta hash, or nil if unknown. Every eviction
-- raises the low-water mark to at least the oldest entry's ReplayId, so a kept value not above
-- it is out of date (a node running an older script evicted without dropping it).
local function kept_earliest(low)
  local earliest = tonumber(redis.call('HGET', meta, 'earliest') or '0')
  if earliest > low then return earliest end
  return nil
end

-- Trimming walks at most the trim step's entries per call, and stops once it has walked
-- TRIM_BYTES of them, so one call never holds Redis for long however far a channel is past its
-- retention (a shrunk retention, a burst): the rest goes on the next publishes and reads. The
-- count may then exceed the maximum for a while, but the low-water mark is exact after every
-- step.
local TRIM_BYTES = 8 * 1024 * 1024

-- Evict the oldest entries beyond max_count, then those older than max_age, within the bounds
-- above, keeping the exact low-water mark (newest evicted ReplayId). Each XRANGE asks for as
-- many entries as the bytes left would hold at the average size walked so far (one at first,
-- never more than twice the previous ask), so a walk loads little more than TRIM_BYTES however
-- large the events are.
local function trim(now, max_age, max_count, step)
  local before = tonumber(redis.call('HGET', meta, 'low') or '0')
  local excess = redis.call('XLEN', stream) - max_count
  local cutoff = now - max_age
  local walked, bytes, last, ask = 0, 0, nil, 0
  -- Walks on over the oldest entries up to `upper` (an XRANGE end) until `most` are walked in
  -- all; true if it got there or no entry is left up to `upper`, false if the bytes stopped it.
  local function walk(upper, most)
    while walked < most do
      if walked > 0 then
        ask = math.min(2 * ask, math.floor((TRIM_BYTES - bytes) * walked / bytes))
      end
      ask = math.max(1, math.min(ask, most - walked))
      local from = '-'
      if last then from = '(' .. last end
      local entries = redis.call('XRANGE', stream, from, upper, 'COUNT', ask)
      for _, entry in ipairs(entries) do
        last = entry[1]
        walked = walked + 1
        for _, value in ipairs(entry[2]) do bytes = bytes + #value end
        if bytes >= TRIM_BYTES then return false end
      end
      if #entries < ask then return true end
    end
    return true
  end
  local more = true
  -- Entries a moved birth mark left at or below the low-water mark are served to no one:
  -- they go first, a step at a time like any eviction.
  if redis.call('HEXISTS', meta, 'buried') == 1 then
    more = walk(to_id(before), step)
    if more and walked < step then redis.call('HDEL', meta, 'buried') end
  end
  if more and excess > 0 then more = walk('+', math.min(excess, step)) end
  -- Nothing has expired if the oldest entry (as `window` keeps it) has not.
  local oldest = kept_earliest(before)
  if more and walked < step and cutoff > 0 and not (oldest and oldest >= cutoff) then
    -- XRANGE up to the cutoff stops at the first younger entry: O(1) when nothing expired.
    walk('(' .. to_id(cutoff), step)
  end
  if last == nil then return before end
  local newest = to_replay(last)
  redis.call('XTRIM', stream, 'MINID', to_id(newest + 1))
  redis.call('HDEL', meta, 'earliest') -- another entry is the oldest now: `window` finds it
  local low = math.max(before, newest)
  redis.call('HSET', meta, 'low', number(low))
  return low
end

-- The window: earliest retained ReplayId ('' if none), top, low-water mark, count. The earliest
-- is kept in the meta hash, so a read does not load the oldest entry (up to an event's size)
-- each time; it is looked up once after each eviction (and once on data stored before it was
-- kept), which only `trim` does: a publish appends, so it changes the oldest entry only of an
-- empty stream, whose earliest no one keeps.
local function window(low)
  local count = redis.call('XLEN', stream)
  local earliest = ''
  if count > 0 then
    local kept = kept_earliest(low)
    if kept then
      earliest = number(kept)
    else
      local first = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)
      if to_replay(first[1][1]) <= low then
        -- Entries a moved birth mark buried (`trim` drops them a step at a time): the
        -- earliest retained is the first above the low-water mark.
        first = redis.call('XRANGE', stream, '(' .. to_id(low), '+', 'COUNT', 1)
      end
      if first[1] then
        earliest = number(to_replay(first[1][1]))
        redis.call('HSET', meta, 'earliest', earliest)
      end
    end
  end
  if earliest == '' then count = 0 end -- only buried entries are left
  local top = redis.call('HGET', meta, 'top') or '0'
  return {earliest, top, number(low), count}
end

-- Forgets at least twice as many expired keys as a publish of `count` events can add, so the
-- idempotency hash shrinks back under any steady load of keyed publishes.
local function forget_expired_keys(now, count)
  local limit = math.max(100, 2 * count)
  local expired = redis.call('ZRANGEBYSCORE', idem_expiry, '-inf', number(now), 'LIMIT', 0, limit)
  if #expired > 0 then
    redis.call('HDEL', idem, unpack(expired))
    redis.call('ZREM', idem_expiry, unpack(expired))
  end
end

local command = ARGV[1]
local now = now_us()
local trim_step = tonumber(table.remove(ARGV, 3))
local survives = table.remove(ARGV, 3)

-- The birth mark: no position below it is vouched for. It lives in the same Redis as the
-- channel, so whatever loses the channel's data (FLUSHALL, a restart without persistence)
-- loses the mark too, and the next call sets it anew from the clock, above every ReplayId
-- handed out before. It also moves up when another Redis process holds the data (a new
-- `run_id`), unless the acknowledged writes were made to survive that: a replica promoted
-- after its primary (kept if writes waited for replicas), or a restart from its own files
-- (kept if writes waited for the AOF fsync). A promoted replica names the primary's
-- replication id as its `master_replid2`, but so does a primary restarted from a snapshot
-- taken while replicas were attached; what tells them apart is that the replica's process
-- was up before the primary last wrote (`seen`, refreshed at most once a second), and a
-- restarted one only after. The same process keeps its mark whatever happens to its
-- replication id (a primary takes a new one when its first replica attaches).
local function birth_mark()
  local replication = redis.call('INFO', 'replication')
  local lineage = string.match(replication, 'master_replid:(%x+)')
  local held = redis.call('HMGET', birth, 'mark', 'lineage', 'seen', 'process')
  local mark, seen = tonumber(held[1]), tonumber(held[3] or '0')
  if mark and held[2] == lineage then -- the usual case: one cheap INFO section
    if now - seen > 1000000 then redis.call('HSET', birth, 'seen', number(now)) end
    return mark
  end
  local server = redis.call('INFO', 'server')
  local process = string.match(server, 'run_id:(%x+)')
  if not (mark and held[4] == process) then
    local kept
    if held[2] == string.match(replication, 'master_replid2:(%x+)') then
      local started = now - tonumber(string.match(server, 'uptime_in_seconds:(%d+)')) * 1000000
      kept = string.find(survives, 'replicas', 1, true) and started < seen
    else
      kept = string.find(survives, 'fsync', 1, true)
    end
    -- One µs below the clock: an event stored in this µs still takes the clock as its id.
    if not (mark and kept) then mark = now - 1 end
  end
  redis.call('HSET', birth, 'mark', number(mark), 'lineage', lineage, 'seen', number(now),
    'process', process)
  return mark
end

-- The channel's meta, checked against the birth mark (`epoch` is the mark it was last checked
-- against): a channel new to this Redis starts its window at the mark, and one whose mark has
-- moved since has its low-water mark raised to it, so a position from before the move is a
-- gap. Meta without an `epoch` field is taken as it is. Returns whether the channel
-- exists.
local function check_epoch()
  local mark = birth_mark()
  local held = redis.call('HMGET', meta, 'epoch', 'low', 'top')
  if not held[3] then return false, mark end -- every publish writes the top
  local epoch = tonumber(held[1])
  if epoch == mark then return true, mark end
  if epoch then
    local low = math.max(tonumber(held[2] or '0'), mark)
    local top = math.max(tonumber(held[3]), mark)
    redis.call('HSET', meta, 'low', number(low), 'top', number(top), 'buried', '1')
    redis.call('HDEL', meta, 'earliest')
  end
  redis.call('HSET', meta, 'epoch', number(mark))
  return true, mark
end

if command == 'publish' then
  -- ARGV[3..]: max_age_us, max_count, idempotency_ttl_us, live channel, event count, then per
  -- event: uuid, payload, created_by, schema ('' = none), idempotency key ('' = none); then
  -- 'sharded' | 'classic' and the tenant's announcement channel.
  -- Returns {fresh (1 if the channel was new to this Redis, else 0), acknowledgements}.
  local max_age, max_count = tonumber(ARGV[3]), tonumber(ARGV[4])
  local ttl, live, count = tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[7])
  local existed, mark = check_epoch()
  forget_expired_keys(now, count)
  if not existed then
    redis.call('HSET', meta, 'epoch', number(mark), 'low', number(mark), 'top', number(mark))
  end
  -- Written on every call, even one whose events are all stored already: a WAIT after this
  -- call then also covers those events, which an earlier call wrote (RedisEngine._store).
  redis.call('HSET', meta, 'max_age', ARGV[3], 'max_count', ARGV[4])
  local top = tonumber(redis.call('HGET', meta, 'top'))
  local results = {}
  for i = 0, count - 1 do
    local base = 8 + i * 5
    local uuid, payload, author, schema, key =
      ARGV[base], ARGV[base + 1], ARGV[base + 2], ARGV[base + 3], ARGV[base + 4]
    local seen = false
    if key ~= '' then
      local stored = redis.call('HGET', idem, key)
      -- An acknowledgement at or below the birth mark is of an event no one is served any
      -- more (the mark moved over it): the retry stores the event again.
      if stored and tonumber(string.match(stored, '^(%d+)')) > mark then
        local expires = tonumber(redis.call('ZSCORE', idem_expiry, key) or '0')
        if expires > now then
          table.insert(results, stored .. '|1')
          seen = true
        end
      end
    end
    if not seen then
      local replay = math.max(top + 1, now)
      top = replay
      redis.call('XADD', stream, to_id(replay), 'u', uuid, 'p', payload, 'b', author,
        's', schema, 'c', number(now))
      local ack = number(replay) .. '|' .. uuid .. '|' .. number(now)
      if key ~= '' then
        redis.call('HSET', idem, key, ack)
        redis.call('ZADD', idem_expiry, number(now + ttl), key)
      end
      table.insert(results, ack .. '|0')
      -- The live announcement, built once for both channels: fields separated by \31, the
      -- channel's live channel name first (what wildcard listeners match on; a channel's own
      -- listeners skip it) and the payload last.
      local message = live .. '\31' .. number(replay) .. '\31' .. uuid .. '\31' ..
        number(now) .. '\31' .. author .. '\31' .. schema .. '\31' .. payload
      if ARGV[#ARGV - 1] == 'sharded' then
        -- Redis Cluster: channel listeners use sharded pub/sub (this slot's node only).
        redis.call('SPUBLISH', live, message)
      else
        redis.call('PUBLISH', live, message)
      end
      -- Wildcard listeners follow the tenant's channel and match names themselves. Classic
      -- PUBLISH, since SPUBLISH from a script may only name this slot. Always announced:
      -- whether some node has a wildcard listener of the tenant is not known here (on a
      -- cluster, any record of it lives in another slot, and a node may be subscribing now).
      redis.call('PUBLISH', ARGV[#ARGV], message)
    end
  end
  redis.call('HSET', meta, 'top', number(top))
  trim(now, max_age, max_count, trim_step)
  local fresh = 0
  if not existed then fresh = 1 end
  return {fresh, results}
end

-- The payload's length: what read budgets count (`Event.size`).
local function payload_size(entry)
  local fields = entry[2]
  for i = 1, #fields, 2 do
    if fields[i] == 'p' then return #fields[i + 1] end
  end
  return 0
end

-- At most `limit` entries after `after`, ending before the first entry that would take the
-- payload bytes over `budget` (the first entry always comes, however large). Every XRANGE is
-- sized from the bytes left: the first loads one entry, the next as many as the average so far
-- says still fit (plus the one that shows the page is full), growing at most twofold, so entries
-- of even size load at most one more than the page returns, and uneven ones at most about as
-- many again.
local function entries_after(after, limit, budget)
  local entries, used = {}, 0
  local start = '(' .. to_id(after)
  local chunk = 1
  while #entries < limit do
    local got = redis.call('XRANGE', stream, start, '+', 'COUNT', chunk)
    for _, entry in ipairs(got) do
      local size = payload_size(entry)
      if #entries > 0 and used + size > budget then return entries end
      entries[#entries + 1] = entry
      used = used + size
    end
    if #got < chunk or used >= budget then return entries end
    start = '(' .. got[#got][1]
    local fits = math.floor((budget - used) / math.max(1, used / #entries)) + 1
    chunk = math.max(1, math.min(limit - #entries, 2 * chunk, fits))
  end
  return entries
end

if command == 'read' then
  -- ARGV[3..]: after (ReplayId), limit, byte budget ('' = none). Returns {window, entries}.
  local after, limit = tonumber(ARGV[3]), tonumber(ARGV[4])
  local budget = tonumber(ARGV[5] or '') or math.huge
  local existed, mark = check_epoch()
  if not existed then
    return {{'', number(mark), number(mark), 0}, {}}
  end
  local max_age = tonumber(redis.call('HGET', meta, 'max_age') or '0')
  local low
  if max_age > 0 then
    low = trim(now, max_age, tonumber(redis.call('HGET', meta, 'max_count')), trim_step)
  else
    low = tonumber(redis.call('HGET', meta, 'low') or '0')
  end
  local entries = {}
  local from = math.max(after, low) -- what is at or below it was evicted, or is buried
  if limit > 0 then
    if budget == math.huge then
      entries = redis.call('XRANGE', stream, '(' .. to_id(from), '+', 'COUNT', limit)
    else
      entries = entries_after(from, limit, budget)
    end
  end
  return {window(low), entries}
end

return redis.error_reply('unknown command ' .. tostring(command))
