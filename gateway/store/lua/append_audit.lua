-- Append a batch of audit events to one stream, bounded by length and by age (both approximate,
-- so Redis trims whole macro nodes cheaply). One call per stream per batch: a command per event
-- cost the client more than the events themselves.
-- A batch sent again (its first reply was lost, and it may have run) is looked for first, among
-- the entries since its first try: one script call appends a batch whole, so finding its first
-- event means the stream has all of it.
-- KEYS[1] stream; ARGV[1] max length, ARGV[2] oldest id kept, ARGV[3] '' for a first try, else
-- the id to look from, ARGV[4..] encoded events
if ARGV[3] ~= '' then
  local from = ARGV[3]
  repeat
    local entries = redis.call('XRANGE', KEYS[1], from, '+', 'COUNT', 500)
    for _, entry in ipairs(entries) do
      if entry[2][2] == ARGV[4] then return 0 end
    end
    if #entries > 0 then from = '(' .. entries[#entries][1] end
  until #entries < 500
end
for i = 4, #ARGV do
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'e', ARGV[i])
end
redis.call('XTRIM', KEYS[1], 'MINID', '~', ARGV[2])
return #ARGV - 3
