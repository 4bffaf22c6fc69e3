-- Append a batch of audit events to one stream, bounded by length and by age (both approximate,
-- so Redis trims whole macro nodes cheaply). One call per stream per batch: a command per event
-- cost the client more than the events themselves.
-- A batch sent again (its first reply was lost, and it may have run) is looked for first, among
-- the entries since before its first try: one script call appends a batch whole, so finding any
-- of its events (a trim may have taken the first ones) means the stream has all it kept of it.
-- A stream nobody appends to any more (an idle or removed tenant's) expires a retention after its
-- last append: trimming happens only here.
-- KEYS[1] stream; ARGV[1] max length, ARGV[2] oldest id kept, ARGV[3] '' for a first try, else
-- the id to look from, ARGV[4] retention ms, ARGV[5..] encoded events
-- Returns the id of the last entry added, or '' when the stream has the batch already.
if ARGV[3] ~= '' then
  local batch = {}
  for i = 5, #ARGV do batch[ARGV[i]] = true end
  local from = ARGV[3]
  repeat
    local entries = redis.call('XRANGE', KEYS[1], from, '+', 'COUNT', 500)
    for _, entry in ipairs(entries) do
      if batch[entry[2][2]] then return '' end
    end
    if #entries > 0 then from = '(' .. entries[#entries][1] end
  until #entries < 500
end
local last = ''
for i = 5, #ARGV do
  last = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'e', ARGV[i])
end
redis.call('XTRIM', KEYS[1], 'MINID', '~', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return last
